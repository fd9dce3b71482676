-- Shared by the workload scripts (loaded with dofile; wrk runs it in the main Lua state and in
-- each thread's state).
--
--   lt.setup      wrk setup(): numbers the threads (global `tid` in each thread)
--   lt.count      counts one response: failed (non-200 or a JSON-RPC error in the body) and the
--                 cache header (gateway `x-cache` and `x-cache-tier`, nginx `X-Cache-Status`)
--   lt.done       wrk done(): prints one `LTRESULT {json}` line that run.sh records
--   lt.now        wall-clock seconds (gettimeofday, microsecond resolution), comparable with
--                 Python's time.time() and `date +%s.%N`
--   lt.headers    request headers every workload sends (JSON content type, X-Forwarded-For)
--
-- Counters are globals so that done() (main state) can read them with thread:get().

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_usec; } lt_timeval;
int gettimeofday(lt_timeval *tv, void *tz);
]])
local tv = ffi.new("lt_timeval")

lt = {}
lt.threads = {}

function lt.now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) * 1e-6
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- A fixed public caller address: with [geo] trusted_proxies covering loopback, the gateway locates
-- every request at the same place, so the nearest node serves it (nginx and anvil ignore it).
local xff = os.getenv("LT_XFF")
if xff and xff ~= "" then
  wrk.headers["X-Forwarded-For"] = xff
end

-- Thread-local counters (read back by done()).
tid = 0
c_responses, c_failed_responses, c_non200, c_rpc_errors = 0, 0, 0, 0
c_hit, c_nonhit, c_nocache, c_hit_gateway_tier = 0, 0, 0, 0
lt.keys = { "c_responses", "c_failed_responses", "c_non200", "c_rpc_errors", "c_hit", "c_nonhit",
  "c_nocache", "c_hit_gateway_tier" }

function lt.setup(thread)
  table.insert(lt.threads, thread)
  thread:set("tid", #lt.threads)
end

local function cache_header(headers)
  return headers["x-cache"] or headers["X-Cache"] or headers["X-Cache-Status"]
    or headers["x-cache-status"]
end

-- Counts one response; returns true when it failed.
function lt.count(status, headers, body)
  c_responses = c_responses + 1
  local errors = 0
  if body then
    -- One per JSON-RPC error object (a batch may hold several).
    local _, n = body:gsub('"error":', "")
    errors = n
  end
  local failed = status ~= 200 or errors > 0
  if status ~= 200 then
    c_non200 = c_non200 + 1
  end
  c_rpc_errors = c_rpc_errors + errors
  if failed then
    c_failed_responses = c_failed_responses + 1
  end
  local cache = cache_header(headers)
  if cache == nil then
    c_nocache = c_nocache + 1
  elseif cache == "HIT" then
    c_hit = c_hit + 1
    -- The gateway says which tier answered: its own (final answers) or the edge node's.
    if headers["x-cache-tier"] == "gateway" then
      c_hit_gateway_tier = c_hit_gateway_tier + 1
    end
  else
    c_nonhit = c_nonhit + 1
  end
  return failed, cache
end

function lt.response(status, headers, body)
  lt.count(status, headers, body)
end

local function json_value(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return "null"
    end
    return string.format("%.17g", v)
  end
  return string.format("%q", tostring(v))
end

-- Prints `LTRESULT {json}`: wrk's own numbers plus the summed thread counters (and `extra_keys`,
-- more thread globals: summed when `how[key]` is nil, else "min" or "max").
function lt.done(summary, latency, requests, extra_keys, how)
  local keys = {}
  for _, k in ipairs(lt.keys) do
    table.insert(keys, k)
  end
  for _, k in ipairs(extra_keys or {}) do
    table.insert(keys, k)
  end
  how = how or {}
  local agg = {}
  for _, t in ipairs(lt.threads) do
    for _, k in ipairs(keys) do
      local v = t:get(k)
      if type(v) == "number" then
        local a = agg[k]
        if a == nil then
          agg[k] = v
        elseif how[k] == "min" then
          agg[k] = math.min(a, v)
        elseif how[k] == "max" then
          agg[k] = math.max(a, v)
        else
          agg[k] = a + v
        end
      end
    end
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local out = {
    "requests", summary.requests,
    "seconds", secs,
    "rps", summary.requests / secs,
    "p50_us", latency:percentile(50),
    "p90_us", latency:percentile(90),
    "p99_us", latency:percentile(99),
    "max_us", latency.max,
    "mean_us", latency.mean,
    "socket_errors", socket_errors,
    "timeouts", e.timeout,
    -- Failed = answered with non-200 or a JSON-RPC error, or lost to a socket error/timeout.
    "failed", (agg.c_failed_responses or 0) + socket_errors,
  }
  for _, k in ipairs(keys) do
    table.insert(out, (k:gsub("^c_", "")))
    table.insert(out, agg[k] or 0)
  end
  local parts = {}
  for i = 1, #out, 2 do
    table.insert(parts, string.format("%q:%s", out[i], json_value(out[i + 1])))
  end
  io.write("LTRESULT {" .. table.concat(parts, ",") .. "}\n")
end

setup = lt.setup
response = lt.response
done = function(summary, latency, requests)
  lt.done(summary, latency, requests)
end
