#pragma once
// Test helper: builds frames byte by byte (Ethernet with optional 802.1Q tags, ARP, IPv4, TCP with
// options and payload, ICMP echo) with checksums computed here from scratch, and decodes frames
// for failure messages. It shares only the MacAddr type with the code under test, so a test never
// checks the parser or the checksum code against itself.
//
// Every field that a malformed-packet test may want to break has an override (std::optional):
// left unset, the builder computes the correct value.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bytes.h"

namespace lb::test {

using Bytes = std::vector<uint8_t>;
using core::MacAddr;

// ---------------------------------------------------------------------------------------------
// Addresses

constexpr uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | uint32_t{d};
}

inline MacAddr mac(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t e, uint8_t f) {
  return MacAddr{{a, b, c, d, e, f}};
}

inline std::string ip_str(uint32_t ip) {
  char s[48];
  std::snprintf(s, sizeof s, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
                ip & 0xff);
  return s;
}

inline std::string mac_str(const MacAddr& m) {
  char s[32];
  std::snprintf(s, sizeof s, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3],
                m.b[4], m.b[5]);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Raw big-endian access

inline void put8(Bytes& v, uint8_t x) {
  v.push_back(x);
}
inline void put16(Bytes& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}
inline void put32(Bytes& v, uint32_t x) {
  put16(v, static_cast<uint16_t>(x >> 16));
  put16(v, static_cast<uint16_t>(x));
}
inline void put_mac(Bytes& v, const MacAddr& m) {
  v.insert(v.end(), m.b, m.b + 6);
}
inline void append(Bytes& v, const Bytes& x) {
  v.insert(v.end(), x.begin(), x.end());
}

inline uint16_t get16(const uint8_t* p) {
  return static_cast<uint16_t>((uint16_t{p[0]} << 8) | p[1]);
}
inline uint32_t get32(const uint8_t* p) {
  return (uint32_t{get16(p)} << 16) | get16(p + 2);
}
inline void set16(uint8_t* p, uint16_t x) {
  p[0] = static_cast<uint8_t>(x >> 8);
  p[1] = static_cast<uint8_t>(x);
}
inline void set32(uint8_t* p, uint32_t x) {
  set16(p, static_cast<uint16_t>(x >> 16));
  set16(p + 2, static_cast<uint16_t>(x));
}
inline MacAddr get_mac(const uint8_t* p) {
  MacAddr m;
  for (int i = 0; i < 6; ++i) m.b[i] = p[i];
  return m;
}

// ---------------------------------------------------------------------------------------------
// RFC 1071, the plain way: 16-bit big-endian words (an odd last byte is the high half of a word
// padded with zero) summed in 64 bits, carries folded at the end.

inline uint16_t ref_sum(const uint8_t* p, size_t n, uint64_t initial = 0) {
  uint64_t s = initial;
  for (size_t i = 0; i < n; i += 2) {
    const uint64_t hi = p[i];
    const uint64_t lo = i + 1 < n ? p[i + 1] : 0;
    s += (hi << 8) | lo;
  }
  while (s > 0xffff) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}

inline uint16_t ref_checksum(const uint8_t* p, size_t n, uint64_t initial = 0) {
  return static_cast<uint16_t>(~ref_sum(p, n, initial));
}
inline uint16_t ref_checksum(const Bytes& b, uint64_t initial = 0) {
  return ref_checksum(b.data(), b.size(), initial);
}

// The IPv4 pseudo-header of a TCP/UDP checksum, as a sum to start from.
inline uint64_t ref_pseudo(uint32_t src, uint32_t dst, uint8_t proto, size_t l4_len) {
  return uint64_t{src >> 16} + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + l4_len;
}

// ---------------------------------------------------------------------------------------------
// Header specs

struct VlanTag {
  uint16_t tci = 0;
  uint16_t tpid = 0x8100;
};

struct Eth {
  MacAddr dst;
  MacAddr src;
  std::vector<VlanTag> tags;     // outermost first; usually empty or one
  std::optional<uint16_t> type;  // default: from the payload builder
};

