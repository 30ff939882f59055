"""Lua for the Redis buffer's ack, namespace claim and held-delivery keep-alive: atomic, and safe to
retry (no redis import here).

redis-py retries a command whose connection dropped; if Redis had already applied a plain
XACK + LPUSH, the retry would put the group into the replay pool twice. SETTLE moves an entry only
if XACK reports it was still pending, so the retry finds it settled and does nothing. Scripts run
atomically and are AOF-logged as their effects, so a crash never leaves half of one.

The replay pool is a list of stream entry ids, not copies: an acked entry stays in the stream until
evicted, so no payload crosses Lua (turning a 30 KB reply into a Lua string costs ~50 us per group,
more than the rest of an ack). Invariant: stream = fresh (undelivered + pending) + replay ids, so
backlog = XLEN - pending - LLEN(replay).
"""

# KEYS: fresh stream, replay id list (newest first), counters hash, versions hash
# ARGV: consumer group, to_replay (1/0), replay capacity, counter name, then (delivery id, version)...
# A version of '' means the caller does not know it (it did not read that entry): read it here.
# Acks the ids still pending; their entries join replay (by id) or are deleted; replay beyond
# capacity loses its oldest ids, and their entries. Returns {settled, evicted}.
# Only XACK goes id by id (its reply says whether that id was still pending); the list, hash and
# stream writes are one call each (in chunks: Lua's unpack takes a few thousand values at most).
SETTLE = """
local function in_chunks(command, key, values)
  for i = 1, #values, 1000 do
    redis.call(command, key, unpack(values, i, math.min(i + 999, #values)))
  end
end
local settled, evicted = 0, 0
local capacity = tonumber(ARGV[3])
local to_replay = ARGV[2] == '1'
local kept, removed, per_version = {}, {}, {}
for i = 5, #ARGV, 2 do
  local id, version = ARGV[i], ARGV[i + 1]
  if version == '' then
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry then
      for j = 1, #entry[2], 2 do
        if entry[2][j] == 'pv' then version = entry[2][j + 1] end
      end
    end
  end
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 and version ~= '' then
    settled = settled + 1
    per_version[version] = (per_version[version] or 0) + 1
    if to_replay and capacity > 0 then kept[#kept + 1] = id else removed[#removed + 1] = id end
  end
end
for version, count in pairs(per_version) do
  if redis.call('HINCRBY', KEYS[4], version, -count) <= 0 then redis.call('HDEL', KEYS[4], version) end
end
in_chunks('LPUSH', KEYS[2], kept)
in_chunks('XDEL', KEYS[1], removed)
if to_replay then evicted = #removed end
local excess = redis.call('LLEN', KEYS[2]) - capacity
if excess > 0 then
  in_chunks('XDEL', KEYS[1], redis.call('RPOP', KEYS[2], excess))
  evicted = evicted + excess
end
if settled > 0 then redis.call('HINCRBY', KEYS[3], ARGV[4], settled) end
if evicted > 0 then redis.call('HINCRBY', KEYS[3], 'evicted', evicted) end
return {settled, evicted}
"""

# KEYS: run marker, fresh stream, replay id list, learner version
# ARGV: consumer group, resume (1/0), the new marker (JSON)
# A fresh claim succeeds only where no learner has been (no marker, nothing pending or replayed, no
# learner version); a resume always does. Undelivered fresh groups and the offline pool never count:
# actors may start before the learner, and offline data is ingested before a fresh run on purpose.
# Returns {previous marker or false, undelivered fresh groups, pending, replay size, version or false}.
CLAIM = """
local previous = redis.call('GET', KEYS[1])
local pending = 0
local ok, summary = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1])
if ok then pending = tonumber(summary[1]) end
local replay = redis.call('LLEN', KEYS[3])
local undelivered = redis.call('XLEN', KEYS[2]) - pending - replay
local version = redis.call('GET', KEYS[4])
local used = previous or pending > 0 or replay > 0 or version
if ARGV[2] == '1' or not used then redis.call('SET', KEYS[1], ARGV[3]) end
return {previous, undelivered, pending, replay, version}
"""

# KEYS: fresh stream
# ARGV: consumer group, consumer, then delivery ids held by that consumer (delivered, not yet acked)
# Resets the idle time of those ids that are still pending for this consumer (XCLAIM ... JUSTID with
# min-idle 0 resets it and leaves the delivery count alone), so another learner recovering with
# `claim_idle_s` does not take over groups a live learner holds until its next checkpoint. An id some
# other consumer has claimed meanwhile is left to it: taking it back would deliver it twice.
# Returns how many ids were touched.
TOUCH = """
local touched = 0
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    touched = touched + 1
  end
end
return touched
"""
