#pragma once
// Text from a file, a request or a command line, made safe for a one-line message.

#include <string>
#include <string_view>

namespace lb {

// `s` on one line whatever it holds: CR, LF and tab as \r, \n, \t, the other control characters
// as \xNN (a path given as "/x\r\nX: 1" broke a message, and lbctl's one line of error, in two;
// an escape sequence could clear the operator's screen).
inline std::string printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace lb
