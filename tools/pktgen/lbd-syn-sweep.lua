-- New connections per second through lbd: a sweep of SYNs over every client tuple of
-- lbd_params.lua (n_ips * n_ports, one SYN each), then the SYN rate lbd forwarded to the
-- backend side. Run: pktgen ... -- -m "[2:3].0, [4:5].1" -f tools/pktgen/lbd-syn-sweep.lua
-- (docs/benchmarking.md). lbd's own count is the reference: /lb/stats flows_created before and
-- after (dpdk-telemetry.py on the lbd machine).
package.path = package.path .. ";" .. (debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "?.lua"
local P = require("lbd_params")
local L = require("lbd_common")

local flows = L.flows(P)
pktgen.screen("off")
pktgen.clr()
L.backend_arp(P)
L.client_range(P, P.syn_size, { "syn" })
pktgen.delay(2000)  -- lbd asks for the gateway's MAC once a second

local rx0 = pktgen.portStats(P.backend_port, "port")[tonumber(P.backend_port)].ipackets
local secs = L.sweep(P.client_port, flows)
pktgen.delay(500)
local rx1 = pktgen.portStats(P.backend_port, "port")[tonumber(P.backend_port)].ipackets
local got = rx1 - rx0
L.record(P, string.format("syn-sweep,flows=%d,size=%d,sent=%d,forwarded=%d,seconds=%d,"
                          .. "new_flows_per_s=%.0f", flows, P.syn_size, flows, got, secs,
                          got / secs))
L.say("SYN sweep: %d SYNs sent, %d reached the backend side in about %d s: %.0f new flows/s "
      .. "(pktgen restarts every %d packets, so this is a floor: compare lbd's flows_created)\n",
      flows, got, secs, got / secs, L.CHUNK)
if not KEEP_RUNNING then pktgen.quit() end
