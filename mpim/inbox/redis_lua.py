"""The Lua scripts of :class:`~mpim.inbox.redis.RedisInbox` (each one atomic in Redis).

Keys (``P`` = the key prefix): ``P inbox:epoch`` the store epoch; ``P inbox:users`` a
bitmap with a bit (a hash of the mid) set for every user ever created; ``P inbox:oldest``
and ``P inbox:idle``, sorted sets mid -> append time of the user's oldest stored message
/ a lower bound of its cursors' last-seen times (what :meth:`trim` visits); per user
``P inbox:{mid}`` a hash (``e`` epoch, ``s`` last seq, ``c:<device>`` cursor,
``t:<device>`` the cursor's last-seen time) and ``P inbox:{mid}:s`` the stream, entry ID
``<seq>-0``, fields ``o`` op, ``b`` body, ``t`` append time, ``f`` sender; per private
message id ``P inbox:{sender}:id:<id>`` a string ``"<until> <epoch> <seq> ..."`` (the end of
its de-duplication window, then the positions its items got), written by the script call
that appends the items and expiring with the window.

Reads honour the limits: the read script skips messages appended before the cutoff it is
given (the stream's expired head, found by bisection since append times grow with seqs)
and beyond the newest ``max_count``, and reports them as trimmed.

Every script first reads the store epoch and, when the key is gone (Redis restarted
without its data, FLUSHALL, eviction), writes the candidate it was given: from then on
the store is in a new epoch, and so is every user created in it. A user whose hash is
missing but whose bit is set existed before (its keys expired): it is created again in a
fresh epoch, never in the store epoch, so a client holding an old position is told "not
recovered" instead of having new seqs mistaken for ones it already has. Numbers that
may not fit a Lua double (op, sender, times) travel as strings.
"""

from __future__ import annotations

SEQ_MAX_LUA = "local SEQ_MAX = 2147483647\n"

_STORE_EPOCH = """
local store = redis.call('GET', KEYS[1])
if not store then
  store = ARGV[1]
  redis.call('SET', KEYS[1], store)
end
"""

