#pragma once
// Signal Protocol v3 ciphertext messages, byte-compatible with libsignal.
//
//   WhisperMessage       = version || protobuf(WhisperMessage) || mac[8]
//   PreKeyWhisperMessage = version || protobuf(PreKeyWhisperMessage)
//
// version is 0x33 (current version 3 in both nibbles); a message whose high nibble is not 3 is
// refused with kBadVersion. The MAC is HMAC-SHA256(mac_key, sender_identity33 ||
// receiver_identity33 || version || protobuf) truncated to 8 bytes, always computed over the
// bytes as received (never over a re-encoding). Parsed messages keep their original bytes.
// Values; thread-safe to copy.

#include <cstdint>
#include <optional>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/curve.h"

namespace parley::protocol {

inline constexpr std::uint8_t kCiphertextVersion = 3;
inline constexpr std::uint8_t kVersionByte = (kCiphertextVersion << 4) | kCiphertextVersion;
inline constexpr std::size_t kMacSize = 8;
// Upper bound on one serialized ciphertext message (attachments travel separately).
inline constexpr std::size_t kMaxMessageSize = 256 * 1024;

enum class MessageType : std::uint8_t { kWhisper = 1, kPreKeyWhisper = 3 };

class WhisperMessage {
 public:
  // Parses and checks structure, version and sizes; the MAC is checked by verify_mac().
  static Result<WhisperMessage> parse(ByteView serialized);
  // Builds and MACs a message.
  static Result<WhisperMessage> create(ByteView mac_key, const crypto::PublicKey& ratchet_key,
                                       std::uint32_t counter, std::uint32_t previous_counter,
                                       ByteView ciphertext,
                                       const crypto::PublicKey& sender_identity,
                                       const crypto::PublicKey& receiver_identity);

  // kBadMac when the truncated MAC does not match (constant-time comparison).
  Status verify_mac(const crypto::PublicKey& sender_identity,
                    const crypto::PublicKey& receiver_identity, ByteView mac_key) const;

  const crypto::PublicKey& ratchet_key() const { return ratchet_key_; }
  std::uint32_t counter() const { return counter_; }
  std::uint32_t previous_counter() const { return previous_counter_; }
  const Bytes& ciphertext() const { return ciphertext_; }
  const Bytes& serialized() const { return serialized_; }

 private:
  crypto::PublicKey ratchet_key_;
  std::uint32_t counter_ = 0;
  std::uint32_t previous_counter_ = 0;
  Bytes ciphertext_;
  Bytes serialized_;
};

class PreKeyWhisperMessage {
 public:
  static Result<PreKeyWhisperMessage> parse(ByteView serialized);
  static PreKeyWhisperMessage create(std::uint32_t registration_id,
                                     std::optional<std::uint32_t> pre_key_id,
                                     std::uint32_t signed_pre_key_id,
                                     const crypto::PublicKey& base_key,
                                     const crypto::PublicKey& identity_key,
                                     WhisperMessage message);

  std::uint32_t registration_id() const { return registration_id_; }
  std::optional<std::uint32_t> pre_key_id() const { return pre_key_id_; }
  std::uint32_t signed_pre_key_id() const { return signed_pre_key_id_; }
  const crypto::PublicKey& base_key() const { return base_key_; }
  const crypto::PublicKey& identity_key() const { return identity_key_; }
  const WhisperMessage& message() const { return message_; }
  const Bytes& serialized() const { return serialized_; }

 private:
  std::uint32_t registration_id_ = 0;
  std::optional<std::uint32_t> pre_key_id_;
  std::uint32_t signed_pre_key_id_ = 0;
  crypto::PublicKey base_key_;
  crypto::PublicKey identity_key_;
  WhisperMessage message_;
  Bytes serialized_;
};

// An encrypted message ready for the wire.
struct CiphertextMessage {
  MessageType type;
  Bytes serialized;
};

// Checks the version byte of a serialized message (kMalformed if empty, kBadVersion if not 3).
Status check_version_byte(ByteView serialized);

}  // namespace parley::protocol
