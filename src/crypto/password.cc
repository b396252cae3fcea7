#include "crypto/password.h"

#include <sodium.h>

#include <cstdlib>
#include <string>

namespace parley::crypto {
namespace {

void ensure_sodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();  // no CSPRNG: cannot continue safely
    return true;
  }();
  (void)ready;
}

}  // namespace

Result<SecretBytes> derive_key_argon2id(std::string_view passphrase, ByteView salt16,
                                        PasswordParams params) {
  static_assert(kPasswordSaltSize == crypto_pwhash_argon2id_SALTBYTES);
  if (salt16.size() != kPasswordSaltSize) {
    return make_error(ErrorCode::kInvalidArgument,
                      "argon2id: salt must be " + std::to_string(kPasswordSaltSize) + " bytes");
  }
  if (params.ops < crypto_pwhash_argon2id_OPSLIMIT_MIN ||
      params.ops > crypto_pwhash_argon2id_OPSLIMIT_MAX) {
    return make_error(ErrorCode::kInvalidArgument, "argon2id: ops limit out of range");
  }
  if (params.mem_bytes < crypto_pwhash_argon2id_MEMLIMIT_MIN ||
      params.mem_bytes > crypto_pwhash_argon2id_MEMLIMIT_MAX) {
    return make_error(ErrorCode::kInvalidArgument, "argon2id: memory limit out of range");
  }
  if (passphrase.size() > crypto_pwhash_argon2id_PASSWD_MAX) {
    return make_error(ErrorCode::kInvalidArgument, "argon2id: passphrase too long");
  }
  ensure_sodium();
  SecretBytes key(kPasswordKeySize);
  // The only runtime failure left once the limits are checked is the memory allocation.
  if (crypto_pwhash(key.data(), key.size(), passphrase.data(), passphrase.size(), salt16.data(),
                    params.ops, params.mem_bytes, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return make_error(ErrorCode::kResourceExhausted,
                      "argon2id: could not allocate the memory the parameters ask for");
  }
  return key;
}

}  // namespace parley::crypto
