"""Arbitrary bytes under a cache key are never an exception and never a value cachetier did not write.

The bytes are stored straight through the backend, as a foreign writer, a corrupted server or an
older release would leave them. Readers are `Cache.get`, `Cache.get_or_set` and decorated
functions with typed return annotations. The expected outcome of each read comes from the
documented entry layout (see ``cachetier._core.entry``): a magic byte 0xC1, format 1, two reserved
bytes, then ``created``, ``fresh_until`` (float64) and ``delta`` (float32), then the payload.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cachetier import Cache
from cachetier.backends import Backend, MemoryBackend, RedisBackend
from cachetier.serializers import JsonSerializer

NOW = 1_750_000_000.0
HEADER = struct.Struct("<BBBBQddf8s")
MAGIC = 0xC1
FORMAT = 3
TAGGED = 0x01
GENERATION = 7  # each example's store is at this generation (see `Subject.cache`)
SIGNING_KEY = b"property-test-signing-key-0123456789"

_keys = itertools.count()


class Item(pydantic.BaseModel):
    name: str
    qty: int


# -- what a read should give ---------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The outcomes a read may have: a miss, and/or a hit with exactly ``value``."""

    may_miss: bool
    value: Any = None  # a hit must equal this (and have its type) ...
    may_hit: bool = False  # ... and is allowed only when this is set


MISS = Expected(may_miss=True)


def expected_read(
    data: bytes,
    decode: Callable[[bytes], Any],
    *,
    counters: bool = False,
    signed: bool = False,
) -> Expected:
    """What reading ``data`` may give, for a reader that turns payloads into values with ``decode``.

    ``counters``: the reader is `Cache.get`, which returns a decimal counter as an ``int``.
    ``signed``: the cache has a signing key, so everything is a miss (a signed cache serves
    no plain integer either: anyone who can write the store can write one).
    """
    if counters and _is_counter(data) and not signed:
        return Expected(may_miss=False, value=int(data), may_hit=True)
    if signed or len(data) < HEADER.size or data[0] != MAGIC:
        return MISS
    _, version, flags, reserved, generation, created, fresh_until, delta, _ = HEADER.unpack_from(
        data
    )
    later_bump = generation >> 32 == GENERATION >> 32 and generation > GENERATION
    if version != FORMAT or not (generation == GENERATION or later_bump):
        return MISS  # a format this release cannot read, or an entry from before a bump
    offset = HEADER.size
    if flags & TAGGED:
        # Tag records name tag keys that hold no stamp here, so only an empty tag section
        # can leave the entry servable.
        if len(data) < offset + 2 or struct.unpack_from("<H", data, offset)[0] != 0:
            return MISS
        offset += 2
    if not all(map(math.isfinite, (created, fresh_until, delta))):
        lenient = True  # never written by cachetier; refusing or reading it are both fine
    else:
        lenient = bool(flags or reserved)  # reserved bits: a reader may refuse them
        if fresh_until and fresh_until <= NOW:
            return MISS  # stale, and no stale policy is on
    try:
        value = decode(data[offset:])
    except (ValueError, pydantic.ValidationError):
        return MISS
    return Expected(may_miss=lenient, value=value, may_hit=True)


def _is_lease(data: bytes) -> bool:
    """A lease: another computation holds the key, so a miss computes without storing."""
    return len(data) == 18 and data[:2] == b"\xc3\xff"


def _is_counter(data: bytes) -> bool:
    text = data.decode("ascii", "replace")
    digits = text.removeprefix("-")
    return 1 <= len(digits) <= 20 and digits.isascii() and digits.isdigit()


def _json(data: bytes) -> Any:
    return JsonSerializer().loads(data)


def _checked(expected_type: type) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        value = _json(data)
        if not isinstance(value, expected_type) or (
            expected_type is int and isinstance(value, bool)
        ):
            raise ValueError(f"not a {expected_type.__name__}")
        return value

    return decode


def _validated(annotation: Any) -> Callable[[bytes], Any]:
    return pydantic.TypeAdapter(annotation).validate_json


def assert_read(result: Any, ran: bool, own: Any, expected: Expected, data: bytes) -> None:
    """Checks one read: ``result`` returned, ``ran`` whether the fetch ran, ``own`` its value."""
    if ran:
        assert expected.may_miss, f"{data!r} should have been a hit of {expected.value!r}"
        assert result == own
        assert type(result) is type(own)
    else:
        assert expected.may_hit, f"{data!r} was served as {result!r}"
        assert result == expected.value
        assert type(result) is type(expected.value)


