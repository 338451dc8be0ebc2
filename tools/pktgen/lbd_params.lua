-- Parameters of the pktgen scripts for lbd (tools/pktgen/*.lua). Edit for your machines.
-- Topology (docs/benchmarking.md, "pktgen on bare metal"):
--
--   pktgen port 0 ---- lbd port "client"  (10.10.0.1/24, VIP 10.10.0.100:80)
--   pktgen port 1 ---- lbd port "backend" (10.20.0.1/24, gateway 10.20.0.2 = pktgen port 1)
--
-- lbd reaches every backend through the gateway, so pktgen port 1 answers one ARP (for
-- 10.20.0.2) and receives everything lbd forwards to backends. See lbd-baremetal.cfg.
local P = {}

-- lbd's port MACs (lbd logs them at start: "port client: ... mac ..."; or `ip link` before
-- binding the NICs to DPDK).
P.lbd_client_mac  = "00:00:00:00:00:01"
P.lbd_backend_mac = "00:00:00:00:00:02"

P.client_port  = "0"          -- pktgen port wired to lbd's client port
P.backend_port = "1"          -- pktgen port wired to lbd's backend port
P.backend_port_ip = "10.20.0.2/24"   -- pktgen port 1 plays lbd's gateway (answers its ARP)

P.vip   = "10.10.0.100"
P.vport = 80
-- The one backend of lbd-baremetal.cfg: pktgen sends the backend's replies from it, which only
-- works when every flow went to this backend (a service with one backend).
P.backend_ip   = "172.16.0.1"
P.backend_tcp  = 8080

-- Client tuples: n_ips addresses from client_ip_min, n_ports ports from client_port_min.
-- pktgen advances every ranged field on every packet, so the sweep covers all n_ips * n_ports
-- combinations only when the two counts are coprime (checked by the scripts).
--   1 M flows:  16 * 62501 = 1,000,016        10 M flows: 160 * 62501 = 10,000,160
--   1 k flows:   8 * 125   = 1,000
P.client_ip_min   = "10.128.0.1"
P.n_ips           = 16
P.client_port_min = 1024
P.n_ports         = 62501

-- Frame sizes with FCS (pktgen's convention: 64 = 60 bytes of frame + 4 of FCS).
P.syn_size = 64
P.sizes    = { 64, 128, 256, 512, 1024, 1500 }

P.rate      = 100    -- percent of line rate
P.burst     = 32
P.warmup_s  = 2      -- per measurement, before sampling
P.samples   = 5      -- one-second rate samples per measurement
P.bidirectional = true  -- also send the backend's replies from port 1 (one backend only)

P.results = "lbd-pktgen-results.csv"   -- appended, in pktgen's working directory

P.link_wait_s     = 60    -- for both links (lbd connects after pktgen has started)
P.arp_wait_ms     = 500   -- after the gratuitous ARP for the gateway, before the first SYN
P.stats_settle_ms = 1500  -- pktgen's port statistics are a snapshot taken once a second

-- lbd's own counters are the reference for rates: a shell command that prints lbd's /lb/stats
-- and /lb/drops as JSON, run before and after each measurement (nil: not sampled). E.g.
--   P.lbd_stats_cmd = "ssh lbd-host python3 /path/to/lbd/bench/telemetry.py lbd /lb/stats /lb/drops"
P.lbd_stats_cmd = nil

-- A Lua file named by LBD_PKTGEN_PARAMS may override any of these (bench/pktgen.sh uses it).
local extra = os.getenv("LBD_PKTGEN_PARAMS")
if extra and extra ~= "" then
  for k, v in pairs(dofile(extra)) do P[k] = v end
end

return P
