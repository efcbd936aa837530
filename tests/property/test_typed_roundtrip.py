"""Hypothesis-generated models and dataclasses come back from a hit equal and of the same type."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Optional

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachetier import Cache
from cachetier.backends import MemoryBackend, RedisBackend

# Each field kind: its annotation and a strategy for its values. Floats exclude NaN and the
# infinities, which JSON cannot carry (such values are refused at the next read, not served).
FIELD_KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "int": (int, st.integers(-(2**53), 2**53)),
    "str": (str, st.text(max_size=20)),
    "float": (float, st.floats(allow_nan=False, allow_infinity=False)),
    "bool": (bool, st.booleans()),
    "datetime": (dt.datetime, st.datetimes(timezones=st.sampled_from([None, dt.timezone.utc]))),
    "date": (dt.date, st.dates()),
    "uuid": (uuid.UUID, st.uuids()),
    "decimal": (
        Decimal,
        st.decimals(
            allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9
        ),
    ),
    "list_int": (list[int], st.lists(st.integers(-1000, 1000), max_size=5)),
    "dict_str_float": (
        dict[str, float],
        st.dictionaries(
            st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False), max_size=4
        ),
    ),
    "optional_str": (Optional[str], st.none() | st.text(max_size=10)),  # noqa: UP045  # the Optional spelling is part of what is checked
    "tuple": (tuple[int, str], st.tuples(st.integers(-5, 5), st.text(max_size=4))),
}

schemas = st.lists(st.sampled_from(sorted(FIELD_KINDS)), min_size=1, max_size=6)
_names = itertools.count()


def build_type(kinds: list[str], *, as_dataclass: bool) -> Any:
    fields = {f"f{i}": FIELD_KINDS[kind][0] for i, kind in enumerate(kinds)}
    name = f"Generated{next(_names)}"
    if as_dataclass:
        cls = dataclasses.make_dataclass(name, list(fields.items()))
    else:
        cls = pydantic.create_model(name, **{k: (v, ...) for k, v in fields.items()})  # type: ignore[call-overload]
    globals()[name] = cls  # resolvable by name, as a class defined at module level would be
    return cls


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[Any, Any]:
    kinds = draw(schemas)
    cls = build_type(kinds, as_dataclass=draw(st.booleans()))
    values = {f"f{i}": draw(FIELD_KINDS[kind][1]) for i, kind in enumerate(kinds)}
    instance = cls(**values)
    wrapper = draw(st.sampled_from(["plain", "list", "dict"]))
    if wrapper == "list":
        return list[cls], [instance, instance]  # type: ignore[valid-type]
    if wrapper == "dict":
        return dict[str, cls], {"only": instance}  # type: ignore[valid-type]
    return cls, instance


@pytest.fixture(params=["memory", "redis"])
def backend_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    if request.param == "memory":
        yield MemoryBackend
    else:
        url = request.getfixturevalue("redis_url")
        # Generous timeouts: this test is about types, and the default 100 ms command timeout
        # failed a lease's SET NX open on a loaded CI machine (the second call then computed).
        yield lambda: RedisBackend.from_url(url, command_timeout=2.0, connect_timeout=2.0)


def run_roundtrip(
    make_backend: Callable[[], Any], annotation: Any, value: Any
) -> tuple[Any, Any, int]:
    async def scenario() -> tuple[Any, Any, int]:
        calls = 0
        async with Cache(make_backend(), namespace=f"typed{uuid.uuid4().hex[:8]}") as cache:

            async def produce() -> Any:
                nonlocal calls
                calls += 1
                return value

            produce.__annotations__["return"] = annotation
            cached = cache.cached(ttl=60)(produce)
            miss = await cached()
            hit = await cached()
            await cache.clear()
        return miss, hit, calls

    return asyncio.run(scenario())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(typed_values())
def test_hit_equals_miss_and_keeps_its_type(
    backend_factory: Callable[[], Any], case: tuple[Any, Any]
) -> None:
    annotation, value = case
    miss, hit, calls = run_roundtrip(backend_factory, annotation, value)
    assert calls == 1, "the second call must be served from the cache"
    assert hit == miss == value
    assert type(hit) is type(value)
    if isinstance(value, list):
        assert all(type(item) is type(value[0]) for item in hit)
    if isinstance(value, dict):
        assert type(hit["only"]) is type(value["only"])
