#include "client/profile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "client/internal/db.h"
#include "client/internal/schema.h"
#include "crypto/primitives.h"

namespace parley::client {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDbFile = "profile.db";
constexpr const char* kKeyFile = "key";
constexpr const char* kSaltFile = "salt";
// A salt record written before a re-key and renamed over `salt` once the re-key committed. A
// crash in between leaves both; open() then tries `salt` and, if it fails, `salt.next`.
constexpr const char* kSaltNextFile = "salt.next";
constexpr std::size_t kKeySize = crypto::kPasswordKeySize;

Status errno_error(const std::string& step) {
  // strerror names the condition only; the path is the user's own, never key material.
  return make_error(ErrorCode::kIo, "profile: " + step + ": " + std::strerror(errno));
}

// Creates `path` (which must not exist) with mode 0600, writes `data` and fsyncs it.
Status write_new_file(const fs::path& path, ByteView data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno_error("create " + path.string());
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = errno_error("write " + path.string());
      ::close(fd);
      return s;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status s = errno_error("sync " + path.string());
    ::close(fd);
    return s;
  }
  if (::close(fd) != 0) return errno_error("close " + path.string());
  return Status::ok();
}

// Makes a create/rename/unlink in `dir` durable.
Status sync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + dir.string());
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_error("sync " + dir.string());
  return Status::ok();
}

// Reads a whole small file into zeroizing memory, after checking it is a regular file that only
// its owner can access (a key file others can read is not a secret any more).
Result<SecretBytes> read_private_file(const fs::path& path, std::size_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno_error("open " + path.string());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = errno_error("stat " + path.string());
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::kMalformed, "profile: " + path.string() + " is not a file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(ErrorCode::kPermissionDenied,
                      "profile: " + path.string() + " has mode " + mode +
                          "; it must be accessible only by its owner (chmod 600)");
  }
  if (static_cast<std::size_t>(st.st_size) > max_size) {
    ::close(fd);
    return make_error(ErrorCode::kMalformed, "profile: " + path.string() + " is too large");
  }
  SecretBytes out(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = n < 0 ? errno_error("read " + path.string())
                       : make_error(ErrorCode::kIo, "profile: " + path.string() + " shrank");
      ::close(fd);
      return s;
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return out;
}

// ---- The KDF record (dir/salt) --------------------------------------------------------------
// One line: "parley-kdf 1 argon2id13 ops=<n> mem=<bytes> salt=<32 hex>\n". Versioned so that
// another KDF or layout can follow.

struct KdfRecord {
  crypto::PasswordParams params;
  Bytes salt;
};

std::string format_kdf(const KdfRecord& r) {
  return "parley-kdf 1 argon2id13 ops=" + std::to_string(r.params.ops) +
         " mem=" + std::to_string(r.params.mem_bytes) + " salt=" + to_hex(r.salt) + "\n";
}

template <typename T>
bool parse_field(const std::string& token, std::string_view prefix, T& out) {
  if (token.compare(0, prefix.size(), prefix) != 0) return false;
  const char* begin = token.data() + prefix.size();
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(begin, end, out);
  return ec == std::errc() && ptr == end && begin != end;
}

Result<KdfRecord> read_kdf(const fs::path& path) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes raw, read_private_file(path, 256));
  std::istringstream in{std::string(as_chars(raw.view()))};
  std::string magic, version, alg, ops, mem, salt;
  KdfRecord r{{0, 0}, {}};
  const Status bad = make_error(ErrorCode::kMalformed,
                                "profile: " + path.string() + " is not a parley KDF record");
  if (!(in >> magic >> version >> alg >> ops >> mem >> salt)) return bad;
  if (magic != "parley-kdf" || version != "1" || alg != "argon2id13") return bad;
  if (!parse_field(ops, "ops=", r.params.ops) || !parse_field(mem, "mem=", r.params.mem_bytes)) {
    return bad;
  }
  if (r.params.ops > kMaxKdfOps || r.params.mem_bytes > kMaxKdfMemBytes) return bad;
  if (salt.compare(0, 5, "salt=") != 0) return bad;
  auto decoded = from_hex(std::string_view(salt).substr(5));
  if (!decoded || decoded->size() != crypto::kPasswordSaltSize) return bad;
  r.salt = std::move(*decoded);
  return r;
}

Status check_kdf_cost(crypto::PasswordParams params) {
  if (params.ops > kMaxKdfOps || params.mem_bytes > kMaxKdfMemBytes) {
    return make_error(ErrorCode::kInvalidArgument,
                      "profile: a passphrase cost above " + std::to_string(kMaxKdfOps) +
                          " passes or " + std::to_string(kMaxKdfMemBytes >> 20) + " MiB");
  }
  return Status::ok();
}

