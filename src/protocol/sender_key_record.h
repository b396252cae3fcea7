#pragma once
// Sender-key state for group messaging, kept exactly as libsignal-protocol-c keeps it
// (sender_key_state.c, sender_key_record.c).
//
// - SenderKeyState: one sender chain: a key id, the chain key {iteration, seed}, the signing key
//   pair (the private half only for our own chain) and the skipped message keys
//   {iteration, seed}, oldest first, at most kMaxSenderMessageKeys (the oldest is dropped).
// - SenderKeyRecord: every chain we hold for one SenderKeyName, newest first, at most
//   kMaxSenderKeyStates (the oldest is dropped).
//
// Both are copyable values (store interfaces hand out copies). Secrets live in SecretBytes and a
// copy clones them explicitly. The chain arithmetic (message keys, the next chain key) lives in
// sender_keys.h; these types only hold and persist state. Not thread-safe; one owner at a time.
//
// Persistence: serialize()/deserialize() go through proto SenderKeyRecordStructure
// (proto/signal/storage.proto) with format_version = kSenderKeyRecordFormatVersion. The
// serialized bytes contain private keys and chain seeds: keep them encrypted at rest.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"
#include "crypto/curve.h"

namespace parley::protocol {

inline constexpr std::size_t kSenderChainSeedSize = 32;
inline constexpr std::size_t kMaxSenderMessageKeys = 2000;
inline constexpr std::size_t kMaxSenderKeyStates = 5;
inline constexpr std::uint32_t kSenderKeyRecordFormatVersion = 1;

// A chain key: the seed from which message key `iteration` and the next chain key derive.
struct SenderChainKey {
  std::uint32_t iteration = 0;
  SecretBytes seed;  // kSenderChainSeedSize bytes

  SenderChainKey clone() const { return SenderChainKey{iteration, seed.clone()}; }
};

// The seed of one message key (HKDF input for the IV and AES key), kept for skipped messages.
struct SenderMessageKey {
  std::uint32_t iteration = 0;
  SecretBytes seed;  // 32 bytes

  SenderMessageKey clone() const { return SenderMessageKey{iteration, seed.clone()}; }
};

class SenderKeyState {
 public:
  // `signing_private` is present only for a chain we send on.
  SenderKeyState(std::uint32_t key_id, SenderChainKey chain_key,
                 const crypto::PublicKey& signing_public,
                 std::optional<crypto::PrivateKey> signing_private);

  SenderKeyState(const SenderKeyState& other);
  SenderKeyState& operator=(const SenderKeyState& other);
  SenderKeyState(SenderKeyState&&) = default;
  SenderKeyState& operator=(SenderKeyState&&) = default;
  ~SenderKeyState() = default;

  std::uint32_t key_id() const { return key_id_; }
  const SenderChainKey& chain_key() const { return chain_key_; }
  void set_chain_key(SenderChainKey chain_key) { chain_key_ = std::move(chain_key); }
  const crypto::PublicKey& signing_public() const { return signing_public_; }
  const std::optional<crypto::PrivateKey>& signing_private() const { return signing_private_; }

  // Skipped message keys, oldest first.
  const std::deque<SenderMessageKey>& message_keys() const { return message_keys_; }
  bool has_message_key(std::uint32_t iteration) const;
  // Appends `key`; drops the oldest keys beyond kMaxSenderMessageKeys.
  void add_message_key(SenderMessageKey key);
  // Removes and returns the key for `iteration`, or nullopt when there is none.
  std::optional<SenderMessageKey> take_message_key(std::uint32_t iteration);

 private:
  std::uint32_t key_id_;
  SenderChainKey chain_key_;
  crypto::PublicKey signing_public_;
  std::optional<crypto::PrivateKey> signing_private_;
  std::deque<SenderMessageKey> message_keys_;
};

class SenderKeyRecord {
 public:
  SenderKeyRecord() = default;

  bool empty() const { return states_.empty(); }
  // Newest first.
  const std::deque<SenderKeyState>& states() const { return states_; }

  // The newest state (the one we encrypt with), or nullptr when empty.
  SenderKeyState* current_state() { return states_.empty() ? nullptr : &states_.front(); }
  const SenderKeyState* current_state() const {
    return states_.empty() ? nullptr : &states_.front();
  }
  // The newest state with `key_id`, or nullptr. The pointer is valid until the record changes.
  SenderKeyState* state_for_key_id(std::uint32_t key_id);
  const SenderKeyState* state_for_key_id(std::uint32_t key_id) const;

  // Adds a received chain as the newest state (libsignal add_sender_key_state), dropping the
  // oldest beyond kMaxSenderKeyStates. If a state with the same key id and signing key already
  // exists it is kept (moved to the front) instead, so that replaying an old distribution message
  // cannot rewind a chain; states with the same key id but another signing key are replaced.
  void add_state(SenderKeyState state);
  // Replaces every state with `state` (libsignal set_sender_key_state: our own new chain).
  void set_state(SenderKeyState state);

  Bytes serialize() const;
  // kMalformed when the bytes do not parse, format_version is not kSenderKeyRecordFormatVersion,
  // a state lacks a field, a key or seed has the wrong size, a private signing key does not match
  // its public key, or the state / message-key limits are exceeded.
  static Result<SenderKeyRecord> deserialize(ByteView bytes);

 private:
  std::deque<SenderKeyState> states_;
};

}  // namespace parley::protocol
