#include "lbd_snapshot.h"

namespace lb::ctl {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

LbdSnapshot read_snapshot(TelemetryClient& t) {
  LbdSnapshot s;
  const double start = now_seconds();
  s.t = start;
  s.stats = t.query("/lb/stats");
  s.drops = t.query("/lb/drops");
  s.ports = t.query("/lb/ports");
  // The listings lbd pages: every page (an lbd from before paging: its one reply).
  s.backends = t.query_all("/lb/backends").entries;
  s.workers = t.query_all("/lb/workers").entries;
  s.pool = t.query("/lb/pool");
  s.services = t.query_all("/lb/services").entries;
  // Last, and optional: an lbd older than full-NAT refuses the command (its reply is read whole,
  // the connection stays usable); the full-NAT figures are then left out.
  try {
    s.fullnat = t.query("/lb/fullnat");
  } catch (const Error&) {
    s.fullnat = Json();
  }
  for (const Json* j : {&s.stats, &s.drops, &s.ports, &s.backends, &s.workers, &s.pool}) {
    if (!j->is_object())
      throw Error("lbd's telemetry at " + t.path() + ": a reply is not an object");
  }
  s.up = true;
  s.seconds = now_seconds() - start;
  return s;
}

LbdSnapshot read_snapshot(const std::string& path, std::chrono::milliseconds timeout) {
  const double start = now_seconds();
  LbdSnapshot s;
  try {
    TelemetryClient t(path, static_cast<int>(timeout.count()));
    s = read_snapshot(t);
  } catch (const std::exception& e) {
    s = LbdSnapshot{};
    s.error = e.what();
    s.t = start;
  }
  s.seconds = now_seconds() - start;  // the connection included
  return s;
}

}  // namespace lb::ctl
