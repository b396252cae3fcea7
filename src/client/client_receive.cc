// Client: receiving, and the history.
#include <algorithm>
#include <thread>

#include "client/client.h"
#include "client/content.h"
#include "client/identity_policy.h"
#include "client/internal/client_util.h"
#include "client/server_link.h"
#include "protocol/sender_keys.h"
#include "protocol/session_cipher.h"

namespace parley::client {
namespace {

using Clock = std::chrono::steady_clock;

// Envelopes stored per transaction: the server's delivery window (it sends no more until these
// are acknowledged).
constexpr std::size_t kReceiveBatch = 256;
// Reconnecting after a failed link: jittered exponential back-off between these.
constexpr std::chrono::milliseconds kFirstReconnectBackoff{500};
constexpr std::chrono::milliseconds kMaxReconnectBackoff{5000};

const char* status_name(MessageStatus s) {
  switch (s) {
    case MessageStatus::kSent: return "sent";
    case MessageStatus::kDelivered: return "delivered";
    case MessageStatus::kRead: return "read";
    case MessageStatus::kFailed: return "failed";
  }
  return "unknown";
}

}  // namespace

Status Client::receive(const ReceiveOptions& options,
                       const std::function<void(const IncomingMessage&)>& on_message) {
  const auto deadline = Clock::now() + options.timeout;
  std::chrono::milliseconds backoff = kFirstReconnectBackoff;
  bool started = false;  // a link was up in this call
  for (;;) {
    bool connected = false;
    Status s = receive_on_link(options, deadline, on_message, connected);
    started = started || connected;
    // A drain (without follow) ends the link: the server marks the end of the stored queue
    // only after a login, so the next drain must log in again to know where its queue ends.
    if (s.is_ok() || !transient(s)) {
      if (!options.follow) drop_link();
      return s;
    }
    // A network failure leaves the link unusable. With follow, or when a drain had started,
    // the client reconnects (racing the transports again) and goes on where it stopped: what
    // was stored is acknowledged or re-delivered and recognised, nothing is shown twice.
    drop_link(s);
    if (!options.follow && !started) return s;
    const auto jitter = std::chrono::milliseconds(
        rng_.uniform(static_cast<std::uint32_t>(backoff.count() / 2 + 1)));
    const auto pause = backoff / 2 + jitter;
    if (Clock::now() + pause >= deadline) return s;
    if (options.on_reconnect) options.on_reconnect(s);
    std::this_thread::sleep_for(pause);
    backoff = std::min(backoff * 2, kMaxReconnectBackoff);
  }
}

Status Client::receive_on_link(const ReceiveOptions& options, Clock::time_point deadline,
                               const std::function<void(const IncomingMessage&)>& on_message,
                               bool& connected) {
  PARLEY_TRY(ensure_link());
  connected = true;
  // Whatever earlier runs could not send goes first.
  Status flushed = flush_outbox();
  // A recipient whose queue is full holds only its own messages, not this receive.
  if (!flushed.is_ok() && flushed.code() != ErrorCode::kNotFound &&
      flushed.code() != ErrorCode::kUntrustedIdentity && flushed.code() != ErrorCode::kQueueFull) {
    return flushed;
  }

  // Acknowledgements go one way when the server takes them (no round trip per batch). Before
  // the run returns, the last one is sent again as a request: its answer means every earlier
  // one is done too (the server deletes a connection's acknowledgements in order), so what was
  // shown is not delivered again on the next run.
  std::vector<std::string> acks;
  std::string unconfirmed;  // the last id acknowledged one way and not yet confirmed
  auto ack_request = [&](wire::AckRequest ack) -> Status {
    wire::Request r;
    *r.mutable_ack() = std::move(ack);
    PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
    return response_status(resp, "acknowledgement");
  };
  auto send_acks = [&]() -> Status {
    if (acks.empty()) return Status::ok();
    // Receipts for what was just stored are queued before the acknowledgement goes out.
    PARLEY_TRY(queue_receipts());
    wire::AckRequest ack;
    for (auto& id : acks) ack.add_server_ids(std::move(id));
    acks.clear();
    if (!link_->one_way_acks()) return ack_request(std::move(ack));
    unconfirmed = ack.server_ids(ack.server_ids_size() - 1);
    return link_->ack_one_way(std::move(ack));
  };
  auto confirm_acks = [&]() -> Status {
    if (unconfirmed.empty()) return Status::ok();
    wire::AckRequest ack;
    ack.add_server_ids(std::move(unconfirmed));
    unconfirmed.clear();
    return ack_request(std::move(ack));
  };

  // Receipts travel through the outbox; a failure to send them now is not the caller's error
  // (they stay queued), unless the connection is gone.
  auto send_receipts = [&]() -> Status {
    Status s = flush_outbox();
    if (s.is_ok() || !transient(s) || s.code() == ErrorCode::kQueueFull) return Status::ok();
    return s;
  };

  // Envelopes are taken in batches (whatever has arrived, up to the server's delivery window)
  // and stored in one transaction: one commit, one fsync, per batch rather than per message.
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) break;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    Result<wire::Push> push = link_->next_push(std::max(wait, std::chrono::milliseconds(1)));
    if (!push) {
      if (push.error().code() == ErrorCode::kUnavailable) {  // nothing arrived in time
        PARLEY_TRY(send_receipts());
        continue;
      }
      return push.error();
    }
    std::vector<wire::Envelope> batch;
    bool queue_empty = false;
    auto take = [&](wire::Push& p) {
      if (p.has_queue_empty()) queue_empty = true;
      if (p.has_envelope()) batch.push_back(std::move(*p.mutable_envelope()));
      if (p.has_envelopes()) {
        for (auto& e : *p.mutable_envelopes()->mutable_envelopes()) batch.push_back(std::move(e));
      }
    };
    take(*push);
    while (!queue_empty && !batch.empty() && batch.size() < kReceiveBatch) {
      // Only what has already arrived: a live message is not held back waiting for company.
      Result<wire::Push> more = link_->next_push(std::chrono::milliseconds(0));
      if (!more && more.error().code() == ErrorCode::kUnavailable) break;
      if (!more) return more.error();
      take(*more);
    }
    if (!batch.empty()) {
      struct Shown {
        IncomingMessage message;
        std::optional<Attachment> file;
      };
      std::vector<Shown> shown;
      Status stored = store_->run_in_transaction([&]() -> Status {
        for (const wire::Envelope& e : batch) {
          bool duplicate = false;
          std::optional<Attachment> file;
          PARLEY_ASSIGN_OR_RETURN(IncomingMessage m, handle_envelope(e, duplicate, file));
          if (!duplicate && !m.control) shown.push_back(Shown{std::move(m), std::move(file)});
        }
        return Status::ok();
      });
      if (!stored.is_ok()) {
        pending_receipts_.clear();
        return stored;
      }
      // Stored (or recorded as undecryptable): only now may the server delete them. They are
      // shown before the acks go out: a link that fails while sending the acks must not leave
      // a stored message unshown (redelivered, it is then a duplicate and never shown at all).
      for (const wire::Envelope& e : batch) acks.push_back(e.server_id());
      for (Shown& s : shown) {
        // A file is fetched after its message is stored: a failed download is reported with
        // the message (the pointer stays in the history), it never loses the message.
        if (s.file) fetch_attachment(*s.file, options, s.message);
        on_message(s.message);
      }
      PARLEY_TRY(send_acks());
    }
    if (queue_empty) {
      PARLEY_TRY(send_receipts());
      if (!options.follow) return confirm_acks();
    }
  }
  PARLEY_TRY(send_acks());
  PARLEY_TRY(confirm_acks());
  return send_receipts();
}

