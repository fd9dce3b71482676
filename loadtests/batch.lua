-- Workload 5 (batch): JSON-RPC batches of LT_BATCH_SIZE (50) eth_getBalance calls at LT_BLOCK.
-- LT_BATCH_BODIES (8) different batches, the same for every target (fixed seed), sent in turn:
-- nginx caches each whole batch body, the edge node caches each call.
dofile(os.getenv("LT_DIR") .. "/common.lua")

local size = tonumber(os.getenv("LT_BATCH_SIZE") or "50")
local count = tonumber(os.getenv("LT_BATCH_BODIES") or "8")
local block = assert(os.getenv("LT_BLOCK"), "LT_BLOCK is not set")

math.randomseed(6)
local bodies = {}
for b = 1, count do
  local calls = {}
  for i = 1, size do
    local addr = "0x"
    for _ = 1, 10 do
      addr = addr .. string.format("%04x", math.random(0, 65535))
    end
    calls[i] = string.format('{"jsonrpc":"2.0","id":%d,"method":"eth_getBalance","params":["%s",%s]}',
      i, addr, block)
  end
  bodies[b] = "[" .. table.concat(calls, ",") .. "]"
end

local n = 0
request = function()
  n = n % count + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
