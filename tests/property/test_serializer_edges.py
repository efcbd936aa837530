"""Serializers give back NaN and the infinities exactly, and refuse values nested too deeply."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier import Cache, SerializationError
from cachetier.backends import MemoryBackend
from cachetier.serializers import JsonSerializer, Serializer
from cachetier.serializers._typed import TypedSerializer

# A default install has neither orjson nor msgpack: their cases skip there, the rest run.
_NEEDS = {"orjson": "orjson", "msgpack": "msgpack", "typed-msgpack": "msgpack"}
_MISSING = {name for name, module in _NEEDS.items() if importlib.util.find_spec(module) is None}


def _msgpack() -> Serializer:
    from cachetier.serializers.msgpack import MsgpackSerializer

    return MsgpackSerializer()


def _make(name: str) -> Serializer:
    makers: dict[str, Callable[[], Serializer]] = {
        "orjson": lambda: JsonSerializer(use_orjson=True),
        "stdlib-json": lambda: JsonSerializer(use_orjson=False),
        "msgpack": lambda: _msgpack(),
        "typed-json": lambda: TypedSerializer(list[Any]),
        "typed-msgpack": lambda: TypedSerializer(list[Any], inner=_msgpack()),
        "typed-stdlib": lambda: TypedSerializer(list[Any], inner=JsonSerializer(use_orjson=False)),
    }
    return makers[name]()


PLAIN: dict[str, Serializer] = {
    name: _make(name) for name in ("orjson", "stdlib-json", "msgpack") if name not in _MISSING
}
TYPED: dict[str, Serializer] = {
    name: _make(name)
    for name in ("typed-json", "typed-msgpack", "typed-stdlib")
    if name not in _MISSING
}


def _params(*names: str) -> list[Any]:
    """The names as parameters, each skipped where its extra is not installed."""
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(name in _MISSING, reason=f"needs {_NEEDS.get(name)}"),
        )
        for name in names
    ]


NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
FLOATS = st.floats() | NON_FINITE
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | FLOATS | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


def same(a: object, b: object) -> bool:
    """Equality that counts NaN equal to NaN and tells 1 from 1.0, recursively."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# --- NaN and the infinities ------------------------------------------------------------------


@pytest.mark.parametrize("name", _params("msgpack", "orjson", "stdlib-json"))
@given(value=JSON_VALUES)
def test_plain_serializers_round_trip_every_float(name: str, value: object) -> None:
    serializer = PLAIN[name]
    assert same(serializer.loads(serializer.dumps(value)), value)


@pytest.mark.skipif("orjson" in _MISSING, reason="needs orjson")
@pytest.mark.parametrize(
    ("writer", "reader"), [("orjson", "stdlib-json"), ("stdlib-json", "orjson")]
)
@given(value=st.lists(FLOATS, max_size=5))
def test_json_with_and_without_orjson_read_each_others_non_finite_floats(
    writer: str, reader: str, value: list[float]
) -> None:
    assert same(PLAIN[reader].loads(PLAIN[writer].dumps(value)), value)


@pytest.mark.parametrize("annotation", [float, float | None, list[float | None], dict[str, Any]])
@pytest.mark.parametrize("inner", [None, "stdlib-json", "msgpack"])
@given(number=NON_FINITE)
def test_typed_codec_round_trips_non_finite_floats(
    annotation: Any, inner: str | None, number: float
) -> None:
    if inner in _MISSING:
        pytest.skip(f"needs {inner}")
    value: object = number
    if annotation == list[float | None]:
        value = [1.5, number, None]
    elif annotation == dict[str, Any]:
        value = {"mean": number, "n": 0}
    serializer: TypedSerializer[Any] = TypedSerializer(
        annotation, inner=None if inner is None else _make(inner)
    )
    assert same(serializer.loads(serializer.dumps(value)), value)


class Report(pydantic.BaseModel):
    mean: float | None


