"""The Lua scripts that admit and settle a request in Redis, atomically over every bucket, budget and
parallel slot it touches."""

# Buckets may go below zero (a request that used more than it reserved): that debt is kept until the
# refill pays it, so a key expires only once its bucket would be full again.
LEVEL = """
local function level(key, limit, cap, now)
  local rate = limit / 60000.0
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, ts = cap, now end
  return math.min(cap, tokens + math.max(0, now - ts) * rate), rate
end
local function store(key, tokens, cap, rate, now)
  redis.call('HSET', key, 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((cap - tokens) / rate) + 60000)
end
"""

# KEYS: buckets, budgets, then the parallel set (if any). ARGV: now, counts, the completion tokens wanted
# and the fewest acceptable, whether missing budget counters were seeded; then per bucket (limit, cap,
# cost), per budget (max, ttl, fixed cost, cost per completion token), and the parallel (max, member,
# lease). Answers {allowed (1; 0 refused; 2 budget counters missing, their indexes follow), index of what
# refused (1-based), wait ms or -1, budget used, completion tokens granted (or affordable), levels...}.
ADMIT = (
    LEVEL
    + """
local now, nb, ng, np = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local want, least, seeded = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local b, levels = {}, {}
local a = 8
for i = 1, nb do
  local limit, cap, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local lv, rate = level(KEYS[i], limit, cap, now)
  b[i] = {lv, rate, cap, cost}
  levels[i] = math.floor(lv)
  if cost > cap then return {0, i, -1, 0, 0, unpack(levels)} end
end
local g, missing = {}, {}
for j = 1, ng do
  local max, ttl, fixed, unit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  local raw = redis.call('GET', KEYS[nb + j])
  if not raw and seeded == 0 then missing[#missing + 1] = j end
  g[j] = {max, ttl, fixed, unit, tonumber(raw or '0')}
end
if #missing > 0 then return {2, 0, 0, 0, 0, unpack(missing)} end
local k = want
for j = 1, ng do
  local max, fixed, unit, used = g[j][1], g[j][3], g[j][4], g[j][5]
  local room = max - used - fixed
  if unit > 0 then
    k = math.min(k, math.floor(room / unit))
  elseif room < 0 then
    k = -1
  end
  if used >= max or k < least then return {0, nb + j, -1, used, math.max(k, 0), unpack(levels)} end
end
for i = 1, nb do
  local lv, rate, cap, cost = b[i][1], b[i][2], b[i][3], b[i][4]
  if lv < cost then return {0, i, math.ceil((cost - lv) / rate), 0, 0, unpack(levels)} end
end
if np > 0 then
  local max, member, lease = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  local set = KEYS[nb + ng + 1]
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - lease)
  if redis.call('ZCARD', set) >= max then return {0, nb + ng + 1, 1000, 0, 0, unpack(levels)} end
  redis.call('ZADD', set, now, member)
  redis.call('PEXPIRE', set, lease)
end
for i = 1, nb do
  local lv, rate, cap, cost = b[i][1], b[i][2], b[i][3], b[i][4]
  if cost > 0 then
    store(KEYS[i], lv - cost, cap, rate, now)
    levels[i] = math.floor(lv - cost)
  end
end
for j = 1, ng do
  local cost = math.ceil(g[j][3] + g[j][4] * k)
  if cost > 0 then
    redis.call('INCRBY', KEYS[nb + j], cost)
    redis.call('EXPIRE', KEYS[nb + j], g[j][2])
  end
end
return {1, 0, 0, 0, k, unpack(levels)}
"""
)

# The reservation was the estimate; the answer used what it used: buckets and budgets take the difference,
# and the parallel slot is freed. A budget counter that is gone (Redis lost it) is left to its seed from
# the spend log. ARGV: now, counts, per bucket (limit, cap, refund), per budget (ttl, refund), the member.
# Answers each budget counter as it is now (-1: gone), for the budget alerts.
SETTLE = (
    LEVEL
    + """
local now, nb, ng, np = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
for i = 1, nb do
  local limit, cap, refund = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if refund ~= 0 then
    local t, rate = level(KEYS[i], limit, cap, now)
    store(KEYS[i], math.min(cap, t + refund), cap, rate, now)
  end
end
local used = {}
for j = 1, ng do
  local ttl, refund = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  if refund ~= 0 and redis.call('EXISTS', KEYS[nb + j]) == 1 then
    redis.call('INCRBY', KEYS[nb + j], -refund)
    redis.call('EXPIRE', KEYS[nb + j], ttl)
  end
  used[j] = tonumber(redis.call('GET', KEYS[nb + j]) or '-1')
end
if np > 0 then redis.call('ZREM', KEYS[nb + ng + 1], ARGV[a]) end
return used
"""
)
