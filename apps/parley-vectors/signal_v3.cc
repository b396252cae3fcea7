// How a transcript is replayed:
// - Every key pair the protocol draws comes from a scripted Rng that yields the private keys
//   of `generated_keys_in_order`, in order. Setup draws (identities, prekeys) come first, in
//   list order; then Alice builds her session (base key, first ratchet key); every later draw
//   is a DH-ratchet step on receipt of a message with a new ratchet key.
// - Messages are encrypted in `messages` order, each as late as possible: just before the
//   first delivery that needs it. Deliveries follow `delivery_order`. Messages never delivered
//   are encrypted at the end.
// - Independently of the session code, every recorded intermediate value (X3DH DH outputs and
//   KDF, each root-chain step, each message's chain and message keys, MAC input and MAC) is
//   recomputed from the key schedule and compared.
#include "signal_v3.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "crypto/primitives.h"
#include "protocol/in_memory_stores.h"
#include "protocol/messages.h"
#include "protocol/ratchet.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"

namespace parley::vectors {

using nlohmann::json;
using protocol::MessageType;

void Report::check(bool ok, const std::string& what, const std::string& detail) {
  if (ok) {
    ++passed;
    std::printf("ok    %s\n", what.c_str());
  } else {
    ++failed;
    std::printf("FAIL  %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  }
}

namespace {

// Yields the listed private keys in order; records any draw that is not a whole key or that
// runs past the end of the list.
class ScriptedRng final : public Rng {
 public:
  explicit ScriptedRng(std::vector<Bytes> keys) : keys_(std::move(keys)) {}
  void fill(std::span<std::uint8_t> out) override {
    if (next_ >= keys_.size() || out.size() != keys_[next_].size()) {
      misuse_ = true;
      std::fill(out.begin(), out.end(), 0);
      return;
    }
    std::copy(keys_[next_].begin(), keys_[next_].end(), out.begin());
    ++next_;
  }
  std::size_t drawn() const { return next_; }
  bool misused() const { return misuse_; }

 private:
  std::vector<Bytes> keys_;
  std::size_t next_ = 0;
  bool misuse_ = false;
};

std::string hex_of(ByteView b) { return to_hex(b); }

class Verifier {
 public:
  Verifier(const json& t, std::string name, Report& r) : t_(t), name_(std::move(name)), r_(r) {}
  void run();

 private:
  std::string label(const std::string& what) const { return name_ + ": " + what; }
  void expect_hex(const std::string& what, const std::string& expected, ByteView actual) {
    const std::string got = hex_of(actual);
    r_.check(got == expected, label(what), got == expected ? "" : "expected " + expected + ", got " + got);
  }
  void expect_eq(const std::string& what, long long expected, long long actual) {
    r_.check(expected == actual, label(what),
             "expected " + std::to_string(expected) + ", got " + std::to_string(actual));
  }
  Bytes hex(const json& j) const {
    auto b = from_hex(j.get<std::string>());
    if (!b) throw std::runtime_error("bad hex in transcript");
    return *b;
  }
  crypto::PublicKey pub(const json& j) const {
    auto k = crypto::PublicKey::deserialize(hex(j));
    if (!k) throw std::runtime_error("bad public key in transcript");
    return *k;
  }
  std::optional<crypto::PrivateKey> private_for(const crypto::PublicKey& p) const {
    for (const auto& k : t_.at("generated_keys_in_order")) {
      if (pub(k.at("pub")) == p) return crypto::PrivateKey::from_bytes(hex(k.at("priv"))).value();
    }
    return std::nullopt;
  }

  void check_generated_keys();
  void check_x3dh();
  void check_root_steps();
  void check_message_fields(const json& m);
  void check_message_keys(const json& m);
  void replay();

  const json& t_;
  std::string name_;
  Report& r_;
};

void Verifier::check_generated_keys() {
  for (const auto& k : t_.at("generated_keys_in_order")) {
    auto kp = crypto::KeyPair::from_private(hex(k.at("priv")));
    const std::string what = "generated key " + std::to_string(k.at("index").get<int>()) + " (" +
                             k.at("label").get<std::string>() + ") public matches private";
    if (!kp) {
      r_.check(false, label(what), kp.error().to_string());
      continue;
    }
    expect_hex(what, k.at("pub").get<std::string>(), kp->public_key.serialize());
  }
  const auto& spk = t_.at("bob").at("signed_prekey");
  r_.check(crypto::verify_signature(pub(t_.at("bob").at("identity_pub")), hex(spk.at("pub")),
                                    hex(spk.at("signature"))),
           label("bob signed prekey signature verifies"));
  Bytes bad = hex(spk.at("signature"));
  bad[10] ^= 0x01;
  r_.check(!crypto::verify_signature(pub(t_.at("bob").at("identity_pub")), hex(spk.at("pub")), bad),
           label("a corrupted signed prekey signature is refused"));
}

void Verifier::check_x3dh() {
  const auto& x = t_.at("x3dh");
  const auto& alice = t_.at("alice");
  const auto& bob = t_.at("bob");
  auto ika = crypto::PrivateKey::from_bytes(hex(alice.at("identity_priv"))).value();
  auto eka = crypto::PrivateKey::from_bytes(hex(t_.at("alice_base_key").at("priv"))).value();
  const auto ikb = pub(bob.at("identity_pub"));
  const auto spkb = pub(bob.at("signed_prekey").at("pub"));
  Bytes ikm(32, 0xFF);
  auto dh = [&](const std::string& what, const crypto::PrivateKey& ours,
                const crypto::PublicKey& theirs, const json& expected) {
    auto s = ours.agree(theirs);
    if (!s) return r_.check(false, label(what), s.error().to_string());
    expect_hex(what, expected.get<std::string>(), s->view());
    append(ikm, s->view());
  };
  dh("x3dh DH1 = DH(IK_A, SPK_B)", ika, spkb, x.at("dh1_IKA_SPKB"));
  dh("x3dh DH2 = DH(EK_A, IK_B)", eka, ikb, x.at("dh2_EKA_IKB"));
  dh("x3dh DH3 = DH(EK_A, SPK_B)", eka, spkb, x.at("dh3_EKA_SPKB"));
  const json& opk = bob.contains("one_time_prekey") ? bob.at("one_time_prekey") : json();
  if (!opk.is_null()) {
    dh("x3dh DH4 = DH(EK_A, OPK_B)", eka, pub(opk.at("pub")), x.at("dh4_EKA_OPKB"));
  } else {
    r_.check(x.at("dh4_EKA_OPKB").is_null(), label("x3dh has no DH4 without a one-time prekey"));
  }
  expect_hex("x3dh HKDF input", x.at("hkdf_ikm").get<std::string>(), ikm);
  auto keys = protocol::derive_initial_keys(ikm);
  if (!keys) return r_.check(false, label("x3dh HKDF"), keys.error().to_string());
  expect_hex("x3dh root key", x.at("root_key").get<std::string>(), keys->first.key.view());
  expect_hex("x3dh chain key", x.at("chain_key").get<std::string>(), keys->second.key.view());
}

void Verifier::check_root_steps() {
  std::string root_in = t_.at("x3dh").at("root_key").get<std::string>();
  int i = 0;
  for (const auto& s : t_.at("root_chain_steps")) {
    const std::string step = "root step " + std::to_string(i++);
    expect_hex(step + " input root key chains from the previous step",
               s.at("hkdf_salt_root_key_in").get<std::string>(), *from_hex(root_in));
    const auto sender = pub(s.at("sender_ratchet_pub"));
    const auto receiver = pub(s.at("receiver_ratchet_pub"));
    auto priv = private_for(sender);
    if (!priv) {
      r_.check(false, label(step + " sender ratchet key is among the generated keys"));
      continue;
    }
    auto shared = priv->agree(receiver);
    if (!shared) {
      r_.check(false, label(step + " DH"), shared.error().to_string());
      continue;
    }
    expect_hex(step + " DH", s.at("dh").get<std::string>(), shared->view());
    protocol::RootKey rk{SecretBytes(hex(s.at("hkdf_salt_root_key_in")))};
    auto next = rk.create_chain(receiver, *priv);
    if (!next) {
      r_.check(false, label(step + " KDF"), next.error().to_string());
      continue;
    }
    expect_hex(step + " root key out", s.at("root_key_out").get<std::string>(),
               next->first.key.view());
    expect_hex(step + " chain key 0", s.at("chain_key_0").get<std::string>(),
               next->second.key.view());
    root_in = s.at("root_key_out").get<std::string>();
  }
}

void Verifier::check_message_fields(const json& m) {
  const std::string id = m.at("id").get<std::string>();
  const Bytes serialized = hex(m.at("serialized_hex"));
  const auto& w = m.at("whisper_message");
  Bytes whisper_bytes = serialized;
  if (m.at("type").get<int>() == 3) {
    auto p = protocol::PreKeyWhisperMessage::parse(serialized);
    if (!p) return r_.check(false, label(id + " parses as PreKeyWhisperMessage"), p.error().to_string());
    const auto& f = m.at("prekey_fields");
    expect_eq(id + " registrationId", f.at("registrationId_f5").get<long long>(), p->registration_id());
    const bool has_opk = !f.at("preKeyId_f1").is_null();
    r_.check(has_opk == p->pre_key_id().has_value() &&
                 (!has_opk || f.at("preKeyId_f1").get<long long>() == *p->pre_key_id()),
             label(id + " preKeyId"));
    expect_eq(id + " signedPreKeyId", f.at("signedPreKeyId_f6").get<long long>(), p->signed_pre_key_id());
    expect_hex(id + " baseKey", f.at("baseKey_f2").get<std::string>(), p->base_key().serialize());
    expect_hex(id + " identityKey", f.at("identityKey_f3").get<std::string>(), p->identity_key().serialize());
    expect_eq(id + " inner message length", f.at("message_f4_len").get<long long>(),
              static_cast<long long>(p->message().serialized().size()));
    whisper_bytes = p->message().serialized();
  }
  auto wm = protocol::WhisperMessage::parse(whisper_bytes);
  if (!wm) return r_.check(false, label(id + " parses as WhisperMessage"), wm.error().to_string());
  expect_hex(id + " version byte", w.at("version_byte").get<std::string>(), ByteView(whisper_bytes).first(1));
  expect_hex(id + " protobuf", w.at("protobuf_hex").get<std::string>(),
             ByteView(whisper_bytes).subspan(1, whisper_bytes.size() - 1 - protocol::kMacSize));
  expect_hex(id + " ratchetKey", w.at("ratchetKey_f1").get<std::string>(), wm->ratchet_key().serialize());
  expect_eq(id + " counter", w.at("counter_f2").get<long long>(), wm->counter());
  expect_eq(id + " previousCounter", w.at("previousCounter_f3").get<long long>(), wm->previous_counter());
  expect_hex(id + " ciphertext", w.at("ciphertext_f4").get<std::string>(), wm->ciphertext());
  expect_hex(id + " mac8", w.at("mac8").get<std::string>(), ByteView(whisper_bytes).last(protocol::kMacSize));
}

void Verifier::check_message_keys(const json& m) {
  const std::string id = m.at("id").get<std::string>();
  const auto& w = m.at("whisper_message");
  const auto& d = m.at("derived");
  const std::string ratchet = w.at("ratchetKey_f1").get<std::string>();
  std::optional<std::string> ck0;
  for (const auto& s : t_.at("root_chain_steps")) {
    if (s.at("sender_ratchet_pub").get<std::string>() == ratchet) ck0 = s.at("chain_key_0");
  }
  if (!ck0) return r_.check(false, label(id + " its chain is one of the root-chain steps"));
  protocol::ChainKey ck{SecretBytes(*from_hex(*ck0)), 0};
  const auto counter = w.at("counter_f2").get<std::uint32_t>();
  while (ck.index < counter) ck = ck.next();
  expect_hex(id + " chain key", d.at("chain_key").get<std::string>(), ck.key.view());
  SecretBytes seed = ck.message_key_seed();
  expect_hex(id + " message key", d.at("message_key").get<std::string>(), seed.view());
  auto mk = protocol::MessageKeys::derive(seed.view(), counter);
  if (!mk) return r_.check(false, label(id + " message keys"), mk.error().to_string());
  expect_hex(id + " cipher key", d.at("cipher_key").get<std::string>(), mk->cipher_key.view());
  expect_hex(id + " mac key", d.at("mac_key").get<std::string>(), mk->mac_key.view());
  expect_hex(id + " iv", d.at("iv").get<std::string>(), mk->iv.view());
  const bool from_a = m.at("from").get<std::string>() == "A";
  Bytes mac_input = hex(t_.at(from_a ? "alice" : "bob").at("identity_pub"));
  append(mac_input, hex(t_.at(from_a ? "bob" : "alice").at("identity_pub")));
  append(mac_input, hex(w.at("version_byte")));
  append(mac_input, hex(w.at("protobuf_hex")));
  expect_hex(id + " MAC input", d.at("mac_input_hex").get<std::string>(), mac_input);
  auto mac = crypto::hmac_sha256(mk->mac_key.view(), mac_input);
  expect_hex(id + " full MAC", d.at("mac_full").get<std::string>(), mac);
  auto plain = crypto::aes256_cbc_decrypt(mk->cipher_key.view(), mk->iv.view(), hex(w.at("ciphertext_f4")));
  r_.check(plain.has_value() && hex_of(*plain) == m.at("plaintext_hex").get<std::string>(),
           label(id + " ciphertext decrypts with the recorded keys"));
}

void Verifier::replay() {
  std::vector<Bytes> keys;
  for (const auto& k : t_.at("generated_keys_in_order")) keys.push_back(hex(k.at("priv")));
  ScriptedRng rng(std::move(keys));
  const auto& alice_j = t_.at("alice");
  const auto& bob_j = t_.at("bob");
  const json& opk_j = bob_j.contains("one_time_prekey") ? bob_j.at("one_time_prekey") : json();

  // Setup draws, in list order, by role.
  std::map<std::string, crypto::KeyPair> role;
  for (const auto& k : t_.at("generated_keys_in_order")) {
    const std::string l = k.at("label").get<std::string>();
    std::string r;
    for (const char* prefix : {"alice_identity", "bob_identity", "bob_signed_prekey", "bob_one_time_prekey"}) {
      if (l.rfind(prefix, 0) == 0) r = prefix;
    }
    if (r.empty()) break;
    role.emplace(r, crypto::KeyPair::generate(rng));
  }
  auto expect_role = [&](const std::string& r, const json& expected_pub) {
    auto it = role.find(r);
    r_.check(it != role.end() && hex_of(it->second.public_key.serialize()) == expected_pub.get<std::string>(),
             label("injected " + r + " matches the transcript"));
    return it != role.end();
  };
  if (!expect_role("alice_identity", alice_j.at("identity_pub")) ||
      !expect_role("bob_identity", bob_j.at("identity_pub")) ||
      !expect_role("bob_signed_prekey", bob_j.at("signed_prekey").at("pub"))) {
    return;
  }
  if (!opk_j.is_null() && !expect_role("bob_one_time_prekey", opk_j.at("pub"))) return;

  protocol::InMemoryParty alice(role.at("alice_identity").clone(), alice_j.at("registration_id").get<std::uint32_t>());
  protocol::InMemoryParty bob(role.at("bob_identity").clone(), bob_j.at("registration_id").get<std::uint32_t>());
  const protocol::ProtocolAddress alice_addr{"alice", 1}, bob_addr{"bob", 1};

  const auto& spk_j = bob_j.at("signed_prekey");
  protocol::SignedPreKeyRecord spk{spk_j.at("id").get<std::uint32_t>(), role.at("bob_signed_prekey").clone(), {}, 0};
  Bytes sig = hex(spk_j.at("signature"));
  if (sig.size() != spk.signature.size()) return r_.check(false, label("signature size"));
  std::copy(sig.begin(), sig.end(), spk.signature.begin());
  bob.signed_pre_keys.store_signed_pre_key(spk).ignore();
  protocol::PreKeyBundle bundle;
  bundle.registration_id = bob_j.at("registration_id").get<std::uint32_t>();
  if (!opk_j.is_null()) {
    const auto id = opk_j.at("id").get<std::uint32_t>();
    bob.pre_keys.store_pre_key(protocol::PreKeyRecord{id, role.at("bob_one_time_prekey").clone()}).ignore();
    bundle.pre_key_id = id;
    bundle.pre_key = role.at("bob_one_time_prekey").public_key;
  }
  bundle.signed_pre_key_id = spk.id;
  bundle.signed_pre_key = spk.key_pair.public_key;
  bundle.signed_pre_key_signature = sig;
  bundle.identity_key = role.at("bob_identity").public_key;

  // Alice refuses a bundle with a corrupted signature, and accepts the real one.
  {
    protocol::PreKeyBundle bad = bundle;
    bad.signed_pre_key_signature[0] ^= 0x01;
    DeterministicRng unused(0);
    Status s = protocol::SessionBuilder(alice.stores(), bob_addr, unused).process_bundle(bad);
    r_.check(s.code() == ErrorCode::kBadSignature, label("a bundle with a bad signature is refused"));
  }
  Status built = protocol::SessionBuilder(alice.stores(), bob_addr, rng).process_bundle(bundle);
  r_.check(built.is_ok(), label("alice builds a session from bob's bundle"), built.to_string());
  if (!built.is_ok()) return;
  {
    auto rec = alice.sessions.load_session(bob_addr).value();
    expect_hex("alice base key is the injected one", t_.at("alice_base_key").at("pub").get<std::string>(),
               rec->current_state()->alice_base_key.serialize());
  }

  // Encrypt lazily, deliver in delivery_order.
  const auto& messages = t_.at("messages");
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < messages.size(); ++i) index[messages[i].at("id").get<std::string>()] = i;
  std::map<std::string, protocol::CiphertextMessage> produced;
  std::size_t next = 0;
  auto encrypt_through = [&](std::size_t last) {
    for (; next <= last && next < messages.size(); ++next) {
      const auto& m = messages[next];
      const std::string id = m.at("id").get<std::string>();
      const bool from_a = m.at("from").get<std::string>() == "A";
      protocol::SessionCipher cipher(from_a ? alice.stores() : bob.stores(), from_a ? bob_addr : alice_addr, rng);
      auto c = cipher.encrypt(hex(m.at("plaintext_hex")));
      if (!c) {
        r_.check(false, label(id + " encrypts"), c.error().to_string());
        continue;
      }
      expect_eq(id + " message type", m.at("type").get<long long>(), static_cast<long long>(c->type));
      expect_hex(id + " serialized bytes reproduced", m.at("serialized_hex").get<std::string>(), c->serialized);
      produced.emplace(id, std::move(c).value());
    }
  };
  for (const auto& d : t_.at("delivery_order")) {
    const std::string id = d.get<std::string>();
    auto it = index.find(id);
    if (it == index.end()) {
      r_.check(false, label("delivery of unknown message " + id));
      continue;
    }
    encrypt_through(it->second);
    const auto& m = messages[it->second];
    const bool from_a = m.at("from").get<std::string>() == "A";
    // Deliver the recorded bytes (not ours), so a mismatch above cannot hide here.
    protocol::SessionCipher cipher(from_a ? bob.stores() : alice.stores(), from_a ? alice_addr : bob_addr, rng);
    auto p = cipher.decrypt(static_cast<MessageType>(m.at("type").get<int>()), hex(m.at("serialized_hex")));
    r_.check(p.has_value() && hex_of(*p) == m.at("plaintext_hex").get<std::string>(),
             label(id + " delivered and decrypted by " + (from_a ? "bob" : "alice")),
             p.has_value() ? "plaintext differs" : p.error().to_string());
    if (p) {
      auto again = cipher.decrypt(static_cast<MessageType>(m.at("type").get<int>()), hex(m.at("serialized_hex")));
      r_.check(!again.has_value() && again.error().code() == ErrorCode::kDuplicateMessage,
               label(id + " replay is refused as a duplicate"));
    }
  }
  encrypt_through(messages.size());
  if (!opk_j.is_null()) {
    r_.check(bob.pre_keys.size() == 0, label("bob's one-time prekey was consumed"));
  }
  r_.check(!rng.misused() && rng.drawn() == t_.at("generated_keys_in_order").size(),
           label("every generated key was drawn, in order, and no other randomness"),
           "drew " + std::to_string(rng.drawn()) + (rng.misused() ? " (and past the list)" : ""));
}

void Verifier::run() {
  check_generated_keys();
  check_x3dh();
  check_root_steps();
  for (const auto& m : t_.at("messages")) {
    check_message_fields(m);
    check_message_keys(m);
  }
  replay();
}

}  // namespace

void verify_signal_v3_file(const std::string& path, Report& report) {
  std::ifstream in(path);
  if (!in) return report.check(false, path + ": readable");
  json t = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (t.is_discarded()) return report.check(false, path + ": parses as JSON");
  const std::string name = path.substr(path.find_last_of('/') + 1);
  try {
    Verifier(t, name, report).run();
  } catch (const std::exception& e) {
    // The transcript itself is malformed (a missing field or wrong type): one failed check.
    report.check(false, name + ": transcript follows the schema", e.what());
  }
}

}  // namespace parley::vectors
