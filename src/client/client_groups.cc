// Client: groups with Sender Keys.
//
// Membership lives in each member's profile. Changes travel as 1:1 encrypted control messages
// (Content.data.group with kind UPDATE or QUIT) through the outbox, so they are durable and
// ordered before the group messages that follow them. A group message is encrypted once with
// our sender key and fanned out to every member device in one MultiSend; before that, every
// member device that does not hold our current chain gets it 1:1 (a SenderKeyDistribution).
// Removing a member rotates our chain; every member that learns of a removal rotates theirs,
// so a removed member cannot read what follows.
#include <algorithm>
#include <set>

#include "client/client.h"
#include "client/content.h"
#include "client/internal/client_util.h"
#include "client/server_link.h"
#include "protocol/sender_keys.h"
#include "protocol/session_cipher.h"

namespace parley::client {
namespace {

constexpr std::size_t kMaxGroupMembers = 256;
constexpr std::size_t kMaxGroupNameBytes = 128;

GroupInfo info_of(const Group& g) {
  return GroupInfo{to_hex(g.id), g.name, g.members, g.left};
}

}  // namespace

Result<Group> Client::find_group(std::string_view group_id) {
  auto id = from_hex(group_id);
  if (!id || id->size() != kGroupIdSize) {
    return make_error(ErrorCode::kInvalidArgument, "a group id is 32 hex characters");
  }
  Result<Group> g = store_->load_group(*id);
  if (!g && g.error().code() == ErrorCode::kNotFound) {
    return make_error(ErrorCode::kNotFound, "no such group: " + std::string(group_id));
  }
  return g;
}

Result<GroupInfo> Client::group_info(std::string_view group_id) {
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  return info_of(g);
}

Result<std::vector<GroupInfo>> Client::groups() {
  PARLEY_ASSIGN_OR_RETURN(auto all, store_->list_groups());
  std::vector<GroupInfo> out;
  for (const Group& g : all) out.push_back(info_of(g));
  return out;
}

// Queues a control message with the group's state (kind UPDATE or QUIT) to each recipient.
Status Client::queue_group_update(const Group& group, const std::vector<std::string>& recipients,
                                  int kind) {
  Content c;
  c.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
  auto* ctx = c.mutable_data()->mutable_group();
  ctx->set_id(std::string(as_chars(group.id)));
  ctx->set_kind(static_cast<GroupContext::Kind>(kind));
  ctx->set_name(group.name);
  for (const auto& m : group.members) ctx->add_members(m);
  const Bytes payload = encode_content(c);
  for (const auto& to : recipients) {
    if (to == address_) continue;
    PARLEY_TRY(store_->outbox_put(to, payload).status());
  }
  return Status::ok();
}

Result<std::string> Client::group_create(std::string_view name,
                                         const std::vector<std::string>& members) {
  PARLEY_TRY(check_utf8("a group name", name));
  if (name.empty() || name.size() > kMaxGroupNameBytes) {
    return make_error(ErrorCode::kInvalidArgument, "a group name has 1 to 128 bytes");
  }
  std::set<std::string> all = {address_};
  for (const auto& m : members) {
    PARLEY_ASSIGN_OR_RETURN(std::string a, canonical_address(m));
    all.insert(a);
  }
  if (all.size() > kMaxGroupMembers) return make_error(ErrorCode::kTooLarge, "too many members");
  Group g;
  g.id = Bytes(kGroupIdSize);
  rng_.fill(g.id);
  g.name = std::string(name);
  g.created_ms = clock_.now_ms();
  g.members.assign(all.begin(), all.end());
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->save_group(g));
    PARLEY_TRY(store_->set_members(g.id, g.members));
    return queue_group_update(g, g.members, GroupContext::UPDATE);
  });
  PARLEY_TRY(saved);
  PARLEY_TRY(send_until_acknowledged(OutboxItem{}));
  return to_hex(g.id);
}

Status Client::group_add(std::string_view group_id, const std::vector<std::string>& members) {
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
  std::set<std::string> all(g.members.begin(), g.members.end());
  for (const auto& m : members) {
    PARLEY_ASSIGN_OR_RETURN(std::string a, canonical_address(m));
    all.insert(a);
  }
  if (all.size() > kMaxGroupMembers) return make_error(ErrorCode::kTooLarge, "too many members");
  g.members.assign(all.begin(), all.end());
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->set_members(g.id, g.members));
    return queue_group_update(g, g.members, GroupContext::UPDATE);
  });
  PARLEY_TRY(saved);
  return send_until_acknowledged(OutboxItem{});
}

