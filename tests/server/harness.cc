#include "tests/server/harness.h"

#include "crypto/pow.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace parley::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string parleyd_path() {
  const char* p = std::getenv("PARLEYD");
  return p ? p : "parleyd";
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "parley-test-XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  path_ = made ? made : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

Result<std::unique_ptr<Parleyd>> Parleyd::start(const std::string& data_dir,
                                                std::vector<std::string> args) {
  int out[2];
  if (::pipe(out) != 0) return make_error(ErrorCode::kIo, "pipe");
  const std::string log = data_dir + ".log";
  std::vector<std::string> argv = {parleyd_path(), "--data", data_dir + "/d", "--admin",
                                   "127.0.0.1:0"};
  // A caller that restarts the server on the same port passes its own --listen.
  if (std::find(args.begin(), args.end(), "--listen") == args.end()) {
    argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid < 0) return make_error(ErrorCode::kIo, "fork");
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    ::close(out[0]);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  auto d = std::unique_ptr<Parleyd>(new Parleyd());
  d->pid_ = pid;
  std::string buffer;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  bool have_invite = false, have_admin = false;
  while (!(have_invite && have_admin) && Clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::read(out[0], chunk, sizeof chunk);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      // A bridge (--bridge-to) prints its bridge link instead of an invite.
      if (line.rfind("invite: ", 0) == 0 || line.rfind("bridge: ", 0) == 0) {
        d->invite_link_ = line.substr(8);
        auto inv = wire::parse_invite(d->invite_link_);
        if (!inv) {
          ::close(out[0]);
          return inv.error();
        }
        d->invite_ = *inv;
        have_invite = true;
      } else if (line.rfind("admin: http://127.0.0.1:", 0) == 0) {
        d->admin_port_ = static_cast<std::uint16_t>(std::atoi(line.c_str() + 24));
        have_admin = true;
      }
    }
  }
  ::close(out[0]);
  if (!have_invite) return make_error(ErrorCode::kUnavailable, "parleyd printed no invite (see " + log + ")");
  return d;
}

Parleyd::~Parleyd() {
  if (pid_ > 0) kill9();
}

Status set_file_size_limit(pid_t pid, std::uint64_t bytes) {
  const rlim_t soft = bytes == kNoFileSizeLimit ? RLIM_INFINITY : static_cast<rlim_t>(bytes);
  const struct rlimit limit = {soft, RLIM_INFINITY};
  if (::prlimit(pid, RLIMIT_FSIZE, &limit, nullptr) != 0) {
    return make_error(ErrorCode::kIo, std::string("prlimit: ") + std::strerror(errno));
  }
  return Status::ok();
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

void Parleyd::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int Parleyd::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return wait_exit(std::chrono::seconds(20));
}

int Parleyd::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    ::usleep(20000);
  }
  kill9();
  return -1;
}

bool Parleyd::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

transport::ClientOptions Parleyd::client_options() const {
  transport::ClientOptions o;
  o.host = invite_.host;
  o.port = invite_.port;
  o.ws_path = invite_.ws_path;
  o.pin_sha256 = invite_.pin_sha256;
  o.connect_timeout = std::chrono::seconds(5);
  return o;
}

Result<std::string> admin_get(std::uint16_t port, const std::string& target,
                              const std::string& method) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return make_error(ErrorCode::kIo, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return make_error(ErrorCode::kIo, "connect");
  }
  const std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return make_error(ErrorCode::kIo, "send");
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  const auto body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return make_error(ErrorCode::kIo, "no HTTP response");
  return resp.substr(body + 4);
}

std::string fake_key(Rng& rng) {
  std::string k(33, '\0');
  rng.fill(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(k.data()) + 1, 32));
  k[0] = 0x05;
  return k;
}

// ---- TestClient ----------------------------------------------------------------------------------

TestClient::TestClient(transport::ClientOptions options, std::uint64_t seed)
    : options_(std::move(options)), rng_(seed), auth_(crypto::Ed25519KeyPair::generate(rng_)) {
  registration_id_ = rng_.uniform(16380) + 1;
}

Status TestClient::connect() {
  pushes_.clear();
  PARLEY_ASSIGN_OR_RETURN(ws_, transport::BlockingWsClient::connect(options_));
  PARLEY_ASSIGN_OR_RETURN(wire::Frame f, next_frame(std::chrono::seconds(10)));
  if (!f.has_push() || !f.push().has_challenge()) {
    return make_error(ErrorCode::kMalformed, "expected a challenge first");
  }
  challenge_ = f.push().challenge();
  return Status::ok();
}

void TestClient::disconnect() {
  if (ws_) ws_->close();
  ws_.reset();
}

Status TestClient::send_raw(ByteView bytes) {
  if (!ws_) return make_error(ErrorCode::kUnavailable, "not connected");
  return ws_->send(bytes);
}

