-- make bench, section "Locks and read-through": shm.lock beside seg:mutex and
-- lua-resty-lock's protocol (add, then sleeps of 1 ms doubling up to 0.5 s),
-- in plain Lua processes and inside nginx; d:fetch's hit path beside d:get;
-- the dog-pile (16 processes, one expiring key).  Medians of interleaved
-- rounds; prints a table and writes bench/results/lock[-INTERP].md.
--   lock.lua                               the whole section
--   lock.lua uncontended KIND N            ns per lock + unlock (shmlock, mutex, poll)
--   lock.lua handover KIND ROUNDS HOLD     µs from an unlock to the waiter's return
--   lock.lua waiter KIND SEGID DICTNAME    (the other process of handover)
--   lock.lua hit get|fetch N               ns per call on a present key
--   lock.lua dogpile fetch|getset P DUR TTL CB   callback runs of P processes
--   lock.lua pileworker MODE SEGID DICTNAME DUR TTL CB
--   BENCH_QUICK=1: one short round
local lib = require "lib"
local shm = require "shm"

local now, q = lib.now, lib.q
local QUICK = os.getenv("BENCH_QUICK") == "1"
local LUA = arg[-1] or "lua5.4"
local HERE = arg[0]:match("^(.*)/[^/]*$") or "."
local what = arg[1]

local function newdict()
  local d = assert(shm.dict.create(shm.PRIVATE, 4 * 1024 * 1024))
  d:segment():remove() -- gone when the last process detaches
  return d
end

-- A dict and a segment for this process and its children: the dict by a POSIX
-- name, the segment by its id; remove() them once the children have them.
local serial = 0
local function shared()
  serial = serial + 1
  local name = string.format("/lshm-bench-lock-%d-%d", io.open("/proc/self/stat"):read("*n"), serial)
  local d = assert(shm.dict.create(name, 1024 * 1024))
  local seg = assert(shm.create(shm.PRIVATE, 4096))
  return d, seg, name, function()
    d:remove()
    seg:remove()
  end
end

-- sleep s seconds (a futex wait that nothing wakes)
local nap_seg
local function nap(s)
  nap_seg = nap_seg or shm.create(shm.PRIVATE, 8)
  nap_seg:remove()
  nap_seg:wait(0, 0, s)
end

