#pragma once
// One reading of lbd's telemetry: every counter command lbctl (stats, top) and lb-healthd
// (/metrics) show, read over one connection. One type and one reader for both, so that a counter
// lbd adds is read in one place.

#include <chrono>
#include <string>

#include "telemetry_client.h"

namespace lb::ctl {

struct LbdSnapshot {
  bool up = false;
  std::string error;   // why not, when !up
  double t = 0;        // when it was taken: seconds on the steady clock (rates divide by deltas)
  double seconds = 0;  // how long reading took
  Json stats;          // /lb/stats
  Json drops;          // /lb/drops
  Json ports;          // /lb/ports
  Json backends;       // /lb/backends, every page ("backend_<id>": {...})
  Json workers;        // /lb/workers, every page
  Json pool;           // /lb/pool
  Json services;       // /lb/services, every page
  Json fullnat;  // /lb/fullnat: ports per full-NAT local address (null from an lbd without it)
};

// Reads every command over `t`'s connection. Throws Error (a reply that is not an object
// included); the connection stays usable after a refused /lb/fullnat.
LbdSnapshot read_snapshot(TelemetryClient& t);

// Connects to lbd's telemetry at `path` and reads a snapshot, each reply waited for at most
// `timeout`. Never throws: a failure is up == false with the reason.
LbdSnapshot read_snapshot(const std::string& path, std::chrono::milliseconds timeout);

}  // namespace lb::ctl
