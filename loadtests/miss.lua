-- Workload 2 (miss path) and the cache-fill run: eth_getBalance of a fresh random address per
-- request, so no cache can answer it and every request reaches anvil.
--
--   LT_BLOCK  the block parameter as JSON: "latest" (never cached) or {"blockHash": "0x.."}
--             (cacheable: every answer is stored, which fills the edge cache)
dofile(os.getenv("LT_DIR") .. "/common.lua")

local block = assert(os.getenv("LT_BLOCK"), "LT_BLOCK is not set")
local r = math.random

function init(args)
  math.randomseed(math.floor(lt.now() * 1e6) % 2147483647 + tid)
end

request = function()
  local addr = string.format("0x%04x%04x%04x%04x%04x%04x%04x%04x%04x%04x",
    r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535),
    r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535), r(0, 65535))
  return wrk.format(nil, nil, nil,
    '{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["' .. addr .. '",' .. block .. ']}')
end
