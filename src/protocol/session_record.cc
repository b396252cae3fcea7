#include "protocol/session_record.h"

#include "signal/storage.pb.h"

namespace parley::protocol {

namespace pb = signal::storage;

ReceiverChain ReceiverChain::clone() const {
  ReceiverChain out{sender_ratchet_key, chain_key.clone(), {}};
  for (const auto& k : skipped) out.skipped.push_back(k.clone());
  return out;
}

SessionState SessionState::clone() const {
  SessionState out;
  out.version = version;
  out.local_identity = local_identity;
  out.remote_identity = remote_identity;
  out.root_key = root_key.clone();
  out.previous_counter = previous_counter;
  if (sender_chain) out.sender_chain = sender_chain->clone();
  out.receiver_chains.reserve(receiver_chains.size());
  for (const auto& c : receiver_chains) out.receiver_chains.push_back(c.clone());
  out.pending_pre_key = pending_pre_key;
  out.local_registration_id = local_registration_id;
  out.remote_registration_id = remote_registration_id;
  out.alice_base_key = alice_base_key;
  return out;
}

ReceiverChain* SessionState::find_receiver_chain(const crypto::PublicKey& sender_ratchet_key) {
  for (auto& c : receiver_chains) {
    if (c.sender_ratchet_key == sender_ratchet_key) return &c;
  }
  return nullptr;
}

void SessionState::add_receiver_chain(ReceiverChain chain) {
  receiver_chains.push_back(std::move(chain));
  if (receiver_chains.size() > kMaxReceiverChains) receiver_chains.erase(receiver_chains.begin());
}

SessionRecord SessionRecord::clone() const {
  SessionRecord out;
  if (current_) out.current_ = current_->clone();
  for (const auto& s : previous_) out.previous_.push_back(s.clone());
  return out;
}

bool SessionRecord::has_session_state(std::uint32_t version,
                                      const crypto::PublicKey& alice_base_key) const {
  if (current_ && current_->version == version && current_->alice_base_key == alice_base_key) {
    return true;
  }
  for (const auto& s : previous_) {
    if (s.version == version && s.alice_base_key == alice_base_key) return true;
  }
  return false;
}

void SessionRecord::archive_current_state() {
  if (!current_) return;
  previous_.push_front(std::move(*current_));
  current_.reset();
  while (previous_.size() > kMaxArchivedStates) previous_.pop_back();
}

void SessionRecord::promote_state(SessionState state) {
  archive_current_state();
  current_ = std::move(state);
}

// ---- Serialization ---------------------------------------------------------------------------

namespace {

void put_secret(std::string* dst, const SecretBytes& s) { dst->assign(as_chars(s.view())); }

void wipe(std::string* s) {
  if (!s->empty()) secure_zero(s->data(), s->size());
}

void to_proto(const ChainKey& ck, pb::Chain::ChainKey* p) {
  p->set_index(ck.index);
  put_secret(p->mutable_key(), ck.key);
}

void to_proto(const SessionState& s, pb::SessionStructure* p) {
  p->set_session_version(s.version);
  p->set_local_identity_public(std::string(as_chars(s.local_identity.serialize())));
  p->set_remote_identity_public(std::string(as_chars(s.remote_identity.serialize())));
  put_secret(p->mutable_root_key(), s.root_key.key);
  p->set_previous_counter(s.previous_counter);
  if (s.sender_chain) {
    auto* c = p->mutable_sender_chain();
    c->set_sender_ratchet_key(std::string(as_chars(s.sender_chain->ratchet_key.public_key.serialize())));
    put_secret(c->mutable_sender_ratchet_key_private(),
               s.sender_chain->ratchet_key.private_key.bytes());
    to_proto(s.sender_chain->chain_key, c->mutable_chain_key());
  }
  for (const auto& rc : s.receiver_chains) {
    auto* c = p->add_receiver_chains();
    c->set_sender_ratchet_key(std::string(as_chars(rc.sender_ratchet_key.serialize())));
    to_proto(rc.chain_key, c->mutable_chain_key());
    for (const auto& mk : rc.skipped) {
      auto* m = c->add_message_keys();
      m->set_index(mk.counter);
      put_secret(m->mutable_cipher_key(), mk.cipher_key);
      put_secret(m->mutable_mac_key(), mk.mac_key);
      put_secret(m->mutable_iv(), mk.iv);
    }
  }
  if (s.pending_pre_key) {
    auto* pp = p->mutable_pending_pre_key();
    if (s.pending_pre_key->pre_key_id) pp->set_pre_key_id(*s.pending_pre_key->pre_key_id);
    pp->set_signed_pre_key_id(s.pending_pre_key->signed_pre_key_id);
    pp->set_base_key(std::string(as_chars(s.pending_pre_key->base_key.serialize())));
  }
  p->set_local_registration_id(s.local_registration_id);
  p->set_remote_registration_id(s.remote_registration_id);
  p->set_alice_base_key(std::string(as_chars(s.alice_base_key.serialize())));
}

void wipe_proto(pb::Chain* c) {
  wipe(c->mutable_sender_ratchet_key_private());
  wipe(c->mutable_chain_key()->mutable_key());
  for (auto& m : *c->mutable_message_keys()) {
    wipe(m.mutable_cipher_key());
    wipe(m.mutable_mac_key());
    wipe(m.mutable_iv());
  }
}

void wipe_proto(pb::SessionStructure* p) {
  wipe(p->mutable_root_key());
  if (p->has_sender_chain()) wipe_proto(p->mutable_sender_chain());
  for (auto& c : *p->mutable_receiver_chains()) wipe_proto(&c);
}

Status malformed(const char* what) {
  return make_error(ErrorCode::kMalformed, std::string("session record: ") + what);
}

Result<SecretBytes> secret_field(const std::string& s, std::size_t size, const char* what) {
  if (s.size() != size) return malformed(what);
  return SecretBytes(as_bytes(s));
}

Result<crypto::PublicKey> key_field(const std::string& s) {
  auto k = crypto::PublicKey::deserialize(as_bytes(s));
  if (!k) return malformed("bad public key");
  return k;
}

Result<ChainKey> from_proto(const pb::Chain::ChainKey& p) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes key, secret_field(p.key(), kKeySize, "chain key size"));
  return ChainKey{std::move(key), p.index()};
}

