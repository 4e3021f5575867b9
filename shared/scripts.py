"""Lua sources of the fenced scripts. Only ``shared.store`` loads them.

Key order is fixed by ``Keys.fenced_write_keys()``:
KEYS[1] leader, KEYS[2] epoch, KEYS[3] builders, KEYS[4] routes,
KEYS[5] version, KEYS[6] changes.
"""
from .outcomes import REJECTED

# ARGV: holder, ttl_ms, version floor[, epoch floor]. Returns {epoch, version}; epoch 0 when the
# lease is another's (the version still tells a standby how far the set has got: its floor).
# The epoch floor is the highest epoch the caller ever held: a failover that lost the INCR of
# that leadership still gives it a new, higher epoch.
ACQUIRE = """
-- reads first: a key of the wrong type (written by hand) fails the script before it writes
local v = tonumber(redis.call('GET', KEYS[5]) or '0')
local e = redis.call('GET', KEYS[2])
if not v or (e and not tonumber(e)) then
  return redis.error_reply('WRONGTYPE ' .. (v and KEYS[2] or KEYS[5]) .. ' holds a string that is not a number')
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, v}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local epoch = redis.call('INCR', KEYS[2])
local efloor = tonumber(ARGV[4] or '0')
if epoch <= efloor then
  epoch = efloor + 1
  redis.call('SET', KEYS[2], epoch)
end
local floor = tonumber(ARGV[3])
if v < floor then
  redis.call('SET', KEYS[5], floor)
  v = floor
end
return {epoch, v}
"""

# ARGV: holder, epoch, ttl_ms. Returns 1 when extended, 0 when not ours.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# ARGV: holder, epoch. Returns 1 when released.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# ARGV: holder, epoch, expected version, stream maxlen, payload JSON
#   {"upsert": [[id, record_json, sni, route], ...], "remove": [id, ...],
#    "touch": [[id, record_json], ...],   -- optional: bookkeeping only (source, registered_at):
#                                         -- stored, but neither a new version nor a change entry
#    "intents": {...}}                    -- optional, see below
#   [, version floor]
# The new version is max(expected, floor) + 1: after a failover lost acknowledged writes
# (Redis went back to an older version), the rewrite gets a version number never used
# before, so no replica can mistake it for the lost one it may have served.
#
# Intents (KEYS from Keys.intent_write_keys: KEYS[7] intents cursor, KEYS[8] deregistered,
# KEYS[9] intents stream, KEYS[10..] one outcome key per outcome, in order):
#   {"cursor": entry id, "ttl": seconds, "outcomes": [{...}, ...],
#    "deregistered": [[id, until], ...], "deregistration_ended": [id, ...], "trim_before": entry id or absent}
# are written in the same call as the diff, even when the diff is empty: a leader killed
# mid-way either applied a batch of intents (cursor moved, outcomes written) or did not.
# An outcome whose status is not REJECTED gets the version the call leaves Redis at.
# Returns {'fenced', why} | {'conflict', version} | {'noop', version} | {'ok', version}.
APPLY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced', 'lease'} end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {'fenced', 'epoch'} end
local v = tonumber(redis.call('GET', KEYS[5]) or '0')
if not v then return redis.error_reply('WRONGTYPE ' .. KEYS[5] .. ' holds a string that is not a number') end
if v ~= tonumber(ARGV[3]) then return {'conflict', tostring(v)} end
-- Redis does not roll a script back: every key's type is checked before the first write, so a
-- key of the wrong type (written by hand) refuses the whole step, and says which key it is.
local types = {[3] = 'hash', [4] = 'hash', [6] = 'stream'}
if #KEYS >= 9 then types[8], types[9] = 'hash', 'stream' end  -- the intents bookkeeping (SET overwrites the rest)
for i, want in pairs(types) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t .. ', not a ' .. want)
  end
end
local p = cjson.decode(ARGV[5])
local added, updated, removed, records = {}, {}, {}, {}
-- Redis does not roll a script back: nothing below may fail halfway, so a
-- stored record that is not valid JSON (written by hand) only loses its SNI.
local function sni_of(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and type(rec.sni) == 'string' then return rec.sni end
  return nil
end
local function drop_route(sni, id)
  if not sni then return end
  local route = redis.call('HGET', KEYS[4], sni)
  if route and string.sub(route, -(#id + 1)) == ' ' .. id then
    redis.call('HDEL', KEYS[4], sni)
  end
end
for _, id in ipairs(p.remove) do
  local old = redis.call('HGET', KEYS[3], id)
  if old then
    drop_route(sni_of(old), id)
    redis.call('HDEL', KEYS[3], id)
    removed[#removed + 1] = id
  end
end
for _, u in ipairs(p.upsert) do
  local id, rec, sni, route = u[1], u[2], u[3], u[4]
  local old = redis.call('HGET', KEYS[3], id)
  if old then
    if old ~= rec then
      local oldsni = sni_of(old)
      if oldsni ~= sni then drop_route(oldsni, id) end
      updated[#updated + 1] = id
      records[#records + 1] = rec
    end
  else
    added[#added + 1] = id
    records[#records + 1] = rec
  end
  redis.call('HSET', KEYS[3], id, rec)
  redis.call('HSET', KEYS[4], sni, route)
end
for _, t in ipairs(p.touch or {}) do
  if redis.call('HEXISTS', KEYS[3], t[1]) == 1 then redis.call('HSET', KEYS[3], t[1], t[2]) end
end
local status = 'noop'
if #added + #updated + #removed > 0 then
  local function ids(t)
    if #t == 0 then return '[]' end
    return '["' .. table.concat(t, '","') .. '"]'
  end
  local vfloor = tonumber(ARGV[6] or '0')
  if vfloor > v then v = vfloor end
  v = v + 1
  redis.call('SET', KEYS[5], v)
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*',
    'version', v, 'epoch', ARGV[2],
    'added', ids(added), 'removed', ids(removed), 'updated', ids(updated),
    'records', '[' .. table.concat(records, ',') .. ']')
  status = 'ok'
end
local it = p.intents
if it then
  redis.call('SET', KEYS[7], it.cursor)
  for _, d in ipairs(it.deregistered) do redis.call('HSET', KEYS[8], d[1], d[2]) end
  for _, id in ipairs(it.deregistration_ended) do redis.call('HDEL', KEYS[8], id) end
  for i, o in ipairs(it.outcomes) do
    if o.status ~= '""" + REJECTED + """' then o.version = v end
    redis.call('SET', KEYS[9 + i], cjson.encode(o), 'EX', it.ttl)
  end
  if it.trim_before then redis.call('XTRIM', KEYS[9], 'MINID', '~', it.trim_before) end
end
return {status, tostring(v)}
"""
