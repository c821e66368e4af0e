-- The segment object: data access, argument checking, lifecycle.
local shm = require "shm"
local H = require "helpers"

-- one segment of each kind, made fresh for every test
local function each_kind(body)
  for _, kind in ipairs({ "sysv", "posix", "file" }) do
    describe(kind, function()
      local seg
      before_each(function()
        if kind == "sysv" then seg = assert(shm.create(H.key(), 1000))
        elseif kind == "posix" then seg = assert(shm.create(H.name(), 1000))
        else seg = assert(shm.map(H.tmpfile(), 1000)) end
      end)
      after_each(function()
        if seg then pcall(seg.remove, seg); seg:detach() end
        H.cleanup()
      end)
      body(function() return seg end, kind)
    end)
  end
end

describe("segment", function()
  each_kind(function(get, kind)
    it("writes and reads back at 0-based offsets, write is chainable", function()
      local seg = get()
      assert.equal(seg, seg:write("abc", 0):write("XYZ", 997))
      assert.equal("abc", seg:read(0, 3))
      assert.equal("XYZ", seg:read(997))
      assert.equal("", seg:read(1000))
      assert.equal(1000, #seg:read())
      assert.equal("bc", seg:read(1, 2))
    end)

    it("fills ranges with a byte value or a character", function()
      local seg = get()
      seg:fill(0x41):fill("b", 10, 5)
      assert.equal("AAAAAAAAAAbbbbbA", seg:read(0, 16))
      seg:fill(0, 995)
      assert.equal("\0\0\0\0\0", seg:read(995))
    end)

    it("has its fields, length and string form", function()
      local seg = get()
      assert.equal(1000, seg.size)
      assert.equal(1000, #seg)
      assert.equal(kind, seg.kind)
      assert.is_false(seg.readonly)
      assert.matches("^shm%.segment%(" .. kind .. " .* size=1000 rw%)$", tostring(seg))
      if kind == "sysv" then
        assert.is_number(seg.key); assert.is_number(seg.id)
        assert.is_nil(seg.name); assert.is_nil(seg.path)
      elseif kind == "posix" then
        assert.matches("^/lshm%-spec", seg.name); assert.is_nil(seg.key); assert.is_nil(seg.path)
      else
        assert.matches("^/", seg.path); assert.is_nil(seg.name); assert.is_nil(seg.id)
      end
      assert.is_nil(seg.nosuchfield)
    end)

    it("stats with the common fields", function()
      local st = get():stat()
      assert.equal(kind, st.kind)
      assert.equal(1000, st.size)
      assert.equal(384, st.mode)
      assert.equal(0, st.uid)
      assert.equal(0, st.gid)
    end)

    it("raises on out-of-range, negative, fractional and overflowing offsets", function()
      local seg = get()
      assert.error_matches(function() seg:read(-1) end, "offset %-1 out of range")
      assert.error_matches(function() seg:read(1001) end, "out of range")
      assert.error_matches(function() seg:read(1.5) end, "integer representation")
      assert.error_matches(function() seg:read(0 / 0) end, "integer representation")
      assert.error_matches(function() seg:read(math.huge) end, "integer representation")
      assert.error_matches(function() seg:read(H.maxint) end, "out of range")
      assert.error_matches(function() seg:read(H.minint) end, "out of range")
      assert.error_matches(function() seg:read(10, H.maxint) end, "length .* out of range")
      assert.error_matches(function() seg:read(999, 2) end, "out of range")
      assert.error_matches(function() seg:read(0, -1) end, "out of range")
      assert.error_matches(function() seg:read("x") end, "integer expected")
      assert.error_matches(function() seg:fill(1, 500, 501) end, "out of range")
      assert.error_matches(function() seg:write("x", -1) end, "out of range")
    end)

    it("never truncates: a write that does not fit raises and writes nothing", function()
      local seg = get()
      assert.error_matches(function() seg:write("0123456789", 995) end,
        "write of 10 bytes at offset 995 does not fit %(segment size 1000%)")
      assert.equal(string.rep("\0", 5), seg:read(995))
      assert.error_matches(function() seg:write(string.rep("x", 1001)) end, "does not fit")
    end)

    it("checks argument types", function()
      local seg = get()
      assert.error_matches(function() seg:write() end, "string expected")
      assert.error_matches(function() seg:write({}) end, "string expected")
      assert.error_matches(function() seg:fill(256) end, "byte value out of range")
      assert.error_matches(function() seg:fill("ab") end, "one%-character")
      assert.error_matches(function() seg.read({}) end, "shm.segment expected")
      assert.error_matches(function() seg.read(io.stdout) end, "shm.segment expected")
      assert.error_matches(function() seg:chmod("0999") end, "octal")
      assert.error_matches(function() seg:chmod(01000) end, "mode out of range")
      assert.error_matches(function() seg:chmod() end, "value expected")
    end)

    it("packs and unpacks string.pack formats in place", function()
      local seg = get()
      local fmt = "<i4 >I2 j n s1 z c5 b B h d f"
      local args = { -7, 65535, H.minint, 3.25, "len", "zero", "ab", -128, 255, -2, 1e300, 0.5 }
      local nxt = seg:pack(10, fmt, H.unpack(args))
      -- string.pack's bytes (Lua 5.3+; spelled out, so that 5.1 checks them too)
      local expect = ("f9ffffffffff8000000000000000400a000000000000036c656e7a65726f00616200000080fffffe" ..
        "7e37e43c8800759c3f000000"):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      if string.pack then assert.equal(string.pack(fmt, H.unpack(args)), expect) end
      assert.equal(10 + #expect, nxt)
      assert.equal(expect, seg:read(10, #expect))
      local got = { seg:unpack(10, fmt) }
      assert.equal(nxt, table.remove(got))
      args[7] = "ab\0\0\0"
      assert.same(args, got)
    end)

    it("aligns pack with ! and X relative to the segment start", function()
      local seg = get()
      local nxt = seg:pack(1, "!8 b j Xi4 b", 1, 2, 3)
      assert.equal(1 + 17 - 1, nxt) -- #string.pack("!8 xb j Xi4 b", 1, 2, 3) == 17
      local a, b, c, n = seg:unpack(1, "!8 b j Xi4 b")
      assert.same({ 1, 2, 3, nxt }, { a, b, c, n })
      assert.equal(2, seg:unpack(8, "j"))
    end)

    it("rejects pack and unpack misuse before touching memory", function()
      local seg = get()
      seg:fill(7)
      assert.error_matches(function() seg:pack(996, "i4 i4", 1, 2) end, "does not fit")
      assert.equal(string.rep("\7", 4), seg:read(996), "nothing written by a failed pack")
      assert.error_matches(function() seg:pack(0, "i1", 200) end, "overflow")
      assert.error_matches(function() seg:pack(0, "z", "a\0b") end, "contains zeros")
      assert.error_matches(function() seg:pack(0, "c2", "abc") end, "longer than given size")
      assert.error_matches(function() seg:pack(0, "q", 1) end, "invalid format option 'q'")
      assert.error_matches(function() seg:pack(0, "i17", 1) end, "out of limits")
      assert.error_matches(function() seg:pack(0, "i4") end, "number expected")
      assert.error_matches(function() seg:pack(nil, "i4", 1) end, "number expected, got nil")
      assert.error_matches(function() seg:unpack(998, "i4") end, "past the end")
      assert.error_matches(function() seg:unpack(0, "z") end, "unfinished string")
      -- a length prefix read from shared memory is untrusted
      seg:pack(0, "J", H.maxint)
      assert.error_matches(function() seg:unpack(0, "s8") end, "runs past the end")
      seg:pack(0, "I4", 4000)
      assert.error_matches(function() seg:unpack(0, "s4") end, "runs past the end")
    end)

    it("detaches once; any later use raises, detach again is harmless", function()
      local seg = get()
      assert.is_true(seg:detach())
      assert.is_true(seg:detach())
      assert.matches("detached", tostring(seg))
      for _, f in ipairs({
        function() seg:read() end, function() seg:write("x") end,
        function() seg:fill(0) end, function() seg:stat() end,
        function() seg:pack(0, "b", 1) end, function() seg:unpack(0, "b") end,
        function() return #seg end, function() return seg.size end,
        function() seg:sync() end, function() seg:chmod(384) end,
        function() seg:remove() end,
      }) do
        assert.error_matches(f, "attempt to use a detached segment")
      end
    end)

    -- Lua 5.4 only (versions_spec checks there is no __close before); compiled
    -- from a string, so that this file parses in 5.1-5.3
    if H.lua54 then it("detaches (never removes) on <close>", function()
      local seg = get()
      local id, name, path = seg.id, seg.name, seg.path
      local again
      H.load([[
        do
          local s <close> = ...
          s:write("x")
        end
      ]])(seg)
      assert.error_matches(function() seg:read() end, "detached")
      if kind == "sysv" then again = assert(shm.attach(id)) end
      if kind == "posix" then again = assert(shm.open(name)) end
      if kind == "file" then again = assert(shm.map(path)) end
      assert.equal("x", again:read(0, 1), "still there after <close>")
      again:remove()
      again:detach()
    end) end
  end)

  it("gc detaches a sysv segment without removing it", function()
    local key = H.key()
    do
      assert(shm.create(key, 64)):write("kept") -- no reference kept
    end
    collectgarbage() collectgarbage()
    local seg = assert(shm.open(key))
    assert.equal(1, seg:stat().nattch, "the collected attachment is gone")
    assert.equal("kept", seg:read(0, 4))
    seg:remove()
    seg:detach()
    H.cleanup()
  end)

  it("has its constants", function()
    assert.equal(0, shm.PRIVATE)
    assert.is_true(shm.pagesize >= 4096 and shm.pagesize % 4096 == 0)
    assert.matches("^lua%-shm %d", shm._VERSION)
  end)

  it("rejects bad open arguments with a clear error", function()
    assert.error_matches(function() shm.create("noslash", 10) end, "must start with '/'")
    assert.error_matches(function() shm.create({}, 10) end, "integer key or '/name' expected")
    assert.error_matches(function() shm.create(1.5, 10) end, "integer representation")
    assert.error_matches(function() shm.create(2 ^ 40, 10) end, "key out of range")
    assert.error_matches(function() shm.create(H.key(), 0) end, "size must be positive")
    assert.error_matches(function() shm.create(H.key(), -5) end, "size must be positive")
    assert.error_matches(function() shm.create(H.key(), 10, "rwx") end, "octal")
    assert.error_matches(function() shm.create(H.key(), 10, 0x1000) end, "mode out of range")
    assert.error_matches(function() shm.open(H.key(), "w") end, 'access must be "rw" or "r"')
    assert.error_matches(function() shm.open(H.key(), "r", 10) end, "read%-only")
    assert.error_matches(function() shm.create("/a/b", 10) end, "no '/' after the first")
    assert.error_matches(function() shm.create("/", 10) end, "characters after")
    assert.error_matches(function() shm.create("/" .. string.rep("n", 300), 10) end, "too long")
    assert.error_matches(function() shm.create("/a\0b", 10) end, "zero byte")
    assert.error_matches(function() shm.attach(-1) end, "shmid out of range")
    assert.error_matches(function() shm.map() end, "string expected")
    H.cleanup()
  end)

  it("reads whole bytes, or raises, when a finalizer detaches it in the middle of a read or unpack", function()
    -- (making a string can collect garbage first: 5.1, 5.2, LuaJIT; a
    -- finalizer that detaches the segment then must not unmap it under the
    -- read: before the fix, a SIGSEGV)
    for _, jitmode in ipairs({ "on", "off" }) do
      local out, rc = H.run(H.GC .. [[
        local shm = require "shm"
        if jit and arg[1] == "off" then jit.off() end
        collectgarbage("setpause", 0) -- (a collection always under way: finalizers run often)
        local SIZE = 256 * 1024
        local whole, raised, bad = 0, 0, 0
        for round = 1, 300 do
          local seg = assert(shm.create(shm.PRIVATE, SIZE))
          assert(seg:remove()) -- (gone at its detach)
          seg:fill(65 + round % 26)
          local want = string.char(65 + round % 26)
          for _ = 1, 30 do gc(function() seg:detach() end) end
          local ok, v, w, x
          if round % 2 == 0 then
            ok, v = pcall(seg.read, seg, 0, SIZE)
            if ok and v ~= want:rep(SIZE) then bad = bad + 1 end
          else
            ok, v, w, x = pcall(seg.unpack, seg, 0, "c100000 c100000 c50000")
            if ok and (v ~= want:rep(100000) or w ~= want:rep(100000) or x ~= want:rep(50000)) then bad = bad + 1 end
          end
          if ok then whole = whole + 1
          elseif tostring(v):find("detached segment", 1, true) then raised = raised + 1
          else bad = bad + 1 end
          collectgarbage()
        end
        io.write("bad=", bad, " all=", whole + raised)
      ]], { jitmode })
      assert.equal(0, rc, out)
      assert.equal("bad=0 all=300", out)
    end
  end)

  ;(jit and it or pending)("unmaps at detach after a read too big for a string raised (LuaJIT's limit)", function()
    local path = H.tmpfile()
    finally(function() os.remove(path) end)
    assert(H.exec("truncate -s 2200000000 " .. H.shellquote(path))) -- (sparse)
    local seg = assert(shm.map(path, nil, "r"))
    local function mapped()
      for l in io.lines("/proc/self/maps") do if l:find(path, 1, true) then return true end end
      return false
    end
    local ok, err = pcall(seg.read, seg)
    assert.is_false(ok)
    assert.matches("string length overflow", err)
    assert.is_true(mapped())
    assert.is_true(seg:detach())
    assert.is_false(mapped()) -- (the read's pin did not outlive its error)
  end)
end)
