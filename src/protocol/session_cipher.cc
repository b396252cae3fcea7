#include "protocol/session_cipher.h"

#include "crypto/primitives.h"
#include "protocol/session_builder.h"

namespace parley::protocol {
namespace {

// A DH-ratchet step computed but not yet applied.
struct RatchetStep {
  RootKey root_key;
  ReceiverChain receiver_chain;
  SenderChain sender_chain;
  std::uint32_t previous_counter;
};

Result<RatchetStep> compute_ratchet_step(const SessionState& state,
                                         const crypto::PublicKey& their_ratchet, Rng& rng) {
  PARLEY_ASSIGN_OR_RETURN(auto receiving,
                          state.root_key.create_chain(their_ratchet,
                                                      state.sender_chain->ratchet_key.private_key));
  crypto::KeyPair our_new = crypto::KeyPair::generate(rng);
  PARLEY_ASSIGN_OR_RETURN(auto sending,
                          receiving.first.create_chain(their_ratchet, our_new.private_key));
  const std::uint32_t sent = state.sender_chain->chain_key.index;
  return RatchetStep{std::move(sending.first),
                     ReceiverChain{their_ratchet, std::move(receiving.second), {}},
                     SenderChain{std::move(our_new), std::move(sending.second)},
                     sent > 0 ? sent - 1 : 0};
}

}  // namespace

Result<Bytes> decrypt_with_state(SessionState& state, const WhisperMessage& message, Rng& rng) {
  if (!state.sender_chain) {
    return make_error(ErrorCode::kNoSession, "session is not initialized");
  }
  const crypto::PublicKey& their_ratchet = message.ratchet_key();
  const std::uint32_t counter = message.counter();

  // 1. Find the receiving chain, or compute the DH-ratchet step that creates it.
  std::optional<RatchetStep> step;
  ReceiverChain* existing = state.find_receiver_chain(their_ratchet);
  if (!existing) {
    PARLEY_ASSIGN_OR_RETURN(step, compute_ratchet_step(state, their_ratchet, rng));
  }
  const ReceiverChain& chain = existing ? *existing : step->receiver_chain;

  // 2. Message keys: a stored skipped key, or advance the chain (bounded).
  std::optional<std::size_t> skipped_index;
  std::vector<MessageKeys> new_skipped;
  std::optional<ChainKey> advanced;
  MessageKeys keys;
  if (counter < chain.chain_key.index) {
    for (std::size_t i = 0; i < chain.skipped.size(); ++i) {
      if (chain.skipped[i].counter == counter) {
        skipped_index = i;
        break;
      }
    }
    if (!skipped_index) {
      return make_error(ErrorCode::kDuplicateMessage, "message key already used");
    }
    keys = chain.skipped[*skipped_index].clone();
  } else {
    if (counter - chain.chain_key.index > kMaxForwardJump) {
      return make_error(ErrorCode::kTooFarAhead, "message is too far ahead in the chain");
    }
    ChainKey ck = chain.chain_key.clone();
    while (ck.index < counter) {
      PARLEY_ASSIGN_OR_RETURN(auto s, ck.step());
      new_skipped.push_back(std::move(s.first));
      ck = std::move(s.second);
    }
    PARLEY_ASSIGN_OR_RETURN(auto s, ck.step());
    keys = std::move(s.first);
    advanced = std::move(s.second);
  }

  // 3. Verify, then decrypt. Nothing has been changed yet.
  PARLEY_TRY(message.verify_mac(state.remote_identity, state.local_identity, keys.mac_key.view()));
  PARLEY_ASSIGN_OR_RETURN(Bytes plaintext,
                          crypto::aes256_cbc_decrypt(keys.cipher_key.view(), keys.iv.view(),
                                                     message.ciphertext()));

  // 4. Commit.
  ReceiverChain* target = existing;
  if (step) {
    state.root_key = std::move(step->root_key);
    state.previous_counter = step->previous_counter;
    state.sender_chain = std::move(step->sender_chain);
    state.add_receiver_chain(std::move(step->receiver_chain));
    target = &state.receiver_chains.back();
  }
  if (skipped_index) {
    target->skipped.erase(target->skipped.begin() + static_cast<std::ptrdiff_t>(*skipped_index));
  } else {
    for (auto& mk : new_skipped) {
      target->skipped.push_back(std::move(mk));
      if (target->skipped.size() > kMaxSkippedMessageKeys) target->skipped.pop_front();
    }
    target->chain_key = std::move(*advanced);
  }
  state.pending_pre_key.reset();
  return plaintext;
}

Status SessionCipher::check_trust_and_save(const crypto::PublicKey& identity) {
  PARLEY_ASSIGN_OR_RETURN(bool trusted,
                          stores_.identity.is_trusted_identity(remote_, identity,
                                                               Direction::kReceiving));
  if (!trusted) {
    return make_error(ErrorCode::kUntrustedIdentity, "the peer's identity key has changed");
  }
  return Status::ok();
}

Result<CiphertextMessage> SessionCipher::encrypt(ByteView plaintext) {
  PARLEY_ASSIGN_OR_RETURN(std::optional<SessionRecord> loaded,
                          stores_.sessions.load_session(remote_));
  if (!loaded || !loaded->current_state() || !loaded->current_state()->sender_chain) {
    return make_error(ErrorCode::kNoSession, "no session with this address");
  }
  SessionRecord record = std::move(*loaded);
  SessionState& state = *record.current_state();
  PARLEY_ASSIGN_OR_RETURN(bool trusted,
                          stores_.identity.is_trusted_identity(remote_, state.remote_identity,
                                                               Direction::kSending));
  if (!trusted) {
    return make_error(ErrorCode::kUntrustedIdentity, "the peer's identity key has changed");
  }
  SenderChain& sender = *state.sender_chain;
  PARLEY_ASSIGN_OR_RETURN(auto step, sender.chain_key.step());
  const MessageKeys& keys = step.first;
  PARLEY_ASSIGN_OR_RETURN(Bytes ciphertext, crypto::aes256_cbc_encrypt(
                                                keys.cipher_key.view(), keys.iv.view(), plaintext));
  PARLEY_ASSIGN_OR_RETURN(
      WhisperMessage message,
      WhisperMessage::create(keys.mac_key.view(), sender.ratchet_key.public_key,
                             sender.chain_key.index, state.previous_counter, ciphertext,
                             state.local_identity, state.remote_identity));
  CiphertextMessage out;
  if (state.pending_pre_key) {
    const PendingPreKey& pending = *state.pending_pre_key;
    out.type = MessageType::kPreKeyWhisper;
    out.serialized = PreKeyWhisperMessage::create(state.local_registration_id,
                                                  pending.pre_key_id, pending.signed_pre_key_id,
                                                  pending.base_key, state.local_identity,
                                                  std::move(message))
                         .serialized();
  } else {
    out.type = MessageType::kWhisper;
    out.serialized = message.serialized();
  }
  sender.chain_key = std::move(step.second);
  PARLEY_TRY(stores_.sessions.store_session(remote_, std::move(record)));
  return out;
}

Result<Bytes> SessionCipher::decrypt_with_record(SessionRecord& record,
                                                 const WhisperMessage& message) {
  SessionState* current = record.current_state();
  if (!current) return make_error(ErrorCode::kNoSession, "no session with this address");
  auto result = decrypt_with_state(*current, message, rng_);
  if (result) return result;
  // The current state failed and is unchanged; try the archived states (newest first).
  auto& previous = record.previous_states();
  for (std::size_t i = 0; i < previous.size(); ++i) {
    auto attempt = decrypt_with_state(previous[i], message, rng_);
    if (attempt) {
      SessionState promoted = std::move(previous[i]);
      previous.erase(previous.begin() + static_cast<std::ptrdiff_t>(i));
      record.promote_state(std::move(promoted));
      return attempt;
    }
  }
  return result.error();
}

Result<Bytes> SessionCipher::decrypt_whisper(ByteView serialized) {
  PARLEY_ASSIGN_OR_RETURN(WhisperMessage message, WhisperMessage::parse(serialized));
  PARLEY_ASSIGN_OR_RETURN(std::optional<SessionRecord> loaded,
                          stores_.sessions.load_session(remote_));
  if (!loaded) return make_error(ErrorCode::kNoSession, "no session with this address");
  SessionRecord record = std::move(*loaded);
  PARLEY_ASSIGN_OR_RETURN(Bytes plaintext, decrypt_with_record(record, message));
  const crypto::PublicKey identity = record.current_state()->remote_identity;
  PARLEY_TRY(check_trust_and_save(identity));
  PARLEY_TRY(stores_.identity.save_identity(remote_, identity).status());
  PARLEY_TRY(stores_.sessions.store_session(remote_, std::move(record)));
  return plaintext;
}

Result<Bytes> SessionCipher::decrypt_prekey_whisper(ByteView serialized) {
  PARLEY_ASSIGN_OR_RETURN(PreKeyWhisperMessage message, PreKeyWhisperMessage::parse(serialized));
  PARLEY_TRY(check_trust_and_save(message.identity_key()));
  PARLEY_ASSIGN_OR_RETURN(std::optional<SessionRecord> loaded,
                          stores_.sessions.load_session(remote_));
  SessionRecord record = loaded ? std::move(*loaded) : SessionRecord();

  std::optional<std::uint32_t> used_pre_key;
  if (!record.has_session_state(kSessionVersion, message.base_key())) {
    PARLEY_ASSIGN_OR_RETURN(crypto::KeyPair our_identity, stores_.identity.identity_key_pair());
    PARLEY_ASSIGN_OR_RETURN(std::uint32_t our_registration_id,
                            stores_.identity.local_registration_id());
    PARLEY_ASSIGN_OR_RETURN(SignedPreKeyRecord signed_pre_key,
                            stores_.signed_pre_keys.load_signed_pre_key(
                                message.signed_pre_key_id()));
    std::optional<PreKeyRecord> one_time;
    if (message.pre_key_id()) {
      PARLEY_ASSIGN_OR_RETURN(one_time, stores_.pre_keys.load_pre_key(*message.pre_key_id()));
      used_pre_key = message.pre_key_id();
    }
    PARLEY_ASSIGN_OR_RETURN(
        SessionState state,
        initialize_bob_session(BobParameters{our_identity, signed_pre_key.key_pair,
                                             one_time ? &one_time->key_pair : nullptr,
                                             message.identity_key(), message.base_key()}));
    state.local_registration_id = our_registration_id;
    state.remote_registration_id = message.registration_id();
    record.promote_state(std::move(state));
  }
  PARLEY_ASSIGN_OR_RETURN(Bytes plaintext, decrypt_with_record(record, message.message()));
  PARLEY_TRY(stores_.identity.save_identity(remote_, message.identity_key()).status());
  PARLEY_TRY(stores_.sessions.store_session(remote_, std::move(record)));
  if (used_pre_key) PARLEY_TRY(stores_.pre_keys.remove_pre_key(*used_pre_key));
  return plaintext;
}

Result<Bytes> SessionCipher::decrypt(MessageType type, ByteView serialized) {
  switch (type) {
    case MessageType::kWhisper: return decrypt_whisper(serialized);
    case MessageType::kPreKeyWhisper: return decrypt_prekey_whisper(serialized);
  }
  return make_error(ErrorCode::kInvalidArgument, "unknown message type");
}

Result<std::uint32_t> SessionCipher::remote_registration_id() {
  PARLEY_ASSIGN_OR_RETURN(std::optional<SessionRecord> loaded,
                          stores_.sessions.load_session(remote_));
  if (!loaded || !loaded->current_state()) {
    return make_error(ErrorCode::kNoSession, "no session with this address");
  }
  return loaded->current_state()->remote_registration_id;
}

}  // namespace parley::protocol
