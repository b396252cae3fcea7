// Tor pluggable transports, managed-proxy mode (pt-spec v1): spawn, environment, stdout lines.
#include "transport/pt.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

extern char** environ;

namespace parley::transport {
namespace {

constexpr std::size_t kMaxLine = 4096;       // a CMETHOD/SMETHOD line with long ARGS fits
constexpr std::size_t kMaxLines = 256;       // lines read before DONE

struct Child {
  pid_t pid = -1;
  int stdin_fd = -1;   // write end of the child's stdin (closing it makes the child exit)
  int stdout_fd = -1;  // read end of the child's stdout
};

Status errno_error(ErrorCode code, std::string_view what, int err) {
  return make_error(code, std::string(what) + ": " + std::strerror(err));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Ends a child: its stdin closes (TOR_PT_EXIT_ON_STDIN_CLOSE), then SIGTERM, then SIGKILL
// after 2 s; always reaped.
void stop_child(pid_t& pid, int& stdin_fd) {
  close_fd(stdin_fd);
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid = -1;
}

// After the DONE line the child's stdout is drained (and discarded) until it closes, so a PT
// that logs to stdout never blocks on a full pipe. The thread ends when the child exits.
void drain_in_background(int fd) {
  std::thread([fd] {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    ::close(fd);
  }).detach();
}

Result<Child> spawn(const std::string& binary, const std::vector<std::string>& pt_env) {
  if (binary.empty()) return make_error(ErrorCode::kInvalidArgument, "pt: empty binary");
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return errno_error(ErrorCode::kIo, "pt: pipe", errno);
  if (::pipe2(out, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(in[0]);
    ::close(in[1]);
    return errno_error(ErrorCode::kIo, "pt: pipe", err);
  }
  // Our environment without any TOR_PT_* of our own, plus the PT configuration.
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "TOR_PT_", 7) == 0) continue;
    env_strings.emplace_back(*e);
  }
  for (const auto& e : pt_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string arg0 = binary;
  char* argv[] = {arg0.data(), nullptr};

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  // Nothing else of ours (listening sockets, databases) leaks into the transport.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  pid_t pid = -1;
  const int rc = binary.find('/') == std::string::npos
                     ? ::posix_spawnp(&pid, binary.c_str(), &fa, nullptr, argv, envp.data())
                     : ::posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    return errno_error(rc == ENOENT || rc == EACCES ? ErrorCode::kNotFound : ErrorCode::kIo,
                       "pt: cannot run " + binary, rc);
  }
  Child c;
  c.pid = pid;
  c.stdin_fd = in[1];
  c.stdout_fd = out[0];
  return c;
}

// Reads the child's stdout line by line until `done` ("CMETHODS DONE" / "SMETHODS DONE"),
// bounded in time, line length and line count. Returns the lines before it. Error lines end
// the wait with kIo carrying the PT's own message.
Result<std::vector<std::string>> read_until_done(int fd, std::string_view done,
                                                 std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::string> lines;
  std::string pending;
  bool version_ok = false;
  for (;;) {
    std::size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("VERSION-ERROR", 0) == 0 || line.rfind("ENV-ERROR", 0) == 0 ||
          line.rfind("CMETHOD-ERROR", 0) == 0 || line.rfind("SMETHOD-ERROR", 0) == 0 ||
          line.rfind("PROXY-ERROR", 0) == 0) {
        return make_error(ErrorCode::kIo, "pt: " + line);
      }
      if (line.rfind("VERSION ", 0) == 0) {
        if (line != "VERSION 1") return make_error(ErrorCode::kIo, "pt: unsupported " + line);
        version_ok = true;
        continue;
      }
      if (line == done) {
        if (!version_ok) return make_error(ErrorCode::kIo, "pt: no VERSION line");
        return lines;
      }
      if (lines.size() >= kMaxLines) return make_error(ErrorCode::kIo, "pt: too many lines");
      lines.push_back(std::move(line));
    }
    if (pending.size() > kMaxLine) return make_error(ErrorCode::kIo, "pt: line too long");
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return make_error(ErrorCode::kUnavailable,
                        "pt: no " + std::string(done) + " within the start timeout");
    }
    pollfd p{};
    p.fd = fd;
    p.events = POLLIN;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    const int pr = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(1, left.count())));
    if (pr < 0) {
      if (errno == EINTR) continue;
      return errno_error(ErrorCode::kIo, "pt: poll", errno);
    }
    if (pr == 0) continue;
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno_error(ErrorCode::kIo, "pt: read", errno);
    }
    if (n == 0) return make_error(ErrorCode::kIo, "pt: the transport exited before " + std::string(done));
    pending.append(buf, static_cast<std::size_t>(n));
  }
}

