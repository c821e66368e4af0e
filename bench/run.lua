-- make bench: every figure is the median of several runs, measured next to
-- its baseline in the same run, interleaved (A B A B) because machines are
-- noisy.  Prints one table and writes it to bench/results/results.md.
--   BENCH_QUICK=1  one short round (a smoke test, for CI)
local lib = require "lib"

local QUICK = os.getenv("BENCH_QUICK") == "1"
local LOAD0 = (function() -- the machine's load when we start: other work skews the figures
  local f = io.open("/proc/loadavg")
  local s = f and f:read("*l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end)()
local ROUNDS = QUICK and 1 or tonumber(os.getenv("BENCH_ROUNDS") or "5")
local SCALE = QUICK and 0.02 or 1
local LUA = arg[-1] or "lua5.4"
local LUANAME = LUA:match("[^/]*$")
local HERE = arg[0]:match("^(.*)/[^/]*$") or "."
local BIN = HERE .. "/../build/bench"
-- make bench (lua5.4): results.md; make bench LUA=luajit: results-luajit.md, ...
local RESULTS = HERE .. "/results/results" .. (LUANAME == "lua5.4" and "" or "-" .. LUANAME) .. ".md"

local q = lib.q
local function n(x) return math.max(1, math.floor(x * SCALE)) end

local sh = lib.sh

-- a command's output: one or more numbers (the default), or what `parse` finds
local function plain(out)
  if not out:match("^%s*[%d.][%d.%s]*$") then return nil end
  local t = {}
  for x in out:gmatch("[%d.]+") do t[#t + 1] = tonumber(x) end
  return t
end
local function numbers(cmd, parse)
  local out, ok = sh(cmd)
  local v = ok and (parse or plain)(out)
  if not v then error("bench: `" .. cmd .. "` failed:\n" .. out, 0) end
  return v
end

local function lua(script, ...)
  local parts = { LUA, q(HERE .. "/" .. script) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

local PY = "/usr/bin/python3"
local has_python = select(2, sh(PY .. " -c 'import sysv_ipc'"))
local has_strace = select(2, sh("command -v strace"))
local function py(...)
  return table.concat({ PY, q(HERE .. "/sysv_ipc_bench.py"), ... }, " ")
end

-- the cases: name -> command printing one number
local cases, order = {}, {}
local function case(name, cmd, parse)
  cases[name] = { cmd = cmd, parse = parse, values = {} }
  order[#order + 1] = name
end

local SIZES = { { 64, "64 B", n(2e6) }, { 4096, "4 KiB", n(5e5) },
                { 1024 * 1024, "1 MiB", n(3000) }, { 16 * 1024 * 1024, "16 MiB", n(150) } }
for _, sz in ipairs(SIZES) do
  for _, mode in ipairs({ "write", "read" }) do
    case("copy " .. mode .. " " .. sz[2], lua("copy.lua", mode, sz[1], sz[3]))
    if mode == "read" then case("sub " .. sz[2], lua("copy.lua", "sub", sz[1], sz[3])) end
    case("memcpy " .. mode .. " " .. sz[2], table.concat({ BIN .. "/cmemcpy", mode, sz[1], sz[3] }, " "))
    if has_python then
      case("python " .. mode .. " " .. sz[2], py("copy", mode, sz[1], math.max(1, math.floor(sz[3] / 4))))
    end
  end
end

local OPS = { "floor", "read64", "write64", "pack", "unpack", "load", "add" }
for _, op in ipairs(OPS) do case("small " .. op, lua("small.lua", op, n(3e6))) end
if has_python then
  for _, op in ipairs({ "floor", "read64", "write64" }) do case("python " .. op, py("small", op, n(1e6))) end
end

local MSG = { { 64, "64 B", n(2e6) }, { 4096, "4 KiB", n(2e5) } }
for _, m in ipairs(MSG) do
  for _, tr in ipairs({ "queue", "fifo-flush", "fifo-buffered" }) do
    case(tr .. " " .. m[2], lua("msg.lua", "read", tr, m[1], m[3]))
  end
  case("cpipe " .. m[2], table.concat({ BIN .. "/cpipe", m[1], m[3] }, " "))
end
-- semaphores: uncontended acquire+release, and a ping-pong between two processes
for _, kind in ipairs({ "sysv", "posix" }) do
  case("sem " .. kind .. " uncontended", lua("sem.lua", "uncontended", kind, n(kind == "sysv" and 1e6 or 3e6)))
  case("csem " .. kind .. " uncontended", table.concat({ BIN .. "/csem", "uncontended", kind,
    n(kind == "sysv" and 1e6 or 3e7) }, " "))
  case("sem " .. kind .. " pingpong", lua("sem.lua", "pingpong", kind, n(1e5)))
  case("csem " .. kind .. " pingpong", table.concat({ BIN .. "/csem", "pingpong", kind, n(1e5) }, " "))
end
if has_python then
  case("python sem uncontended", py("sem", "uncontended", n(1e6)))
  case("python sem pingpong", py("sem", "pingpong", n(1e5)))
end
case("pingpong queue", lua("pingpong.lua", "client", "queue", n(1e5)))
case("pingpong fifo", lua("pingpong.lua", "client", "fifo", n(5e4)))

-- 5. broadcast: shm.events, the dict-based event log, a FIFO per subscriber
local EV_SIZES = { { 64, "64 B", n(2e5) }, { 4096, "4 KiB", n(2e4) } }
local EV_SUBS = { 1, 4, 8 }
local EV_TRANSPORTS = { "events", "dict", "fifo" }
local has_events = (function()
  local ok, shm = pcall(require, "shm")
  return ok and shm.events ~= nil and shm.dict ~= nil
end)()
if has_events then
  for _, sz in ipairs(EV_SIZES) do
    for _, subs in ipairs(EV_SUBS) do
      for _, tr in ipairs(EV_TRANSPORTS) do
        case(string.format("broadcast %s %s x%d", tr, sz[2], subs),
          lua("events.lua", "throughput", tr, sz[1], subs, math.max(1, math.floor(sz[3] / math.sqrt(subs)))))
      end
    end
  end
  for _, tr in ipairs(EV_TRANSPORTS) do case("wake " .. tr, lua("events.lua", "latency", tr, n(300))) end
  -- the floor: the kernel's futex wake-up alone, measured the same way (bench/cfutex.c)
  case("wake cfutex", table.concat({ BIN .. "/cfutex", n(300) }, " "))
end

-- 4. the shared dictionary, its baselines in servers we start (and stop,
-- whatever happens: every server's stopper runs before any error goes on)
local dictloops = require "dictloops"
local scale = require "scaleloops"
local servers = require "servers"
local has_dict = (function()
  local ok, shm = pcall(require, "shm")
  return ok and shm.dict ~= nil
end)()
local NA_DICT = "n/a (shm.dict not built)"
local DICT_ORDER = { "set16", "get16", "set1k", "get1k", "set10k", "get10k", "incr" } -- Redis: SET before GET
local REDIS = { set16 = "-t set -d 16", get16 = "-t get -d 16", set1k = "-t set -d 1024", get1k = "-t get -d 1024",
  set10k = "-t set -d 16 -r 10000", get10k = "-t get -d 16 -r 10000", incr = "-t incr" }
local PAIR_DUR = QUICK and 0.05 or 0.5
local SCALE_NKEYS, SCALE_OPS, SCALE_LIST = {}, n(scale.OPS), n(scale.LIST)
for i, nk in ipairs(QUICK and scale.QUICK_NKEYS or scale.NKEYS) do SCALE_NKEYS[i] = string.format("%d", nk) end
local ngx_srv, redis_srv, ngx_why, redis_why
local stoppers = {}
local function stop_servers()
  for i = #stoppers, 1, -1 do
    pcall(stoppers[i])
    stoppers[i] = nil
  end
end
-- redis-benchmark --csv: "GET","31250.00",... -> microseconds per request of one client
local function redis_us(clients)
  return function(out)
    local rps = tonumber(out:match('\n"[%u]+","([%d.]+)"'))
    return rps and rps > 0 and { 1e6 * clients / rps } or nil
  end
end

local function measure()
  if QUICK then
    ngx_why, redis_why = "skipped (BENCH_QUICK)", "skipped (BENCH_QUICK)"
  else
    local bench_dir = (HERE:sub(1, 1) == "/" and HERE or (sh("pwd"):gsub("%s+$", "") .. "/" .. HERE))
    ngx_srv, ngx_why = servers.nginx(bench_dir, dictloops.CAPACITY, scale.zones())
    if ngx_srv then stoppers[#stoppers + 1] = ngx_srv.stop end
    redis_srv, redis_why = servers.redis()
    if redis_srv then stoppers[#stoppers + 1] = redis_srv.stop end
  end
  for _, why in ipairs({ ngx_srv and "" or "ngx.shared.DICT rows skipped: " .. ngx_why,
                         redis_srv and "" or "Redis rows skipped: " .. redis_why,
                         has_dict and "" or "shm.dict rows: " .. NA_DICT }) do
    if why ~= "" then io.stderr:write("bench: " .. why .. "\n") end
  end
  local N = n(1e6)
  for _, op in ipairs(DICT_ORDER) do
    case("dict table " .. op, lua("dict.lua", "table", op, N))
    if has_dict then case("dict shm " .. op, lua("dict.lua", "dict", op, N)) end
    if jit then
      case("dict table " .. op .. " nojit", lua("dict.lua", "table", op, N, "nojit"))
      if has_dict then case("dict shm " .. op .. " nojit", lua("dict.lua", "dict", op, N, "nojit")) end
    end
    if ngx_srv then
      case("dict ngx " .. op, "curl -sS --max-time 600 " .. q(ngx_srv.url .. "/op?op=" .. op .. "&n=" .. N))
      if jit then
        case("dict ngx " .. op .. " nojit", "curl -sS --max-time 600 " ..
          q(ngx_srv.url .. "/op?op=" .. op .. "&n=" .. n(2e5) .. "&jit=off"))
      end
    end
    if redis_srv then
      case("dict redis " .. op, "redis-benchmark -s " .. q(redis_srv.sock) .. " -c 1 -P 1 -n " .. n(50000) ..
        " --csv " .. REDIS[op], redis_us(1))
    end
  end
  for _, mode in ipairs({ "getset", "getget" }) do
    if has_dict then case("pair shm " .. mode, lua("dict.lua", "pair", mode, PAIR_DUR)) end
    if ngx_srv then
      case("pair ngx " .. mode, "curl -sS --max-time 60 " .. q(ngx_srv.url .. "/pair?mode=" .. mode ..
        "&dur=" .. PAIR_DUR))
    end
  end
  if redis_srv then
    case("pair redis getget", "redis-benchmark -s " .. q(redis_srv.sock) .. " -c 2 -P 1 -n " .. n(100000) ..
      " --csv -t get -d 16", redis_us(2))
  end

  -- 5. at scale (issue 17), and the C API's floor for a hot-key get
  if has_dict then case("dict floor get16", lua("dict.lua", "floor", "get16", N)) end
  local function scale_case(name, ...)
    local a = { ... }
    if has_dict then case("scale shm " .. name, lua("dictscale.lua", ...)) end
    if ngx_srv then
      case("scale ngx " .. name, "curl -sS --max-time 1200 " ..
        q(ngx_srv.url .. "/scale?what=" .. a[1] .. "&a=" .. a[2] .. (a[3] and "&b=" .. a[3] or "")))
    end
  end
  for _, nk in ipairs(SCALE_NKEYS) do scale_case("keys " .. nk, "keys", nk, SCALE_OPS) end
  scale_case("list", "list", SCALE_LIST)
  for _, sz in ipairs(scale.VSIZES) do scale_case("fill " .. sz, "fill", sz) end

  -- run: every case once per round, in a fixed interleaved order
  for r = 1, ROUNDS do
    io.stderr:write(string.format("bench: round %d of %d\n", r, ROUNDS))
    for _, name in ipairs(order) do
      local c = cases[name]
      c.values[#c.values + 1] = numbers(c.cmd, c.parse)
    end
  end
end
local ok, err = pcall(measure)
stop_servers()
if not ok then error(err, 0) end

-- the median of field i (default 1) of a case's outputs; nil if not measured
local function med(name, i) return lib.case_median(cases, name, i) end

-- system calls per small operation (strace): the difference between a run of
-- N+100000 calls and one of N, over 100000
local syscalls = {}
if has_strace then
  local function count(op, iter)
    local tmp = os.tmpname()
    sh("strace -f -qq -c -o " .. tmp .. " " .. lua("small.lua", op, iter))
    local f = io.open(tmp)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(tmp)
    return tonumber(text:match("\n[%s%d.]+%s+(%d+)%s+%d*%s*total")) or 0
  end
  for _, op in ipairs(OPS) do
    if op ~= "floor" then syscalls[op] = (count(op, 101000) - count(op, 1000)) / 100000 end
  end
end

-- report
local function ns(v) return v and string.format("%.1f ns", v) or "n/a" end
local function ratio(a, b) return (a and b) and string.format("%.2f", a / b) or "-" end
local out = {}
local function line(s) out[#out + 1] = s end
local function cpu()
  local f = io.open("/proc/cpuinfo")
  local t = f and f:read("*a") or ""
  if f then f:close() end
  return t:match("model name%s*:%s*([^\n]+)") or "?"
end
line("# lua-shm benchmarks")
line("")
line(string.format("Machine: %s, %s cores, Linux %s, %s. Medians of %d interleaved rounds%s.",
  cpu(), (sh("nproc"):gsub("%s", "")), (sh("uname -r"):gsub("%s", "")), jit and jit.version or _VERSION, ROUNDS,
  QUICK and " (QUICK: tiny counts, figures not meaningful)" or ""))
line("")
line("Load average (1, 5, 15 min) when the run started: " .. LOAD0 .. ". The machine is shared: other work on " ..
  "its cores slows every figure, the two-process ones (queue, round trips, two processes on one key) most.")
line("")
line("## 1. Bulk copy into and out of a System V segment, against C memcpy")
line("")
line("The last columns: for reads, the interpreter's own cost of making a new string of that size " ..
  "(`s:sub(2, size + 1)`), which `seg:read` cannot avoid; and Python's sysv_ipc.")
if jit then
  line("")
  line("LuaJIT interns every string and compiles the floor loop: a string whose bytes already exist is " ..
    "found, not made, so the floor column is not the cost of making a string here, and `seg:read` of " ..
    "unchanged bytes costs a hash and a compare with the string it made before, not an allocation.")
end
line("")
line("| size | op | lua-shm | memcpy | lua-shm / memcpy speed | Lua string floor |" ..
  (has_python and " python sysv_ipc |" or ""))
line("|---|---|---|---|---|---|" .. (has_python and "---|" or ""))
local function rate(size, nsec) -- GB/s
  return string.format("%.2f GB/s", size / nsec)
end
for _, sz in ipairs(SIZES) do
  for _, mode in ipairs({ "write", "read" }) do
    local l, c = med("copy " .. mode .. " " .. sz[2]), med("memcpy " .. mode .. " " .. sz[2])
    local row = string.format("| %s | seg:%s | %.0f ns (%s) | %.0f ns (%s) | %.2f | %s |", sz[2], mode, l,
      rate(sz[1], l), c, rate(sz[1], c), c / l,
      mode == "read" and string.format("%.0f ns (%s)", med("sub " .. sz[2]), rate(sz[1], med("sub " .. sz[2])))
        or "")
    if has_python then
      local p = med("python " .. mode .. " " .. sz[2])
      row = row .. string.format(" %.0f ns (%s) |", p, rate(sz[1], p))
    end
    line(row)
  end
end
line("")
line("## 2. Small operations: ns per call against the interpreter's floor")
line("")
line("Floor: `s:sub(1, 64)` on a 64-byte string in the same loop.")
if jit then
  line("")
  line("LuaJIT compiles the floor loop to almost nothing, while a call of a C function through the Lua " ..
    "C API (every lua-shm method) is not compiled: here the ratio says how much slower a call is than " ..
    "JIT-compiled Lua, not how much lua-shm adds to a call.")
end
line("")
line("| op | ns/call | floor | ratio to floor | system calls per call |")
line("|---|---|---|---|---|")
local floor = med("small floor")
local LABEL = { read64 = "seg:read(0, 64)", write64 = "seg:write(s64, 0)", pack = 'seg:pack(0, "j", i)',
  unpack = 'seg:unpack(0, "j")', load = "seg:load(8)", add = "seg:add(8, 1)" }
for _, op in ipairs(OPS) do
  if op ~= "floor" then
    local v = med("small " .. op)
    line(string.format("| `%s` | %.1f | %.1f | %.2f | %s |", LABEL[op], v, floor, v / floor,
      syscalls[op] and string.format("%.4f", syscalls[op]) or "(no strace)"))
  end
end
if has_python then
  line("")
  line(string.format("Python sysv_ipc, same machine: `read(64)` %.1f ns, `write(s64)` %.1f ns; its floor " ..
    "(`s64[0:63]`) %.1f ns.", med("python read64"), med("python write64"), med("python floor")))
end
line("")
line("## 3. Messages between two Lua processes")
line("")
line("| size | transport | messages/s | MB/s | shm.queue is × faster |")
line("|---|---|---|---|---|")
for _, m in ipairs(MSG) do
  local qv = med("queue " .. m[2])
  for _, tr in ipairs({ "queue", "fifo-flush", "fifo-buffered", "cpipe" }) do
    local v = med(tr .. " " .. m[2])
    local label = ({ queue = "shm.queue push/pop", ["fifo-flush"] = "FIFO, flush per message",
      ["fifo-buffered"] = "FIFO, buffered", cpipe = "C, pipe write/read (no Lua)" })[tr]
    line(string.format("| %s | %s | %.0f | %.1f | %s |", m[2], label, v, v * m[1] / 1e6,
      tr == "queue" and "" or string.format("%.2f", qv / v)))
  end
end
line("")
line(string.format("Round trip (64 B there and back): shm.queue %.2f µs, FIFO with flush %.2f µs (%.1f× faster).",
  med("pingpong queue"), med("pingpong fifo"), med("pingpong fifo") / med("pingpong queue")))
line("")
line("Every message is checked byte for byte and in order (1024 distinct messages, each with its index).")

line("")
line("## 4. Shared dictionary: shm.dict against ngx.shared.DICT, Redis and a Lua table")
line("")
line("The same loops (bench/dictloops.lua) for shm.dict in this interpreter, for `ngx.shared.DICT` inside an " ..
  "nginx worker (our own nginx on a loopback port: Debian's `nginx`, `libnginx-mod-http-lua` and " ..
  "`lua-resty-core`, timed in the worker with `clock_gettime(CLOCK_MONOTONIC)`), and for a plain Lua table " ..
  "(the floor); every value read is checked, every write read back. Redis: our own `redis-server` on a unix " ..
  "socket, `redis-benchmark`, one client, no pipelining, so one round trip per operation (16 B or 1 KiB values, " ..
  "`-r 10000` for 10,000 keys).")
line("")
if ngx_srv then
  line("nginx workers: " .. ngx_srv.info .. ", from " .. ngx_srv.source .. ". So ngx.shared.DICT's " ..
    "get/set/incr are FFI calls that LuaJIT compiles into the worker's loop, not Lua C API calls.")
else
  line("ngx.shared.DICT: " .. tostring(ngx_why) .. ".")
end
if not redis_srv then line("") line("Redis: " .. tostring(redis_why) .. ".") end
if not has_dict then line("") line("shm.dict: " .. NA_DICT .. " (`require(\"shm\").dict` is nil).") end
line("")
line("Goals (issue 13), under Lua 5.4: get and set within 1.5x of ngx.shared.DICT; two processes on one key: " ..
  "reads no slower than ngx.shared.DICT's; at least 100x faster than a Redis GET round trip.")
line("")
local DLABEL = { get16 = "`get`, 16 B value, one hot key", set16 = "`set`, 16 B value, one hot key",
  get1k = "`get`, 1 KiB value", set1k = "`set`, 1 KiB value", get10k = "`get` over 10,000 keys (16 B)",
  set10k = "`set` over 10,000 keys (16 B)", incr = "`incr(k, 1)`" }
line("| op | shm.dict | ngx.shared.DICT | shm.dict / ngx | Redis round trip | Redis / shm.dict | Lua table (floor) " ..
  "| shm.dict / floor |")
line("|---|---|---|---|---|---|---|---|")
for _, op in ipairs(dictloops.OPS) do
  local d, x, r, t = med("dict shm " .. op), med("dict ngx " .. op), med("dict redis " .. op), med("dict table " .. op)
  line(string.format("| %s | %s | %s | %s | %s | %s | %s | %s |", DLABEL[op], has_dict and ns(d) or NA_DICT,
    ngx_srv and ns(x) or "skipped", ratio(d, x), r and string.format("%.2f µs", r) or "skipped",
    ratio(r and r * 1000, d), ns(t), ratio(d, t)))
end
if jit then
  line("")
  line("The same loops with the JIT off (`jit.off()`, and in the nginx worker `jit.off()` `jit.flush()` " ..
    "around the loop): what the calls cost interpreted; lua-resty-core's FFI calls are slow when interpreted.")
  line("")
  line("| op | shm.dict, JIT off | JIT off / on | ngx.shared.DICT, JIT off | JIT off / on | " ..
    "shm.dict / ngx, JIT off | Lua table, JIT off | shm.dict / floor, JIT off |")
  line("|---|---|---|---|---|---|---|---|")
  for _, op in ipairs(dictloops.OPS) do
    local d, don, t = med("dict shm " .. op .. " nojit"), med("dict shm " .. op), med("dict table " .. op .. " nojit")
    local x, xon = med("dict ngx " .. op .. " nojit"), med("dict ngx " .. op)
    line(string.format("| %s | %s | %s | %s | %s | %s | %s | %s |", DLABEL[op], has_dict and ns(d) or NA_DICT,
      ratio(d, don), ngx_srv and ns(x) or "skipped", ratio(x, xon), ratio(d, x), ns(t), ratio(d, t)))
  end
end
line("")
line(string.format("Two processes hammering one key (16 B values) for %g s at once, started together through " ..
  "the dict itself: operations per second of each (shm.dict: two processes of this interpreter; " ..
  "ngx.shared.DICT: the two workers of one nginx).", PAIR_DUR))
line("")
line("| processes | shm.dict: 1 (get) | shm.dict: 2 | ngx.shared.DICT: 1 (get) | ngx.shared.DICT: 2 | " ..
  "reads, shm.dict / ngx |")
line("|---|---|---|---|---|---|")
local function ops(v) return v and string.format("%.0f", v) or "n/a" end
for _, mode in ipairs({ "getset", "getget" }) do
  local s1, s2 = med("pair shm " .. mode, 1), med("pair shm " .. mode, 2)
  local x1, x2 = med("pair ngx " .. mode, 1), med("pair ngx " .. mode, 2)
  line(string.format("| %s | %s | %s | %s | %s | %s |",
    mode == "getset" and "one getter + one setter" or "two getters",
    has_dict and ops(s1) or NA_DICT, has_dict and (ops(s2) .. (mode == "getset" and " (set)" or " (get)")) or NA_DICT,
    ngx_srv and ops(x1) or "skipped", ngx_srv and (ops(x2) .. (mode == "getset" and " (set)" or " (get)")) or "skipped",
    ratio(s1, x1)))
end
line("")
line("## Semaphores (`shm.sem`), against C and Python's sysv_ipc")
line("")
line("Nanoseconds per acquire+release pair of one uncontended semaphore, and per round trip between two " ..
  "processes through two semaphores (each releases the other's and acquires its own), beside the same " ..
  "loops in C (bench/csem.c: `semop`, `sem_wait`/`sem_post`) and in Python's sysv_ipc (System V only).")
line("")
line("| case | lua-shm | C | lua-shm / C | python sysv_ipc | python / lua-shm |")
line("|---|---|---|---|---|---|")
for _, m in ipairs({ "uncontended", "pingpong" }) do
  for _, kind in ipairs({ "sysv", "posix" }) do
    local l, cv = med("sem " .. kind .. " " .. m), med("csem " .. kind .. " " .. m)
    local p = kind == "sysv" and med("python sem " .. m) or nil
    line(string.format("| %s %s | %s | %s | %s | %s | %s |", kind == "sysv" and "System V" or "POSIX",
      m == "uncontended" and "acquire+release, uncontended" or "ping-pong round trip", ns(l), ns(cv), ratio(l, cv),
      p and ns(p) or "-", ratio(p, l)))
  end
end
if redis_srv then
  local r = med("pair redis getget")
  line("")
  line(string.format("Redis, two clients doing GET at once: %.2f µs per round trip, %.0f GETs per second each.",
    r, 1e6 / r))
end

if has_events then
  line("")
  line("## 5. Broadcast: shm.events against the dict-based event log and a FIFO per subscriber")
  line("")
  line("One publisher process, 1, 4 or 8 subscriber processes, every event checked byte for byte and in order " ..
    "by every subscriber; events per second until the last subscriber has the last one. The dict-based log is " ..
    "what lua-resty-worker-events and mlcache's ipc_shm do in an ngx.shared.DICT, here over shm.dict: " ..
    "`incr` an index, `set` the event under it; subscribers poll the index and `get` each event (polling " ..
    "without a pause, its best case). FIFO: one per subscriber, the publisher writes each event to each, " ..
    "buffered (one flush at the end). The ring and the dict are made big enough to keep every event.")
  line("")
  line("| size | subscribers | shm.events | dict-based log | FIFO per subscriber | shm.events / dict log | " ..
    "shm.events / FIFO |")
  line("|---|---|---|---|---|---|---|")
  for _, sz in ipairs(EV_SIZES) do
    for _, subs in ipairs(EV_SUBS) do
      local function v(tr) return med(string.format("broadcast %s %s x%d", tr, sz[2], subs)) end
      local e, d, f = v("events"), v("dict"), v("fifo")
      line(string.format("| %s | %d | %.0f | %.0f | %.0f | %.1f | %.2f |", sz[2], subs, e, d, f, e / d, e / f))
    end
  end
  line("")
  local we, wf = med("wake events"), med("wake cfutex")
  line(string.format("Publish to wake-up, 64 B, the subscriber asleep before each event (median, from the " ..
    "publish call to the subscriber's return with the event): shm.events %.1f µs (a futex wake); FIFO with a " ..
    "flush per event %.1f µs (a blocking read); the dict-based log, polled every millisecond, %.1f µs " ..
    "(lua-resty-worker-events polls every second by default). The floor, the kernel's wake-up alone " ..
    "(bench/cfutex.c: one process FUTEX_WAKEs another asleep in FUTEX_WAIT on a shared word, the time from " ..
    "the wake call to the waiter's return): %.1f µs; shm.events is %.1fx the floor.",
    we, med("wake fifo"), med("wake dict"), wf, we / wf))
  line("")
  line("Goals (issue 21): at least 10x the dict-based log's events per second; wake latency under 10 µs." ..
    (wf >= 10 and string.format(" The futex floor itself is %.1f µs on this machine: the latency goal cannot " ..
      "be met here, and shm.events aims at a small factor of the floor instead.", wf) or ""))
end

line("")
line("## 6. shm.dict at scale, beside ngx.shared.DICT (issue 17)")
line("")
line("The loops of bench/scaleloops.lua, for shm.dict in this interpreter (a new dict per run) and for " ..
  "`ngx.shared.DICT` in the same nginx as section 4 (a zone per row, flushed first), both with the capacity " ..
  "given. Keys: 16-byte strings stored in order, then read and written in a shuffled order (a fixed " ..
  "generator, the same on both sides): random keys over the key set; values: the key itself, checked on " ..
  "every read. " .. SCALE_OPS .. " gets then as many sets, after a warm-up of a tenth as many.")
line("")
line("| keys | capacity | get, shm.dict | get, ngx | shm.dict / ngx | set, shm.dict | set, ngx | shm.dict / ngx |")
line("|---|---|---|---|---|---|---|---|")
local function mib(b) return string.format("%g MiB", b / 1048576) end
for _, nk in ipairs(SCALE_NKEYS) do
  local g, s = med("scale shm keys " .. nk, 1), med("scale shm keys " .. nk, 2)
  local xg, xs = med("scale ngx keys " .. nk, 1), med("scale ngx keys " .. nk, 2)
  line(string.format("| %s | %s | %s | %s | %s | %s | %s | %s |", nk, mib(scale.capacity(tonumber(nk))),
    has_dict and ns(g) or NA_DICT, ngx_srv and ns(xg) or "skipped", ratio(g, xg),
    has_dict and ns(s) or NA_DICT, ngx_srv and ns(xs) or "skipped", ratio(s, xs)))
end
line("")
line(string.format("Lists (%s, 16-byte elements): %d `rpush` onto one list, then %d `lpop`; then the list " ..
  "pushed again and deleted with one `delete` (shm.dict frees its elements in committed batches before " ..
  "`delete` returns; ngx frees them under its lock).", mib(scale.LIST_CAPACITY), SCALE_LIST, SCALE_LIST))
line("")
line("| op | shm.dict | ngx.shared.DICT | shm.dict / ngx |")
line("|---|---|---|---|")
for i, label in ipairs({ "`rpush`", "`lpop`", string.format("`delete` of a %d-element list", SCALE_LIST) }) do
  local v, x = med("scale shm list", i), med("scale ngx list", i)
  local f = i == 3 and function(u) return u and string.format("%.0f µs", u) or "n/a" end or ns
  line(string.format("| %s | %s | %s | %s |", label, has_dict and f(v) or NA_DICT, ngx_srv and f(x) or "skipped",
    ratio(v, x)))
end
line("")
line(string.format("Values per MiB: `safe_set` of values of one size (keys `f:1`, `f:2`, ...) into an empty " ..
  "dict of %s until \"no memory\"; the count over the capacity in MiB (ngx: a zone of the same size).",
  mib(scale.FILL_CAPACITY)))
line("")
line("| value size | shm.dict, values per MiB | ngx, values per MiB | shm.dict / ngx |")
line("|---|---|---|---|")
for _, sz in ipairs(scale.VSIZES) do
  local per = scale.FILL_CAPACITY / 1048576
  local v, x = med("scale shm fill " .. sz), med("scale ngx fill " .. sz)
  line(string.format("| %d B | %s | %s | %s |", sz, has_dict and string.format("%.0f", v / per) or NA_DICT,
    ngx_srv and x and string.format("%.0f", x / per) or "skipped", ratio(v, x)))
end
line("")
line("Goals (issue 17), ratios of figures of this run:")
line("")
do
  local sset, xset = med("dict shm set16"), med("dict ngx set16")
  local sget, fl = med("dict shm get16"), med("dict floor get16")
  local function verdict(r, goal) return r and (r <= goal and "met" or "not met") or "not measured" end
  local rs, rg = sset and xset and sset / xset, sget and fl and sget / fl
  line(string.format("- Hot-key `set` (section 4's row) within 1.25× of ngx.shared.DICT's, under LuaJIT " ..
    "(the FFI path): here %s, shm.dict %s, ngx %s: %s× (%s).", jit and jit.version or _VERSION, ns(sset),
    ngx_srv and ns(xset) or "skipped", ratio(sset, xset),
    jit and verdict(rs, 1.25) or "the goal is LuaJIT's; see results-luajit.md"))
  line(string.format("- Hot-key `get` within 1.3× of the C API's own floor, under Lua 5.4: the same loop with " ..
    "`seg:read(0, 16)` of a 4 KiB segment holding the value in place of `d:get(\"hot\")` (a checked method " ..
    "call on a userdata that makes the 16-byte result string and does nothing else; bench/dictloops.lua's " ..
    "`floor`): here %s, shm.dict %s, floor %s: %s× (%s).", jit and jit.version or _VERSION, ns(sget), ns(fl),
    ratio(sget, fl), jit and "the goal is Lua 5.4's; under LuaJIT both run through the FFI" or
    verdict(rg, 1.3)))
end

lib.report(out, RESULTS, QUICK)
