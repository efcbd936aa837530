"""The machinery behind `Cache`: one module per rule, wired together by `engine.Engine`.

Nothing here is public; the public names defined here (`CircuitBreaker`, `CacheStats`,
`LocalTier`, `HealthReport`, `Inspection` ...) are reached from `cachetier`.
"""
