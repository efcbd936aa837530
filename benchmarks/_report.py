"""Turns measured sections into the printed tables, the SPEC §5 verdicts, Markdown and JSON."""

import importlib.metadata
import multiprocessing
import platform
import subprocess
from datetime import datetime, timezone
from typing import Any

from _common import BENCH_DIR, REDIS_DB, REDIS_HOST, REDIS_PORT
from _harness import Case, Section, Settings

# The commands every new connection sends before any work (redis-py's handshake).
_CONNECTION_SETUP = ("AUTH", "HELLO", "CLIENT", "SELECT")


def us(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    value = ns / 1000
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def section_rows(section: Section) -> tuple[list[str], list[list[str]]]:
    headers = ["case", "median µs", "p99 µs", f"vs {section.base_label}" if section.base else ""]
    headers.append("vs peer")
    if section.throughput:
        headers.append("calls/s")
    if section.key == "get_many":
        headers.append("Redis commands")
    headers.append("notes")
    base = section.find(section.base)
    rows = []
    for case in section.cases:
        label = case.label + ("  [base]" if case.key == section.base else "")
        peer = section.find(case.peer)
        peer_text = ""
        peer_ratio = case.ratio_to(peer)
        if peer is not None and peer_ratio is not None:
            peer_text = f"{peer_ratio:.2f}x {_short(peer.label)}"
        elif peer is not None and case.median_ns is not None:
            peer_text = f"n/a ({_short(peer.label)} failed)"
        row = [
            label,
            us(case.median_ns),
            us(case.p99_ns),
            ratio(case.ratio_to(base)) if section.base else "",
            peer_text,
        ]
        if section.throughput:
            row.append(
                f"{case.ops / (case.median_ns / 1e9):,.0f}" if case.median_ns is not None else ""
            )
        if section.key == "get_many":
            row.append(str(case.extra.get("redis_commands", "")))
        notes = list(case.notes)
        if case.error:
            notes.insert(0, f"n/a: {case.error}")
        row.append("; ".join(notes))
        rows.append(row)
    if not section.base:
        headers.pop(3)
        for row in rows:
            row.pop(3)
    return headers, rows


def _short(label: str) -> str:
    return label.split(" ", 1)[0]


def stampede_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "case",
        "fetches",
        "Redis commands",
        "INFO delta",
        "wall ms",
        "caller errors",
        "backend errors",
        "notes",
    ]
    table = []
    for row in rows:
        if "error" in row:
            table.append([row["case"], "n/a", "", "", "", "", "", f"n/a: {row['error']}"])
            continue
        backend_errors = row.get("backend_errors")
        commands = ", ".join(f"{k} {v}" for k, v in sorted(row["by_command"].items()))
        table.append(
            [
                row["case"],
                str(row["fetches"]),
                f"{row['commands']} ({commands})",
                str(row["server_commands"]),
                f"{row['wall_ms']:.0f}",
                str(row["errors"]),
                "" if backend_errors is None else str(backend_errors),
                row.get("note", ""),
            ]
        )
    return headers, table


