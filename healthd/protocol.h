#pragma once
// lb-healthd's control protocol (docs/lbctl.md, "The control socket protocol"): JSON requests
// answered against the daemon. Every command is one entry of one table — its name, the fields
// it takes, whether it changes the pool, its handler and its documentation — from which the
// checks of a request's fields, the `help` command, the list in an unknown command's error and
// the table in docs/lbctl.md are all derived.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control_server.h"
#include "daemon.h"

namespace lb::health {

struct Command {
  std::string_view name;
  std::vector<std::string_view> fields;  // besides cmd and id (and wait, timeout_ms for changes)
  std::string_view fields_doc;           // docs/lbctl.md's "fields" column ("" for none)
  std::string_view reply_doc;            // docs/lbctl.md's "reply" column
  // Exactly one of the two. A query answers at once; a change goes through Daemon::change (or
  // reload) and may be answered only once lbd has applied it ("wait": true).
  Json (*query)(Daemon&, const Json& request) = nullptr;
  Result<Change> (*change)(Daemon&, const Json& request) = nullptr;
  // A query that has BIRD told something (node.drain, node.ready): answered once BIRD has
  // answered (or failed, or timed out), as the loop never waits for it.
  bool after_bird = false;
};

// Every command, in the order docs/lbctl.md lists them.
const std::vector<Command>& commands();

// The command table of docs/lbctl.md (markdown, one row per command), as commands() says.
std::string protocol_table_markdown();

// Every request of the protocol, answered against `daemon`. A change asked with "wait": true is
// answered once lbd has applied it (through `server.reply`): nullopt until then.
std::optional<Json> handle_request(Daemon& daemon, ControlServer& server, ControlServer::ConnId id,
                                   const Json& request);

}  // namespace lb::health
