-- Memory committed as used (a queue's POSIX object takes memory as its ring is
-- first used, and a full tmpfs is an error of the push, never SIGBUS), and file
-- maps that follow no symbolic link and grow no other user's file.
local shm = require "shm"
local H = require "helpers"

-- bytes of memory or disk behind a file (st_blocks), and its size
local function usage(path)
  local out = H.sh("stat -c '%b %s' " .. H.shellquote(path))
  local blocks, size = out:match("^(%d+) (%d+)")
  return tonumber(blocks) * 512, tonumber(size)
end

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local can_unshare = H.exec("unshare -i -m true 2>/dev/null")
local nsit = can_unshare and it or pending
local root = H.exec("[ \"$(id -u)\" = 0 ]")
local rootit = root and it or pending

describe("memory committed as used", function()
  after_each(H.cleanup)

  it("a 4 GiB POSIX queue takes its header's memory, then what its messages use", function()
    local name = H.name()
    local q = assert(shm.queue.create(name, 2 ^ 32 - 1))
    local used, size = usage("/dev/shm" .. name)
    assert.equal(1024 + 2 ^ 32 - 1, size)
    assert.is_true(used <= 64 * 1024, "after create: " .. used)
    -- 10^5 messages of 32 bytes (36 with their lengths), half of them pushed
    -- by another process, which finds part of the ring reserved by this one
    -- (10^4 under valgrind, where this process's calls are slow)
    local N = H.valgrind and 10000 or 100000
    for i = 1, N / 2 do assert(q:push(string.format("%032d", i))) end
    local out, rc = H.run([[
      local shm = require "shm"
      local q = assert(shm.queue.open((...)))
      local N = tonumber((select(2, ...)))
      for i = N / 2 + 1, N do assert(q:push(string.format("%032d", i))) end
      print(q:stat().count)
    ]], { name, tostring(N) })
    assert.equal(0, rc, out)
    assert.equal(N .. "\n", out)
    used = usage("/dev/shm" .. name)
    local ring = N * 36
    assert.is_true(used >= ring and used <= 1024 + ring + 256 * 1024 + 4096,
                   "after " .. N .. " pushes: " .. used)
    for i = 1, N do assert.equal(string.format("%032d", i), q:pop(0)) end
    assert.same({ nil, "timeout" }, { q:pop(0) })
    q:remove()
  end)

  it("a queue.open that creates is as lazy; a System V queue is unchanged", function()
    local name = H.name()
    local q = assert(shm.queue.open(name, 256 * 1024 * 1024))
    assert.is_true(usage("/dev/shm" .. name) <= 64 * 1024)
    assert(q:push("x"))
    q:remove()
    local sq = assert(shm.queue.create(H.key(), 1024 * 1024))
    assert(sq:push("y"))
    assert.equal("y", sq:pop(0))
    sq:remove()
  end)

  it("shm.create, shm.open and shm.map of a raw segment still reserve it whole", function()
    local name, name2, path = H.name(), H.name(), H.tmpfile()
    local size = 8 * 1024 * 1024
    local a = assert(shm.create(name, size))
    local b = assert(shm.open(name2, "rw", size))
    local c = assert(shm.map(path, size))
    assert.equal(size, (usage("/dev/shm" .. name)))
    assert.equal(size, (usage("/dev/shm" .. name2)))
    assert.is_true(usage(path) >= size)
    a:remove() b:remove() c:remove()
  end)

  nsit("a push that finds the tmpfs full returns ENOSPC, never SIGBUS; the queue goes on", function()
    local out, rc = H.in_namespace("-m", "mount -t tmpfs -o size=1m tmpfs /dev/shm", [[
      local shm = require "shm"
      local interp = ...
      -- 8 MiB of ring on a 1 MiB tmpfs: made at once (before: ENOSPC here)
      local q = assert(shm.queue.create("/q", 8 * 1024 * 1024))
      local msg = string.rep("m", 60000)
      local n = 0
      while true do
        local ok, err, en = q:push(msg)
        if ok ~= true then print(n, ok, err, en) break end
        n = n + 1
      end
      -- another process, pushing into the same full tmpfs: the same answer
      local child = os.tmpname()
      local f = assert(io.open(child, "w"))
      f:write([=[
        local shm = require "shm"
        local q = assert(shm.queue.open("/q"))
        print(q:push(string.rep("c", 60000)))
      ]=])
      f:close()
      local p = assert(io.popen(interp .. " " .. child))
      io.write(p:read("*a"))
      p:close()
      os.remove(child)
      -- every message pushed is there, whole; a small one still fits
      local st = q:stat()
      print(st.count, q:pop(0) == msg, q:push("small"))
      for _ = 2, n do assert(q:pop(0) == msg) end
      print(q:pop(0), q:stat().count)
      q:remove()
      q:detach() -- (its memory goes now)
      -- a queue whose header cannot be backed is not made, and leaves nothing
      local fill = assert(shm.create("/fill", 1024 * 1024))
      print(shm.queue.create("/q2", 65536))
      print(shm.queue.open("/q3", 65536))
      print(shm.open("/q2"))
      print(shm.open("/q3"))
      fill:remove()
    ]], { H.lua })
    assert.equal(0, rc, out)
    out = out:gsub(" %(%d+ bytes free in /dev/shm%)", " (N bytes free in /dev/shm)")
    assert.equal("17\tnil\tq:push(/q): No space left on device\t28\n" ..
                 "nil\tq:push(/q): No space left on device\t28\n" ..
                 "17\ttrue\ttrue\n" ..
                 "small\t0\n" ..
                 "nil\tshm.queue.create(/q2): reserving 1024 bytes: No space left on device" ..
                 " (N bytes free in /dev/shm)\t28\n" ..
                 "nil\tshm.queue.open(/q3): reserving 1024 bytes: No space left on device" ..
                 " (N bytes free in /dev/shm)\t28\n" ..
                 "nil\tshm.open(/q2): No such file or directory (pass a size to create it)\t2\n" ..
                 "nil\tshm.open(/q3): No such file or directory (pass a size to create it)\t2\n", out)
  end)

  -- Wired by dict.c (its constructors call shm_segment_call, its allocator
  -- shm_segment_reserve): pending until then.
  it("a 4 GiB POSIX dict takes memory as it is used", function()
    local name = H.name()
    local d = assert(shm.dict.create(name, 4 * 2 ^ 30))
    local used = usage("/dev/shm" .. name)
    -- its index (buckets, sequence words), not its heap
    assert.is_true(used <= 2 ^ 32 / 16, "after create: " .. used)
    for i = 1, 100000 do assert(d:set("k" .. i, i)) end
    assert.is_true(usage("/dev/shm" .. name) - used <= 32 * 2 ^ 20)
    d:remove()
  end)

  it("a dict on a full tmpfs says no memory, never SIGBUS", function()
    local out, rc = H.in_namespace("-m", "mount -t tmpfs -o size=2m tmpfs /dev/shm", [[
      local shm = require "shm"
      -- 8 MiB of dict on a 2 MiB tmpfs: made at once (before: ENOSPC here)
      local d = assert(shm.dict.map("/dev/shm/d", 8 * 1024 * 1024))
      local n, ok, err = 0, true, nil
      while ok do
        ok, err = d:safe_set("k" .. n, string.rep("v", 1000))
        n = n + 1
      end
      print(n > 100, ok, err)
      -- what is there reads back; a set evicts to make room; a smaller one fits
      print(d:get("k1") == string.rep("v", 1000), d:set("k1", "small"), d:get("k1"))
      print(d:stat().count >= n - 2, d:lpush("l", "x"))
    ]])
    assert.equal(0, rc, out)
    assert.equal("true\tfalse\tno memory\ntrue\ttrue\tsmall\ntrue\t1\n", out)
  end)
end)

describe("file maps follow no symbolic link", function()
  after_each(H.cleanup)

  -- a directory like /tmp (sticky, writable by all) or one `nobody` owns, with
  -- a file of nobody's and nobody's symbolic link to it at `x.dict`
  local function planted(mode, owner)
    local dir = H.tmpfile()
    assert(H.exec("mkdir -m " .. mode .. " " .. dir .. " && chown " .. owner .. " " .. dir))
    local target, link = dir .. "/target", dir .. "/x.dict"
    spit(target, "nobody's 28 bytes, not mine\n")
    assert(H.exec("chown nobody " .. target .. " && ln -s " .. target .. " " .. link ..
                  " && chown -h nobody " .. link))
    return dir, target, link
  end

  local function unchanged(target)
    assert.equal("nobody's 28 bytes, not mine\n", slurp(target))
    local used, size = usage(target)
    assert.equal(28, size)
    assert.is_true(used <= 4096)
  end

  for _, where in ipairs({ { "sticky, like /tmp", "1777", "root" }, { "nobody's", "0755", "nobody" } }) do
    rootit("refuses a link planted in a directory " .. where[1] .. ", leaving its target alone", function()
      local dir, target, link = planted(where[2], where[3])
      local why = "Too many levels of symbolic links (a symbolic link, not followed)"
      for _, call in ipairs({
        { "shm.dict.map", shm.dict.map, 65536 }, { "shm.dict.map", shm.dict.map },
        { "shm.map", shm.map, 65536 }, { "shm.map", shm.map }, { "shm.map", shm.map, nil, "r" },
      }) do
        assert.same({ nil, call[1] .. "(" .. link .. "): " .. why, 40 },
                    { call[2](link, call[3], call[4]) })
        unchanged(target)
      end
      H.exec("rm -rf " .. dir)
    end)
  end

  it("refuses a link of the caller's own too, and follows links in the directories", function()
    local dir = H.tmpfile()
    assert(H.exec("mkdir " .. dir .. " && ln -s " .. dir .. " " .. dir .. ".link && ln -s data " ..
                  dir .. "/link"))
    local seg = assert(shm.map(dir .. ".link/data", 4096))
    seg:write("via a directory link")
    seg:detach()
    assert.equal("via a directory link", slurp(dir .. "/data"):sub(1, 20))
    local s, msg, en = shm.map(dir .. "/link", 4096)
    assert.is_nil(s)
    assert.equal("shm.map(" .. dir .. "/link): Too many levels of symbolic links " ..
                 "(a symbolic link, not followed)", msg)
    assert.equal(40, en)
    H.exec("rm -rf " .. dir .. " " .. dir .. ".link")
  end)

  rootit("never grows another user's file; maps it as it is", function()
    local dir, target = planted("1777", "root")
    assert.same({ nil, "shm.map(" .. target .. "): 28 bytes, owned by uid 65534: not grown: " ..
                 "Operation not permitted", 1 }, { shm.map(target, 65536) })
    unchanged(target)
    local s, msg = shm.dict.map(target, 65536) -- (mapped as it is: too small for a dict)
    assert.is_nil(s)
    assert.equal("shm.dict.map(" .. target .. "): ", msg:sub(1, #target + 16))
    unchanged(target)
    local seg = assert(shm.map(target, 10)) -- no growth asked: the caller named it
    assert.equal(28, #seg)
    seg:detach()
    s, msg = shm.dict.map(target)
    assert.is_nil(s)
    assert.matches("too small for a dict", msg)
    unchanged(target)
    H.exec("rm -rf " .. dir)
  end)

  -- dict.c's map through shm_segment_call: an existing file is mapped as it
  -- is, and validated before anything is written.  Pending until wired.
  it("an existing file of the caller's that is not a dict is neither grown nor written", function()
    local path = H.tmpfile()
    spit(path, "my 28 bytes, and not a dict")
    local s, msg = shm.dict.map(path, 65536)
    assert.is_nil(s)
    assert.matches("too small for a dict", msg)
    assert.equal("my 28 bytes, and not a dict", slurp(path))
  end)

  it("a FIFO at the path does not hang the open", function()
    local fifo = H.fifo()
    for _, access in ipairs({ "r", "rw" }) do
      assert.same({ nil, "shm.map(" .. fifo .. "): Invalid argument", 22 },
                  { shm.map(fifo, nil, access) })
    end
  end)
end)