def text_table(headers: list[str], rows: list[list[str]], *, prose: bool = False) -> str:
    """A plain-text table; numbers are right-aligned unless ``prose`` (every column is text)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [not prose and i not in (0, len(headers) - 1) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def markdown_table(headers: list[str], rows: list[list[str]], *, prose: bool = False) -> str:
    """A Markdown table; numbers are right-aligned unless ``prose`` (every column is text)."""
    align = ["---" if prose or i in (0, len(headers) - 1) else "---:" for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(align), *(line(r) for r in rows)])


def _iqr(spread: tuple[float, float] | None) -> str:
    return f"IQR {spread[0]:.2f}-{spread[1]:.2f}" if spread else "IQR n/a"


def _rate(case: Case | None) -> float | None:
    if case is None or not case.median_ns:
        return None
    return case.ops / (case.median_ns / 1e9)


def targets(
    sections: dict[str, Section],
    stampede: list[dict[str, Any]],
    overhead: dict[str, Any] | None,
    *,
    breaker: str,
) -> list[dict[str, str]]:
    """The SPEC §5 targets, each as its text, the measured figure and PASS, FAIL or n/a.

    Ratios are medians of same-round ratios (`Case.ratio_to`), with their interquartile range.
    """

    def case(section: str, key: str) -> Case | None:
        found = sections.get(section)
        return found.find(key) if found else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    def time_ratio(section: str, key: str, other: str, against: str) -> tuple[float | None, str]:
        """``key``'s time over ``other``'s, worded with both medians, the IQR and ``against``."""
        mine, theirs = case(section, key), case(section, other)
        value = mine.ratio_to(theirs) if mine else None
        if value is None or mine is None or theirs is None:
            return None, "n/a"
        spread = mine.ratio_spread(theirs)
        return value, (
            f"{value:.2f}x ({_iqr(spread)}): {us(mine.median_ns)} µs vs "
            f"{us(theirs.median_ns)} µs for {against}"
        )

    def local_ratio(key: str, against: str) -> tuple[float | None, str]:
        value, text = time_ratio(
            "memory_hit_doc", f"memory.doc.{key}", "memory.doc.async_lru", against
        )
        short, _ = time_ratio(
            "memory_hit_short", f"memory.short.{key}", "memory.short.async_lru", ""
        )
        if value is not None and short is not None:
            text += f"; short string: {short:.2f}x (not judged)"
        return value, text

    out: list[dict[str, str]] = []

    def judge(target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": measured, "verdict": verdict(ok)})

    def at_most(limit: float, value: float | None) -> bool | None:
        return None if value is None else value <= limit

    def rate_over(key: str, other: str, against: str) -> tuple[float | None, str]:
        """``key``'s rate over ``other``'s: ``other``'s time over ``key``'s, round by round."""
        mine, theirs = case("concurrent_hits", key), case("concurrent_hits", other)
        value = theirs.ratio_to(mine) if theirs and mine else None
        rate, peer_rate = _rate(mine), _rate(theirs)
        if value is None or mine is None or theirs is None or not rate or not peer_rate:
            return None, "n/a"
        return value, (
            f"{value:.2f}x the rate ({_iqr(theirs.ratio_spread(mine))}): {rate:,.0f} calls/s "
            f"vs {peer_rate:,.0f} calls/s for {against}"
        )

    against = "bare redis-py GET + orjson.loads"
    value, text = time_ratio(
        "redis_hit_doc", "redis.doc.cachetier", "redis.doc.bare_orjson", against
    )
    model, _ = time_ratio(
        "redis_hit_doc", "redis.doc.cachetier_pydantic", "redis.doc.bare_orjson", against
    )
    if value is not None:
        text = f"-> dict[str, Any]: {text}"
        if model is not None:
            text += f"; -> pydantic Profile: {model:.2f}x (not judged)"
    judge(
        "Decorated hit on Redis: at most 0.80x a bare `await redis.get()` + JSON decode of the "
        "same value (1 KB)",
        text,
        at_most(0.80, value),
    )

    value, text = time_ratio(
        "redis_hit_doc", "redis.doc.cachetier_get", "redis.doc.bare_orjson", against
    )
    judge(
        "issue 17: cache.get on Redis at most 0.75x a bare `await redis.get()` + JSON decode of "
        "the same value (1 KB)",
        text,
        at_most(0.75, value),
    )

    value, text = time_ratio(
        "memory_hit_doc",
        "memory.doc.cachetier",
        "memory.doc.aiocache",
        "aiocache @cached SimpleMemoryCache",
    )
    judge(
        "Decorated hit on the memory backend: at most 0.3x of aiocache's memory hit for the "
        "same 1 KB document",
        text,
        at_most(0.3, value),
    )

    value, text = local_ratio("tiered", "async_lru.alru_cache, 1 KB document")
    judge(
        "A hit in the process-local tier of the two-tier cache: within 1.5x of async_lru's hit",
        text,
        at_most(1.5, value),
    )

    value, text = rate_over("concurrent.cachetier", "concurrent.cashews", "cashews")
    judge(
        "100 concurrent hits of one key: at least 1.5x cashews' rate in the same run",
        text,
        None if value is None else value >= 1.5,
    )

    value, text = rate_over(
        "concurrent.cachetier_distinct",
        "concurrent.pipeline_distinct_orjson",
        "one 100-GET pipeline over 100 keys + orjson.loads",
    )
    judge(
        "100 concurrent hits of distinct keys: at least one 100-GET pipeline + decode",
        text,
        None if value is None else value >= 1.0,
    )

    value, text = local_ratio("embedded", "async_lru.alru_cache, 1 KB document")
    judge(
        "The embedded default with a local tier (no Redis) serves decoded objects within 1.5x "
        "of async-lru",
        text,
        at_most(1.5, value),
    )

    row = next((r for r in stampede if r["case"] == "cachetier @cached (default)"), None)
    fetches = row.get("fetches") if row else None
    judge(
        "1,000 concurrent misses of one key: one fetch in one process",
        f"{fetches} fetch(es), {row['commands']} Redis commands"
        if row and fetches is not None
        else "n/a",
        None if fetches is None else fetches == 1,
    )
    row = next((r for r in stampede if r["library"] == "cachetier" and r["processes"] > 1), None)
    fetches = row.get("fetches") if row else None
    # What the processes spent on the miss: every command but each connection's set-up.
    waiting = (
        row["commands"] - sum(row.get("by_command", {}).get(c, 0) for c in _CONNECTION_SETUP)
        if row and fetches is not None
        else None
    )
    judge(
        "1,000 concurrent misses of one key: one fetch across 4 processes with `lock=True`, "
        "with at most a few dozen Redis commands spent waiting",
        f"{fetches} fetch(es); {waiting} Redis commands beyond connection set-up (at most 36 "
        f"judged a few dozen), {row['commands']} in all"
        if row and waiting is not None
        else "n/a",
        None if waiting is None else fetches == 1 and waiting <= 36,
    )

    bare, down = case("redis_down", "down.bare"), case("redis_down", "down.cachetier")
    delta = (
        down.median_ns - bare.median_ns
        if down and bare and down.median_ns and bare.median_ns
        else None
    )
    judge(
        "Redis down, breaker open: a decorated call costs the bare function plus at most 5 µs",
        f"+{delta / 1000:,.1f} µs per call ({breaker})" if delta is not None else "n/a",
        at_most(5000, delta),
    )

    many = case("get_many", "many.cachetier")
    commands = many.extra.get("redis_commands") if many else None
    judge(
        "Reading N keys costs one round trip, not N",
        f"get_many(100) sent {commands} command(s)" if commands else "n/a",
        commands == 1 if commands else None,
    )

    if overhead and "with_ttl" in overhead:
        judge(
            "A small entry in the memory backend costs at most 200 bytes beyond its key and value",
            f"{overhead['with_ttl']} B with a TTL, {overhead['without_ttl']} B without "
            "(tracemalloc, key and value objects excluded)",
            max(overhead["with_ttl"], overhead["without_ttl"]) <= 200,
        )
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _source_state() -> str:
    """Returns the commit the run measured, noting uncommitted changes under ``src/``."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + {len(changed)} uncommitted file(s) under src/" if changed else head


