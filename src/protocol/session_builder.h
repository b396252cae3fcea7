#pragma once
// X3DH session building (libsignal's SessionBuilder).
//
// Alice: process_bundle() verifies Bob's bundle (signed-prekey signature, trust of his identity)
// and stores a new session; her next encrypt() produces PreKeyWhisperMessages until Bob answers.
// Bob: the session is built from an incoming PreKeyWhisperMessage inside SessionCipher::decrypt.
//
// Randomness comes from the injected Rng: Alice draws her base key, then her first ratchet key.
// Not thread-safe; the stores must outlive the builder.

#include "base/rng.h"
#include "protocol/address.h"
#include "protocol/keys.h"
#include "protocol/session_record.h"
#include "protocol/stores.h"

namespace parley::protocol {

class SessionBuilder {
 public:
  SessionBuilder(ProtocolStores stores, ProtocolAddress remote, Rng& rng)
      : stores_(stores), remote_(std::move(remote)), rng_(rng) {}

  // Errors: kBadSignature (signed prekey), kUntrustedIdentity (changed identity key),
  // kInvalidArgument (malformed bundle), kWeakKey. On error nothing is stored.
  Status process_bundle(const PreKeyBundle& bundle);

 private:
  ProtocolStores stores_;
  ProtocolAddress remote_;
  Rng& rng_;
};

// Initializes Bob's side from the fields of a PreKeyWhisperMessage (used by SessionCipher).
struct BobParameters {
  const crypto::KeyPair& our_identity;
  const crypto::KeyPair& our_signed_pre_key;
  const crypto::KeyPair* our_one_time_pre_key;  // may be null
  const crypto::PublicKey& their_identity;
  const crypto::PublicKey& their_base_key;
};
Result<SessionState> initialize_bob_session(const BobParameters& p);

struct AliceParameters {
  const crypto::KeyPair& our_identity;
  const crypto::KeyPair& our_base_key;
  const crypto::PublicKey& their_identity;
  const crypto::PublicKey& their_signed_pre_key;
  const crypto::PublicKey* their_one_time_pre_key;  // may be null
};
// Draws Alice's first sending ratchet key from `rng`.
Result<SessionState> initialize_alice_session(const AliceParameters& p, Rng& rng);

}  // namespace parley::protocol