Result<IncomingMessage> Client::handle_envelope(const wire::Envelope& e, bool& duplicate,
                                                std::optional<Attachment>& file) {
  IncomingMessage m;
  m.from = lowercase(e.source()) + "@" + server_name_;
  m.device = e.source_device();
  m.server_timestamp = static_cast<std::int64_t>(e.server_timestamp());

  StoredMessage stored;
  stored.conversation = m.from;
  stored.direction = MessageDirection::kIncoming;
  stored.sender = protocol::ProtocolAddress{m.from, m.device};
  stored.server_ms = m.server_timestamp;
  stored.local_ms = clock_.now_ms();
  stored.server_id = to_bytes(e.server_id());
  // Only a PreKeyWhisperMessage can bring a new identity key.
  const bool may_change_identity =
      e.type() == static_cast<std::uint32_t>(protocol::MessageType::kPreKeyWhisper);
  std::optional<crypto::PublicKey> known_before;
  if (may_change_identity) {
    PARLEY_ASSIGN_OR_RETURN(known_before, store_->get_identity(stored.sender));
  }

  // The ratchet step, its effects and the history entry commit together: after a crash either
  // all are there (and the re-delivered envelope is recognised as a duplicate) or none.
  Status opened = store_->run_in_transaction([&] { return open_envelope(e, m, stored); });
  if (opened.is_ok()) {
    if (may_change_identity) {
      PARLEY_ASSIGN_OR_RETURN(auto known_after, store_->get_identity(stored.sender));
      m.identity_changed = known_before && known_after && !(*known_before == *known_after);
    }
    if (auto c = decode_content(stored.body); c && c->has_data() && c->data().has_attachment()) {
      file = c->data().attachment();
    }
    return m;
  }
  // Not decryptable: recorded with the reason (a re-delivery of a stored envelope shows up as a
  // duplicate server id and is only acknowledged again).
  m.error = opened.to_string();
  m.text.clear();
  m.event.clear();
  stored.conversation = m.from;
  stored.body.clear();
  stored.status = MessageStatus::kFailed;
  stored.error = m.error;
  Result<std::int64_t> recorded = store_->append_message(stored);
  if (!recorded && recorded.error().code() == ErrorCode::kAlreadyExists) {
    duplicate = true;
    return m;
  }
  PARLEY_TRY(recorded.status());
  return m;
}

