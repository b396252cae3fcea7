#pragma once
// Rng: the injectable source of randomness.
//
// Production code receives a cryptographically secure implementation (crypto::SystemRng, over
// libsodium). Tests inject DeterministicRng for reproducible runs; it is NOT secure and must
// never be used for anything secret (keys, tokens, nonces, paths). Implementations are not required
// to be thread-safe; give each thread its own or guard it.

#include <cstdint>
#include <span>

namespace parley {

class Rng {
 public:
  virtual ~Rng() = default;
  // Fills `out` with random bytes. Cannot fail (a CSPRNG that cannot produce bytes aborts).
  virtual void fill(std::span<std::uint8_t> out) = 0;

  std::uint32_t next_u32();
  // Uniform in [0, bound) without modulo bias; bound must be > 0.
  std::uint32_t uniform(std::uint32_t bound);
};

// A fast reproducible generator (xoshiro256**) seeded from a 64-bit value. Tests, fuzzers,
// benchmarks, and choices that need no secrecy (the built-in website's, from its seed) only.
class DeterministicRng final : public Rng {
 public:
  explicit DeterministicRng(std::uint64_t seed);
  void fill(std::span<std::uint8_t> out) override;

 private:
  std::uint64_t next();
  std::uint64_t s_[4];
};

}  // namespace parley
