"""The Lua scripts of :class:`~mpim.cluster.directory.Directory` (each one atomic in Redis).

Keys (``P`` = the key prefix), goim v2's three plus mpim's index and host registry:
``P mid_<mid>`` hash key -> server; ``P key_<key>`` string server; ``P ol_<server>`` hash
room -> online count; ``P conns_<server>`` hash key -> mid ("" = no user) of the
connections a server filed (what lets it be rebuilt or dropped exactly; a host of several
router shards keeps one per shard, ``P conns_<server>.<shard>``, and says ``shards`` in its
lease); ``P srv_<server>``
hash: the host's **lease** (``owner`` = the incarnation id of the process holding the
name, address, ports, weight, counts, ``updated`` Redis time), with a short expiry
(``[cluster] lease_ttl``) renewed every ``lease_interval``; ``P servers`` the set of host
names that claimed one; ``P hosts`` hash name -> the last incarnation that held it (no
expiry: how a restarted host knows it took over from a dead one); ``P rebuild_<server>``
the old index while a rebuild runs. Session keys have the session expiry, renewed while
their connections live; the set is pruned of names whose lease expired.

A host is alive while its lease exists. Every script that answers where a connection is
(or whether a key is taken) treats an entry of a host without a lease as gone: a push to
a dead host's users is not counted as delivered, its keys can be taken at once, and its
counts drop out of the sums.

These scripts read keys they find on the way (``key_<k>`` of a ``mid_`` field, the
``srv_``/``ol_`` keys of the registered hosts), which a standalone Redis (or a primary
with replicas) allows and Redis Cluster does not: mpim's cluster uses one Redis.
"""

from __future__ import annotations

CONNECT = """
-- File a connection. Returns {the server that held the key before ('' if none), 0}, or,
-- when another live server holds the key for another user (mid), {that server, 1, its mid}:
-- then nothing is filed (a key is never taken over by another user of a live host).
-- KEYS: 1 key_<key>, 2 conns_<server>, 3 mid_<mid> (absent without a user).
-- ARGV: 1 server, 2 key, 3 mid ('' = no user), 4 ttl ms, 5 key prefix.
local server, key, mid, ttl, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local prev = redis.call('GET', KEYS[1])
if prev then
  local pconns = prefix .. 'conns_' .. prev
  local shards = tonumber(redis.call('HGET', prefix .. 'srv_' .. prev, 'shards') or '') or 1
  for k = 0, shards - 1 do  -- (a host of several router shards keeps an index per shard)
    if shards > 1 and redis.call('HEXISTS', pconns .. '.' .. k, key) == 1 then
      pconns = pconns .. '.' .. k
      break
    end
  end
  local pmid = redis.call('HGET', pconns, key)
  local alive = prev == server or redis.call('EXISTS', prefix .. 'srv_' .. prev) == 1
  if alive and prev ~= server and pmid and pmid ~= mid then return {prev, 1, pmid} end
  if prev ~= server then redis.call('HDEL', pconns, key) end
  if pmid and pmid ~= '' and pmid ~= mid then  -- the key belonged to another user: forget it there
    local mk = prefix .. 'mid_' .. pmid
    if redis.call('HGET', mk, key) == prev then redis.call('HDEL', mk, key) end
  end
end
redis.call('SET', KEYS[1], server, 'PX', ttl)
redis.call('HSET', KEYS[2], key, mid)
redis.call('PEXPIRE', KEYS[2], ttl)
if mid ~= '' then
  redis.call('HSET', KEYS[3], key, server)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {prev or '', 0}
"""

DISCONNECT = """
-- Forget a connection of this server; a key another server took since is left alone.
-- KEYS: 1 key_<key>, 2 conns_<server>, 3 mid_<mid> (absent without a user).  ARGV: 1 server, 2 key.
-- Returns 1 if this server held the key, else 0.
local held = redis.call('GET', KEYS[1]) == ARGV[1]
if held then redis.call('DEL', KEYS[1]) end
redis.call('HDEL', KEYS[2], ARGV[2])
if KEYS[3] and redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
if held then return 1 end
return 0
"""

