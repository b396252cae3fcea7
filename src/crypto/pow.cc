#include "crypto/pow.h"

#include "crypto/primitives.h"

namespace parley::crypto {

bool pow_valid(ByteView challenge, std::string_view name, std::uint64_t nonce,
               std::uint32_t difficulty) {
  if (difficulty > 64) return false;
  Bytes input(challenge.begin(), challenge.end());
  append(input, as_bytes(name));
  for (int i = 0; i < 8; ++i) input.push_back(static_cast<std::uint8_t>(nonce >> (8 * i)));
  const auto digest = crypto::sha256(input);
  std::uint32_t zeros = 0;
  for (std::uint8_t b : digest) {
    if (b == 0) {
      zeros += 8;
      if (zeros >= difficulty) return true;
      continue;
    }
    zeros += static_cast<std::uint32_t>(__builtin_clz(b) - 24);
    break;
  }
  return zeros >= difficulty;
}

bool pow_solve(ByteView challenge, std::string_view name, std::uint32_t difficulty,
               std::uint64_t max_tries, std::uint64_t& nonce_out) {
  for (std::uint64_t n = 0; n < max_tries; ++n) {
    if (pow_valid(challenge, name, n, difficulty)) {
      nonce_out = n;
      return true;
    }
  }
  return false;
}

}  // namespace parley::crypto
