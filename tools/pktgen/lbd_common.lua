-- Helpers shared by the lbd pktgen scripts. Written against the Lua API of pktgen-23.06.1
-- (the last release that builds on DPDK 22.11):
--   pktgen.range.<field>(port, "start"|"min"|"max"|"inc", value), pktgen.set_range(port, "on")
--   TCP flags have no Lua call there: a command file with "range N tcp flag ..." lines is
--   written and run with pktgen.load(file).
--   Only 24,576 distinct packets are prebuilt per start; a new start continues the sweep, so a
--   large flow count is swept in chunks of at most that many packets.
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

local function stats(port, kind) return pktgen.portStats(port, kind)[tonumber(port)] end

-- Sends exactly `total` packets from `port`, in chunks of at most CHUNK (each start continues
-- the sweep where the last one stopped). Returns the seconds it took (1 s resolution).
function M.sweep(port, total)
  local t0 = os.time()
  local left = total
  while left > 0 do
    local n = math.min(left, M.CHUNK)
    local before = stats(port, "port").opackets
    pktgen.set(port, "count", n)
    pktgen.start(port)
    local waited = 0
    while stats(port, "port").opackets - before < n and waited < 60000 do
      pktgen.delay(1)
      waited = waited + 1
    end
    pktgen.stop(port)
    left = left - n
  end
  pktgen.set(port, "count", 0)  -- back to "forever"
  return math.max(os.time() - t0, 1)
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

function M.say(fmt, ...)
  local s = string.format(fmt, ...)
  if printf then printf("%s", s) else io.write(s) end
end

function M.record(P, line)
  M.say("%s\n", line)
  local f = io.open(P.results, "a")
  if f then f:write(line .. "\n"); f:close() end
end

return M