-- a lock of KIND: an object with :lock(key) and :unlock()
local function makelock(kind, d, seg)
  if kind == "shmlock" then return shm.lock.new(d, { timeout = 60 }) end
  if kind == "poll" then return require("polllock")(d, nap) end -- (resty.lock's protocol)
  local m = seg:mutex(64)
  return { lock = function() return m:lock(60) end, unlock = function() return m:unlock() end }
end

if what == "uncontended" then
  local kind, n = arg[2], tonumber(arg[3])
  local d = newdict()
  local seg = shm.create(shm.PRIVATE, 4096)
  seg:remove()
  local lk = makelock(kind, d, seg)
  for _ = 1, math.min(n, 1000) do lk:lock("k") lk:unlock() end -- warm up
  local t0 = now()
  for _ = 1, n do
    lk:lock("k")
    lk:unlock()
  end
  print(string.format("%.1f", (now() - t0) / n * 1e9))
  return
end

-- handover: this process (the holder) and a waiter; the words of seg:
-- 0 round announced, 8 waiter about to lock, 16 waiter done, 24 t1 (ns)
if what == "handover" then
  local kind, rounds, hold = arg[2], tonumber(arg[3]), tonumber(arg[4])
  local d, seg, name, remove = shared()
  local p = assert(io.popen(table.concat({ LUA, q(arg[0]), "waiter", kind, seg.id, q(name) }, " ")))
  local function await(off, v)
    while seg:load(off) ~= v do seg:wait(off, seg:load(off), 1) end
  end
  await(32, 1) -- the waiter has both
  remove()
  local lk = makelock(kind, d, seg)
  local lat = {}
  for r = 1, rounds do
    lk:lock("k")
    seg:store(0, r) seg:notify(0)
    await(8, r)
    nap(hold) -- (the waiter is asleep in its lock by now)
    local t0 = now()
    lk:unlock()
    await(16, r)
    lat[r] = seg:load(24) / 1e9 - t0
  end
  seg:store(0, -1) seg:notify(0)
  p:read("*a")
  p:close()
  print(string.format("%.1f", lib.median(lat) * 1e6))
  return
end

if what == "waiter" then
  local kind, segid, name = arg[2], tonumber(arg[3]), arg[4]
  local seg = assert(shm.attach(segid))
  local d = assert(shm.dict.open(name))
  seg:store(32, 1) seg:notify(32)
  local lk = makelock(kind, d, seg)
  local r = 0
  while true do
    while seg:load(0) == r do seg:wait(0, r, 1) end
    r = seg:load(0)
    if r < 0 then break end
    seg:store(8, r) seg:notify(8)
    lk:lock("k")
    local t1 = now()
    lk:unlock()
    seg:store(24, math.floor(t1 * 1e9))
    seg:store(16, r) seg:notify(16)
  end
  return
end

if what == "hit" then
  local mode, n = arg[2], tonumber(arg[3])
  local d = newdict()
  assert(d:set("key", "a value of 16 B."))
  local opts = { ttl = 60 }
  local function cb() return "never" end
  local t0
  if mode == "get" then
    t0 = now()
    for _ = 1, n do d:get("key") end
  else
    t0 = now()
    for _ = 1, n do d:fetch("key", opts, cb) end
  end
  print(string.format("%.1f", (now() - t0) / n * 1e9))
  return
end

-- the dog-pile: P processes read one key that expires every TTL seconds, for
-- DUR seconds; the callback takes CB seconds.  fetch: d:fetch; getset: get,
-- and on a miss run the callback and set.  Prints the callback runs and the
-- reads.
if what == "dogpile" then
  local mode, procs, dur, ttl, cb = arg[2], tonumber(arg[3]), arg[4], arg[5], arg[6]
  local d, seg, name, remove = shared()
  local ps = {}
  for i = 1, procs do
    ps[i] = assert(io.popen(table.concat({ LUA, q(arg[0]), "pileworker", mode, seg.id, q(name),
      dur, ttl, cb }, " ")))
  end
  while seg:load(0) < procs do seg:wait(0, seg:load(0), 1) end -- all ready
  remove()
  seg:store(8, 1) seg:notify(8)                                 -- go
  local reads = 0
  for i = 1, procs do
    reads = reads + (tonumber(ps[i]:read("*a")) or 0)
    ps[i]:close()
  end
  print(string.format("%d %d", d:get("runs") or 0, reads))
  return
end

if what == "pileworker" then
  local mode, segid, name = arg[2], tonumber(arg[3]), arg[4]
  local dur, ttl, cbtime = tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])
  local seg = assert(shm.attach(segid))
  local d = assert(shm.dict.open(name))
  local function cb()
    d:incr("runs", 1, 0)
    nap(cbtime) -- (the work: a query, a computation)
    return "computed value"
  end
  local opts = { ttl = ttl }
  seg:add(0, 1) seg:notify(0)
  while seg:load(8) == 0 do seg:wait(8, 0, 1) end
  local deadline, reads = now() + dur, 0
  while now() < deadline do
    local v
    if mode == "fetch" then
      v = d:fetch("hot", opts, cb)
    else
      v = d:get("hot")
      if v == nil then
        v = cb()
        d:set("hot", v, ttl)
      end
    end
    assert(v == "computed value")
    reads = reads + 1
  end
  io.write(reads)
  return
end

assert(what == nil, "lock.lua: unknown command " .. tostring(what))

---------------------------------------------------------------- the section

local ROUNDS = QUICK and 1 or tonumber(os.getenv("BENCH_ROUNDS") or "5")
local SCALE = QUICK and 0.02 or 1
local function n(x) return math.max(1, math.floor(x * SCALE)) end
local LUANAME = LUA:match("[^/]*$")
local RESULTS = HERE .. "/results/lock" .. (LUANAME == "lua5.4" and "" or "-" .. LUANAME) .. ".md"
local HOLD = 0.02                 -- seconds the holder keeps the lock while the waiter waits
local HROUNDS = QUICK and 3 or 25 -- hand-overs per measurement
local PILE = { procs = 16, dur = QUICK and 0.3 or 2, ttl = 0.05, cb = 0.005 }

