#include "log.h"

namespace lb::dp {
RTE_LOG_REGISTER(lb_logtype, lb, INFO);
}  // namespace lb::dp
