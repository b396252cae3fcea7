// LocalStore: the outbox, the message history and groups.
#include <limits>
#include <string_view>
#include <utility>

#include "client/internal/db.h"
#include "client/local_store.h"

namespace parley::client {

using internal::Stmt;

namespace {

std::string_view status_text(MessageStatus s) {
  switch (s) {
    case MessageStatus::kSent:
      return "sent";
    case MessageStatus::kDelivered:
      return "delivered";
    case MessageStatus::kRead:
      return "read";
    case MessageStatus::kFailed:
      return "failed";
  }
  return "failed";
}

Result<MessageStatus> parse_status(const std::string& s) {
  if (s == "sent") return MessageStatus::kSent;
  if (s == "delivered") return MessageStatus::kDelivered;
  if (s == "read") return MessageStatus::kRead;
  if (s == "failed") return MessageStatus::kFailed;
  return make_error(ErrorCode::kMalformed, "messages: unknown status");
}

OutboxItem read_outbox_row(const Stmt& stmt) {
  OutboxItem item;
  item.id = stmt.column_int(0);
  item.client_message_id = stmt.column_blob(1);
  item.recipient = stmt.column_text(2);
  item.payload = stmt.column_blob(3);
  item.created_ms = stmt.column_int(4);
  item.attempts = stmt.column_int(5);
  item.next_attempt_ms = stmt.column_int(6);
  return item;
}

}  // namespace

// ---- Outbox -------------------------------------------------------------------------------------

Result<OutboxItem> LocalStore::outbox_put(const std::string& recipient, ByteView payload) {
  OutboxItem item;
  item.client_message_id = Bytes(kClientMessageIdSize);
  rng_.fill(item.client_message_id);
  item.recipient = recipient;
  item.payload = to_bytes(payload);
  item.created_ms = clock_.now_ms();
  item.next_attempt_ms = item.created_ms;
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("INSERT INTO outbox (client_message_id, recipient, payload, "
                  "created_ms, attempts, next_attempt_ms) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                  "queue outgoing message"));
  stmt.bind_blob(1, item.client_message_id)
      .bind_text(2, item.recipient)
      .bind_blob(3, item.payload)
      .bind(4, item.created_ms)
      .bind(5, item.next_attempt_ms);
  PARLEY_TRY(stmt.run());
  item.id = db_.last_insert_rowid();
  return item;
}

Result<std::vector<OutboxItem>> LocalStore::outbox_pending(std::int64_t now_ms) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT id, client_message_id, recipient, payload, created_ms, "
                             "attempts, next_attempt_ms FROM outbox WHERE next_attempt_ms <= ?1 "
                             "ORDER BY id",
                             "list due outgoing messages"));
  stmt.bind(1, now_ms);
  std::vector<OutboxItem> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) break;
    out.push_back(read_outbox_row(stmt));
  }
  return out;
}

Status LocalStore::outbox_bump(std::int64_t id, std::int64_t next_attempt_ms) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2 "
                             "WHERE id = ?1",
                             "reschedule outgoing message"));
  stmt.bind(1, id).bind(2, next_attempt_ms);
  PARLEY_TRY(stmt.run());
  if (db_.changes() == 0) return make_error(ErrorCode::kNotFound, "no such outbox item");
  return Status::ok();
}

Status LocalStore::outbox_remove(std::int64_t id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("DELETE FROM outbox WHERE id = ?1", "remove outgoing message"));
  stmt.bind(1, id);
  return stmt.run();
}

// ---- History ------------------------------------------------------------------------------------

Result<bool> LocalStore::envelope_seen(ByteView server_id) {
  if (!recent_) {
    // The newest rows first (the rowid order): no index needed.
    Recent r;
    PARLEY_ASSIGN_OR_RETURN(
        Stmt stmt, db_.prepare("SELECT server_id FROM messages WHERE server_id IS NOT NULL "
                               "ORDER BY id DESC LIMIT ?1",
                               "load recent envelopes"));
    stmt.bind(1, static_cast<std::int64_t>(kRecentEnvelopes));
    std::vector<std::string> newest_first;
    for (;;) {
      PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
      if (!row) break;
      const Bytes id = stmt.column_blob(0);
      newest_first.emplace_back(as_chars(id));
    }
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it) {
      r.ids.insert(*it);
      r.order.push_back(*it);
    }
    recent_ = std::move(r);
  }
  return recent_->ids.contains(std::string(as_chars(server_id)));
}

void LocalStore::remember_envelope(ByteView server_id) {
  if (!recent_) return;  // reloaded from the table on next use
  std::string id(as_chars(server_id));
  recent_->ids.insert(id);
  recent_->order.push_back(std::move(id));
  while (recent_->order.size() > kRecentEnvelopes) {
    recent_->ids.erase(recent_->order.front());
    recent_->order.pop_front();
  }
}

