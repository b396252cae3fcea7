#pragma once
// IdentityPolicy: the client's trust rule over LocalStore's identity store.
//
// - Receiving: any key is accepted, so a message from a contact who re-installed is still
//   decrypted and shown; a key that replaces a known one marks the contact "identity changed".
// - Sending: refused (the protocol returns kUntrustedIdentity) while the contact is marked
//   changed, until the user accepts the key (LocalStore::trust_contact, `parley trust`).
// Everything else is forwarded to the store. Not thread-safe, like the store.

#include "client/local_store.h"

namespace parley::client {

class IdentityPolicy final : public protocol::IdentityKeyStore {
 public:
  explicit IdentityPolicy(LocalStore& store) : store_(store) {}

  Result<crypto::KeyPair> identity_key_pair() override { return store_.identity_key_pair(); }
  Result<std::uint32_t> local_registration_id() override { return store_.local_registration_id(); }
  Result<bool> is_trusted_identity(const protocol::ProtocolAddress& address,
                                   const crypto::PublicKey& identity,
                                   protocol::Direction direction) override;
  Result<bool> save_identity(const protocol::ProtocolAddress& address,
                             const crypto::PublicKey& identity) override;
  Result<std::optional<crypto::PublicKey>> get_identity(
      const protocol::ProtocolAddress& address) override {
    return store_.get_identity(address);
  }

  // True when the contact (any of its devices) is marked changed.
  Result<bool> changed(const std::string& name);

 private:
  LocalStore& store_;
};

}  // namespace parley::client