WRITE = (
    SEQ_MAX_LUA
    + """
-- Appends, private messages and acks of one batch, in call order.
-- KEYS: 1 store epoch, 2 users bitmap, 3 oldest zset, 4 idle zset,
--       then per user i (1..n): 3+2i meta hash, 4+2i stream; then per chat id j: 4+2n+j.
-- ARGV: 1 store epoch candidate, 2 now, 3 max_count, 4 ttl ms, 5 n,
--       then per user i: 3i+3 bit, 3i+4 fresh epoch, 3i+5 mid;
--       then the ops: 'a', i, op, body, sender  |  'k', i, device, seq (clamped to 0..SEQ_MAX)
--       |  'c', j, window ms, until, m, then m times: i, op, body, sender.
-- Returns: store epoch, then per op: epoch, seq (an append item) | cursor (an ack)
--       | duplicate (0/1), count, then count times: epoch, seq (a chat: its or the first positions).
"""
    + _STORE_EPOCH
    + """
local now, max_count, ttl, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local epochs, seqs, fresh_used, appended, acked = {}, {}, {}, {}, {}
local out = {store}

local function fresh(i)
  local used = (fresh_used[i] or 0) + 1
  fresh_used[i] = used
  local e = ARGV[3 * i + 4]
  if used > 1 then e = e .. '.' .. used end
  return e
end

local function restart(i)  -- a new epoch from seq 0: the old epoch's messages and cursors go
  redis.call('DEL', KEYS[3 + 2 * i], KEYS[4 + 2 * i])
  epochs[i] = fresh(i)
  seqs[i] = 0
  redis.call('HSET', KEYS[3 + 2 * i], 'e', epochs[i], 's', 0)
end

local function load(i)
  if epochs[i] then return end
  local v = redis.call('HMGET', KEYS[3 + 2 * i], 'e', 's')
  if v[1] then
    epochs[i], seqs[i] = v[1], tonumber(v[2])
  elseif redis.call('SETBIT', KEYS[2], ARGV[3 * i + 3], 1) == 1 then
    restart(i)  -- known before, its keys expired
  else
    epochs[i], seqs[i] = store, 0
    redis.call('DEL', KEYS[4 + 2 * i])
    redis.call('HSET', KEYS[3 + 2 * i], 'e', store, 's', 0)
  end
end

local function add(i, op, body, sender)
  local s = seqs[i] + 1
  if s > SEQ_MAX then
    restart(i)
    s = 1
  end
  local stream = KEYS[4 + 2 * i]
  local r = redis.pcall('XADD', stream, 'MAXLEN', max_count, s .. '-0',
    'o', op, 'b', body, 't', now, 'f', sender)
  if type(r) == 'table' and r.err then  -- the stream is ahead of the counter: it cannot be trusted
    restart(i)
    s = 1
    redis.call('XADD', stream, 'MAXLEN', max_count, '1-0', 'o', op, 'b', body, 't', now, 'f', sender)
  end
  seqs[i] = s
  appended[i] = true
  return s
end

local function chat(a)  -- a private message: appended unless its id is recorded and not over
  local key, m = KEYS[4 + 2 * n + tonumber(ARGV[a + 1])], tonumber(ARGV[a + 4])
  local first = redis.call('GET', key)
  if first then
    local parts = {}
    for w in string.gmatch(first, '%S+') do parts[#parts + 1] = w end
    if tonumber(parts[1]) >= tonumber(now) then
      out[#out + 1] = 1
      out[#out + 1] = (#parts - 1) / 2
      for j = 2, #parts, 2 do
        out[#out + 1] = parts[j]
        out[#out + 1] = tonumber(parts[j + 1])
      end
      return
    end
  end
  local record = {ARGV[a + 3]}
  out[#out + 1] = 0
  out[#out + 1] = m
  for j = 0, m - 1 do
    local b = a + 5 + 4 * j
    local i = tonumber(ARGV[b])
    load(i)
    local s = add(i, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3])
    out[#out + 1] = epochs[i]
    out[#out + 1] = s
    record[#record + 1] = epochs[i]
    record[#record + 1] = s
  end
  redis.call('SET', key, table.concat(record, ' '), 'PX', ARGV[a + 2])
end

local a = 3 * n + 6
while a <= #ARGV do
  if ARGV[a] == 'c' then
    chat(a)
    a = a + 5 + 4 * tonumber(ARGV[a + 4])
  elseif ARGV[a] == 'a' then
    local i = tonumber(ARGV[a + 1])
    load(i)
    local s = add(i, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
    out[#out + 1] = epochs[i]
    out[#out + 1] = s
    a = a + 5
  else
    local i = tonumber(ARGV[a + 1])
    load(i)
    local meta, device = KEYS[3 + 2 * i], ARGV[a + 2]
    local old = tonumber(redis.call('HGET', meta, 'c:' .. device) or '0')
    local cursor = math.max(old, math.min(tonumber(ARGV[a + 3]), seqs[i]))
    redis.call('HSET', meta, 'c:' .. device, cursor, 't:' .. device, now)
    acked[i] = true
    out[#out + 1] = cursor
    a = a + 4
  end
end

for i = 1, n do
  if epochs[i] then
    local meta, mid = KEYS[3 + 2 * i], ARGV[3 * i + 5]
    redis.call('HSET', meta, 'e', epochs[i], 's', seqs[i])
    redis.call('PEXPIRE', meta, ttl)
    if appended[i] then
      redis.call('PEXPIRE', KEYS[4 + 2 * i], ttl)
      redis.call('ZADD', KEYS[3], 'NX', now, mid)
    end
    if acked[i] then redis.call('ZADD', KEYS[4], 'NX', now, mid) end
  end
end
return out
"""
)

