// The parser's frame: reading the tree, errors that point at a line, closed groups, and the
// scalar conversions every section uses (parser.h).

#include "parser.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace lb::cfg::detail {

namespace {

const char* type_name(Setting::Type type) {
  switch (type) {
    case Setting::TypeInt:
    case Setting::TypeInt64:
      return "an integer";
    case Setting::TypeFloat:
      return "a float";
    case Setting::TypeString:
      return "a string";
    case Setting::TypeBoolean:
      return "a boolean";
    case Setting::TypeGroup:
      return "a group { ... }";
    case Setting::TypeArray:
      return "an array [ ... ]";
    case Setting::TypeList:
      return "a list ( ... )";
    case Setting::TypeNone:
      break;
  }
  return "nothing";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLen) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

}  // namespace

std::string join(const std::vector<std::string_view>& names, std::string_view sep) {
  std::string out;
  for (const std::string_view name : names) {
    if (!out.empty()) out += sep;
    out += name;
  }
  return out;
}

// 0.0.0.0/8 ("this network"), 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved, with the
// limited broadcast) can never be a host we send to or answer from.
std::optional<std::string> non_unicast_reason(uint32_t addr) {
  if ((addr >> 24) == 0) return "is in 0.0.0.0/8, not a usable host address";
  if ((addr >> 28) == 0xe) return "is a multicast address";
  if ((addr >> 28) == 0xf) return "is a reserved or broadcast address";
  return std::nullopt;
}

std::optional<std::string> read_file(const std::string& path, int* error) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) {
    *error = errno;
    return std::nullopt;
  }
  std::string text;
  std::array<char, 65536> buffer{};
  for (;;) {
    const size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    text.append(buffer.data(), n);
    if (n < buffer.size()) break;
  }
  if (std::ferror(file.get()) != 0) {
    // fopen() succeeds on a directory; the read is what fails, with EISDIR.
    *error = errno != 0 ? errno : EIO;
    return std::nullopt;
  }
  return text;
}

Config Parser::run() {
  const std::string& text = sources_.at("").text;
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    // libconfig reads C strings and would silently drop everything after the NUL.
    const auto line =
        1 + std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(nul), '\n');
    throw ConfigError(name_, static_cast<int>(line), "", "file contains a NUL byte");
  }
  if (text.starts_with("\xEF\xBB\xBF")) {
    // libconfig would say "syntax error" at line 1, of a line that looks right.
    throw ConfigError(name_, 1, "",
                      "the file starts with a UTF-8 byte order mark (EF BB BF): save it without "
                      "one");
  }
  libconfig::Config tree;
  if (!include_dir_.empty()) tree.setIncludeDir(include_dir_.c_str());
  try {
    tree.readString(text);
  } catch (const libconfig::ParseException& e) {
    // libconfig says "syntax error", "duplicate setting name", "cannot open include file"...
    const std::string file = e.getFile() != nullptr ? source_name(e.getFile()) : "";
    std::string what = e.getError();
    if (what == "cannot open include file") what += include_problem(file, e.getLine());
    throw ConfigError(file.empty() ? name_ : file, e.getLine(), "", what);
  }

  Config config;
  config.file = name_;
  const Setting& root = tree.getRoot();
  check_keys(root, schema::Group::kRoot);
  if (const Setting* s = find(root, "instance")) {
    config.instance = as_name(*s);
    config.instance_line = static_cast<int>(s->getSourceLine());
  }
  config.dataplane = parse_dataplane(as_group(require(root, "dataplane")));
  parse_services(as_list(require(root, "services")), config);
  check_backends(config);
  check_fullnat_addresses(config);
  if (const Setting* h = find(root, "healthd")) config.healthd = parse_healthd(as_group(*h));
  if (const Setting* b = find(root, "bgp")) config.bgp = parse_bgp(as_group(*b), config);
  return config;
}

std::string Parser::source_name(const char* file) const {
  if (include_dir_.empty() || include_dir_ == "." || file[0] == '/') return file;
  return include_dir_ + (include_dir_.back() == '/' ? "" : "/") + file;
}

std::string Parser::file_of(const Setting& s) const {
  const char* file = s.getSourceFile();
  return file == nullptr ? name_ : source_name(file);
}

void Parser::fail(const Setting& s, const std::string& what) const {
  throw ConfigError(file_of(s), static_cast<int>(s.getSourceLine()), s.getPath(), what);
}

void Parser::fail(const Where& where, const std::string& what) const {
  fail(*where.setting, what);
}

std::string Parser::child_path(const Setting& parent, std::string_view key) {
  std::string path = parent.getPath();
  if (!path.empty()) path += ".";
  return path + std::string(key);
}

// Every group is closed: a misspelt optional key would otherwise be ignored and its default
// used without a word.
void Parser::check_keys(const Setting& group, schema::Group keys) const {
  const std::span<const std::string_view> allowed = schema::keys(keys);
  for (int i = 0; i < group.getLength(); ++i) {
    const Setting& child = group[i];
    const std::string_view key = child.getName();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string what = "unknown setting " + quote(key) + " (";
    std::string_view best;
    size_t best_distance = key.size() < 5 ? 2 : 3;  // closer than this is a likely typo
    for (const std::string_view candidate : allowed) {
      const size_t d = edit_distance(key, candidate);
      if (d < best_distance) {
        best_distance = d;
        best = candidate;
      }
    }
    if (!best.empty()) what += "did you mean " + quote(best) + "? ";
    what +=
        "allowed: " + join(std::vector<std::string_view>(allowed.begin(), allowed.end()), ", ") +
        ")";
    fail(child, what);
  }
}

