#pragma once
// Sender Keys: group messaging in the libsignal-protocol-c format (group_session_builder.c,
// group_cipher.c, protocol.c sender_key_*), byte-compatible with libsignal-c/-java.
//
// Wire formats (proto/signal/wire.proto):
//   SenderKeyDistributionMessage = 0x33 || protobuf{id, iteration, chain_key(32),
//                                                   signing_key(33)}
//   SenderKeyMessage             = 0x33 || protobuf{id, iteration, ciphertext}
//                                  || 64-byte XEdDSA signature over everything before it
// Chain: message-key seed = HMAC-SHA256(chain seed, 0x01); next chain seed =
// HMAC-SHA256(chain seed, 0x02); HKDF-SHA256(seed, salt = none, info = "WhisperGroup", 48)
// gives IV (16) || AES-256 key (32); payload cipher is AES-256-CBC with PKCS#7.
//
// A distribution message carries a chain key: send it only inside an encrypted 1:1 session.
// The functions here do no I/O beyond the injected SenderKeyStore and Rng. They are not
// thread-safe: callers serialize access to one store. Every operation writes the store only
// after it has fully succeeded; a failure leaves the store as it was.

#include <cstddef>
#include <cstdint>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"
#include "crypto/curve.h"
#include "protocol/address.h"
#include "protocol/sender_key_record.h"
#include "protocol/stores.h"

namespace parley::protocol {

inline constexpr std::uint8_t kSenderKeyMessageVersion = 3;
inline constexpr std::uint8_t kSenderKeyVersionByte = (kSenderKeyMessageVersion << 4) | 3;
inline constexpr std::size_t kMaxSenderKeyDistributionMessageSize = 1024;
inline constexpr std::size_t kMaxSenderKeyMessageSize = 128 * 1024;
// How far ahead of our chain a message may be (libsignal: 2000).
inline constexpr std::uint32_t kMaxSenderKeyForwardJump = 2000;

// A sender's chain announcement. Move-only (it holds a chain key); clone() copies.
class SenderKeyDistributionMessage {
 public:
  static SenderKeyDistributionMessage create(std::uint32_t key_id, std::uint32_t iteration,
                                             ByteView chain_key,
                                             const crypto::PublicKey& signing_key);
  // kTooLarge above kMaxSenderKeyDistributionMessageSize; kBadVersion when the high nibble of
  // the version byte is not 3; kMalformed when the protobuf does not parse, a field is missing,
  // the chain key is not 32 bytes or the signing key is not a 33-byte public key.
  static Result<SenderKeyDistributionMessage> parse(ByteView serialized);

  SenderKeyDistributionMessage clone() const;

  std::uint32_t key_id() const { return key_id_; }
  std::uint32_t iteration() const { return iteration_; }
  const SecretBytes& chain_key() const { return chain_key_; }
  const crypto::PublicKey& signing_key() const { return signing_key_; }
  // The wire bytes (they contain the chain key). Valid while this object is alive.
  ByteView serialized() const { return serialized_.view(); }

 private:
  SenderKeyDistributionMessage(std::uint32_t key_id, std::uint32_t iteration, SecretBytes chain_key,
                               const crypto::PublicKey& signing_key, SecretBytes serialized)
      : key_id_(key_id),
        iteration_(iteration),
        chain_key_(std::move(chain_key)),
        signing_key_(signing_key),
        serialized_(std::move(serialized)) {}

  std::uint32_t key_id_;
  std::uint32_t iteration_;
  SecretBytes chain_key_;
  crypto::PublicKey signing_key_;
  SecretBytes serialized_;
};

// One encrypted group message. A value; copyable.
class SenderKeyMessage {
 public:
  // Builds and signs a message with `signing_key`.
  static SenderKeyMessage create(std::uint32_t key_id, std::uint32_t iteration, ByteView ciphertext,
                                 const crypto::PrivateKey& signing_key, Rng& rng);
  // kTooLarge above kMaxSenderKeyMessageSize; kMalformed when too short to hold a version byte,
  // a body and a signature, when the protobuf does not parse or a field is missing; kBadVersion
  // when the high nibble of the version byte is not 3. Does not check the signature.
  static Result<SenderKeyMessage> parse(ByteView serialized);

  // True when the trailing signature verifies under `signing_key`.
  bool verify_signature(const crypto::PublicKey& signing_key) const;

  std::uint8_t version() const { return version_; }
  std::uint32_t key_id() const { return key_id_; }
  std::uint32_t iteration() const { return iteration_; }
  const Bytes& ciphertext() const { return ciphertext_; }
  const Bytes& serialized() const { return serialized_; }

 private:
  SenderKeyMessage() = default;

  std::uint8_t version_ = kSenderKeyMessageVersion;
  std::uint32_t key_id_ = 0;
  std::uint32_t iteration_ = 0;
  Bytes ciphertext_;
  Bytes serialized_;
};

// libsignal GroupSessionBuilder.create: if we hold no chain for `name` (our own sender name in
// a group), creates one (random 31-bit key id, random 32-byte seed, iteration 0, fresh signing
// key pair) and stores it. Returns the distribution message for our current chain.
// Errors: whatever the store returns.
Result<SenderKeyDistributionMessage> create_distribution_message(SenderKeyStore& store,
                                                                 const SenderKeyName& name,
                                                                 Rng& rng);

// libsignal GroupSessionBuilder.process: adds the sender's chain (public signing key only) to
// the record for `name`, newest first, at most kMaxSenderKeyStates. Re-processing a message
// whose key id and signing key we already hold keeps our (possibly advanced) chain.
Status process_distribution_message(SenderKeyStore& store, const SenderKeyName& name,
                                    const SenderKeyDistributionMessage& message);

// Replaces our own chain for `name` with a fresh one (new key id, seed and signing key), so that
// members removed from the group cannot read later messages. Returns the new distribution
// message, to be sent to the remaining members only.
Result<SenderKeyDistributionMessage> rotate_sender_key(SenderKeyStore& store,
                                                       const SenderKeyName& name, Rng& rng);

// libsignal GroupCipher. Holds references: `store` and `rng` must outlive it. Not thread-safe.
class GroupCipher {
 public:
  GroupCipher(SenderKeyStore& store, SenderKeyName name, Rng& rng)
      : store_(store), name_(std::move(name)), rng_(rng) {}

  // Encrypts with our newest chain and advances it. Returns the serialized SenderKeyMessage.
  // kNoSenderKey when we hold no chain with a private signing key for this name; kOutOfRange
  // when the chain iteration is exhausted.
  Result<Bytes> encrypt(ByteView plaintext);

  // Decrypts a serialized SenderKeyMessage. Errors (the store is unchanged on every one):
  // the parse errors of SenderKeyMessage::parse; kNoSenderKey when no chain has its key id;
  // kBadSignature; kDuplicateMessage for an old iteration whose key is gone; kTooFarAhead more
  // than kMaxSenderKeyForwardJump ahead; kDecryptFailed when the ciphertext does not decrypt.
  Result<Bytes> decrypt(ByteView serialized);

 private:
  SenderKeyStore& store_;
  SenderKeyName name_;
  Rng& rng_;
};

}  // namespace parley::protocol
