#include "exposition.h"

#include <charconv>
#include <cmath>
#include <utility>

namespace lb::health {

// -- The text format -----------------------------------------------------------------------------

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back exactly
  return std::string(buf, r.ptr);
}

const char* type_name(Exposition::Type t) {
  switch (t) {
    case Exposition::Type::kCounter:
      return "counter";
    case Exposition::Type::kGauge:
      return "gauge";
    case Exposition::Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

void Exposition::family(std::string_view name, Type type, std::string_view help) {
  name_ = std::string(name);
  out_ += "# HELP " + name_ + " " + escape_help(help) + "\n";
  out_ += "# TYPE " + name_ + " " + type_name(type) + "\n";
}

void Exposition::line(Labels labels, std::string_view suffix, const Label* extra,
                      std::string_view value) {
  out_ += name_;
  out_ += suffix;
  if (labels.size() != 0 || extra) {
    out_ += '{';
    bool first = true;
    const auto add = [&](const Label& l) {
      if (!first) out_ += ',';
      first = false;
      out_ += l.name;
      out_ += "=\"";
      out_ += escape_label_value(l.value);
      out_ += '"';
    };
    for (const Label& l : labels) add(l);
    if (extra) add(*extra);
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void Exposition::sample(Labels labels, uint64_t value, std::string_view suffix) {
  line(labels, suffix, nullptr, std::to_string(value));
}

void Exposition::sample(Labels labels, double value, std::string_view suffix) {
  line(labels, suffix, nullptr, format_double(value));
}

void Exposition::histogram(Labels labels, const Histogram& h) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    const std::string le = format_double(h.bounds[i]);
    const Label extra{"le", le};
    line(labels, "_bucket", &extra, std::to_string(cumulative));
  }
  const Label inf{"le", "+Inf"};
  line(labels, "_bucket", &inf, std::to_string(h.count));
  line(labels, "_sum", nullptr, format_double(h.sum));
  line(labels, "_count", nullptr, std::to_string(h.count));
}

}  // namespace lb::health
