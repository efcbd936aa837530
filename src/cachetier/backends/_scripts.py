"""Lua scripts run by `RedisBackend`, each with the invariant it keeps.

redis-py's registered scripts run with EVALSHA and, on NOSCRIPT (the server restarted or ran
SCRIPT FLUSH), load the script and run it again; the error is never swallowed into a result.
"""

from __future__ import annotations

from typing import Final

__all__ = ("RELEASE_LOCK",)

# Releases a lock only while it still holds the releaser's token. Without the comparison, a
# holder whose lock expired mid-computation would delete the lock that another process took
# after the expiry, letting a third one in. GET and DEL run atomically inside the script.
# KEYS[1]: the lock; ARGV[1]: the token. Returns 1 if released, 0 if the lock was not ours.
RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