Status Client::group_rename(std::string_view group_id, std::string_view name) {
  PARLEY_TRY(check_utf8("a group name", name));
  if (name.empty() || name.size() > kMaxGroupNameBytes) {
    return make_error(ErrorCode::kInvalidArgument, "a group name has 1 to 128 bytes");
  }
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
  g.name = std::string(name);
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->save_group(g));
    return queue_group_update(g, g.members, GroupContext::UPDATE);
  });
  PARLEY_TRY(saved);
  return send_until_acknowledged(OutboxItem{});
}

Status Client::group_remove(std::string_view group_id, const std::vector<std::string>& members) {
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
  std::vector<std::string> removed;
  for (const auto& m : members) {
    PARLEY_ASSIGN_OR_RETURN(std::string a, canonical_address(m));
    if (a == address_) return make_error(ErrorCode::kInvalidArgument, "use group leave to leave");
    if (std::find(g.members.begin(), g.members.end(), a) == g.members.end()) {
      return make_error(ErrorCode::kNotFound, a + " is not in the group");
    }
    removed.push_back(a);
  }
  std::vector<std::string> before = g.members;
  std::erase_if(g.members, [&](const std::string& m) {
    return std::find(removed.begin(), removed.end(), m) != removed.end();
  });
  const protocol::SenderKeyName ours{to_hex(g.id), {address_, account_->device_id}};
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->set_members(g.id, g.members));
    // The removed members learn of it too (everyone in `before`); our next group message goes
    // out under a fresh chain they never receive.
    PARLEY_TRY(queue_group_update(g, before, GroupContext::UPDATE));
    return protocol::rotate_sender_key(*store_, ours, rng_).status();
  });
  PARLEY_TRY(saved);
  return send_until_acknowledged(OutboxItem{});
}

Status Client::group_leave(std::string_view group_id) {
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  if (g.left) return Status::ok();
  std::vector<std::string> others = g.members;
  std::erase(g.members, address_);
  g.left = true;
  g.left_ms = clock_.now_ms();
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(queue_group_update(g, others, GroupContext::QUIT));
    PARLEY_TRY(store_->save_group(g));
    return store_->set_members(g.id, g.members);
  });
  PARLEY_TRY(saved);
  return send_until_acknowledged(OutboxItem{});
}

Status Client::send_group_text(std::string_view group_id, std::string_view text) {
  PARLEY_TRY(check_utf8("a message's text", text));
  PARLEY_ASSIGN_OR_RETURN(Group g, find_group(group_id));
  if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
  Content content;
  content.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
  content.mutable_data()->set_text(std::string(text));
  auto* ctx = content.mutable_data()->mutable_group();
  ctx->set_id(std::string(as_chars(g.id)));
  ctx->set_kind(GroupContext::MESSAGE);
  PARLEY_ASSIGN_OR_RETURN(OutboxItem item,
                          store_->outbox_put(std::string(kGroupRecipientPrefix) + to_hex(g.id),
                                             encode_content(content)));
  return send_until_acknowledged(item);
}

// Sends our current chain for the group to `member` (all its devices), 1:1.
Status Client::share_sender_key(const Bytes& group_id, const std::string& member,
                                const std::vector<std::uint32_t>& devices) {
  const protocol::SenderKeyName ours{to_hex(group_id), {address_, account_->device_id}};
  PARLEY_ASSIGN_OR_RETURN(auto skdm, protocol::create_distribution_message(*store_, ours, rng_));
  Content c;
  c.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
  c.set_sender_key_distribution(std::string(as_chars(skdm.serialized())));
  c.set_group_id(std::string(as_chars(group_id)));
  OutboxItem direct;  // sent now, not queued: it is re-derived whenever it is missing
  direct.recipient = member;
  direct.client_message_id = Bytes(kClientMessageIdSize);
  rng_.fill(direct.client_message_id);
  direct.payload = encode_content(c);
  std::vector<std::uint32_t> stale;
  Status s;
  for (int round = 0; round < 3; ++round) {
    s = deliver_to_devices(member, direct, stale);
    if (s.code() != ErrorCode::kAlreadyExists) break;
  }
  PARLEY_TRY(s);
  for (std::uint32_t d : devices) {
    PARLEY_TRY(store_->mark_shared(group_id, protocol::ProtocolAddress{member, d}, skdm.key_id()));
  }
  return Status::ok();
}

