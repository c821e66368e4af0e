-- System limits give clear errors (nil, message, errno), never a signal.
-- Limits are lowered only inside namespaces of a child (unshare): the machine's
-- own settings and /dev/shm are never touched.
local shm = require "shm"
local H = require "helpers"

local in_namespace = H.in_namespace

local can_unshare = H.exec("unshare -i -m true 2>/dev/null")
local nsit = can_unshare and it or pending

describe("limits", function()
  after_each(H.cleanup)

  nsit("a size above kernel.shmmax says so", function()
    local out, rc = in_namespace("-i", "echo 65536 > /proc/sys/kernel/shmmax", [[
      local shm = require "shm"
      local s, msg, en = shm.create(0x1234, 1024 * 1024)
      print(s, msg, en)
      s, msg, en = shm.open(0x1234, "rw", 1024 * 1024)
      print(s, msg, en)
      local ok = assert(shm.create(0x1234, 65536)) -- at the limit: fine
      ok:remove()
    ]])
    assert.equal(0, rc, out)
    assert.equal("nil\tshm.create(0x1234): 1048576 bytes is above kernel.shmmax (65536): Invalid argument\t22\n" ..
                 "nil\tshm.open(0x1234): 1048576 bytes is above kernel.shmmax (65536): Invalid argument\t22\n", out)
  end)

  nsit("running out of segments (kernel.shmmni) gives ENOSPC", function()
    local out, rc = in_namespace("-i", "echo 3 > /proc/sys/kernel/shmmni", [[
      local shm = require "shm"
      local made = {}
      for i = 1, 4 do
        local s, msg, en = shm.create(shm.PRIVATE, 64)
        if not s then print(i, msg, en) break end
        made[#made + 1] = s
      end
      for _, s in ipairs(made) do s:remove() end
    ]])
    assert.equal(0, rc, out)
    assert.equal("4\tshm.create(PRIVATE): No space left on device\t28\n", out)
  end)

  nsit("a full /dev/shm is an error when creating, not SIGBUS on first touch", function()
    local out, rc = in_namespace("-m", "mount -t tmpfs -o size=1m tmpfs /dev/shm", [[
      local shm = require "shm"
      print(shm.create("/big", 4 * 1024 * 1024))
      print(shm.open("/big2", "rw", 4 * 1024 * 1024))
      local f = io.open("/dev/shm/big") print(f ~= nil) if f then f:close() end
      local ok = assert(shm.create("/small", 64 * 1024))
      ok:fill(1) -- every page really there
      print(#ok:read(), ok:remove())
    ]])
    assert.equal(0, rc, out)
    -- what was asked, and what there is
    assert.matches("^nil\tshm%.create%(/big%): reserving 4194304 bytes: No space left on device " ..
                   "%(%d+ bytes free in /dev/shm%)\t28\n" ..
                   "nil\tshm%.open%(/big2%): reserving 4194304 bytes: No space left on device " ..
                   "%(%d+ bytes free in /dev/shm%)\t28\n" ..
                   "false\n65536\ttrue\n$", out)
  end)

  nsit("a failed shm.map removes the file it created, and only that one", function()
    local out, rc = in_namespace("-m", "mount -t tmpfs -o size=1m tmpfs /dev/shm", [[
      local shm = require "shm"
      print(shm.map("/dev/shm/new", 4 * 1024 * 1024))
      local f = io.open("/dev/shm/new") print(f ~= nil) if f then f:close() end
      f = assert(io.open("/dev/shm/old", "w")) f:write("mine") f:close()
      print(shm.map("/dev/shm/old", 4 * 1024 * 1024))
      f = assert(io.open("/dev/shm/old")) print(f:read("*a")) f:close()
    ]])
    assert.equal(0, rc, out)
    assert.equal("nil\tshm.map(/dev/shm/new): reserving 4194304 bytes: No space left on device\t28\n" ..
                 "false\n" ..
                 "nil\tshm.map(/dev/shm/old): reserving 4194304 bytes: No space left on device\t28\n" ..
                 "mine\n", out)
  end)

  nsit("an existing sparse object on a full tmpfs is refused at a writable open, never SIGBUS", function()
    local out, rc = in_namespace("-m", "mount -t tmpfs -o size=1m tmpfs /dev/shm && " ..
        "truncate -s 8M /dev/shm/sparse && truncate -s 64K /dev/shm/fits", [[
      local shm = require "shm"
      print(shm.open("/sparse"))
      print(shm.open("/sparse", "rw", 4096))
      print(shm.map("/dev/shm/sparse"))
      local ro = assert(shm.open("/sparse", "r")) -- reading a hole reads zeros: no page needed
      print(#ro, ro:read(8 * 1024 * 1024 - 4) == "\0\0\0\0")
      ro = assert(shm.map("/dev/shm/sparse", nil, "r"))
      print(#ro)
      local seg = assert(shm.open("/fits"))
      seg:fill(1) -- every page really there
      print(#seg:read(), seg:read(65535) == "\1")
      local f = io.open("/dev/shm/sparse") print(f ~= nil) if f then f:close() end
    ]])
    assert.equal(0, rc, out)
    out = out:gsub(" %(%d+ bytes free in /dev/shm%)", " (N bytes free in /dev/shm)")
    assert.equal("nil\tshm.open(/sparse): reserving its 8388608 bytes: No space left on device" ..
                 " (N bytes free in /dev/shm)\t28\n" ..
                 "nil\tshm.open(/sparse): reserving its 8388608 bytes: No space left on device" ..
                 " (N bytes free in /dev/shm)\t28\n" ..
                 "nil\tshm.map(/dev/shm/sparse): reserving 8388608 bytes: No space left on device\t28\n" ..
                 "8388608\ttrue\n8388608\n65536\ttrue\ntrue\n", out)
  end)

  it("running out of file descriptors gives EMFILE", function()
    local names = {}
    for i = 1, 20 do names[i] = H.name() end
    local script = H.script([[
      local shm = require "shm"
      local made = {}
      for i = 1, 20 do
        local s, msg, en = shm.create(arg[i], 64)
        if not s then print(msg:match("Too many open files"), en) break end
        made[#made + 1] = s
      end
      for _, s in ipairs(made) do s:remove() s:detach() end
      print(#made < 20)
    ]])
    local out, rc = H.sh("ulimit -n 12 && env LUA_PATH=" .. H.shellquote(H.env.LUA_PATH) ..
      " LUA_CPATH=" .. H.shellquote(H.env.LUA_CPATH) .. " " .. H.lua .. " " .. script .. " " ..
      table.concat(names, " "))
    os.remove(script)
    assert.equal(0, rc, out)
    assert.equal("Too many open files\t24\ntrue\n", out)
  end)

  it("handles segments above 2 GiB and offsets past 2^31 and 2^32", function()
    local size = 4 * 1024 * 1024 * 1024 + 64 -- lazily allocated: only touched pages cost memory
    local seg, msg = shm.create(shm.PRIVATE, size)
    if not seg then pending("no 4 GiB segment here: " .. msg) return end
    seg:remove() -- gone at detach, whatever happens below
    finally(function() seg:detach() end)
    assert.equal(size, #seg)
    for _, off in ipairs({ 2147483648 - 2, 2147483648 + 3, 4294967296 + 8, size - 8 }) do
      seg:write("edge!!", off)
      assert.equal("edge!!", seg:read(off, 6))
      local at = off - off % 8
      seg:store(at, -42)
      assert.equal(-42, seg:load(at))
      assert.equal(at + 8, seg:pack(at, "j", 7))
      assert.equal(7, (seg:unpack(at, "j")))
    end
    assert.error_matches(function() seg:read(size - 1, 2) end, "out of range")
    assert.error_matches(function() seg:write("xx", size - 1) end, "does not fit")
    assert.equal("\0\0", seg:read(3 * 1024 * 1024 * 1024, 2))
  end)
end)
