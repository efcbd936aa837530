"""Properties of keys: escaping is injective and glob-safe, call keys are typed and stable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cachetier import ConfigurationError
from cachetier._glob import compile_glob, glob_escape
from cachetier._keys import KeyBuilder, encode_argument

parts = st.lists(st.text(max_size=12), min_size=1, max_size=4)
builder = KeyBuilder("app", "v1", max_length=10_000)


@given(parts, parts)
def test_distinct_part_sequences_never_give_equal_keys(a: list[str], b: list[str]) -> None:
    assume(a != b)
    assert builder.key(*a) != builder.key(*b)


@given(parts, parts)
def test_escaped_key_used_as_pattern_matches_only_itself(a: list[str], b: list[str]) -> None:
    pattern = compile_glob(glob_escape(builder.key(*a)))
    assert (
        pattern.fullmatch(builder.key(*b)) is not None
        if a == b
        else pattern.fullmatch(builder.key(*b)) is None
    )


@given(st.text(max_size=12), parts)
def test_escaped_part_never_widens_a_prefix_pattern(literal: str, other: list[str]) -> None:
    """A user-supplied part containing * ? [ ] : or \\ matches only keys that start with that part."""
    pattern = compile_glob(builder.pattern(builder.literal(literal) + ":*"))
    key = builder.key(*other)
    matched = pattern.fullmatch(key) is not None
    assert matched == (len(other) > 1 and other[0] == literal)


@given(parts, parts)
def test_key_text_used_by_mistake_as_a_pattern_never_reaches_another_key(
    a: list[str], b: list[str]
) -> None:
    """Glob characters are escaped inside keys, so even a raw key used as a pattern cannot widen."""
    assume(a != b)
    assert compile_glob(builder.key(*a)).fullmatch(builder.key(*b)) is None


@given(st.text(min_size=1, max_size=500))
def test_long_keys_are_shortened_stably_and_keep_their_prefix(tail: str) -> None:
    short = KeyBuilder("app", "v1", max_length=100)
    key = short.full("items:" + tail)
    assert len(key) <= 100
    assert key.startswith("app:v1:")
    assert key == short.full("items:" + tail)


def test_shortened_keys_of_different_texts_differ() -> None:
    short = KeyBuilder("app", "v1", max_length=64)
    keys = {short.full("x" * 200 + str(i)) for i in range(1000)}
    assert len(keys) == 1000


def test_shortening_never_leaves_a_dangling_escape() -> None:
    short = KeyBuilder("app", "v1", max_length=64)
    for width in range(20, 40):
        key = short.key("a" * width + "*" * 40)
        head = key.split("#")[0]
        assert (len(head) - len(head.rstrip("\\"))) % 2 == 0


def test_prefix_patterns_reach_relative_keys_as_written() -> None:
    assert compile_glob(builder.pattern("tasks:pending:*")).fullmatch(
        builder.full("tasks:pending:10")
    )
    assert not compile_glob(builder.pattern("tasks:pending:*")).fullmatch(
        builder.full("tasks:done:10")
    )


def test_namespace_with_glob_characters_is_escaped_in_patterns() -> None:
    odd = KeyBuilder("my*app", "v[1]")
    other = KeyBuilder("myXapp", "v1")
    pattern = compile_glob(odd.pattern("*"))
    assert pattern.fullmatch(odd.full("k"))
    assert not pattern.fullmatch(other.full("k"))


@pytest.mark.parametrize(
    ("namespace", "version"), [("", "v1"), ("a b", "v1"), ("ok", ""), ("ok", True), (3, "v1")]
)
def test_bad_namespace_or_version_is_refused(namespace: object, version: object) -> None:
    with pytest.raises(ConfigurationError):
        KeyBuilder(namespace, version)  # type: ignore[arg-type]


def test_non_str_keys_raise_type_error() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        builder.full(b"k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        builder.key(1.5)  # type: ignore[arg-type]


# -- call keys ---------------------------------------------------------------------------------


def f(a: object, b: object = "default", *args: object, c: int = 3, **kwargs: object) -> None: ...


def key_of(*args: object, **kwargs: object) -> str:
    return builder.call_key(f, args, kwargs)


def test_arguments_of_different_types_give_different_keys() -> None:
    keys = {
        key_of(v) for v in (1, "1", 1.0, True, None, b"1", (1,), [1], Decimal(1), {1}, {"1": 1})
    }
    assert len(keys) == 11


def test_binding_makes_keys_independent_of_how_arguments_are_passed() -> None:
    assert key_of(1, "default") == key_of(1) == key_of(a=1) == key_of(1, c=3)
    assert key_of(1, c=4, z=1, y=2) == key_of(a=1, y=2, z=1, c=4)


def test_string_arguments_cannot_be_split_or_joined_into_other_calls() -> None:
    assert key_of("a b") != key_of("a", "b")
    assert key_of("a:b") != key_of("a", "b")
    assert key_of("a", "b:c") != key_of("a:b", "c")


def test_excluded_arguments_do_not_enter_the_key() -> None:
    first = builder.call_key(f, (1, object()), {}, exclude={"b"})
    second = builder.call_key(f, (1, object()), {}, exclude={"b"})
    assert first == second


def test_argument_whose_text_is_an_address_is_refused() -> None:
    with pytest.raises(TypeError, match="memory address"):
        key_of(object())

    class Opaque:
        def __repr__(self) -> str:
            return f"<Opaque at {hex(id(self))}>"

    with pytest.raises(TypeError, match="memory address"):
        key_of(Opaque())


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Tagged:
    def __init__(self, name: str) -> None:
        self.name = name

    def __cache_key__(self) -> str:
        return self.name


def test_rich_argument_types_have_stable_texts() -> None:
    values = [
        Color.RED,
        Point(1, 2),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        dt.date(2026, 1, 2),
        dt.timedelta(seconds=3),
        uuid.UUID(int=7),
        Decimal("1.10"),
        frozenset({"b", "a"}),
        Tagged("x"),
    ]
    assert [encode_argument(v) for v in values] == [encode_argument(v) for v in values]
    assert encode_argument(frozenset({"a", "b"})) == encode_argument(frozenset({"b", "a"}))
    assert encode_argument(Decimal("1.10")) != encode_argument(Decimal("1.1"))
    assert encode_argument(Tagged("x")) != encode_argument(Tagged("y"))


def test_call_keys_are_equal_across_interpreter_processes() -> None:
    """The same call yields the same key in another interpreter (no salted hash() anywhere)."""
    code = (
        "import uuid, datetime as dt\n"
        "from cachetier._keys import KeyBuilder, encode_argument\n"
        "b = KeyBuilder('app', 'v1', max_length=64)\n"
        "print(b.full('x' * 100 + encode_argument(({'s', 't'}, frozenset({1, 2}), uuid.UUID(int=5), "
        "dt.date(2026, 1, 1), {'b': 1, 'a': [1.5, None]}))))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1


async def test_decorated_functions_key_calls_exactly_as_key_builder_call_key() -> None:
    """The decorator's fast key path and the public `KeyBuilder.call_key` never drift apart."""
    from cachetier import Cache

    cache = Cache(namespace="app", version="v1")

    async def g(
        a: object, b: object = "d", *args: object, c: int = 3, **kwargs: object
    ) -> None: ...

    async def h(x: int, y: str = "y", *, z: float = 1.0) -> None: ...

    cached_g, cached_h = cache.cached()(g), cache.cached()(h)
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((1,), {}),
        ((1, "b"), {}),
        ((1, "b", 7, 8), {"c": 4}),
        (("a:b*",), {"q": [1, 2], "p": {"k": None}}),
        ((), {"a": 1.5, "b": b"x"}),
    ]
    for args, kwargs in calls:
        assert cache.keys.full(cached_g.key_for(*args, **kwargs)) == cache.keys.call_key(
            g, args, kwargs
        )
    for args, kwargs in [((1,), {}), ((1, "s"), {"z": 2.0}), ((), {"x": -5, "y": "Ö"})]:
        assert cache.keys.full(cached_h.key_for(*args, **kwargs)) == cache.keys.call_key(
            h, args, kwargs
        )


