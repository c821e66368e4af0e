-- A randomized driver with a fixed seed (FUZZ_SEED, FUZZ_CALLS to vary it):
-- random arguments of every type and range into every function, and random
-- bytes scribbled over queue headers and rings.  It runs in a child process so
-- that a crash shows as a signal in the exit status; every call is pcall'ed,
-- and errors are fine: only a crash (or a hang) fails.
local H = require "helpers"

local DRIVER = [=[
local shm = require "shm"
local seed, calls, keys, names, paths = tonumber(arg[1]), tonumber(arg[2]), {}, {}, {}
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

local segs, queues, made, failed = {}, {}, 0, 0
local function call(f, ...)
  made = made + 1
  local ok = pcall(f, ...)
  if not ok then failed = failed + 1 end
end

local function newseg()
  local r = R(3)
  local s
  if r == 1 then s = shm.open(pick(keys), "rw", R(8, 9000))
  elseif r == 2 then s = shm.open(pick(names), "rw", R(8, 9000))
  else s = shm.map(pick(paths), R(8, 9000)) end
  if s then segs[#segs + 1] = s end
end

local seg_methods = { "read", "write", "fill", "pack", "unpack", "stat", "load", "store", "add",
  "cas", "wait", "notify", "mutex", "sync", "chmod", "detach" }
for i = 1, calls do
  if #segs < 3 or R(50) == 1 then newseg() end
  local s = segs[R(#segs)]
  local r = R(100)
  if r <= 70 and s then
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
  elseif r <= 80 then
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
  elseif r <= 95 then
    -- queues, and random bytes scribbled into their headers and rings
    if #queues < 2 then
      local q = shm.queue.open(pick(keys)) or shm.queue.create(pick(keys), R(16, 3000))
      if q then queues[#queues + 1] = { q = q, raw = assert(q:segment()) } end
    end
    local e = queues[R(math.max(1, #queues))]
    if e then
      if R(4) == 1 then
        call(function() e.raw:write(string.char(R(0, 255)):rep(R(1, 9)), R(0, 1100)) end)
      end
      local op = pick({ "push", "push", "pop", "pop", "stat", "close" })
      -- every blocking call with a zero timeout: a scribbled lock word may
      -- look held forever, which must give "timeout", not a hang
      call(function() return e.q[op](e.q, (op == "push" and value()) or 0, 0) end)
      call(function() return e.q:pop(0) end)
      call(function() return shm.queue.open(pick(keys)) end)
      if R(30) == 1 then call(function() e.q:remove() end) e.q:detach() table.remove(queues, 1) end
    end
  else
    collectgarbage("step")
    if #segs > 6 then
      local s = table.remove(segs, 1)
      pcall(s.remove, s)
      pcall(s.detach, s)
    end
  end
end
for _, e in ipairs(queues) do pcall(e.q.remove, e.q) pcall(e.q.detach, e.q) end
for _, s in ipairs(segs) do pcall(s.remove, s) pcall(s.detach, s) end
collectgarbage()
io.write(string.format("calls=%d raised=%d", made, failed))
]=]

describe("fuzzing", function()
  after_each(H.cleanup)

  it("survives random arguments and scribbled queues without a crash", function()
    local seed = tonumber(os.getenv("FUZZ_SEED") or "20261123")
    local calls = tonumber(os.getenv("FUZZ_CALLS") or "150000")
    local keys, names, paths = {}, {}, {}
    for i = 1, 4 do keys[i] = H.key() names[i] = H.name() end
    for i = 1, 2 do paths[i] = H.tmpfile() end
    local out, rc = H.run(DRIVER, { seed, calls, table.concat(keys, " "), table.concat(names, " "),
                                    table.concat(paths, " ") })
    assert.equal(0, rc, out:sub(-2000))
    local made, raised = out:match("calls=(%d+) raised=(%d+)$")
    assert.is_truthy(made, out:sub(-500))
    assert.is_true(tonumber(made) >= calls, "too few calls ran")
    assert.is_true(tonumber(raised) > 0 and tonumber(raised) < tonumber(made))
    print(string.format("\n    fuzz: seed %d, %s calls, %s raised an error, no crash", seed, made, raised))
  end)
end)
