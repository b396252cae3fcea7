#include "transport/internal/ticket_keys.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <string_view>

#include "base/private_file.h"

namespace parley::transport::internal {
namespace {

constexpr std::string_view kHeader =
    "# parleyd's TLS session ticket keys (docs/operations.md). Secret: mode 0600, not for\n"
    "# backups. Deleting this file is safe: each client then makes one full handshake.\n"
    "# v1 <created, Unix seconds> <name> <AES-256 key> <HMAC-SHA256 key>, newest first\n";
constexpr std::size_t kKeyBytes = 32;

int ctx_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int ticket_callback(SSL* ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                    EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
  auto* keys = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index()));
  // TLS 1.2: an empty ticket when sealing, a full handshake when one is offered (see header).
  if (keys == nullptr || SSL_version(ssl) < TLS1_3_VERSION) return 0;
  return enc == 1 ? keys->seal(name, iv, cipher, mac) : keys->open_ticket(name, iv, cipher, mac);
}

bool set_mac_key(EVP_MAC_CTX* mac, const SecretBytes& key) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(
                             OSSL_MAC_PARAM_KEY, const_cast<std::uint8_t*>(key.data()), key.size()),
                         OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(mac, params) == 1;
}

std::optional<SecretBytes> secret_from_hex(std::string_view hex, std::size_t size) {
  if (hex.size() != 2 * size) return std::nullopt;
  std::optional<Bytes> raw = from_hex(hex);
  if (!raw) return std::nullopt;
  SecretBytes out{ByteView(*raw)};
  secure_zero(raw->data(), raw->size());
  return out;
}

Status errno_error(const std::string& what) {
  return make_error(ErrorCode::kIo, what + ": " + std::strerror(errno));
}

}  // namespace

TicketKeys::TicketKeys(std::string path, std::chrono::seconds rotation, const Clock& clock)
    : path_(std::move(path)), rotation_s_(rotation.count()), clock_(clock) {}

TicketKeys::~TicketKeys() = default;

Result<std::unique_ptr<TicketKeys>> TicketKeys::open(std::string path,
                                                     std::chrono::seconds rotation,
                                                     const Clock& clock) {
  if (rotation.count() <= 0) {
    return make_error(ErrorCode::kInvalidArgument, "ticket keys: the rotation period must be > 0");
  }
  std::unique_ptr<TicketKeys> keys(new TicketKeys(std::move(path), rotation, clock));
  std::lock_guard lock(keys->mu_);
  const std::int64_t now = keys->now_s();
  if (keys->path_.empty()) {
    PARLEY_TRY(keys->add_key_locked(now));
    return keys;
  }
  // Opened first, then checked through the descriptor: the path is resolved once.
  const int fd = ::open(keys->path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::size_t>(st.st_size) > kMaxTicketKeyFileBytes) {
      ::close(fd);
      return make_error(ErrorCode::kInvalidArgument,
                        keys->path_ + ": not a ticket key file (a regular file of at most " +
                            std::to_string(kMaxTicketKeyFileBytes) +
                            " bytes); deleting it is safe");
    }
    std::string text(kMaxTicketKeyFileBytes + 1, '\0');
    std::size_t have = 0;
    int read_errno = 0;
    while (have < text.size()) {
      const ssize_t n = ::read(fd, text.data() + have, text.size() - have);
      if (n > 0) {
        have += static_cast<std::size_t>(n);
      } else if (n == 0 || errno != EINTR) {
        read_errno = n < 0 ? errno : 0;
        break;
      }
    }
    ::close(fd);
    if (read_errno != 0) {
      secure_zero(text.data(), text.size());
      errno = read_errno;
      return errno_error("cannot read " + keys->path_);
    }
    text.resize(have);
    Status parsed = keys->parse(text);
    secure_zero(text.data(), text.size());
    if (!parsed.is_ok()) {
      return make_error(ErrorCode::kInvalidArgument,
                        keys->path_ + ": " + parsed.message() +
                            "; deleting the file is safe (each client then makes one full "
                            "handshake)");
    }
    // A key dated more than a period ahead was made under a wrong clock: its place in the
    // order cannot be trusted, so it goes (its tickets then get full handshakes).
    const std::size_t in_file = keys->keys_.size();
    std::erase_if(keys->keys_, [&](const Key& k) { return k.created_s - now > keys->rotation_s_; });
    keys->drop_expired_locked(now);
    const bool changed = keys->keys_.size() != in_file;
    if (!keys->due_locked(now) && !changed) return keys;
  } else if (errno != ENOENT) {
    return errno_error("cannot read " + keys->path_);
  }
  if (keys->due_locked(now)) PARLEY_TRY(keys->add_key_locked(now));
  std::string text = keys->serialize_locked();
  Status written = write_private_file(keys->path_, text);
  secure_zero(text.data(), text.size());
  PARLEY_TRY(written);
  return keys;
}