local cases, order = {}, {}
local function case(name, cmd, parse)
  cases[name] = { cmd = cmd, parse = parse, values = {} }
  order[#order + 1] = name
end
local function self(...)
  local parts = { LUA, q(arg[0]) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end
local function numbers(out)
  if not out:match("^%s*[%d.][%d.%s]*$") then return nil end -- (not an error page's "500")
  local t = {}
  for x in out:gmatch("[%d.]+") do t[#t + 1] = tonumber(x) end
  return #t > 0 and t or nil
end

-- nginx with lua-resty-lock (if installed) or the same protocol, on ngx.shared.DICT
local servers = require "servers"
local ngx_srv, ngx_why
if QUICK then ngx_why = "skipped (BENCH_QUICK)" end

local function measure()
  if not QUICK then
    local bench_dir = (HERE:sub(1, 1) == "/" and HERE or (lib.sh("pwd"):gsub("%s+$", "") .. "/" .. HERE))
    ngx_srv, ngx_why = servers.nginx(bench_dir, 1024 * 1024)
  end
  for _, kind in ipairs({ "shmlock", "mutex", "poll" }) do
    case("unc " .. kind, self("uncontended", kind, n(kind == "poll" and 2e5 or 2e5)))
    case("hand " .. kind, self("handover", kind, HROUNDS, HOLD))
  end
  if ngx_srv then
    case("unc ngx", "curl -sS --max-time 600 " .. q(ngx_srv.url .. "/lock?mode=uncontended&n=" .. n(2e5)))
    case("hand ngx", "curl -sS --max-time 600 " .. q(ngx_srv.url .. "/lock?mode=handover&rounds=" .. HROUNDS ..
      "&hold=" .. HOLD))
  end
  case("hit get", self("hit", "get", n(1e6)))
  case("hit fetch", self("hit", "fetch", n(1e6)))
  for _, mode in ipairs({ "fetch", "getset" }) do
    case("pile " .. mode, self("dogpile", mode, PILE.procs, PILE.dur, PILE.ttl, PILE.cb))
  end
  for r = 1, ROUNDS do
    io.stderr:write(string.format("bench lock: round %d of %d\n", r, ROUNDS))
    for _, name in ipairs(order) do
      local c = cases[name]
      local out, ok = lib.sh(c.cmd)
      local v = ok and numbers(out)
      if not v then error("bench: `" .. c.cmd .. "` failed:\n" .. out, 0) end
      c.values[#c.values + 1] = v
    end
  end
end
local ok, err = pcall(measure)
local ngx_info = ngx_srv and lib.sh("curl -sS --max-time 10 " .. q(ngx_srv.url .. "/lock?mode=info"))
if ngx_srv then ngx_srv.stop() end
if not ok then error(err, 0) end

local function med(name, i) return lib.case_median(cases, name, i) end
local function ratio(a, b) return (a and b) and string.format("%.2f", a / b) or "-" end
local function fmt(v, unit) return v and string.format("%.1f %s", v, unit) or "skipped" end

local out = {}
local function line(s) out[#out + 1] = s end
line("# lua-shm benchmarks: locks and read-through")
line("")
line(string.format("%s, medians of %d interleaved rounds%s.", jit and jit.version or _VERSION, ROUNDS,
  QUICK and " (QUICK: tiny counts, figures not meaningful)" or ""))
line("")
line("## Locks")
line("")
line("Uncontended: one process, `lock(key)` then `unlock()`, nanoseconds per pair. Hand-over: a holder keeps " ..
  string.format("the lock %g ms while another process waits in `lock`, then unlocks; ", HOLD * 1000) ..
  "microseconds from the " ..
  string.format("unlock to the waiter's return (median of %d hand-overs). ", HROUNDS) ..
  "The polling rows are lua-resty-lock's protocol: `add(key, true, exptime)`, then sleeps of 1 ms doubling " ..
  "up to 0.5 s between tries.")
line("")
line("| lock | uncontended | / shm.lock | hand-over | / shm.lock |")
line("|---|---|---|---|---|")
local rows = {
  { "shm.lock (this process and another)", "shmlock" },
  { "`seg:mutex` (a robust futex lock in a segment)", "mutex" },
  { "resty.lock's protocol on shm.dict (bench/lock.lua)", "poll" },
  { ngx_srv and ("inside nginx: " .. (ngx_info or "?"):gsub("%s+$", "")) or "inside nginx", "ngx" },
}
local base_u, base_h = med("unc shmlock"), med("hand shmlock")
for _, r in ipairs(rows) do
  local u, h = med("unc " .. r[2]), med("hand " .. r[2])
  line(string.format("| %s | %s | %s | %s | %s |", r[1], fmt(u, "ns"), ratio(u, base_u), fmt(h, "µs"),
    ratio(h, base_h)))
end
if not ngx_srv then line("") line("nginx rows: " .. tostring(ngx_why) .. ".") end
line("")
line("## d:fetch")
line("")
local g, f = med("hit get"), med("hit fetch")
line(string.format("Hit path, one present key (16 B): `d:get` %s, `d:fetch` %s: fetch / get = %s " ..
  "(goal: 1.2 at most).", fmt(g, "ns"), fmt(f, "ns"), ratio(f, g)))
line("")
local expiries = PILE.dur / (PILE.ttl + PILE.cb)
line(string.format("The dog-pile: %d processes read one key for %g s; it expires %g s after each fill, " ..
  "and the callback takes %g ms (so about %.0f expiries). Callback runs:", PILE.procs, PILE.dur, PILE.ttl,
  PILE.cb * 1000, expiries))
line("")
line("| reader | callback runs | per expiry (about) | reads |")
line("|---|---|---|---|")
for _, mode in ipairs({ "fetch", "getset" }) do
  local runs, reads = med("pile " .. mode, 1), med("pile " .. mode, 2)
  line(string.format("| %s | %.0f | %.1f | %.0f |", mode == "fetch" and "`d:fetch(key, {ttl = ...}, cb)`" or
    "`get`, and on a miss `cb()` then `set`", runs, runs / expiries, reads))
end

lib.report(out, RESULTS, QUICK)
