// Client: the outbox and sending.
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "client/client.h"
#include "client/content.h"
#include "client/identity_policy.h"
#include "client/internal/client_util.h"
#include "client/server_link.h"
#include "protocol/session_builder.h"
#include "protocol/session_cipher.h"

namespace parley::client {
namespace {

// Fixing a device mismatch (409) needs at most a couple of rounds; more means the recipient's
// device list keeps changing under us.
constexpr int kMaxMismatchRounds = 3;
// send_text retries a failed delivery this many times, with jittered exponential back-off
// from kFirstBackoff, before leaving the message queued.
constexpr int kMaxSendAttempts = 4;
constexpr std::int64_t kFirstBackoffMs = 250;


}  // namespace

std::string name_part(const std::string& address) { return address.substr(0, address.find('@')); }

void failpoint(const char* name) {
  const char* armed = std::getenv("PARLEY_FAILPOINT");
  if (armed != nullptr && std::strcmp(armed, name) == 0) ::raise(SIGKILL);
}

bool queue_full(const wire::SendResult& r) {
  return r.limit() == "count" || r.limit() == "bytes" || r.limit() == "sender_count" ||
         r.limit() == "sender_bytes";
}

bool transient(const Status& s) {
  return s.code() == ErrorCode::kUnavailable || s.code() == ErrorCode::kIo ||
         s.code() == ErrorCode::kResourceExhausted || s.code() == ErrorCode::kQueueFull;
}

namespace {

protocol::PreKeyBundle bundle_from(const wire::Bundle& b, Status& error) {
  protocol::PreKeyBundle out;
  out.registration_id = b.registration_id();
  out.device_id = b.device_id();
  auto identity = crypto::PublicKey::deserialize(as_bytes(b.identity_key()));
  auto spk = crypto::PublicKey::deserialize(as_bytes(b.signed_pre_key().public_key()));
  if (!identity || !spk) {
    error = make_error(ErrorCode::kMalformed, "the server sent a malformed key bundle");
    return out;
  }
  out.identity_key = *identity;
  out.signed_pre_key = *spk;
  out.signed_pre_key_id = b.signed_pre_key().id();
  out.signed_pre_key_signature = to_bytes(b.signed_pre_key().signature());
  if (b.has_pre_key()) {
    auto pk = crypto::PublicKey::deserialize(as_bytes(b.pre_key().public_key()));
    if (!pk) {
      error = make_error(ErrorCode::kMalformed, "the server sent a malformed one-time prekey");
      return out;
    }
    out.pre_key_id = b.pre_key().id();
    out.pre_key = *pk;
  }
  return out;
}

}  // namespace

Status Client::send_text(std::string_view to, std::string_view text) {
  PARLEY_TRY(check_utf8("a message's text", text));
  PARLEY_ASSIGN_OR_RETURN(std::string peer, canonical_address(to));
  Content content;
  content.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
  content.mutable_data()->set_text(std::string(text));
  PARLEY_ASSIGN_OR_RETURN(OutboxItem item, store_->outbox_put(peer, encode_content(content)));
  return send_until_acknowledged(item);
}

// Sends the outbox (earlier messages first: it keeps the order in which the user sent them)
// until `item` is acknowledged, retrying transient failures with jittered exponential back-off.
Status Client::send_until_acknowledged(const OutboxItem& item) {
  Status last;
  for (int attempt = 0; attempt < kMaxSendAttempts; ++attempt) {
    last = flush_outbox_for(item.id);
    // A full queue does not empty in seconds, and the link is not to blame.
    if (last.is_ok() || !transient(last) || last.code() == ErrorCode::kQueueFull) break;
    drop_link(last);
    const std::int64_t backoff = kFirstBackoffMs << attempt;
    const std::int64_t jitter = static_cast<std::int64_t>(rng_.uniform(static_cast<std::uint32_t>(backoff)));
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff / 2 + jitter));
  }
  if (!last.is_ok() && transient(last)) {
    return make_error(last.code(), last.message() +
                                       " (the message is queued and goes out with the next "
                                       "command that connects)");
  }
  return last;
}

Status Client::flush_outbox() { return flush_outbox_for(0); }

