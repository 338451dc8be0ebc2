#pragma once
// Why a packet was dropped. Every drop on the packet path is counted under exactly one reason;
// the names are what telemetry and lbctl show.

#include <array>
#include <cstdint>
#include <string_view>

namespace lb::core {

#define LB_DROP_REASONS(X)                                                                    \
  X(kTruncated, "truncated")      /* shorter than its headers */                              \
  X(kVlanStacked, "vlan_stacked") /* more than one 802.1Q tag */                              \
  X(kUnsupportedEthertype, "unsupported_ethertype")                                           \
  X(kNotOurMac, "not_our_mac")       /* another host's, or not ARP to a group */              \
  X(kEthBadSource, "eth_bad_source") /* SYN from a group MAC */                               \
  X(kIpVersion, "ip_version")                                                                 \
  X(kIpHeaderLength, "ip_bad_ihl") /* IHL < 5 or past the frame */                            \
  X(kIpOptions, "ip_options")                                                                 \
  X(kIpTotalLength, "ip_bad_total_length")                                                    \
  X(kIpChecksum, "ip_bad_checksum")                                                           \
  X(kIpFragment, "ip_fragment")                                                               \
  X(kIpBadAddress, "ip_bad_address") /* martian or spoofed source */                          \
  X(kUnsupportedProtocol, "unsupported_protocol")                                             \
  X(kTcpHeaderLength, "tcp_bad_offset")                                                       \
  X(kTcpFlags, "tcp_bad_flags") /* SYN+FIN, SYN+RST, no flags */                              \
  X(kNotForUs, "not_for_us")    /* TCP to no VIP:port, no flow */                             \
  X(kLocalTcp, "local_tcp")     /* TCP to lbd's own addresses */                              \
  X(kFlowMiss, "flow_miss")     /* non-SYN, no flow, policy drop */                           \
  X(kFlowTableFull, "flow_table_full")                                                        \
  X(kSynBudgetFull, "syn_budget_full") /* drop-new: embryonic budget used up */               \
  X(kFlowConflict, "flow_conflict")    /* backend side tuple already in use */                \
  X(kNoBackend, "no_backend")          /* SYN, no live backend, drop */                       \
  X(kNeighborUnresolved, "neighbor_unresolved")                                               \
  X(kNoRoute, "no_route")                                                                     \
  X(kArpMalformed, "arp_malformed")                                                           \
  X(kArpNotForUs, "arp_not_for_us")                                                           \
  X(kIcmpMalformed, "icmp_malformed")                                                         \
  X(kIcmpNotForUs, "icmp_not_for_us")                                                         \
  X(kIcmpUnsupported, "icmp_unsupported")                                                     \
  X(kBackendStopped, "backend_stopped") /* flow's backend was removed/stopped */              \
  X(kRetryAbsorbed, "retry_absorbed")   /* backend RST swallowed by a retry */                \
  X(kHandoffFull, "handoff_full")       /* owner worker's ring was full */                    \
  X(kTxFull, "tx_full")                 /* port TX queue refused it */                        \
  X(kNoBuffer, "no_buffer")             /* could not build a reply */                         \
  X(kTtlExceeded, "ttl_exceeded")       /* TTL <= 1 at a dnat hop: ICMP sent */               \
  X(kFragNeeded, "frag_needed")         /* too big once tunnelled: ICMP sent */               \
  X(kMultiSegment, "multi_segment")     /* chained mbuf: not produced at MTU 1500 */          \
  X(kFullnatPortsExhausted, "fullnat_ports_exhausted") /* no free local port */               \
  X(kFullnatPortsCooling, "fullnat_ports_cooling")     /* free ports all in their hold */     \
  X(kFullnatNoFlow, "fullnat_no_flow")                 /* to a local address:port, no flow */ \
  X(kIcmpErrorNoFlow, "icmp_error_no_flow")            /* quotes no flow's packet */          \
  X(kIcmpErrorRateLimited, "icmp_error_rate_limited")

enum class DropReason : uint8_t {
#define LB_X(id, name) id,
  LB_DROP_REASONS(LB_X)
#undef LB_X
      kCount
};

inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::kCount);

inline constexpr std::array<std::string_view, kDropReasonCount> kDropReasonNames = {
#define LB_X(id, name) name,
    LB_DROP_REASONS(LB_X)
#undef LB_X
};

inline constexpr std::string_view to_string(DropReason r) {
  return kDropReasonNames[static_cast<size_t>(r)];
}

}  // namespace lb::core
