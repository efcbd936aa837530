"""Lua scripts run by the Redis backends, each with the invariant it keeps.

redis-py's registered scripts run with EVALSHA and, on NOSCRIPT (the server restarted or ran
SCRIPT FLUSH), load the script and run it again; the error is never swallowed into a result.
"""

from __future__ import annotations

from typing import Final

__all__ = ("INCR_WITH_TTL", "RELEASE_LOCK", "SET_IF", "TAG_BUMP", "TAG_STAMPS")

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

# Stores a computed value only if the key still holds what the computation started from (its
# lease, or the stale entry it refreshes). A delete or invalidation that removed or replaced it
# meanwhile means the value may predate the change, and storing it would serve old data.
# KEYS[1]: the key; ARGV[1]: the expected leading bytes; ARGV[2]: the value; ARGV[3]: PX
# milliseconds, "0" for no expiry. Returns 1 if stored, 0 if not.
SET_IF: Final = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] == '0' then
    redis.call('SET', KEYS[1], ARGV[2])
else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# Reads the stamp of each tag key, creating the absent ones with ARGV[1]. The GET and the SET
# run in one script, so no other client writes between them: concurrent callers agree on one
# stamp, as with SET NX. A key is then kept at least ttl more milliseconds, and rewritten only
# when it has less (PEXPIRE to twice ttl), since every write is an invalidation message to
# tracking clients; an expiry is never shortened, and a key without one keeps none. With no ttl
# the key is made persistent. A key of another type (an index set of the older tag design)
# holds no stamp, so it is replaced as an absent one would be. Millisecond counts arrive as
# decimal text and are passed on as text: Lua numbers are doubles, exact only up to 2**53.
# KEYS: the tag keys (one slot in a cluster); ARGV[1]: the fresh stamp; ARGV[2]: ttl in
# milliseconds, "0" for none; ARGV[3]: twice ttl. Returns the stamps, in the order of KEYS.
TAG_STAMPS: Final = """
local ttl = tonumber(ARGV[2])
local stamps = {}
for i, key in ipairs(KEYS) do
    local stamp = redis.pcall('GET', key)
    if type(stamp) ~= 'string' then
        if ttl == 0 then
            redis.call('SET', key, ARGV[1])
        else
            redis.call('SET', key, ARGV[1], 'PX', ARGV[3])
        end
        stamp = ARGV[1]
    else
        local left = redis.call('PTTL', key)
        if ttl == 0 then
            if left >= 0 then
                redis.call('PERSIST', key)
            end
        elseif left >= 0 and left < ttl then
            redis.call('PEXPIRE', key, ARGV[3])
        end
    end
    stamps[i] = stamp
end
return stamps
"""

# Replaces the stamp of each tag key, which invalidates every entry that recorded the old one.
# Counts only the keys that held a string (a stamp) before; a key of another type is replaced
# all the same. KEYS: the tag keys (one slot in a cluster); ARGV[1]: the fresh stamp; ARGV[2]:
# PX milliseconds. Returns how many held a stamp.
TAG_BUMP: Final = """
local held = 0
for _, key in ipairs(KEYS) do
    if type(redis.pcall('GET', key)) == 'string' then
        held = held + 1
    end
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return held
"""

# INCRBY on a key that, when absent, is created with an expiry first: the counter's TTL is set
# atomically with its first increment, and an existing key keeps its expiry. One key, so it
# runs in a cluster (where RedisBackend's MULTI/EXEC would need redis-py's cluster
# transactions); only RedisClusterBackend runs it. An INCRBY error aborts the script after a
# SET NX that changed nothing, since the key existed. The result is read back with GET, as
# text: Lua holds INCRBY's integer reply as a double, which rounds counters past 2**53.
# KEYS[1]: the counter; ARGV[1]: the amount; ARGV[2]: PX milliseconds.
INCR_WITH_TTL: Final = """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
"""
