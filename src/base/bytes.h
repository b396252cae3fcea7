#pragma once
// Byte containers and views used across parley.
//
// Bytes is an owning buffer for non-secret data (ciphertext, public keys, encodings).
// ByteView is a non-owning view; it is valid only while the buffer it points into is alive and
// unmodified. Secret material uses SecretBytes (secret_bytes.h) instead.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace parley {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
inline std::string_view as_chars(ByteView b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}
inline Bytes to_bytes(ByteView v) { return Bytes(v.begin(), v.end()); }
inline Bytes to_bytes(std::string_view s) { return to_bytes(as_bytes(s)); }

// Appends `src` to `dst`.
inline void append(Bytes& dst, ByteView src) { dst.insert(dst.end(), src.begin(), src.end()); }

// Lower-case hex encoding.
std::string to_hex(ByteView data);
// Decodes hex (either case). Returns nullopt on odd length or a non-hex character.
std::optional<Bytes> from_hex(std::string_view hex);

}  // namespace parley
