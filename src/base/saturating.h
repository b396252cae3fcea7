#pragma once
// Integer addition and subtraction that stop at the type's bounds instead of wrapping round.
// For sums of values that come from outside (a caller's page size, a kept clock reading): a
// wrapped sum would turn "far ahead" into "long ago", or a huge count into a small one.

#include <concepts>
#include <limits>

namespace parley {

template <std::integral T>
constexpr T saturating_add(T a, T b) {
  T sum{};
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return b > T{0} ? std::numeric_limits<T>::max() : std::numeric_limits<T>::min();
}

template <std::integral T>
constexpr T saturating_sub(T a, T b) {
  T difference{};
  if (!__builtin_sub_overflow(a, b, &difference)) return difference;
  return b > T{0} ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max();
}

}  // namespace parley
