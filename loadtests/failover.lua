-- Workload 4 (failover): the hot read of workload 1 while run.sh SIGKILLs the serving edge node.
-- Besides the counters, writes an event log to LT_EVENTS.<tid>: one line per failed response and
-- one per change of the answering region (`x-edge-region`), each "<unix time> <ok|fail> <region>".
-- run.sh compares it with the time of the kill.
dofile(os.getenv("LT_DIR") .. "/common.lua")

-- LT_FRESH=1: each request asks for the balance of a fresh random address at `latest`, so no
-- cache tier can answer and every request travels to a node (else LT_BODY, sent over and over).
local fresh = os.getenv("LT_FRESH") == "1"
wrk.body = fresh and "" or assert(os.getenv("LT_BODY"), "LT_BODY is not set")
local events_path = assert(os.getenv("LT_EVENTS"), "LT_EVENTS is not set")
local r = math.random

if fresh then
  request = function()
    local addr = string.format("0x%04x%04x%04x%04x%04x%04x%04x%04x%04x%04x",
      r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535),
      r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535))
    return wrk.format(nil, nil, nil,
      '{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["' .. addr .. '","latest"]}')
  end
end
local max_events = 20000

local f, written, last_region = nil, 0, nil

function init(args)
  f = assert(io.open(events_path .. "." .. tid, "w"))
  math.randomseed(math.floor(lt.now() * 1e6) % 2147483647 + tid)
end

response = function(status, headers, body)
  local failed = lt.count(status, headers, body)
  local region = headers["x-edge-region"] or "-"
  if (failed or region ~= last_region) and written < max_events then
    f:write(string.format("%.6f %s %s\n", lt.now(), failed and "fail" or "ok", region))
    f:flush()
    written = written + 1
  end
  if not failed then
    last_region = region
  end
end
