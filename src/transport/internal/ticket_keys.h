#pragma once
// The keys that seal the server's TLS session tickets, in place of OpenSSL's own key (random
// per process), so that clients can resume across a restart of the server.
//
// - A key seals new tickets for one rotation period. After that it only opens tickets, for one
//   more period. Every ticket opened is replaced by a fresh one under the newest key (the
//   callback returns 2, "renew"; one ticket per handshake), so a client never offers a ticket
//   twice. The period must be at least the tickets' lifetime (SSL_CTX_get_timeout), so
//   every ticket can be opened for as long as the client may offer it.
// - With a file, the keys are read at start and written when they change: mode 0600, to a
//   temporary file that is synced and then renamed. Without one, they live in memory only.
// - Only TLS 1.3 gets tickets. A TLS 1.2 ticket holds the session's master secret, so whoever
//   obtained the ticket key (from a seized disk, say) could decrypt the connection the ticket
//   came from. A TLS 1.3 resumption runs a fresh (EC)DHE exchange (psk_dhe_ke; OpenSSL's server
//   accepts nothing else unless SSL_OP_ALLOW_NO_DHE_KEX is set), so the key alone decrypts
//   nothing. A TLS 1.2 client gets an empty ticket, as RFC 5077 allows.
// - Tickets are sealed as OpenSSL seals them with its own key: AES-256-CBC, then HMAC-SHA256,
//   under a 16-byte key name that picks the key when the ticket comes back.
//
// Thread-safe: OpenSSL calls the callback from every io thread.

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/secret_bytes.h"

namespace parley::transport::internal {

constexpr std::size_t kMaxTicketKeys = 4;  // the newest seals, the others only open
constexpr std::size_t kMaxTicketKeyFileBytes = 4096;

class TicketKeys {
 public:
  using Name = std::array<std::uint8_t, 16>;

  // `path` empty: keys in memory only. Otherwise reads the file (kInvalidArgument naming it and
  // the line when it is malformed: nothing is then changed; deleting the file is safe, clients
  // then make one full handshake) or creates it (kIo when it cannot be written). The file lists
  // the newest key first. Keys past their time are dropped, and so are keys dated more than a
  // period ahead (made under a wrong clock); if none is left to seal, a new one is made. The
  // file is rewritten when anything changed.
  // `clock` must outlive this object.
  static Result<std::unique_ptr<TicketKeys>> open(std::string path, std::chrono::seconds rotation,
                                                  const Clock& clock);
  ~TicketKeys();

  // Makes this object seal and open `ctx`'s tickets. It must outlive every connection of ctx.
  void install(SSL_CTX* ctx);

  // When the newest key has sealed for a whole period: makes a new one, drops those past their
  // time and writes the file. Returns whether it rotated; kIo when the file could not be
  // written (the new key is used all the same; the file is written again at the next rotation).
  // parleyd calls it from its housekeeping.
  Result<bool> rotate_if_due();

  // The key names, newest first (tests).
  std::vector<Name> names() const;

  // The OpenSSL callback's two halves (public for the callback; not for other callers).
  int seal(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac);
  int open_ticket(const unsigned char name[16], const unsigned char* iv, EVP_CIPHER_CTX* cipher,
                  EVP_MAC_CTX* mac);

 private:
  struct Key {
    std::int64_t created_s = 0;  // when it began to seal (Unix seconds)
    Name name{};
    SecretBytes aes;   // 32 bytes
    SecretBytes hmac;  // 32 bytes
  };

  TicketKeys(std::string path, std::chrono::seconds rotation, const Clock& clock);
  std::int64_t now_s() const;
  bool due_locked(std::int64_t now) const;
  // Adds a fresh key as the newest and drops the keys past their time.
  Status add_key_locked(std::int64_t now);
  void drop_expired_locked(std::int64_t now);
  Status parse(const std::string& text);
  // The file's text; the caller zeroizes it.
  std::string serialize_locked() const;

  const std::string path_;
  const std::int64_t rotation_s_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::vector<Key> keys_;  // newest first; guarded by mu_
};

}  // namespace parley::transport::internal