KdfRecord new_kdf(crypto::PasswordParams params) {
  KdfRecord r{params, Bytes(crypto::kPasswordSaltSize)};
  crypto::SystemRng().fill(r.salt);
  return r;
}

// ---- Opening the database ---------------------------------------------------------------------

// Opens `path` with `key`; kWrongPassphrase with `wrong` as the message when the key does not
// decrypt it. Nothing is written to the file before the key is verified.
Result<std::unique_ptr<internal::Db>> open_keyed(const fs::path& path, const SecretBytes& key,
                                                 const std::string& wrong) {
  PARLEY_ASSIGN_OR_RETURN(std::unique_ptr<internal::Db> db, internal::Db::open(path.string()));
  PARLEY_TRY(db->set_key(key));
  PARLEY_ASSIGN_OR_RETURN(bool opens, db->key_opens_database());
  if (!opens) return make_error(ErrorCode::kWrongPassphrase, wrong);
  return db;
}

Result<std::unique_ptr<internal::Db>> open_with_kdf(const fs::path& db_path,
                                                    std::string_view passphrase,
                                                    const KdfRecord& kdf,
                                                    const std::string& wrong) {
  PARLEY_ASSIGN_OR_RETURN(SecretBytes key,
                          crypto::derive_key_argon2id(passphrase, kdf.salt, kdf.params));
  return open_keyed(db_path, key, wrong);
}

Status finish_open(internal::Db& db) {
  PARLEY_TRY(db.configure());
  return internal::migrate(db);
}

// Re-encrypts the database under Argon2id(passphrase, fresh salt) at cost `params`.
// Order for crash safety: the new record goes to salt.next (synced), the re-key commits in one
// transaction, then salt.next is renamed over salt. SQLCipher re-keys in rollback-journal mode,
// so WAL is checkpointed and switched off around it.
Status rekey(internal::Db& db, const fs::path& dir, std::string_view passphrase,
             crypto::PasswordParams params) {
  const KdfRecord next = new_kdf(params);
  PARLEY_ASSIGN_OR_RETURN(SecretBytes key,
                          crypto::derive_key_argon2id(passphrase, next.salt, next.params));
  const fs::path next_path = dir / kSaltNextFile;
  std::error_code ec;
  fs::remove(next_path, ec);
  PARLEY_TRY(write_new_file(next_path, as_bytes(format_kdf(next))));
  PARLEY_TRY(sync_dir(dir));
  PARLEY_TRY(
      db.exec("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;", "leave WAL mode"));
  Status s = db.rekey(key);
  PARLEY_TRY(db.configure());
  if (!s.is_ok()) {
    fs::remove(next_path, ec);
    return s;
  }
  fs::rename(next_path, dir / kSaltFile, ec);
  if (ec) return make_error(ErrorCode::kIo, "profile: replace " + (dir / kSaltFile).string());
  return sync_dir(dir);
}

// Removes what a failed create() made, so that the user can simply try again.
class CreateCleanup {
 public:
  CreateCleanup(fs::path dir, bool made_dir) : dir_(std::move(dir)), made_dir_(made_dir) {}
  ~CreateCleanup() {
    if (!armed_) return;
    std::error_code ec;
    for (const char* name :
         {kDbFile, "profile.db-wal", "profile.db-shm", "profile.db-journal", kKeyFile, kSaltFile}) {
      fs::remove(dir_ / name, ec);
    }
    if (made_dir_) fs::remove(dir_, ec);
  }
  void disarm() { armed_ = false; }

 private:
  fs::path dir_;
  bool made_dir_;
  bool armed_ = true;
};

}  // namespace

Profile::Profile(fs::path dir, std::unique_ptr<internal::Db> db)
    : dir_(std::move(dir)), db_(std::move(db)) {}

Profile::~Profile() = default;

fs::path Profile::db_path() const { return dir_ / kDbFile; }

