"""``examples/grafana/cachetier.json``: every metric the dashboard queries is one the exporter emits."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend
from cachetier.testing import FaultyBackend

pytest.importorskip("prometheus_client")

# After the importorskip call, so that the module skips when prometheus-client is missing.
from prometheus_client import CollectorRegistry

from cachetier.contrib.prometheus import instrument

DASHBOARD = Path(__file__).parents[2] / "examples" / "grafana" / "cachetier.json"
METRIC = re.compile(r"cachetier_[a-z_]+")
# The suffixes Prometheus adds to a family's name in its samples.
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries(node: object) -> Iterator[str]:
    """Yields every PromQL text of a dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def unknown_metrics(dashboard: dict[str, Any], families: set[str], samples: set[str]) -> set[str]:
    """The names the dashboard queries that are neither an emitted family nor an emitted sample."""
    used = {name for text in queries(dashboard) for name in METRIC.findall(text)}
    assert used, "the dashboard queries no cachetier metric at all"
    # A name must be a sample the exporter writes: stripping the suffix alone would let
    # `cachetier_breaker_open_total` through, since `cachetier_breaker_open` is a family.
    return {name for name in used if family(name) not in families or name not in samples}


@pytest.fixture
async def emitted() -> tuple[set[str], set[str]]:
    """The metric families and sample names an instrumented cache exports after a few reads."""
    registry = CollectorRegistry()
    cache = Cache(FaultyBackend(MemoryBackend()), namespace="dashboard")
    instrument(cache, registry)

    @cache.cached(ttl=60)
    async def load(number: int) -> int:
        return number

    await cache.set("k", 1)
    await cache.get("k")
    await cache.get("absent")
    await load(1)
    await load(1)
    metrics = list(registry.collect())
    return {metric.name for metric in metrics}, {
        sample.name for metric in metrics for sample in metric.samples
    }


def test_every_metric_the_dashboard_queries_is_emitted(
    dashboard: dict[str, Any], emitted: tuple[set[str], set[str]]
) -> None:
    families, samples = emitted
    assert unknown_metrics(dashboard, families, samples) == set()


@pytest.mark.parametrize(
    "wrong",
    [
        "cachetier_breaker_opened",  # no such family
        "cachetier_breaker_open_total",  # a gauge has no _total sample
        "cachetier_backend_latency_bucket",  # the histogram is ..._seconds_bucket
    ],
)
def test_a_panel_querying_a_metric_not_emitted_is_caught(
    dashboard: dict[str, Any], emitted: tuple[set[str], set[str]], wrong: str
) -> None:
    spoiled = copy.deepcopy(dashboard)
    spoiled["panels"][0]["targets"][0]["expr"] = f'sum(rate({wrong}{{namespace="x"}}[5m]))'
    families, samples = emitted
    assert unknown_metrics(spoiled, families, samples) == {wrong}


def test_panels_cover_what_operators_look_at(dashboard: dict[str, Any]) -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "hit ratio",
        "outcome",
        "latency",
        "errors",
        "breaker",
        "stale",
        "lock",
        "journal",
    ):
        assert topic in titles, topic
    quantiles = [text for text in queries(dashboard) if "histogram_quantile" in text]
    assert {re.search(r"histogram_quantile\((0\.\d+)", text)[1] for text in quantiles} == {  # type: ignore[index]
        "0.5",
        "0.95",
        "0.99",
    }


def test_every_panel_query_is_filtered_by_the_namespace_variable(
    dashboard: dict[str, Any],
) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["multi"] is True
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            for selector in re.findall(r"cachetier_[a-z_]+\{([^}]*)\}", target["expr"]):
                assert 'namespace=~"$namespace"' in selector, (panel["title"], target["expr"])
