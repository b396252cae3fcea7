#pragma once
// Result<T>: either a value of T or a non-ok Status. The API mirrors std::expected (C++23) so
// the project can switch to it later: has_value(), value(), error(), operator*, operator->.
//
// Accessing value() of an error Result, or error() of a value Result, is a programming bug and
// aborts (it is never triggered by peer input when callers check has_value() first).

#include <cstdlib>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "base/status.h"

namespace parley {

template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<T, Status>, "use Status directly");

 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    if (std::get<1>(v_).is_ok()) std::abort();  // an ok Status carries no value: a bug
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { check_value(); return std::get<0>(v_); }
  const T& value() const& { check_value(); return std::get<0>(v_); }
  T&& value() && { check_value(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Status& error() const& {
    if (has_value()) std::abort();
    return std::get<1>(v_);
  }
  Status status() const { return has_value() ? Status::ok() : std::get<1>(v_); }

 private:
  void check_value() const {
    if (!has_value()) std::abort();
  }
  std::variant<T, Status> v_;
};

}  // namespace parley

// Propagation helpers (tdlib's TRY_STATUS / TRY_RESULT).
#define PARLEY_CONCAT_INNER(a, b) a##b
#define PARLEY_CONCAT(a, b) PARLEY_CONCAT_INNER(a, b)

#define PARLEY_TRY(expr)                       \
  do {                                         \
    ::parley::Status parley_try_s_ = (expr);   \
    if (!parley_try_s_.is_ok()) return parley_try_s_; \
  } while (0)

#define PARLEY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.has_value()) return tmp.error();          \
  lhs = std::move(tmp).value()

#define PARLEY_ASSIGN_OR_RETURN(lhs, expr) \
  PARLEY_ASSIGN_OR_RETURN_IMPL(PARLEY_CONCAT(parley_result_, __LINE__), lhs, expr)