Status Client::open_envelope(const wire::Envelope& e, IncomingMessage& m, StoredMessage& stored) {
  if (e.type() == kSenderKeyEnvelopeType) return open_group_envelope(e, m, stored);
  if (e.type() != static_cast<std::uint32_t>(protocol::MessageType::kWhisper) &&
      e.type() != static_cast<std::uint32_t>(protocol::MessageType::kPreKeyWhisper)) {
    return make_error(ErrorCode::kMalformed, "unknown message type " + std::to_string(e.type()));
  }
  protocol::ProtocolStores stores{*trust_, *store_, *store_, *store_};
  protocol::SessionCipher cipher(stores, stored.sender, rng_);
  PARLEY_ASSIGN_OR_RETURN(Bytes plain, cipher.decrypt(static_cast<protocol::MessageType>(e.type()),
                                                      as_bytes(e.content())));
  PARLEY_ASSIGN_OR_RETURN(Content content, decode_content(plain));
  stored.body = std::move(plain);
  return apply_content(content, m, stored);
}

Status Client::apply_content(const Content& content, IncomingMessage& m, StoredMessage& stored) {
  m.timestamp = content.timestamp();
  stored.content_ts = content.timestamp();
  stored.status = MessageStatus::kDelivered;
  if (content.has_data() && !content.data().has_group()) {
    m.text = content.data().text();
    pending_receipts_[m.from].push_back(content.timestamp());
    return store_->append_message(stored).status();
  }
  if (content.has_data()) {  // a group change, sent 1:1
    PARLEY_TRY(apply_group_control(m.from, content.data(), content.timestamp(), m));
    stored.conversation = *m.group;
    return store_->append_message(stored).status();
  }
  stored.conversation = std::string(kControlConversation);
  m.control = true;
  if (content.has_receipt()) {
    const auto& r = content.receipt();
    std::vector<std::uint64_t> ts(r.timestamps().begin(), r.timestamps().end());
    if (ts.size() > 1000) return make_error(ErrorCode::kTooLarge, "receipt names too many messages");
    PARLEY_TRY(store_->mark_outgoing(m.from, ts,
                                     r.kind() == Receipt::READ ? MessageStatus::kRead
                                                               : MessageStatus::kDelivered)
                   .status());
  } else if (content.body_case() == Content::kSenderKeyDistribution) {
    if (content.group_id().size() != kGroupIdSize) {
      return make_error(ErrorCode::kMalformed, "a sender key without a valid group id");
    }
    PARLEY_ASSIGN_OR_RETURN(Group g, store_->load_group(as_bytes(content.group_id())));
    if (std::find(g.members.begin(), g.members.end(), m.from) == g.members.end()) {
      return make_error(ErrorCode::kPermissionDenied, "a sender key from a non-member");
    }
    PARLEY_ASSIGN_OR_RETURN(auto skdm, protocol::SenderKeyDistributionMessage::parse(
                                           as_bytes(content.sender_key_distribution())));
    PARLEY_TRY(protocol::process_distribution_message(
        *store_, protocol::SenderKeyName{to_hex(g.id), stored.sender}, skdm));
  }
  // Whatever else a newer client sends is recorded as processed and otherwise ignored.
  return store_->append_message(stored).status();
}

