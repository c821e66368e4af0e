-- The lshm command line, run as a subprocess.
local shm = require "shm"
local H = require "helpers"

local function lshm(args, opts)
  -- the interpreter under test, and the module build the suite uses
  local cmd = { "env", "LUA_CPATH=" .. H.shellquote(H.env.LUA_CPATH), H.lua, H.shellquote(H.root .. "/lua/lshm") }
  for _, a in ipairs(args) do cmd[#cmd + 1] = H.shellquote(a) end
  local stderr = os.tmpname()
  local out, rc = H.sh(table.concat(cmd, " ") .. " 2>" .. stderr)
  local f = assert(io.open(stderr))
  local err = f:read("*a")
  f:close()
  os.remove(stderr)
  if opts ~= "raw" then assert.is_true(rc == 0 or (rc == 1 and select(2, err:gsub("\n", "")) == 1), err) end
  return out, rc, err
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
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
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

  it("stats a segment without attaching to it", function()
    local key = H.key()
    local seg = assert(shm.create(key, 10))
    local out = lshm({ "stat", string.format("0x%x", key) })
    assert.matches("\nnattch%s+1\n", out)
    assert.matches("\nmode%s+0600 %(rw%-%-%-%-%-%-%-%)\n", out)
    assert.matches("\nsize%s+10\n", out)
    seg:remove()
  end)

  it("works with POSIX names and removes by shmid with -i", function()
    local name = H.name()
    assert.equal(0, select(2, lshm({ "create", name, "32" })))
    lshm({ "write", name, "posix" })
    assert.equal("posix", (lshm({ "cat", name, "0", "5" })))
    assert.equal(0, select(2, lshm({ "rm", name })))
    local seg = assert(shm.create(H.key(), 16))
    assert.equal(0, select(2, lshm({ "rm", "-i", tostring(seg.id) })))
    assert.is_true(seg:stat().removed)
    seg:detach()
  end)

  it("fails with exit status 1 and one line on stderr", function()
    local key = string.format("0x%x", H.key())
    local cases = {
      { { "cat", key }, "^lshm: shm%.open%(" .. key .. "%): No such file or directory %(pass a size to create it%)\n$" },
      { { "rm", key }, "^lshm: shm%.unlink%(" .. key .. "%): No such file or directory\n$" },
      { { "bogus" }, "^lshm: unknown command 'bogus'" },
      { {}, "^lshm: missing command" },
      { { "cat", "nokey" }, "^lshm: bad KEY or NAME 'nokey'" },
      { { "create", key, "0" }, "size must be positive" },
      { { "create", key, "10", "999" }, "octal" },
    }
    for _, c in ipairs(cases) do
      local out, rc, err = lshm(c[1])
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches(c[2], err)
    end
    local seg = assert(shm.create(tonumber(key), 8))
    local _, rc, err = lshm({ "write", key, "too long for it" })
    assert.equal(1, rc)
    assert.matches("does not fit", err)
    _, rc, err = lshm({ "cat", key, "9" })
    assert.equal(1, rc)
    assert.matches("out of range", err)
    seg:remove()
  end)
end)
