#pragma once
// lbd's log type ("lb"), so that --log-level=lb:debug works like any DPDK component's.
#include <rte_log.h>

namespace lb::dp {
extern int lb_logtype;
}

#define LB_LOG(level, fmt, ...)                                         \
  rte_log(RTE_LOG_##level, static_cast<uint32_t>(::lb::dp::lb_logtype), \
          "lbd: " fmt "\n" __VA_OPT__(, ) __VA_ARGS__)
