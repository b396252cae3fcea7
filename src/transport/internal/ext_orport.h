#pragma once
// Internal to src/transport: the server side of Tor's Extended ORPort protocol (torspec
// ext-orport-spec.txt, with the SAFE_COOKIE authentication of proposal 217), as obfs4proxy
// speaks it through goptlib's pt.DialOr. obfs4proxy opens one TCP connection to parleyd for each
// obfs4 client; over the Extended ORPort it first names the client (USERADDR), so that parleyd's
// per-address limits and logs see the client and not the loopback address of obfs4proxy. The
// client's TLS stream follows on the same connection.
//
//   server: auth types, each 1 byte, then 0x00    here 0x01 (SAFE_COOKIE) 0x00
//   client: auth type (1 byte, 0x01), ClientNonce (32 bytes)
//   server: ServerHash (32), ServerNonce (32)
//   client: ClientHash (32)
//   server: 0x01 (authenticated) or 0x00 (refused; the server then closes)
//   client: commands, each: command (2 bytes, big-endian), body length (2, big-endian), body
//             0x0000 DONE (empty body), 0x0001 USERADDR ("203.0.113.5:4711",
//             "[2001:db8::1]:4711"), 0x0002 TRANSPORT ("obfs4"); others are ignored
//   server: after DONE, OKAY: command 0x1000 with an empty body (10 00 00 00)
//
//   ServerHash = HMAC-SHA256(cookie, "ExtORPort authentication server-to-client hash" |
//                                    ClientNonce | ServerNonce)
//   ClientHash = HMAC-SHA256(cookie, "ExtORPort authentication client-to-server hash" |
//                                    ClientNonce | ServerNonce)
//
// The cookie is 32 random bytes that parleyd writes to a file (create_ext_orport_cookie) and
// names to obfs4proxy in TOR_PT_AUTH_COOKIE_FILE: whoever cannot read that file cannot name a
// client address, so a local process that connects to the Extended ORPort is refused.
//
// ExtOrPortHandshake does no I/O: bytes from the client in, bytes for the client out. Errors are
// kInvalidArgument with a message starting "ext-orport: ", except a wrong ClientHash, which is
// kPermissionDenied "ext-orport: wrong client hash". Messages carry no address and no key
// material.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"

namespace parley::transport::internal {

inline constexpr std::size_t kExtOrPortCookieBytes = 32;
inline constexpr std::size_t kExtOrPortNonceBytes = 32;
// The cookie file: the 32-byte header "! Extended ORPort Auth Cookie !\n", then the cookie.
inline constexpr std::size_t kExtOrPortCookieFileBytes = 64;
// Bounds on what a client may send (obfs4proxy sends three commands, of a few dozen bytes).
inline constexpr std::size_t kExtOrPortMaxCommands = 16;          // DONE included
inline constexpr std::size_t kExtOrPortMaxBody = 256;             // any command's body
inline constexpr std::size_t kExtOrPortMaxFieldBody = 64;         // USERADDR's and TRANSPORT's
inline constexpr std::size_t kExtOrPortMaxHandshakeBytes = 2048;  // all the client sends

// Writes a fresh cookie file at `path` (kExtOrPortCookieFileBytes: the header, then 32 bytes
// from the system CSPRNG; mode 0600, written atomically by write_private_file) and returns the
// cookie. kIo naming the path when it cannot be written; an existing file is then left as it
// was. obfs4proxy reads the file when it starts, so parleyd writes it before starting it.
Result<SecretBytes> create_ext_orport_cookie(const std::string& path);

// One connection's handshake, server side. Feed it what the client sends, in pieces of any
// size, and send the client what each step returns, greeting() first. Owns a copy of the cookie
// (wiped once the client has authenticated, and on destruction). Not thread-safe: one per
// connection, used from that connection's strand.
class ExtOrPortHandshake {
 public:
  using Nonce = std::array<std::uint8_t, kExtOrPortNonceBytes>;