inline Eth eth(const MacAddr& dst, const MacAddr& src) {
  return Eth{dst, src, {}, {}};
}
inline Eth eth_vlan(const MacAddr& dst, const MacAddr& src, uint16_t tci) {
  return Eth{dst, src, {VlanTag{tci, 0x8100}}, {}};
}

struct Ip {
  uint32_t src = 0;
  uint32_t dst = 0;
  uint8_t ttl = 64;
  uint8_t tos = 0;
  uint16_t id = 0;
  uint16_t frag = 0x4000;        // DF
  std::optional<uint8_t> proto;  // default: from the L4 builder
  Bytes options;                 // a multiple of 4 bytes for a consistent IHL
  // Overrides for malformed packets. The header checksum is computed over the overridden fields.
  std::optional<uint8_t> version;     // default 4
  std::optional<uint8_t> ihl;         // 32-bit words; default 5 + options / 4
  std::optional<uint16_t> total_len;  // default header + payload
  std::optional<uint16_t> checksum;   // default: correct
};

struct Tcp {
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 65535;
  uint16_t urg = 0;
  Bytes options;  // padded with EOL to a multiple of 4 unless data_off is given
  Bytes payload;
  std::optional<uint8_t> data_off;   // 32-bit words; default 5 + options / 4
  std::optional<uint16_t> checksum;  // default: correct
};

namespace tcpf {
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                         kUrg = 0x20;
}

// The options a Linux client puts on its SYN: MSS 1460, SACK permitted, timestamps, NOP, window
// scale 7. 20 bytes.
inline Bytes syn_options(uint32_t tsval = 0x01020304) {
  Bytes o = {2, 4, 0x05, 0xb4, 4, 2, 8, 10};
  put32(o, tsval);
  put32(o, 0);
  o.insert(o.end(), {1, 3, 3, 7});
  return o;
}

struct Icmp {
  uint8_t type = 8;  // echo request
  uint8_t code = 0;
  uint16_t id = 0;
  uint16_t seq = 0;
  Bytes payload;
  std::optional<uint16_t> checksum;
};

struct Arp {
  uint16_t op = 1;  // 1 request, 2 reply
  MacAddr sha;
  uint32_t spa = 0;
  MacAddr tha;
  uint32_t tpa = 0;
  uint16_t htype = 1;
  uint16_t ptype = 0x0800;
  uint8_t hlen = 6;
  uint8_t plen = 4;
};

// ---------------------------------------------------------------------------------------------
// Builders

// TCP header + options + payload, checksummed against ip.src/ip.dst.
inline Bytes tcp_segment(const Ip& ip, const Tcp& t) {
  Bytes opts = t.options;
  if (!t.data_off)
    while (opts.size() % 4) opts.push_back(0);
  Bytes s;
  put16(s, t.sport);
  put16(s, t.dport);
  put32(s, t.seq);
  put32(s, t.ack);
  const uint8_t doff = t.data_off ? *t.data_off : static_cast<uint8_t>(5 + opts.size() / 4);
  put8(s, static_cast<uint8_t>(doff << 4));
  put8(s, t.flags);
  put16(s, t.window);
  put16(s, 0);
  put16(s, t.urg);
  append(s, opts);
  append(s, t.payload);
  const uint16_t c =
      t.checksum ? *t.checksum
                 : ref_checksum(s, ref_pseudo(ip.src, ip.dst, ip.proto.value_or(6), s.size()));
  set16(s.data() + 16, c);
  return s;
}

inline Bytes icmp_message(const Icmp& m) {
  Bytes s;
  put8(s, m.type);
  put8(s, m.code);
  put16(s, 0);
  put16(s, m.id);
  put16(s, m.seq);
  append(s, m.payload);
  set16(s.data() + 2, m.checksum ? *m.checksum : ref_checksum(s));
  return s;
}

inline Bytes arp_message(const Arp& a) {
  Bytes s;
  put16(s, a.htype);
  put16(s, a.ptype);
  put8(s, a.hlen);
  put8(s, a.plen);
  put16(s, a.op);
  put_mac(s, a.sha);
  put32(s, a.spa);
  put_mac(s, a.tha);
  put32(s, a.tpa);
  return s;
}

