-- The lshm command line, run as a subprocess.
local shm = require "shm"
local H = require "helpers"

-- lshm ARGS...: stdout, exit code, stderr. Every failure is exit 1 and one
-- line on stderr naming the command, with no stack trace and no internals.
local function lshm(args, opts)
  opts = opts or {}
  local argv = { (opts.user and select(2, H.readable_env()) or H.root) .. "/bin/lshm" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local stderr = os.tmpname()
  local out, rc = H.sh(H.command(argv, opts) .. " 2>" .. stderr)
  local f = assert(io.open(stderr))
  local err = f:read("*a")
  f:close()
  os.remove(stderr)
  if rc == 0 then
    assert.equal("", err)
  else
    assert.equal(1, rc, err)
    assert.equal("", out)
    assert.matches("^lshm[^\n]*\n$", err)
    for _, internal in ipairs({ "bad argument", "shm%.core", "'nil'", "traceback", "write of", "%.lua:%d" }) do
      assert.is_nil(err:find(internal), "internals in: " .. err)
    end
  end
  return out, rc, err
end

-- lshm ARGS... must fail with exactly this message
local function fails(args, message, opts)
  local _, rc, err = lshm(args, opts)
  assert.equal(1, rc)
  assert.equal(message .. "\n", err)
end

-- The system's entry for a System V segment (shm.list: without attaching).
local function info(id)
  for _, i in ipairs(assert(shm.list())) do
    if i.kind == "sysv" and i.id == id then return i end
  end
end

-- A System V segment created and held attached by a child, never detached
-- while the test runs, while this process holds no attachment: its times and
-- pids change only through lshm (this process forks for every lshm, and a
-- fork's child that execs, as valgrind makes every popen do, detaches what it
-- inherited). Returns its id; the child removes it at the end of the test.
local function held_segment(key, size)
  local fifo = H.fifo()
  local child = H.spawn([[
    local shm = require "shm"
    local key, size, fifo = ...
    local seg = assert(shm.create(tonumber(key), tonumber(size)))
    print(seg.id) io.stdout:flush()
    io.open(fifo):read("*l")
    seg:remove()
    seg:detach()
  ]], { key, size, fifo })
  local id = tonumber(child:line())
  if not id then error("the holder failed: " .. tostring((child:finish()))) end
  finally(function()
    H.release(fifo)
    local out, rc = child:finish()
    assert.equal(0, rc, out)
  end)
  return id
end

describe("lshm", function()
  after_each(H.cleanup)

  it("creates, writes, cats, dumps and removes a System V segment", function()
    local key = H.key()
    local hex = string.format("0x%x", key)
    local out, rc = lshm({ "create", hex, "64", "0640" })
    assert.equal(0, rc)
    assert.matches("^shm%.segment%(sysv key=" .. hex .. " id=%d+ size=64 rw%)\n$", out)
    assert.equal(0, select(2, lshm({ "write", hex, "hello", "2" })))
    assert.equal("hello", (lshm({ "cat", hex, "2", "5" })))
    assert.equal(64, #(lshm({ "cat", tostring(key) })))
    out = lshm({ "dump", hex, "0", "18" })
    assert.equal("00000000: 0000 6865 6c6c 6f00 0000 0000 0000 0000  ..hello.........\n" ..
                 "00000010: 0000                                     ..\n", out)
    local seg = assert(shm.open(key))
    assert.equal(416, seg:stat().mode)
    seg:detach()
    assert.equal(0, select(2, lshm({ "rm", hex })))
    assert.is_nil((shm.open(key)))
  end)

  it("lists System V and POSIX segments in one aligned table", function()
    local key, name = H.key(), H.name()
    local a = assert(shm.create(key, 4096, "0640"))
    local b = assert(shm.create(name, 100))
    local out = lshm({ "ls" })
    local lines = {}
    -- (the segments' table: semaphores, if any exist, follow after a blank line)
    for l in (out:match("^(.-\n)\n") or out):gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("^KIND%s+KEY/NAME%s+ID%s+SIZE%s+MODE%s+OWNER%s+NATTCH%s+REMOVED$", lines[1])
    local sysv = out:match("\n(sysv%s+" .. string.format("0x%08x", key) .. "[^\n]*)")
    assert.matches("^sysv%s+0x%x+%s+" .. a.id .. "%s+4096%s+rw%-r%-%-%-%-%-%s+root%s+1%s+no$", sysv)
    local posix = out:match("\n(posix%s+" .. name:gsub("%-", "%%-") .. "[^\n]*)")
    assert.matches("100%s+rw%-%-%-%-%-%-%-%s+root%s+%-%s+%-$", posix)
    -- aligned: every row has the MODE column at the same place
    local col = lines[1]:find("MODE")
    for i = 2, #lines do assert.matches("^[r-][w-][x-]", lines[i]:sub(col)) end
    a:remove() b:remove()
  end)

  it("stats a segment without attaching to it, times as dates like ipcs", function()
    local key = H.key()
    local id = held_segment(key, 10)
    local st = info(id)
    for _, obj in ipairs({ { string.format("0x%x", key) }, { "-i", tostring(id) } }) do
      local out = "\n" .. lshm({ "stat", obj[1], obj[2] })
      assert.matches("\nnattch%s+1\n", out)
      assert.matches("\nmode%s+0600 %(rw%-%-%-%-%-%-%-%)\n", out)
      assert.matches("\nsize%s+10\n", out)
      assert.matches("\nid%s+" .. id .. "\n", out)
      -- attached (by the holder) but never detached: ipcs says "Not set"
      assert.truthy(out:find("\natime    " .. os.date("%a %b %d %H:%M:%S %Y", st.atime) .. "\n", 1, true), out)
      assert.matches("\ndtime%s+Not set\n", out)
      assert.matches("\nctime%s+%a%a%a %a%a%a %d%d %d%d:%d%d:%d%d %d%d%d%d\n", out)
    end
    assert.same(st, info(id))
  end)

  it("works with POSIX names and removes by shmid with -i without attaching", function()
    local name = H.name()
    assert.equal(0, select(2, lshm({ "create", name, "32" })))
    lshm({ "write", name, "posix" })
    assert.equal("posix", (lshm({ "cat", name, "0", "5" })))
    assert.matches("\nmtime%s+%a%a%a ", (lshm({ "stat", name })))
    assert.equal(0, select(2, lshm({ "rm", name })))
    local id = held_segment(H.key(), 16)
    lshm({ "write", "-i", tostring(id), "ok" })
    assert.equal("ok", (lshm({ "cat", "-i", tostring(id), "0", "2" })))
    -- shmat and shmdt set lpid and the times: lshm rm -i attaching would change them
    local before = info(id)
    assert.equal(0, select(2, lshm({ "rm", "-i", tostring(id) })))
    local after = info(id)
    assert.is_true(after.removed)
    assert.equal(0, after.key)
    for _, k in ipairs({ "lpid", "atime", "dtime", "nattch" }) do assert.equal(before[k], after[k], k) end
    -- a private segment (key 0) is reachable by its ID only
    local private = assert(shm.create(shm.PRIVATE, 16))
    assert.equal(0, select(2, lshm({ "rm", "-i", tostring(private.id) })))
    assert.is_true(private:stat().removed)
    private:detach()
  end)

  it("says when a segment holds a dict, and what is in it", function()
    local name = H.name()
    local d = assert(shm.dict.create(name, 64 * 1024))
    d:set("a", 1)
    d:set("b", "x")
    local out, rc = lshm({ "stat", name })
    assert.equal(0, rc, out)
    assert.matches("\nholds    dict: 2 keys, capacity 65536, free %d+, evicted 0, expired 0, recovered 0\n", out)
    out = lshm({ "stat", (select(1, lshm({ "create", H.name(), "64" }))):match("name=(%S+)") })
    assert.is_nil(out:match("holds"))
    d:remove()
    d:detach()
  end)

  it("prints the usage when run with no arguments (exit status 1, on stderr)", function()
    local stderr = os.tmpname()
    local out, rc = H.sh(H.command({ H.root .. "/bin/lshm" }) .. " 2>" .. stderr)
    local f = assert(io.open(stderr))
    local err = f:read("*a")
    f:close()
    os.remove(stderr)
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("^usage: lshm ls\n", err)
    assert.equal(select(1, lshm({ "help" })), err)
  end)

  it("says when a segment holds an event ring, and what it holds", function()
    for _, id in ipairs({ H.name(), H.key() }) do
      local ev = assert(shm.events.create(id, 4096))
      for k = 1, 3 do ev:publish("event " .. k) end
      local out, rc = lshm({ "stat", tostring(id) })
      assert.equal(0, rc, out)
      assert.matches("\nholds    events: capacity 4096, published 3, oldest 1, newest 3, recovered 0\n", out)
      ev:remove()
      ev:detach()
    end
  end)

  it("fails with exit status 1 and one line naming the command and the object", function()
    local hex = string.format("0x%x", H.key())
    local name = H.name()
    fails({ "cat", hex }, "lshm cat " .. hex .. ": No such file or directory")
    fails({ "stat", hex }, "lshm stat " .. hex .. ": No such file or directory")
    fails({ "rm", hex }, "lshm rm " .. hex .. ": No such file or directory")
    fails({ "rm", name }, "lshm rm " .. name .. ": No such file or directory")
    fails({ "bogus" }, "lshm: unknown command 'bogus' (lshm help for usage)")
    fails({ "cat" }, "lshm cat: missing KEY, NAME or -i ID")
    fails({ "cat", "nokey" }, "lshm cat nokey: not a KEY (decimal or 0x hex), NAME (/name) or -i ID")
    fails({ "ls", "x" }, "lshm ls: unexpected argument 'x' (lshm help for usage)")
    fails({ "rm", hex, "extra" }, "lshm rm: unexpected argument 'extra' (lshm help for usage)")
    fails({ "create", hex, "0" }, "lshm create " .. hex .. ": size must be positive")
    fails({ "create", hex, "1.5" }, "lshm create " .. hex .. ": bad SIZE 1.5 (decimal or 0x hex)")
    fails({ "create", hex, "10", "999" }, "lshm create " .. hex .. ": mode must be an octal string such as \"0600\"")
    fails({ "create", "/a/b", "10" }, "lshm create /a/b: a POSIX name has no '/' after the first")
    fails({ "create", "-i", "5", "10" }, "lshm create: -i ID does not apply here (KEY or NAME)")
    fails({ "rm", "-i" }, "lshm rm -i: missing ID")
    fails({ "rm", "-i", "x" }, "lshm rm -i x: bad ID (decimal or 0x hex)")
    fails({ "stat", "-i", "99999999999" }, "lshm stat -i 99999999999: ID out of range (0 to 0x7fffffff)")
    -- key 0 is IPC_PRIVATE: it names no single segment
    for _, cmd in ipairs({ "rm", "stat", "cat" }) do
      fails({ cmd, "0" }, "lshm " .. cmd .. " 0: key 0 is IPC_PRIVATE: it names no single segment"
        .. " (use -i ID; lshm ls shows the IDs)")
    end
    -- keys are 32 bits; numbers too big for a double are not rounded into range
    fails({ "cat", "0x10000000000" }, "lshm cat 0x10000000000: KEY out of range (0 to 0xffffffff)")
    fails({ "stat", "99999999999999999999" }, "lshm stat 99999999999999999999: KEY out of range (0 to 0xffffffff)")
    fails({ "cat", "0x1" .. string.rep("0", 16) }, "lshm cat 0x1" .. string.rep("0", 16)
      .. ": KEY out of range (0 to 0xffffffff)")
  end)

  it("says what exists and what does not fit", function()
    local key, name = H.key(), H.name()
    local hex = string.format("0x%x", key)
    local seg = assert(shm.create(key, 8))
    local pseg = assert(shm.create(name, 8))
    fails({ "create", hex, "100" }, "lshm create " .. hex .. ": File exists")
    fails({ "create", name, "100" }, "lshm create " .. name .. ": File exists")
    fails({ "write", hex, "too long for it" }, "lshm write " .. hex .. ": 15 bytes at offset 0 do not fit (8 bytes)")
    fails({ "write", hex, "x", "8" }, "lshm write " .. hex .. ": 1 bytes at offset 8 do not fit (8 bytes)")
    fails({ "write", hex }, "lshm write " .. hex .. ": missing DATA")
    fails({ "cat", hex, "9" }, "lshm cat " .. hex .. ": OFFSET 9 is past the end (8 bytes)")
    fails({ "dump", name, "2", "7" }, "lshm dump " .. name .. ": 7 bytes at offset 2 run past the end (8 bytes)")
    fails({ "cat", hex, "x" }, "lshm cat " .. hex .. ": bad OFFSET x (decimal or 0x hex)")
    assert.equal("", (lshm({ "cat", hex, "8" })))
    seg:remove()
    pseg:remove()
  end)

  it("refuses another user's segment with EPERM, with or without -i", function()
    if not H.exec("[ \"$(id -u)\" = 0 ] && command -v setpriv >/dev/null") then
      return pending("needs root and setpriv")
    end
    local nobody = { user = "nobody", group = "nogroup" }
    local key = H.key()
    local hex = string.format("0x%x", key)
    local seg = assert(shm.create(key, 16))         -- 0600: nobody can neither read nor remove it
    local private = assert(shm.create(shm.PRIVATE, 16))
    fails({ "rm", hex }, "lshm rm " .. hex .. ": Operation not permitted", nobody)
    fails({ "rm", "-i", tostring(seg.id) }, "lshm rm -i " .. seg.id .. ": Operation not permitted", nobody)
    fails({ "rm", "-i", tostring(private.id) }, "lshm rm -i " .. private.id .. ": Operation not permitted", nobody)
    fails({ "cat", hex }, "lshm cat " .. hex .. ": Permission denied", nobody)
    assert.is_false(seg:stat().removed)
    assert.is_false(private:stat().removed)
    seg:remove()
    private:remove()
    private:detach()
  end)

  it("lists, shows, makes and removes semaphores (sem:KEY, sem:/NAME, -s SEMID)", function()
    local key, name = H.key(), H.name()
    assert.matches("^shm%.sem%(sysv key=", (lshm({ "create", string.format("sem:0x%x", key), "3", "0640" })))
    assert.matches("^shm%.sem%(posix " .. name:gsub("%-", "%%-"), (lshm({ "create", "sem:" .. name, "2" })))
    local s = assert(shm.sem.open(key))
    local ls = lshm({ "ls" })
    assert.matches("\nSEMAPHORE +KEY/NAME +SEMID +NSEMS +VALUE +MODE +OWNER\n", ls)
    assert.matches(string.format("\nsysv +0x%08x +%d +1 +3 +rw%%-r%%-%%-%%-%%-%%- +root\n", key, s.id), ls)
    assert.matches("\nposix +" .. name:gsub("%-", "%%-") .. " +%- +1 +2 +rw%-%-%-%-%-%-%- +root\n", ls)
    local st = lshm({ "stat", string.format("sem:%d", key) })
    assert.matches("\nnsems +1\n", st)
    assert.matches("\nvalues +3\n", st)
    assert.matches("\nmode +0640 %(rw%-r%-%-%-%-%-%)\n", st)
    assert.matches("\nvalue +2\n", (lshm({ "stat", "sem:" .. name })))
    assert.equal(st, (lshm({ "stat", "-s", tostring(s.id) })))
    local _, rc, err = lshm({ "cat", "sem:" .. name })
    assert.equal(1, rc)
    assert.matches("a semaphore has no bytes", err)
    lshm({ "rm", "-s", tostring(s.id) })
    lshm({ "rm", "sem:" .. name })
    _, rc, err = lshm({ "rm", "sem:" .. name })
    assert.equal(1, rc)
    assert.equal("lshm rm sem:" .. name .. ": No such file or directory\n", err)
    _, rc, err = lshm({ "stat", string.format("sem:0x%x", key) })
    assert.equal(1, rc)
    assert.matches("^lshm stat sem:0x%x+: No such file or directory\n$", err)
    assert.is_nil(shm.sem.open(key))
  end)
end)