Result<std::unique_ptr<Profile>> Profile::create(const fs::path& dir,
                                                 std::optional<std::string_view> passphrase,
                                                 crypto::PasswordParams params) {
  PARLEY_TRY(check_kdf_cost(params));
  std::error_code ec;
  for (const char* name : {kDbFile, kKeyFile, kSaltFile}) {
    if (fs::exists(dir / name, ec)) {
      return make_error(ErrorCode::kAlreadyExists, "a profile already exists at " + dir.string());
    }
  }
  const bool made_dir = fs::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "profile: cannot create directory " + dir.string());
  // The directory holds the key (or salt) and the database: only its owner may list or enter it.
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return make_error(ErrorCode::kIo, "profile: cannot set permissions on " + dir.string());
  CreateCleanup cleanup(dir, made_dir);

  SecretBytes key;
  if (passphrase) {
    const KdfRecord kdf = new_kdf(params);
    PARLEY_ASSIGN_OR_RETURN(key, crypto::derive_key_argon2id(*passphrase, kdf.salt, kdf.params));
    PARLEY_TRY(write_new_file(dir / kSaltFile, as_bytes(format_kdf(kdf))));
  } else {
    key = SecretBytes(kKeySize);
    crypto::SystemRng().fill(key.mutable_view());
    PARLEY_TRY(write_new_file(dir / kKeyFile, key.view()));
  }
  PARLEY_TRY(sync_dir(dir));
  PARLEY_ASSIGN_OR_RETURN(std::unique_ptr<internal::Db> db,
                          open_keyed(dir / kDbFile, key, "profile: cannot key the new database"));
  key.clear();
  PARLEY_TRY(finish_open(*db));
  cleanup.disarm();
  return std::unique_ptr<Profile>(new Profile(dir, std::move(db)));
}

Result<std::unique_ptr<Profile>> Profile::open(const fs::path& dir,
                                               std::optional<std::string_view> passphrase,
                                               crypto::PasswordParams params) {
  PARLEY_TRY(check_kdf_cost(params));
  std::error_code ec;
  const fs::path db_path = dir / kDbFile;
  if (!fs::exists(db_path, ec)) {
    return make_error(ErrorCode::kNotFound, "no profile at " + dir.string());
  }
  const bool has_key = fs::exists(dir / kKeyFile, ec);
  const bool has_salt = fs::exists(dir / kSaltFile, ec);

  if (!passphrase) {
    if (!has_key) {
      if (has_salt) {
        return make_error(ErrorCode::kWrongPassphrase,
                          "the profile at " + dir.string() + " is protected by a passphrase");
      }
      return make_error(ErrorCode::kMalformed,
                        "profile: " + dir.string() + " has neither a key file nor a salt file");
    }
    PARLEY_ASSIGN_OR_RETURN(SecretBytes key, read_private_file(dir / kKeyFile, kKeySize));
    if (key.size() != kKeySize) {
      return make_error(ErrorCode::kMalformed, "profile: the key file is not 32 bytes");
    }
    PARLEY_ASSIGN_OR_RETURN(
        std::unique_ptr<internal::Db> db,
        open_keyed(db_path, key,
                   "the key file does not open the profile database at " + dir.string()));
    key.clear();
    PARLEY_TRY(finish_open(*db));
    return std::unique_ptr<Profile>(new Profile(dir, std::move(db)));
  }

  if (!has_salt) {
    if (has_key) {
      return make_error(ErrorCode::kInvalidArgument, "the profile at " + dir.string() +
                                                         " has no passphrase (it uses a key file)");
    }
    return make_error(ErrorCode::kMalformed,
                      "profile: " + dir.string() + " has neither a key file nor a salt file");
  }
  const std::string wrong = "wrong passphrase for the profile at " + dir.string();
  PARLEY_ASSIGN_OR_RETURN(KdfRecord kdf, read_kdf(dir / kSaltFile));
  auto db = open_with_kdf(db_path, *passphrase, kdf, wrong);
  const fs::path next_path = dir / kSaltNextFile;
  if (fs::exists(next_path, ec)) {
    if (db.has_value()) {
      fs::remove(next_path, ec);  // a re-key that never committed
    } else if (db.error().code() == ErrorCode::kWrongPassphrase) {
      // A re-key committed but the rename did not happen: finish it.
      PARLEY_ASSIGN_OR_RETURN(kdf, read_kdf(next_path));
      db = open_with_kdf(db_path, *passphrase, kdf, wrong);
      if (db.has_value()) {
        fs::rename(next_path, dir / kSaltFile, ec);
        if (ec) return make_error(ErrorCode::kIo, "profile: replace " + (dir / kSaltFile).string());
      }
    }
  }
  if (!db.has_value()) return db.error();
  PARLEY_TRY(finish_open(**db));
  if (!(kdf.params == params)) PARLEY_TRY(rekey(**db, dir, *passphrase, params));
  return std::unique_ptr<Profile>(new Profile(dir, std::move(*db)));
}

}  // namespace parley::client