READ = (
    """
-- One user's position, messages or cursors.
-- KEYS: 1 store epoch, 2 users bitmap, 3 meta hash, 4 stream.
-- ARGV: 1 store epoch candidate, 2 bit, 3 fresh epoch, 4 what ('top' | 'read' | 'cursors'),
--       5 after (0..SEQ_MAX), 6 limit, 7 ttl ms, 8 cutoff (messages appended before are
--       past max_age), 9 max_count.
-- Returns: top -> store, epoch, seq;  cursors -> store, epoch, seq, then field, value pairs
-- of the hash;  read -> store, epoch, seq, trimmed (every seq <= trimmed is gone for the
-- reader: trimmed, past max_age at the stream's head, or beyond the newest max_count), then
-- per unexpired message after max(after, trimmed), up to limit: seq, op, body, at, sender.
"""
    + _STORE_EPOCH
    + """
local meta, stream, what = KEYS[3], KEYS[4], ARGV[4]
local v = redis.call('HMGET', meta, 'e', 's')
local epoch, seq = v[1], tonumber(v[2])
if not epoch then
  if what == 'cursors' or redis.call('GETBIT', KEYS[2], ARGV[2]) == 0 then
    if what == 'read' then return {store, store, 0, 0} end
    return {store, store, 0}  -- never written: the store epoch, nothing stored
  end
  epoch, seq = ARGV[3], 0  -- known before, its keys expired: a fresh epoch, kept from now on
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 's', 0)
  redis.call('PEXPIRE', meta, ARGV[7])
end
if what == 'top' then return {store, epoch, seq} end
if what == 'cursors' then
  local out = {store, epoch, seq}
  local h = redis.call('HGETALL', meta)
  for j = 1, #h do out[#out + 1] = h[j] end
  return out
end
local cutoff = tonumber(ARGV[8])
local trimmed = seq
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head > 0 then trimmed = tonumber(string.match(head[1][1], '^%d+')) - 1 end
trimmed = math.max(trimmed, seq - tonumber(ARGV[9]))

local function expired(s)  -- the message s is past max_age (a missing one is not)
  local e = redis.call('XRANGE', stream, s .. '-0', s .. '-0')
  return #e > 0 and tonumber(e[1][2][6]) < cutoff
end

if trimmed < seq and expired(trimmed + 1) then
  -- the expired messages are the head of the stream: the last of them by bisection
  local lo, hi = trimmed + 1, seq  -- lo is expired; the last expired one is in [lo, hi]
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if expired(mid) then lo = mid else hi = mid - 1 end
  end
  trimmed = lo
end
local out = {store, epoch, seq, trimmed}
local start, limit = math.max(tonumber(ARGV[5]), trimmed) + 1, tonumber(ARGV[6])
if limit > 0 and start <= seq then
  local entries = redis.call('XRANGE', stream, start .. '-0', '+', 'COUNT', limit)
  for _, e in ipairs(entries) do
    local f = e[2]
    if tonumber(f[6]) >= cutoff then  -- (a clock that went back: an expired one past the head)
      out[#out + 1] = tonumber(string.match(e[1], '^%d+'))
      out[#out + 1] = f[2]
      out[#out + 1] = f[4]
      out[#out + 1] = f[6]
      out[#out + 1] = f[8]
    end
  end
end
return out
"""
)

TRIM = """
-- Drop, per user, the messages appended before the cutoff (a prefix of the stream: MINID)
-- and the cursors not seen since; re-file the user in the oldest / idle sets.
-- KEYS: 1 oldest zset, 2 idle zset, then per user i: 1+2i meta hash, 2+2i stream.
-- ARGV: 1 cutoff, then per user i: 1+i mid.   Returns: messages dropped.
local cutoff = tonumber(ARGV[1])
local dropped = 0
for i = 1, #ARGV - 1 do
  local meta, stream, mid = KEYS[1 + 2 * i], KEYS[2 + 2 * i], ARGV[1 + i]
  local last, from = nil, '-'
  while true do
    local batch = redis.call('XRANGE', stream, from, '+', 'COUNT', 100)
    local stop = #batch < 100
    for _, e in ipairs(batch) do
      if tonumber(e[2][6]) < cutoff then
        last = e[1]
      else
        stop = true
        break
      end
    end
    if stop then break end
    from = '(' .. last
  end
  if last then
    local seq = tonumber(string.match(last, '^%d+'))
    dropped = dropped + redis.call('XTRIM', stream, 'MINID', (seq + 1) .. '-0')
  end
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head > 0 then
    redis.call('ZADD', KEYS[1], head[1][2][6], mid)
  else
    redis.call('ZREM', KEYS[1], mid)
  end
  local h = redis.call('HGETALL', meta)
  local oldest = nil
  for j = 1, #h, 2 do
    local f = h[j]
    if string.sub(f, 1, 2) == 't:' then
      local seen = tonumber(h[j + 1])
      if seen < cutoff then
        redis.call('HDEL', meta, f, 'c:' .. string.sub(f, 3))
      elseif not oldest or seen < oldest then
        oldest = seen
      end
    end
  end
  if oldest then
    redis.call('ZADD', KEYS[2], oldest, mid)
  else
    redis.call('ZREM', KEYS[2], mid)
  end
end
return dropped
"""

FORCE_SEQ = (
    """
-- Test only: make the user's stream empty at its epoch and ARGV[3] (cursors kept).
-- KEYS: 1 store epoch, 2 users bitmap, 3 meta hash, 4 stream.  ARGV: 1 store candidate, 2 bit, 3 seq.
"""
    + _STORE_EPOCH
    + """
if not redis.call('HGET', KEYS[3], 'e') then
  redis.call('SETBIT', KEYS[2], ARGV[2], 1)
  redis.call('HSET', KEYS[3], 'e', store)
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 's', ARGV[3])
return store
"""
)