class SpelledReport(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(ser_json_inf_nan="constants")

    mean: float | None


def test_typed_codec_refuses_a_model_that_would_write_nan_as_null() -> None:
    """Never NaN in, None out: refused, or (where pydantic lets the codec's config reach the
    model, as 2.7 does) kept as NaN."""
    serializer: TypedSerializer[Report] = TypedSerializer(Report)
    refused: SerializationError | None = None
    try:
        data = serializer.dumps(Report(mean=math.nan))
    except SerializationError as exc:
        refused = exc
    if refused is not None:
        assert "ser_json_inf_nan" in str(refused)
    else:
        mean = serializer.loads(data).mean
        assert mean is not None
        assert math.isnan(mean)
    assert serializer.loads(serializer.dumps(Report(mean=None))) == Report(mean=None)


def test_typed_codec_round_trips_a_model_configured_to_spell_nan() -> None:
    serializer: TypedSerializer[list[SpelledReport]] = TypedSerializer(list[SpelledReport])
    (got,) = serializer.loads(serializer.dumps([SpelledReport(mean=math.inf)]))
    assert got.mean == math.inf


async def test_cache_returns_nan_as_nan_not_none() -> None:
    async with Cache(MemoryBackend()) as cache:
        assert await cache.set("ratio", math.nan) is True
        got = await cache.get("ratio")
        assert isinstance(got, float)
        assert math.isnan(got)

        @cache.cached(ttl=60)
        async def conversion_rate(campaign: int) -> float | None:
            return math.nan

        await conversion_rate(1)
        hit = await conversion_rate(1)
        assert hit is not None
        assert math.isnan(hit)


@pytest.mark.parametrize("name", _params("orjson", "stdlib-json"))
async def test_functions_declared_float_or_dict_read_back_non_finite_floats(name: str) -> None:
    # A plain declared type decodes with orjson's own function when it can (no validation to
    # add); orjson refuses the NaN tokens, which must still reach the serializer that reads them.
    async with Cache(MemoryBackend(), serializer=PLAIN[name]) as cache:

        @cache.cached(ttl=60)
        async def rate(campaign: int) -> float:
            return math.nan

        @cache.cached(ttl=60)
        async def summary(campaign: int) -> dict[str, Any]:
            return {"mean": math.inf, "samples": [-math.inf, 1.5]}

        for _ in range(2):
            assert math.isnan(await rate(1))
            assert await summary(1) == {"mean": math.inf, "samples": [-math.inf, 1.5]}
        assert (cache.stats.hits, cache.stats.decode_errors) == (2, 0)


async def test_a_json_serializer_subclass_that_decodes_its_own_way_is_used_on_every_hit() -> None:
    class Enveloped(JsonSerializer):
        def dumps(self, value: object) -> bytes:
            return super().dumps({"v": value})

        def loads(self, data: bytes) -> object:
            value = super().loads(data)
            assert isinstance(value, dict)
            return value["v"]

    serializer = Enveloped()
    assert serializer.fast_loads is None
    async with Cache(MemoryBackend(), serializer=serializer) as cache:

        @cache.cached(ttl=60)
        async def profile(user: int) -> dict[str, Any]:
            return {"id": user}

        assert await profile(7) == {"id": 7}
        assert await profile(7) == {"id": 7}
        assert (cache.stats.hits, cache.stats.decode_errors) == (1, 0)


# --- nesting deeper than the parsers go -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    _params("msgpack", "orjson", "stdlib-json", "typed-json", "typed-msgpack", "typed-stdlib"),
)
def test_too_deep_a_value_is_a_serialization_error_on_write(name: str) -> None:
    serializer = {**PLAIN, **TYPED}[name]
    with pytest.raises(SerializationError):
        serializer.dumps(deep(5000))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("orjson", b"[" * 100_000 + b"]" * 100_000),
        ("stdlib-json", b"[" * 100_000 + b"]" * 100_000),
        ("msgpack", b"\x91" * 100_000 + b"\x90"),
        ("typed-json", b"[" * 100_000 + b"]" * 100_000),
        ("typed-msgpack", b"\x91" * 100_000 + b"\x90"),
        ("typed-stdlib", b"[" * 100_000 + b"]" * 100_000),
    ],
)
def test_too_deep_stored_bytes_are_a_serialization_error_on_read(name: str, data: bytes) -> None:
    if name in _MISSING:
        pytest.skip(f"needs {_NEEDS[name]}")
    serializer = {**PLAIN, **TYPED}[name]
    with pytest.raises(SerializationError):
        serializer.loads(data)


async def test_set_of_a_too_deep_value_raises_and_stores_nothing() -> None:
    async with Cache(MemoryBackend(), serializer=JsonSerializer(use_orjson=False)) as cache:
        with pytest.raises(SerializationError):
            await cache.set("tree", deep(5000))
        assert await cache.exists("tree") is False
