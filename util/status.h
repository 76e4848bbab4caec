// Errors are values: every fallible function returns a Status or a Result<T>
// carrying a code and a human-readable reason. No exceptions cross module
// boundaries.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace tipd {

// Broad error categories. Modules with richer rule sets (channel/, ledger/)
// carry their own rule enums and map onto these at the boundary.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // caller or peer input that breaks a rule
  kNotFound,
  kAlreadyExists,
  kCorruption,  // stored or received bytes that do not decode
  kIOError,
  kPermissionDenied,
  kFailedPrecondition,  // valid request in the wrong state
  kResourceExhausted,
  kUnavailable,
  kInternal,  // our own bug; should never reach a user
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message", or "OK".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Result<T>: either a value or a non-OK Status.
// A value or an error: the project's one Result type. E is Status for most
// code; the channel state machine uses its richer ChannelError
// (channel::ChannelResult<T> = Result<T, channel::ChannelError>).
template <typename T, typename E = Status>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT
  Result(E error) : v_(std::in_place_index<1>, std::move(error)) {   // NOLINT
    if constexpr (std::is_same_v<E, Status>) {
      assert(!std::get<1>(v_).ok() && "Result constructed from an OK status");
    }
  }

  bool ok() const { return v_.index() == 0; }
  // REQUIRES: !ok()
  const E& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  // The error as a Status (OK when ok()), for Status results.
  const Status& status() const requires std::is_same_v<E, Status> {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }
  // The broken rule, for errors that name one (ChannelError).
  auto rule() const requires requires(const E& e) { e.rule; }
  { return error().rule; }
  // REQUIRES: ok()
  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, E> v_;
};

}  // namespace tipd

// Propagates a non-OK Status from an expression returning Status.
#define TIPD_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::tipd::Status tipd_status_ = (expr);        \
    if (!tipd_status_.ok()) return tipd_status_; \
  } while (0)

#define TIPD_CONCAT_INNER_(a, b) a##b
#define TIPD_CONCAT_(a, b) TIPD_CONCAT_INNER_(a, b)
// Assigns the value of a Result<T> expression to `lhs`, or returns its Status.
#define TIPD_ASSIGN_OR_RETURN(lhs, expr) \
  TIPD_ASSIGN_OR_RETURN_IMPL_(TIPD_CONCAT_(tipd_result_, __LINE__), lhs, expr)
#define TIPD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