std::vector<std::string_view> split_spaces(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    const auto b = s.find_first_not_of(' ');
    if (b == std::string_view::npos) break;
    s.remove_prefix(b);
    const auto e = s.find(' ');
    out.push_back(s.substr(0, e));
    if (e == std::string_view::npos) break;
    s.remove_prefix(e);
  }
  return out;
}

Status prepare_state_dir(const std::string& dir) {
  if (dir.empty()) return make_error(ErrorCode::kInvalidArgument, "pt: state_dir is required");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "pt: cannot create state dir: " + ec.message());
  ::chmod(dir.c_str(), 0700);
  return Status::ok();
}

Status check_transport_name(const std::string& t) {
  if (t.empty() || t.size() > 64) return make_error(ErrorCode::kInvalidArgument, "pt: bad transport name");
  for (char c : t) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return make_error(ErrorCode::kInvalidArgument, "pt: bad transport name");
  }
  return Status::ok();
}

}  // namespace

Result<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_error(ErrorCode::kInvalidArgument, "bad [IPv6]:port");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return make_error(ErrorCode::kInvalidArgument, "expected HOST:PORT");
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (host.empty() || ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) {
    return make_error(ErrorCode::kInvalidArgument, "bad HOST:PORT");
  }
  return std::make_pair(std::string(host), static_cast<std::uint16_t>(port));
}

// ---------------------------------------------------------------------------------------------
// PtClient

Result<std::unique_ptr<PtClient>> PtClient::start(const PtClientOptions& o) {
  PARLEY_TRY(check_transport_name(o.transport));
  PARLEY_TRY(prepare_state_dir(o.state_dir));
  PARLEY_ASSIGN_OR_RETURN(Child c, spawn(o.binary, {
                                                       "TOR_PT_MANAGED_TRANSPORT_VER=1",
                                                       "TOR_PT_STATE_LOCATION=" + o.state_dir,
                                                       "TOR_PT_CLIENT_TRANSPORTS=" + o.transport,
                                                       "TOR_PT_EXIT_ON_STDIN_CLOSE=1",
                                                   }));
  std::unique_ptr<PtClient> pt(new PtClient());
  pt->pid_ = c.pid;
  pt->stdin_fd_ = c.stdin_fd;
  auto lines = read_until_done(c.stdout_fd, "CMETHODS DONE", o.start_timeout);
  if (!lines) {
    ::close(c.stdout_fd);
    return lines.error();  // ~PtClient stops the child
  }
  drain_in_background(c.stdout_fd);
  for (const auto& line : *lines) {
    auto f = split_spaces(line);
    if (f.size() < 4 || f[0] != "CMETHOD" || f[1] != o.transport) continue;
    if (f[2] != "socks5") {
      return make_error(ErrorCode::kIo, "pt: " + o.transport + " offers " + std::string(f[2]) +
                                            ", not socks5");
    }
    auto hp = parse_host_port(f[3]);
    if (!hp || hp->second == 0) return make_error(ErrorCode::kIo, "pt: bad CMETHOD address");
    pt->socks_host_ = hp->first;
    pt->socks_port_ = hp->second;
    return pt;
  }
  return make_error(ErrorCode::kIo, "pt: no CMETHOD for " + o.transport);
}

