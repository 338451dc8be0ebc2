#pragma once
// lbctl's views, pure: JSON in (lb-healthd's replies, lbd's telemetry), JSON or text out. No I/O,
// so the tests feed them recorded replies.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lbd_snapshot.h"

namespace lb::ctl {

using Json = nlohmann::json;

// Columns padded to the widest cell, two spaces apart; the last column is not padded.
std::string format_table(const std::vector<std::vector<std::string>>& rows,
                         const std::string& indent = "");

// "850ms", "3.2s", "42s", "5m03s", "2h01m", "3d04h".
std::string format_ms(int64_t ms);
// 999, 1.2k, 3.4M, 5.6G (SI).
std::string format_count(double n);

// -- status --------------------------------------------------------------------------------

// lb-healthd's status reply with lbd's per-backend counters (/lb/backends, keyed by service and
// address) added to every backend as "lbd": {...} (null when lbd has no such backend). With no
// counters (`backends` null), "lbd_counters" says why (`unavailable`).
Json merge_status(const Json& status, const Json& backends, const std::string& unavailable);
// The ipvsadm-like table of a merged status.
std::string render_status(const Json& merged);

// When lb-healthd cannot be reached: what lbd alone says it applies, from its telemetry
// (/lb/backends, /lb/pool, /lb/stats and the hello), with why lb-healthd could not be asked
// (`healthd_error`). Services and backends as lbd names them; health, admin states and VIPs are
// lb-healthd's and absent. {"ok": false, "healthd": {"reachable": false, "error": ...}, "lbd":
// {...}, "services": [{"name", "backends": [{"address", "port", "live", "lbd": {...}}]}]}.
Json lbd_status(const Json& backends, const Json& pool, const Json& stats, const Json& hello,
                const std::string& healthd_error);
std::string render_lbd_status(const Json& status);

// -- stats ---------------------------------------------------------------------------------

// Totals from `b`, rates over b - a.
Json stats_report(const LbdSnapshot& a, const LbdSnapshot& b);
// `instance` is lbd's instance name, `pid` its process id (from the telemetry hello).
std::string render_stats(const Json& report, const std::string& instance, const Json& pid);

// -- flows ---------------------------------------------------------------------------------

// /lb/flows' reply ({"total", "workers", "answered", "flows": lines}, or the bare array of lines
// of an older lbd, which had no total) as {"total": N or null, "workers", "answered", "flows":
// [objects]}: each line ("worker client vip backend state age_ms expires_in_ms") an object, at
// most `limit`, oldest first.
Json parse_flows(const Json& reply, size_t limit);
std::string render_flows(const Json& parsed);

}  // namespace lb::ctl
