-- A kill at every instruction of every write path of shm.dict.
--
-- For each call below, a writer (a child Lua process) builds a dict in a
-- file map, then makes the call single-stepped under ptrace
-- (spec/dict_steps.c, compiled here with cc): after each instruction the
-- dict's bytes are compared with the last image and every new image is
-- logged; then the writer is killed. A kill at any instruction leaves one of
-- these images (a killed process's stores are all in memory). Each image is
-- then written to a fresh file and mapped by this process, which checks:
--   * the next operation (a reader, or stat) recovers it (the lock names the
--     dead writer);
--   * d:stat() validates the whole structure;
--   * every key holds its value from before the call or from after it
--     (the key changed: old or new; the others: unchanged, or evicted);
--   * nothing leaked: once everything is popped, flushed and freed, the free
--     space is a new dict's.
-- Lua 5.4 only (the checker reads the log with string.unpack); pending where
-- cc or ptrace is missing. SHM_PROVE=1 (make prove): every call listed, not
-- only the main paths.
local shm = require "shm"
local H = require "helpers"
local S = require "dictseq"

local q = H.shellquote
local sunpack = string.unpack -- luacheck: ignore 143 (5.3+: this spec runs under 5.4 only)

local function why_not()
  if not H.lua54 then return "Lua 5.4 only (the checker reads the log with string.unpack)" end
  if not H.exec("command -v cc >/dev/null 2>&1") then return "cc is missing" end
end

local ALL = os.getenv("SHM_PROVE") == "1"
local FEW = H.valgrind -- (under valgrind, the checker in-process: two calls only)

-- the calls: setup (before the kill points) and call (stepped); `main`: in the
-- bounded run
local K = 64 * 1024
local CALLS = {
  { name = "set (new key)", main = true, few = true,
    setup = 'for i = 1, 20 do d:set("k" .. i, "v" .. i) end', call = 'd:set("new", "fresh value")' },
  { name = "set (in place)", main = true,
    setup = 'for i = 1, 20 do d:set("k" .. i, "v" .. i) end', call = 'd:set("k5", "w5")' },
  { name = "set (resized)", main = true,
    setup = 'for i = 1, 20 do d:set("k" .. i, "v" .. i) end local v = string.rep("z", 300)',
    call = 'd:set("k5", v)' },
  { name = "set (over a list)", main = true,
    setup = 'd:set("a", 1) for i = 1, 10 do d:rpush("l", "e" .. i) end d:set("b", 2)', call = 'd:set("l", "s")' },
  { name = "add", setup = 'd:set("a", 1)', call = 'd:add("b", 2, 1000, 7)' },
  { name = "replace", setup = 'd:set("a", 1) d:set("b", "x")', call = 'd:replace("a", "longer value than before")' },
  { name = "delete", main = true, setup = 'for i = 1, 20 do d:set("k" .. i, "v" .. i) end', call = 'd:delete("k7")' },
  { name = "incr", main = true, setup = 'd:set("n", 41) d:set("x", "y")', call = 'd:incr("n", 1)' },
  { name = "incr (init)", setup = 'd:set("x", "y")', call = 'd:incr("n", 1, 10, 1000)' },
  { name = "lpush (new)", setup = 'd:set("x", "y")', call = 'd:lpush("l", "v")' },
  { name = "rpush", main = true, few = true,
    setup = 'd:set("x", "y") for i = 1, 5 do d:rpush("l", i) end', call = 'd:rpush("l", "tail")' },
  { name = "lpop", main = true, setup = 'd:set("x", "y") for i = 1, 5 do d:rpush("l", i) end', call = 'd:lpop("l")' },
  { name = "rpop (the last)", setup = 'd:set("x", "y") d:rpush("l", "only")', call = 'd:rpop("l")' },
  { name = "rpush (onto an expired string)", main = true,
    setup = 'd:set("x", "y") d:set("s", "old", 0.001) pause(0.01) d:set("z", 1)', call = 'd:rpush("s", "v")' },
  { name = "lpush (onto an expired list)",
    setup = 'for i = 1, 10 do d:rpush("l", i) end d:expire("l", 0.001) d:set("x", 1) pause(0.01) d:set("z", 1)',
    call = 'd:lpush("l", "v")' },
  { name = "cas", main = true,
    setup = 'd:set("a", 1) d:set("t", "old value") d:set("z", 2)',
    call = 'assert(d:cas("t", "new and longer value", 0, 3, "old value"))' },
  { name = "cas (delete)", setup = 'd:set("a", 1) d:set("t", "token") d:set("z", 2)',
    call = 'assert(d:cas("t", nil, 0, 0, "token"))' },
  { name = "expire", setup = 'd:set("a", 1) d:set("b", 2)', call = 'd:expire("a", 1000)' },
  { name = "flush_all", setup = 'for i = 1, 10 do d:set("k" .. i, i) end d:rpush("l", 1)', call = 'd:flush_all()' },
  { name = "flush_expired", main = true,
    setup = 'for i = 1, 6 do d:set("e" .. i, i, 0.001) end d:set("live", 1) pause(0.01)',
    call = 'd:flush_expired()' },
  { name = "set (evicting)", main = true, cap = 16 * 1024,
    setup = 'for i = 1, 100 do if not d:safe_set("f" .. i, string.rep("x", 400)) then break end end '
      .. 'local v = string.rep("y", 1500)',
    call = 'assert(select(3, d:set("new", v)))' },
  { name = "set (evicting a list)", cap = 16 * 1024,
    setup = 'for i = 1, 10 do d:rpush("l", "e" .. i) end '
      .. 'for i = 1, 100 do if not d:safe_set("f" .. i, string.rep("x", 400)) then break end end '
      .. 'local v = string.rep("y", 1500)',
    call = 'assert(select(3, d:set("new", v)))' },
  { name = "set (evicting past read keys and a 20-element list)", cap = 16 * 1024,
    setup = 'for i = 1, 20 do d:rpush("l", "e" .. i) end '
      .. 'for i = 1, 400 do if not d:safe_set("f" .. i, string.rep("x", 20)) then break end end '
      .. 'for i = 1, 400 do d:get("f" .. i) end local v = string.rep("y", 1500)',
    call = 'assert(select(3, d:set("new", v)))' },
  { name = "incr (init, onto an expired key)",
    setup = 'd:set("x", "y") d:set("n", 5, 0.001) pause(0.01) d:set("z", 1)', call = 'd:incr("n", 1, 0)' },
  { name = "lpush (onto an expired 100-element list)",
    setup = 'for i = 1, 100 do d:rpush("l", i) end d:expire("l", 0.001) d:set("x", 1) pause(0.01) d:set("z", 1)',
    call = 'd:lpush("l", "v")' },
  { name = "safe_set (failing: no memory)", cap = 16 * 1024,
    setup = 'for i = 1, 100 do if not d:safe_set("f" .. i, string.rep("x", 400)) then break end end '
      .. 'local v = string.rep("y", 3000)',
    call = 'assert(not d:safe_set("new", v))' },
  { name = "lpush (onto an expired key, failing: no memory)",
    setup = 'd:set("pad", 1) d:set("s", "x", 0.001) pause(0.01) local v = string.rep("v", 2 ^ 20)',
    call = 'assert(not d:lpush("s", v))' },
  { name = "delete (a 100-element list)",
    setup = 'd:set("a", 1) for i = 1, 100 do d:rpush("l", "e" .. i) end', call = 'd:delete("l")' },
  { name = "flush_all (a 100-element list)",
    setup = 'for i = 1, 100 do d:rpush("l", "e" .. i) end d:set("a", 1)', call = 'd:flush_all() d:set("b", 1)' },
}

local WRITER = [[
local shm = require "shm"
local d = assert(shm.dict.map(arg[1]))
local function pause(s) local t = shm.create(shm.PRIVATE, 8) t:remove() t:wait(0, 0, s) t:detach() end
SETUP
local f = assert(io.open("/proc/self/stat"))
local stop = "kill -STOP " .. f:read("*n")
f:close()
os.execute(stop)
CALL
os.execute(stop)
]]

-- everything a dict holds (lists popped: this destroys the copy it reads)
local function dump(d)
  local t = {}
  for _, k in ipairs(d:get_keys(0)) do
    local v, flags = d:get(k)
    if flags == "value is a list" then
      local items = {}
      for _ = 1, 1000000 do
        local x = d:lpop(k)
        if x == nil then break end
        items[#items + 1] = S.canon(x)
      end
      t[k] = "list[" .. table.concat(items, ",") .. "]"
    else
      t[k] = S.canon(v) .. "/" .. tostring(flags)
    end
  end
  return t
end

local function readfile(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

describe("shm.dict killed at every instruction", function()
  local why = why_not()
  if why then
    it("(skipped)", function() pending(why) end)
    return
  end
  local dir, tracer
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(H.exec("mkdir -m 0700 " .. q(dir)))
    tracer = dir .. "/dict_steps"
    local out, rc = H.sh("cc -std=c11 -O2 -Wall -Wextra -Werror -o " .. q(tracer) .. " "
      .. q(H.root .. "/spec/dict_steps.c"))
    assert(rc == 0, out)
  end)
  teardown(function()
    if dir then H.exec("rm -rf " .. q(dir)) end
    H.cleanup()
  end)

  local totals = { calls = 0, images = 0, steps = 0 }

  local function prove(c)
    local cap = c.cap or K
    local path, check, log = dir .. "/dict", dir .. "/check", dir .. "/log"
    os.remove(path)
    local d0 = assert(shm.dict.map(path, cap))
    d0:detach()
    local size = math.max(#readfile(path), cap) -- (the most the file may grow to)
    -- a new dict's free space
    os.remove(check)
    local e = assert(shm.dict.map(check, cap))
    local empty = e:free_space()
    e:detach()
    -- the writer, stepped
    local script = H.script((WRITER:gsub("SETUP", function() return c.setup end)
      :gsub("CALL", function() return c.call end)))
    local cmd = "env -u LD_PRELOAD " .. q(tracer) .. " " .. q(path) .. " " .. size .. " " .. q(log) .. " -- "
      .. (os.getenv("LD_PRELOAD") and ("env LD_PRELOAD=" .. q(os.getenv("LD_PRELOAD")) .. " ") or "")
      .. H.command({ script, path })
    local out, rc = H.sh(cmd)
    os.remove(script)
    if rc ~= 0 and out:match("PTRACE_TRACEME") then pending("ptrace is not allowed here: " .. out) return end
    assert(rc == 0, out)
    local steps, nimages = out:match("steps (%d+) images (%d+)")
    assert(steps, out)
    -- the images: image 0 whole, then the changes
    local blob = readfile(log)
    assert(blob:sub(1, 4) == "DSTP")
    local pos, cur = 9, ""
    local images = {}
    while pos <= #blob do
      local step, length, n
      step, length, n, pos = sunpack("<I4I4I4", blob, pos)
      -- (the file may have grown or shrunk)
      cur = #cur < length and cur .. string.rep("\0", length - #cur) or cur:sub(1, length)
      for _ = 1, n do
        local off, len
        off, len, pos = sunpack("<I4I4", blob, pos)
        local bytes = blob:sub(pos, pos + len - 1)
        pos = pos + len
        cur = cur:sub(1, off) .. bytes .. cur:sub(off + len + 1)
      end
      images[#images + 1] = { step = step, bytes = cur }
    end
    assert.equal(tonumber(nimages), #images)
    local function load(img)
      writefile(check, img.bytes)
      return assert(shm.dict.map(check))
    end
    local before, after
    do
      local d = load(images[1]) before = dump(d) d:detach()
      d = load(images[#images]) after = dump(d) d:detach()
    end
    local base = (function() local d = load(images[1]) local r = d:stat().recovered d:detach() return r end)()
    local takeovers = 0
    for i, img in ipairs(images) do
      local where = string.format("%s: killed after instruction %d (image %d of %d)", c.name, img.step, i, #images)
      local d = load(img)
      local ok, err = pcall(function()
        -- the next operation: a reader (every other image), then stat, which
        -- recovers (the writer is dead) and checks the whole structure
        if i % 2 == 0 then d:get("k1") end
        if d:stat().recovered > base then takeovers = takeovers + 1 end
        local now = dump(d)
        for k, v in pairs(now) do
          assert(v == before[k] or v == after[k], "key " .. k .. " holds " .. v:sub(1, 60) .. ", neither old nor new")
        end
        for k, v in pairs(before) do
          assert(now[k] ~= nil or after[k] == nil, "key " .. k .. " lost its value " .. v:sub(1, 60))
        end
        for k, v in pairs(after) do
          assert(now[k] ~= nil or before[k] == nil, "key " .. k .. " lost its value " .. v:sub(1, 60))
        end
        d:flush_all()
        d:flush_expired(0)
        d:stat()
        assert(d:free_space() == empty, "leaked: " .. empty - d:free_space() .. " bytes")
      end)
      d:detach()
      if not ok then error(where .. ": " .. tostring(err), 0) end
    end
    assert.is_true(takeovers > 0, "no image held the lock")
    totals.calls = totals.calls + 1
    totals.images = totals.images + #images
    totals.steps = totals.steps + tonumber(steps)
    print(string.format("\n    %-32s %6d instructions, %4d images checked (%d with the lock taken over)", c.name,
      tonumber(steps), #images, takeovers))
  end

  for _, c in ipairs(CALLS) do
    if ALL or (c.main and not FEW) or (FEW and c.few) then
      it(c.name, function() prove(c) end)
    end
  end

  it("(totals)", function()
    print(string.format("\n    kill points: %d calls, %d instructions stepped, %d images checked",
      totals.calls, totals.steps, totals.images))
    assert.is_true(totals.calls > 0)
  end)
end)
