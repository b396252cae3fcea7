#include "protocol/ratchet.h"

#include "crypto/primitives.h"

namespace parley::protocol {
namespace {

constexpr std::uint8_t kMessageKeySeed = 0x01;
constexpr std::uint8_t kChainKeySeed = 0x02;
constexpr std::string_view kInfoText = "WhisperText";
constexpr std::string_view kInfoRatchet = "WhisperRatchet";
constexpr std::string_view kInfoMessageKeys = "WhisperMessageKeys";

SecretBytes to_secret(const crypto::Sha256Digest& d) { return SecretBytes(ByteView(d)); }

Result<std::pair<RootKey, ChainKey>> split64(const SecretBytes& okm) {
  if (okm.size() != 64) return make_error(ErrorCode::kInternal, "kdf output size");
  return std::pair<RootKey, ChainKey>{RootKey{SecretBytes(okm.view().first(32))},
                                      ChainKey{SecretBytes(okm.view().subspan(32, 32)), 0}};
}

}  // namespace

Result<MessageKeys> MessageKeys::derive(ByteView seed, std::uint32_t counter) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes okm,
                          crypto::hkdf_sha256(seed, {}, as_bytes(kInfoMessageKeys), 80));
  return MessageKeys{SecretBytes(okm.view().first(32)), SecretBytes(okm.view().subspan(32, 32)),
                     SecretBytes(okm.view().subspan(64, 16)), counter};
}

SecretBytes ChainKey::message_key_seed() const {
  crypto::Sha256Digest d = crypto::hmac_sha256(key.view(), ByteView(&kMessageKeySeed, 1));
  SecretBytes out = to_secret(d);
  secure_zero(d.data(), d.size());
  return out;
}

ChainKey ChainKey::next() const {
  crypto::Sha256Digest d = crypto::hmac_sha256(key.view(), ByteView(&kChainKeySeed, 1));
  ChainKey out{to_secret(d), index + 1};
  secure_zero(d.data(), d.size());
  return out;
}

Result<std::pair<MessageKeys, ChainKey>> ChainKey::step() const {
  auto [seed, next_key] = crypto::hmac_sha256_pair(key.view(), ByteView(&kMessageKeySeed, 1),
                                                   ByteView(&kChainKeySeed, 1));
  auto keys = MessageKeys::derive(seed, index);
  secure_zero(seed.data(), seed.size());
  ChainKey next_chain{to_secret(next_key), index + 1};
  secure_zero(next_key.data(), next_key.size());
  if (!keys) return keys.error();
  return std::pair<MessageKeys, ChainKey>{std::move(keys).value(), std::move(next_chain)};
}

Result<MessageKeys> ChainKey::message_keys() const {
  return MessageKeys::derive(message_key_seed().view(), index);
}

Result<std::pair<RootKey, ChainKey>> RootKey::create_chain(
    const crypto::PublicKey& their_ratchet, const crypto::PrivateKey& our_ratchet) const {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes shared, our_ratchet.agree(their_ratchet));
  PARLEY_ASSIGN_OR_RETURN(SecretBytes okm, crypto::hkdf_sha256(shared.view(), key.view(),
                                                               as_bytes(kInfoRatchet), 64));
  return split64(okm);
}

Result<std::pair<RootKey, ChainKey>> derive_initial_keys(ByteView master_secret) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes okm,
                          crypto::hkdf_sha256(master_secret, {}, as_bytes(kInfoText), 64));
  return split64(okm);
}

}  // namespace parley::protocol
