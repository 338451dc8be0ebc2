-- New connections per second through lbd: a sweep of SYNs over every client tuple of
-- lbd_params.lua (n_ips * n_ports, one SYN each), then the SYNs lbd forwarded to the backend
-- side. Run: pktgen ... -- -m "[2:3].0, [4:5].1" -f tools/pktgen/lbd-syn-sweep.lua
-- (docs/benchmarking.md). lbd's own counters are the reference: with P.lbd_stats_cmd set the
-- script samples flows_created before and after the sweep and prints lbd's new flows/s.
package.path = package.path .. ";" .. (debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "?.lua"
local P = require("lbd_params")
local L = require("lbd_common")

local flows = L.flows(P)
L.backend_arp(P)
L.wait_links(P)          -- with the screen on: link state is not refreshed once it is off
pktgen.screen("off")
pktgen.clr()
L.client_range(P, P.syn_size, { "syn" })
L.announce_gateway(P)

L.settle(P)
local rx0 = pktgen.portStats(P.backend_port, "port")[tonumber(P.backend_port)].ipackets
local a = L.lbd_sample(P)
local secs = L.sweep(P.client_port, flows)
local b = L.lbd_sample(P)
L.settle(P)
local rx1 = pktgen.portStats(P.backend_port, "port")[tonumber(P.backend_port)].ipackets
local got = rx1 - rx0
local d = L.lbd_delta(a, b)
L.record(P, string.format("syn-sweep,flows=%d,size=%d,sent=%d,forwarded=%d,seconds=%d,"
                          .. "lbd_new_flows=%s,lbd_seconds=%s,lbd_new_flows_per_s=%s", flows,
                          P.syn_size, flows, got, secs, d and d.new_flows or "",
                          d and string.format("%.3f", d.secs) or "",
                          d and string.format("%.0f", d.new_flows_per_s) or ""))
L.say("SYN sweep: %d SYNs sent, %d reached the backend side (pktgen's port statistics)\n",
      flows, got)
L.say("%s\n", L.lbd_line(d))
L.say("(the rate is bounded by pktgen: it prebuilds %d packets per start and restarts between "
      .. "chunks; lbd's own count over the same window is the figure)\n", L.CHUNK)
if not KEEP_RUNNING then pktgen.quit() end
