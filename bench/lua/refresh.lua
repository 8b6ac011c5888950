-- grant_type=refresh_token with rotation: each thread keeps a queue of live refresh tokens (its
-- share of the lines of BENCH_TOKENS_FILE); each request takes one, each 200 response puts the new
-- one back. BENCH_BODY is the form without the refresh_token parameter.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("BENCH_THREADS") or "1")
  prefix = os.getenv("BENCH_BODY") .. "&refresh_token="
  tokens = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_TOKENS_FILE")) do
    if i % n == tid then table.insert(tokens, line) end
    i = i + 1
  end
end

function request()
  local rt = table.remove(tokens, 1) or "refresh_exhausted"
  return wrk.format("POST", nil, nil, prefix .. rt)
end

function response(status, headers, body)
  if status == 200 then
    local rt = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if rt then table.insert(tokens, rt) end
  end
end