Status Client::flush_outbox_for(std::int64_t wanted) {
  PARLEY_ASSIGN_OR_RETURN(auto pending, store_->outbox_pending(INT64_MAX));
  if (pending.empty()) return Status::ok();
  PARLEY_TRY(ensure_link());
  Status result;
  // Recipients whose queue on the server is full: their later messages wait too (each
  // recipient's messages keep their order), while everyone else's go out.
  std::map<std::string, Status> held;
  for (const OutboxItem& item : pending) {
    if (auto h = held.find(item.recipient); h != held.end()) {
      if (wanted == 0 || item.id == wanted) result = h->second;  // it waits behind that one
      continue;
    }
    Status s = deliver(item);
    if (s.is_ok()) {
      // The history entry and the outbox removal commit together, so a crash in between cannot
      // record a message twice (the resend is a duplicate the server drops, and lands here once).
      failpoint("after_server_ack");
      Status done = store_->run_in_transaction([&]() -> Status {
        PARLEY_TRY(record_sent(item));
        return store_->outbox_remove(item.id);
      });
      PARLEY_TRY(done);
      continue;
    }
    if (s.code() == ErrorCode::kQueueFull) {
      store_->outbox_bump(item.id, clock_.now_ms() + 60000).ignore();
      held.emplace(item.recipient, s);
      if (wanted == 0 || item.id == wanted) result = s;
      continue;
    }
    if (transient(s)) {
      // Left queued with a later due time; the next command that connects sends it.
      const std::int64_t delay = std::min<std::int64_t>(
          kFirstBackoffMs << std::min<std::int64_t>(item.attempts, 10), 60000);
      store_->outbox_bump(item.id, clock_.now_ms() + delay).ignore();
      drop_link(s);  // the next attempt connects afresh (racing again)
      return s;
    }
    // A permanent refusal (unknown account, untrusted identity, too large): the message can never
    // go out as it is. A user's message is recorded as failed in the history; either way it
    // leaves the outbox, and the messages behind it still go out.
    auto content = decode_content(item.payload);
    StoredMessage failed;
    failed.conversation = item.recipient.rfind(kGroupRecipientPrefix, 0) == 0
                              ? item.recipient.substr(kGroupRecipientPrefix.size())
                              : item.recipient;
    failed.direction = MessageDirection::kOutgoing;
    failed.sender = protocol::ProtocolAddress{address_, account_->device_id};
    failed.local_ms = clock_.now_ms();
    failed.body = item.payload;
    failed.status = MessageStatus::kFailed;
    failed.error = s.to_string();
    failed.content_ts = content ? content->timestamp() : 0;
    const bool users = content && content->has_data() &&
                       (!content->data().has_group() ||
                        content->data().group().kind() == GroupContext::MESSAGE);
    Status recorded = store_->run_in_transaction([&]() -> Status {
      if (users) PARLEY_TRY(store_->append_message(failed).status());
      return store_->outbox_remove(item.id);
    });
    PARLEY_TRY(recorded);
    if (wanted == 0 || item.id == wanted) result = s;
  }
  return result;
}

// A user's message (1:1 or group) goes into the history once the server has it; control messages
// (group changes, sender keys, receipts) leave no trace there.
Status Client::record_sent(const OutboxItem& item) {
  auto content = decode_content(item.payload);
  if (!content || !content->has_data()) return Status::ok();
  const bool group = item.recipient.rfind(kGroupRecipientPrefix, 0) == 0;
  if (!group && content->data().has_group()) return Status::ok();
  StoredMessage sent;
  sent.content_ts = content->timestamp();
  sent.conversation = group ? item.recipient.substr(kGroupRecipientPrefix.size()) : item.recipient;
  sent.direction = MessageDirection::kOutgoing;
  sent.sender = protocol::ProtocolAddress{address_, account_->device_id};
  sent.local_ms = clock_.now_ms();
  sent.body = item.payload;
  sent.status = MessageStatus::kSent;
  return store_->append_message(sent).status();
}

Status Client::deliver(const OutboxItem& item) {
  if (item.recipient.rfind(kGroupRecipientPrefix, 0) == 0) return deliver_group(item);
  std::vector<std::uint32_t> stale;
  for (int round = 0; round < kMaxMismatchRounds; ++round) {
    Status s = deliver_to_devices(item.recipient, item, stale);
    if (s.code() != ErrorCode::kAlreadyExists) return s;  // kAlreadyExists: a device mismatch
  }
  return make_error(ErrorCode::kUnavailable, "the recipient's devices keep changing; try again");
}

