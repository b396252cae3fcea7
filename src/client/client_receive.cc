// Client: receiving, and the history.
#include "client/client.h"
#include "client/content.h"
#include "client/identity_policy.h"
#include "client/server_link.h"
#include "protocol/session_cipher.h"

namespace parley::client {
namespace {

using Clock = std::chrono::steady_clock;

// Acknowledgements go to the server in batches of at most this many ids (the server takes 1000).
constexpr std::size_t kAckBatch = 100;

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

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
  PARLEY_TRY(ensure_link());
  // Whatever earlier runs could not send goes first.
  Status flushed = flush_outbox();
  if (!flushed.is_ok() && flushed.code() != ErrorCode::kNotFound &&
      flushed.code() != ErrorCode::kUntrustedIdentity) {
    return flushed;
  }

  std::vector<std::string> acks;
  auto send_acks = [&]() -> Status {
    if (acks.empty()) return Status::ok();
    wire::Request r;
    for (auto& id : acks) r.mutable_ack()->add_server_ids(std::move(id));
    acks.clear();
    PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
    return response_status(resp, "acknowledgement");
  };

  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) break;
    // Pending acknowledgements go out before waiting: the server holds back further envelopes
    // while too many are unacknowledged.
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (!acks.empty()) wait = std::min(wait, std::chrono::milliseconds(20));
    Result<wire::Push> push = link_->next_push(std::max(wait, std::chrono::milliseconds(1)));
    if (!push) {
      if (push.error().code() == ErrorCode::kUnavailable) {  // nothing arrived in time
        PARLEY_TRY(send_acks());
        continue;
      }
      drop_link();
      return push.error();
    }
    if (push->has_queue_empty()) {
      PARLEY_TRY(send_acks());
      if (!options.follow) return Status::ok();
      continue;
    }
    if (!push->has_envelope()) continue;
    bool duplicate = false;
    PARLEY_ASSIGN_OR_RETURN(IncomingMessage m, handle_envelope(push->envelope(), duplicate));
    // Stored (or recorded as undecryptable): only now may the server delete it.
    acks.push_back(push->envelope().server_id());
    if (!duplicate) on_message(m);
    if (acks.size() >= kAckBatch) PARLEY_TRY(send_acks());
  }
  return send_acks();
}

Result<IncomingMessage> Client::handle_envelope(const wire::Envelope& e, bool& duplicate) {
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

  protocol::ProtocolStores stores{*trust_, *store_, *store_, *store_};
  protocol::SessionCipher cipher(stores, stored.sender, rng_);
  PARLEY_ASSIGN_OR_RETURN(auto known_before, store_->get_identity(stored.sender));

  // The ratchet step and the history entry commit together: after a crash either both are there
  // (and the re-delivered envelope is recognised as a duplicate) or neither.
  Status decrypted = store_->run_in_transaction([&]() -> Status {
    if (e.type() != static_cast<std::uint32_t>(protocol::MessageType::kWhisper) &&
        e.type() != static_cast<std::uint32_t>(protocol::MessageType::kPreKeyWhisper)) {
      return make_error(ErrorCode::kMalformed, "unknown message type " + std::to_string(e.type()));
    }
    PARLEY_ASSIGN_OR_RETURN(Bytes plain, cipher.decrypt(static_cast<protocol::MessageType>(e.type()),
                                                        as_bytes(e.content())));
    PARLEY_ASSIGN_OR_RETURN(Content content, decode_content(plain));
    m.timestamp = content.timestamp();
    if (content.has_data()) m.text = content.data().text();
    stored.body = std::move(plain);
    stored.status = MessageStatus::kDelivered;
    return store_->append_message(stored).status();
  });
  if (decrypted.is_ok()) {
    PARLEY_ASSIGN_OR_RETURN(auto known_after, store_->get_identity(stored.sender));
    m.identity_changed = known_before && known_after && !(*known_before == *known_after);
    return m;
  }
  // Not decryptable: recorded with the reason (a re-delivery of a stored envelope shows up as a
  // duplicate server id and is only acknowledged again).
  m.error = decrypted.to_string();
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

Result<std::vector<HistoryEntry>> Client::history(std::string_view address, std::size_t limit) {
  PARLEY_ASSIGN_OR_RETURN(std::string peer, canonical_address(address));
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
      }
    }
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace parley::client
