// parley-interop-peer: one parley party driven over newline-delimited JSON on stdin/stdout.
// Test-only (tests/interop/interop.test.mjs drives it against the npm libsignal 6.0.0).
//
// Every request is one JSON object on one line with an "op"; every reply is one JSON line with
// "ok": true/false. Byte strings are lower-case hex. Errors from the protocol are reported by
// their stable name (error_code_name), e.g. {"ok":false,"error":"bad_mac"}.
//
//   {"op":"init","name":"parley","registration_id":N?}
//       -> {"ok":true,"registration_id":N,"identity_key":hex33}
//       Creates the identity, one-time prekeys 1..10 and signed prekey 1.
//   {"op":"bundle","pre_key_id":N|0}
//       -> {"ok":true,"registration_id","device_id","identity_key","signed_pre_key_id",
//           "signed_pre_key","signature","pre_key_id"?,"pre_key"?}
//   {"op":"process_bundle","peer":"js","device_id":1?, <bundle fields as above>} -> {"ok":true}
//   {"op":"encrypt","peer":"js","plaintext":hex} -> {"ok":true,"type":1|3,"body":hex}
//   {"op":"decrypt","peer":"js","type":1|3,"body":hex} -> {"ok":true,"plaintext":hex}
//   {"op":"prekey_count"} -> {"ok":true,"count":N}
//   {"op":"state_digest"} -> {"ok":true,"digest":hex32}  (SHA-256 of the party's snapshot)
//   {"op":"quit"} -> {"ok":true}, then exit 0
//
// Exceptions (nlohmann::json parse/type errors) are confined to this JSON boundary: a bad
// request yields {"ok":false,"error":"bad_request","detail":...} and the peer keeps running.
// Not thread-safe; one request at a time.

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/status.h"
#include "crypto/curve.h"
#include "crypto/primitives.h"
#include "protocol/in_memory_stores.h"
#include "protocol/keys.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"

namespace parley::interop {
namespace {

using nlohmann::json;
using protocol::ProtocolAddress;

inline constexpr std::uint32_t kPreKeyCount = 10;
inline constexpr std::uint32_t kSignedPreKeyId = 1;

// A request that cannot be served as written (missing field, bad hex): reported as
// "bad_request", never as a protocol error.
struct BadRequest {
  std::string detail;
};

json error_reply(const Status& status) {
  return json{{"ok", false}, {"error", std::string(error_code_name(status.code()))}};
}

Bytes hex_field(const json& request, const char* key) {
  if (!request.contains(key) || !request.at(key).is_string()) {
    throw BadRequest{std::string("missing hex field ") + key};
  }
  auto bytes = from_hex(request.at(key).get<std::string>());
  if (!bytes) throw BadRequest{std::string("bad hex in ") + key};
  return std::move(*bytes);
}

std::uint32_t u32_field(const json& request, const char* key) {
  if (!request.contains(key) || !request.at(key).is_number_unsigned()) {
    throw BadRequest{std::string("missing unsigned field ") + key};
  }
  return request.at(key).get<std::uint32_t>();
}

class Peer {
 public:
  json handle(const json& request) {
    const std::string op = request.at("op").get<std::string>();
    if (op == "init") return init(request);
    if (!party_) return json{{"ok", false}, {"error", "not_initialized"}};
    if (op == "bundle") return bundle(request);
    if (op == "process_bundle") return process_bundle(request);
    if (op == "encrypt") return encrypt(request);
    if (op == "decrypt") return decrypt(request);
    if (op == "prekey_count") return json{{"ok", true}, {"count", party_->pre_keys.size()}};
    if (op == "state_digest") {
      auto digest = crypto::sha256(as_bytes(party_->snapshot()));
      return json{{"ok", true}, {"digest", to_hex(digest)}};
    }
    throw BadRequest{"unknown op"};
  }

 private:
  json init(const json& request) {
    std::uint32_t registration_id = protocol::generate_registration_id(rng_);
    if (request.contains("registration_id"))
      registration_id = u32_field(request, "registration_id");
    crypto::KeyPair identity = protocol::generate_identity_key_pair(rng_);
    party_ = std::make_unique<protocol::InMemoryParty>(identity.clone(), registration_id);
    for (const auto& pre_key : protocol::generate_pre_keys(1, kPreKeyCount, rng_)) {
      Status s = party_->pre_keys.store_pre_key(pre_key);
      if (!s.is_ok()) return error_reply(s);
    }
    Status s = party_->signed_pre_keys.store_signed_pre_key(
        protocol::generate_signed_pre_key(identity, kSignedPreKeyId, 0, rng_));
    if (!s.is_ok()) return error_reply(s);
    return json{{"ok", true},
                {"registration_id", registration_id},
                {"identity_key", to_hex(identity.public_key.serialize())}};
  }

