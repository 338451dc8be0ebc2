#pragma once
// lbd's DPDK telemetry socket, as lbctl and lb-healthd read it (the v2 protocol: a SOCK_SEQPACKET
// unix socket; the server says hello with a JSON object on connect, then every request is a
// command such as "/lb/stats" or "/lb/flows,20" and every reply one JSON message
// {"<command>": value}). lb-healthd counts the flows of backends it drains with it.
//
// Every wait is bounded; every failure is a lb::ctl::Error whose message is one line that says
// what was tried ("cannot connect to lbd's telemetry at /var/run/dpdk/lbd/dpdk_telemetry.v2: No
// such file or directory (is lbd running?)").

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

namespace lb::ctl {

using Json = nlohmann::json;

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A connected unix socket of `type` (SOCK_STREAM, SOCK_SEQPACKET) to `path`; throws Error
// naming `who`, with `hint` when nobody listens there.
int connect_unix(const std::string& path, int type, const std::string& who,
                 const std::string& hint);
// Waits until `fd` is ready for `events` (poll's) or the deadline passes; false on timeout.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline);

// A listing lbd pages (/lb/backends, /lb/services, /lb/workers: one reply holds what fits in
// DPDK's 16 KiB, dataplane/telemetry_page.h), its pages merged.
struct Listing {
  Json entries = Json::object();  // every page's entries by key ("backend_7": {...}), no "page"
  uint64_t total = 0;             // entries lbd counted, as its last page said
  // Every page read, to the last one. False for the reply of an lbd that does not page (it may
  // have left entries out without saying so): what is not in `entries` is then not known.
  bool complete = false;
};

// Merges the pages of one listing as they come (no I/O: TelemetryClient::query_all asks).
class PageMerger {
 public:
  // Takes a page (a reply's value); returns the parameter of the page to ask for next, or
  // nullopt when the listing is done. Throws Error for a reply that is not a page of a listing
  // (not an object, a "page" entry without its counts, a next page that does not advance).
  std::optional<uint64_t> add(const Json& page);
  const Listing& listing() const { return listing_; }
  Listing take() { return std::move(listing_); }

 private:
  Listing listing_;
  std::optional<uint64_t> asked_;  // the page asked for next: the next reply must be that one
};

class TelemetryClient {
 public:
  // Connects and reads the hello; throws Error.
  TelemetryClient(const std::string& path, int timeout_ms);
  ~TelemetryClient();
  TelemetryClient(const TelemetryClient&) = delete;
  TelemetryClient& operator=(const TelemetryClient&) = delete;

  // The value of one command ("/lb/stats", "/lb/flows,20"); throws Error when the command is
  // unknown to lbd or fails there (the reply's value is null).
  Json query(const std::string& command);
  // Every page of a paged command ("/lb/backends": "/lb/backends", then "/lb/backends,NEXT"
  // while lbd says more remain), merged; throws Error as query() does, for any page.
  Listing query_all(const std::string& command);
  const Json& hello() const { return hello_; }
  const std::string& path() const { return path_; }

 private:
  Json receive(const std::string& what);

  std::string path_;
  int fd_ = -1;
  int timeout_ms_ = 0;
  size_t max_len_ = 16384;
  Json hello_;
};

// Where lbd's telemetry socket is for an EAL --file-prefix (lbd's default: the instance name).
std::string telemetry_path(const std::string& file_prefix);

}  // namespace lb::ctl
