"""Redis glob patterns: escaping literals into them, and matching them outside Redis.

Redis's ``stringmatchlen`` rules, which `compile_glob` follows so that every backend matches
the same keys: ``*`` any run, ``?`` one character, ``[abc]``, ``[^abc]`` and ``[a-z]`` sets
(reversed ranges are swapped, an unclosed set runs to the end of the pattern), and ``\\x``
for a literal ``x`` everywhere, inside sets too. A trailing lone backslash is a literal one.
"""

from __future__ import annotations

import functools
import re
from typing import Final

__all__ = ("GLOB_SPECIAL", "compile_glob", "glob_escape")

GLOB_SPECIAL: Final = frozenset("*?[]\\")
_ESCAPE_TABLE: Final = str.maketrans({c: "\\" + c for c in GLOB_SPECIAL})


def glob_escape(text: str) -> str:
    """Returns ``text`` with every glob character escaped, so a pattern matches it literally."""
    return text.translate(_ESCAPE_TABLE)


def _translate_set(pattern: str, i: int) -> tuple[str, int]:
    """Translates the set starting after ``[`` at index ``i``; returns (regex, next index)."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while i < n and pattern[i] != "]":
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            items.append(re.escape(pattern[i + 1]))
            i += 2
        elif i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            # Redis takes a range's end as it stands: a backslash there escapes nothing.
            low, high = c, pattern[i + 2]
            if low > high:
                low, high = high, low
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(c))
            i += 1
    i += 1  # past "]", or past the end for an unclosed set
    body = "".join(items)
    if not body:
        # "[]" matches nothing and "[^]" matches any one character, as in Redis.
        return ("(?s:.)" if negate else "(?!)"), i
    return f"[{'^' if negate else ''}{body}]", i


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Returns a compiled regex that matches, in full, exactly the strings Redis's glob would."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("(?s:.*)")
            continue
        if c == "?":
            out.append("(?s:.)")
            i += 1
        elif c == "[":
            regex, i = _translate_set(pattern, i + 1)
            out.append(regex)
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)