RENEW = """
-- Renew (or file again) connections of this server that are alive.
-- KEYS: 1 conns_<server>, then per entry i: 2i key_<key>, 2i+1 mid_<mid> (unused without a user).
-- ARGV: 1 server, 2 ttl ms, 3 key prefix, then per entry i: 2i+2 key, 2i+3 mid ('' = no user).
-- Returns {keys filed again (their key_ was gone, or held by a dead host)}, {keys another live
-- server holds now}.
local server, ttl, prefix = ARGV[1], ARGV[2], ARGV[3]
local restored, lost = {}, {}
for i = 1, (#KEYS - 1) / 2 do
  local kk, mk, key, mid = KEYS[2 * i], KEYS[2 * i + 1], ARGV[2 * i + 2], ARGV[2 * i + 3]
  local holder = redis.call('GET', kk)
  if holder and holder ~= server and redis.call('EXISTS', prefix .. 'srv_' .. holder) == 0 then
    holder = nil  -- a dead host's: ours again
  end
  if holder == server or not holder then
    if holder then
      redis.call('PEXPIRE', kk, ttl)
    else
      redis.call('SET', kk, server, 'PX', ttl)
      restored[#restored + 1] = key
    end
    redis.call('HSET', KEYS[1], key, mid)
    if mid ~= '' then
      redis.call('HSET', mk, key, server)
      redis.call('PEXPIRE', mk, ttl)
    end
  else
    lost[#lost + 1] = key
    redis.call('HDEL', KEYS[1], key)
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return {restored, lost}
"""

_ALIVE = """
local leases = {}
local function alive(prefix, server)  -- the server's lease exists (asked once per call)
  local known = leases[server]
  if known == nil then
    known = redis.call('EXISTS', prefix .. 'srv_' .. server) == 1
    leases[server] = known
  end
  return known
end
"""

SERVERS_OF_MIDS = (
    _ALIVE
    + """
-- Where the users' connections are: server, key pairs, on live hosts only. A mid_ field
-- whose key_ names another server (or is gone) is stale and dropped; one of a host whose
-- lease lapsed is left for that host's next incarnation (or the expiry) and not returned.
-- KEYS: mid_<mid> ...  ARGV: 1 key prefix.
local out = {}
for i = 1, #KEYS do
  local h = redis.call('HGETALL', KEYS[i])
  for j = 1, #h, 2 do
    local key, server = h[j], h[j + 1]
    if redis.call('GET', ARGV[1] .. 'key_' .. key) ~= server then
      redis.call('HDEL', KEYS[i], key)
    elseif alive(ARGV[1], server) then
      out[#out + 1] = server
      out[#out + 1] = key
    end
  end
end
return out
"""
)

SERVERS_OF_KEYS = (
    _ALIVE
    + """
-- Where some keys are connected, on live hosts: the server of each key, '' for none.
-- KEYS: key_<key> ...  ARGV: 1 key prefix.
local out = {}
for i = 1, #KEYS do
  local server = redis.call('GET', KEYS[i])
  if server and alive(ARGV[1], server) then out[i] = server else out[i] = '' end
end
return out
"""
)

REBUILD_BEGIN = """
-- Set the server's index aside; what the rebuild does not file again is dropped after.
-- KEYS: 1 conns_<server>, 2 rebuild_<server>.
-- An aside index still there (a rebuild that runs, or one whose process died before its
-- sweep) gets these entries added, never replaced: its stale ones are swept too.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
local h = redis.call('HGETALL', KEYS[1])
for j = 1, #h, 2 do redis.call('HSET', KEYS[2], h[j], h[j + 1]) end
redis.call('DEL', KEYS[1])
return 1
"""