  json bundle(const json& request) {
    const std::uint32_t pre_key_id = u32_field(request, "pre_key_id");
    auto registration_id = party_->identity.local_registration_id();
    auto identity = party_->identity.identity_key_pair();
    auto signed_pre_key = party_->signed_pre_keys.load_signed_pre_key(kSignedPreKeyId);
    if (!registration_id) return error_reply(registration_id.error());
    if (!identity) return error_reply(identity.error());
    if (!signed_pre_key) return error_reply(signed_pre_key.error());
    json reply{{"ok", true},
               {"registration_id", *registration_id},
               {"device_id", 1},
               {"identity_key", to_hex(identity->public_key.serialize())},
               {"signed_pre_key_id", signed_pre_key->id},
               {"signed_pre_key", to_hex(signed_pre_key->key_pair.public_key.serialize())},
               {"signature", to_hex(signed_pre_key->signature)}};
    if (pre_key_id != 0) {
      auto pre_key = party_->pre_keys.load_pre_key(pre_key_id);
      if (!pre_key) return error_reply(pre_key.error());
      reply["pre_key_id"] = pre_key_id;
      reply["pre_key"] = to_hex(pre_key->key_pair.public_key.serialize());
    }
    return reply;
  }

  json process_bundle(const json& request) {
    protocol::PreKeyBundle b;
    b.registration_id = u32_field(request, "registration_id");
    b.device_id = request.contains("device_id") ? u32_field(request, "device_id") : 1;
    auto identity = crypto::PublicKey::deserialize(hex_field(request, "identity_key"));
    auto signed_pre_key = crypto::PublicKey::deserialize(hex_field(request, "signed_pre_key"));
    if (!identity) return error_reply(identity.error());
    if (!signed_pre_key) return error_reply(signed_pre_key.error());
    b.identity_key = *identity;
    b.signed_pre_key = *signed_pre_key;
    b.signed_pre_key_id = u32_field(request, "signed_pre_key_id");
    b.signed_pre_key_signature = hex_field(request, "signature");
    if (request.contains("pre_key_id") && !request.at("pre_key_id").is_null()) {
      auto pre_key = crypto::PublicKey::deserialize(hex_field(request, "pre_key"));
      if (!pre_key) return error_reply(pre_key.error());
      b.pre_key_id = u32_field(request, "pre_key_id");
      b.pre_key = *pre_key;
    }
    protocol::SessionBuilder builder(party_->stores(), peer_address(request, b.device_id), rng_);
    Status s = builder.process_bundle(b);
    if (!s.is_ok()) return error_reply(s);
    return json{{"ok", true}};
  }

  json encrypt(const json& request) {
    const Bytes plaintext = hex_field(request, "plaintext");
    protocol::SessionCipher cipher(party_->stores(), peer_address(request, 1), rng_);
    auto message = cipher.encrypt(plaintext);
    if (!message) return error_reply(message.error());
    return json{{"ok", true},
                {"type", static_cast<int>(message->type)},
                {"body", to_hex(message->serialized)}};
  }

  json decrypt(const json& request) {
    const std::uint32_t type = u32_field(request, "type");
    if (type != 1 && type != 3) throw BadRequest{"type must be 1 or 3"};
    const Bytes body = hex_field(request, "body");
    protocol::SessionCipher cipher(party_->stores(), peer_address(request, 1), rng_);
    auto plaintext = cipher.decrypt(static_cast<protocol::MessageType>(type), body);
    if (!plaintext) return error_reply(plaintext.error());
    return json{{"ok", true}, {"plaintext", to_hex(*plaintext)}};
  }

  static ProtocolAddress peer_address(const json& request, std::uint32_t device_id) {
    if (!request.contains("peer") || !request.at("peer").is_string()) {
      throw BadRequest{"missing peer"};
    }
    return ProtocolAddress{request.at("peer").get<std::string>(), device_id};
  }

  crypto::SystemRng rng_;
  std::unique_ptr<protocol::InMemoryParty> party_;
};

int run() {
  Peer peer;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    json reply;
    bool quit = false;
    try {
      const json request = json::parse(line);
      if (request.value("op", "") == "quit") {
        reply = json{{"ok", true}};
        quit = true;
      } else {
        reply = peer.handle(request);
      }
    } catch (const BadRequest& e) {
      reply = json{{"ok", false}, {"error", "bad_request"}, {"detail", e.detail}};
    } catch (const json::exception& e) {
      reply = json{{"ok", false}, {"error", "bad_request"}, {"detail", e.what()}};
    }
    std::cout << reply.dump() << '\n' << std::flush;
    if (quit) break;
  }
  return 0;
}

}  // namespace
}  // namespace parley::interop

int main() { return parley::interop::run(); }