inline Bytes ipv4_packet(const Ip& ip, uint8_t default_proto, const Bytes& l4) {
  Bytes h;
  const uint8_t ihl = ip.ihl ? *ip.ihl : static_cast<uint8_t>(5 + ip.options.size() / 4);
  put8(h, static_cast<uint8_t>((ip.version.value_or(4) << 4) | (ihl & 0x0f)));
  put8(h, ip.tos);
  put16(h,
        ip.total_len ? *ip.total_len : static_cast<uint16_t>(20 + ip.options.size() + l4.size()));
  put16(h, ip.id);
  put16(h, ip.frag);
  put8(h, ip.ttl);
  put8(h, ip.proto.value_or(default_proto));
  put16(h, 0);
  put32(h, ip.src);
  put32(h, ip.dst);
  append(h, ip.options);
  set16(h.data() + 10, ip.checksum ? *ip.checksum : ref_checksum(h));
  append(h, l4);
  return h;
}

// Ethernet header (+ tags) + payload, zero-padded to min_len (60: the minimum without FCS).
inline Bytes ethernet(const Eth& e, uint16_t default_type, const Bytes& payload,
                      size_t min_len = 60) {
  Bytes f;
  put_mac(f, e.dst);
  put_mac(f, e.src);
  for (const VlanTag& t : e.tags) {
    put16(f, t.tpid);
    put16(f, t.tci);
  }
  put16(f, e.type.value_or(default_type));
  append(f, payload);
  if (f.size() < min_len) f.resize(min_len, 0);
  return f;
}

inline Bytes tcp_frame(const Eth& e, const Ip& ip, const Tcp& t, size_t min_len = 60) {
  return ethernet(e, 0x0800, ipv4_packet(ip, 6, tcp_segment(ip, t)), min_len);
}
inline Bytes icmp_frame(const Eth& e, const Ip& ip, const Icmp& m, size_t min_len = 60) {
  return ethernet(e, 0x0800, ipv4_packet(ip, 1, icmp_message(m)), min_len);
}
inline Bytes arp_frame(const Eth& e, const Arp& a, size_t min_len = 60) {
  return ethernet(e, 0x0806, arp_message(a), min_len);
}

// ---------------------------------------------------------------------------------------------
// Decoding, for assertions and failure messages. Lenient: it reads what is there.

struct Decoded {
  bool ok = false;  // Ethernet + (ARP | IPv4 + TCP/ICMP) headers all present
  MacAddr dst, src;
  std::vector<VlanTag> tags;
  uint16_t type = 0;
  size_t l3 = 0;
  size_t l4 = 0;
  // IPv4
  uint8_t ihl = 0;
  uint16_t total_len = 0;
  uint8_t ttl = 0;
  uint8_t proto = 0;
  uint16_t id = 0;
  uint16_t frag = 0;
  uint32_t ip_src = 0;
  uint32_t ip_dst = 0;
  // TCP
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint8_t data_off = 0;
  uint16_t window = 0;
  Bytes tcp_options;
  Bytes payload;
  // ICMP
  uint8_t icmp_type = 0;
  uint8_t icmp_code = 0;
  // ARP
  Arp arp;
};