const Setting* Parser::find(const Setting& group, const char* key) const {
  return group.exists(key) ? &group[key] : nullptr;
}

const Setting& Parser::require(const Setting& group, const char* key) const {
  if (const Setting* s = find(group, key)) return *s;
  // The setting is not there to point at; the group that should hold it is.
  throw ConfigError(file_of(group), static_cast<int>(group.getSourceLine()), child_path(group, key),
                    "missing required setting " + quote(key));
}

void Parser::expect_type(const Setting& s, Setting::Type type) const {
  if (s.getType() != type) {
    fail(s, std::string("expected ") + type_name(type) + ", found " + type_name(s.getType()));
  }
}

const Setting& Parser::as_group(const Setting& s) const {
  expect_type(s, Setting::TypeGroup);
  return s;
}

const Setting& Parser::as_list(const Setting& s) const {
  // An empty "[]" is an array to libconfig, but means the same as "()" here.
  if (s.getType() == Setting::TypeArray && s.getLength() == 0) return s;
  expect_type(s, Setting::TypeList);
  return s;
}

int64_t Parser::as_integer(const Setting& s, int64_t min, int64_t max) const {
  int64_t value = 0;
  std::string shown;
  if (s.getType() == Setting::TypeInt64) {
    value = static_cast<long long>(s);
  } else if (s.getType() == Setting::TypeInt) {
    value = static_cast<int>(s);
    if (std::optional<Literal> literal = wrapped_literal(s)) {
      if (!literal->value) {
        fail(s, "integer " + literal->text + " does not fit in 64 bits (expected " +
                    std::to_string(min) + ".." + std::to_string(max) + ")");
      }
      value = *literal->value;
      shown = literal->text;
    }
  } else {
    fail(s, std::string("expected an integer, found ") + type_name(s.getType()));
  }
  if (value < min || value > max) {
    if (shown.empty()) shown = std::to_string(value);
    fail(s,
         "value " + shown + " is out of range " + std::to_string(min) + ".." + std::to_string(max));
  }
  return value;
}

std::optional<Literal> Parser::wrapped_literal(const Setting& s) const {
  const char* name = s.getName();
  const unsigned line = s.getSourceLine();
  if (name == nullptr || line == 0) return std::nullopt;
  const Source* source = source_of(s);
  if (source == nullptr || line > source->line_starts.size()) return std::nullopt;
  return find_wrapped_literal(source->text, source->line_starts[line - 1], name,
                              static_cast<int>(s));
}

const Source* Parser::source_of(const Setting& s) const {
  const char* file = s.getSourceFile();
  return source(file == nullptr ? "" : source_name(file));
}

std::string Parser::include_problem(const std::string& file, int line) const {
  // libconfig names neither the file it could not open nor why: the @include on that line says
  // which, and opening it again says why.
  const Source* src = source(file);
  if (src == nullptr || line < 1 || static_cast<size_t>(line) > src->line_starts.size()) return "";
  const size_t begin = src->line_starts[static_cast<size_t>(line) - 1];
  const size_t end = src->text.find('\n', begin);
  const std::string text = src->text.substr(begin, end == std::string::npos ? end : end - begin);
  const size_t at = text.find("@include");
  const size_t open = at == std::string::npos ? at : text.find('"', at);
  const size_t close = open == std::string::npos ? open : text.find('"', open + 1);
  if (close == std::string::npos) return "";
  const std::string name = text.substr(open + 1, close - open - 1);
  const std::string path = source_name(name.c_str());
  int error = 0;
  if (read_file(path, &error)) return " \"" + name + "\"";
  return " \"" + name + "\" (" + path + ": " + std::strerror(error) + ")";
}

const Source* Parser::source(const std::string& key) const {
  auto it = sources_.find(key);
  if (it == sources_.end()) {
    int error = 0;
    std::optional<std::string> text = read_file(key, &error);
    if (!text) return nullptr;
    it = sources_.emplace(key, Source(std::move(*text))).first;
  }
  return &it->second;
}

std::string Parser::as_string(const Setting& s) const {
  expect_type(s, Setting::TypeString);
  return static_cast<const char*>(s);
}

bool Parser::as_bool(const Setting& s) const {
  expect_type(s, Setting::TypeBoolean);
  return static_cast<bool>(s);
}

std::string Parser::as_name(const Setting& s) const {
  std::string value = as_string(s);
  if (!valid_name(value)) {
    fail(s, "invalid name " + quote(value) + " (use 1.." + std::to_string(kMaxNameLen) +
                " characters from A-Z a-z 0-9 _ -)");
  }
  return value;
}

uint32_t Parser::as_address(const Setting& s) const {
  const std::string text = as_string(s);
  const std::optional<uint32_t> addr = parse_ipv4(text);
  if (!addr) {
    fail(s, "malformed IPv4 address " + quote(text) +
                " (expected a.b.c.d, decimal, no leading zeros)");
  }
  if (std::optional<std::string> reason = non_unicast_reason(*addr)) {
    fail(s, format_ipv4(*addr) + " " + *reason);
  }
  return *addr;
}

}  // namespace lb::cfg::detail
