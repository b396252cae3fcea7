#pragma once
// Password-based key derivation: Argon2id (libsodium crypto_pwhash, ALG_ARGON2ID13).
//
// Used to turn a profile passphrase into the 32-byte key of the client's encrypted database.
// Stateless and thread-safe. The cost parameters are recorded next to the salt by the caller, so
// a profile keeps opening after the defaults change.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"

namespace parley::crypto {

inline constexpr std::size_t kPasswordSaltSize = 16;
inline constexpr std::size_t kPasswordKeySize = 32;

// Argon2id cost: passes over memory (`ops`) and memory in bytes (`mem_bytes`).
struct PasswordParams {
  std::uint64_t ops;
  std::size_t mem_bytes;

  // libsodium's INTERACTIVE limits (2 passes, 64 MiB): the default for real profiles.
  static const PasswordParams kInteractive;
  // The minimum libsodium accepts (1 pass, 8 KiB). Tests only: offers no brute-force resistance.
  static const PasswordParams kTesting;

  friend bool operator==(const PasswordParams&, const PasswordParams&) = default;
};

inline const PasswordParams PasswordParams::kInteractive{2, std::size_t{64} << 20};
inline const PasswordParams PasswordParams::kTesting{1, std::size_t{8} << 10};

// Derives kPasswordKeySize bytes from `passphrase` and a kPasswordSaltSize-byte `salt16`.
// Errors: kInvalidArgument (salt size, parameters outside libsodium's limits, passphrase too
// long), kResourceExhausted (the memory could not be allocated).
Result<SecretBytes> derive_key_argon2id(std::string_view passphrase, ByteView salt16,
                                        PasswordParams params);

}  // namespace parley::crypto