inline Decoded decode(const uint8_t* p, size_t n) {
  Decoded d;
  if (n < 14) return d;
  d.dst = get_mac(p);
  d.src = get_mac(p + 6);
  size_t off = 12;
  d.type = get16(p + off);
  while ((d.type == 0x8100 || d.type == 0x88a8) && off + 6 <= n) {
    d.tags.push_back(VlanTag{get16(p + off + 2), d.type});
    off += 4;
    d.type = get16(p + off);
  }
  off += 2;
  d.l3 = off;
  if (d.type == 0x0806) {
    if (n < off + 28) return d;
    const uint8_t* a = p + off;
    d.arp =
        Arp{get16(a + 6), get_mac(a + 8), get32(a + 14), get_mac(a + 18), get32(a + 24), get16(a),
            get16(a + 2), a[4],           a[5]};
    d.ok = true;
    return d;
  }
  if (d.type != 0x0800 || n < off + 20) return d;
  const uint8_t* ip = p + off;
  d.ihl = static_cast<uint8_t>((ip[0] & 0x0f) * 4);
  d.total_len = get16(ip + 2);
  d.id = get16(ip + 4);
  d.frag = get16(ip + 6);
  d.ttl = ip[8];
  d.proto = ip[9];
  d.ip_src = get32(ip + 12);
  d.ip_dst = get32(ip + 16);
  d.l4 = off + d.ihl;
  const size_t end = std::min(n, off + d.total_len);
  if (d.proto == 6 && end >= d.l4 + 20) {
    const uint8_t* t = p + d.l4;
    d.sport = get16(t);
    d.dport = get16(t + 2);
    d.seq = get32(t + 4);
    d.ack = get32(t + 8);
    d.data_off = static_cast<uint8_t>((t[12] >> 4) * 4);
    d.flags = t[13];
    d.window = get16(t + 14);
    if (d.data_off >= 20 && d.l4 + d.data_off <= end) {
      d.tcp_options.assign(t + 20, t + d.data_off);
      d.payload.assign(t + d.data_off, p + end);
      d.ok = true;
    }
  } else if (d.proto == 1 && end >= d.l4 + 8) {
    d.icmp_type = p[d.l4];
    d.icmp_code = p[d.l4 + 1];
    d.payload.assign(p + d.l4 + 8, p + end);
    d.ok = true;
  }
  return d;
}
inline Decoded decode(const Bytes& b) {
  return decode(b.data(), b.size());
}

inline std::string tcp_flags_str(uint8_t f) {
  std::string s;
  const char* names = "FSRPAUEC";
  for (int i = 0; i < 8; ++i)
    if (f & (1 << i)) s += names[i];
  return s.empty() ? "." : s;
}

// "" when the IPv4 header checksum and the TCP or ICMP checksum of the frame verify (recomputed
// from scratch); otherwise what is wrong. Non-IPv4 frames verify trivially.
inline std::string checksum_errors(const uint8_t* p, size_t n) {
  const Decoded d = decode(p, n);
  if (d.type != 0x0800) return "";
  if (n < d.l3 + 20 || d.ihl < 20 || n < d.l3 + d.ihl) return "IPv4 header truncated";
  std::string err;
  char buf[128];
  const uint8_t* ip = p + d.l3;
  if (ref_sum(ip, d.ihl) != 0xffff) {
    Bytes h(ip, ip + d.ihl);
    set16(h.data() + 10, 0);
    std::snprintf(buf, sizeof buf, "IPv4 checksum 0x%04x, want 0x%04x; ", get16(ip + 10),
                  ref_checksum(h));
    err += buf;
  }
  if (d.total_len < d.ihl || d.l3 + d.total_len > n) return err + "IPv4 total length bad";
  const uint8_t* l4 = p + d.l4;
  const size_t l4_len = d.total_len - d.ihl;
  if (d.proto == 6 && l4_len >= 20) {
    if (ref_sum(l4, l4_len, ref_pseudo(d.ip_src, d.ip_dst, 6, l4_len)) != 0xffff) {
      Bytes s(l4, l4 + l4_len);
      set16(s.data() + 16, 0);
      std::snprintf(buf, sizeof buf, "TCP checksum 0x%04x, want 0x%04x; ", get16(l4 + 16),
                    ref_checksum(s, ref_pseudo(d.ip_src, d.ip_dst, 6, l4_len)));
      err += buf;
    }
  } else if (d.proto == 1 && l4_len >= 8) {
    if (ref_sum(l4, l4_len) != 0xffff) {
      Bytes s(l4, l4 + l4_len);
      set16(s.data() + 2, 0);
      std::snprintf(buf, sizeof buf, "ICMP checksum 0x%04x, want 0x%04x; ", get16(l4 + 2),
                    ref_checksum(s));
      err += buf;
    }
  }
  return err;
}
inline std::string checksum_errors(const Bytes& b) {
  return checksum_errors(b.data(), b.size());
}

