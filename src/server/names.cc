#include "server/names.h"

namespace parley::server {

Result<std::string> fold_name(std::string_view name) {
  if (name.size() < kMinNameLength || name.size() > kMaxNameLength) {
    return make_error(ErrorCode::kInvalidArgument, "name must be 3 to 32 characters");
  }
  std::string folded;
  folded.reserve(name.size());
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '-';
    if (!ok) return make_error(ErrorCode::kInvalidArgument, "name may use only a-z 0-9 . _ -");
    folded.push_back(c);
  }
  const char first = folded.front();
  if (!((first >= 'a' && first <= 'z') || (first >= '0' && first <= '9'))) {
    return make_error(ErrorCode::kInvalidArgument, "name must start with a letter or digit");
  }
  return folded;
}

}  // namespace parley::server
