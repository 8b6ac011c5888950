-- GET with "Authorization: Bearer BENCH_TOKEN" (userinfo). With BENCH_DELAY_MS each connection
-- waits about that long (uniformly 0.5x-1.5x, so connections do not fall into lockstep) before
-- each request: a fixed offered rate well below the peak, for latency at partial load.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return math.floor(delay_ms * (0.5 + math.random()))
  end
end
