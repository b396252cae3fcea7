#pragma once
// Store interfaces for protocol state (libsignal's IdentityKeyStore, PreKeyStore,
// SignedPreKeyStore, SessionStore, SenderKeyStore).
//
// Contract for every store:
// - load_* returns an independent copy: mutating it does not change the store.
// - The protocol calls the mutating methods only after an operation has fully succeeded
//   (every decrypt/verify step done), so a failed operation leaves every store unchanged.
//   A persistent implementation should run one protocol operation inside one database
//   transaction (the client does), so a crash never leaves a half-applied step.
// - Implementations need not be thread-safe; callers serialize access per store.

#include <cstdint>
#include <optional>

#include "base/result.h"
#include "crypto/curve.h"
#include "protocol/address.h"
#include "protocol/keys.h"
#include "protocol/sender_key_record.h"
#include "protocol/session_record.h"

namespace parley::protocol {

enum class Direction { kSending, kReceiving };

class IdentityKeyStore {
 public:
  virtual ~IdentityKeyStore() = default;
  virtual Result<crypto::KeyPair> identity_key_pair() = 0;
  virtual Result<std::uint32_t> local_registration_id() = 0;
  // The trust hook. The default policy (in-memory store) is trust-on-first-use: an unknown
  // identity is trusted; a known one is trusted only if unchanged. A changed key stays
  // untrusted until the user accepts it (save_identity with the new key).
  virtual Result<bool> is_trusted_identity(const ProtocolAddress& address,
                                           const crypto::PublicKey& identity,
                                           Direction direction) = 0;
  // Records `identity` for `address`. Returns true when it replaced a different key.
  virtual Result<bool> save_identity(const ProtocolAddress& address,
                                     const crypto::PublicKey& identity) = 0;
  virtual Result<std::optional<crypto::PublicKey>> get_identity(const ProtocolAddress& address) = 0;
};

class PreKeyStore {
 public:
  virtual ~PreKeyStore() = default;
  // kUnknownPreKey when absent.
  virtual Result<PreKeyRecord> load_pre_key(std::uint32_t id) = 0;
  virtual Status store_pre_key(const PreKeyRecord& record) = 0;
  virtual Status remove_pre_key(std::uint32_t id) = 0;
};

class SignedPreKeyStore {
 public:
  virtual ~SignedPreKeyStore() = default;
  // kUnknownSignedPreKey when absent.
  virtual Result<SignedPreKeyRecord> load_signed_pre_key(std::uint32_t id) = 0;
  virtual Status store_signed_pre_key(const SignedPreKeyRecord& record) = 0;
  virtual Status remove_signed_pre_key(std::uint32_t id) = 0;
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // nullopt when there is no record for `address`.
  virtual Result<std::optional<SessionRecord>> load_session(const ProtocolAddress& address) = 0;
  // Takes the record by value: callers move it in (the in-memory store keeps it as is).
  virtual Status store_session(const ProtocolAddress& address, SessionRecord record) = 0;
};

class SenderKeyStore {
 public:
  virtual ~SenderKeyStore() = default;
  virtual Result<std::optional<SenderKeyRecord>> load_sender_key(const SenderKeyName& name) = 0;
  virtual Status store_sender_key(const SenderKeyName& name, const SenderKeyRecord& record) = 0;
};

// The stores one party's 1:1 operations need. References: the stores outlive this struct.
struct ProtocolStores {
  IdentityKeyStore& identity;
  PreKeyStore& pre_keys;
  SignedPreKeyStore& signed_pre_keys;
  SessionStore& sessions;
};

}  // namespace parley::protocol
