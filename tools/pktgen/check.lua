-- Dry run of the lbd pktgen scripts without pktgen: a stand-in `pktgen` table that accepts
-- exactly the calls and argument counts of pktgen-23.06.1's Lua library (app/lpktgenlib.c) and
-- the "range N tcp flag ..." command-file lines, and simulates port counters so the scripts run
-- to the end. It checks the scripts' use of the API, not pktgen itself.
--   lua5.3 tools/pktgen/check.lua [lbd_params overrides as key=value ...]
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
package.path = package.path .. ";" .. dir .. "?.lua"

local calls, ports = 0, {}
for _, p in ipairs({ 0, 1 }) do
  ports[p] = { opackets = 0, ipackets = 0, count = 0, range = false, flags = {}, size = 64 }
end
local function argc(name, want, ...)
  local n = select("#", ...)
  assert(n == want, string.format("pktgen.%s: %d argument(s), pktgen-23.06.1 wants %d", name,
                                  n, want))
  calls = calls + 1
end
local function port_of(s)
  local p = tonumber(s)
  assert(p and ports[p], "portlist must name port 0 or 1 here, got " .. tostring(s))
  return p
end
local function ipv4(s)
  assert(type(s) == "string" and s:match("^%d+%.%d+%.%d+%.%d+$"), "not an IPv4 string: " .. tostring(s))
end
local kinds = { start = true, min = true, max = true, inc = true }

pktgen = { range = {} }
function pktgen.set(...)
  argc("set", 3, ...)
  local p, what, v = ...
  local ok = { count = 1, size = 1, rate = 1, burst = 1, cycles = 1, sport = 1, dport = 1,
               ttl = 1, seq_cnt = 1, seqCnt = 1, prime = 1, dump = 1 }
  assert(ok[what], "pktgen.set does not support " .. tostring(what))
  assert(tonumber(v), "pktgen.set value must be a number")
  if what == "count" then ports[port_of(p)].count = v end
end
for _, f in ipairs({ "src_ip", "dst_ip" }) do
  pktgen.range[f] = function(...)
    argc("range." .. f, 3, ...)
    local p, k, v = ...
    port_of(p); assert(kinds[k], "range." .. f .. ": bad kind " .. tostring(k)); ipv4(v)
  end
end
for _, f in ipairs({ "src_port", "dst_port", "pkt_size", "ttl" }) do
  pktgen.range[f] = function(...)
    argc("range." .. f, 3, ...)
    local p, k, v = ...
    port_of(p); assert(kinds[k], "range." .. f .. ": bad kind " .. tostring(k))
    assert(math.type(v) == "integer", "range." .. f .. ": integer value wanted")
    if f == "src_port" or f == "dst_port" then
      assert(v >= 0 and v <= 65535, "port out of range")
      if k == "inc" then assert(v <= 64, "pktgen caps a port increment at 64") end
    end
    if f == "pkt_size" and k ~= "inc" then
      assert(v >= 64 and v <= 1518, "pkt_size (with FCS) 64..1518")
      ports[port_of(p)].size = v
    end
  end
end
for _, f in ipairs({ "dst_mac", "src_mac" }) do
  pktgen.range[f] = function(...)
    argc("range." .. f, 3, ...)
    local p, k, v = ...
    port_of(p); assert(k == "start", "range." .. f .. ": only start is meaningful")
    assert(v:match("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$"), "not a MAC: " .. v)
  end
end
function pktgen.range.ip_proto(...)
  argc("range.ip_proto", 2, ...)
  local p, v = ...
  port_of(p); assert(v == "tcp" or v == "udp" or v == "icmp", "ip_proto " .. tostring(v))
end
function pktgen.set_range(...) argc("set_range", 2, ...); local p, v = ...; ports[port_of(p)].range = (v == "on") end
function pktgen.set_ipaddr(...)
  argc("set_ipaddr", 3, ...)
  local p, t, v = ...
  port_of(p); assert(t == "src" or t == "dst"); assert(v:match("^%d+%.%d+%.%d+%.%d+/%d+$") or t == "dst")
end
function pktgen.process(...) argc("process", 2, ...) end
function pktgen.screen(...) argc("screen", 1, ...) end
function pktgen.clr(...) argc("clr", 0, ...) end
function pktgen.delay(...) argc("delay", 1, ...) end
function pktgen.sleep(...) argc("sleep", 1, ...) end
function pktgen.quit(...) argc("quit", 0, ...) end
function pktgen.load(...)
  argc("load", 1, ...)
  local f = assert(io.open((...)), "load: cannot open " .. tostring(...))
  for line in f:lines() do
    local p, op, fl = line:match("^range (%d+) tcp flag (%a+) (%a+)$")
    assert(p and (op == "set" or op == "clr"), "unknown command-file line: " .. line)
    local flags = ports[port_of(p)].flags
    if op == "clr" then
      assert(fl == "all", "clr takes all")
      for k in pairs(flags) do flags[k] = nil end
    else
      assert(({ syn = 1, ack = 1, fin = 1, rst = 1, psh = 1, urg = 1 })[fl], "flag " .. fl)
      flags[fl] = true
    end
  end
  f:close()
end
local function forward(p, n)
  -- what lbd would do: client SYN/ACK and backend ACK each come out on the other side
  assert(ports[p].range, "start on a port whose range mode is off")
  assert(next(ports[p].flags), "start with no TCP flag set")
  ports[p].opackets = ports[p].opackets + n
  ports[1 - p].ipackets = ports[1 - p].ipackets + n
end
function pktgen.start(...)
  argc("start", 1, ...)
  local p = port_of(...)
  forward(p, ports[p].count > 0 and ports[p].count or 1000000)
end
function pktgen.stop(...) argc("stop", 1, ...) end
function pktgen.portStats(...)
  argc("portStats", 2, ...)
  local p, kind = ...
  local s = ports[port_of(p)]
  if kind == "rate" then
    return { [port_of(p)] = { pkts_rx = 14e6, pkts_tx = 14.8e6, mbits_rx = 9000, mbits_tx = 9900 }, n = 1 }
  end
  return { [port_of(p)] = { opackets = s.opackets, ipackets = s.ipackets }, n = 1 }
end
function pktgen.isSending(...) argc("isSending", 1, ...); return { [port_of(...)] = "n", n = 1 } end
printf = function(fmt, ...) io.write(string.format(fmt, ...)) end

-- Small flow count for the dry run unless overridden.
local P = require("lbd_params")
P.n_ips, P.n_ports, P.results = 8, 125, os.tmpname()
for _, kv in ipairs(arg or {}) do
  local k, v = kv:match("^(%w+)=(.*)$")
  if k then P[k] = tonumber(v) or v end
end
KEEP_RUNNING = true
for _, script in ipairs({ "lbd-syn-sweep.lua", "lbd-established.lua" }) do
  io.write("== " .. script .. "\n")
  dofile(dir .. script)
end
os.remove(P.results)
print(string.format("check.lua: OK, %d pktgen calls", calls))