async def test_call_key_equals_the_decorated_key_without_arguments_and_for_methods() -> None:
    """The two cases where `call_key` used to differ: a function with nothing to key (no
    trailing separator) and a method keyed through its instance's ``__cache_key__``."""
    from cachetier import Cache

    cache = Cache(namespace="app", version="v1")

    async def nothing() -> None: ...

    class Repo:
        def __cache_key__(self) -> str:
            return "repo-1"

        async def find(self, item: int) -> None: ...

    assert cache.keys.full(cache.cached()(nothing).key_for()) == cache.keys.call_key(
        nothing, (), {}
    )
    assert not cache.keys.call_key(nothing, (), {}).endswith(":")
    repo = Repo()
    decorated = cache.cached()(Repo.find)
    assert cache.keys.full(decorated.key_for(repo, 7)) == cache.keys.call_key(
        Repo.find, (repo, 7), {}
    )


def test_encode_call_still_works_and_warns_that_it_goes() -> None:
    """Removed in 0.3: one minor release of warning first (the changelog names the successor)."""
    import inspect

    def f(a: int, b: str = "x") -> None: ...

    with pytest.warns(DeprecationWarning, match="call_key"):
        text = KeyBuilder.encode_call(inspect.signature(f), (1,), {})
    assert text == "a=" + encode_argument(1) + ":b=" + encode_argument("x")
