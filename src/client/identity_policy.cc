#include "client/identity_policy.h"

namespace parley::client {

Result<bool> IdentityPolicy::changed(const std::string& name) {
  return store_.identity_changed(name);
}

Result<bool> IdentityPolicy::is_trusted_identity(const protocol::ProtocolAddress& address,
                                                 const crypto::PublicKey& identity,
                                                 protocol::Direction direction) {
  if (direction == protocol::Direction::kReceiving) return true;
  PARLEY_ASSIGN_OR_RETURN(auto known, store_.get_identity(address));
  if (known && !(*known == identity)) return false;
  PARLEY_ASSIGN_OR_RETURN(bool flagged, changed(address.name));
  return !flagged;
}

Result<bool> IdentityPolicy::save_identity(const protocol::ProtocolAddress& address,
                                           const crypto::PublicKey& identity) {
  PARLEY_ASSIGN_OR_RETURN(bool replaced, store_.save_identity(address, identity));
  if (replaced) PARLEY_TRY(store_.mark_identity_changed(address));
  return replaced;
}

}  // namespace parley::client