Result<std::int64_t> LocalStore::append_message(const StoredMessage& m) {
  if (m.server_id) {
    PARLEY_ASSIGN_OR_RETURN(bool seen, envelope_seen(*m.server_id));
    if (seen) return make_error(ErrorCode::kAlreadyExists, "this envelope is already in the history");
  }
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("INSERT INTO messages (conversation, direction, sender_name, sender_device, "
                  "server_ms, local_ms, body, status, error, server_id, content_ts) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                  "append message"));
  stmt.bind_text(1, m.conversation)
      .bind_text(2, m.direction == MessageDirection::kIncoming ? "in" : "out")
      .bind_text(3, m.sender.name)
      .bind(4, m.sender.device_id)
      .bind(5, m.server_ms)
      .bind(6, m.local_ms)
      .bind_blob(7, m.body)
      .bind_text(8, status_text(m.status));
  if (m.error.empty()) {
    stmt.bind_null(9);
  } else {
    stmt.bind_text(9, m.error);
  }
  if (m.server_id) {
    stmt.bind_blob(10, *m.server_id);
  } else {
    stmt.bind_null(10);
  }
  stmt.bind(11, static_cast<std::int64_t>(m.content_ts & 0x7FFFFFFFFFFFFFFFull));
  PARLEY_TRY(stmt.run());
  const std::int64_t id = db_.last_insert_rowid();
  if (m.server_id) remember_envelope(*m.server_id);
  return id;
}

Result<std::vector<StoredMessage>> LocalStore::history(const std::string& conversation,
                                                       std::size_t limit) {
  // The newest `limit` rows, re-ordered oldest first for display.
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("SELECT * FROM (SELECT id, direction, sender_name, sender_device, server_ms, "
                  "local_ms, body, status, error, server_id, content_ts FROM messages "
                  "WHERE conversation = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
                  "load history"));
  const std::int64_t max_limit = std::numeric_limits<std::int64_t>::max();
  stmt.bind_text(1, conversation)
      .bind(2, limit > static_cast<std::uint64_t>(max_limit) ? max_limit
                                                             : static_cast<std::int64_t>(limit));
  std::vector<StoredMessage> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) break;
    StoredMessage m;
    m.id = stmt.column_int(0);
    m.conversation = conversation;
    m.direction =
        stmt.column_text(1) == "in" ? MessageDirection::kIncoming : MessageDirection::kOutgoing;
    m.sender = protocol::ProtocolAddress{stmt.column_text(2),
                                         static_cast<std::uint32_t>(stmt.column_int(3))};
    m.server_ms = stmt.column_int(4);
    m.local_ms = stmt.column_int(5);
    m.body = stmt.column_blob(6);
    PARLEY_ASSIGN_OR_RETURN(m.status, parse_status(stmt.column_text(7)));
    m.error = stmt.column_text(8);
    if (!stmt.column_is_null(9)) m.server_id = stmt.column_blob(9);
    m.content_ts = static_cast<std::uint64_t>(stmt.column_int(10));
    out.push_back(std::move(m));
  }
  return out;
}

Status LocalStore::set_message_status(std::int64_t id, MessageStatus status) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt, db_.prepare("UPDATE messages SET status = ?2 WHERE id = ?1",
                                                 "set message status"));
  stmt.bind(1, id).bind_text(2, status_text(status));
  PARLEY_TRY(stmt.run());
  if (db_.changes() == 0) return make_error(ErrorCode::kNotFound, "no such message");
  return Status::ok();
}

// ---- Groups -------------------------------------------------------------------------------------

Status LocalStore::save_group(const Group& g) {
  if (g.id.size() != kGroupIdSize) {
    return make_error(ErrorCode::kInvalidArgument, "group id must be 16 bytes");
  }
  // UPDATE then INSERT, never INSERT OR REPLACE: a REPLACE deletes the row first, and the
  // foreign key would cascade that delete to the member list.
  return run_in_transaction([&]() -> Status {
    {
      PARLEY_ASSIGN_OR_RETURN(
          Stmt upd, db_.prepare("UPDATE groups SET name = ?2, created_ms = ?3, left_group = ?4, "
                                "left_ms = ?5 WHERE id = ?1",
                                "update group"));
      upd.bind_blob(1, g.id).bind_text(2, g.name).bind(3, g.created_ms).bind(4, g.left ? 1 : 0);
      upd.bind(5, g.left_ms);
      PARLEY_TRY(upd.run());
    }
    if (db_.changes() > 0) return Status::ok();
    PARLEY_ASSIGN_OR_RETURN(Stmt ins,
                            db_.prepare("INSERT INTO groups (id, name, created_ms, left_group, "
                                        "left_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                                        "add group"));
    ins.bind_blob(1, g.id).bind_text(2, g.name).bind(3, g.created_ms).bind(4, g.left ? 1 : 0);
    ins.bind(5, g.left_ms);
    return ins.run();
  });
}

Result<std::vector<std::string>> LocalStore::members_of(ByteView group_id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT member FROM group_members WHERE group_id = ?1 ORDER BY member",
                             "load group members"));
  stmt.bind_blob(1, group_id);
  std::vector<std::string> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) break;
    out.push_back(stmt.column_text(0));
  }
  return out;
}

