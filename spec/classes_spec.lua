-- Types cannot be forged: every check rests on metatable identity, and no
-- metatable of ours is reachable from Lua (issue 12 item 1).  The attempts run
-- in a child process, so that a crash shows as a signal in its exit status.
local shm = require "shm"
local H = require "helpers"

-- Every method a segment has (atomics, pack/unpack and the mutex constructor
-- live on it too), with arguments a real segment would accept.
local SEGMENT_CALLS = [[
local unpack = table.unpack or unpack
local CALLS = {
  { "read", 0, 1 }, { "write", "x", 0 }, { "fill", 0, 0, 1 }, { "pack", 0, "i4", 1 },
  { "unpack", 0, "i4" }, { "stat" }, { "remove" }, { "detach" }, { "sync" },
  { "chmod", "0600" }, { "chown", 0, 0 }, { "load", 0 }, { "store", 0, 1 }, { "add", 0, 1 },
  { "cas", 0, 0, 1 }, { "wait", 0, 1, 0 }, { "notify", 0 }, { "mutex", 64 },
}
]]

describe("classes", function()
  after_each(H.cleanup)

  it("the reproducer of issue 12 item 1 raises an error, no signal", function()
    -- exactly as reported (1 << 40 where the operator exists, 2 ^ 40 before 5.3)
    local big = H.int64 and "1 << 40" or "2 ^ 40"
    local out, rc = H.run([[
      local shm = require "shm"
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      local k; for x in pairs(getmetatable(seg)) do if type(x)=="userdata" then k=x end end
      getmetatable(io.stdout)[k] = true
      seg.read(io.stdout, ]] .. big .. [[, 16)          -- SIGSEGV
    ]])
    assert.equal(1, rc, out) -- a Lua error: pairs() gets the class name, not a table
    assert.matches("table expected, got string", out)
  end)

  it("hides every metatable: getmetatable gives the class name", function()
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    seg:remove()
    assert.equal("shm.segment", getmetatable(seg))
    local _ = seg.size -- (an attached segment has a metatable of its own once indexed)
    assert.equal("shm.segment", getmetatable(seg))
    seg:detach()
    assert.equal("shm.segment", getmetatable(seg))
    assert.has_error(function() setmetatable(seg, {}) end)
  end)

  it("refuses every other object as self of every segment method", function()
    local out, rc = H.run(SEGMENT_CALLS .. [=[
      local shm = require "shm"
      local seg = assert(shm.create(shm.PRIVATE, 4096)); seg:remove()
      local q = assert(shm.queue.create(shm.PRIVATE, 64)); q:remove()
      local m = seg:mutex(0)
      local dict = assert(shm.dict.create(shm.PRIVATE, 64 * 1024)); dict:remove()
      local detached = assert(shm.create(shm.PRIVATE, 64)); detached:remove(); detached:detach()
      local others = { queue = q, mutex = m, dict = dict, stdout = io.stdout, table = {}, ["nil"] = false,
                       number = 42, string = "/x", ["function"] = print }
      local bad, tried = 0, 0
      local function try(what, f, ...)
        tried = tried + 1
        local ok, err = pcall(f, ...)
        if ok or not tostring(err):match("shm%.segment expected") then
          bad = bad + 1
          print(what, ok, err)
        end
      end
      for _, c in ipairs(CALLS) do
        local f = seg[c[1]]
        assert(type(f) == "function", c[1])
        for name, other in pairs(others) do
          if other == false then other = nil end
          try(c[1] .. "(" .. name .. ")", f, other, unpack(c, 2))
        end
        -- a detached segment is still a segment: a clean error of its own
        local ok, err = pcall(f, detached, unpack(c, 2))
        if c[1] ~= "detach" and (ok or not err:match("detached")) then bad = bad + 1 print(c[1], err) end
      end
      -- the metamethods, through the debug library (Lua code cannot reach them)
      -- (an attached segment's own metatable and the class's, a detached one's)
      for _, mt in ipairs({ debug.getmetatable(seg), debug.getmetatable(detached) }) do
        for _, k in ipairs({ "__len", "__tostring", "__index", "__gc", "__close" }) do
          if type(mt[k]) == "function" then
            for name, other in pairs(others) do
              if other == false then other = nil end
              try(k .. "(" .. name .. ")", mt[k], other, "read")
            end
          end
        end
      end
      m = nil
      dict:detach()
      q:detach()
      collectgarbage()
      seg:detach()
      io.write(string.format("tried=%d bad=%d", tried, bad))
    ]=])
    assert.equal(0, rc, out)
    local tried = tonumber(out:match("tried=(%d+) bad=0$"))
    assert.is_truthy(tried, out)
    assert.is_true(tried >= 18 * 8 + 2 * 3 * 8 + 8, out)
  end)

  it("refuses segments and foreign objects as self of mutex and queue methods", function()
    local out, rc = H.run([[
      local shm = require "shm"
      local seg = assert(shm.create(shm.PRIVATE, 4096)); seg:remove()
      local q = assert(shm.queue.create(shm.PRIVATE, 64)); q:remove()
      local m = seg:mutex(0)
      local bad, tried = 0, 0
      for cname, obj in pairs({ mutex = m, queue = q }) do
        local methods = debug.getmetatable(obj).__index
        assert(type(methods) == "table", cname)
        for mname, f in pairs(methods) do
          for oname, other in pairs({ segment = seg, stdout = io.stdout, table = {}, number = 1,
                                      mutex = m, queue = q }) do
            if other ~= obj and oname ~= cname then
              tried = tried + 1
              local ok, err = pcall(f, other, 0, 0)
              if ok or not tostring(err):match("expected") then
                bad = bad + 1
                print(cname .. ":" .. mname .. "(" .. oname .. ")", ok, err)
              end
            end
          end
        end
      end
      q:detach()
      io.write(string.format("tried=%d bad=%d", tried, bad))
    ]])
    assert.equal(0, rc, out)
    assert.matches("tried=%d+ bad=0$", out)
  end)

  -- Lua 5.4 only (compiled from a string so that this file parses everywhere)
  if H.lua54 then it("a segment closed by <close> leaves no metatable on nil", function()
    local seg = assert(shm.create(shm.PRIVATE, 64))
    seg:remove()
    H.load([[
      local s <close> = ...
    ]])(seg)
    assert.is_nil(debug.getmetatable(nil))
    assert.error_matches(function() return seg.size end, "detached")
  end) end
end)
