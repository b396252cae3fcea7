// XEdDSA over Curve25519 keys, compatible with libsignal's "curve25519 signatures".
// Spec: https://signal.org/docs/specifications/xeddsa/ . All group operations are libsodium's;
// the only hand-done arithmetic is the public Montgomery-u to Edwards-y map in verify, done with
// OpenSSL BIGNUM (public data, so constant time is not needed there).

#include <openssl/bn.h>
#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "crypto/curve.h"

namespace parley::crypto {
namespace {

constexpr std::size_t kScalarSize = 32;
constexpr std::size_t kWideScalarSize = 64;

void ensure_sodium() {
  static const bool ready = [] {
    if (sodium_init() < 0) std::abort();
    return true;
  }();
  (void)ready;
}

// Zeroizes a fixed-size secret buffer when it goes out of scope.
template <std::size_t N>
struct SecretArray {
  std::uint8_t b[N] = {};
  SecretArray() = default;
  SecretArray(const SecretArray&) = delete;
  SecretArray& operator=(const SecretArray&) = delete;
  ~SecretArray() { sodium_memzero(b, N); }
};

struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct BnCtxDeleter {
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

// Maps the Montgomery u-coordinate to the Edwards y-coordinate, y = (u - 1) / (u + 1) mod p,
// little-endian. False when u is not canonical (u >= p) or u == -1 (no Edwards point).
bool montgomery_u_to_edwards_y(const std::uint8_t u_le[32], std::uint8_t y_le[32]) {
  std::unique_ptr<BN_CTX, BnCtxDeleter> ctx(BN_CTX_new());
  BnPtr p(BN_new()), u(BN_lebin2bn(u_le, 32, nullptr)), one(BN_new()), num(BN_new()), den(BN_new()),
      inv(BN_new()), y(BN_new());
  if (!ctx || !p || !u || !one || !num || !den || !inv || !y) return false;
  // p = 2^255 - 19
  if (BN_set_word(p.get(), 0) != 1 || BN_set_bit(p.get(), 255) != 1 ||
      BN_sub_word(p.get(), 19) != 1 || BN_one(one.get()) != 1) {
    return false;
  }
  if (BN_cmp(u.get(), p.get()) >= 0) return false;
  if (BN_mod_sub(num.get(), u.get(), one.get(), p.get(), ctx.get()) != 1 ||
      BN_mod_add(den.get(), u.get(), one.get(), p.get(), ctx.get()) != 1) {
    return false;
  }
  if (BN_is_zero(den.get())) return false;
  if (BN_mod_inverse(inv.get(), den.get(), p.get(), ctx.get()) == nullptr ||
      BN_mod_mul(y.get(), num.get(), inv.get(), p.get(), ctx.get()) != 1) {
    return false;
  }
  return BN_bn2lebinpad(y.get(), y_le, 32) == 32;
}

}  // namespace

std::array<std::uint8_t, kSignatureSize> PrivateKey::sign(ByteView message, Rng& rng) const {
  if (scalar_.size() != kCurveKeySize) std::abort();  // a bug: moved-from key
  ensure_sodium();

  // a = clamp(k); A = a.B on Edwards25519.
  SecretArray<kWideScalarSize> wide;
  std::copy(scalar_.view().begin(), scalar_.view().end(), wide.b);
  wide.b[0] &= 248;
  wide.b[31] &= 127;
  wide.b[31] |= 64;
  std::uint8_t cap_a[32];
  if (crypto_scalarmult_ed25519_base_noclamp(cap_a, wide.b) != 0) std::abort();

  // Work with a reduced mod L (same point, since L.B is the identity). Force A's sign bit to 0 by
  // negating a when it is set.
  SecretArray<kScalarSize> a;
  crypto_core_ed25519_scalar_reduce(a.b, wide.b);
  if ((cap_a[31] & 0x80) != 0) {
    SecretArray<kScalarSize> neg;
    crypto_core_ed25519_scalar_negate(neg.b, a.b);
    std::copy(neg.b, neg.b + kScalarSize, a.b);
    cap_a[31] &= 0x7F;
  }

  // r = SHA512(0xFE || 0xFF*31 || a || M || Z) mod L, with Z 64 random bytes.
  SecretArray<kWideScalarSize> z;
  rng.fill(std::span<std::uint8_t>(z.b, kWideScalarSize));
  std::uint8_t prefix[32];
  prefix[0] = 0xFE;
  std::fill(prefix + 1, prefix + 32, static_cast<std::uint8_t>(0xFF));

  crypto_hash_sha512_state st;
  SecretArray<kWideScalarSize> r_wide;
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, prefix, sizeof prefix);
  crypto_hash_sha512_update(&st, a.b, kScalarSize);
  crypto_hash_sha512_update(&st, message.data(), message.size());
  crypto_hash_sha512_update(&st, z.b, kWideScalarSize);
  crypto_hash_sha512_final(&st, r_wide.b);
  sodium_memzero(&st, sizeof st);
  SecretArray<kScalarSize> r;
  crypto_core_ed25519_scalar_reduce(r.b, r_wide.b);

  // R = r.B. r is never zero in practice (probability 2^-252); treat it as unrecoverable.
  std::array<std::uint8_t, kSignatureSize> sig{};
  if (crypto_scalarmult_ed25519_base_noclamp(sig.data(), r.b) != 0) std::abort();

  // h = SHA512(R || A || M) mod L; s = r + h.a mod L.
  std::uint8_t h_wide[kWideScalarSize];
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, sig.data(), 32);
  crypto_hash_sha512_update(&st, cap_a, sizeof cap_a);
  crypto_hash_sha512_update(&st, message.data(), message.size());
  crypto_hash_sha512_final(&st, h_wide);
  std::uint8_t h[kScalarSize];
  crypto_core_ed25519_scalar_reduce(h, h_wide);

  SecretArray<kScalarSize> ha;
  crypto_core_ed25519_scalar_mul(ha.b, h, a.b);
  crypto_core_ed25519_scalar_add(sig.data() + 32, r.b, ha.b);
  // s < L < 2^253, so sig[63] & 0x80 is 0: the (forced) sign bit of A.
  return sig;
}

bool verify_signature(const PublicKey& key, ByteView message, ByteView signature) {
  if (signature.size() != kSignatureSize) return false;
  ensure_sodium();

  std::uint8_t ed_pub[32];
  if (!montgomery_u_to_edwards_y(key.raw().data(), ed_pub)) return false;
  ed_pub[31] &= 0x7F;  // y < p < 2^255, so this is a no-op kept for clarity
  ed_pub[31] |= static_cast<std::uint8_t>(signature[63] & 0x80);

  std::uint8_t sig[kSignatureSize];
  std::copy(signature.begin(), signature.end(), sig);
  sig[63] &= 0x7F;
  // libsodium rejects a non-canonical s, small-order A or R, and non-canonical A encodings.
  return crypto_sign_ed25519_verify_detached(sig, message.data(), message.size(), ed_pub) == 0;
}

}  // namespace parley::crypto
