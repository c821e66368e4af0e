-- Several reports of the same bench (make bench run more than once, each
-- output kept) made into one: every number that differs between the runs
-- becomes the median of the runs' (ratios included: the median of the runs'
-- ratios), written with the first run's decimals; lines that do not have
-- the same shape in every run are the first run's.
-- usage: merge.lua OUT IN1 IN2 ...
local lib = require "lib"

local out, ins = arg[1], {}
for i = 2, #arg do ins[#ins + 1] = arg[i] end
if not out or #ins == 0 then error("usage: merge.lua OUT IN1 IN2 ...", 0) end

local function lines(path)
  local t = {}
  for l in assert(io.open(path)):lines() do t[#t + 1] = l end
  return t
end
-- a line as its text between numbers (its shape) and its numbers
local NUM = "%d+%.?%d*"
local function split(l)
  local nums = {}
  local shape = l:gsub(NUM, function(x)
    nums[#nums + 1] = x
    return "\0"
  end)
  return shape, nums
end

local runs = {}
for i, p in ipairs(ins) do runs[i] = lines(p) end
local res = {}
for n, first in ipairs(runs[1]) do
  local shape, nums = split(first)
  local all = { nums }
  for r = 2, #runs do
    local s, x = split(runs[r][n] or "")
    if s ~= shape then all = nil break end
    all[r] = x
  end
  if all then
    local k = 0
    first = shape:gsub("%z", function()
      k = k + 1
      local xs, same = {}, true
      for r = 1, #all do
        xs[r] = tonumber(all[r][k])
        same = same and all[r][k] == nums[k]
      end
      if same then return nums[k] end
      local dec = nums[k]:match("%.(%d*)$")
      return string.format("%." .. (dec and #dec or 0) .. "f", lib.median(xs))
    end)
  end
  res[#res + 1] = first
  if n == 1 and first:match("^# ") then
    res[#res + 1] = ""
    res[#res + 1] = string.format("%d runs of this bench merged (bench/merge.lua): each figure that differs " ..
      "between them is the median of the runs' figures (for ratios, of the runs' ratios).", #runs)
  end
end
local f = assert(io.open(out, "w"))
f:write(table.concat(res, "\n"), "\n")
f:close()
