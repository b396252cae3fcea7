#pragma once
// Registration proof of work: find `nonce` such that
//   SHA-256(challenge_nonce(32) || name || nonce (8 bytes little-endian))
// starts with `difficulty` zero bits. Verification is one hash; solving takes ~2^difficulty.

#include <cstdint>
#include <string_view>

#include "base/bytes.h"

namespace parley::crypto {

bool pow_valid(ByteView challenge, std::string_view name, std::uint64_t nonce,
               std::uint32_t difficulty);
// Brute force (clients and tests). Gives up after `max_tries` (returns false).
bool pow_solve(ByteView challenge, std::string_view name, std::uint32_t difficulty,
               std::uint64_t max_tries, std::uint64_t& nonce_out);

}  // namespace parley::crypto
