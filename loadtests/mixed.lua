-- Workload 3 (mixed realistic reads): questions drawn from the pool written by
-- `mixed.py pool` (LT_POOL, a Lua file), with its Zipf weights. Each distinct question always has
-- the same JSON-RPC id (its pool index), so nginx's body-keyed cache can serve repeats and each
-- answer can be matched to its question.
--
-- The first response after each LT_SAMPLE_INTERVAL_MS (2.5 ms: about 4000 over 10 s, spread
-- evenly over the run and so over every block change; at most LT_SAMPLE_MAX) is written to
-- LT_SAMPLES.<tid> for the stale-answer check: "<t0> <t1> <question> <status> <cache> <body>", where t0 is the send
-- time of the oldest request for that question still in flight (never later than the true send
-- time) and t1 the receive time.
dofile(os.getenv("LT_DIR") .. "/common.lua")

local pool = dofile(assert(os.getenv("LT_POOL"), "LT_POOL is not set"))
local bodies, cum = pool.bodies, pool.cum
local nq = #bodies
local interval = tonumber(os.getenv("LT_SAMPLE_INTERVAL_MS") or "2.5") / 1000
local max_samples = tonumber(os.getenv("LT_SAMPLE_MAX") or "10000")
local samples_path = assert(os.getenv("LT_SAMPLES"), "LT_SAMPLES is not set")

-- Send times of the requests in flight, per question: FIFO lists {first, last, [i] = t0}.
local pending = {}
local f, last_sample, written = nil, 0, 0

function init(args)
  math.randomseed(math.floor(lt.now() * 1e6) % 2147483647 + tid)
  f = assert(io.open(samples_path .. "." .. tid, "w"))
end

-- Smallest i with cum[i] >= u (binary search).
local function pick()
  local u = math.random()
  local lo, hi = 1, nq
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cum[mid] < u then
      lo = mid + 1
    else
      hi = mid
    end
  end
  return lo
end

request = function()
  local q = pick()
  local p = pending[q]
  if p == nil then
    p = { first = 1, last = 0 }
    pending[q] = p
  end
  p.last = p.last + 1
  p[p.last] = lt.now()
  return wrk.format(nil, nil, nil, bodies[q])
end

response = function(status, headers, body)
  local t1 = lt.now()
  local _, cache = lt.count(status, headers, body)
  local q = tonumber(body:match('"id":%s*(%d+)'))
  local p = q and pending[q]
  if p == nil or p.first > p.last then
    return
  end
  local t0 = p[p.first]
  p[p.first] = nil
  p.first = p.first + 1
  if t1 - last_sample >= interval and written < max_samples then
    last_sample = t1
    f:write(string.format("%.6f %.6f %d %d %s %s\n", t0, t1, q, status, cache or "-",
      (body:gsub("[\r\n]", ""))))
    f:flush()
    written = written + 1
  end
end