// One line per layer.
inline std::string describe(const uint8_t* p, size_t n) {
  const Decoded d = decode(p, n);
  std::string s;
  char buf[256];
  if (n < 14) {
    std::snprintf(buf, sizeof buf, "runt frame, %zu bytes\n", n);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "eth %s > %s type 0x%04x len %zu", mac_str(d.src).c_str(),
                mac_str(d.dst).c_str(), d.type, n);
  s += buf;
  for (const VlanTag& t : d.tags) {
    std::snprintf(buf, sizeof buf, " [tag 0x%04x tci 0x%04x vid %u]", t.tpid, t.tci,
                  t.tci & 0x0fffu);
    s += buf;
  }
  s += "\n";
  if (d.type == 0x0806 && d.ok) {
    std::snprintf(buf, sizeof buf, "arp op %u sha %s spa %s tha %s tpa %s\n", d.arp.op,
                  mac_str(d.arp.sha).c_str(), ip_str(d.arp.spa).c_str(), mac_str(d.arp.tha).c_str(),
                  ip_str(d.arp.tpa).c_str());
    return s + buf;
  }
  if (d.type != 0x0800 || n < d.l3 + 20) return s;
  const uint8_t* ip = p + d.l3;
  std::snprintf(buf, sizeof buf,
                "ipv4 %s > %s ihl %u len %u id 0x%04x frag 0x%04x ttl %u proto %u csum 0x%04x\n",
                ip_str(d.ip_src).c_str(), ip_str(d.ip_dst).c_str(), d.ihl, d.total_len, d.id,
                d.frag, d.ttl, d.proto, get16(ip + 10));
  s += buf;
  if (d.proto == 6 && d.data_off) {
    std::snprintf(buf, sizeof buf,
                  "tcp %u > %u [%s] seq %u ack %u win %u doff %u opts %zu payload %zu csum "
                  "0x%04x\n",
                  d.sport, d.dport, tcp_flags_str(d.flags).c_str(), d.seq, d.ack, d.window,
                  d.data_off, d.tcp_options.size(), d.payload.size(), get16(p + d.l4 + 16));
    s += buf;
  } else if (d.proto == 1 && d.ok) {
    std::snprintf(buf, sizeof buf, "icmp type %u code %u id %u seq %u payload %zu csum 0x%04x\n",
                  d.icmp_type, d.icmp_code, get16(p + d.l4 + 4), get16(p + d.l4 + 6),
                  d.payload.size(), get16(p + d.l4 + 2));
    s += buf;
  }
  const std::string err = checksum_errors(p, n);
  if (!err.empty()) s += "checksums: " + err + "\n";
  return s;
}
inline std::string describe(const Bytes& b) {
  return describe(b.data(), b.size());
}

inline std::string hexdump(const uint8_t* p, size_t n) {
  std::string s;
  char buf[24];
  for (size_t i = 0; i < n; i += 16) {
    std::snprintf(buf, sizeof buf, "%04zx ", i);
    s += buf;
    for (size_t j = i; j < i + 16 && j < n; ++j) {
      std::snprintf(buf, sizeof buf, " %02x", p[j]);
      s += buf;
    }
    s += "\n";
  }
  return s;
}
inline std::string hexdump(const Bytes& b) {
  return hexdump(b.data(), b.size());
}

// ---------------------------------------------------------------------------------------------
// gtest assertions

// EXPECT_TRUE(FramesEqual(want, got)): on a mismatch, the first differing offset and both frames
// decoded and dumped.
inline ::testing::AssertionResult FramesEqual(const Bytes& want, const Bytes& got) {
  if (want == got) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  return ::testing::AssertionFailure()
         << "frames differ at offset " << i << " (want " << want.size() << " bytes, got "
         << got.size() << ")\n--- want\n"
         << describe(want) << hexdump(want) << "--- got\n"
         << describe(got) << hexdump(got);
}

// EXPECT_TRUE(ChecksumsOk(frame)).
inline ::testing::AssertionResult ChecksumsOk(const Bytes& f) {
  const std::string err = checksum_errors(f);
  if (err.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << err << "\n" << describe(f) << hexdump(f);
}

}  // namespace lb::test
