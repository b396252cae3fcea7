#pragma once
// In-memory implementations of the protocol stores, for tests, fuzzers, benchmarks and the
// demonstration. They keep serialized-equivalent copies, so a test can compare a store's whole
// content before and after an operation (snapshot()). Not thread-safe.

#include <map>
#include <string>

#include "protocol/stores.h"

namespace parley::protocol {

class InMemoryIdentityKeyStore final : public IdentityKeyStore {
 public:
  InMemoryIdentityKeyStore(crypto::KeyPair identity, std::uint32_t registration_id)
      : identity_(std::move(identity)), registration_id_(registration_id) {}

  Result<crypto::KeyPair> identity_key_pair() override { return identity_.clone(); }
  Result<std::uint32_t> local_registration_id() override { return registration_id_; }
  Result<bool> is_trusted_identity(const ProtocolAddress& address,
                                   const crypto::PublicKey& identity, Direction) override;
  Result<bool> save_identity(const ProtocolAddress& address,
                             const crypto::PublicKey& identity) override;
  Result<std::optional<crypto::PublicKey>> get_identity(const ProtocolAddress& address) override;

  std::string snapshot() const;

 private:
  crypto::KeyPair identity_;
  std::uint32_t registration_id_;
  std::map<ProtocolAddress, crypto::PublicKey> known_;
};

class InMemoryPreKeyStore final : public PreKeyStore {
 public:
  Result<PreKeyRecord> load_pre_key(std::uint32_t id) override;
  Status store_pre_key(const PreKeyRecord& record) override;
  Status remove_pre_key(std::uint32_t id) override;
  std::size_t size() const { return keys_.size(); }
  std::string snapshot() const;

 private:
  std::map<std::uint32_t, Bytes> keys_;
};

class InMemorySignedPreKeyStore final : public SignedPreKeyStore {
 public:
  Result<SignedPreKeyRecord> load_signed_pre_key(std::uint32_t id) override;
  Status store_signed_pre_key(const SignedPreKeyRecord& record) override;
  Status remove_signed_pre_key(std::uint32_t id) override;
  std::string snapshot() const;

 private:
  std::map<std::uint32_t, Bytes> keys_;
};

// Keeps live records (no serialization on the hot path); snapshot() serializes.
class InMemorySessionStore final : public SessionStore {
 public:
  Result<std::optional<SessionRecord>> load_session(const ProtocolAddress& address) override;
  Status store_session(const ProtocolAddress& address, SessionRecord record) override;
  std::string snapshot() const;

 private:
  std::map<ProtocolAddress, SessionRecord> sessions_;
};

class InMemorySenderKeyStore final : public SenderKeyStore {
 public:
  Result<std::optional<SenderKeyRecord>> load_sender_key(const SenderKeyName& name) override;
  Status store_sender_key(const SenderKeyName& name, const SenderKeyRecord& record) override;
  std::string snapshot() const;

 private:
  std::map<SenderKeyName, SenderKeyRecord> records_;
};

// One party's complete set of stores, with a ProtocolStores view.
struct InMemoryParty {
  InMemoryParty(crypto::KeyPair identity_key, std::uint32_t registration_id)
      : identity(std::move(identity_key), registration_id) {}
  InMemoryIdentityKeyStore identity;
  InMemoryPreKeyStore pre_keys;
  InMemorySignedPreKeyStore signed_pre_keys;
  InMemorySessionStore sessions;
  InMemorySenderKeyStore sender_keys;

  ProtocolStores stores() { return ProtocolStores{identity, pre_keys, signed_pre_keys, sessions}; }
  // Everything the party holds, serialized: equal snapshots mean equal state.
  std::string snapshot() const;
};

}  // namespace parley::protocol
