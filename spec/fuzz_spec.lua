-- A randomized driver with a fixed seed (FUZZ_SEED, FUZZ_CALLS to vary it):
-- random arguments of every type and range into every function, and random
-- bytes scribbled over queue and event ring headers and rings, words written
-- over lock and state words (mutexes, the queue's writers' lock, the event
-- ring's publishers' lock, fresh-queue and fresh-ring init state)
-- between lock operations, semaphores (shm.sem) of both kinds driven with
-- random arguments (every wait with a zero or tiny timeout), and every method of every class called with a
-- `self` of another class (or io.stdout, a table, nil: these must raise).  It
-- runs in a child process so that a crash shows as a signal in the exit status,
-- in a scratch working directory (a number taken as a path makes no file in
-- the checkout); every call is pcall'ed, and errors are fine: only a crash (or
-- a hang) fails.
local H = require "helpers"

local DRIVER = [=[
local shm = require "shm"
local seed, calls, keys, names, paths = tonumber(arg[1]), tonumber(arg[2]), {}, {}, {}
local deadpid = tonumber(arg[6])
for k in arg[3]:gmatch("%d+") do keys[#keys + 1] = tonumber(k) end
for n in arg[4]:gmatch("%S+") do names[#names + 1] = n end
for p in arg[5]:gmatch("%S+") do paths[#paths + 1] = p end
math.randomseed(seed)
local R = math.random

local function pick(t) return t[R(#t)] end
local weird = {
  0, 1, -1, 2, 7, 8, 63, 64, 4095, 4096, 4097, -8, 1.5, -0.0, 0 / 0, math.huge, -math.huge,
  math.maxinteger or 2 ^ 63 - 1024, math.mininteger or -2 ^ 63,
  2 ^ 31, 2 ^ 32, 2 ^ 53, 2 ^ 63, -2 ^ 63, 0x7fffffff, 0xffffffff,
  "", "x", "0600", "777", "rw", "r", "w", "/", "/x", "a\0b", string.rep("z", 5000), "i4", "j",
  true, false, {}, print, coroutine.create(function() end), io.stdout,
}
local fmtchars = "bBhHlLjJTfdnszxXi1248c!<>=0123456789 "
local function randfmt()
  local t = {}
  for i = 1, R(0, 8) do local p = R(#fmtchars) t[i] = fmtchars:sub(p, p) end
  return table.concat(t)
end
local function value(seg)
  local r = R(10)
  if r <= 4 then return pick(weird) end
  if r <= 7 then
    local ok, size = pcall(function() return seg.size end) -- raises once detached
    return R(-16, (ok and size or 4096) + 16)
  end
  if r == 8 then return randfmt() end
  if r == 9 then return nil end
  return string.rep(string.char(R(0, 255)), R(0, 100))
end

local segs, queues, mutexes, rings, sems, made, failed = {}, {}, {}, {}, {}, 0, 0
local restore -- undoes a live lock word written over a queue's lock
local accepted = {} -- wrong-self calls that did not raise
local function call(f, ...)
  made = made + 1
  local ok = pcall(f, ...)
  if not ok then failed = failed + 1 end
end

-- lock words (pid | flags, tag) and mutex state words worth writing
local function starttag(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local t = {}
  for w in f:read("*a"):match("%) (.*)$"):gmatch("%S+") do t[#t + 1] = w end
  f:close()
  local v = tonumber(t[20]) % 2 ^ 32
  return v == 0 and 1 or v
end
local mypid = io.open("/proc/self/stat"):read("*n")
local mytag, inittag = starttag(mypid), starttag(1)
local function lockword(live)
  local r = R(live and 9 or 7)
  if r == 1 then return 0, 0 end
  if r == 2 then return deadpid, R(0, 2 ^ 32 - 1) end
  if r == 3 then return 0x3fffff00, 16 + 32 + 128 + 2 end
  if r == 4 then return 2 ^ 31 + R(0, 1) * 2 ^ 30, R(0, 9) end
  if r == 5 then return 1, inittag + 1 end
  if r == 6 then return mypid, 0 end
  if r == 7 then return R(0, 2 ^ 32 - 1), R(0, 2 ^ 32 - 1) end
  if r == 8 then return 1, inittag end         -- a live holder: waits time out
  return mypid, mytag                          -- this very process
end
local states = { "\0\0\0\0\0\0\0\0", "YDERMHSL", "\1\0\0\0MHSL", "x\0\0\0MHSL", "\255\255\255\255\255\255\255\255" }
local function stateword()
  local st = pick(states)
  if st:sub(1, 1) == "x" then st = string.pack and string.pack("<I4", mypid) .. "MHSL" or states[3] end
  return R(6) == 1 and string.char(R(0, 255)):rep(8) or st
end

-- every method of every class, called with a self of another kind
local classes = {
  segment = { "read", "write", "fill", "pack", "unpack", "stat", "remove", "detach", "sync",
              "chmod", "chown", "load", "store", "add", "cas", "wait", "notify", "mutex" },
  queue = { "push", "pop", "close", "stat", "remove", "detach", "segment" },
  mutex = { "lock", "trylock", "unlock" },
  events = { "publish", "subscribe", "stat", "remove", "detach", "segment" },
  subscriber = { "next" },
  sem = { "acquire", "release", "wait_zero", "setvalue", "stat", "chmod", "chown", "remove", "close" },
  dict = { "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace", "delete", "incr",
           "lpush", "rpush", "lpop", "rpop", "llen", "ttl", "expire", "flush_all", "flush_expired",
           "get_keys", "capacity", "free_space", "stat", "remove", "detach", "segment", "cas", "fetch" },
  lock = { "lock", "unlock", "expire" },
}
local instances = {} -- class -> a live object of it
local function wrongself()
  local kinds = {}
  for k in pairs(instances) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  if #kinds == 0 then return end
  local kind = pick(kinds)
  local obj = instances[kind]
  local name = pick(classes[kind])
  local ok, f = pcall(function() return obj[name] end)
  if not ok or type(f) ~= "function" then return end
  local selves = { io.stdout, {}, "x", 42, false, coroutine.create(function() end) }
  for k, o in pairs(instances) do if k ~= kind then selves[#selves + 1] = o end end
  local bad = selves[R(#selves + 1)] -- (one past the end: nil)
  made = made + 1
  if pcall(f, bad, value(), value(), 0) then accepted[#accepted + 1] = kind .. ":" .. name .. "(" .. type(bad) .. ")"
  else failed = failed + 1 end
  -- the metamethods, where a metatable is reachable (never through debug)
  local mt = getmetatable(obj)
  if type(mt) == "table" then
    for _, mm in ipairs({ "__gc", "__close", "__tostring", "__len", "__index" }) do
      if type(rawget(mt, mm)) == "function" then call(rawget(mt, mm), bad, "size") end
    end
  end
end

local function newseg()
  local r = R(3)
  local s
  if r == 1 then s = shm.open(pick(keys), "rw", R(8, 9000))
  elseif r == 2 then s = shm.open(pick(names), "rw", R(8, 9000))
  else s = shm.map(pick(paths), R(8, 9000)) end
  if s then
    segs[#segs + 1] = s
    instances.segment = s
  end
end

-- A queue's or an event ring's raw segment: random bytes over it, or (w 2)
-- its lock word, between lock operations (a live holder only on a header
-- with a magic, until the end of this step: openers of a fresh one (magic 0)
-- wait 5 s for it, as for an initialiser), or (w 3) the init state: a fresh
-- header, the lock word naming nobody alive, then an open of it.  Returns w.
local function scribble(raw, L, class, mincap)
  local w = R(8)
  if w == 1 then
    call(function() raw:write(string.char(R(0, 255)):rep(R(1, 9)), R(0, 1100)) end)
  elseif w == 2 then
    call(function() raw:pack(L.lock, "<I4I4", lockword(raw:unpack(L.magic, "<I8") ~= 0)) end)
    restore = function() raw:pack(L.lock, "<I4I4", 0, 0) end
  elseif w == 3 then
    call(function()
      raw:pack(L.magic, "<I8", 0)
      raw:pack(L.lock, "<I4I4", lockword(false))
    end)
    call(function()
      local o = class.open(raw.key or raw.name, R(2) == 1 and R(mincap, 3000) or nil)
      if o then o:detach() end
    end)
  end
  return w
end

local seg_methods = { "read", "write", "fill", "pack", "unpack", "stat", "load", "store", "add",
  "cas", "wait", "notify", "mutex", "sync", "chmod", "detach" }
if shm.dict then -- a dict, for the wrong-self calls
  local ok, d = pcall(shm.dict.create, shm.PRIVATE, 65536)
  if ok and d then pcall(d.remove, d) instances.dict = d end
end
-- shm.lock and d:fetch over that dict: random keys, options, callbacks, and
-- random values (tokens naming anyone, garbage) written over the locks' keys
local locks = {}
local lockkeys = { "k1", "k2", "shm.fetch k1", "shm.fetch k2", 7 }
local function lockstep(d)
  local lk = locks[R(math.max(1, #locks))]
  local op = R(8)
  local k = R(4) == 1 and value() or pick(lockkeys)
  if op == 1 or not lk then
    call(function()
      -- (bad options never a default timeout: 5 s waits for a held key)
      local opts = R(3) == 1 and pick({ 5, "x", { timeout = -1 }, { exptime = 0 / 0 }, { timeout = 0 } })
        or { exptime = R(0, 3) * 0.01, timeout = R(0, 1) * 0.001,
        step = value(), ratio = 2 }
      local l = shm.lock.new(R(10) == 1 and value() or d, opts)
      locks[#locks + 1] = l
      instances.lock = l
      if #locks > 6 then table.remove(locks, 1) end
    end)
  elseif op == 2 then call(function() return lk:lock(k, R(2) == 1 and value() or nil) end)
  elseif op == 3 then call(function() return lk:unlock() end)
  elseif op == 4 then call(function() return lk:expire(value()) end)
  elseif op == 5 then -- a holder's token naming someone (or nobody), or garbage
    call(function() -- (lockword's random ranges raise on 5.1: inside call)
      local pid, tag = lockword(R(2) == 1)
      local v = R(3) == 1 and value() or string.format("shm.lock %d %d x %d", pid, tag, R(9))
      return d:set(pick(lockkeys), v, R(0, 2) * 0.01, R(0, 1))
    end)
  elseif op == 6 then
    call(function()
      local bad = { 5, "x", { ttl = -1 }, { neg_ttl = "x" }, { lock_timeout = 0 } }
      return d:fetch(k, R(4) == 1 and pick(bad) or { ttl = R(0, 2) * 0.01, neg_ttl = value(),
        resurrect_ttl = R(2) == 1 and 0.01 or nil, lock_timeout = R(0, 1) * 0.001 },
        pick({ function() return value() end, function() error(value()) end, function() return nil, value() end,
               function() return d:fetch(k, { lock_timeout = 0 }, print) end, value }), value(), value())
    end)
  elseif op == 7 then
    call(function() return d:cas(k, value(), value(), value(), value(), value()) end)
  else
    call(function() return d:cas(k, value(), 0, 0, d:get(k)) end)
  end
end
for i = 1, calls do
  if #segs < 3 or R(50) == 1 then newseg() end
  local s = segs[R(#segs)]
  local r = R(100)
  if r <= 62 and s then
    local m = pick(seg_methods)
    local a, b, c = value(s), value(s), value(s)
    if m == "wait" then c = R(0, 1) * 0.001 end            -- never block for long
    if m == "chmod" and R(2) == 1 then a = "0600" end
    if m == "detach" and R(5) > 1 then m = "read" end
    if m == "pack" and R(2) == 1 then b = randfmt() end
    if m == "unpack" then b = randfmt() end
    if m == "mutex" then
      call(function()
        local mu = s:mutex(a)
        if mu then
          local ok = mu:trylock()
          if ok then mu:unlock() end
        end
      end)
    else
      call(function() return s[m](s, a, b, c, value(s)) end)
    end
    call(function() return s[pick({ "size", "kind", "readonly", "key", "id", "name", "path" })] end)
    call(function() return #s, tostring(s) end)
  elseif r <= 72 then
    -- module functions: keys and names only from our own pool (never someone else's)
    local f = pick({ "create", "open", "unlink", "attach", "map", "ftok", "list" })
    -- (a random integer or "/name" could be somebody else's segment: not those)
    local k = R(3) == 1 and pick(keys) or (R(2) == 1 and pick(names) or pick({ 1.5, {}, true, "x", "" }))
    if f == "attach" then k = pick({ -1, -5, 1.5, "x", {} }) end
    if f == "map" or f == "ftok" then k = R(2) == 1 and pick(paths) or pick({ 1.5, {}, true, "" }) end
    -- sizes stay small: a random 3 GiB segment is legal, but slow to read whole
    local size = R(2) == 1 and R(1, 20000) or pick({ 0, -1, 1.5, 0 / 0, math.huge, -2 ^ 63, "x", {} })
    call(function()
      local x = shm[f](k, f == "open" and pick({ "rw", "r", "w", 1 }) or size, f == "open" and size or value())
      if type(x) == "userdata" then segs[#segs + 1] = x end
    end)
  elseif r <= 78 then
    -- queues, and random bytes scribbled into their headers and rings
    if #queues < 2 then
      local q = shm.queue.open(pick(keys)) or shm.queue.create(pick(keys), R(16, 3000))
        or shm.queue.open(pick(names), R(16, 3000))
      if q then
        queues[#queues + 1] = { q = q, raw = assert(q:segment()) }
        instances.queue = q
      end
    end
    local e = queues[R(math.max(1, #queues))]
    if e then
      scribble(e.raw, shm.queue.layout, shm.queue, 16) -- (the writers' lock)
      local op = pick({ "push", "push", "pop", "pop", "stat", "close" })
      -- every blocking call with a zero timeout: a scribbled lock word may
      -- look held forever, which must give "timeout", not a hang
      call(function() return e.q[op](e.q, (op == "push" and value()) or 0, 0) end)
      call(function() return e.q:pop(0) end)
      call(function() return shm.queue.open(pick(keys)) end)
      if restore then call(restore) restore = nil end
      if R(30) == 1 then call(function() e.q:remove() end) e.q:detach() table.remove(queues, 1) end
    end
  elseif r <= 84 then
    -- event rings and their subscribers, random bytes scribbled into their
    -- headers and rings, words over the publishers' lock (as for queues)
    if #rings < 2 then
      local ev = shm.events.open(pick(keys)) or shm.events.create(pick(keys), R(32, 3000))
        or shm.events.open(pick(names), R(32, 3000))
      if ev then
        rings[#rings + 1] = { ev = ev, raw = assert(ev:segment()), subs = {} }
        instances.events = ev
      end
    end
    local e = rings[R(math.max(1, #rings))]
    if e then
      if scribble(e.raw, shm.events.layout, shm.events, 32) == 4 then -- (the publishers' lock)
        call(function()
          local sub = e.ev:subscribe(pick({ "next", "oldest", "x", 1, nil }))
          e.subs[#e.subs % 4 + 1] = sub
          instances.subscriber = sub
        end)
      end
      local op = pick({ "publish", "publish", "next", "next", "stat", "subscribe" })
      local sub = e.subs[R(math.max(1, #e.subs))]
      if op == "next" and sub then
        call(function() return sub:next(pick({ 0, 0, -1, "x", 0.001 })) end)
      else
        -- a publish waits for the lock with a zero timeout (a scribbled lock
        -- word may look held forever)
        call(function()
          return e.ev[op](e.ev, R(2) == 1 and string.rep("e", R(0, 3100)) or value(), 0)
        end)
      end
      call(function() return shm.events.open(pick(keys)) end)
      if restore then call(restore) restore = nil end
      if R(30) == 1 then call(function() e.ev:remove() end) e.ev:detach() table.remove(rings, 1) end
    end
  elseif r <= 91 and s then
    -- mutexes, with words written over their state and lock words between lock operations
    call(function()
      -- (in a queue's header only now and then, and never on its lock word: a
      -- live lock word there makes openers of a fresh queue wait 5 s for an
      -- initialiser)
      local off = 8 * R(0, 40) + (R(4) == 1 and 0 or 1024)
      if off + 8 == shm.queue.layout.lock then off = off + 8 end
      local mu = s:mutex(off)
      mutexes[#mutexes + 1] = { m = mu, s = s, off = off }
      instances.mutex = mu
      if #mutexes > 8 then table.remove(mutexes, 1) end
    end)
    local e = mutexes[R(math.max(1, #mutexes))]
    if e then
      local op = R(6)
      if op == 1 then call(function() return e.m:lock(pick({ 0, 0.001 })) end)
      elseif op == 2 then call(function() return e.m:trylock() end)
      elseif op == 3 then call(function() return e.m:unlock() end)
      elseif op == 4 then call(function() e.s:pack(e.off + 8, "<I4I4", lockword(e.off >= 1024)) end)
      elseif op == 5 then call(function() e.s:write(stateword(), e.off) end)
      else call(function() return e.s:mutex(e.off) end) end -- init on whatever is there
    end
  elseif r <= 93 then
    wrongself()
  elseif r <= 96 then
    -- semaphores: made and opened from our pool, every method with random arguments
    if #sems < 3 or R(20) == 1 then
      local f = pick({ "create", "open", "open", "attach", "unlink", "list" })
      local k = R(2) == 1 and pick(keys) or (R(3) > 1 and pick(names) or pick({ 1.5, {}, true, "x", "", "/" }))
      if f == "attach" then k = pick({ -1, 1.5, "x", {}, 2 ^ 31 }) end
      call(function()
        local x = shm.sem[f](k, R(2) == 1 and R(0, 40000) or value(), R(2) == 1 and "0600" or value())
        if type(x) == "userdata" then
          sems[#sems + 1] = x
          instances.sem = x
          if #sems > 6 then table.remove(sems, 1) end
        end
      end)
    end
    local x = sems[R(math.max(1, #sems))]
    if x then
      local m = pick(classes.sem)
      local a, b = value(), value()
      if m == "acquire" or m == "wait_zero" then a = pick({ 0, 0.001, 0, -1, 0 / 0, "x" }) end
      if m == "acquire" and R(2) == 1 then b = R(-2, 40000) end
      if m == "release" and R(2) == 1 then a = R(-2, 40000) end
      if (m == "remove" or m == "close") and R(4) > 1 then m = "stat" end
      call(function() return x[m](x, a, b) end)
      call(function() x.undo = pick({ true, false, value() }) end)
      call(function() x[pick({ "value", "kind", "key", "id", "index", "name" })] = value() end)
      call(function() return x[pick({ "value", "undo", "kind", "key", "id", "index", "name", "nope" })] end)
      call(function() return tostring(x) end)
    end
  elseif r <= 98 then
    if instances.dict then lockstep(instances.dict) end
  else
    collectgarbage("step")
    if #segs > 6 then
      local s = table.remove(segs, 1)
      pcall(s.remove, s)
      pcall(s.detach, s)
    end
  end
end
mutexes, instances, locks = nil, nil, nil
collectgarbage()
for _, e in ipairs(queues) do pcall(e.q.remove, e.q) pcall(e.q.detach, e.q) end
for _, e in ipairs(rings) do pcall(e.ev.remove, e.ev) pcall(e.ev.detach, e.ev) end
for _, s in ipairs(segs) do pcall(s.remove, s) pcall(s.detach, s) end
for _, x in ipairs(sems) do pcall(x.close, x) end
for _, k in ipairs(keys) do shm.sem.unlink(k) end
for _, n in ipairs(names) do shm.sem.unlink(n) end
collectgarbage()
io.write("accepted: ", table.concat(accepted, " "), "\n")
io.write(string.format("calls=%d raised=%d", made, failed))
]=]

describe("fuzzing", function()
  after_each(H.cleanup)

  it("survives random arguments and scribbled queues and event rings without a crash", function()
    local seed = tonumber(os.getenv("FUZZ_SEED") or "20261123")
    local calls = tonumber(os.getenv("FUZZ_CALLS") or "150000")
    local keys, names, paths = {}, {}, {}
    for i = 1, 4 do keys[i] = H.key() names[i] = H.name() end
    for i = 1, 2 do paths[i] = H.tmpfile() end
    -- the pid of a process that has exited, for lock words naming a dead owner
    local deadpid = tonumber((H.run([[io.write(io.open("/proc/self/stat"):read("*n"))]])))
    -- a scratch working directory, removed afterwards
    local dir = os.tmpname()
    os.remove(dir)
    assert(H.exec("mkdir -m 0700 " .. H.shellquote(dir)))
    finally(function() H.exec("rm -rf " .. H.shellquote(dir)) end)
    local out, rc = H.run(DRIVER, { seed, calls, table.concat(keys, " "), table.concat(names, " "),
                                    table.concat(paths, " "), deadpid },
                          { interpreter = "sh -c 'cd " .. dir .. " && exec \"$0\" \"$@\"' " .. H.lua })
    assert.equal(0, rc, out:sub(-2000))
    assert.equal("accepted: ", out:match("accepted: [^\n]*"), "methods that took a wrong self")
    local made, raised = out:match("calls=(%d+) raised=(%d+)$")
    assert.is_truthy(made, out:sub(-500))
    assert.is_true(tonumber(made) >= calls, "too few calls ran")
    assert.is_true(tonumber(raised) > 0 and tonumber(raised) < tonumber(made))
    print(string.format("\n    fuzz passed: seed %d, %s calls (%s raised an error, as they must), no crash",
      seed, made, raised))
  end)
end)
