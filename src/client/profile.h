#pragma once
// Profile: one client profile directory and its open, encrypted database.
//
// Layout of the directory (created 0700; an existing directory is restricted to 0700 as well):
//   profile.db  the SQLCipher database (every page encrypted; keyed with a raw 32-byte key)
//   key         without a passphrase: the 32 random key bytes, mode 0600 (looser is refused)
//   salt        with a passphrase: one text line recording the KDF, its cost and the 16-byte
//               salt; the key is Argon2id(passphrase, salt). Recording the cost lets the
//               defaults change later without locking old profiles out.
//
// The key lives only as long as it takes to key the connection, in zeroizing memory.
//
// Ownership: a Profile owns its database connection; LocalStore borrows it. Not thread-safe.
// Errors from create/open:
//   kAlreadyExists     create over an existing profile
//   kNotFound          open where there is no profile
//   kWrongPassphrase   the passphrase (or key file) does not open the database, or a passphrase
//                      profile was opened without one
//   kInvalidArgument   a passphrase given for a profile that has a key file instead
//   kPermissionDenied  the key file is readable or writable by group or others
//   kMalformed         the key or salt file is damaged
//   kUnimplemented     the database schema is newer than this client
//   kIo                filesystem or database errors

#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

#include "base/result.h"
#include "crypto/password.h"

namespace parley::client {

namespace internal {
class Db;
}

// The highest Argon2id cost a profile records or accepts (libsodium's SENSITIVE level is 4
// passes over 1 GiB): a salt file asking for more is refused as malformed rather than made to
// run for hours or exhaust memory, and create() or open() asked for more is refused.
inline constexpr std::uint64_t kMaxKdfOps = 16;
inline constexpr std::size_t kMaxKdfMemBytes = std::size_t{1} << 30;

class Profile {
 public:
  // Creates the directory (if missing) and a new, empty, migrated profile in it. Without a
  // passphrase a random key is written to `dir/key`; with one, a random salt and `params` go to
  // `dir/salt`. On failure nothing this call created is left behind.
  static Result<std::unique_ptr<Profile>> create(
      const std::filesystem::path& dir, std::optional<std::string_view> passphrase,
      crypto::PasswordParams params = crypto::PasswordParams::kInteractive);

  // Opens an existing profile and applies pending schema migrations. A passphrase profile is
  // opened with the cost recorded in `dir/salt`; when that differs from `params`, the database
  // is re-keyed under a fresh salt at cost `params` (crash-safe: see profile.cc).
  static Result<std::unique_ptr<Profile>> open(
      const std::filesystem::path& dir, std::optional<std::string_view> passphrase,
      crypto::PasswordParams params = crypto::PasswordParams::kInteractive);

  ~Profile();
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  // The database path (dir/profile.db).
  std::filesystem::path db_path() const;

  // The open connection. Internal to src/client (LocalStore); valid while this Profile lives.
  internal::Db& db() { return *db_; }

 private:
  Profile(std::filesystem::path dir, std::unique_ptr<internal::Db> db);

  std::filesystem::path dir_;
  std::unique_ptr<internal::Db> db_;
};

}  // namespace parley::client
