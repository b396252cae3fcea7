#pragma once
// Client: the facade of libparley (DESIGN.md section 6). The CLI and the daemon are thin layers
// over it; results are values, incoming messages arrive through a callback.
//
// Durability:
// - A message to send is written to the outbox (in the encrypted profile) before anything goes
//   on the wire, and leaves it only when the server acknowledged it. Every call that connects
//   first sends what waits there. Resends carry the same client message id, so the server never
//   stores one twice.
// - An incoming envelope is decrypted and stored, in one transaction with the ratchet step,
//   before it is acknowledged to the server. An envelope that does not decrypt is recorded with
//   the reason, never dropped silently.
//
// Identity changes: the first key seen for a contact is trusted. A different key later is
// accepted for receiving (the message is shown, flagged), but sending to that contact is refused
// (kUntrustedIdentity) until the user runs trust().
//
// Not thread-safe: one thread drives a Client.

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/rng.h"
#include "client/content.pb.h"
#include "client/local_store.h"
#include "client/profile.h"
#include "client/transports.h"
#include "crypto/password.h"
#include "crypto/primitives.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace parley::client {

class ServerLink;

struct OpenOptions {
  std::filesystem::path profile_dir;
  std::optional<std::string> passphrase;  // none: a generated key in a 0600 key file
  crypto::PasswordParams kdf = crypto::PasswordParams::kInteractive;
  std::chrono::milliseconds network_timeout{15000};  // unused since connect_timeout (kept for
                                                     // source compatibility)
  // Each step of reaching the server (TCP, proxy or bridge, TLS, WebSocket, challenge) on one
  // transport. Generous: a 4 KB TLS handshake over 64 kbit/s with 10% loss takes 1-2 s.
  std::chrono::milliseconds connect_timeout{10000};
  // A link on which nothing at all arrives for this long (pings are answered by a live server
  // after half of it) is closed as stalled and replaced by a fresh one. Zero: never.
  std::chrono::milliseconds idle_timeout{15000};
  // The race of transports: the next one starts this long after the previous (or at once when
  // every started one failed).
  std::chrono::milliseconds race_stagger{300};
  // Whether destroying the Client waits for race losers still connecting (each within its
  // timeouts). False for a process that exits right after (the CLI): they are abandoned, with
  // the objects they use, to end with the process.
  bool wait_for_race_losers = true;
  // The signed prekey is replaced when older than this (checked on every connection).
  std::chrono::seconds signed_pre_key_max_age{7 * 24 * 3600};
};

// One received message, as stored and as shown to the user.
struct IncomingMessage {
  std::string from;  // "name@server"
  std::uint32_t device = 0;
  std::uint64_t timestamp = 0;         // the sender's clock, ms
  std::int64_t server_timestamp = 0;   // the server's clock when it stored the envelope, ms
  std::string text;
  std::optional<std::string> group;    // hex group id; none for 1:1
  std::string error;                   // non-empty: not decryptable, and why
  bool identity_changed = false;       // the sender's identity key changed with this message
  std::string event;                   // a group change ("alice added dave"); text is empty
  bool control = false;                // sender key or receipt: nothing to show
  struct File {
    std::string name;    // as the sender named it (sanitized)
    std::uint64_t size = 0;
    std::string sha256;  // hex, of the plaintext
    std::string path;    // where it was saved; empty when the download failed
    std::string error;   // why the download failed
  };
  std::optional<File> attachment;
};

// Progress of a transfer: bytes done of total.
using TransferProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct GroupInfo {
  std::string id;  // 32 hex characters
  std::string name;
  std::vector<std::string> members;  // addresses, sorted; includes us unless we left
  bool left = false;
};

struct ReceiveOptions {
  bool follow = false;  // keep receiving after the queue is drained
  std::filesystem::path download_dir;  // attachments go here; empty: PROFILE/files
  TransferProgress progress;           // of attachment downloads (may be empty)
  std::chrono::milliseconds timeout{10000};  // overall bound (follow: how long to listen)
  // Called when the link failed and the client reconnects (follow, or a drain interrupted after
  // it started); may be empty.
  std::function<void(const Status& why)> on_reconnect;
};

struct HistoryEntry {
  bool outgoing = false;
  std::string peer;  // the sender (incoming) or the recipient (outgoing)
  std::uint32_t device = 0;
  std::uint64_t timestamp = 0;
  std::string text;
  std::string status;  // sent, delivered, read, failed
  std::string error;
};