def environment(settings: Settings, quick: bool) -> dict[str, Any]:
    dists = ("redis", "hiredis", "orjson", "pydantic", "aiocache", "cashews", "async-lru")
    versions = {dist: _version(dist) for dist in dists}
    try:
        from cachetier import __version__ as cachetier_version
    except Exception:
        cachetier_version = "unknown"
    versions["cachetier"] = cachetier_version
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": _source_state(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": multiprocessing.cpu_count(),
        "event_loop": "asyncio default",
        "redis": f"{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "versions": versions,
        "quick": quick,
        "settings": settings.__dict__,
    }


def render(report: dict[str, Any], env: dict[str, Any], *, markdown: bool) -> str:
    table = markdown_table if markdown else text_table
    versions = env["versions"]
    head = (
        f"cachetier {versions['cachetier']} ({env['source']}) benchmarks, {env['date']}: "
        f"Python {env['python']}, "
        f"{env['cpus']} CPUs, {report['loop']} (asyncio default), {report['server']} at "
        f"{env['redis']}, redis-py {versions['redis']} + hiredis {versions['hiredis']}, "
        f"orjson {versions['orjson']}, pydantic {versions['pydantic']}; peers: aiocache "
        f"{versions['aiocache']}, cashews {versions['cashews']}, async-lru {versions['async-lru']}."
    )
    settings = env["settings"]
    method = (
        f"{settings['rounds']} rounds of ~{settings['round_seconds'] * 1000:.0f} ms per case "
        f"after warm-up, each cut into {settings['slices']} batches alternating between the "
        f"cases in random order, with what the process imported frozen out of the garbage "
        f"collector's reach (gc.freeze); median of per-round means; ratios are medians of "
        f"same-round ratios; p99 of individually timed calls"
        f"{' (--quick)' if env['quick'] else ''}."
    )
    load = report["load_average"]
    if load["before"] is not None:
        method += f" 1-minute load average: {load['before']} before, {load['after']} after."
    parts = [f"# cachetier benchmarks\n\n{head}\n\n{method}" if markdown else f"{head}\n{method}"]
    for index, section in enumerate(report["sections"], 1):
        headers, rows = section_rows(section)
        title = f"{index}. {section.title}"
        body = table(headers, rows)
        note = f"\n{section.note}" if section.note else ""
        parts.append(f"## {title}\n\n{body}\n{note}" if markdown else f"{title}\n{body}{note}")
    headers, rows = stampede_rows(report["stampede"])
    title = (
        f"{len(report['sections']) + 1}. 1,000 concurrent misses of one key "
        f"(fetch sleeps {report['stampede_fetch_ms']:.0f} ms)"
    )
    note = (
        "Redis commands: counted in each process at redis-py's command packer (handshakes "
        "included); INFO delta: the server's total_commands_processed change, which also "
        "counts any other client of the server."
    )
    body = table(headers, rows)
    parts.append(f"## {title}\n\n{body}\n\n{note}" if markdown else f"{title}\n{body}\n{note}")
    rows = [[t["target"], t["measured"], t["verdict"]] for t in report["targets"]]
    body = table(["SPEC §5 target", "measured", "verdict"], rows, prose=True)
    parts.append(f"## SPEC §5 targets\n\n{body}" if markdown else f"SPEC §5 targets\n{body}")
    return "\n\n".join(parts) + "\n"