REBUILD_SWEEP = """
-- One HSCAN step over the set-aside index: drop every connection not filed again.
-- KEYS: 1 rebuild_<server>, 2 conns_<server>.  ARGV: 1 server, 2 cursor, 3 key prefix, 4 count.
-- Returns {next cursor ('0' = done, the old index deleted), key_ entries dropped}.
local server, prefix = ARGV[1], ARGV[3]
local r = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[4])
local h, dropped = r[2], 0
for j = 1, #h, 2 do
  local key, mid = h[j], h[j + 1]
  if redis.call('HEXISTS', KEYS[2], key) == 0 then
    local kk = prefix .. 'key_' .. key
    if redis.call('GET', kk) == server then
      redis.call('DEL', kk)
      dropped = dropped + 1
    end
    if mid ~= '' then
      local mk = prefix .. 'mid_' .. mid
      if redis.call('HGET', mk, key) == server then redis.call('HDEL', mk, key) end
    end
  end
end
if r[1] == '0' then redis.call('DEL', KEYS[1]) end
return {r[1], dropped}
"""

CLAIM = """
-- Take or renew the host's lease: refused while another incarnation's lease lives.
-- KEYS: 1 srv_<server>, 2 servers, 3 hosts.  ARGV: 1 server, 2 owner (incarnation), 3 lease ms,
-- then field, value pairs.
-- Returns {1, the incarnation that held the name last ('' = none), 1 if the lease was not
-- there (first claim, or it lapsed)} or {0, the live owner, 0}.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[2] then return {0, owner, 0} end
local last = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if last ~= ARGV[2] then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'updated', t[1] .. '.' .. string.format('%06d', t[2]),
  unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then  -- (never shortened by a host's shorter lease)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])  -- gone too once no host has renewed for a whole lease
end
if owner then return {1, last, 0} end
return {1, last, 1}
"""

RELEASE = """
-- Give the name up (only its owner can). KEYS: 1 srv_<server>, 2 servers. ARGV: 1 server, 2 owner.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

PUT_ONLINE = """
-- Replace a server's room counts. KEYS: 1 ol_<server>.  ARGV: 1 ttl ms, then room, count pairs.
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""

_LIVE = """
local function live(prefix)  -- names whose srv_ key lives; the others leave the set
  local names = {}
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', prefix .. 'srv_' .. name) == 1 then
      names[#names + 1] = name
    else
      redis.call('SREM', KEYS[1], name)
    end
  end
  return names
end
"""

SERVERS = (
    _LIVE
    + """
-- The live hosts. KEYS: 1 servers.  ARGV: 1 key prefix.  Returns name, {field, value ...} ...
local out = {}
for _, name in ipairs(live(ARGV[1])) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'srv_' .. name)
end
return out
"""
)

ONLINE = (
    _LIVE
    + """
-- Cluster-wide counts of some rooms (live hosts only, but the one excluded), in the order asked.
-- KEYS: 1 servers.  ARGV: 1 key prefix, 2 a host to leave out ('' = none), then rooms.
local counts = {}
for i = 3, #ARGV do counts[i - 2] = 0 end
for _, name in ipairs(live(ARGV[1])) do
  if name ~= ARGV[2] then
    local v = redis.call('HMGET', ARGV[1] .. 'ol_' .. name, unpack(ARGV, 3))
    for i = 1, #v do
      if v[i] then counts[i] = counts[i] + tonumber(v[i]) end
    end
  end
end
return counts
"""
)

TOP_ROOMS = (
    _LIVE
    + """
-- The `limit` most populated rooms whose id starts with a prefix, cluster-wide (live hosts),
-- by count descending then room id. KEYS: 1 servers.  ARGV: 1 key prefix, 2 room prefix, 3 limit.
-- Returns room, count, room, count ...
local rp, sums, rooms = ARGV[2], {}, {}
for _, name in ipairs(live(ARGV[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. 'ol_' .. name)
  for j = 1, #h, 2 do
    local room = h[j]
    if string.sub(room, 1, #rp) == rp then
      if not sums[room] then rooms[#rooms + 1] = room end
      sums[room] = (sums[room] or 0) + tonumber(h[j + 1])
    end
  end
end
table.sort(rooms, function(a, b)
  if sums[a] ~= sums[b] then return sums[a] > sums[b] end
  return a < b
end)
local out = {}
for i = 1, math.min(#rooms, tonumber(ARGV[3])) do
  out[#out + 1] = rooms[i]
  out[#out + 1] = sums[rooms[i]]
end
return out
"""
)
