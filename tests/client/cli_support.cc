#include "tests/client/cli_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

namespace parley::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

milliseconds left_until(Clock::time_point deadline) {
  return std::max(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()), milliseconds(0));
}

std::vector<char*> c_argv(std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (auto& a : argv) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string parley_path() {
  const char* p = std::getenv("PARLEY");
  return p != nullptr ? p : "parley";
}

Ran run_parley(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
               std::chrono::milliseconds timeout) {
  int out[2], err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) return {};
  std::vector<std::string> argv = {parley_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::close(out[0]);
    ::close(err[0]);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);  // never a terminal: no prompts
    ::unsetenv("PARLEY_PASSPHRASE");
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    auto cargv = c_argv(argv);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Ran r;
  const auto deadline = Clock::now() + timeout;
  bool out_open = true, err_open = true;
  while ((out_open || err_open) && Clock::now() < deadline) {
    pollfd p[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    char buf[4096];
    for (int i = 0; i < 2; ++i) {
      if (p[i].revents == 0) continue;
      const ssize_t n = ::read(i == 0 ? out[0] : err[0], buf, sizeof buf);
      if (n <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
    }
  }
  if (out_open || err_open) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(out[0]);
  ::close(err[0]);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// ---- ParleyProcess ------------------------------------------------------------------------------

Result<std::unique_ptr<ParleyProcess>> ParleyProcess::spawn(const std::vector<std::string>& args,
                                                            const std::string& log_path) {
  std::vector<std::string> argv = {parley_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid < 0) return make_error(ErrorCode::kIo, "fork");
  if (pid == 0) {
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::unsetenv("PARLEY_PASSPHRASE");
    auto cargv = c_argv(argv);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  auto p = std::unique_ptr<ParleyProcess>(new ParleyProcess());
  p->pid_ = pid;
  return p;
}

ParleyProcess::~ParleyProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

int ParleyProcess::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!reaped_) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    if (r < 0 || Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return status_;
}

int ParleyProcess::terminate(std::chrono::milliseconds timeout) {
  if (!reaped_) ::kill(pid_, SIGTERM);
  return wait(timeout);
}

bool ParleyProcess::running() {
  wait(milliseconds(0));
  return !reaped_;
}

// ---- RpcConnection ------------------------------------------------------------------------------

Result<std::unique_ptr<RpcConnection>> RpcConnection::connect(const std::string& socket_path,
                                                              std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) {
    return make_error(ErrorCode::kInvalidArgument, "socket path too long");
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(ErrorCode::kIo, "socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      return std::unique_ptr<RpcConnection>(new RpcConnection(fd));
    }
    const int err = errno;
    ::close(fd);
    if (Clock::now() >= deadline) {
      return make_error(ErrorCode::kUnavailable, std::string("connect: ") + std::strerror(err));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

RpcConnection::~RpcConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status RpcConnection::send_line(const std::string& line) {
  std::string data = line + "\n";
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return make_error(ErrorCode::kIo, std::string("send: ") + std::strerror(errno));
    sent += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Result<std::string> RpcConnection::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left_until(deadline).count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return make_error(ErrorCode::kUnavailable, "no line in time");
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return make_error(ErrorCode::kIo, "the daemon closed the connection");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

Result<nlohmann::json> RpcConnection::next_json(std::chrono::milliseconds timeout) {
  PARLEY_ASSIGN_OR_RETURN(std::string line, read_line(timeout));
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded()) return make_error(ErrorCode::kMalformed, "the daemon sent invalid JSON");
  return j;
}

Result<nlohmann::json> RpcConnection::response(const nlohmann::json& id,
                                               std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(nlohmann::json j, next_json(left_until(deadline)));
    if (j.is_object() && !j.contains("id")) {
      notifications_.push_back(std::move(j));
      continue;
    }
    if (j.is_object() && j["id"] == id) return j;
    return make_error(ErrorCode::kMalformed, "unexpected response: " + j.dump());
  }
}

Result<nlohmann::json> RpcConnection::call(const std::string& method, const nlohmann::json& params,
                                           std::chrono::milliseconds timeout) {
  const std::int64_t id = next_id_++;
  nlohmann::json request{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
  PARLEY_TRY(send_line(request.dump()));
  return response(id, timeout);
}

Result<nlohmann::json> RpcConnection::next_notification(std::chrono::milliseconds timeout) {
  if (!notifications_.empty()) {
    nlohmann::json j = std::move(notifications_.front());
    notifications_.pop_front();
    return j;
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(nlohmann::json j, next_json(left_until(deadline)));
    if (j.is_object() && !j.contains("id")) return j;
    return make_error(ErrorCode::kMalformed, "unexpected response: " + j.dump());
  }
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == '{') lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

}  // namespace parley::testing
