// LocalStore: the transports table (schema v5).
#include <string>
#include <vector>

#include "client/internal/db.h"
#include "client/local_store.h"

namespace parley::client {

using internal::Stmt;

namespace {

// Kept short: an error text is for the listing, not a log.
constexpr std::size_t kMaxResultText = 300;

}  // namespace

Result<std::vector<TransportRecord>> LocalStore::list_transports() {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("SELECT id, kind, link, pt_binary, enabled, preferred, last_result, "
                  "last_attempt_ms, last_success_ms FROM transports ORDER BY id",
                  "list transports"));
  std::vector<TransportRecord> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) break;
    TransportRecord r;
    r.id = stmt.column_int(0);
    auto kind = transport_kind_from_name(stmt.column_text(1));
    if (!kind) return make_error(ErrorCode::kMalformed, "client store: unknown transport kind");
    r.kind = *kind;
    r.link = stmt.column_text(2);
    r.pt_binary = stmt.column_text(3);
    r.enabled = stmt.column_int(4) != 0;
    r.preferred = stmt.column_int(5) != 0;
    r.last_result = stmt.column_text(6);
    r.last_attempt_ms = stmt.column_int(7);
    r.last_success_ms = stmt.column_int(8);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::int64_t> LocalStore::add_transport(const TransportRecord& record) {
  if (record.kind == TransportKind::kDirect) {
    return make_error(ErrorCode::kAlreadyExists, "direct is always there");
  }
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("INSERT INTO transports (kind, link, pt_binary) VALUES (?1, ?2, ?3)",
                             "add transport"));
  stmt.bind_text(1, transport_kind_name(record.kind))
      .bind_text(2, record.link)
      .bind_text(3, record.pt_binary);
  Status s = stmt.run();
  if (s.code() == ErrorCode::kAlreadyExists) {
    return make_error(ErrorCode::kAlreadyExists, "this transport is already in the profile");
  }
  PARLEY_TRY(s);
  return db_.last_insert_rowid();
}

Status LocalStore::remove_transport(std::int64_t id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("DELETE FROM transports WHERE id = ?1 AND kind <> 'direct'",
                             "remove transport"));
  stmt.bind(1, id);
  PARLEY_TRY(stmt.run());
  if (db_.changes() > 0) return Status::ok();
  PARLEY_ASSIGN_OR_RETURN(auto all, list_transports());
  for (const auto& t : all) {
    if (t.id == id) {
      return make_error(ErrorCode::kInvalidArgument,
                        "direct cannot be removed (disable it: parley transport disable " +
                            std::to_string(id) + ")");
    }
  }
  return make_error(ErrorCode::kNotFound, "no transport " + std::to_string(id));
}

Status LocalStore::set_transport_enabled(std::int64_t id, bool enabled) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("UPDATE transports SET enabled = ?2 WHERE id = ?1", "enable transport"));
  stmt.bind(1, id).bind(2, enabled ? 1 : 0);
  PARLEY_TRY(stmt.run());
  if (db_.changes() == 0) return make_error(ErrorCode::kNotFound, "no transport " + std::to_string(id));
  return Status::ok();
}

Status LocalStore::record_transport_result(std::int64_t id, const Status& result,
                                           std::int64_t now_ms) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("UPDATE transports SET last_result = ?2, last_attempt_ms = ?3, "
                  "last_success_ms = CASE WHEN ?2 = 'ok' THEN ?3 ELSE last_success_ms END "
                  "WHERE id = ?1",
                  "record transport result"));
  std::string text = result.is_ok() ? "ok" : result.to_string();
  if (text.size() > kMaxResultText) text.resize(kMaxResultText);
  stmt.bind(1, id).bind_text(2, text).bind(3, now_ms);
  return stmt.run();
}

Status LocalStore::set_preferred_transport(std::int64_t id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("UPDATE transports SET preferred = (id = ?1)", "prefer transport"));
  stmt.bind(1, id);
  return stmt.run();
}

}  // namespace parley::client
