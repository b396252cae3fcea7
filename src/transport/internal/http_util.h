#pragma once
// Internal to src/transport: small HTTP helpers without Beast (dates, ranges, numbers).
// Pure functions, thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace parley::transport::internal {

// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(std::int64_t unix_seconds);
std::string http_date_now();

// Decimal digits only (1..20 of them), no sign, no overflow.
std::optional<std::uint64_t> parse_u64(std::string_view s);

// "bytes START-END/TOTAL" (an upload range) or "bytes */TOTAL" (start = end = nullopt).
// Requires START <= END < TOTAL.
struct ContentRange {
  std::optional<std::uint64_t> start, end;
  std::uint64_t total = 0;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

// One "bytes=a-b", "bytes=a-" or "bytes=-n" range against a resource of `size` bytes.
// nullopt: a header this server ignores (other units, several ranges, bad syntax): the whole
// resource is served. `satisfiable` false: a well-formed range outside the resource (416).
struct ByteRange {
  bool satisfiable = true;
  std::uint64_t first = 0, last = 0;  // inclusive
};
std::optional<ByteRange> parse_range(std::string_view value, std::uint64_t size);

// Whether an If-None-Match value ("*" or a comma-separated list of tags) names `etag` (a quoted
// tag), by weak comparison (W/"x" names "x"). False when either is empty.
bool etag_matches(std::string_view if_none_match, std::string_view etag);

// "Bearer <token>" -> token; nullopt otherwise.
std::optional<std::string_view> bearer_token(std::string_view authorization);

// An attachment id: 1..128 characters of [A-Za-z0-9_-].
bool valid_attachment_id(std::string_view id);

}  // namespace parley::transport::internal
