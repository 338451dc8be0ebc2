-- Helpers shared by the lbd pktgen scripts. Written against the Lua API of pktgen-23.06.1
-- (the last release that builds on DPDK 22.11):
--   pktgen.range.<field>(port, "start"|"min"|"max"|"inc", value), pktgen.set_range(port, "on")
--   TCP flags have no Lua call there: a command file with "range N tcp flag ..." lines is
--   written and run with pktgen.load(file).
--   Only 24,576 distinct packets are prebuilt per start; a new start continues the sweep, so a
--   large flow count is swept in chunks of at most that many packets.
--   Its Lua has no printf (use M.say). Port statistics are a snapshot the display timer takes
--   once a second; link state is refreshed by it too, and not at all once the screen is off.
local M = {}

M.CHUNK = 24576

function M.here()
  local src = debug.getinfo(2, "S").source
  return (src:sub(1, 1) == "@" and src:sub(2):match("(.*/)")) or "./"
end

function M.gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return a
end

local function ip_to_num(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  assert(a, "not an IPv4 address: " .. tostring(s))
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end

local function num_to_ip(n)
  return string.format("%d.%d.%d.%d", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end

function M.ip_add(s, k) return num_to_ip(ip_to_num(s) + k) end

function M.flows(P)
  assert(M.gcd(P.n_ips, P.n_ports) == 1,
         string.format("n_ips (%d) and n_ports (%d) must be coprime, or the sweep repeats "
                       .. "before covering every tuple", P.n_ips, P.n_ports))
  assert(P.client_port_min + P.n_ports - 1 <= 65535, "client port range past 65535")
  return P.n_ips * P.n_ports
end

-- "range <port> tcp flag ..." through a command file: no Lua call for TCP flags in 23.06.1.
function M.tcp_flags(port, flags)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(string.format("range %s tcp flag clr all\n", port))
  for _, fl in ipairs(flags) do f:write(string.format("range %s tcp flag set %s\n", port, fl)) end
  f:close()
  pktgen.load(name)
  os.remove(name)
end

local function range4(fn, port, start, min, max, inc)
  fn(port, "start", start)
  fn(port, "min", min)
  fn(port, "max", max)
  fn(port, "inc", inc)
end

-- Client side: client tuples -> VIP:vport.
function M.client_range(P, size, flags)
  local p = P.client_port
  pktgen.range.dst_mac(p, "start", P.lbd_client_mac)
  range4(pktgen.range.src_ip, p, P.client_ip_min, P.client_ip_min,
         M.ip_add(P.client_ip_min, P.n_ips - 1), "0.0.0.1")
  range4(pktgen.range.dst_ip, p, P.vip, P.vip, P.vip, "0.0.0.0")
  range4(pktgen.range.src_port, p, P.client_port_min, P.client_port_min,
         P.client_port_min + P.n_ports - 1, 1)
  range4(pktgen.range.dst_port, p, P.vport, P.vport, P.vport, 0)
  pktgen.range.ip_proto(p, "tcp")
  range4(pktgen.range.pkt_size, p, size, size, size, 0)
  M.tcp_flags(p, flags)
  pktgen.set(p, "burst", P.burst)
  pktgen.set(p, "rate", P.rate)
  pktgen.set_range(p, "on")
end

-- Backend side: the backend's replies, backend:port -> the same client tuples.
function M.backend_range(P, size, flags)
  local p = P.backend_port
  pktgen.range.dst_mac(p, "start", P.lbd_backend_mac)
  range4(pktgen.range.src_ip, p, P.backend_ip, P.backend_ip, P.backend_ip, "0.0.0.0")
  range4(pktgen.range.dst_ip, p, P.client_ip_min, P.client_ip_min,
         M.ip_add(P.client_ip_min, P.n_ips - 1), "0.0.0.1")
  range4(pktgen.range.src_port, p, P.backend_tcp, P.backend_tcp, P.backend_tcp, 0)
  range4(pktgen.range.dst_port, p, P.client_port_min, P.client_port_min,
         P.client_port_min + P.n_ports - 1, 1)
  pktgen.range.ip_proto(p, "tcp")
  range4(pktgen.range.pkt_size, p, size, size, size, 0)
  M.tcp_flags(p, flags)
  pktgen.set(p, "burst", P.burst)
  pktgen.set(p, "rate", P.rate)
  pktgen.set_range(p, "on")
end

-- The backend port answers lbd's ARP for the gateway (pktgen's own address).
function M.backend_arp(P)
  pktgen.set_ipaddr(P.backend_port, "src", P.backend_port_ip)
  pktgen.process(P.backend_port, "on")
end

-- Waits until both ports are up: lbd is a memif client that connects after pktgen (the server)
-- has started, and on real NICs the link takes a moment too. Must run while the screen is on:
-- pktgen refreshes link state from its display timer, and not at all once the screen is off.
function M.wait_links(P)
  local ports = { P.client_port, P.backend_port }
  for _ = 1, P.link_wait_s * 10 do
    local ls = pktgen.linkState(P.client_port .. "," .. P.backend_port)
    local up = 0
    for _, p in ipairs(ports) do
      if (ls[tonumber(p)] or ""):find("UP", 1, true) then up = up + 1 end
    end
    if up == #ports then return end
    pktgen.delay(100)
  end
  error(string.format("links of ports %s,%s not up after %d s (is lbd running and connected?)",
                      P.client_port, P.backend_port, P.link_wait_s))
end

-- Makes sure lbd knows the gateway's MAC before the first SYN: a gratuitous ARP from port 1
-- (lbd learns next hops from any ARP it sees), and port 1 answers lbd's own requests, which
-- lbd sends when a port's link comes up and then every 100 ms until answered.
function M.announce_gateway(P)
  pktgen.send_arp(P.backend_port, "gratuitous")
  pktgen.delay(P.arp_wait_ms)
end

local function stats(port, kind) return pktgen.portStats(port, kind)[tonumber(port)] end

local function sending(port) return pktgen.isSending(port)[tonumber(port)] == "y" end

-- Sends exactly `total` packets from `port`, in chunks of at most CHUNK (each start continues
-- the sweep where the last one stopped). A chunk is over when the TX core clears its sending
-- flag (polled every millisecond), not when port statistics show it: those are refreshed once
-- a second, which made every chunk cost a whole second. Returns the wall time in whole seconds
-- (os.time; at least 1): for rates, use lbd's counters (M.lbd_sample).
function M.sweep(port, total)
  local t0 = os.time()
  local left = total
  while left > 0 do
    local n = math.min(left, M.CHUNK)
    pktgen.set(port, "count", n)
    pktgen.start(port)
    local waited = 0
    while sending(port) and waited < 60000 do
      pktgen.delay(1)
      waited = waited + 1
    end
    pktgen.stop(port)
    left = left - n
  end
  pktgen.set(port, "count", 0)  -- back to "forever"
  return math.max(os.time() - t0, 1)
end

-- Port statistics are a snapshot the display timer takes once a second: wait for one taken
-- after the traffic stopped before reading them.
function M.settle(P) pktgen.delay(P.stats_settle_ms) end

-- lbd's own counters (flows_created, rx/tx packets, drops), read with P.lbd_stats_cmd: a shell
-- command that prints lbd's /lb/stats and /lb/drops telemetry as JSON (bench/telemetry.py on the
-- lbd machine, over ssh when it is another one). The time comes from the same shell (date), to
-- the nanosecond. nil when P.lbd_stats_cmd is not set.
function M.lbd_sample(P)
  if not P.lbd_stats_cmd then return nil end
  local f = assert(io.popen("date +%s.%N; " .. P.lbd_stats_cmd))
  local out = f:read("a")
  f:close()
  local function num(key) return tonumber(out:match('"' .. key .. '"%s*:%s*(%d+)')) end
  local s = { t = tonumber(out:match("^%s*(%d+%.?%d*)")), flows_created = num("flows_created"),
              tx = num("tx_packets"), dropped = num("dropped"),
              unresolved = num("neighbor_unresolved") or 0 }
  assert(s.t and s.flows_created and s.tx, "lbd_stats_cmd printed no /lb/stats: " .. out)
  return s
