#pragma once
// Account names: 3..32 characters from [a-z0-9._-] after case folding (ASCII only, so no
// look-alike Unicode), starting with a letter or digit. Uniqueness is by the folded form.

#include <string>
#include <string_view>

#include "base/result.h"

namespace parley::server {

inline constexpr std::size_t kMinNameLength = 3;
inline constexpr std::size_t kMaxNameLength = 32;

// The folded (lower-case) name, or kInvalidArgument with the reason.
Result<std::string> fold_name(std::string_view name);

}  // namespace parley::server