Status Client::deliver_group(const OutboxItem& item) {
  auto id = from_hex(std::string_view(item.recipient).substr(kGroupRecipientPrefix.size()));
  if (!id || id->size() != kGroupIdSize) {
    return make_error(ErrorCode::kInvalidArgument, "a malformed group in the outbox");
  }
  PARLEY_ASSIGN_OR_RETURN(Group g, store_->load_group(*id));
  if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
  const protocol::SenderKeyName ours{to_hex(g.id), {address_, account_->device_id}};
  PARLEY_ASSIGN_OR_RETURN(auto current, protocol::create_distribution_message(*store_, ours, rng_));
  const std::uint32_t key_id = current.key_id();

  // Every member device holds a session and our current chain before the message goes out.
  std::map<std::string, std::vector<std::uint32_t>> devices;
  for (const std::string& member : g.members) {
    if (member == address_) continue;
    wire::Request dr;
    dr.mutable_devices()->set_name(name_part(member));
    PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(dr)));
    if (resp.status() == wire::kStatusNotFound) continue;  // the account is gone
    PARLEY_TRY(response_status(resp, "device list"));
    bool missing = false;
    for (const auto& d : resp.devices().devices()) {
      PARLEY_TRY(ensure_session(member, d.device_id(), false));
      devices[member].push_back(d.device_id());
      PARLEY_ASSIGN_OR_RETURN(auto shared,
                              store_->shared_key_id(g.id, protocol::ProtocolAddress{member, d.device_id()}));
      if (!shared || *shared != key_id) missing = true;
    }
    if (missing) {
      Status shared = share_sender_key(g.id, member, devices[member]);
      // A member whose queue is full misses this message (as below); the key goes again next time.
      if (shared.code() == ErrorCode::kQueueFull) {
        devices.erase(member);
        continue;
      }
      PARLEY_TRY(shared);
    }
  }

  // One encryption, fanned out. The chain step commits before the send: a resend after a lost
  // acknowledgement uses the next step, and the server's dedup keeps the first copy.
  protocol::GroupCipher cipher(*store_, ours, rng_);
  Bytes skm;
  Status encrypted = store_->run_in_transaction([&]() -> Status {
    PARLEY_ASSIGN_OR_RETURN(skm, cipher.encrypt(item.payload));
    return Status::ok();
  });
  PARLEY_TRY(encrypted);
  std::string body(as_chars(g.id));
  body.append(as_chars(skm));

  protocol::ProtocolStores stores{*trust_, *store_, *store_, *store_};
  wire::Request r;
  auto* multi = r.mutable_multi_send();
  for (const auto& [member, ids] : devices) {
    auto* send = multi->add_sends();
    send->set_destination(name_part(member));
    send->set_client_message_id(std::string(as_chars(item.client_message_id)));
    for (std::uint32_t d : ids) {
      protocol::SessionCipher session(stores, protocol::ProtocolAddress{member, d}, rng_);
      PARLEY_ASSIGN_OR_RETURN(std::uint32_t reg, session.remote_registration_id());
      auto* m = send->add_messages();
      m->set_device_id(d);
      m->set_registration_id(reg);
      m->set_type(kSenderKeyEnvelopeType);
      m->set_content(body);
    }
  }
  if (multi->sends_size() > 0) {
    PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
    PARLEY_TRY(response_status(resp, "group send"));
    for (const auto& e : resp.multi_send().results()) {
      if (e.status() == wire::kStatusOk) continue;
      // A member whose queue on the server is full (a device long offline) misses this
      // message: holding it for them would hold every later message of this user, and a resend
      // once the others' dedup keys are gone would give them a second copy.
      if (e.status() == wire::kStatusRateLimited && queue_full(e.result())) continue;
      // A member whose devices changed meanwhile: the next attempt fetches them afresh (the
      // members already served drop the resend as a duplicate of this client message id).
      if (e.status() == wire::kStatusConflict) {
        for (std::uint32_t d : e.result().mismatch().stale_devices()) {
          PARLEY_TRY(ensure_session(e.destination() + "@" + server_name_, d, true));
        }
        return make_error(ErrorCode::kUnavailable, "a member's devices changed; retrying");
      }
      if (e.status() != wire::kStatusNotFound) {
        return make_error(ErrorCode::kUnavailable, "group send to " + e.destination() + ": " + e.message());
      }
    }
  }

  return Status::ok();
}