Result<wire::Frame> TestClient::next_frame(std::chrono::milliseconds timeout) {
  if (!ws_) return make_error(ErrorCode::kUnavailable, "not connected");
  PARLEY_ASSIGN_OR_RETURN(std::string bytes, ws_->receive(timeout));
  return wire::decode_frame(bytes);
}

Result<wire::Response> TestClient::call(wire::Request request, std::chrono::milliseconds timeout) {
  const std::uint64_t id = next_id_++;
  request.set_id(id);
  wire::Frame f;
  *f.mutable_request() = std::move(request);
  auto bytes = wire::encode_frame(f);
  PARLEY_TRY(send_raw(as_bytes(*bytes)));
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    PARLEY_ASSIGN_OR_RETURN(wire::Frame in, next_frame(std::max(left, std::chrono::milliseconds(1))));
    if (in.has_push()) {
      pushes_.push_back(in.push());
      continue;
    }
    if (in.has_response() && in.response().id() == id) return in.response();
  }
  return make_error(ErrorCode::kUnavailable, "no response in time");
}

Result<wire::Push> TestClient::next_push(std::chrono::milliseconds timeout) {
  if (!pushes_.empty()) {
    wire::Push p = std::move(pushes_.front());
    pushes_.erase(pushes_.begin());
    return p;
  }
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    PARLEY_ASSIGN_OR_RETURN(wire::Frame in, next_frame(std::max(left, std::chrono::milliseconds(1))));
    if (in.has_push()) return in.push();
  }
  return make_error(ErrorCode::kUnavailable, "no push in time");
}

Result<wire::Response> TestClient::register_account(const std::string& name,
                                                    const std::string& invite,
                                                    std::uint32_t pre_keys,
                                                    const std::string& recovery_hash,
                                                    const std::string& recovery_code) {
  name_ = name;
  wire::Request r;
  auto* reg = r.mutable_register_();
  reg->set_name(name);
  reg->set_auth_public_key(std::string(as_chars(auth_.public_key)));
  std::string folded = name;
  for (auto& c : folded) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto sig = auth_.sign(wire::auth_transcript(as_bytes(challenge_.nonce()), folded, 1));
  reg->set_challenge_signature(std::string(as_chars(sig)));
  reg->set_invite_token(invite);
  reg->set_recovery_hash(recovery_hash);
  reg->set_recovery_code(recovery_code);
  reg->set_identity_key(fake_key(rng_));
  reg->set_registration_id(registration_id_);
  reg->mutable_signed_pre_key()->set_id(1);
  reg->mutable_signed_pre_key()->set_public_key(fake_key(rng_));
  reg->mutable_signed_pre_key()->set_signature(std::string(64, 's'));
  for (std::uint32_t i = 1; i <= pre_keys; ++i) {
    auto* k = reg->add_pre_keys();
    k->set_id(i);
    k->set_public_key(fake_key(rng_));
  }
  if (challenge_.registration() == "pow") {
    // Solved by the caller's process, like a real client would (difficulty is small in tests).
    std::uint64_t nonce = 0;
    crypto::pow_solve(as_bytes(challenge_.nonce()), folded, challenge_.pow_difficulty(), 1ull << 28,
                      nonce);
    reg->set_pow_nonce(nonce);
  }
  return call(std::move(r));
}

Result<wire::Response> TestClient::login() { return login_as(name_, 1, auth_); }

Result<wire::Response> TestClient::login_as(const std::string& name, std::uint32_t device,
                                            const crypto::Ed25519KeyPair& key) {
  std::string folded = name;
  for (auto& c : folded) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  wire::Request r;
  auto* l = r.mutable_login();
  l->set_name(name);
  l->set_device_id(device);
  auto sig = key.sign(wire::auth_transcript(as_bytes(challenge_.nonce()), folded, device));
  l->set_challenge_signature(std::string(as_chars(sig)));
  return call(std::move(r));
}

wire::Request TestClient::make_send(const std::string& to,
                                    const std::map<std::uint32_t, std::uint32_t>& devices,
                                    const std::string& content, Bytes client_message_id) {
  if (client_message_id.empty()) {
    client_message_id.resize(16);
    rng_.fill(client_message_id);
  }
  wire::Request r;
  auto* s = r.mutable_send();
  s->set_destination(to);
  s->set_client_message_id(std::string(as_chars(client_message_id)));
  for (auto [device, reg] : devices) {
    auto* m = s->add_messages();
    m->set_device_id(device);
    m->set_registration_id(reg);
    m->set_type(1);
    m->set_content(content);
  }
  return r;
}

Result<wire::Response> TestClient::ack(const std::vector<std::string>& server_ids) {
  wire::Request r;
  for (const auto& id : server_ids) r.mutable_ack()->add_server_ids(id);
  return call(std::move(r));
}

Status TestClient::ack_one_way(const std::vector<std::string>& server_ids) {
  wire::Frame f;
  auto* ack = f.mutable_ack();  // set even with no ids (a test of the empty ack)
  for (const auto& id : server_ids) ack->add_server_ids(id);
  return send_raw(as_bytes(*wire::encode_frame(f)));
}

}  // namespace parley::testing
