#pragma once
// The control side's one way to say an operation failed (lb-healthd's runtime changes and control
// protocol, lbctl): a short code for programs ("not_found", "invalid", "io", ...) and one line
// for people. Status is "done or why not"; Result<T> is "a T or why not". The data plane does
// not use them: it returns verdicts and counts.

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace lb {

struct Error {
  std::string code;
  std::string message;
};

class [[nodiscard]] Status {
 public:
  Status() = default;                        // ok
  Status(Error e) : error_(std::move(e)) {}  // NOLINT(google-explicit-constructor): return Error{}
  static Status failure(std::string code, std::string message) {
    return Status(Error{std::move(code), std::move(message)});
  }

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  // Only when !ok().
  const Error& error() const { return *error_; }

 private:
  std::optional<Error> error_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error e) : v_(std::move(e)) {}      // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  // Only when ok().
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  // Only when !ok().
  const Error& error() const { return std::get<1>(v_); }
  Status status() const { return ok() ? Status() : Status(error()); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace lb
