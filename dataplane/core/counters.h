#pragma once
// Per-worker counters. Each is written by its one worker and read by the telemetry thread: a
// relaxed load and store (a plain add on x86, no lock prefix) is enough, since no reader needs
// more than an eventually consistent total.

#include <atomic>
#include <cstdint>

#include "drop_reason.h"
#include "ids.h"

// ThreadSanitizer builds (gcc says so with __SANITIZE_THREAD__, clang with __has_feature) keep
// Counter's atomics, which it checks.
#if defined(__SANITIZE_THREAD__)
#define LB_COUNTER_ATOMICS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LB_COUNTER_ATOMICS 1
#endif
#endif

namespace lb::core {

class Counter {
 public:
  // Always inline: one instruction (or a load, an add and a store), which gcc otherwise calls
  // out of line from a function as large as handle_tcp with new_flow inlined (4 calls per SYN).
  [[gnu::always_inline]] void add(uint64_t n = 1) {
#if defined(__x86_64__) && !defined(LB_COUNTER_ATOMICS)
    // The same relaxed single-writer update as below in one add to memory, where the compiler
    // makes three instructions of an atomic's load and store (it never merges atomics): on x86
    // an aligned 8-byte access is single-copy atomic, so the reader sees the old or the new
    // value, as it does with the load and store. The atomic's value is a uint64_t (no aliasing
    // of another type). ThreadSanitizer builds keep the atomics, which it checks.
    asm("addq %1, %0" : "+m"(*reinterpret_cast<uint64_t*>(&v_)) : "er"(n));
#else
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
#endif
  }
  // Gauges go down by adding the two's complement; the sum over workers stays right.
  void sub(uint64_t n = 1) { add(~n + 1); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
  static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t) &&
                std::atomic<uint64_t>::is_always_lock_free);
};

struct BackendCounters {
  Counter packets_in;  // client -> backend
  Counter bytes_in;
  Counter packets_out;  // backend -> client
  Counter bytes_out;
  Counter flows_active;  // gauge
  Counter flows_total;
  Counter syn_rst;         // passive signal: answered our SYN with RST
  Counter syn_timeout;     // passive signal: left a SYN unanswered until the client retried
  Counter flows_rehashed;  // flows created for a miss (MissMode kRehash): part of flows_total
};

// Per service id. An id's counters run for the life of the process, as a backend id's do.
struct ServiceCounters {
  Counter flows_rehashed;  // misses of this service that became flows (MissMode kRehash)
};

struct PortCounters {
  Counter rx_packets, rx_bytes, tx_packets, tx_bytes;
};

// One full-NAT local address's ports on this worker (core/snat.h).
struct FullnatCounters {
  Counter ports_in_use;    // gauge
  Counter alloc_failures;  // a new flow found every local address of its worker exhausted
};

struct alignas(64) WorkerCounters {
  PortCounters port[kMaxPorts];
  Counter drops[kDropReasonCount];
  Counter flows_created;
  Counter flows_expired;
  Counter flows_reused;          // replaced before expiry by a new SYN on the same tuple
  Counter flows_refused;         // table full, SYN budget full (drop-new) or conflict
  Counter syn_evicted;           // embryonic flows evicted for a new SYN (evict-embryonic)
  Counter syn_expired_pressure;  // embryonic flows aged by tcp_syn_timeout_pressure
  Counter syn_stateless;         // SYNs routed by the Maglev table without a flow (stateless)
  Counter flows_rehashed;        // misses that became flows (MissMode kRehash)
  Counter flows_reset;           // their backend stopped serving (removed, or maint with drop)
  Counter flows_active;          // gauge
  Counter retries;               // flows moved to another backend
  Counter retry_syn_replayed;    // the saved SYN was replayed to the new backend at once
  Counter rst_no_backend;
  Counter rst_flow_miss;
  Counter rst_backend_stopped;  // RSTs sent to either side of a flow whose backend stopped
  Counter arp_replies;
  Counter arp_learned;
  Counter icmp_echo_replies;
  Counter icmp_time_exceeded;      // sent: a dnat packet's TTL ran out here
  Counter icmp_frag_needed;        // sent: a tunnel packet would exceed the backend port's MTU
  Counter icmp_rate_limited;       // ICMP errors not sent (IcmpLimiter): the packet only dropped
  Counter tunnel_packets;          // client packets sent to backends in IPIP (forward = "tunnel")
  Counter icmp_errors_translated;  // ICMP errors about a flow sent on to its other end
  Counter handoff_out;
  Counter handoff_in;
  Counter idle_sleeps;                        // dataplane.idle.mode "sleep": sleeps taken
  Counter idle_sleep_us;                      // and the microseconds asked for
  BackendCounters backend[kMaxBackends + 1];  // by BackendId, and kGoneBackend
  FullnatCounters fullnat[limits::kMaxFullnatAddresses];  // by local address index
  ServiceCounters service[kMaxServices];                  // by ServiceId

  void drop(DropReason r) { drops[static_cast<size_t>(r)].add(); }
};

}  // namespace lb::core
