#pragma once
namespace lb::dp {
class Dataplane;
// Registers the /lb/... commands of dpdk-telemetry.py (and lbctl). Call once, after the
// dataplane is built; it must outlive EAL's telemetry thread (until rte_eal_cleanup()).
void register_telemetry(const Dataplane* dp);
// Makes the commands answer "not ready" from now on (before the dataplane is destroyed).
void unregister_telemetry();
}  // namespace lb::dp
