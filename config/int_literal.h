#pragma once
// libconfig 1.5 keeps an integer literal without the L suffix in 32 bits and wraps it silently:
// "capacity = 4294968320;" reads as 1024. That would turn a typo into a valid, wrong value, so
// the parser checks integers against the literal in the source text: this re-lexer finds what
// was written.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lb::cfg::detail {

struct Literal {
  std::string text;
  std::optional<int64_t> value;  // nullopt: beyond 64 bits
};

// Finds, among the `name = <integer>` assignments that begin on `line`, the literal libconfig
// wrapped into `stored`. Returns nullopt when the value was kept exactly (or nothing is found, e.g.
// the setting came from a file we cannot re-read), so at worst this check is skipped.
std::optional<Literal> find_wrapped_literal(std::string_view text, size_t line_begin,
                                            std::string_view name, int stored);

}  // namespace lb::cfg::detail
