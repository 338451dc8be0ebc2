#pragma once
// lb-healthd's /metrics in the Prometheus text exposition format (version 0.0.4): what lb-healthd
// knows (a DaemonStatus snapshot: health, checks, the pool it sends) and lbd's counters, read from
// lbd's telemetry socket at scrape time (lbd sums its per-worker counters there). Names follow
// node_exporter's IPVS collector and HAProxy's exporter; docs/operations.md#monitoring lists them.
// Labels are bounded: service, backend ("address:port" of a configured backend), port, reason,
// direction, state; never a client address.

#include <cstdint>
#include <string>
#include <string_view>

#include "check_stats.h"
#include "daemon.h"
#include "exposition.h"
#include "lbd_snapshot.h"

namespace lb::health {

// The whole exposition. `snapshot_age`: how old `healthd` is (the loop publishes it on demand).
std::string render_metrics(const DaemonStatus& healthd, double snapshot_age_seconds,
                           const ctl::LbdSnapshot& lbd);

}  // namespace lb::health
