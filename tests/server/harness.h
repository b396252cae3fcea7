#pragma once
// Test harness for parleyd: starts real parleyd processes on 127.0.0.1 port 0 and drives them
// with a test client built on the same wire and transport libraries as the real client.
// Every wait is bounded in time.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/primitives.h"
#include "transport/client.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace parley::testing {

// Path of the built parleyd (PARLEYD environment variable, set by CTest).
std::string parleyd_path();

// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Parleyd {
 public:
  // Starts parleyd with --data `data_dir`/d --admin 127.0.0.1:0 plus `args` (and --listen
  // 127.0.0.1:0 unless `args` has a --listen), and waits (≤ 20 s) for its invite line (a
  // bridge's "bridge:" line when `args` has --bridge-to; invite() is then the bridge link).
  static Result<std::unique_ptr<Parleyd>> start(const std::string& data_dir,
                                                std::vector<std::string> args = {});
  ~Parleyd();  // SIGKILL if still running

  const wire::Invite& invite() const { return invite_; }
  const std::string& invite_link() const { return invite_link_; }
  std::uint16_t admin_port() const { return admin_port_; }
  transport::ClientOptions client_options() const;
  pid_t pid() const { return pid_; }

  void kill9();
  // SIGTERM and wait (≤ 20 s); returns the exit status (or -1).
  int terminate();
  // Waits (≤ `timeout`) for the process to exit by itself: its exit status, or -1 (then it is
  // killed).
  int wait_exit(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  wire::Invite invite_;
  std::string invite_link_;
  std::uint16_t admin_port_ = 0;
};

// A loopback TCP port that was free a moment ago (for servers restarted on the same port).
std::uint16_t free_port();

// Sets the file-size limit of a running process (parleyd): with 0 every write to a file fails,
// as on a full disk (parleyd ignores SIGXFSZ); kNoFileSizeLimit lifts it again.
inline constexpr std::uint64_t kNoFileSizeLimit = ~std::uint64_t{0};
Status set_file_size_limit(pid_t pid, std::uint64_t bytes);

// Plain HTTP GET on the admin listener (e.g. "/metrics").
Result<std::string> admin_get(std::uint16_t port, const std::string& target,
                              const std::string& method = "GET");

// A device: its keys (opaque bytes of the right shapes) and an authenticated connection.
class TestClient {
 public:
  explicit TestClient(transport::ClientOptions options, std::uint64_t seed = 1);

  Status connect();  // opens the WebSocket and reads the challenge
  void disconnect();

  // Register / login on the current connection (after connect()).
  // `recovery_hash` (SHA-256 of a recovery code) lets the account be recovered later: a
  // registration of the same name that carries the code (`recovery_code`) replaces its devices.
  Result<wire::Response> register_account(const std::string& name, const std::string& invite = "",
                                          std::uint32_t pre_keys = 10,
                                          const std::string& recovery_hash = "",
                                          const std::string& recovery_code = "");
  Result<wire::Response> login();
  Result<wire::Response> login_as(const std::string& name, std::uint32_t device,
                                  const crypto::Ed25519KeyPair& key);

  // Sends one request (the id is assigned) and waits for its response; pushes that arrive
  // meanwhile are kept for next_push().
  Result<wire::Response> call(wire::Request request,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Status send_raw(ByteView bytes);
  // The next push (envelope, queue-empty), waiting up to `timeout`.
  Result<wire::Push> next_push(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Any next frame (for tests of error paths). kIo with the reason when the server closed.
  Result<wire::Frame> next_frame(std::chrono::milliseconds timeout);

  // A send of `content` to every device in `devices` (device id -> registration id).
  wire::Request make_send(const std::string& to, const std::map<std::uint32_t, std::uint32_t>& devices,
                          const std::string& content, Bytes client_message_id = {});
  Result<wire::Response> ack(const std::vector<std::string>& server_ids);
  // The one-way acknowledgement (Frame.ack): sent, no response awaited (none comes).
  Status ack_one_way(const std::vector<std::string>& server_ids);

  const std::string& name() const { return name_; }
  // Whether the current connection's TLS handshake resumed a session ticket.
  bool tls_resumed() const { return ws_ != nullptr && ws_->tls_resumed(); }
  std::uint32_t registration_id() const { return registration_id_; }
  const wire::Challenge& challenge() const { return challenge_; }
  const crypto::Ed25519KeyPair& auth_key() const { return auth_; }

 private:
  transport::ClientOptions options_;
  DeterministicRng rng_;
  std::unique_ptr<transport::BlockingWsClient> ws_;
  wire::Challenge challenge_;
  std::vector<wire::Push> pushes_;
  std::uint64_t next_id_ = 1;
  std::string name_;
  crypto::Ed25519KeyPair auth_;
  std::uint32_t registration_id_ = 0;
};

// A 33-byte "public key" of the right shape (0x05 prefix) for tests that treat keys as opaque.
std::string fake_key(Rng& rng);

}  // namespace parley::testing