  struct Step {
    Bytes out;          // to send to the client, before anything else is sent to it
    bool done = false;  // the handshake is over (on the feed that ended it, out ends with OKAY)
  };

  // `cookie`: kExtOrPortCookieBytes (another size is a bug: aborts). `server_nonce`: fresh from a
  // CSPRNG for every connection (crypto::SystemRng); tests pass fixed bytes.
  ExtOrPortHandshake(const SecretBytes& cookie, const Nonce& server_nonce);
  ExtOrPortHandshake(const ExtOrPortHandshake&) = delete;
  ExtOrPortHandshake& operator=(const ExtOrPortHandshake&) = delete;

  // What the server sends first, before the client sends anything: 0x01 0x00.
  Bytes greeting() const;

  // Consumes bytes from the client. On success, the caller sends step.out; when step.done, the
  // bytes of `in` past consumed() are the first bytes of the client's TLS stream. Once done,
  // every later feed consumes nothing and returns done with nothing to send. On an error, the
  // caller sends failure_reply() and closes the connection; every later feed returns the same
  // error. `in` is not kept.
  Result<Step> feed(ByteView in);

  // How many bytes of the last successful feed's input belonged to the handshake: all of them
  // until the feed that returned done, then those up to and including DONE, then 0.
  std::size_t consumed() const { return consumed_; }

  // After feed failed: what to send before closing. After a wrong ClientHash it ends with the
  // one byte 0x00 (refused), which goptlib reports as "server rejected authentication"; it also
  // holds whatever that same feed produced before failing. Otherwise usually empty. Valid while
  // this object lives.
  ByteView failure_reply() const { return failure_reply_; }

  bool done() const { return state_ == State::kDone; }

  // How many bytes the handshake needs before its next step: never 0 while it is under way, 0
  // once done or failed. A caller that reads exactly this many each time never takes a byte of
  // the TLS stream behind the handshake.
  std::size_t wanted() const {
    if (state_ == State::kDone || state_ == State::kFailed) return 0;
    return unit_size_ - buf_.size();
  }

  // Meaningful once done(): the client's address and port from USERADDR in canonical form
  // ("203.0.113.5:4711", "[2001:db8::1]:4711"; the address as inet_ntop and
  // boost::asio::ip::address::to_string write it), the address alone ("203.0.113.5",
  // "2001:db8::1"), and the port. No zone ("%eth0") is accepted.
  const std::string& client_address() const { return client_address_; }
  const std::string& client_ip() const { return client_ip_; }
  std::uint16_t client_port() const { return client_port_; }
  // Meaningful once done(): TRANSPORT's body ("obfs4"), or empty when the client sent none.
  const std::string& transport() const { return transport_; }

 private:
  enum class State : std::uint8_t {
    kAuthType,
    kClientNonce,
    kClientHash,
    kCommandHeader,
    kCommandBody,
    kDone,
    kFailed,
  };

  // Handles the unit buf_ holds (all unit_size_ bytes of it), appending any reply to `out`.
  Status handle_unit(Bytes& out);
  Status handle_command(Bytes& out);
  void expect(State next, std::size_t size);

  SecretBytes cookie_;
  const Nonce server_nonce_;
  Nonce client_nonce_{};
  State state_ = State::kAuthType;
  std::size_t unit_size_ = 1;  // the bytes the current state reads
  Bytes buf_;                  // what the current state has read so far
  std::size_t total_ = 0;      // bytes of handshake consumed so far
  std::size_t commands_ = 0;
  std::uint16_t command_ = 0;  // in kCommandBody: the command whose body buf_ collects
  std::size_t consumed_ = 0;
  Status error_;
  Bytes failure_reply_;
  std::string client_address_;
  std::string client_ip_;
  std::uint16_t client_port_ = 0;
  std::string transport_;
  bool have_transport_ = false;
};

}  // namespace parley::transport::internal