Status Client::open_group_envelope(const wire::Envelope& e, IncomingMessage& m,
                                   StoredMessage& stored) {
  const std::string& body = e.content();
  if (body.size() <= kGroupIdSize) return make_error(ErrorCode::kMalformed, "group message too short");
  const Bytes group_id = to_bytes(std::string_view(body).substr(0, kGroupIdSize));
  const std::string gid = to_hex(group_id);
  Result<Group> g = store_->load_group(group_id);
  if (!g) return make_error(ErrorCode::kPermissionDenied, "a message for a group we do not know");
  if (std::find(g->members.begin(), g->members.end(), m.from) == g->members.end()) {
    return make_error(ErrorCode::kPermissionDenied, "a group message from a non-member");
  }
  protocol::GroupCipher cipher(*store_, protocol::SenderKeyName{gid, stored.sender}, rng_);
  PARLEY_ASSIGN_OR_RETURN(Bytes plain,
                          cipher.decrypt(as_bytes(std::string_view(body).substr(kGroupIdSize))));
  PARLEY_ASSIGN_OR_RETURN(Content content, decode_content(plain));
  if (!content.has_data() || content.data().group().id() != std::string_view(body).substr(0, kGroupIdSize) ||
      content.data().group().kind() != GroupContext::MESSAGE) {
    return make_error(ErrorCode::kMalformed, "a group message that names another group");
  }
  m.group = gid;
  m.text = content.data().text();
  m.timestamp = content.timestamp();
  stored.conversation = gid;
  stored.content_ts = content.timestamp();
  stored.body = std::move(plain);
  stored.status = MessageStatus::kDelivered;
  return store_->append_message(stored).status();
}

Status Client::queue_receipts() {
  for (auto& [to, timestamps] : pending_receipts_) {
    Content c;
    c.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
    c.mutable_receipt()->set_kind(Receipt::DELIVERY);
    for (std::uint64_t t : timestamps) c.mutable_receipt()->add_timestamps(t);
    PARLEY_TRY(store_->outbox_put(to, encode_content(c)).status());
  }
  pending_receipts_.clear();
  return Status::ok();
}

Result<std::vector<HistoryEntry>> Client::history(std::string_view address, std::size_t limit) {
  // A group id names the group's conversation; anything else is an address.
  std::string peer;
  if (auto g = find_group(address); g) {
    peer = to_hex(g->id);
  } else {
    PARLEY_ASSIGN_OR_RETURN(peer, canonical_address(address));
  }
  PARLEY_ASSIGN_OR_RETURN(auto stored, store_->history(peer, limit));
  std::vector<HistoryEntry> out;
  out.reserve(stored.size());
  for (const StoredMessage& s : stored) {
    HistoryEntry h;
    h.outgoing = s.direction == MessageDirection::kOutgoing;
    h.peer = h.outgoing ? peer : s.sender.name;
    h.device = s.sender.device_id;
    h.status = status_name(s.status);
    h.error = s.error;
    if (!s.body.empty()) {
      auto content = decode_content(s.body);
      if (content) {
        h.timestamp = content->timestamp();
        if (content->has_data()) h.text = content->data().text();
        if (content->has_data() && content->data().group().kind() != GroupContext::MESSAGE) {
          h.text = content->data().group().kind() == GroupContext::QUIT ? "(left the group)"
                                                                         : "(changed the group)";
        }
      }
    }
    out.push_back(std::move(h));
  }
  PARLEY_TRY(mark_read(stored));
  return out;
}

// What history shows has been read: incoming 1:1 messages become "read" and their senders get a
// read receipt (queued in the outbox; it goes out with the next command that connects).
Status Client::mark_read(const std::vector<StoredMessage>& shown) {
  std::map<std::string, std::vector<std::uint64_t>> receipts;
  std::vector<std::int64_t> ids;
  for (const StoredMessage& s : shown) {
    if (s.direction != MessageDirection::kIncoming || s.status != MessageStatus::kDelivered) continue;
    ids.push_back(s.id);
    if (s.conversation == s.sender.name && s.content_ts != 0) {
      receipts[s.sender.name].push_back(s.content_ts);
    }
  }
  if (ids.empty()) return Status::ok();
  return store_->run_in_transaction([&]() -> Status {
    for (std::int64_t id : ids) PARLEY_TRY(store_->set_message_status(id, MessageStatus::kRead));
    for (const auto& [to, timestamps] : receipts) {
      Content c;
      c.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
      c.mutable_receipt()->set_kind(Receipt::READ);
      for (std::uint64_t t : timestamps) c.mutable_receipt()->add_timestamps(t);
      PARLEY_TRY(store_->outbox_put(to, encode_content(c)).status());
    }
    return Status::ok();
  });
}

}  // namespace parley::client
