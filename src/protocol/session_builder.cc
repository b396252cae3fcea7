#include "protocol/session_builder.h"

namespace parley::protocol {
namespace {

// 0xFF * 32: the "discontinuity bytes" that prefix the X3DH secret (XEdDSA domain separation).
void append_discontinuity(SecretBytes& secret) {
  for (std::size_t i = 0; i < kKeySize; ++i) secret.data()[i] = 0xFF;
}

Status append_agreement(SecretBytes& secret, std::size_t& offset, const crypto::PrivateKey& ours,
                        const crypto::PublicKey& theirs) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes dh, ours.agree(theirs));
  std::copy(dh.view().begin(), dh.view().end(), secret.data() + offset);
  offset += dh.size();
  return Status::ok();
}

}  // namespace

Result<SessionState> initialize_alice_session(const AliceParameters& p, Rng& rng) {
  crypto::KeyPair sending_ratchet = crypto::KeyPair::generate(rng);
  const std::size_t n = p.their_one_time_pre_key ? 5 : 4;
  SecretBytes secret(n * kKeySize);
  append_discontinuity(secret);
  std::size_t off = kKeySize;
  PARLEY_TRY(append_agreement(secret, off, p.our_identity.private_key, p.their_signed_pre_key));
  PARLEY_TRY(append_agreement(secret, off, p.our_base_key.private_key, p.their_identity));
  PARLEY_TRY(append_agreement(secret, off, p.our_base_key.private_key, p.their_signed_pre_key));
  if (p.their_one_time_pre_key) {
    PARLEY_TRY(
        append_agreement(secret, off, p.our_base_key.private_key, *p.their_one_time_pre_key));
  }
  PARLEY_ASSIGN_OR_RETURN(auto initial, derive_initial_keys(secret.view()));
  PARLEY_ASSIGN_OR_RETURN(auto sending,
                          initial.first.create_chain(p.their_signed_pre_key,
                                                     sending_ratchet.private_key));
  SessionState s;
  s.local_identity = p.our_identity.public_key;
  s.remote_identity = p.their_identity;
  s.add_receiver_chain(ReceiverChain{p.their_signed_pre_key, std::move(initial.second), {}});
  s.sender_chain = SenderChain{std::move(sending_ratchet), std::move(sending.second)};
  s.root_key = std::move(sending.first);
  return s;
}

Result<SessionState> initialize_bob_session(const BobParameters& p) {
  const std::size_t n = p.our_one_time_pre_key ? 5 : 4;
  SecretBytes secret(n * kKeySize);
  append_discontinuity(secret);
  std::size_t off = kKeySize;
  PARLEY_TRY(append_agreement(secret, off, p.our_signed_pre_key.private_key, p.their_identity));
  PARLEY_TRY(append_agreement(secret, off, p.our_identity.private_key, p.their_base_key));
  PARLEY_TRY(append_agreement(secret, off, p.our_signed_pre_key.private_key, p.their_base_key));
  if (p.our_one_time_pre_key) {
    PARLEY_TRY(
        append_agreement(secret, off, p.our_one_time_pre_key->private_key, p.their_base_key));
  }
  PARLEY_ASSIGN_OR_RETURN(auto initial, derive_initial_keys(secret.view()));
  SessionState s;
  s.local_identity = p.our_identity.public_key;
  s.remote_identity = p.their_identity;
  s.sender_chain = SenderChain{p.our_signed_pre_key.clone(), std::move(initial.second)};
  s.root_key = std::move(initial.first);
  s.alice_base_key = p.their_base_key;
  return s;
}

Status SessionBuilder::process_bundle(const PreKeyBundle& bundle) {
  PARLEY_TRY(verify_bundle(bundle));
  PARLEY_ASSIGN_OR_RETURN(bool trusted, stores_.identity.is_trusted_identity(
                                            remote_, bundle.identity_key, Direction::kSending));
  if (!trusted) {
    return make_error(ErrorCode::kUntrustedIdentity, "the peer's identity key has changed");
  }
  PARLEY_ASSIGN_OR_RETURN(crypto::KeyPair our_identity, stores_.identity.identity_key_pair());
  PARLEY_ASSIGN_OR_RETURN(std::uint32_t our_registration_id,
                          stores_.identity.local_registration_id());
  PARLEY_ASSIGN_OR_RETURN(std::optional<SessionRecord> loaded,
                          stores_.sessions.load_session(remote_));
  SessionRecord record = loaded ? std::move(*loaded) : SessionRecord();

  crypto::KeyPair base_key = crypto::KeyPair::generate(rng_);
  const crypto::PublicKey* one_time = bundle.pre_key ? &*bundle.pre_key : nullptr;
  PARLEY_ASSIGN_OR_RETURN(
      SessionState state,
      initialize_alice_session(AliceParameters{our_identity, base_key, bundle.identity_key,
                                               bundle.signed_pre_key, one_time},
                               rng_));
  state.pending_pre_key =
      PendingPreKey{bundle.pre_key_id, bundle.signed_pre_key_id, base_key.public_key};
  state.local_registration_id = our_registration_id;
  state.remote_registration_id = bundle.registration_id;
  state.alice_base_key = base_key.public_key;
  record.promote_state(std::move(state));

  PARLEY_TRY(stores_.identity.save_identity(remote_, bundle.identity_key).status());
  return stores_.sessions.store_session(remote_, std::move(record));
}

}  // namespace parley::protocol
