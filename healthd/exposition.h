#pragma once
// The Prometheus text exposition format (version 0.0.4), as lb-healthd's /metrics writes it:
// families with their HELP and TYPE lines, samples with escaped labels, histograms. Knows nothing
// of what is measured (metrics.h renders lb-healthd's and lbd's figures with it).

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "check_stats.h"

namespace lb::health {

// One label: name="value".
struct Label {
  std::string_view name;
  std::string_view value;
};
using Labels = std::initializer_list<Label>;

// A label value as the text format writes it: backslash, double quote and newline escaped.
std::string escape_label_value(std::string_view value);
// HELP text: backslash and newline escaped.
std::string escape_help(std::string_view help);

// Writes families one after the other; each family's HELP and TYPE lines come first and all its
// samples follow them, as the format requires.
class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  void family(std::string_view name, Type type, std::string_view help);
  // A sample of the current family (`suffix`: "_bucket", "_sum", "_count" for a histogram).
  void sample(Labels labels, uint64_t value, std::string_view suffix = "");
  void sample(Labels labels, double value, std::string_view suffix = "");
  // The _bucket (cumulative, with le="+Inf"), _sum and _count lines of one histogram.
  void histogram(Labels labels, const Histogram& h);

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void line(Labels labels, std::string_view suffix, const Label* extra, std::string_view value);
  std::string out_;
  std::string name_;  // the current family
};

}  // namespace lb::health
