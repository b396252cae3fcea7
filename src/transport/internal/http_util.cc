#include "transport/internal/http_util.h"

#include <cstdint>
#include <cstdio>
#include <ctime>

namespace parley::transport::internal {

std::string http_date(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7],
                tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string http_date_now() { return http_date(static_cast<std::int64_t>(std::time(nullptr))); }

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

std::optional<ContentRange> parse_content_range(std::string_view value) {
  value = trim(value);
  constexpr std::string_view kPrefix = "bytes ";
  if (value.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  value.remove_prefix(kPrefix.size());
  auto slash = value.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto total = parse_u64(value.substr(slash + 1));
  if (!total) return std::nullopt;
  ContentRange out;
  out.total = *total;
  std::string_view range = value.substr(0, slash);
  if (range == "*") return out;
  auto dash = range.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto start = parse_u64(range.substr(0, dash));
  auto end = parse_u64(range.substr(dash + 1));
  if (!start || !end || *start > *end || *end >= *total) return std::nullopt;
  out.start = start;
  out.end = end;
  return out;
}

std::optional<ByteRange> parse_range(std::string_view value, std::uint64_t size) {
  value = trim(value);
  constexpr std::string_view kPrefix = "bytes=";
  if (value.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  value = trim(value.substr(kPrefix.size()));
  if (value.find(',') != std::string_view::npos) return std::nullopt;
  auto dash = value.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::string_view a = trim(value.substr(0, dash));
  std::string_view b = trim(value.substr(dash + 1));
  ByteRange out;
  if (a.empty()) {  // suffix: the last n bytes
    auto n = parse_u64(b);
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) {
      out.satisfiable = false;
      return out;
    }
    out.first = *n >= size ? 0 : size - *n;
    out.last = size - 1;
    return out;
  }
  auto first = parse_u64(a);
  if (!first) return std::nullopt;
  std::optional<std::uint64_t> last;
  if (!b.empty()) {
    last = parse_u64(b);
    if (!last || *last < *first) return std::nullopt;  // invalid: ignored (RFC 9110 14.2)
  }
  if (*first >= size) {
    out.satisfiable = false;
    return out;
  }
  out.first = *first;
  out.last = (!last || *last >= size) ? size - 1 : *last;
  return out;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  authorization = trim(authorization);
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization.size() <= kPrefix.size()) return std::nullopt;
  for (std::size_t i = 0; i < kPrefix.size(); ++i) {
    char c = authorization[i];
    char k = kPrefix[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (k >= 'A' && k <= 'Z') k = static_cast<char>(k - 'A' + 'a');
    if (c != k) return std::nullopt;
  }
  std::string_view token = trim(authorization.substr(kPrefix.size()));
  if (token.empty() || token.size() > 512) return std::nullopt;
  return token;
}

bool valid_attachment_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  if (if_none_match.empty() || etag.empty()) return false;
  if (if_none_match == "*") return true;
  // A comma-separated list; weak comparison.
  std::size_t pos = 0;
  while (pos <= if_none_match.size()) {
    auto comma = if_none_match.find(',', pos);
    std::string_view item = if_none_match.substr(
        pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.substr(0, 2) == "W/") item.remove_prefix(2);
    if (item == etag) return true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return false;
}

}  // namespace parley::transport::internal