Status Client::apply_group_control(const std::string& from, const DataMessage& data,
                                   std::uint64_t content_timestamp, IncomingMessage& m) {
  const GroupContext& ctx = data.group();
  if (ctx.id().size() != kGroupIdSize) return make_error(ErrorCode::kMalformed, "bad group id");
  if (ctx.members_size() > static_cast<int>(kMaxGroupMembers) || ctx.name().size() > kMaxGroupNameBytes) {
    return make_error(ErrorCode::kTooLarge, "group update too large");
  }
  const Bytes id = to_bytes(ctx.id());
  m.group = to_hex(id);
  Result<Group> existing = store_->load_group(id);
  if (!existing && existing.error().code() != ErrorCode::kNotFound) return existing.error();
  if (existing && std::find(existing->members.begin(), existing->members.end(), from) ==
                      existing->members.end()) {
    return make_error(ErrorCode::kPermissionDenied, "a group change from a non-member");
  }
  Group g = existing ? std::move(*existing) : Group{id, ctx.name(), clock_.now_ms(), false, 0, {}};
  const std::vector<std::string> before = g.members;
  const protocol::SenderKeyName ours{m.group.value(), {address_, account_->device_id}};

  if (ctx.kind() == GroupContext::QUIT) {
    if (!existing) return make_error(ErrorCode::kNotFound, "a group we do not know");
    std::erase(g.members, from);
    m.event = from + " left the group";
  } else if (ctx.kind() == GroupContext::UPDATE) {
    std::set<std::string> now;
    for (const auto& a : ctx.members()) {
      Result<std::string> c = canonical_address(a);
      if (!c) return make_error(ErrorCode::kMalformed, "a group member with a malformed address");
      now.insert(*c);
    }
    if (!now.contains(from)) return make_error(ErrorCode::kMalformed, "an update without its sender");
    if (!existing && !now.contains(address_)) {
      return make_error(ErrorCode::kPermissionDenied, "an update of a group we are not in");
    }
    // An update sent before its sender learned that we left (its timestamp is older than our
    // leaving) would put us back in on our side only: it is ignored.
    if (existing && g.left && now.contains(address_) &&
        static_cast<std::int64_t>(content_timestamp) <= g.left_ms) {
      m.event = from + " sent an update from before you left; ignored";
      return Status::ok();
    }
    g.name = ctx.name();
    g.members.assign(now.begin(), now.end());
    if (!now.contains(address_)) {
      if (!g.left) g.left_ms = clock_.now_ms();
      g.left = true;
      m.event = from + " removed you from \"" + g.name + "\"";
    } else {
      g.left = false;
      m.event = existing ? from + " updated \"" + g.name + "\": " : from + " created \"" + g.name + "\": ";
      for (std::size_t i = 0; i < g.members.size(); ++i) m.event += (i ? ", " : "") + g.members[i];
    }
  } else {
    return make_error(ErrorCode::kMalformed, "a group message outside sender keys");
  }
  PARLEY_TRY(store_->save_group(g));
  PARLEY_TRY(store_->set_members(g.id, g.members));
  // Someone left or was removed: our next message goes out under a fresh chain.
  const bool shrank = std::any_of(before.begin(), before.end(), [&](const std::string& b) {
    return std::find(g.members.begin(), g.members.end(), b) == g.members.end();
  });
  if (shrank && !g.left) {
    Result<std::optional<protocol::SenderKeyRecord>> have = store_->load_sender_key(ours);
    if (have && *have) PARLEY_TRY(protocol::rotate_sender_key(*store_, ours, rng_).status());
  }
  return Status::ok();
}

}  // namespace parley::client