void TicketKeys::install(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, ctx_index(), this);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
  // One TLS 1.3 ticket after a full handshake, as after a resumed one (open_ticket renews;
  // OpenSSL's default after a full handshake is two): parley's client keeps only the newest
  // ticket per server (tls_resumption.cc), so a second was sealed, sent and parsed for nothing.
  SSL_CTX_set_num_tickets(ctx, 1);
  // A ticket must not outlive the key that opens it (see the header).
  if (static_cast<std::int64_t>(SSL_CTX_get_timeout(ctx)) > rotation_s_) {
    SSL_CTX_set_timeout(ctx, rotation_s_);
  }
}

Result<bool> TicketKeys::rotate_if_due() {
  std::string text;
  {
    std::lock_guard lock(mu_);
    const std::int64_t now = now_s();
    if (!due_locked(now)) return false;
    PARLEY_TRY(add_key_locked(now));
    if (path_.empty()) return true;
    text = serialize_locked();
  }
  // Written outside the lock (handshakes go on); only housekeeping rotates, one at a time.
  Status written = write_private_file(path_, text);
  secure_zero(text.data(), text.size());
  PARLEY_TRY(written);
  return true;
}

std::vector<TicketKeys::Name> TicketKeys::names() const {
  std::lock_guard lock(mu_);
  std::vector<Name> out;
  for (const Key& k : keys_) out.push_back(k.name);
  return out;
}

int TicketKeys::seal(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                     EVP_MAC_CTX* mac) {
  std::lock_guard lock(mu_);
  if (keys_.empty()) return 0;
  const Key& key = keys_.front();
  const EVP_CIPHER* aes = EVP_aes_256_cbc();
  const int iv_len = EVP_CIPHER_get_iv_length(aes);
  if (RAND_bytes(iv, iv_len) != 1) return -1;
  std::memcpy(name, key.name.data(), key.name.size());
  if (EVP_EncryptInit_ex(cipher, aes, nullptr, key.aes.data(), iv) != 1) return -1;
  return set_mac_key(mac, key.hmac) ? 1 : -1;
}

int TicketKeys::open_ticket(const unsigned char name[16], const unsigned char* iv,
                            EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac) {
  std::lock_guard lock(mu_);
  for (const Key& key : keys_) {
    if (CRYPTO_memcmp(name, key.name.data(), key.name.size()) != 0) continue;
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1 ||
        !set_mac_key(mac, key.hmac)) {
      return -1;
    }
    // 2: "renew": after every resumption the client gets a fresh ticket (under the newest key),
    // so a client that connects again offers a ticket it never offered before, and an observer
    // cannot link its connections by the ticket (RFC 8446, appendix C.4), across networks too.
    return 2;
  }
  return 0;  // not ours (or past its time): a full handshake
}

std::int64_t TicketKeys::now_s() const { return clock_.now_ms() / 1000; }

bool TicketKeys::due_locked(std::int64_t now) const {
  if (keys_.empty()) return true;
  const std::int64_t created = keys_.front().created_s;
  // A key dated ahead by more than a period (a clock that was wrong) is replaced too.
  return now - created >= rotation_s_ || created - now > rotation_s_;
}