class Client {
 public:
  // Creates the profile at options.profile_dir and registers `name` on the server of
  // `invite_link`. Errors: kInvalidArgument (malformed invite or name), kAlreadyExists (a profile
  // is already there, or the name is taken), kPermissionDenied (certificate pin mismatch or the
  // server refused the registration). On failure no profile is left behind.
  //
  // Registration draws a recovery code (recovery_code(), shown once to the user; the server
  // keeps only its hash). With `recover_code` set, a name that is taken is taken over when the
  // code matches: the account gets this new device and identity (contacts see the identity
  // change), and a new recovery code.
  //
  // `transports` (links as `parley transport add` takes them, PT ones started with
  // `pt_binary`, empty: obfs4proxy) are stored in the new profile and raced with the direct
  // address (and the invite's obfs4 endpoint, if it has one) for the registration itself.
  // A malformed one is refused (kInvalidArgument) before anything is created.
  static Result<std::unique_ptr<Client>> register_account(
      const OpenOptions& options, std::string_view invite_link, std::string_view name,
      std::string_view recover_code = {}, const std::vector<std::string>& transports = {},
      std::string_view pt_binary = {});
  // The recovery code drawn by register_account ("xxxx-xxxx-..."); empty after open().
  const std::string& recovery_code() const { return recovery_code_; }
  // Opens a registered profile. kNotFound, kWrongPassphrase, kNotRegistered.
  static Result<std::unique_ptr<Client>> open(const OpenOptions& options);
  ~Client();

  // "name@server".
  const std::string& address() const { return address_; }

  // Queues `text` for `to` ("name" or "name@server") and sends the outbox; returns once the
  // server acknowledged this message. kNotFound for an unknown account, kUntrustedIdentity when
  // the contact's key changed and was not trusted yet; on a network failure the message stays
  // queued (kUnavailable) and goes out with the next command that connects.
  Status send_text(std::string_view to, std::string_view text);
  // Encrypts and uploads `file` (resuming an interrupted upload of the same unchanged file),
  // then sends it with `caption` to `to`, an address, or a group when `to_group`.
  Status send_file(std::string_view to, bool to_group, const std::filesystem::path& file,
                   std::string_view caption, const TransferProgress& progress);
  // Sends everything in the outbox (what earlier runs could not deliver).
  Status flush_outbox();

  // Receives what the server holds for this device (and, with follow, what arrives until the
  // timeout), calling `on_message` for each after it is stored.
  Status receive(const ReceiveOptions& options,
                 const std::function<void(const IncomingMessage&)>& on_message);

  // ---- Groups (Sender Keys; membership changes travel as encrypted 1:1 control messages) ----
  // Creates a group of us and `members` and tells them; returns the group id.
  Result<std::string> group_create(std::string_view name, const std::vector<std::string>& members);
  Status group_add(std::string_view group_id, const std::vector<std::string>& members);
  Status group_rename(std::string_view group_id, std::string_view name);
  // Removes members and rotates our sender key, so they cannot read what we send next.
  Status group_remove(std::string_view group_id, const std::vector<std::string>& members);
  Status group_leave(std::string_view group_id);
  Result<GroupInfo> group_info(std::string_view group_id);
  Result<std::vector<GroupInfo>> groups();
  // Like send_text, to every member of the group (one Sender Key encryption, fanned out).
  Status send_group_text(std::string_view group_id, std::string_view text);

  // The safety number with `address` (kNotFound when no key of it is known yet).
  Result<std::string> safety_number(std::string_view address);
  // Accepts the current identity key of `address` (after the user compared safety numbers).
  Status trust(std::string_view address);
  Result<std::vector<Contact>> contacts();
  // The conversation with an address or a group, oldest first. Incoming messages shown here
  // count as read: their senders get read receipts (sent with the next command that connects).
  Result<std::vector<HistoryEntry>> history(std::string_view address, std::size_t limit);

  // ---- Transports (client/transports.h; docs/cli.md "transports") ----
  Result<std::vector<TransportRecord>> transports();
  // Parses and adds a link; returns its id. kInvalidArgument (malformed; nothing changes),
  // kAlreadyExists.
  Result<std::int64_t> add_transport(std::string_view link, std::string_view pt_binary = {});
  // kNotFound; kInvalidArgument for direct (disable it instead).
  Status remove_transport(std::int64_t id);
  Status set_transport_enabled(std::int64_t id, bool enabled);
  // The transport of the current link (0: not connected).
  std::int64_t current_transport() const { return link_ ? link_transport_ : 0; }