// One attempt: encrypt for every current device of the recipient and send. Returns
// kAlreadyExists after a 409 (with `stale` naming the sessions to rebuild) so the caller retries.
Status Client::deliver_to_devices(const std::string& address, const OutboxItem& item,
                                  std::vector<std::uint32_t>& stale) {
  const std::string name = name_part(address);
  wire::Request dr;
  dr.mutable_devices()->set_name(name);
  PARLEY_ASSIGN_OR_RETURN(wire::Response devices, link_->call(std::move(dr)));
  if (devices.status() == wire::kStatusNotFound) {
    return make_error(ErrorCode::kNotFound, "unknown address: " + address);
  }
  PARLEY_TRY(response_status(devices, "device list"));

  PARLEY_ASSIGN_OR_RETURN(bool changed, static_cast<IdentityPolicy&>(*trust_).changed(address));
  if (changed) {
    return make_error(ErrorCode::kUntrustedIdentity,
                      "the identity key of " + address +
                          " changed: compare safety numbers (parley safety-number " + address +
                          "), then run: parley trust " + address);
  }

  wire::Request r;
  auto* send = r.mutable_send();
  send->set_destination(name);
  send->set_client_message_id(std::string(as_chars(item.client_message_id)));
  protocol::ProtocolStores stores{*trust_, *store_, *store_, *store_};
  for (const auto& d : devices.devices().devices()) {
    const bool rebuild = std::find(stale.begin(), stale.end(), d.device_id()) != stale.end();
    PARLEY_TRY(ensure_session(address, d.device_id(), rebuild));
  }
  stale.clear();
  // The ratchet steps commit together; the server's dedup makes a resend after a lost
  // acknowledgement harmless, and the recipient skips the unused chain keys.
  Status encrypted = store_->run_in_transaction([&]() -> Status {
    for (const auto& d : devices.devices().devices()) {
      protocol::SessionCipher cipher(stores, protocol::ProtocolAddress{address, d.device_id()}, rng_);
      PARLEY_ASSIGN_OR_RETURN(auto ct, cipher.encrypt(item.payload));
      PARLEY_ASSIGN_OR_RETURN(std::uint32_t reg, cipher.remote_registration_id());
      auto* m = send->add_messages();
      m->set_device_id(d.device_id());
      m->set_registration_id(reg);
      m->set_type(static_cast<std::uint32_t>(ct.type));
      m->set_content(std::string(as_chars(ct.serialized)));
    }
    return Status::ok();
  });
  PARLEY_TRY(encrypted);
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
  if (resp.status() == wire::kStatusRateLimited && queue_full(resp.send())) {
    const std::string& limit = resp.send().limit();
    if (limit.starts_with("sender_")) {
      return make_error(ErrorCode::kQueueFull, "the server's queue for " + address +
                                                   " holds all it takes from one sender (" + limit +
                                                   ")");
    }
    return make_error(ErrorCode::kQueueFull,
                      "the server's queue for " + address + " is full (" + limit + ")");
  }
  if (resp.status() == wire::kStatusConflict && resp.has_send()) {
    const auto& mm = resp.send().mismatch();
    stale.assign(mm.stale_devices().begin(), mm.stale_devices().end());
    return make_error(ErrorCode::kAlreadyExists, "device mismatch");
  }
  if (resp.status() == wire::kStatusNotFound) {
    return make_error(ErrorCode::kNotFound, "unknown address: " + address);
  }
  return response_status(resp, "send");
}

Status Client::ensure_session(const std::string& address, std::uint32_t device, bool rebuild) {
  const protocol::ProtocolAddress remote{address, device};
  if (!rebuild) {
    PARLEY_ASSIGN_OR_RETURN(auto existing, store_->load_session(remote));
    if (existing && existing->has_current_state()) return Status::ok();
  }
  wire::Request r;
  r.mutable_fetch_bundles()->set_name(name_part(address));
  r.mutable_fetch_bundles()->set_device_id(device);
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
  if (resp.status() == wire::kStatusNotFound) {
    return make_error(ErrorCode::kNotFound, "unknown address: " + address);
  }
  PARLEY_TRY(response_status(resp, "key bundle"));
  for (const auto& b : resp.bundles().bundles()) {
    if (b.device_id() != device) continue;
    Status error;
    protocol::PreKeyBundle bundle = bundle_from(b, error);
    PARLEY_TRY(error);
    protocol::ProtocolStores stores{*trust_, *store_, *store_, *store_};
    protocol::SessionBuilder builder(stores, remote, rng_);
    return store_->run_in_transaction([&] { return builder.process_bundle(bundle); });
  }
  return make_error(ErrorCode::kMalformed, "the server sent no bundle for device " +
                                               std::to_string(device) + " of " + address);
}

}  // namespace parley::client