Status TicketKeys::add_key_locked(std::int64_t now) {
  Key key;
  key.created_s = now;
  key.aes = SecretBytes(kKeyBytes);
  key.hmac = SecretBytes(kKeyBytes);
  if (RAND_bytes(key.name.data(), static_cast<int>(key.name.size())) != 1 ||
      RAND_priv_bytes(key.aes.data(), static_cast<int>(key.aes.size())) != 1 ||
      RAND_priv_bytes(key.hmac.data(), static_cast<int>(key.hmac.size())) != 1) {
    return make_error(ErrorCode::kInternal, "ticket keys: no randomness");
  }
  keys_.insert(keys_.begin(), std::move(key));
  drop_expired_locked(now);
  return Status::ok();
}

void TicketKeys::drop_expired_locked(std::int64_t now) {
  // keys_[i] stopped sealing when keys_[i - 1] began; it opens tickets for one period more.
  for (std::size_t i = 1; i < keys_.size(); ++i) {
    if (now - keys_[i - 1].created_s >= rotation_s_ || i >= kMaxTicketKeys) {
      keys_.erase(keys_.begin() + static_cast<std::ptrdiff_t>(i), keys_.end());
      break;
    }
  }
}

Status TicketKeys::parse(const std::string& text) {
  std::vector<Key> parsed;
  std::size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    const std::string where = "line " + std::to_string(line_no);
    std::vector<std::string_view> fields;
    for (std::size_t at = 0; at <= line.size();) {
      std::size_t space = line.find(' ', at);
      if (space == std::string_view::npos) space = line.size();
      fields.push_back(line.substr(at, space - at));
      at = space + 1;
    }
    if (fields.size() != 5 || fields[0] != "v1") {
      return make_error(ErrorCode::kInvalidArgument,
                        where + ": expected \"v1 CREATED NAME AES HMAC\"");
    }
    Key key;
    auto [ptr, ec] =
        std::from_chars(fields[1].data(), fields[1].data() + fields[1].size(), key.created_s);
    if (ec != std::errc() || ptr != fields[1].data() + fields[1].size() || key.created_s <= 0) {
      return make_error(ErrorCode::kInvalidArgument, where + ": bad creation time");
    }
    std::optional<Bytes> name =
        fields[2].size() == 2 * key.name.size() ? from_hex(fields[2]) : std::optional<Bytes>();
    std::optional<SecretBytes> aes = secret_from_hex(fields[3], kKeyBytes);
    std::optional<SecretBytes> hmac = secret_from_hex(fields[4], kKeyBytes);
    if (!name || !aes || !hmac) {
      return make_error(ErrorCode::kInvalidArgument,
                        where + ": a name of 16 bytes and two keys of 32 bytes, in hex");
    }
    std::copy(name->begin(), name->end(), key.name.begin());
    for (const Key& other : parsed) {
      if (other.name == key.name) {
        return make_error(ErrorCode::kInvalidArgument, where + ": a key name seen before");
      }
    }
    key.aes = std::move(*aes);
    key.hmac = std::move(*hmac);
    parsed.push_back(std::move(key));
    if (parsed.size() > kMaxTicketKeys) {
      return make_error(ErrorCode::kInvalidArgument,
                        "more than " + std::to_string(kMaxTicketKeys) + " keys");
    }
  }
  keys_ = std::move(parsed);  // in the file's order: newest first, as serialize_locked writes
  return Status::ok();
}

std::string TicketKeys::serialize_locked() const {
  // Appended in place into room reserved at once: no temporary or reallocated copy of a key is
  // left behind in freed memory (the caller zeroizes the result).
  std::string out;
  out.reserve(kMaxTicketKeyFileBytes);
  out += kHeader;
  for (const Key& k : keys_) {
    out += "v1 ";
    out += std::to_string(k.created_s);
    for (ByteView part : {ByteView(k.name), k.aes.view(), k.hmac.view()}) {
      out += ' ';
      for (std::uint8_t b : part) {
        static constexpr char kHex[] = "0123456789abcdef";
        out += kHex[b >> 4];
        out += kHex[b & 15];
      }
    }
    out += '\n';
  }
  return out;
}

}  // namespace parley::transport::internal
