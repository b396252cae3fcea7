#pragma once
// Internal to src/client: the schema of the profile database, as numbered migrations.
//
// Migration N moves a database from `PRAGMA user_version` N-1 to N, in one transaction.
// Migrations are append-only: a released migration is never edited; a change is a new one. A
// database newer than this code is refused (kUnimplemented), never opened, so an old client
// cannot corrupt a newer schema.

#include <cstdint>

#include "base/status.h"

namespace parley::client::internal {

class Db;

// The schema version this code writes.
std::int32_t latest_schema_version();

// Brings the database up to latest_schema_version(). kUnimplemented when the database is newer
// than this code; Db errors otherwise.
Status migrate(Db& db);

}  // namespace parley::client::internal
