-- Established-flow load through lbd: first a SYN sweep opens every client tuple of
-- lbd_params.lua (lbd creates one flow each), then the same ranges are sent again with the ACK
-- flag instead of SYN (lbd forwards them on the existing flows), for every frame size in
-- P.sizes, optionally with the backend's replies from port 1 (reverse NAT to the VIP).
--
-- Two measurements per size:
--   hot   pktgen repeats its 24,576 prebuilt packets at full rate: a working set of 24,576
--         flows, the number to compare with line rate (pktgen's rates averaged over
--         P.samples one-second snapshots, and lbd's own count over the same window);
--   sweep every flow once per pass, in chunks (pktgen restarts between chunks, so pktgen's side
--         is a floor): the table-wide working set; lbd's count is the figure.
-- Run: pktgen ... -- -m "[2:3].0, [4:5].1" -f tools/pktgen/lbd-established.lua
package.path = package.path .. ";" .. (debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./") .. "?.lua"
local P = require("lbd_params")
local L = require("lbd_common")

local flows = L.flows(P)
local c, b = P.client_port, P.backend_port
L.backend_arp(P)
L.wait_links(P)          -- with the screen on: link state is not refreshed once it is off
pktgen.screen("off")
pktgen.clr()

-- 1. Open the flows.
L.client_range(P, P.syn_size, { "syn" })
L.announce_gateway(P)
local s0 = L.lbd_sample(P)
local secs = L.sweep(c, flows)
local d = L.lbd_delta(s0, L.lbd_sample(P))
L.say("opened %d flows in about %d s; %s\n", flows, secs, L.lbd_line(d))
L.settle(P)

-- 2. Load them, size by size.
L.say("%6s %5s | %10s %10s | %10s %10s | %9s | %s\n", "size", "mode", "c->b tx", "c->b rx",
      "b->c tx", "b->c rx", "Gbit/s rx", "lbd")
for _, size in ipairs(P.sizes) do
  L.client_range(P, size, { "ack" })
  local ports = { c, b }
  if P.bidirectional then L.backend_range(P, size, { "ack" }) end
  -- hot: continuous, the 24,576 prebuilt packets over and over
  pktgen.start(c)
  if P.bidirectional then pktgen.start(b) end
  pktgen.sleep(P.warmup_s)
  local h0 = L.lbd_sample(P)
  local r = L.rates(ports, P.samples)
  local hd = L.lbd_delta(h0, L.lbd_sample(P))
  pktgen.stop(c)
  if P.bidirectional then pktgen.stop(b) end
  local gbps = (r[b].mrx + r[c].mrx) / 1000
  L.say("%6d %5s | %10.3f %10.3f | %10.3f %10.3f | %9.2f | %s\n", size, "hot", r[c].tx / 1e6,
        r[b].rx / 1e6, r[b].tx / 1e6, r[c].rx / 1e6, gbps,
        hd and string.format("%.3f Mpps sent", hd.tx_pps / 1e6) or "-")
  L.record(P, string.format("established-hot,flows=%d,working_set=%d,size=%d,c2b_tx=%.0f,"
                            .. "c2b_rx=%.0f,b2c_tx=%.0f,b2c_rx=%.0f,lbd_tx_pps=%s", flows,
                            math.min(flows, L.CHUNK), size, r[c].tx, r[b].rx, r[b].tx, r[c].rx,
                            hd and string.format("%.0f", hd.tx_pps) or ""))
  -- sweep: one packet per flow, client side only, in chunks. The baseline is read from a
  -- snapshot taken after the hot phase stopped (a stale one over-counted "forwarded").
  L.settle(P)
  local rx0 = pktgen.portStats(b, "port")[tonumber(b)].ipackets
  local w0 = L.lbd_sample(P)
  local s = L.sweep(c, flows)
  local wd = L.lbd_delta(w0, L.lbd_sample(P))
  L.settle(P)
  local got = pktgen.portStats(b, "port")[tonumber(b)].ipackets - rx0
  L.say("%6d %5s | %10d %10d | %10s %10s | %9s | %s\n", size, "sweep", flows, got, "-", "-", "",
        wd and string.format("%.3f Mpps sent in %.3f s", wd.tx_pps / 1e6, wd.secs) or "-")
  L.record(P, string.format("established-sweep,flows=%d,size=%d,sent=%d,forwarded=%d,"
                            .. "seconds=%d,lbd_seconds=%s", flows, size, flows, got, s,
                            wd and string.format("%.3f", wd.secs) or ""))
end
if not KEEP_RUNNING then pktgen.quit() end
