#pragma once
// SessionState: one Double Ratchet session with one peer device.
// SessionRecord: the current session plus up to kMaxArchivedStates archived ones, so that
// messages from a peer's older session (simultaneous initiation, a re-install, a late message)
// still decrypt.
//
// Both are move-only values (they hold secrets); clone() copies explicitly. serialize() gives the
// versioned storage form (proto/signal/storage.proto, RecordStructure); deserialize() refuses
// unknown format versions and malformed records. Not thread-safe.

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/curve.h"
#include "protocol/ratchet.h"

namespace parley::protocol {

inline constexpr std::uint32_t kSessionVersion = 3;
inline constexpr std::size_t kMaxReceiverChains = 5;
inline constexpr std::size_t kMaxSkippedMessageKeys = 2000;  // stored per chain
inline constexpr std::uint32_t kMaxForwardJump = 2000;       // refuse counters further ahead
inline constexpr std::size_t kMaxArchivedStates = 40;
inline constexpr std::uint32_t kRecordFormatVersion = 1;

struct ReceiverChain {
  crypto::PublicKey sender_ratchet_key;
  ChainKey chain_key;
  std::deque<MessageKeys> skipped;  // oldest first

  ReceiverChain clone() const;
};

struct SenderChain {
  crypto::KeyPair ratchet_key;
  ChainKey chain_key;

  SenderChain clone() const { return SenderChain{ratchet_key.clone(), chain_key.clone()}; }
};

// What Alice must repeat in every message until Bob answers (PreKeyWhisperMessage fields).
struct PendingPreKey {
  std::optional<std::uint32_t> pre_key_id;
  std::uint32_t signed_pre_key_id = 0;
  crypto::PublicKey base_key;
};

struct SessionState {
  std::uint32_t version = kSessionVersion;
  crypto::PublicKey local_identity;
  crypto::PublicKey remote_identity;
  RootKey root_key;
  std::uint32_t previous_counter = 0;
  std::optional<SenderChain> sender_chain;
  std::vector<ReceiverChain> receiver_chains;  // oldest first, at most kMaxReceiverChains
  std::optional<PendingPreKey> pending_pre_key;
  std::uint32_t local_registration_id = 0;
  std::uint32_t remote_registration_id = 0;
  crypto::PublicKey alice_base_key;

  SessionState clone() const;

  ReceiverChain* find_receiver_chain(const crypto::PublicKey& sender_ratchet_key);
  // Appends a chain, dropping the oldest beyond kMaxReceiverChains.
  void add_receiver_chain(ReceiverChain chain);
};

class SessionRecord {
 public:
  SessionRecord() = default;
  SessionRecord(SessionRecord&&) = default;
  SessionRecord& operator=(SessionRecord&&) = default;
  SessionRecord clone() const;

  bool has_current_state() const { return current_.has_value(); }
  SessionState* current_state() { return current_ ? &*current_ : nullptr; }
  const SessionState* current_state() const { return current_ ? &*current_ : nullptr; }
  std::deque<SessionState>& previous_states() { return previous_; }
  const std::deque<SessionState>& previous_states() const { return previous_; }

  // True if the current or an archived state was built from `alice_base_key`.
  bool has_session_state(std::uint32_t version, const crypto::PublicKey& alice_base_key) const;
  // Moves the current state (if any) to the front of the archive, trimming it to
  // kMaxArchivedStates, and leaves no current state.
  void archive_current_state();
  // Makes `state` current, archiving the previous current state.
  void promote_state(SessionState state);
  void set_current_state(SessionState state) { current_ = std::move(state); }

  Bytes serialize() const;
  static Result<SessionRecord> deserialize(ByteView bytes);

 private:
  std::optional<SessionState> current_;
  std::deque<SessionState> previous_;  // most recent first
};

}  // namespace parley::protocol