  // "bob" or "bob@server" -> "bob@server" (lowercase); kInvalidArgument when malformed or on
  // another server.
  Result<std::string> canonical_address(std::string_view address) const;

 private:
  Client(std::unique_ptr<Profile> profile, OpenOptions options);
  Status load();
  Status ensure_link();
  // Races the profile's enabled transports to the server and returns the winner's link (not
  // logged in); records every result and the winner.
  Result<std::unique_ptr<ServerLink>> connect_raced();
  // Records the results of races whose losers have finished since; with `all`, waits for
  // every race first (the destructor).
  void reap_races(bool all);
  Status receive_on_link(const ReceiveOptions& options,
                         std::chrono::steady_clock::time_point deadline,
                         const std::function<void(const IncomingMessage&)>& on_message,
                         bool& connected);
  // Drops the link; a non-ok `why` (a transient failure on it) is recorded against the
  // transport it used, and a transport that failed this way twice goes last in later races.
  void drop_link(const Status& why = Status::ok());
  Status deliver(const OutboxItem& item);
  Status record_sent(const OutboxItem& item);
  Status deliver_to_devices(const std::string& address, const OutboxItem& item,
                            std::vector<std::uint32_t>& stale);
  Status ensure_session(const std::string& address, std::uint32_t device, bool rebuild);
  Status send_until_acknowledged(const OutboxItem& item);
  // Sends everything due; the Status is the first transient failure, else the permanent failure
  // of item `wanted` (0: of any item).
  Status flush_outbox_for(std::int64_t wanted);
  Status deliver_group(const OutboxItem& item);
  Status share_sender_key(const Bytes& group_id, const std::string& member,
                          const std::vector<std::uint32_t>& devices);
  Status queue_group_update(const Group& group, const std::vector<std::string>& recipients,
                            int kind);
  Result<Group> find_group(std::string_view group_id);
  // Applies a group control message from `from`; fills m.event. kPermissionDenied when `from`
  // may not change the group.
  Status apply_group_control(const std::string& from, const DataMessage& data,
                             std::uint64_t content_timestamp, IncomingMessage& m);
  // Inside the receive transaction: decrypt, decode, apply and log one envelope.
  Status open_envelope(const wire::Envelope& envelope, IncomingMessage& m, StoredMessage& stored);
  Status open_group_envelope(const wire::Envelope& envelope, IncomingMessage& m,
                             StoredMessage& stored);
  // Applies a decoded 1:1 Content (data, group control, sender key, receipt).
  Status apply_content(const Content& content, IncomingMessage& m, StoredMessage& stored);
  // Queues one delivery receipt per sender for the messages received in this run.
  Status queue_receipts();
  Status mark_read(const std::vector<StoredMessage>& shown);
  std::map<std::string, std::vector<std::uint64_t>> pending_receipts_;
  // Downloads the attachment of a stored message (outside the receive transaction).
  void fetch_attachment(const Attachment& pointer, const ReceiveOptions& options,
                        IncomingMessage& m);
  Result<wire::Invite> server_invite() const;
  Status replenish_pre_keys();
  Status rotate_signed_pre_key_if_due();
  // Inside the batch transaction; `file` gets an attachment to fetch once it committed.
  Result<IncomingMessage> handle_envelope(const wire::Envelope& envelope, bool& duplicate,
                                          std::optional<Attachment>& file);

  OpenOptions options_;
  SystemClock clock_;
  crypto::SystemRng rng_;
  std::unique_ptr<Profile> profile_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<protocol::IdentityKeyStore> trust_;  // the identity policy over store_
  std::optional<Account> account_;
  std::string address_;
  std::string server_name_;
  std::unique_ptr<ServerLink> link_;
  std::string recovery_code_;
  // Transports: PT binaries started so far (kept for the process lifetime), races whose losers
  // may still run (joined in the destructor, before the store closes), the winner's options
  // (attachments use the same route) and failures of links after their handshake, by
  // transport id.
  std::unique_ptr<TransportPool> pool_;
  struct PendingRace;
  std::vector<std::unique_ptr<PendingRace>> races_;
  transport::ClientOptions link_options_;
  std::int64_t link_transport_ = 0;
  std::map<std::int64_t, int> link_failures_;
};

}  // namespace parley::client
