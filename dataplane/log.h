#pragma once
// lbd's logging is DPDK's (rte_log), with log types of its own so that the EAL option
// --log-level sets their levels like any DPDK component's: --log-level='lb*:debug' for all of
// them, --log-level=lb.neigh:warning for one.
//   lb        start-up, ports, workers, shutdown summary
//   lb.pool   pool generations applied (and what changed) or refused
//   lb.link   ports' link going up or down
//   lb.neigh  next hops resolved, changing MAC, lost
//   lb.drops  drop counts rising sharply (rate-limited, by reason)
// Only the control thread and start-up log: never a worker per packet.
#include <rte_log.h>

#include <string>

namespace lb::dp {
extern int lb_logtype;
extern int lb_pool_logtype;
extern int lb_link_logtype;
extern int lb_neigh_logtype;
extern int lb_drops_logtype;

// Makes DPDK's log stream (EAL's messages included) one timestamped line per message on stderr:
//   2025-01-20T10:05:00.001Z lbd[4100] INFO lb.pool: pool generation 75 applied: ...
// Call before rte_eal_init. False (DPDK's own stream stays) when the stream cannot be made.
bool open_log_stream(const char* program);

// Messages logged at ERR level or worse since the last clear_errors() (the last three, oldest
// first, "; " between them, each without its "EAL: " style prefix): the reason behind a failure
// DPDK reports with a bare -1. "" if none.
void clear_errors();
std::string recent_errors();
}  // namespace lb::dp

#define LB_LOG_TYPE(type, name, level, fmt, ...)                  \
  rte_log(RTE_LOG_##level, static_cast<uint32_t>(::lb::dp::type), \
          name ": " fmt "\n" __VA_OPT__(, ) __VA_ARGS__)
#define LB_LOG(level, fmt, ...) LB_LOG_TYPE(lb_logtype, "lb", level, fmt __VA_OPT__(, ) __VA_ARGS__)
#define LB_LOG_POOL(level, fmt, ...) \
  LB_LOG_TYPE(lb_pool_logtype, "lb.pool", level, fmt __VA_OPT__(, ) __VA_ARGS__)
#define LB_LOG_LINK(level, fmt, ...) \
  LB_LOG_TYPE(lb_link_logtype, "lb.link", level, fmt __VA_OPT__(, ) __VA_ARGS__)
#define LB_LOG_NEIGH(level, fmt, ...) \
  LB_LOG_TYPE(lb_neigh_logtype, "lb.neigh", level, fmt __VA_OPT__(, ) __VA_ARGS__)
#define LB_LOG_DROPS(level, fmt, ...) \
  LB_LOG_TYPE(lb_drops_logtype, "lb.drops", level, fmt __VA_OPT__(, ) __VA_ARGS__)
