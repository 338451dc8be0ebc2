#include "rss.h"

#include "bytes.h"

namespace lb::core {

const uint8_t kRssKey[40] = {0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
                             0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
                             0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
                             0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

uint32_t toeplitz_hash(const uint8_t* key, const uint8_t* data, size_t len) {
  uint32_t result = 0;
  uint32_t window = load_be32(key);  // the 32 key bits aligned with the current input bit
  for (size_t i = 0; i < len; ++i) {
    for (int bit = 7; bit >= 0; --bit) {
      if ((data[i] >> bit) & 1) result ^= window;
      window = (window << 1) | ((key[i + 4] >> bit) & 1u);
    }
  }
  return result;
}

RssOwnerTable::RssOwnerTable() {
  for (int pos = 0; pos < 6; ++pos) {
    for (int v = 0; v < 256; ++v) {
      uint8_t tuple[6] = {};
      tuple[pos] = static_cast<uint8_t>(v);
      t[pos][v] = toeplitz_hash(kRssKey, tuple, sizeof tuple);
    }
  }
}

const RssOwnerTable kRssOwnerTable;

std::vector<RssFields> rss_fields(const std::vector<PortRole>& ports) {
  bool clients_elsewhere = false;
  for (const PortRole& p : ports) clients_elsewhere |= !p.reaches_backends;
  std::vector<RssFields> out;
  out.reserve(ports.size());
  for (const PortRole& p : ports) {
    if (!p.reaches_backends)
      out.push_back(RssFields::kSource);
    else if (!p.answers_vips && clients_elsewhere)
      out.push_back(RssFields::kDestination);
    else
      out.push_back(RssFields::kFourTuple);
  }
  return out;
}

}  // namespace lb::core
