-- Dry run of the lbd pktgen scripts without pktgen: a stand-in `pktgen` table that accepts
-- exactly the calls and argument counts of pktgen-23.06.1's Lua library (app/lpktgenlib.c) and
-- the "range N tcp flag ..." command-file lines, and simulates what the scripts depend on:
--   * a global that pktgen's Lua does not have (printf, or any other) is an error when read;
--   * link state is refreshed only while the screen is on, and the links come up a few hundred
--     milliseconds after the script starts: a script that turns the screen off before the
--     links are up waits forever (and fails here);
--   * port statistics are a snapshot taken once a (simulated) second;
--   * a port sends its count and then clears its sending flag (isSending);
--   * lbd forwards every packet, and its /lb/stats is read through P.lbd_stats_cmd.
-- At the end the results file must show every flow: SYNs forwarded and created by lbd, and the
-- established sweeps forwarded in full. It checks the scripts' use of the API, not pktgen.
--   lua5.3 tools/pktgen/check.lua [lbd_params overrides as key=value ...]
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
package.path = package.path .. ";" .. dir .. "?.lua"

local calls = 0
local now_ms = 0          -- simulated clock, advanced by pktgen.delay/sleep
local screen_on = true
local links_up_at = 300   -- ms after the start
local link_seen = false   -- linkState() reported both ports up
local ports = {}
for _, p in ipairs({ 0, 1 }) do
  ports[p] = { opackets = 0, ipackets = 0, count = 0, range = false, flags = {}, size = 64,
               snap = { opackets = 0, ipackets = 0 }, sending = false, forever = false,
               link = "<--Down-->" }
end
local lbd = { flows_created = 0, tx_packets = 0, dropped = 0 }
local lbd_file = os.tmpname()
local function write_lbd()
  local f = assert(io.open(lbd_file, "w"))
  f:write(string.format('{"/lb/stats": {"rx_packets": %d, "tx_packets": %d, "dropped": %d, '
                        .. '"flows_created": %d}, "/lb/drops": {"neighbor_unresolved": 0}}\n',
                        lbd.tx_packets, lbd.tx_packets, lbd.dropped, lbd.flows_created))
  f:close()