end

-- What lbd did between two samples: new flows, packets it sent per second, drops.
function M.lbd_delta(a, b)
  if not a or not b then return nil end
  local dt = b.t - a.t
  return { secs = dt, new_flows = b.flows_created - a.flows_created,
           new_flows_per_s = (b.flows_created - a.flows_created) / dt,
           tx_pps = (b.tx - a.tx) / dt, dropped = b.dropped - a.dropped,
           unresolved = b.unresolved - a.unresolved }
end

function M.lbd_line(d)
  if not d then return "lbd's counters not sampled (set lbd_stats_cmd in lbd_params.lua)" end
  return string.format("lbd: %d new flows in %.3f s = %.0f/s, sent %.3f Mpps, dropped %d "
                       .. "(neighbor_unresolved %d)", d.new_flows, d.secs, d.new_flows_per_s,
                       d.tx_pps / 1e6, d.dropped, d.unresolved)
end

-- Averages pktgen's per-second rates over `samples` seconds: Mpps and Mbit/s per port.
function M.rates(ports, samples)
  local acc = {}
  for _, p in ipairs(ports) do acc[p] = { rx = 0, tx = 0, mrx = 0, mtx = 0 } end
  for _ = 1, samples do
    pktgen.sleep(1)
    for _, p in ipairs(ports) do
      local s = stats(p, "rate")
      acc[p].rx = acc[p].rx + s.pkts_rx
      acc[p].tx = acc[p].tx + s.pkts_tx
      acc[p].mrx = acc[p].mrx + s.mbits_rx
      acc[p].mtx = acc[p].mtx + s.mbits_tx
    end
  end
  for _, p in ipairs(ports) do
    for k, v in pairs(acc[p]) do acc[p][k] = v / samples end
  end
  return acc
end

-- pktgen 23.06's Lua has no printf: io.write goes to pktgen's terminal.
function M.say(fmt, ...)
  io.write(string.format(fmt, ...))
  io.flush()
end

function M.record(P, line)
  M.say("%s\n", line)
  local f = io.open(P.results, "a")
  if f then f:write(line .. "\n"); f:close() end
end

return M