Result<SessionState> from_proto(const pb::SessionStructure& p) {
  SessionState s;
  s.version = p.session_version();
  if (s.version != kSessionVersion) return malformed("unsupported session version");
  PARLEY_ASSIGN_OR_RETURN(s.local_identity, key_field(p.local_identity_public()));
  PARLEY_ASSIGN_OR_RETURN(s.remote_identity, key_field(p.remote_identity_public()));
  PARLEY_ASSIGN_OR_RETURN(s.root_key.key, secret_field(p.root_key(), kKeySize, "root key size"));
  s.previous_counter = p.previous_counter();
  if (p.has_sender_chain()) {
    const auto& c = p.sender_chain();
    // The public half is taken as stored, not re-derived: deriving it costs a scalar
    // multiplication (~33 us) on every load of a session, i.e. on every message. Records come
    // from our own store, which authenticates them (the client's SQLCipher pages are MACed).
    PARLEY_ASSIGN_OR_RETURN(crypto::PublicKey pub, key_field(c.sender_ratchet_key()));
    PARLEY_ASSIGN_OR_RETURN(crypto::PrivateKey priv, crypto::PrivateKey::from_bytes(
                                                         as_bytes(c.sender_ratchet_key_private())));
    PARLEY_ASSIGN_OR_RETURN(ChainKey ck, from_proto(c.chain_key()));
    s.sender_chain = SenderChain{crypto::KeyPair{pub, std::move(priv)}, std::move(ck)};
  }
  if (static_cast<std::size_t>(p.receiver_chains_size()) > kMaxReceiverChains) {
    return malformed("too many receiver chains");
  }
  for (const auto& c : p.receiver_chains()) {
    ReceiverChain rc;
    PARLEY_ASSIGN_OR_RETURN(rc.sender_ratchet_key, key_field(c.sender_ratchet_key()));
    PARLEY_ASSIGN_OR_RETURN(rc.chain_key, from_proto(c.chain_key()));
    if (static_cast<std::size_t>(c.message_keys_size()) > kMaxSkippedMessageKeys) {
      return malformed("too many skipped message keys");
    }
    for (const auto& m : c.message_keys()) {
      MessageKeys mk;
      mk.counter = m.index();
      PARLEY_ASSIGN_OR_RETURN(mk.cipher_key, secret_field(m.cipher_key(), 32, "cipher key"));
      PARLEY_ASSIGN_OR_RETURN(mk.mac_key, secret_field(m.mac_key(), 32, "mac key"));
      PARLEY_ASSIGN_OR_RETURN(mk.iv, secret_field(m.iv(), 16, "iv"));
      rc.skipped.push_back(std::move(mk));
    }
    s.receiver_chains.push_back(std::move(rc));
  }
  if (p.has_pending_pre_key()) {
    const auto& pp = p.pending_pre_key();
    PendingPreKey pending;
    if (pp.has_pre_key_id()) pending.pre_key_id = pp.pre_key_id();
    pending.signed_pre_key_id = pp.signed_pre_key_id();
    PARLEY_ASSIGN_OR_RETURN(pending.base_key, key_field(pp.base_key()));
    s.pending_pre_key = pending;
  }
  s.local_registration_id = p.local_registration_id();
  s.remote_registration_id = p.remote_registration_id();
  PARLEY_ASSIGN_OR_RETURN(s.alice_base_key, key_field(p.alice_base_key()));
  return s;
}

}  // namespace

Bytes SessionRecord::serialize() const {
  pb::RecordStructure p;
  p.set_format_version(kRecordFormatVersion);
  if (current_) to_proto(*current_, p.mutable_current_session());
  for (const auto& s : previous_) to_proto(s, p.add_previous_sessions());
  std::string out = p.SerializeAsString();
  if (p.has_current_session()) wipe_proto(p.mutable_current_session());
  for (auto& s : *p.mutable_previous_sessions()) wipe_proto(&s);
  Bytes bytes = to_bytes(out);
  wipe(&out);
  return bytes;
}

Result<SessionRecord> SessionRecord::deserialize(ByteView bytes) {
  pb::RecordStructure p;
  if (!p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return malformed("does not parse");
  }
  struct Wiper {
    pb::RecordStructure* p;
    ~Wiper() {
      if (p->has_current_session()) wipe_proto(p->mutable_current_session());
      for (auto& s : *p->mutable_previous_sessions()) wipe_proto(&s);
    }
  } wiper{&p};
  if (p.format_version() != kRecordFormatVersion) return malformed("unknown format version");
  if (static_cast<std::size_t>(p.previous_sessions_size()) > kMaxArchivedStates) {
    return malformed("too many archived sessions");
  }
  SessionRecord r;
  if (p.has_current_session()) {
    PARLEY_ASSIGN_OR_RETURN(r.current_, from_proto(p.current_session()));
  }
  for (const auto& s : p.previous_sessions()) {
    PARLEY_ASSIGN_OR_RETURN(SessionState st, from_proto(s));
    r.previous_.push_back(std::move(st));
  }
  return r;
}

}  // namespace parley::protocol