end
write_lbd()

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
local function portlist(s)
  local out = {}
  for p in tostring(s):gmatch("[^,]+") do out[#out + 1] = port_of(p) end
  assert(#out > 0, "empty portlist")
  return out
end
local function ipv4(s)
  assert(type(s) == "string" and s:match("^%d+%.%d+%.%d+%.%d+$"), "not an IPv4 string: " .. tostring(s))
end
local kinds = { start = true, min = true, max = true, inc = true }

-- What lbd does with what a port sends: client SYNs create flows, everything is forwarded.
local function deliver(p, n)
  ports[p].opackets = ports[p].opackets + n
  ports[1 - p].ipackets = ports[1 - p].ipackets + n
  if ports[p].flags.syn then lbd.flows_created = lbd.flows_created + n end
  lbd.tx_packets = lbd.tx_packets + n
  write_lbd()
end
local kRate = 10000   -- packets per simulated millisecond while a port sends "forever"
local function advance(ms)
  while ms > 0 do
    -- the once-a-second snapshot, taken at 0.5 s, 1.5 s, ...: out of phase with the scripts
    local to_snap = 1000 - (now_ms + 500) % 1000
    local step = math.min(ms, to_snap)
    for i, p in pairs(ports) do
      if p.forever then deliver(i, kRate * step) end
    end
    now_ms, ms = now_ms + step, ms - step
    if step == to_snap then
      for _, p in pairs(ports) do p.snap = { opackets = p.opackets, ipackets = p.ipackets } end
    end
    if screen_on and now_ms >= links_up_at then   -- the display timer refreshes link state
      for _, p in pairs(ports) do p.link = "<UP-10000-FD>" end
    end
  end
end

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
function pktgen.send_arp(...)
  argc("send_arp", 2, ...)
  local p, what = ...
  port_of(p); assert(what:sub(1, 1) == "g" or what:sub(1, 1) == "r", "send_arp: gratuitous|request")
  assert(link_seen, "send_arp before the links were seen up")
end
function pktgen.screen(...)
  argc("screen", 1, ...)
  local v = ...
  assert(v == "on" or v == "off", "screen on|off")
  screen_on = (v == "on")
end
function pktgen.linkState(...)
  argc("linkState", 1, ...)
  local out = { n = 0 }
  for _, p in ipairs(portlist(...)) do out[p] = ports[p].link; out.n = out.n + 1 end
  local all = true
  for _, p in pairs(ports) do all = all and p.link:find("UP", 1, true) ~= nil end
  link_seen = link_seen or all
  return out
end
function pktgen.clr(...) argc("clr", 0, ...) end
function pktgen.delay(...) argc("delay", 1, ...); advance((...)) end
function pktgen.sleep(...) argc("sleep", 1, ...); advance((...) * 1000) end
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
function pktgen.start(...)
  argc("start", 1, ...)
  local p = port_of(...)
  assert(link_seen, "start before the links were seen up (wait for them with the screen on)")
  assert(ports[p].range, "start on a port whose range mode is off")
  assert(next(ports[p].flags), "start with no TCP flag set")
  if ports[p].count > 0 then   -- sends its count, then clears its sending flag
    deliver(p, ports[p].count)
    ports[p].sending = true
  else
    ports[p].forever = true
  end
end
function pktgen.stop(...)
  argc("stop", 1, ...)
  local p = port_of(...)
  ports[p].forever, ports[p].sending = false, false
end
function pktgen.isSending(...)
  argc("isSending", 1, ...)
  local out = { n = 0 }
  for _, p in ipairs(portlist(...)) do
    out[p] = (ports[p].sending or ports[p].forever) and "y" or "n"
    ports[p].sending = false   -- a counted send is over by the next look
    out.n = out.n + 1
  end
  return out
end
function pktgen.portStats(...)
  argc("portStats", 2, ...)
  local p, kind = ...
  local s = ports[port_of(p)]
  if kind == "rate" then
    return { [port_of(p)] = { pkts_rx = 14e6, pkts_tx = 14.8e6, mbits_rx = 9000, mbits_tx = 9900 }, n = 1 }
  end
  assert(kind == "port", "portStats kind rate|port")
  return { [port_of(p)] = { opackets = s.snap.opackets, ipackets = s.snap.ipackets }, n = 1 }
end

-- pktgen's Lua has no printf (23.06.1), nor any other global the scripts might assume: reading
-- a global that is not there is an error, not nil.
setmetatable(_G, { __index = function(_, k)
  error("global '" .. tostring(k) .. "' does not exist in pktgen-23.06.1's Lua", 2)
end })

-- Small flow count for the dry run unless overridden.
local P = require("lbd_params")
P.n_ips, P.n_ports, P.results = 8, 125, os.tmpname()
P.lbd_stats_cmd = "cat " .. lbd_file
for _, kv in ipairs(arg or {}) do
  local k, v = kv:match("^([%w_]+)=(.*)$")
  if k then P[k] = tonumber(v) or v end
end
rawset(_G, "KEEP_RUNNING", true)
local flows = P.n_ips * P.n_ports
for _, script in ipairs({ "lbd-syn-sweep.lua", "lbd-established.lua" }) do
  io.write("== " .. script .. "\n")
  screen_on, link_seen = true, false
  for _, p in pairs(ports) do p.link = "<--Down-->" end
  links_up_at = now_ms + 300
  dofile(dir .. script)
end

-- Every flow must be accounted for, from pktgen's statistics and from lbd's.
local lines = 0
for line in io.lines(P.results) do
  lines = lines + 1
  local kind = line:match("^([%w-]+),")
  local function field(k) return tonumber(line:match("[,]" .. k .. "=([%d.]+)")) end
  if kind == "syn-sweep" or kind == "established-sweep" then
    assert(field("forwarded") == flows, string.format("%s: forwarded %s of %d flows (stale port "
                                                      .. "statistics?)", kind, field("forwarded"), flows))
  end
  if kind == "syn-sweep" then
    assert(field("lbd_new_flows") == flows, "syn-sweep: lbd created " .. tostring(field("lbd_new_flows")))
  end
end
assert(lines == 1 + 2 * #P.sizes, "results file has " .. lines .. " lines")
os.remove(P.results)
os.remove(lbd_file)
print(string.format("check.lua: OK, %d pktgen calls", calls))
