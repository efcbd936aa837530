"""Optional integrations with web frameworks, each behind its own extra.

`cachetier.contrib.fastapi` (``pip install "cachetier[fastapi]"``) and `cachetier.contrib.asgi`
(``pip install "cachetier[starlette]"``, or any ASGI server) cache HTTP responses and hand routes
the `Cache`. Importing `cachetier` never imports these modules or their frameworks.
"""
