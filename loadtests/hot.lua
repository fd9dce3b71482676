-- Workload 1 (cache hit) and 4 (failover): one hot read, sent over and over.
--
--   LT_BODY        the JSON-RPC request body (its id is 1)
--   LT_UNIQUE_IDS  "1": give each request its own id, as real clients (viem, ethers, web3.py) do;
--                  the gateway's cache ignores ids, nginx's body-keyed cache does not
dofile(os.getenv("LT_DIR") .. "/common.lua")

wrk.body = assert(os.getenv("LT_BODY"), "LT_BODY is not set")

if os.getenv("LT_UNIQUE_IDS") == "1" then
  local head, tail = wrk.body:match('^(.-"id":)1(,.*)$')
  assert(head, 'LT_BODY must contain "id":1,')
  -- Ids start at the current time in microseconds, so a later run (or the warm-up before it)
  -- never repeats an earlier run's ids; they stay below 2^53.
  local n = math.floor(lt.now() * 1e6)
  request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, head .. string.format("%.0f", n * 16 + tid) .. tail)
  end
end
