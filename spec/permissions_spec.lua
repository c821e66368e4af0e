-- Permissions, checked from another user: root bypasses IPC permission checks,
-- so the other side runs as nobody (with a copy of the module nobody can read:
-- the checkout may be readable by its owner only, see H.readable_env).
local shm = require "shm"
local H = require "helpers"

local as_nobody = { user = "nobody", group = "nogroup" }
-- becoming nobody takes root and setpriv
local can_switch = H.exec("[ \"$(id -u)\" = 0 ] && command -v setpriv >/dev/null")
local it = can_switch and it or pending

-- A child as nobody opens `obj` with `access` and reports what happened.
local function nobody_open(obj, access, extra)
  return H.run([[
    local shm = require "shm"
    local obj, access, extra = ...
    obj = tonumber(obj) or obj
    local seg, msg, en = shm.open(obj, access)
    if not seg then io.write("nil|", msg, "|", en) return end
    if extra == "write" then seg:write("by nobody") end
    if extra == "unlink" then
      local ok, m, e = shm.unlink(obj)
      io.write(tostring(ok), "|", tostring(m), "|", tostring(e), "|")
    end
    io.write("ok|", seg:read(0, 9))
  ]], { obj, access or "rw", extra or "" }, as_nobody)
end

describe("permissions as another user", function()
  after_each(H.cleanup)

  it("refuses a 0600 System V segment: nil, message, 13", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64))
    local out, rc = nobody_open(key, "r")
    assert.equal(0, rc, out)
    assert.equal(string.format("nil|shm.open(0x%x): Permission denied|13", key), out)
    seg:remove()
  end)

  it("lets \"r\" open a 0644 segment but not \"rw\"", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64, "0644"))
    seg:write("for all!!")
    assert.equal("ok|for all!!", (nobody_open(key, "r")))
    assert.matches("^nil|.*Permission denied|13$", (nobody_open(key, "rw")))
    seg:remove()
  end)

  it("takes chmod and chown into effect for System V", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64))
    assert.is_true(seg:chmod("0666"))
    assert.equal("ok|by nobody", (nobody_open(key, "rw", "write")))
    assert.is_true(seg:chmod("0600"))
    assert.matches("Permission denied", (nobody_open(key, "r")))
    assert.is_true(seg:chown(65534, 65534))
    assert.equal("ok|by nobody", (nobody_open(key, "rw", "write")))
    seg:remove()
  end)

  it("refuses to let another user remove the segment (EPERM)", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64, "0644"))
    local out = nobody_open(key, "r", "unlink")
    assert.matches("^nil|shm.unlink%(0x%x+%): Operation not permitted|1|ok|", out)
    assert.is_false(seg:stat().removed)
    seg:remove()
  end)

  it("applies modes to POSIX objects the same way", function()
    local name = H.name()
    local seg = assert(shm.create(name, 64))
    seg:write("posix 644")
    assert.equal("nil|shm.open(" .. name .. "): Permission denied|13", (nobody_open(name, "r")))
    assert.is_true(seg:chmod("0644"))
    assert.equal("ok|posix 644", (nobody_open(name, "r")))
    assert.matches("Permission denied|13$", (nobody_open(name, "rw")))
    assert.is_true(seg:chown(65534))
    assert.equal("ok|by nobody", (nobody_open(name, "rw", "write")))
    seg:remove()
  end)

  it("creates segments owned by the creating user", function()
    local key = H.key()
    local out, rc = H.run([[
      local shm = require "shm"
      local seg = assert(shm.create(tonumber((...)), 16))
      local st = seg:stat()
      io.write(st.uid, " ", st.cuid, " ", st.mode)
    ]], { key }, as_nobody)
    assert.equal(0, rc, out)
    assert.equal("65534 65534 384", out)
    assert.is_true(shm.unlink(key))
  end)
end)