# -- what is stored ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=8,
)
# Fresh (never stale, or an hour left), stale or on the edge, and any float at all.
timestamps = (
    st.sampled_from([0.0, NOW + 3600])
    | st.sampled_from([NOW - 3600, NOW, NOW + 1e-6])
    | st.floats()
)
# Payloads: junk, any JSON, JSON of the shapes the typed readers accept, and those cut short.
payload_values = (
    json_values
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**70), 2**70), max_size=4)
    | st.fixed_dictionaries({"name": st.text(max_size=5), "qty": st.integers() | st.text()})
    | st.builds(lambda n: {"own": n}, st.integers())
)
json_payloads = payload_values.map(lambda v: json.dumps(v).encode())
payloads = (
    st.binary(max_size=40)
    | json_payloads
    | st.tuples(json_payloads, st.integers(0, 40)).map(lambda t: t[0][: t[1]])
)


@st.composite
def entry_like(draw: st.DrawFn) -> bytes:
    """Bytes with the entry magic byte, a mostly plausible header and any payload."""
    header = HEADER.pack(
        draw(st.just(MAGIC) | st.sampled_from([0xC2, 0x00, 0x7B])),
        draw(st.just(FORMAT) | st.integers(0, 255)),
        draw(st.just(0) | st.integers(0, 255)),
        draw(st.just(0) | st.integers(0, 255)),
        # The store's generation, or any other: those are misses.
        draw(st.just(GENERATION) | st.integers(0, 2**64 - 1)),
        draw(st.just(NOW - 1) | st.floats()),
        draw(timestamps),
        draw(st.just(0.0) | st.floats(width=32)),
        draw(st.binary(min_size=8, max_size=8)),
    )
    cut = draw(st.sampled_from([HEADER.size] * 3) | st.integers(0, HEADER.size))
    return header[:cut] + draw(payloads)


# Entry-shaped bytes stress the decoder hardest, so they are drawn most often.
stored_bytes = (
    entry_like()
    | entry_like()
    | entry_like()
    | st.binary(max_size=64)
    | st.binary(max_size=40).map(lambda b: bytes((MAGIC, FORMAT)) + b)
    | st.integers(-(2**64), 2**64).map(lambda n: str(n).encode())
    | st.from_regex(rb"\A[-+ 0]?[0-9]{1,22}\Z")
    | json_payloads
)


def entry(
    payload: bytes,
    *,
    magic: int = MAGIC,
    version: int = FORMAT,
    flags: int = 0,
    fresh_until: float = NOW + 3600,
    created: float = NOW - 1,
) -> bytes:
    """Bytes laid out as an entry, with any field overridden."""
    nonce = b"nonce-42"
    return (
        HEADER.pack(magic, version, flags, 0, GENERATION, created, fresh_until, 0.0, nonce)
        + payload
    )


# Cases every run checks, whatever Hypothesis draws: each payload decodes for some reader.
DECODABLE = [b"{}", b'{"name":"x","qty":1}', b"1", b"[1]", b"null"]
ALWAYS_CHECKED = [
    *(entry(payload, version=0) for payload in DECODABLE),  # an unknown format
    *(entry(payload, version=1) for payload in DECODABLE),  # the format before generations
    *(entry(payload, version=2) for payload in DECODABLE),  # the format before tag stamps
    *(entry(payload, version=4) for payload in DECODABLE),
    *(entry(payload, magic=0xC2) for payload in DECODABLE),  # signed, with no valid tag
    entry(b"{}", fresh_until=NOW - 1),  # stale
    entry(b"{}", fresh_until=math.nan),
    entry(b"{}", fresh_until=math.inf),
    entry(b"{}", created=math.nan),
    entry(b"{}", flags=1),
    entry(b"\x00\x00{}", flags=TAGGED),  # an empty tag section
    entry(b"\x05\x00\x01\x00k\x00{}", flags=TAGGED),  # a tag whose key holds no stamp
    entry(b"{}", flags=2),
    entry(b"{}")[: HEADER.size - 1],
    bytes((MAGIC, FORMAT)),
    b"",
    b"42",
    b"-7",
    b"007",
    b"+5",
]


def always_checked(test: Callable[..., Any]) -> Callable[..., Any]:
    for data in ALWAYS_CHECKED:
        test = example(data=data)(test)
    return test


PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- caches --------------------------------------------------------------------------------


@dataclass
class Subject:
    backend: Backend
    signed: bool

    @property
    def cache(self) -> Cache:
        """A new cache over the backend for each example, as a new process would read it.

        Its first read learns the store's generation, which `subject` sets to `GENERATION`.
        """
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = self.__dict__["_cache"] = Cache(
                self.backend,
                namespace="arbitrary",
                clock=lambda: NOW,
                signing_key=SIGNING_KEY if self.signed else None,
            )
        return cache

    def next_example(self) -> None:
        self.__dict__.pop("_cache", None)


@pytest.fixture(
    params=["memory", "fakeredis", "memory-signed", "fakeredis-signed"],
)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    """A cache with a fixed clock, on the memory backend or fakeredis, with or without signing."""
    kind, _, signed = str(request.param).partition("-")
    client = None
    if kind == "memory":
        backend: Backend = MemoryBackend()
    else:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        backend = RedisBackend(client)
    keys = Cache(backend, namespace="arbitrary").keys
    await backend.set(keys.generation_key(), str(GENERATION).encode())
    yield Subject(backend, bool(signed))
    await backend.aclose()
    if client is not None:
        await client.aclose()


# -- reads ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(data=stored_bytes)
@always_checked
async def test_get_of_arbitrary_bytes_is_a_miss_or_the_value_written(
    subject: Subject, data: bytes
) -> None:
    subject.next_example()
    key = f"k{next(_keys)}"
    await subject.backend.set(subject.cache.keys.full(key), data)
    own = object()
    result = await subject.cache.get(key, own)
    expected = expected_read(data, _json, counters=True, signed=subject.signed)
    assert_read(result, result is own, own, expected, data)


@PROPERTY_SETTINGS
@given(data=stored_bytes)
@always_checked
async def test_get_or_set_over_arbitrary_bytes_returns_the_value_written_or_fetches(
    subject: Subject, data: bytes
) -> None:
    subject.next_example()
    key = f"k{next(_keys)}"
    await subject.backend.set(subject.cache.keys.full(key), data)
    own = {"own": next(_keys)}
    runs = 0

    def fetch() -> dict[str, int]:
        nonlocal runs
        runs += 1
        return own

    result = await subject.cache.get_or_set(key, fetch, ttl=60)
    assert runs <= 1
    assert_read(result, runs == 1, own, expected_read(data, _json, signed=subject.signed), data)
    if runs and not _is_lease(data):
        # What was there is replaced: the next read is a hit of the fetched value.
        assert await subject.cache.get_or_set(key, fetch, ttl=60) == own
        assert runs == 1


@dataclass(frozen=True)
class Typed:
    """A return annotation, how a hit of it decodes, and a value a call returns on a miss."""

    annotation: Any
    decode: Callable[[bytes], Any]
    own: Callable[[int], Any]


TYPED = {
    "dict[str, int]": Typed(dict[str, int], _validated(dict[str, int]), lambda n: {"own": n}),
    "model": Typed(Item, _validated(Item), lambda n: Item(name="own", qty=n)),
    "dict[str, Any]": Typed(dict[str, Any], _checked(dict), lambda n: {"own": n}),
    "int": Typed(int, _checked(int), lambda n: -n - 1),
    "list[int]": Typed(list[int], _validated(list[int]), lambda n: [n, -n]),
}


@pytest.mark.parametrize("typed", list(TYPED.values()), ids=list(TYPED))
@PROPERTY_SETTINGS
@given(data=stored_bytes)
@always_checked
async def test_decorated_call_over_arbitrary_bytes_returns_a_written_value_of_its_type_or_runs(
    subject: Subject, typed: Typed, data: bytes
) -> None:
    subject.next_example()
    runs = 0

    async def compute(n: int) -> Any:
        nonlocal runs
        runs += 1
        return typed.own(n)

    compute.__annotations__["return"] = typed.annotation
    function = subject.cache.cached(ttl=60)(compute)
    n = next(_keys)
    await subject.backend.set(subject.cache.keys.full(function.key_for(n)), data)

    result = await function(n)
    assert runs <= 1
    expected = expected_read(data, typed.decode, signed=subject.signed)
    assert_read(result, runs == 1, typed.own(n), expected, data)
    if runs:
        assert await function(n) == typed.own(n)
        assert runs == 1