def to_json(report: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    sections = []
    for section in report["sections"]:
        base = section.find(section.base)
        rows = []
        for case in section.cases:
            peer = section.find(case.peer)
            row: dict[str, Any] = {
                "key": case.key,
                "case": case.label,
                "median_us": None if case.median_ns is None else round(case.median_ns / 1000, 3),
                "p99_us": None if case.p99_ns is None else round(case.p99_ns / 1000, 3),
                "calls_per_invocation": case.ops,
            }
            base_ratio = case.ratio_to(base)
            if base_ratio is not None:
                row["ratio_vs_base"] = round(base_ratio, 3)
                spread = case.ratio_spread(base)
                if spread:
                    row["ratio_vs_base_iqr"] = [round(spread[0], 3), round(spread[1], 3)]
            if peer is not None:
                row["peer"] = peer.key
                peer_ratio = case.ratio_to(peer)
                if peer_ratio is not None:
                    row["ratio_vs_peer"] = round(peer_ratio, 3)
            if section.throughput and case.median_ns:
                row["calls_per_second"] = round(case.ops / (case.median_ns / 1e9))
            if case.error:
                row["error"] = case.error
            if case.notes:
                row["notes"] = case.notes
            row.update(case.extra)
            rows.append(row)
        sections.append(
            {
                "key": section.key,
                "title": section.title,
                "base": section.base,
                "note": section.note,
                "rows": rows,
            }
        )
    return {
        "environment": {
            **env,
            "server": report["server"],
            "loop": report["loop"],
            "load_average": report["load_average"],
        },
        "sections": sections,
        "stampede": report["stampede"],
        "memory_entry_overhead_bytes": report["overhead"],
        "targets": report["targets"],
    }
