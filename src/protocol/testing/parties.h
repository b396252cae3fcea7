#pragma once
// Test helpers: two in-memory parties with prekeys, and a bundle for one of them.
// Test-only (linked into tests, fuzzers and benchmarks, never into apps).

#include <memory>

#include "protocol/in_memory_stores.h"
#include "protocol/keys.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"

namespace parley::protocol::testing {

struct Party {
  Party(std::string name, Rng& rng, std::uint32_t pre_keys = 5)
      : address{std::move(name), 1},
        store(generate_identity_key_pair(rng), generate_registration_id(rng)) {
    auto identity = store.identity.identity_key_pair().value();
    for (auto& pk : generate_pre_keys(1, pre_keys, rng)) store.pre_keys.store_pre_key(pk).ignore();
    store.signed_pre_keys.store_signed_pre_key(generate_signed_pre_key(identity, 1, 0, rng))
        .ignore();
  }

  // A bundle for this party, with one-time prekey `pre_key_id` (0: none).
  PreKeyBundle bundle(std::uint32_t pre_key_id) {
    PreKeyBundle b;
    b.registration_id = store.identity.local_registration_id().value();
    b.device_id = address.device_id;
    if (pre_key_id != 0) {
      b.pre_key_id = pre_key_id;
      b.pre_key = store.pre_keys.load_pre_key(pre_key_id).value().key_pair.public_key;
    }
    auto spk = store.signed_pre_keys.load_signed_pre_key(1).value();
    b.signed_pre_key_id = spk.id;
    b.signed_pre_key = spk.key_pair.public_key;
    b.signed_pre_key_signature = Bytes(spk.signature.begin(), spk.signature.end());
    b.identity_key = store.identity.identity_key_pair().value().public_key;
    return b;
  }

  SessionCipher cipher_for(const Party& peer, Rng& rng) {
    return SessionCipher(store.stores(), peer.address, rng);
  }
  SessionBuilder builder_for(const Party& peer, Rng& rng) {
    return SessionBuilder(store.stores(), peer.address, rng);
  }

  ProtocolAddress address;
  InMemoryParty store;
};

}  // namespace parley::protocol::testing