Result<Group> LocalStore::load_group(ByteView id) {
  Group g;
  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt stmt,
        db_.prepare("SELECT name, created_ms, left_group, left_ms FROM groups WHERE id = ?1",
                    "load group"));
    stmt.bind_blob(1, id);
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) return make_error(ErrorCode::kNotFound, "no such group");
    g.id = to_bytes(id);
    g.name = stmt.column_text(0);
    g.created_ms = stmt.column_int(1);
    g.left = stmt.column_int(2) != 0;
    g.left_ms = stmt.column_int(3);
  }
  PARLEY_ASSIGN_OR_RETURN(g.members, members_of(id));
  return g;
}

Result<std::vector<Group>> LocalStore::list_groups() {
  std::vector<Group> out;
  {
    PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                            db_.prepare("SELECT id, name, created_ms, left_group, left_ms FROM "
                                        "groups ORDER BY created_ms, id",
                                        "list groups"));
    for (;;) {
      PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
      if (!row) break;
      Group g;
      g.id = stmt.column_blob(0);
      g.name = stmt.column_text(1);
      g.created_ms = stmt.column_int(2);
      g.left = stmt.column_int(3) != 0;
      g.left_ms = stmt.column_int(4);
      out.push_back(std::move(g));
    }
  }
  for (Group& g : out) {
    PARLEY_ASSIGN_OR_RETURN(g.members, members_of(g.id));
  }
  return out;
}

Status LocalStore::set_members(ByteView group_id, const std::vector<std::string>& members) {
  return run_in_transaction([&]() -> Status {
    {
      PARLEY_ASSIGN_OR_RETURN(Stmt exists,
                              db_.prepare("SELECT 1 FROM groups WHERE id = ?1", "check group"));
      exists.bind_blob(1, group_id);
      PARLEY_ASSIGN_OR_RETURN(bool row, exists.step());
      if (!row) return make_error(ErrorCode::kNotFound, "no such group");
    }
    {
      PARLEY_ASSIGN_OR_RETURN(Stmt del, db_.prepare("DELETE FROM group_members WHERE group_id = ?1",
                                                    "clear group members"));
      del.bind_blob(1, group_id);
      PARLEY_TRY(del.run());
    }
    for (const std::string& member : members) {
      PARLEY_ASSIGN_OR_RETURN(Stmt ins,
                              db_.prepare("INSERT OR IGNORE INTO group_members (group_id, member) "
                                          "VALUES (?1, ?2)",
                                          "add group member"));
      ins.bind_blob(1, group_id).bind_text(2, member);
      PARLEY_TRY(ins.run());
    }
    return Status::ok();
  });
}

}  // namespace parley::client

namespace parley::client {

Result<std::optional<std::uint32_t>> LocalStore::shared_key_id(
    ByteView group_id, const protocol::ProtocolAddress& member) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT key_id FROM sender_key_shares WHERE group_id = ?1 AND "
                             "member = ?2 AND device = ?3",
                             "load sender key share"));
  stmt.bind_blob(1, group_id).bind_text(2, member.name).bind(3, member.device_id);
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return std::optional<std::uint32_t>();
  return std::optional<std::uint32_t>(static_cast<std::uint32_t>(stmt.column_int(0)));
}

Status LocalStore::mark_shared(ByteView group_id, const protocol::ProtocolAddress& member,
                               std::uint32_t key_id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("INSERT OR REPLACE INTO sender_key_shares (group_id, member, device, "
                             "key_id) VALUES (?1, ?2, ?3, ?4)",
                             "record sender key share"));
  stmt.bind_blob(1, group_id).bind_text(2, member.name).bind(3, member.device_id).bind(4, key_id);
  return stmt.run();
}

Result<std::uint32_t> LocalStore::mark_outgoing(const std::string& conversation,
                                                const std::vector<std::uint64_t>& timestamps,
                                                MessageStatus status) {
  // Statuses only move forward: sent -> delivered -> read.
  const char* sql = status == MessageStatus::kRead
                        ? "UPDATE messages SET status = 'read' WHERE conversation = ?1 AND "
                          "content_ts = ?2 AND direction = 'out' AND status IN ('sent', 'delivered')"
                        : "UPDATE messages SET status = 'delivered' WHERE conversation = ?1 AND "
                          "content_ts = ?2 AND direction = 'out' AND status = 'sent'";
  if (status != MessageStatus::kRead && status != MessageStatus::kDelivered) {
    return make_error(ErrorCode::kInvalidArgument, "receipts mark messages delivered or read");
  }
  std::uint32_t changed = 0;
  for (std::uint64_t ts : timestamps) {
    PARLEY_ASSIGN_OR_RETURN(Stmt stmt, db_.prepare(sql, "apply receipt"));
    stmt.bind_text(1, conversation).bind(2, static_cast<std::int64_t>(ts & 0x7FFFFFFFFFFFFFFFull));
    PARLEY_TRY(stmt.run());
    changed += static_cast<std::uint32_t>(db_.changes());
  }
  return changed;
}

}  // namespace parley::client
