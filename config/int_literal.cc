#include "int_literal.h"

#include <algorithm>
#include <charconv>
#include <limits>

namespace lb::cfg::detail {

namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '*';
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f';
}

bool is_digit(char c, bool hex) {
  return (c >= '0' && c <= '9') || (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
}

}  // namespace

std::optional<Literal> find_wrapped_literal(std::string_view text, size_t line_begin,
                                            std::string_view name, int stored) {
  const size_t line_end = std::min(text.find('\n', line_begin), text.size());
  std::optional<Literal> wrapped;
  for (size_t at = line_begin; at < line_end; ++at) {
    // Skip strings and comments: "name = 5" inside them is not an assignment.
    if (text[at] == '"') {
      for (++at; at < line_end && text[at] != '"'; ++at) {
        if (text[at] == '\\') ++at;
      }
      continue;
    }
    if (text[at] == '#' || text.substr(at, 2) == "//") break;
    if (text.substr(at, 2) == "/*") {
      at = text.find("*/", at + 2);
      if (at == std::string_view::npos || at >= line_end) break;
      ++at;
      continue;
    }
    if (text.substr(at, name.size()) != name) continue;
    if (at > 0 && is_name_char(text[at - 1])) continue;
    size_t pos = at + name.size();
    if (pos < text.size() && is_name_char(text[pos])) continue;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    if (pos >= text.size() || (text[pos] != '=' && text[pos] != ':')) continue;
    ++pos;
    while (pos < text.size() && is_space(text[pos])) ++pos;
    const size_t start = pos;
    bool negative = false;
    if (pos < text.size() && (text[pos] == '-' || text[pos] == '+')) negative = text[pos++] == '-';
    const bool hex = !negative && pos + 2 < text.size() && text[pos] == '0' &&
                     (text[pos + 1] == 'x' || text[pos + 1] == 'X') &&
                     is_digit(text[pos + 2], true);
    if (hex) pos += 2;
    const size_t digits = pos;
    while (pos < text.size() && is_digit(text[pos], hex)) ++pos;
    if (pos == digits || (pos < text.size() && (text[pos] == 'L' || text[pos] == '.'))) continue;

    // Re-read the literal the way libconfig 1.5 does (strtol/strtoul, then a cast to int) to
    // recognise the one that produced `stored`, and exactly, to know what was meant.
    Literal literal{std::string(text.substr(start, pos - start)), std::nullopt};
    int as_stored = 0;
    if (hex) {
      uint64_t v = 0;
      const auto [end, ec] = std::from_chars(text.data() + digits, text.data() + pos, v, 16);
      if (ec == std::errc{} && v <= uint64_t{std::numeric_limits<int64_t>::max()}) {
        literal.value = static_cast<int64_t>(v);
      }
      if (ec != std::errc{}) v = std::numeric_limits<uint64_t>::max();
      as_stored = static_cast<int>(static_cast<uint32_t>(v));
    } else {
      // from_chars takes no '+', so parse the magnitude and apply the sign.
      uint64_t magnitude = 0;
      const auto [end, ec] =
          std::from_chars(text.data() + digits, text.data() + pos, magnitude, 10);
      constexpr uint64_t kMaxPositive = std::numeric_limits<int64_t>::max();
      int64_t clamped = 0;
      if (ec != std::errc{} || magnitude > kMaxPositive + (negative ? 1 : 0)) {
        clamped =
            negative ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
      } else if (negative) {
        // -(2^63) is representable; negate in unsigned space to avoid overflow.
        clamped = static_cast<int64_t>(~magnitude + 1);
        literal.value = clamped;
      } else {
        clamped = static_cast<int64_t>(magnitude);
        literal.value = clamped;
      }
      as_stored = static_cast<int>(static_cast<uint32_t>(static_cast<uint64_t>(clamped)));
    }
    if (as_stored != stored) continue;
    if (literal.value && *literal.value == stored) return std::nullopt;  // kept exactly
    wrapped = std::move(literal);
  }
  return wrapped;
}

}  // namespace lb::cfg::detail
