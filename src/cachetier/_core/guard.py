"""`Guard`: the one place every backend call of a `Cache` passes — the circuit breaker, fail-open
or strict, and the rate-limited log of failures.

The hot read path (`Reader.get`) asks `gate` and `succeeded` inline instead of going through
`run`: one coroutine frame fewer on every hit, which is most of what a Redis hit costs above
its round trip. Everything else calls `run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, final

from .._errors import BackendError, CircuitOpenError, CounterError, ValueRejected
from .._log import RateLimitedLog
from ..backends._protocol import Backend, GuardedBackend
from .breaker import CircuitBreaker

__all__ = ("Guard",)

T = TypeVar("T")
F = TypeVar("F")


@final
class Guard:
    """The backend of one `Cache` and the rules every call to it follows."""

    __slots__ = (
        "backend",
        "breaker",
        "guarded",
        "log",
        "merge_reads",
        "nowait",
        "strict",
        "timing",
    )

    def __init__(
        self, backend: Backend, breaker: CircuitBreaker, *, strict: bool, timing: bool
    ) -> None:
        self.breaker = breaker
        self.strict = strict
        # Backend failures, hooks that raised, values not cached: each kind logged at a
        # bounded rate, so an outage does not flood the log.
        self.log = RateLimitedLog()
        self.use(backend, timing=timing)

    def use(self, backend: Backend, *, timing: bool) -> None:
        """Makes ``backend`` the one every call goes to from now on."""
        self.backend: Backend = backend
        # Merging concurrent reads saves round trips; a backend whose calls never wait on I/O
        # (it says so with ``in_process = True``) answers before a second reader can arrive.
        self.merge_reads: bool = not getattr(backend, "in_process", False)
        # Latency is timed for backends that do I/O; an in-process one would only pay for it.
        self.timing: bool = self.merge_reads and timing
        # An in-process backend's GET without a coroutine (`Reader.now`), when it offers one.
        self.nowait: Callable[[str], bytes | None] | None = (
            None if self.merge_reads else _nowait_of(backend)
        )
        self.guarded: bool = isinstance(backend, GuardedBackend)

    def gate(self, command: str) -> None:
        """Raises `CircuitOpenError` unless the circuit breaker lets a call go to the backend."""
        breaker = self.breaker
        if breaker.open_until and not breaker.allow():
            raise CircuitOpenError(
                f"{command} skipped: the circuit breaker is open after {breaker.failures} "
                f"consecutive failures; it probes again within {breaker.cooldown:g} s"
            )

    def succeeded(self) -> None:
        """Tells the breaker a backend call answered."""
        if self.breaker.failures or self.breaker.open_until:
            self.breaker.succeeded()

    def failed(self, operation: str, exc: BackendError, *, always_raise: bool = False) -> None:
        """Counts a failure for the breaker and logs it at a bounded rate; raises it when strict.

        A call the breaker skipped (`CircuitOpenError`) is not a new failure.
        """
        if not isinstance(exc, CircuitOpenError | CounterError | ValueRejected):
            # A refused value is the value's fault, not a sign the backend is down.
            self.breaker.failed()
        if self.strict or always_raise:
            raise exc
        self.log.warning(
            "backend:" + operation,
            "cache %s failed, continuing without the cache: %s",
            operation,
            exc,
        )

    async def run(
        self,
        command: str,
        operation: str,
        call: Callable[..., Awaitable[T]],
        *args: Any,
        fallback: F,
        always_raise: bool = False,
        on_failure: Callable[[], object] | None = None,
    ) -> T | F:
        """Returns ``await call(*args)`` if the breaker lets ``command`` through and it answers.

        On a `BackendError`, calls ``on_failure`` (to journal an invalidation that may not
        have reached the store), counts and logs the failure as ``operation``, and returns
        ``fallback``; or raises it, when strict or ``always_raise``.
        """
        try:
            self.gate(command)
            result = await call(*args)
        except BackendError as exc:
            if on_failure is not None:
                on_failure()
            self.failed(operation, exc, always_raise=always_raise)
            return fallback
        self.succeeded()
        return result


def _nowait_of(backend: Backend) -> Callable[[str], bytes | None] | None:
    """Returns ``backend.get_nowait``, unless a subclass overrides ``get`` below the class that
    defines ``get_nowait``: a read that skipped that ``get`` would skip what it adds (a spy's
    count, an injected fault)."""
    for kind in type(backend).__mro__:
        if "get_nowait" in vars(kind):
            nowait: Callable[[str], bytes | None] = getattr(backend, "get_nowait")  # noqa: B009
            return nowait
        if "get" in vars(kind):
            return None
    return None
