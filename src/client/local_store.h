#pragma once
// LocalStore: everything the client keeps, in the profile's encrypted database.
//
// - The protocol stores (identity, prekeys, signed prekeys, sessions, sender keys) with exactly
//   the semantics of the in-memory stores in src/protocol: trust on first use, and a changed
//   identity key stays untrusted until save_identity() (or trust_contact()) records the new one.
//   Records are kept in the protocol's own versioned serialization.
// - The account, contacts, the outbox, the message history and groups.
//
// Transactions: every method is atomic on its own. run_in_transaction() groups several calls
// (one protocol operation plus its message-log write) so that they commit together or not at
// all; calls nest (inner levels are SAVEPOINTs), and an inner failure undoes only that level.
//
// Ownership: borrows the Profile (its database), the Clock and the Rng; all must outlive the
// store. Not thread-safe: one thread at a time, as the protocol stores require.
// Errors: kIo and the other codes of the database layer (see client/internal/db.h) on storage
// failures; kMalformed when a stored record does not parse; specific codes per method below.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <deque>
#include <unordered_set>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/rng.h"
#include "client/profile.h"
#include "client/transports.h"
#include "crypto/curve.h"
#include "crypto/primitives.h"
#include "protocol/stores.h"

namespace parley::client {

inline constexpr std::size_t kClientMessageIdSize = 16;
inline constexpr std::size_t kGroupIdSize = 16;
inline constexpr std::size_t kRecentEnvelopes = 4096;

// The registered account of this profile (one row). Move-only: it holds private keys.
struct Account {
  std::string name;
  std::string server_address;  // as the user gave it (e.g. an invite's address)
  std::string server_host;
  std::string server_port;
  std::string server_pin;  // certificate pin
  std::string server_ws_path;
  std::uint32_t device_id = 0;
  std::uint32_t registration_id = 0;
  crypto::KeyPair identity;
  crypto::Ed25519KeyPair auth;  // device-authentication key (server login)
  std::uint32_t next_pre_key_id = 1;
  std::uint32_t signed_pre_key_id = 0;
};

// What the user knows about one peer device.
struct Contact {
  protocol::ProtocolAddress address;
  crypto::PublicKey identity_key;
  bool verified = false;          // the user compared safety numbers
  bool identity_changed = false;  // the peer presented a new key the user has not accepted yet
  std::int64_t first_seen_ms = 0;
};

// A message waiting to be sent (plaintext, encrypted at send time).
struct OutboxItem {
  std::int64_t id = 0;
  Bytes client_message_id;  // kClientMessageIdSize random bytes: the server's dedup key
  std::string recipient;    // an account name or a group id, as the caller encodes it
  Bytes payload;
  std::int64_t created_ms = 0;
  std::int64_t attempts = 0;
  std::int64_t next_attempt_ms = 0;
};

enum class MessageDirection { kIncoming, kOutgoing };
// Outgoing: sent -> delivered -> read, or failed. Incoming: delivered (stored) -> read, or failed
// (undecryptable; `error` says why).
enum class MessageStatus { kSent, kDelivered, kRead, kFailed };

// One entry of the history log.
struct StoredMessage {
  std::int64_t id = 0;       // assigned by append_message
  std::string conversation;  // an account name or a group id, as the caller encodes it
  MessageDirection direction = MessageDirection::kIncoming;
  protocol::ProtocolAddress sender;
  std::int64_t server_ms = 0;
  std::int64_t local_ms = 0;
  Bytes body;  // encoded content; opaque here
  MessageStatus status = MessageStatus::kDelivered;
  std::string error;               // empty unless the envelope could not be decrypted
  std::optional<Bytes> server_id;  // the server's envelope id; none for outgoing messages
  std::uint64_t content_ts = 0;    // the sender's timestamp inside the content (0: unknown)
};

struct Group {
  Bytes id;  // kGroupIdSize bytes
  std::string name;
  std::int64_t created_ms = 0;
  bool left = false;
  std::int64_t left_ms = 0;  // when we left (or were removed), by our clock; 0: never
  std::vector<std::string> members;  // account names, sorted; filled by load/list only
};

class LocalStore final : public protocol::IdentityKeyStore,
                         public protocol::PreKeyStore,
                         public protocol::SignedPreKeyStore,
                         public protocol::SessionStore,
                         public protocol::SenderKeyStore {
 public:
  // The clock stamps first-seen and creation times; the rng draws client message ids.
  LocalStore(Profile& profile, const Clock& clock, Rng& rng);

  // The 1:1 protocol stores, all backed by this object.
  protocol::ProtocolStores stores() { return protocol::ProtocolStores{*this, *this, *this, *this}; }

  // Runs `body` so that all of its writes commit together, or none when it returns an error
  // (the error is returned). Nested calls are savepoints.
  Status run_in_transaction(const std::function<Status()>& body);

  // ---- IdentityKeyStore (kNotRegistered for our own keys before save_account) ----
  Result<crypto::KeyPair> identity_key_pair() override;
  Result<std::uint32_t> local_registration_id() override;
  Result<bool> is_trusted_identity(const protocol::ProtocolAddress& address,
                                   const crypto::PublicKey& identity,
                                   protocol::Direction direction) override;
  // A new key for a known address resets `verified` and clears `identity_changed` (accepting
  // the key is what save_identity means).
  Result<bool> save_identity(const protocol::ProtocolAddress& address,
                             const crypto::PublicKey& identity) override;
  Result<std::optional<crypto::PublicKey>> get_identity(
      const protocol::ProtocolAddress& address) override;

