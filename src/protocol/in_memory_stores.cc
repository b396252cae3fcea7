#include "protocol/in_memory_stores.h"

namespace parley::protocol {

Result<bool> InMemoryIdentityKeyStore::is_trusted_identity(const ProtocolAddress& address,
                                                           const crypto::PublicKey& identity,
                                                           Direction) {
  auto it = known_.find(address);
  return it == known_.end() || it->second == identity;
}

Result<bool> InMemoryIdentityKeyStore::save_identity(const ProtocolAddress& address,
                                                     const crypto::PublicKey& identity) {
  auto [it, inserted] = known_.try_emplace(address, identity);
  if (inserted) return false;
  const bool replaced = it->second != identity;
  it->second = identity;
  return replaced;
}

Result<std::optional<crypto::PublicKey>> InMemoryIdentityKeyStore::get_identity(
    const ProtocolAddress& address) {
  auto it = known_.find(address);
  if (it == known_.end()) return std::optional<crypto::PublicKey>();
  return std::optional<crypto::PublicKey>(it->second);
}

std::string InMemoryIdentityKeyStore::snapshot() const {
  std::string out;
  for (const auto& [addr, key] : known_) out += addr.to_string() + "=" + to_hex(key.raw()) + ";";
  return out;
}

Result<PreKeyRecord> InMemoryPreKeyStore::load_pre_key(std::uint32_t id) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return make_error(ErrorCode::kUnknownPreKey, "unknown one-time prekey");
  return PreKeyRecord::deserialize(it->second);
}

Status InMemoryPreKeyStore::store_pre_key(const PreKeyRecord& record) {
  keys_[record.id] = record.serialize();
  return Status::ok();
}

Status InMemoryPreKeyStore::remove_pre_key(std::uint32_t id) {
  keys_.erase(id);
  return Status::ok();
}

std::string InMemoryPreKeyStore::snapshot() const {
  std::string out;
  for (const auto& [id, bytes] : keys_) out += std::to_string(id) + "=" + to_hex(bytes) + ";";
  return out;
}

Result<SignedPreKeyRecord> InMemorySignedPreKeyStore::load_signed_pre_key(std::uint32_t id) {
  auto it = keys_.find(id);
  if (it == keys_.end()) {
    return make_error(ErrorCode::kUnknownSignedPreKey, "unknown signed prekey");
  }
  return SignedPreKeyRecord::deserialize(it->second);
}

Status InMemorySignedPreKeyStore::store_signed_pre_key(const SignedPreKeyRecord& record) {
  keys_[record.id] = record.serialize();
  return Status::ok();
}

Status InMemorySignedPreKeyStore::remove_signed_pre_key(std::uint32_t id) {
  keys_.erase(id);
  return Status::ok();
}

std::string InMemorySignedPreKeyStore::snapshot() const {
  std::string out;
  for (const auto& [id, bytes] : keys_) out += std::to_string(id) + "=" + to_hex(bytes) + ";";
  return out;
}

Result<std::optional<SessionRecord>> InMemorySessionStore::load_session(
    const ProtocolAddress& address) {
  auto it = sessions_.find(address);
  if (it == sessions_.end()) return std::optional<SessionRecord>();
  return std::optional<SessionRecord>(it->second.clone());
}

Status InMemorySessionStore::store_session(const ProtocolAddress& address,
                                           SessionRecord record) {
  sessions_.insert_or_assign(address, std::move(record));
  return Status::ok();
}

std::string InMemorySessionStore::snapshot() const {
  std::string out;
  for (const auto& [addr, rec] : sessions_) {
    out += addr.to_string() + "=" + to_hex(rec.serialize()) + ";";
  }
  return out;
}

Result<std::optional<SenderKeyRecord>> InMemorySenderKeyStore::load_sender_key(
    const SenderKeyName& name) {
  auto it = records_.find(name);
  if (it == records_.end()) return std::optional<SenderKeyRecord>();
  return std::optional<SenderKeyRecord>(it->second);
}

Status InMemorySenderKeyStore::store_sender_key(const SenderKeyName& name,
                                                const SenderKeyRecord& record) {
  records_.insert_or_assign(name, record);
  return Status::ok();
}

std::string InMemorySenderKeyStore::snapshot() const {
  std::string out;
  for (const auto& [name, rec] : records_) {
    out += name.group_id + "/" + name.sender.to_string() + "=" + to_hex(rec.serialize()) + ";";
  }
  return out;
}

std::string InMemoryParty::snapshot() const {
  return identity.snapshot() + "|" + pre_keys.snapshot() + "|" + signed_pre_keys.snapshot() +
         "|" + sessions.snapshot() + "|" + sender_keys.snapshot();
}

}  // namespace parley::protocol
