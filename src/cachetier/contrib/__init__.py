"""Optional integrations, each behind its own extra; importing `cachetier` imports none of them.

- `cachetier.contrib.fastapi` (``pip install "cachetier[fastapi]"``) and `cachetier.contrib.asgi`
  (any ASGI app) cache HTTP responses and hand routes the `Cache`.
- `cachetier.contrib.prometheus` (``pip install "cachetier[prometheus]"``) and
  `cachetier.contrib.otel` (``pip install "cachetier[otel]"``) export reads by outcome and the
  cache's counters as metrics.
"""