PtClient::~PtClient() { stop_child(pid_, stdin_fd_); }

Route PtClient::route(const std::string& args) const {
  Route r;
  r.kind = Route::Kind::kSocks5;
  r.via_host = socks_host_;
  r.via_port = socks_port_;
  // SMETHOD ARGS separate with ',' (a literal comma escaped as "\,"); SOCKS args with ';'.
  std::string user;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == '\\' && i + 1 < args.size()) {
      if (args[i + 1] == ',') {
        user.push_back(',');
      } else {
        user.push_back('\\');
        user.push_back(args[i + 1]);
      }
      ++i;
    } else if (args[i] == ',') {
      user.push_back(';');
    } else {
      user.push_back(args[i]);
    }
  }
  r.socks_username = std::move(user);
  r.socks_password = std::string(1, '\0');
  return r;
}

// ---------------------------------------------------------------------------------------------
// PtServer

Result<std::unique_ptr<PtServer>> PtServer::start(const PtServerOptions& o) {
  PARLEY_TRY(check_transport_name(o.transport));
  PARLEY_TRY(prepare_state_dir(o.state_dir));
  auto bind = parse_host_port(o.bind_addr);
  if (!bind) return make_error(ErrorCode::kInvalidArgument, "pt: bad bind address (HOST:PORT)");
  auto orport = parse_host_port(o.orport);
  if (!orport || orport->second == 0) {
    return make_error(ErrorCode::kInvalidArgument, "pt: bad ORPORT (HOST:PORT)");
  }
  std::vector<std::string> env = {
      "TOR_PT_MANAGED_TRANSPORT_VER=1",
      "TOR_PT_STATE_LOCATION=" + o.state_dir,
      "TOR_PT_SERVER_TRANSPORTS=" + o.transport,
      "TOR_PT_SERVER_BINDADDR=" + o.transport + "-" + o.bind_addr,
      "TOR_PT_ORPORT=" + o.orport,
      "TOR_PT_EXIT_ON_STDIN_CLOSE=1",
  };
  if (!o.ext_orport.empty()) {
    auto ext = parse_host_port(o.ext_orport);
    if (!ext || ext->second == 0 || o.auth_cookie_file.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "pt: bad Extended ORPort (HOST:PORT and a cookie file)");
    }
    env.push_back("TOR_PT_EXTENDED_SERVER_PORT=" + o.ext_orport);
    env.push_back("TOR_PT_AUTH_COOKIE_FILE=" + o.auth_cookie_file);
  }
  PARLEY_ASSIGN_OR_RETURN(Child c, spawn(o.binary, env));
  std::unique_ptr<PtServer> pt(new PtServer());
  pt->pid_ = c.pid;
  pt->stdin_fd_ = c.stdin_fd;
  auto lines = read_until_done(c.stdout_fd, "SMETHODS DONE", o.start_timeout);
  if (!lines) {
    ::close(c.stdout_fd);
    return lines.error();
  }
  drain_in_background(c.stdout_fd);
  for (const auto& line : *lines) {
    auto f = split_spaces(line);
    if (f.size() < 3 || f[0] != "SMETHOD" || f[1] != o.transport) continue;
    auto hp = parse_host_port(f[2]);
    if (!hp || hp->second == 0) return make_error(ErrorCode::kIo, "pt: bad SMETHOD address");
    pt->host_ = hp->first;
    pt->port_ = hp->second;
    for (std::size_t i = 3; i < f.size(); ++i) {
      if (f[i].rfind("ARGS:", 0) == 0) pt->args_ = std::string(f[i].substr(5));
    }
    return pt;
  }
  return make_error(ErrorCode::kIo, "pt: no SMETHOD for " + o.transport);
}

PtServer::~PtServer() { stop_child(pid_, stdin_fd_); }

}  // namespace parley::transport