  // ---- PreKeyStore / SignedPreKeyStore ----
  Result<protocol::PreKeyRecord> load_pre_key(std::uint32_t id) override;
  Status store_pre_key(const protocol::PreKeyRecord& record) override;
  Status remove_pre_key(std::uint32_t id) override;
  Result<protocol::SignedPreKeyRecord> load_signed_pre_key(std::uint32_t id) override;
  Status store_signed_pre_key(const protocol::SignedPreKeyRecord& record) override;
  Status remove_signed_pre_key(std::uint32_t id) override;

  // ---- SessionStore / SenderKeyStore ----
  Result<std::optional<protocol::SessionRecord>> load_session(
      const protocol::ProtocolAddress& address) override;
  Status store_session(const protocol::ProtocolAddress& address,
                       protocol::SessionRecord record) override;
  Result<std::optional<protocol::SenderKeyRecord>> load_sender_key(
      const protocol::SenderKeyName& name) override;
  Status store_sender_key(const protocol::SenderKeyName& name,
                          const protocol::SenderKeyRecord& record) override;

  // ---- Account ----
  // Replaces the account row.
  Status save_account(const Account& account);
  // kNotRegistered when the profile has no account.
  Result<Account> load_account();

  // ---- Contacts ----
  // Flags the contact's identity as changed (and unverified); kNotFound for an unknown address.
  Status mark_identity_changed(const protocol::ProtocolAddress& address);
  // The user accepts `identity` for `address` (recording it if new), with `verified` as given.
  Status trust_contact(const protocol::ProtocolAddress& address, const crypto::PublicKey& identity,
                       bool verified);
  // True when a device of account `name` is marked identity-changed (one indexed lookup: this
  // runs on every send).
  Result<bool> identity_changed(const std::string& name);
  // Every contact, by address.
  Result<std::vector<Contact>> list_contacts();

  // ---- Outbox ----
  // Queues `payload` for `recipient`, due now, with a fresh random client message id.
  Result<OutboxItem> outbox_put(const std::string& recipient, ByteView payload);
  // Items due at `now_ms` (next_attempt_ms <= now_ms), oldest first.
  Result<std::vector<OutboxItem>> outbox_pending(std::int64_t now_ms);
  // Counts a failed attempt and reschedules; kNotFound for an unknown id.
  Status outbox_bump(std::int64_t id, std::int64_t next_attempt_ms);
  // Removes a sent item (no error if it is already gone).
  Status outbox_remove(std::int64_t id);

  // ---- History ----
  // Appends `message` and returns its id; kAlreadyExists when its server_id is one of the last
  // kRecentEnvelopes stored (a server re-delivers only envelopes not yet acknowledged, and the
  // client acknowledges each batch before it takes the next, so that window is ample).
  Result<std::int64_t> append_message(const StoredMessage& message);
  // The newest `limit` messages of `conversation`, oldest first.
  Result<std::vector<StoredMessage>> history(const std::string& conversation, std::size_t limit);
  // kNotFound for an unknown id.
  Status set_message_status(std::int64_t id, MessageStatus status);

  // ---- Groups ----
  // Creates or updates the group's name, creation time and left flag (members are untouched).
  // kInvalidArgument when the id is not kGroupIdSize bytes.
  Status save_group(const Group& group);
  // kNotFound for an unknown group.
  Result<Group> load_group(ByteView id);
  Result<std::vector<Group>> list_groups();
  // Replaces the member list; kNotFound for an unknown group.
  Status set_members(ByteView group_id, const std::vector<std::string>& members);
  // The key id of our sender-key chain last sent to `member` for the group (none: never).
  Result<std::optional<std::uint32_t>> shared_key_id(ByteView group_id,
                                                      const protocol::ProtocolAddress& member);
  Status mark_shared(ByteView group_id, const protocol::ProtocolAddress& member,
                     std::uint32_t key_id);
  // Outgoing messages of `conversation` sent at one of `timestamps` (the sender's content
  // timestamps) move to `status` (never backwards: read stays read). Returns how many changed.
  Result<std::uint32_t> mark_outgoing(const std::string& conversation,
                                      const std::vector<std::uint64_t>& timestamps,
                                      MessageStatus status);

  // ---- Transports (the ways to reach the server; see client/transports.h) ----
  // Every transport, by id (direct is id 1).
  Result<std::vector<TransportRecord>> list_transports();
  // Adds a transport (kind, link and pt_binary of `record`; the rest starts empty) and returns
  // its id; kAlreadyExists when the same kind and link are already there.
  Result<std::int64_t> add_transport(const TransportRecord& record);
  // kNotFound for an unknown id; kInvalidArgument for direct (disable it instead).
  Status remove_transport(std::int64_t id);
  // kNotFound for an unknown id.
  Status set_transport_enabled(std::int64_t id, bool enabled);
  // Records an attempt at `now_ms`: ok, or the error (its text is kept).
  Status record_transport_result(std::int64_t id, const Status& result, std::int64_t now_ms);
  // Marks `id` as the last winner (and no other).
  Status set_preferred_transport(std::int64_t id);

 private:
  Result<std::vector<std::string>> members_of(ByteView group_id);

  Result<bool> envelope_seen(ByteView server_id);
  void remember_envelope(ByteView server_id);

  internal::Db& db_;
  const Clock& clock_;
  Rng& rng_;
  int depth_ = 0;  // open run_in_transaction levels
  // The server ids of the newest kRecentEnvelopes messages, read on first use and dropped
  // whenever a transaction rolls back (it may have held ids that are now gone).
  struct Recent {
    std::unordered_set<std::string> ids;
    std::deque<std::string> order;  // oldest first
  };
  std::optional<Recent> recent_;
};

}  // namespace parley::client
