#pragma once
// The schema of the SQLite store, as numbered migrations (docs/storage.md describes it).
//
// Migration N moves a database from `PRAGMA user_version` N-1 to N. Migrations are append-only:
// a released migration is never edited; a change is a new migration. A database whose
// user_version is newer than the newest migration here is refused (kUnimplemented), never
// opened, so an old binary cannot corrupt a newer schema.

#include <cstdint>
#include <span>

#include "base/status.h"

namespace parley::store {

namespace internal {
class Db;
}

struct Migration {
  std::int32_t version;  // user_version after this migration
  const char* sql;       // one or more statements; run in one transaction
};

// Every migration, in order (versions 1, 2, ...).
std::span<const Migration> migrations();
// The schema version this code writes: the version of the last migration.
std::int32_t latest_schema_version();

// Brings the database up to latest_schema_version(), one transaction per migration. Fails with
// kUnimplemented when the database is newer than this code, kIo on SQLite errors.
Status migrate(internal::Db& db);

}  // namespace parley::store
