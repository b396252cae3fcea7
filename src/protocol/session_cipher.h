#pragma once
// SessionCipher: Double Ratchet encryption and decryption with one peer device
// (libsignal's SessionCipher).
//
// Transactions: every method loads what it needs, computes on its own copy, verifies (MAC,
// padding, identity trust) and only then writes the stores. A message that fails to decrypt or
// verify leaves every store exactly as it was.
// Not thread-safe; the stores must outlive the cipher.

#include <optional>

#include "base/rng.h"
#include "protocol/address.h"
#include "protocol/messages.h"
#include "protocol/session_record.h"
#include "protocol/stores.h"

namespace parley::protocol {

class SessionCipher {
 public:
  SessionCipher(ProtocolStores stores, ProtocolAddress remote, Rng& rng)
      : stores_(stores), remote_(std::move(remote)), rng_(rng) {}

  // kNoSession without a session; kUntrustedIdentity if the peer's key changed since.
  Result<CiphertextMessage> encrypt(ByteView plaintext);

  // Decrypts a WhisperMessage (type 1). Errors: kBadVersion, kMalformed, kTooLarge, kNoSession,
  // kBadMac, kDuplicateMessage, kTooFarAhead, kDecryptFailed, kUntrustedIdentity.
  Result<Bytes> decrypt_whisper(ByteView serialized);

  // Decrypts a PreKeyWhisperMessage (type 3), building Bob's session if it is new. Additional
  // errors: kUnknownPreKey, kUnknownSignedPreKey. The one-time prekey is removed only on success.
  Result<Bytes> decrypt_prekey_whisper(ByteView serialized);

  // Dispatches on `type`.
  Result<Bytes> decrypt(MessageType type, ByteView serialized);

  // The remote registration id of the current session (kNoSession without one).
  Result<std::uint32_t> remote_registration_id();

 private:
  Result<Bytes> decrypt_with_record(SessionRecord& record, const WhisperMessage& message);
  Status check_trust_and_save(const crypto::PublicKey& identity);

  ProtocolStores stores_;
  ProtocolAddress remote_;
  Rng& rng_;
};

// Decrypts `message` with `state`, advancing the ratchet only if everything verifies. On error
// `state` is unchanged. Exposed for tests and the vector verifier.
Result<Bytes> decrypt_with_state(SessionState& state, const WhisperMessage& message, Rng& rng);

}  // namespace parley::protocol
