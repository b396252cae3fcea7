// parley-load: the load generator and benchmark reporter for parleyd.
//
// It starts its own parleyd (fresh data directory per scenario, a --config that raises the
// per-IP and per-account rate limits so that one load generator on 127.0.0.1 can saturate the
// server), drives it over real TLS + WebSocket connections (transport::WsClient, the client
// library), and reports:
//   throughput  messages/s delivered between online pairs, server CPU µs per message
//   idle        server RSS per idle authenticated connection (1k, 5k, 19k connections)
//   latency     p50/p90/p99/max delivery latency at a fixed send rate (10,000 messages/s)
//   offline     enqueue rate to offline devices, then the drain rate when they log in
//   handshake   TLS + WebSocket handshakes/s (until the server's Challenge push), full and
//               resumed (TLS session resumption) apart, and resumed again after parleyd restarts
//
// The load generator runs on ONE thread (one boost::asio::io_context, single-threaded) so that
// on a 2-core machine the server keeps the other core; it reports its own CPU use so that a
// client-bound figure shows as such. Server CPU comes from /proc/PID/stat (utime + stime), server
// RSS from /proc/PID/status (VmRSS). Only 127.0.0.1 is contacted. Every wait is bounded.
//
// Usage: parley-load --parleyd PATH [--scenario all|throughput|idle|latency|offline|handshake]
//                    [--seconds N] [--pairs N] [--window N] [--connections 1000,5000,19000]
//                    [--rate 10000] [--offline-messages N] [--handshake-concurrency N]
//                    [--payload BYTES] [--server-threads N] [--dir DIR] [--keep] [--hold SECONDS]
//                    [--acks oneway|request] [--runs N]
//
// `--runs N` runs the throughput, latency, offline and handshake scenarios N times each (a fresh
// parleyd each time): this machine's speed drifts by a third within minutes, so one run of them
// is a sample, not a figure. The summary then gives each of their figures as the median of the
// runs, with the lowest and highest, and judges the goal on the median; a run that faulted is left
// out of it and counted.
//
// Exit status: 0 when every scenario measured what it set out to (whether or not a goal was met),
// 1 when a fault made some figure meaningless (listed at the end: parleyd did not start,
// connections failed, sends were refused, messages were lost or delivered twice), 2 on bad
// arguments.
//
// Acknowledgements go one way (Frame.ack, no response) as parley clients send them to a server of
// wire_version 2; `--acks request` sends them as AckRequests, each answered (the older form).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/bytes.h"
#include "base/histogram.h"
#include "base/result.h"
#include "base/rng.h"
#include "crypto/primitives.h"
#include "transport/client.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace parley::load {
namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// ---- Options --------------------------------------------------------------------------------------

struct Options {
  std::string parleyd;
  std::string scenario = "all";
  int seconds = 10;
  int pairs = 500;
  int window = 32;                                 // sends in flight per sender
  std::vector<int> connections = {1000, 5000, 19000};
  double rate = 10000;                             // latency scenario: messages/s in total
  int offline_messages = 200000;
  int handshake_concurrency = 64;
  int payload = 200;                               // bytes of ciphertext per message
  int register_concurrency = 200;
  int server_threads = 0;                          // parleyd's io_threads; 0: its default
  std::string dir;                                 // where data directories go
  bool keep = false;                               // keep the data directories
  int hold = 0;  // idle: seconds to hold the connections after the last sample (to inspect parleyd)
  bool oneway_acks = true;  // Frame.ack (no response) rather than AckRequest
  int runs = 1;             // throughput, latency, offline, handshake: how many times each
};

void usage() {
  std::fprintf(stderr,
               "usage: parley-load --parleyd PATH [--scenario all|throughput|idle|latency|offline|"
               "handshake]\n"
               "                   [--seconds N] [--pairs N] [--window N] "
               "[--connections 1000,5000,19000]\n"
               "                   [--rate 10000] [--offline-messages N] "
               "[--handshake-concurrency N]\n"
               "                   [--payload BYTES] [--register-concurrency N] "
               "[--server-threads N] [--dir DIR] [--keep]\n"
               "                   [--hold SECONDS] [--acks oneway|request] [--runs N]\n");
}

std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    auto int_value = [&](int& out, int lo, int hi) -> bool {
      auto v = value();
      if (!v) return false;
      char* end = nullptr;
      const long n = std::strtol(v->c_str(), &end, 10);
      if (end == v->c_str() || *end != '\0' || n < lo || n > hi) return false;
      out = static_cast<int>(n);
      return true;
    };
    bool ok = true;
    if (a == "--parleyd") {
      auto v = value();
      ok = v.has_value();
      if (ok) o.parleyd = *v;
    } else if (a == "--scenario") {
      auto v = value();
      ok = v && (*v == "all" || *v == "throughput" || *v == "idle" || *v == "latency" ||
                 *v == "offline" || *v == "handshake");
      if (ok) o.scenario = *v;
    } else if (a == "--seconds") {
      ok = int_value(o.seconds, 1, 3600);
    } else if (a == "--pairs") {
      ok = int_value(o.pairs, 1, 9000);
    } else if (a == "--window") {
      ok = int_value(o.window, 1, 60);
    } else if (a == "--rate") {
      int r = 0;
      ok = int_value(r, 1, 1000000);
      o.rate = r;
    } else if (a == "--offline-messages") {
      ok = int_value(o.offline_messages, 1, 100000000);
    } else if (a == "--handshake-concurrency") {
      ok = int_value(o.handshake_concurrency, 1, 4096);
    } else if (a == "--server-threads") {
      ok = int_value(o.server_threads, 1, 64);
    } else if (a == "--payload") {
      ok = int_value(o.payload, 16, 200000);
    } else if (a == "--register-concurrency") {
      ok = int_value(o.register_concurrency, 1, 4096);
    } else if (a == "--connections") {
      auto v = value();
      ok = v.has_value();
      if (ok) {
        o.connections.clear();
        std::stringstream ss(*v);
        std::string part;
        while (ok && std::getline(ss, part, ',')) {
          char* end = nullptr;
          const long n = std::strtol(part.c_str(), &end, 10);
          ok = end != part.c_str() && *end == '\0' && n > 0 && n <= 1000000;
          if (ok) o.connections.push_back(static_cast<int>(n));
        }
        ok = ok && !o.connections.empty();
        std::sort(o.connections.begin(), o.connections.end());
      }
    } else if (a == "--dir") {
      auto v = value();
      ok = v.has_value();
      if (ok) o.dir = *v;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--hold") {
      ok = int_value(o.hold, 0, 3600);
    } else if (a == "--runs") {
      ok = int_value(o.runs, 1, 20);
    } else if (a == "--acks") {
      auto v = value();
      ok = v && (*v == "oneway" || *v == "request");
      if (ok) o.oneway_acks = *v == "oneway";
    } else if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "parley-load: bad or incomplete argument: %s\n", a.c_str());
      return std::nullopt;
    }
  }
  if (o.parleyd.empty()) {
    std::fprintf(stderr, "parley-load: --parleyd PATH is required\n");
    return std::nullopt;
  }
  return o;
}

// ---- /proc ---------------------------------------------------------------------------------------

// utime + stime of a process in µs.
double process_cpu_us(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  // After "pid (comm) ": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime(15).
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (fields >> f); ++i) {
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(ticks > 0 ? ticks : 100);
}

// A field of /proc/PID/status in kB (VmRSS, VmHWM).
long process_status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

double self_cpu_us() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Busy CPU time of the whole machine in µs (all CPUs; /proc/stat, everything but idle and iowait).
double machine_busy_us() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  unsigned long long v[10] = {};
  for (auto& x : v) in >> x;
  const unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  const long ticks = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(busy) * 1e6 / static_cast<double>(ticks > 0 ? ticks : 100);
}

// CPU of the server, of this process and of the machine over an interval.
struct CpuMark {
  double server_us = 0, self_us = 0, machine_us = 0;
  Clock::time_point at;
};
CpuMark cpu_mark(pid_t server) {
  return {process_cpu_us(server), self_cpu_us(), machine_busy_us(), Clock::now()};
}

// ---- parleyd -------------------------------------------------------------------------------------

class Parleyd {
 public:
  ~Parleyd() { stop(); }

  // `env`: "NAME=VALUE" entries added to parleyd's environment (replacing this process's).
  static std::unique_ptr<Parleyd> start(const Options& o, const std::string& label,
                                        std::vector<std::string> env = {}) {
    auto d = std::unique_ptr<Parleyd>(new Parleyd());
    d->keep_ = o.keep;
    d->env_ = std::move(env);
    std::string base = o.dir.empty() ? fs::temp_directory_path().string() : o.dir;
    std::string tmpl = (fs::path(base) / ("parley-load-" + label + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "parley-load: mkdtemp in %s: %s\n", base.c_str(), std::strerror(errno));
      return nullptr;
    }
    d->dir_ = tmpl;
    const std::string config = d->dir_ + "/parleyd.toml";
    {
      std::ofstream c(config);
      // Limits raised so that one client IP can load the server; queue limits high enough for
      // the offline scenario. Everything else (durability, delivery window, timeouts) is as
      // shipped.
      if (o.server_threads > 0) c << "[server]\nio_threads = " << o.server_threads << "\n";
      c << "[limits]\n"
           "queue_max_count = 10000000\n"
           "queue_max_bytes = 17179869184\n"
           "max_connections = 19500\n"
           "max_handshakes_per_ip = 0\n"  // every connection comes from 127.0.0.1
           "max_connections_per_ip = 0\n"
           "max_inflight_requests = 64\n"
           "ip_request_rate = 1000000000.0\n"
           "ip_request_burst = 1000000000.0\n"
           "ip_connect_rate = 1000000000.0\n"
           "ip_connect_burst = 1000000000.0\n"
           "account_send_rate = 1000000000.0\n"
           "account_send_burst = 1000000000.0\n"
           "register_rate_per_ip = 1000000000.0\n"
           "register_burst_per_ip = 1000000000.0\n";
    }
    d->log_ = d->dir_ + "/parleyd.log";
    d->parleyd_ = o.parleyd;
    if (!d->spawn("127.0.0.1:0")) return nullptr;
    return d;
  }

  // SIGTERM (as an operator's restart or upgrade), then the same server again on its port and
  // data directory. False when it does not come back.
  bool restart() {
    const std::string listen = "127.0.0.1:" + std::to_string(invite_.port);
    end_process();
    return spawn(listen);
  }

  // SIGTERM, then SIGKILL after 10 s.
  void stop() {
    end_process();
    if (!dir_.empty()) {
      if (keep_) {
        std::printf("  (kept %s)\n", dir_.c_str());
      } else {
        std::error_code ec;
        fs::remove_all(dir_, ec);
      }
      dir_.clear();
    }
  }

 private:
  // Runs parleyd on the data directory, listening on `listen`, and waits (bounded) for its
  // invite and admin lines.
  bool spawn(const std::string& listen) {
    int out[2];
    if (::pipe(out) != 0) return false;
    std::vector<std::string> argv = {parleyd_, "--config",     dir_ + "/parleyd.toml",
                                     "--data", dir_ + "/data", "--listen",
                                     listen,   "--admin",      "127.0.0.1:0"};
    // The environment, made before the fork (this process may have other threads).
    std::vector<std::string> env = env_;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const auto name = entry.substr(0, entry.find('=') + 1);
      if (std::none_of(env_.begin(), env_.end(),
                       [&](const std::string& mine) { return mine.starts_with(name); })) {
        env.emplace_back(entry);
      }
    }
    std::vector<char*> cenv;
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      const int err = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (err >= 0) ::dup2(err, STDERR_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    pid_ = pid;
    stdout_ = out[0];
    std::string buffer;
    const auto deadline = Clock::now() + seconds(30);
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
        if (line.rfind("invite: ", 0) == 0) {
          auto inv = wire::parse_invite(line.substr(8));
          if (!inv) {
            std::fprintf(stderr, "parley-load: bad invite line: %s\n", line.c_str());
            return false;
          }
          invite_ = *inv;
          have_invite = true;
        } else if (line.rfind("admin: http://127.0.0.1:", 0) == 0) {
          admin_port_ = static_cast<std::uint16_t>(std::atoi(line.c_str() + 24));
          have_admin = true;
        }
      }
    }
    if (!have_invite) {
      std::fprintf(stderr, "parley-load: parleyd printed no invite line within 30 s (log: %s)\n",
                   log_.c_str());
      keep_ = true;
      return false;
    }
    return true;
  }

  void end_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      const auto deadline = Clock::now() + seconds(10);
      bool gone = false;
      while (Clock::now() < deadline) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          gone = true;
          break;
        }
        ::usleep(20000);
      }
      if (!gone) {
        std::printf("  (parleyd did not stop within 10 s of SIGTERM: SIGKILL)\n");
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (stdout_ >= 0) {
      ::close(stdout_);
      stdout_ = -1;
    }
  }

 public:
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    return ::waitpid(pid_, &status, WNOHANG) == 0;
  }

  pid_t pid() const { return pid_; }
  std::uint16_t admin_port() const { return admin_port_; }
  const std::string& dir() const { return dir_; }
  const std::string& log() const { return log_; }
  transport::ClientOptions client_options() const {
    transport::ClientOptions c;
    c.host = invite_.host;
    c.port = invite_.port;
    c.ws_path = invite_.ws_path;
    c.pin_sha256 = invite_.pin_sha256;
    c.connect_timeout = seconds(20);
    return c;
  }

 private:
  Parleyd() = default;
  pid_t pid_ = -1;
  std::uint16_t admin_port_ = 0;
  int stdout_ = -1;
  bool keep_ = false;
  std::string dir_, log_, parleyd_;
  std::vector<std::string> env_;
  wire::Invite invite_;
};

// The server's Prometheus metrics (admin listener, plain HTTP on 127.0.0.1), as name -> value.
// Blocking, bounded by 2 s; used only at the edges of a measurement window.
std::map<std::string, double> server_metrics(const Parleyd& d) {
  std::map<std::string, double> out;
  if (d.admin_port() == 0) return out;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return out;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(d.admin_port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string resp;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return out;
  std::istringstream lines(resp.substr(body + 4));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

// Envelopes the server has deleted on acknowledgements (its counter; one-way acks get no answer).
std::uint64_t server_acked(const Parleyd& d) {
  const auto m = server_metrics(d);
  const auto it = m.find("parley_messages_acked_total");
  return it == m.end() ? 0 : static_cast<std::uint64_t>(it->second);
}

// Store group commit over a window: commits/s and operations per commit.
void print_store_window(const std::map<std::string, double>& a, const std::map<std::string, double>& b,
                        double wall) {
  auto get = [](const std::map<std::string, double>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? 0.0 : it->second;
  };
  const double commits = get(b, "parley_store_commits_total") - get(a, "parley_store_commits_total");
  const double ops = get(b, "parley_store_committed_ops_total") - get(a, "parley_store_committed_ops_total");
  if (commits <= 0) return;
  std::printf("  server store: %.0f commits/s, %.1f operations per commit (group commit, synchronous "
              "commits)\n",
              commits / wall, ops / commits);
  // Upper bucket bounds (ms) under which half and 99 % of a histogram's window fell.
  auto quantiles = [&](const std::string& name) {
    const std::string prefix = name + "_bucket{le=\"";
    std::vector<std::pair<double, double>> buckets;  // (le in s, cumulative count in the window)
    for (const auto& [k, v] : b) {
      if (k.rfind(prefix, 0) != 0) continue;
      const std::string le = k.substr(prefix.size(), k.size() - prefix.size() - 2);
      const double bound = le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
      buckets.emplace_back(bound, v - get(a, k.c_str()));
    }
    std::sort(buckets.begin(), buckets.end());
    if (buckets.empty() || buckets.back().second <= 0) return std::string("-");
    std::string out;
    for (double q : {0.5, 0.99}) {
      if (!out.empty()) out += "/";
      for (const auto& [bound, cum] : buckets) {
        if (cum >= q * buckets.back().second) {
          char v[32];
          if (std::isinf(bound)) {  // over the last bound
            std::snprintf(v, sizeof v, ">%g",
                          static_cast<double>(LatencyHistogram::kBoundsNs.back()) / 1e6);
          } else {
            std::snprintf(v, sizeof v, "%g", bound * 1000);
          }
          out += v;
          break;
        }
      }
    }
    return out;
  };
  std::printf(
      "  server store: queue wait p50/p99 <= %s ms, synced commit p50/p99 <= %s ms "
      "(histogram bucket bounds)\n",
      quantiles("parley_store_queue_wait_seconds").c_str(),
      quantiles("parley_store_synced_commit_seconds").c_str());
  const std::string delivery = quantiles("parley_live_delivery_seconds");
  if (delivery != "-") {
    std::printf(
        "  server delivery (send handed to the store -> pushed to the online device): "
        "p50/p99 <= %s ms\n",
        delivery.c_str());
  }
}

// ---- Accounts and connections -------------------------------------------------------------------

struct Account {
  std::string name;  // already folded (lower case)
  crypto::Ed25519KeyPair key;
  std::uint32_t registration_id = 1;
};

std::string fake_key(Rng& rng) {
  std::string k(33, '\0');
  rng.fill(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(k.data()) + 1, 32));
  k[0] = 0x05;
  return k;
}

class Conn;

// What a scenario wants to hear about (all calls on the single io thread).
struct Hooks {
  std::function<void(Conn&)> challenged;                          // Auth::kNone only
  std::function<void(Conn&, wire::Envelope&)> envelope;
  std::function<void(Conn&, const wire::Response&)> response;     // not auth, not ack
  std::function<void(Conn&, const Status&)> ended;                // once ready, then closed
};

// Shared state of one scenario run.
struct Ctx {
  Ctx(const Options& o, Parleyd& d) : opts(o), server(d), client(d.client_options()) {}
  const Options& opts;
  Parleyd& server;
  net::io_context io{1};
  transport::ClientOptions client;
  std::vector<Account> accounts;
  DeterministicRng rng{0x5eed};  // frame padding, ids (a benchmark: need not be secret)
  std::uint64_t run_nonce = 0;
  std::vector<std::shared_ptr<Conn>> ack_dirty;  // connections with acks waiting for the timer

  // Runs the io_context until `done()` or the deadline; true when done.
  template <typename Pred>
  bool run_until(Pred done, Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      const auto now = Clock::now();
      if (now >= deadline) return false;
      io.run_for(std::min<Clock::duration>(deadline - now, milliseconds(2)));
    }
    return true;
  }
  void run_for(Clock::duration d) {
    run_until([] { return false; }, d);
  }
  // The server's metrics, fetched on another thread while this one's events run on (a pacer
  // keeps its schedule).
  std::map<std::string, double> server_metrics_running() {
    auto fetched = std::async(std::launch::async, [this] { return server_metrics(server); });
    run_until([&] { return fetched.wait_for(seconds(0)) == std::future_status::ready; },
              seconds(5));
    return fetched.get();
  }
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  enum class Auth { kNone, kRegister, kLogin };
  // Called exactly once: when ready (logged in and QueueEmpty seen; for kNone: challenge seen),
  // or with the error that prevented it.
  using OpenDone = std::function<void(Conn&, const Status&)>;

  Conn(Ctx& ctx, int account, Auth auth, std::shared_ptr<Hooks> hooks, OpenDone open_done)
      : ctx_(ctx), account_(account), auth_(auth), hooks_(std::move(hooks)),
        open_done_(std::move(open_done)) {}

  int account() const { return account_; }
  bool ready() const { return ready_; }
  bool tls_resumed() const { return ws_ && ws_->tls_resumed(); }
  bool ended() const { return ended_; }
  int inflight = 0;  // scenario-managed count of requests in flight
  std::uint64_t counter = 0;  // scenario-managed

  void start() {
    auto self = shared_from_this();
    transport::WsClient::async_connect(
        ctx_.io, ctx_.client, [self](std::string_view m) { self->on_message(m); },
        [self](const Status& why) { self->on_close(why); },
        [self](Result<std::shared_ptr<transport::WsClient>> r) {
          if (!r) {
            self->fail(r.error());
            self->ended_ = true;
            return;
          }
          self->ws_ = std::move(*r);
          if (self->closing_) self->ws_->close();
        });
  }

  // Sends a request (assigns its id).
  std::uint64_t send(wire::Frame& frame) {
    const std::uint64_t id = next_id_++;
    frame.mutable_request()->set_id(id);
    if (ws_) ws_->send(wire::encode_frame(frame));
    return id;
  }

  // Queues an acknowledgement; sent at 64 ids, or by the scenario's 5 ms flush timer.
  void queue_ack(std::string server_id) {
    if (pending_acks_.empty()) ctx_.ack_dirty.push_back(shared_from_this());
    pending_acks_.push_back(std::move(server_id));
    if (pending_acks_.size() >= 64) flush_acks();
  }
  // One way when asked and the server takes it (its scenario then counts the server's deletes).
  void flush_acks() {
    if (pending_acks_.empty() || !ws_ || ended_) {
      pending_acks_.clear();
      return;
    }
    wire::Frame f;
    const bool oneway = ctx_.opts.oneway_acks && server_wire_version_ >= 2;
    auto* ack = oneway ? f.mutable_ack() : f.mutable_request()->mutable_ack();
    for (auto& id : pending_acks_) ack->add_server_ids(std::move(id));
    pending_acks_.clear();
    if (oneway) {
      ws_->send(wire::encode_frame(f));
      return;
    }
    ack_ids_.insert(send(f));
  }

  void close() {
    closing_ = true;
    if (ws_) ws_->close();
  }

 private:
  void fail(const Status& why) {
    if (open_done_) {
      auto cb = std::move(open_done_);
      open_done_ = nullptr;
      cb(*this, why);
    }
  }

  void on_close(const Status& why) {
    ended_ = true;
    if (!ready_) {
      fail(why);
    } else if (hooks_ && hooks_->ended) {
      hooks_->ended(*this, why);
    }
    ws_.reset();  // breaks the cycle client -> handlers -> this -> client
  }

  void on_message(std::string_view bytes) {
    auto frame = wire::decode_frame(bytes);
    if (!frame) {
      fail(make_error(ErrorCode::kMalformed, "undecodable frame from the server"));
      close();
      return;
    }
    if (frame->has_push()) {
      wire::Push& p = *frame->mutable_push();
      if (p.has_challenge()) return on_challenge(p.challenge());
      if (p.has_envelope()) {
        if (hooks_ && hooks_->envelope) hooks_->envelope(*this, *p.mutable_envelope());
        return;
      }
      if (p.has_envelopes()) {  // a drained queue, several envelopes a frame (as libparley asks)
        for (auto& e : *p.mutable_envelopes()->mutable_envelopes()) {
          if (hooks_ && hooks_->envelope) hooks_->envelope(*this, e);
        }
        return;
      }
      if (p.has_queue_empty() && !ready_ && authed_) {
        ready_ = true;
        auto cb = std::move(open_done_);
        open_done_ = nullptr;
        if (cb) cb(*this, Status::ok());
      }
      return;
    }
    if (!frame->has_response()) return;
    const wire::Response& r = frame->response();
    if (r.id() == auth_id_ && auth_id_ != 0) {
      if (r.status() != wire::kStatusOk) {
        fail(make_error(ErrorCode::kPermissionDenied,
                        (auth_ == Auth::kRegister ? "register: " : "login: ") +
                            std::to_string(r.status()) + " " + r.message()));
        close();
        return;
      }
      authed_ = true;
      return;
    }
    if (ack_ids_.erase(r.id()) != 0) return;  // scenarios count the server's deletes instead
    if (hooks_ && hooks_->response) hooks_->response(*this, r);
  }

  void on_challenge(const wire::Challenge& c) {
    server_wire_version_ = c.wire_version();
    if (auth_ == Auth::kNone) {
      ready_ = true;
      auto cb = std::move(open_done_);
      open_done_ = nullptr;
      if (cb) cb(*this, Status::ok());
      if (hooks_ && hooks_->challenged) hooks_->challenged(*this);
      return;
    }
    const Account& a = ctx_.accounts[static_cast<std::size_t>(account_)];
    const auto sig = a.key.sign(wire::auth_transcript(as_bytes(c.nonce()), a.name, 1));
    wire::Frame f;
    if (auth_ == Auth::kRegister) {
      auto* reg = f.mutable_request()->mutable_register_();
      reg->set_name(a.name);
      reg->set_auth_public_key(std::string(as_chars(a.key.public_key)));
      reg->set_challenge_signature(std::string(as_chars(sig)));
      reg->set_identity_key(fake_key(ctx_.rng));
      reg->set_registration_id(a.registration_id);
      reg->mutable_signed_pre_key()->set_id(1);
      reg->mutable_signed_pre_key()->set_public_key(fake_key(ctx_.rng));
      reg->mutable_signed_pre_key()->set_signature(std::string(64, 's'));
    } else {
      auto* login = f.mutable_request()->mutable_login();
      login->set_name(a.name);
      login->set_device_id(1);
      login->set_challenge_signature(std::string(as_chars(sig)));
      login->set_accept_batches(true);
    }
    auth_id_ = send(f);
  }

  Ctx& ctx_;
  const int account_;
  const Auth auth_;
  std::shared_ptr<Hooks> hooks_;
  OpenDone open_done_;
  std::shared_ptr<transport::WsClient> ws_;
  std::uint64_t next_id_ = 1;
  std::uint64_t auth_id_ = 0;
  bool authed_ = false, ready_ = false, ended_ = false, closing_ = false;
  std::uint32_t server_wire_version_ = 0;
  std::vector<std::string> pending_acks_;
  std::unordered_set<std::uint64_t> ack_ids_;  // AckRequests awaiting their answer
};

// Creates `n` accounts' keys (deterministic per index; cheap to regenerate).
void make_accounts(Ctx& ctx, int n) {
  ctx.accounts.clear();
  ctx.accounts.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    DeterministicRng r(0x10ad0000ull + static_cast<std::uint64_t>(i));
    Account a;
    char name[32];
    std::snprintf(name, sizeof name, "load%06d", i);
    a.name = name;
    a.key = crypto::Ed25519KeyPair::generate(r);
    a.registration_id = r.uniform(16380) + 1;
    ctx.accounts.push_back(std::move(a));
  }
}

// Opens one connection per account in `accounts`, at most `concurrency` still opening at once.
// Ready connections are returned (index-aligned with `accounts`, null where it failed) unless
// `close_when_ready`, in which case each is closed as soon as it is ready (registration only).
struct OpenResult {
  std::vector<std::shared_ptr<Conn>> conns;
  int ok = 0, failed = 0;
  std::map<std::string, int> errors;
  double seconds = 0;
  bool timed_out = false;
};

OpenResult open_many(Ctx& ctx, const std::vector<int>& accounts, Conn::Auth auth,
                     std::shared_ptr<Hooks> hooks, int concurrency, bool close_when_ready,
                     Clock::duration timeout) {
  OpenResult res;
  res.conns.resize(accounts.size());
  std::size_t next = 0;
  int opening = 0;
  const auto t0 = Clock::now();
  std::function<void()> launch = [&] {
    while (opening < concurrency && next < accounts.size()) {
      const std::size_t slot = next++;
      ++opening;
      auto c = std::make_shared<Conn>(
          ctx, accounts[slot], auth, hooks, [&, slot](Conn& conn, const Status& s) {
            --opening;
            if (s.is_ok()) {
              ++res.ok;
              if (close_when_ready) {
                conn.close();
              } else {
                res.conns[slot] = conn.shared_from_this();
              }
            } else {
              ++res.failed;
              std::string key = s.to_string();
              if (key.size() > 100) key.resize(100);
              ++res.errors[key];
            }
            launch();
          });
      c->start();
      if (close_when_ready) res.conns[slot] = c;  // keep alive until closed
    }
  };
  launch();
  const bool done = ctx.run_until(
      [&] { return next >= accounts.size() && opening == 0; }, timeout);
  res.timed_out = !done;
  res.seconds = secs(Clock::now() - t0);
  if (close_when_ready) {
    // Wait (bounded) for the closes so that the server has let go of these sessions.
    ctx.run_until(
        [&] {
          for (auto& c : res.conns) {
            if (c && !c->ended()) return false;
          }
          return true;
        },
        seconds(20));
    res.conns.clear();
  }
  launch = nullptr;
  return res;
}

// A fault makes a scenario's figures meaningless: parleyd did not start, connections failed,
// sends were refused, messages were lost or delivered twice, handshakes did not resume as asked.
// A missed goal is not a fault. main() lists the faults last and exits 1 if there are any, so
// that a smoke run (scripts/test) fails when the server or this program breaks.
std::vector<std::string> g_faults;

void fault(std::string what) {
  std::printf("  FAULT: %s\n", what.c_str());
  g_faults.push_back(std::move(what));
}

void print_open_problems(const char* what, const OpenResult& r) {
  if (r.failed == 0 && !r.timed_out) return;
  fault(std::string(what) + ": " + std::to_string(r.failed) + " connections failed" +
        (r.timed_out ? " (timed out)" : ""));
  for (const auto& [why, n] : r.errors) std::printf("    %d x %s\n", n, why.c_str());
}

// Closes every connection and waits (bounded) until they have all ended.
void close_all(Ctx& ctx, std::vector<std::shared_ptr<Conn>>& conns) {
  for (auto& c : conns) {
    if (c) c->close();
  }
  ctx.run_until(
      [&] {
        for (auto& c : conns) {
          if (c && !c->ended()) return false;
        }
        return true;
      },
      seconds(30));
  conns.clear();
  ctx.ack_dirty.clear();
}

// Flushes pending acks every 5 ms while `active`.
class AckTimer {
 public:
  explicit AckTimer(Ctx& ctx) : ctx_(ctx), timer_(ctx.io) { arm(); }
  ~AckTimer() { stop(); }
  void stop() {
    if (!*alive_) return;
    *alive_ = false;
    timer_.cancel();
  }

 private:
  void arm() {
    timer_.expires_after(milliseconds(5));
    timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
      if (ec || !*alive) return;
      auto dirty = std::move(ctx_.ack_dirty);
      ctx_.ack_dirty.clear();
      for (auto& c : dirty) c->flush_acks();
      arm();
    });
  }
  Ctx& ctx_;
  net::steady_timer timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Builds a send of `payload` bytes from sender `from` to the single device of account `to`,
// with the send time (steady clock, ns) in the first 8 bytes of the content.
class SendMaker {
 public:
  SendMaker(Ctx& ctx, int payload) : ctx_(ctx), filler_(static_cast<std::size_t>(payload), '\0') {
    ctx.rng.fill(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(filler_.data()),
                                         filler_.size()));
  }
  // `stamp_ns`: the time the message's latency counts from (now_ns() by default; the latency
  // scenario gives the time its schedule made it due).
  void send(Conn& from, int to, std::uint32_t seq, std::int64_t stamp_ns = now_ns()) {
    const Account& dest = ctx_.accounts[static_cast<std::size_t>(to)];
    wire::Frame f;
    auto* s = f.mutable_request()->mutable_send();
    s->set_destination(dest.name);
    char cmid[16];
    const std::uint64_t nonce = ctx_.run_nonce;
    const auto who = static_cast<std::uint32_t>(from.account());
    std::memcpy(cmid, &nonce, 8);
    std::memcpy(cmid + 8, &who, 4);
    std::memcpy(cmid + 12, &seq, 4);
    s->set_client_message_id(std::string(cmid, 16));
    auto* m = s->add_messages();
    m->set_device_id(1);
    m->set_registration_id(dest.registration_id);
    m->set_type(1);
    std::string content = filler_;
    std::memcpy(content.data(), &stamp_ns, 8);
    m->set_content(std::move(content));
    ++from.inflight;
    from.send(f);
  }
  static std::int64_t sent_at(const wire::Envelope& e) {
    if (e.content().size() < 8) return 0;
    std::int64_t t;
    std::memcpy(&t, e.content().data(), 8);
    return t;
  }

 private:
  Ctx& ctx_;
  std::string filler_;
};

std::string status_summary(const std::map<std::uint32_t, std::uint64_t>& errors) {
  std::string out;
  for (const auto& [status, n] : errors) {
    out += (out.empty() ? "" : ", ") + std::to_string(n) + " x status " + std::to_string(status);
  }
  return out;
}

double percentile(std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(std::min<double>(
      static_cast<double>(sorted.size() - 1), std::floor(p * static_cast<double>(sorted.size()))));
  return static_cast<double>(sorted[i]);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---- Results --------------------------------------------------------------------------------------

struct Figure {
  std::string name, measured, goal, ejabberd;
  std::optional<bool> met;
};
std::vector<Figure> g_figures;

void add_figure(std::string name, std::string measured, std::string goal, std::string ejabberd,
                std::optional<bool> met) {
  g_figures.push_back({std::move(name), std::move(measured), std::move(goal), std::move(ejabberd), met});
}

// A figure of a scenario that --runs repeats: each run adds its value under the same name. One
// value reads as itself; several as their median, then "(median of N: lowest to highest)". The
// goal is judged on the median. A run that faulted (g_faults grew since it, or its phase, began),
// or that ended before it reached the figure, is left out and counted. `format` is a printf
// format for one double.
struct RunFigure {
  std::vector<double> values;
  int faulted = 0;
  std::size_t index = 0;  // in g_figures
  std::string scenario;   // the one that adds it
  const char* format = "%.0f";
  std::function<bool(double)> met;
};
std::map<std::string, RunFigure> g_run_figures;
std::size_t g_run_faults_at = 0;  // g_faults.size() when the current run (or phase) began
std::string g_run_scenario;       // the scenario now running

void render_run_figure(RunFigure& rf) {
  Figure& f = g_figures[rf.index];
  const std::string left_out =
      rf.faulted == 0 ? "" : "; " + std::to_string(rf.faulted) + " faulted run(s) left out";
  std::vector<double> v = rf.values;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  if (n == 0) {
    f.measured = "faulted";
    f.met = std::nullopt;
    return;
  }
  const double median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  f.measured = fmt(rf.format, median);
  if (n > 1) {
    f.measured += " (median of " + std::to_string(n) + ": " + fmt(rf.format, v.front()) + " to " +
                  fmt(rf.format, v.back()) + left_out + ")";
  } else if (rf.faulted != 0) {
    f.measured += " (" + left_out.substr(2) + ")";
  }
  if (rf.met) f.met = rf.met(median);
}

void add_run_figure(const std::string& name, double value, const char* format, std::string goal,
                    std::string ejabberd, std::function<bool(double)> met) {
  auto [it, fresh] = g_run_figures.try_emplace(name);
  RunFigure& rf = it->second;
  if (fresh) {
    rf.index = g_figures.size();
    rf.scenario = g_run_scenario;
    rf.format = format;
    rf.met = std::move(met);
    g_figures.push_back({name, "", std::move(goal), std::move(ejabberd), std::nullopt});
  }
  if (g_faults.size() > g_run_faults_at) {
    ++rf.faulted;
  } else {
    rf.values.push_back(value);
  }
  render_run_figure(rf);
}

// After `runs` runs of `scenario`: each of its figures that a run ended before reaching (a
// fault that returned early) counts that run as faulted.
void count_runs_that_ended_early(const std::string& scenario, int runs) {
  for (auto& [name, rf] : g_run_figures) {
    if (rf.scenario != scenario) continue;
    const int seen = static_cast<int>(rf.values.size()) + rf.faulted;
    if (seen < runs) {
      rf.faulted += runs - seen;
      render_run_figure(rf);
    }
  }
}

void print_client_cpu(const CpuMark& a, const CpuMark& b, const char* per, double n) {
  const double wall_us = secs(b.at - a.at) * 1e6;
  std::printf("  load generator CPU %.0f%% of its one core, server CPU %.0f%% of one core",
              100.0 * (b.self_us - a.self_us) / wall_us, 100.0 * (b.server_us - a.server_us) / wall_us);
  if (n > 0) std::printf("; load generator %.1f µs/%s", (b.self_us - a.self_us) / n, per);
  std::printf("\n");
  const double ncpu = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
  const double other = (b.machine_us - a.machine_us) - (b.server_us - a.server_us) - (b.self_us - a.self_us);
  std::printf("  machine %.0f%% busy (of %.0f CPUs); other processes used %.0f%% of one core%s\n",
              100.0 * (b.machine_us - a.machine_us) / (wall_us * ncpu), ncpu, 100.0 * std::max(0.0, other) / wall_us,
              other > 0.15 * wall_us ? "  <-- NOT A QUIET MACHINE: rates are understated" : "");
}

// Registers accounts [0, n) on connections that are kept (returned index-aligned).
OpenResult register_and_keep(Ctx& ctx, int n, std::shared_ptr<Hooks> hooks) {
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = i;
  auto r = open_many(ctx, ids, Conn::Auth::kRegister, std::move(hooks), ctx.opts.register_concurrency,
                     false, seconds(120));
  std::printf("  registered %d accounts in %.1f s (%.0f registrations/s, %d in flight)\n", r.ok,
              r.seconds, r.ok / std::max(r.seconds, 1e-9), ctx.opts.register_concurrency);
  print_open_problems("registration", r);
  return r;
}

// ---- (a) throughput --------------------------------------------------------------------------------

void scenario_throughput(const Options& o) {
  std::printf("\n== throughput: %d pairs, %d sends in flight per sender, %d-byte payload, acks every "
              "64 envelopes or 5 ms, %d s after 2 s warm-up\n",
              o.pairs, o.window, o.payload, o.seconds);
  auto server = Parleyd::start(o, "throughput");
  if (!server) return fault("throughput: parleyd did not start");
  Ctx ctx(o, *server);
  ctx.run_nonce = 1;
  const int P = o.pairs;
  make_accounts(ctx, 2 * P);
  auto work = net::make_work_guard(ctx.io);

  bool running = false, measuring = false;
  std::uint64_t delivered = 0, window_delivered = 0, sent_ok = 0, window_sent = 0, acked = 0;
  std::map<std::uint32_t, std::uint64_t> errors;
  std::vector<std::int64_t> lat;
  lat.reserve(1 << 20);
  SendMaker maker(ctx, o.payload);
  std::vector<std::uint32_t> seq(static_cast<std::size_t>(2 * P), 0);
  int closed_early = 0;

  auto hooks = std::make_shared<Hooks>();
  hooks->envelope = [&](Conn& c, wire::Envelope& e) {
    ++delivered;
    if (measuring) {
      ++window_delivered;
      if (lat.size() < (1u << 22)) lat.push_back(now_ns() - SendMaker::sent_at(e));
    }
    c.queue_ack(std::move(*e.mutable_server_id()));
  };
  hooks->response = [&](Conn& c, const wire::Response& r) {
    --c.inflight;
    if (r.status() == wire::kStatusOk) {
      ++sent_ok;
      if (measuring) ++window_sent;
    } else {
      ++errors[r.status()];
    }
    if (running && c.account() < P) {
      const auto a = static_cast<std::size_t>(c.account());
      maker.send(c, c.account() + P, ++seq[a]);
    }
  };
  hooks->ended = [&](Conn&, const Status&) { ++closed_early; };

  auto reg = register_and_keep(ctx, 2 * P, hooks);
  auto& conns = reg.conns;
  AckTimer acks(ctx);
  // Only pairs whose two connections are up take part.
  std::vector<int> senders;
  for (int i = 0; i < P; ++i) {
    if (conns[static_cast<std::size_t>(i)] && conns[static_cast<std::size_t>(i + P)]) senders.push_back(i);
  }
  running = true;
  for (int i : senders) {
    for (int w = 0; w < o.window; ++w) {
      maker.send(*conns[static_cast<std::size_t>(i)], i + P, ++seq[static_cast<std::size_t>(i)]);
    }
  }
  ctx.run_for(seconds(2));
  const auto s0 = server_metrics(*server);
  CpuMark m0 = cpu_mark(server->pid());
  measuring = true;
  ctx.run_for(seconds(o.seconds));
  measuring = false;
  CpuMark m1 = cpu_mark(server->pid());
  const auto s1 = server_metrics(*server);
  running = false;
  const double wall = secs(m1.at - m0.at);
  // Drain what is in flight (bounded), so that the server ends idle.
  ctx.run_until(
      [&] {
        for (int i : senders) {
          if (conns[static_cast<std::size_t>(i)]->inflight > 0) return false;
        }
        return delivered >= sent_ok;
      },
      seconds(20));
  ctx.run_for(milliseconds(50));
  acked = server_acked(*server);

  const double rate = static_cast<double>(window_delivered) / wall;
  const double cpu_per_msg = (m1.server_us - m0.server_us) / std::max<double>(1, static_cast<double>(window_delivered));
  std::sort(lat.begin(), lat.end());
  std::printf("throughput: %.0f messages/s delivered, server CPU %.1f µs/message (pairs=%zu, window=%d, "
              "payload=%d B, %.1f s)\n",
              rate, cpu_per_msg, senders.size(), o.window, o.payload, wall);
  std::printf("  sends acknowledged (durably queued): %.0f/s; delivered in window %" PRIu64
              "; latency under this load p50 %.2f ms, p99 %.2f ms\n",
              static_cast<double>(window_sent) / wall, window_delivered, percentile(lat, 0.50) / 1e6,
              percentile(lat, 0.99) / 1e6);
  print_client_cpu(m0, m1, "message", static_cast<double>(window_delivered));
  print_store_window(s0, s1, wall);
  std::printf("  totals: %" PRIu64 " sends ok, %" PRIu64 " delivered, %" PRIu64 " acked%s%s\n", sent_ok,
              delivered, acked, errors.empty() ? "" : "; refused: ", status_summary(errors).c_str());
  if (closed_early > 0)
    fault("throughput: " + std::to_string(closed_early) + " connections closed during the run");
  if (senders.empty() || window_delivered == 0) fault("throughput: nothing delivered");
  if (!errors.empty()) fault("throughput: sends refused: " + status_summary(errors));
  if (delivered != sent_ok) {
    fault("throughput: " + std::to_string(delivered) + " envelopes received for " +
          std::to_string(sent_ok) + " sends acknowledged");
  }
  add_run_figure("messages/s delivered (durable queueing)", rate, "%.0f", ">= 75,000",
                 "24,000 (no TLS, no durable queue)", [](double v) { return v >= 75000; });
  add_run_figure("server CPU per message", cpu_per_msg, "%.1f µs", "<= 15 µs", "60-105 µs",
                 [](double v) { return v <= 15; });
  acks.stop();
  close_all(ctx, conns);
}

// ---- (b) idle connections ------------------------------------------------------------------------

void scenario_idle(const Options& o) {
  std::vector<int> levels = o.connections;
  const int want = levels.back();
  std::printf("\n== idle: server RSS per idle authenticated connection at %s connections\n", [&] {
    std::string s;
    for (int l : levels) s += (s.empty() ? "" : ", ") + std::to_string(l);
    return s;
  }().c_str());
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const long room = static_cast<long>(rl.rlim_cur) - 64;  // fds for this process's own needs
  if (room < want) {
    std::printf("  RLIMIT_NOFILE is %llu: cannot hold %d connections in this process; capping at %ld\n",
                static_cast<unsigned long long>(rl.rlim_cur), want, room);
    for (auto& l : levels) l = static_cast<int>(std::min<long>(l, room));
  }
  const int max_n = levels.back();
  // jemalloc returns freed pages at once here: otherwise the baseline holds pages the
  // registrations freed, the logins reuse them, and the figure leaves them out (at 1,000
  // connections 1.9 KB a connection was printed for 6.7 KB held; docs/benchmarks.md).
  auto server = Parleyd::start(o, "idle", {"MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0"});
  if (!server) return fault("idle: parleyd did not start");
  Ctx ctx(o, *server);
  make_accounts(ctx, max_n);
  auto work = net::make_work_guard(ctx.io);

  // Accounts are registered on short-lived connections first, so that the baseline holds the
  // account cache and the database pages; the sample then sees only the connections.
  {
    std::vector<int> ids(static_cast<std::size_t>(max_n));
    for (int i = 0; i < max_n; ++i) ids[static_cast<std::size_t>(i)] = i;
    auto r = open_many(ctx, ids, Conn::Auth::kRegister, nullptr, o.register_concurrency, true,
                       seconds(300));
    std::printf("  registered %d accounts in %.1f s (%.0f/s, connection closed after each)\n", r.ok,
                r.seconds, r.ok / std::max(r.seconds, 1e-9));
    print_open_problems("registration", r);
  }
  ctx.run_for(seconds(2));
  const long base = process_status_kb(server->pid(), "VmRSS");
  const long self_base = process_status_kb(::getpid(), "VmRSS");
  std::printf("  baseline server RSS %.1f MB (after registering, all logged out)\n", base / 1024.0);

  int ended_early = 0;
  auto hooks = std::make_shared<Hooks>();
  hooks->ended = [&](Conn&, const Status&) { ++ended_early; };
  std::vector<std::shared_ptr<Conn>> held;
  int opened = 0;
  for (int level : levels) {
    std::vector<int> ids;
    for (int i = opened; i < level; ++i) ids.push_back(i);
    auto r = open_many(ctx, ids, Conn::Auth::kLogin, hooks, o.register_concurrency, false,
                       seconds(300));
    for (auto& c : r.conns) {
      if (c) held.push_back(c);
    }
    opened = level;
    print_open_problems("login", r);
    ctx.run_for(seconds(2));  // let the server settle (store callbacks, buffers)
    int live = 0;
    for (auto& c : held) live += c->ended() ? 0 : 1;
    const long rss = process_status_kb(server->pid(), "VmRSS");
    const long self_rss = process_status_kb(::getpid(), "VmRSS");
    if (base <= 0 || rss <= base) {
      // /proc could not be read: a fault. RSS that did not grow: too few connections to show
      // above the allocator's own ups and downs (or --parleyd is a wrapper whose RSS this reads).
      const std::string what = "idle: server RSS not measured at " + std::to_string(live) +
                               " connections (RSS " + std::to_string(base) + " kB -> " +
                               std::to_string(rss) + " kB)";
      if (base <= 0 || rss <= 0) {
        fault(what);
      } else {
        std::printf("%s\n", what.c_str());
      }
      add_figure("server RSS per idle connection @" + std::to_string(live), "not measured",
                 "<= 8 KB", "44.6 KB", std::nullopt);
      if (live < level) break;
      continue;
    }
    const double per = static_cast<double>(rss - base) / std::max(1, live);
    std::printf("idle: %.2f KB server RSS per idle authenticated connection at %d connections (RSS "
                "%.1f MB -> %.1f MB; logins took %.1f s)\n",
                per, live, base / 1024.0, rss / 1024.0, r.seconds);
    std::printf("  (load generator holds the client ends: %.1f KB RSS per connection here)\n",
                static_cast<double>(self_rss - self_base) / std::max(1, live));
    add_figure("server RSS per idle connection @" + std::to_string(live), fmt("%.2f KB", per),
               "<= 8 KB", "44.6 KB", per <= 8.0);
    if (live < level) {
      fault("idle: only " + std::to_string(live) + " of " + std::to_string(level) +
            " connections are up");
      break;
    }
  }
  if (ended_early > 0) {
    fault("idle: the server closed " + std::to_string(ended_early) + " idle connections");
  }
  if (o.hold > 0) {
    std::printf("  holding the connections %d s (server pid %d)\n", o.hold, server->pid());
    std::fflush(stdout);
    ctx.run_for(seconds(o.hold));
  }
  close_all(ctx, held);
}

// ---- (c) latency at a fixed rate -------------------------------------------------------------------

void scenario_latency(const Options& o) {
  std::printf("\n== latency: %.0f messages/s in total across %d pairs (bursts every 1 ms), %d-byte "
              "payload, %d s after 1 s warm-up\n",
              o.rate, o.pairs, o.payload, o.seconds);
  auto server = Parleyd::start(o, "latency");
  if (!server) return fault("latency: parleyd did not start");
  Ctx ctx(o, *server);
  ctx.run_nonce = 3;
  const int P = o.pairs;
  make_accounts(ctx, 2 * P);
  auto work = net::make_work_guard(ctx.io);

  std::int64_t window_start_ns = INT64_MAX, window_end_ns = INT64_MAX;
  std::vector<std::int64_t> lat;
  lat.reserve(static_cast<std::size_t>(o.rate * (o.seconds + 2)));
  std::uint64_t sent = 0, made = 0, sent_ok = 0, refused = 0, delivered = 0, skipped = 0;
  std::map<std::uint32_t, std::uint64_t> errors;
  SendMaker maker(ctx, o.payload);
  std::vector<std::uint32_t> seq(static_cast<std::size_t>(2 * P), 0);

  auto hooks = std::make_shared<Hooks>();
  hooks->envelope = [&](Conn& c, wire::Envelope& e) {
    ++delivered;
    const std::int64_t t = SendMaker::sent_at(e);
    if (t >= window_start_ns && t < window_end_ns) lat.push_back(now_ns() - t);
    c.queue_ack(std::move(*e.mutable_server_id()));
  };
  hooks->response = [&](Conn& c, const wire::Response& r) {
    --c.inflight;
    if (r.status() == wire::kStatusOk) {
      ++sent_ok;
    } else {
      ++refused;
      ++errors[r.status()];
    }
  };
  auto reg = register_and_keep(ctx, 2 * P, hooks);
  auto& conns = reg.conns;
  std::vector<int> senders;
  for (int i = 0; i < P; ++i) {
    if (conns[static_cast<std::size_t>(i)] && conns[static_cast<std::size_t>(i + P)]) senders.push_back(i);
  }
  if (senders.empty()) return fault("latency: no pair of connections came up");
  AckTimer acks(ctx);

  // The pacer: every 1 ms, send whatever the schedule says is due, round robin over senders.
  // Message k is due at t0 + k/rate, and its latency counts from then: a send this thread
  // makes late (busy reading, or waiting for a core) is counted late, not left out
  // (coordinated omission). How late the sends were made is printed beside it.
  net::steady_timer pacer(ctx.io);
  const auto t0 = Clock::now();
  const std::int64_t t0_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count();
  std::vector<std::int64_t> late;  // sends due in the window: made how long after due
  late.reserve(lat.capacity());
  std::size_t rr = 0;
  bool pacing = true;
  std::function<void()> tick = [&] {
    const double due = o.rate * secs(Clock::now() - t0);
    std::size_t tried = 0;
    while (static_cast<double>(sent) < due && tried < senders.size()) {
      const int s = senders[rr++ % senders.size()];
      Conn& c = *conns[static_cast<std::size_t>(s)];
      if (c.inflight >= 60) {  // the server allows 64 requests in flight per connection
        ++tried;
        continue;
      }
      tried = 0;
      const auto due_ns =
          t0_ns + static_cast<std::int64_t>(static_cast<double>(sent) * 1e9 / o.rate);
      if (due_ns >= window_start_ns && due_ns < window_end_ns && late.size() < lat.capacity()) {
        late.push_back(now_ns() - due_ns);
      }
      maker.send(c, s + P, ++seq[static_cast<std::size_t>(s)], due_ns);
      ++sent;
      ++made;
    }
    if (static_cast<double>(sent) + 1 < due) {
      skipped += static_cast<std::uint64_t>(due - static_cast<double>(sent));
      sent = static_cast<std::uint64_t>(due);  // do not make up for it in a burst later
    }
    if (!pacing) return;
    pacer.expires_at(pacer.expiry() + milliseconds(1));
    pacer.async_wait([&](boost::system::error_code ec) {
      if (!ec) tick();
    });
  };
  pacer.expires_at(t0 + milliseconds(1));
  pacer.async_wait([&](boost::system::error_code ec) {
    if (!ec) tick();
  });
  ctx.run_for(seconds(1));
  const auto s0 = ctx.server_metrics_running();
  CpuMark m0 = cpu_mark(server->pid());
  const std::uint64_t made0 = made;
  window_start_ns = now_ns();
  ctx.run_for(seconds(o.seconds));
  window_end_ns = now_ns();
  CpuMark m1 = cpu_mark(server->pid());
  const std::uint64_t made1 = made;
  const auto s1 = ctx.server_metrics_running();
  pacing = false;
  pacer.cancel();
  // Let the window's last messages arrive (bounded).
  ctx.run_until([&] { return delivered >= sent_ok && sent_ok + skipped + refused >= sent; },
                seconds(10));
  ctx.run_for(milliseconds(20));
  const double wall = secs(m1.at - m0.at);
  std::sort(lat.begin(), lat.end());
  const double p50 = percentile(lat, 0.50) / 1e6, p90 = percentile(lat, 0.90) / 1e6,
               p99 = percentile(lat, 0.99) / 1e6,
               mx = lat.empty() ? 0 : static_cast<double>(lat.back()) / 1e6;
  std::printf("latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms at %.0f messages/s "
              "(pairs=%zu, %.1f s, %zu samples)\n",
              p50, p90, p99, mx, static_cast<double>(made1 - made0) / wall, senders.size(), wall,
              lat.size());
  std::printf(
      "  from the time the schedule made each send due to its envelope's arrival, both "
      "ends in this process (the load generator's own delays are included)\n");
  std::sort(late.begin(), late.end());
  std::printf(
      "  sends made after they were due by: p50 %.2f ms, p99 %.2f ms, max %.2f ms (the "
      "load generator's share of the latency above)\n",
      percentile(late, 0.50) / 1e6, percentile(late, 0.99) / 1e6,
      late.empty() ? 0 : static_cast<double>(late.back()) / 1e6);
  print_client_cpu(m0, m1, "message", static_cast<double>(lat.size()));
  print_store_window(s0, s1, wall);
  std::printf("  server CPU %.1f µs/message at this rate\n",
              (m1.server_us - m0.server_us) / std::max<double>(1, static_cast<double>(lat.size())));
  if (skipped > 0) {
    std::printf("  %" PRIu64 " sends not made on schedule (every sender at its in-flight cap of 60: the "
                "server is not keeping up with %.0f/s)\n",
                skipped, o.rate);
  }
  if (!errors.empty()) fault("latency: sends refused: " + status_summary(errors));
  if (lat.empty()) fault("latency: nothing delivered in the window");
  if (delivered != sent_ok) {
    fault("latency: " + std::to_string(delivered) + " envelopes received for " +
          std::to_string(sent_ok) + " sends acknowledged");
  }
  std::function<bool(double)> met;
  if (o.rate >= 10000) met = [](double v) { return v <= 5.0; };
  add_run_figure("p99 delivery latency @" + fmt("%.0f", o.rate) + "/s", p99, "%.2f ms", "<= 5 ms",
                 "142-709 ms @5,000/s", met);
  acks.stop();
  close_all(ctx, conns);
}

// ---- (d) offline enqueue and drain ---------------------------------------------------------------

void scenario_offline(const Options& o) {
  const int P = o.pairs;
  const int M = o.offline_messages;
  std::printf("\n== offline: %d messages from %d senders to %d logged-out devices (%d sends in flight "
              "per sender), then the devices log in and drain with acks\n",
              M, P, P, o.window);
  auto server = Parleyd::start(o, "offline");
  if (!server) return fault("offline: parleyd did not start");
  Ctx ctx(o, *server);
  ctx.run_nonce = 4;
  make_accounts(ctx, 2 * P);
  auto work = net::make_work_guard(ctx.io);

  std::uint64_t sent = 0, sent_ok = 0, delivered = 0, acked = 0, answered = 0;
  std::map<std::uint32_t, std::uint64_t> errors;
  SendMaker maker(ctx, o.payload);
  std::vector<std::uint32_t> seq(static_cast<std::size_t>(2 * P), 0);
  Clock::time_point last_response;
  // During the drain two senders stay online and one sends to the other every millisecond: how
  // long does a live message take while every other device drains (docs/storage.md, "Writes
  // before reads")?
  bool probing = false;
  const Conn* probe_from = nullptr;  // its responses are the probe's, not the enqueue's
  std::vector<std::int64_t> probe_lat;
  std::uint64_t probe_sent = 0, probe_skipped = 0;
  auto hooks = std::make_shared<Hooks>();
  hooks->envelope = [&](Conn& c, wire::Envelope& e) {
    if (c.account() < P) {
      probe_lat.push_back(now_ns() - SendMaker::sent_at(e));
    } else {
      ++delivered;
    }
    c.queue_ack(std::move(*e.mutable_server_id()));
  };
  hooks->response = [&](Conn& c, const wire::Response& r) {
    --c.inflight;
    if (&c == probe_from) return;
    ++answered;
    last_response = Clock::now();
    if (r.status() == wire::kStatusOk) {
      ++sent_ok;
    } else {
      ++errors[r.status()];
    }
    if (c.account() < P && sent < static_cast<std::uint64_t>(M)) {
      ++sent;
      maker.send(c, c.account() + P, ++seq[static_cast<std::size_t>(c.account())]);
    }
  };
  auto reg = register_and_keep(ctx, 2 * P, hooks);
  auto& conns = reg.conns;
  // Receivers log out.
  std::vector<std::shared_ptr<Conn>> receivers(conns.begin() + P, conns.end());
  std::vector<int> senders, receiver_ids;
  for (int i = 0; i < P; ++i) {
    if (conns[static_cast<std::size_t>(i)] && conns[static_cast<std::size_t>(i + P)]) {
      senders.push_back(i);
      receiver_ids.push_back(i + P);
    }
  }
  close_all(ctx, receivers);
  ctx.run_for(milliseconds(500));
  if (senders.empty()) return fault("offline: no pair of connections came up");

  // Enqueue.
  const auto s0 = server_metrics(*server);
  CpuMark m0 = cpu_mark(server->pid());
  for (int w = 0; w < o.window; ++w) {
    for (int s : senders) {
      if (sent >= static_cast<std::uint64_t>(M)) break;
      ++sent;
      maker.send(*conns[static_cast<std::size_t>(s)], s + P, ++seq[static_cast<std::size_t>(s)]);
    }
  }
  const bool all = ctx.run_until([&] { return answered >= sent && sent >= static_cast<std::uint64_t>(M); },
                                 seconds(std::max(120, 10 * o.seconds)));
  CpuMark m1 = cpu_mark(server->pid());
  const auto s1 = server_metrics(*server);
  const double enqueue_s = secs(last_response - m0.at);
  const double enqueue_rate = static_cast<double>(sent_ok) / enqueue_s;
  std::printf("offline: %.0f enqueues/s (%" PRIu64 " messages durably queued for %zu offline devices in "
              "%.2f s), server CPU %.1f µs/enqueue\n",
              enqueue_rate, sent_ok, senders.size(), enqueue_s,
              (m1.server_us - m0.server_us) / std::max<double>(1, static_cast<double>(sent_ok)));
  print_client_cpu(m0, m1, "enqueue", static_cast<double>(sent_ok));
  print_store_window(s0, s1, secs(m1.at - m0.at));
  if (!all) {
    fault("offline: timed out with " + std::to_string(answered) + " of " + std::to_string(sent) +
          " sends answered");
  }
  if (!errors.empty()) fault("offline: sends refused: " + status_summary(errors));
  add_run_figure("offline enqueues/s", enqueue_rate, "%.0f", ">= 50,000", "600-2,400",
                 [](double median) { return median >= 50000; });
  std::vector<std::shared_ptr<Conn>> prober;
  if (senders.size() >= 2) {
    for (int i : {senders[0], senders[1]}) prober.push_back(conns[static_cast<std::size_t>(i)]);
    for (int i : {senders[0], senders[1]}) conns[static_cast<std::size_t>(i)].reset();
    probe_from = prober[0].get();
  }
  close_all(ctx, conns);
  ctx.run_for(milliseconds(500));
  net::steady_timer probe_timer(ctx.io);
  std::function<void()> probe = [&] {
    if (!probing || prober.size() != 2) return;
    if (prober[0]->inflight >= 60) {  // the server allows 64 requests in flight per connection
      ++probe_skipped;
    } else {
      maker.send(*prober[0], prober[1]->account(),
                 ++seq[static_cast<std::size_t>(prober[0]->account())]);
      ++probe_sent;
    }
    probe_timer.expires_after(milliseconds(1));
    probe_timer.async_wait([&](boost::system::error_code ec) {
      if (!ec) probe();
    });
  };

  // Drain: log in, receive everything, acknowledge everything.
  AckTimer acks(ctx);
  const std::uint64_t acked0 = server_acked(*server);
  const auto t0m = server_metrics(*server);
  CpuMark d0 = cpu_mark(server->pid());
  probing = true;
  probe();
  auto logins = open_many(ctx, receiver_ids, Conn::Auth::kLogin, hooks, o.register_concurrency, false,
                          seconds(std::max(120, 10 * o.seconds)));
  // QueueEmpty (what open_many waits for) comes once a device's stored queue is pushed; the last
  // acks may still be in flight. Once all is received, the server's counter says when its
  // deletes are done (read every 5 ms: each read is a blocking HTTP request).
  ctx.run_until([&] { return delivered >= sent_ok; }, seconds(30));
  const auto all_received = Clock::now();
  probing = false;
  probe_timer.cancel();
  auto next_read = Clock::now();
  ctx.run_until(
      [&] {
        if (Clock::now() < next_read) return false;
        next_read = Clock::now() + milliseconds(5);
        // The server's count includes the probe's envelopes (each received one is acknowledged).
        acked = server_acked(*server) - acked0;
        acked -= std::min<std::uint64_t>(acked, probe_lat.size());
        return acked >= sent_ok;
      },
      seconds(30));
  CpuMark d1 = cpu_mark(server->pid());
  const auto t1m = server_metrics(*server);
  // The probe's last messages (not timed: the drain is over).
  ctx.run_until([&] { return probe_lat.size() >= probe_sent; }, seconds(10));
  const double drain_s = secs(d1.at - d0.at);
  const double drain_rate = static_cast<double>(acked) / drain_s;
  std::printf("offline: drain %.0f envelopes/s (%d devices log in, %" PRIu64 " envelopes received and "
              "%" PRIu64 " acknowledged in %.2f s), server CPU %.1f µs/envelope\n",
              drain_rate, logins.ok, delivered, acked, drain_s,
              (d1.server_us - d0.server_us) / std::max<double>(1, static_cast<double>(acked)));
  std::printf("  all received after %.2f s, all deleted by the server after %.2f s\n",
              secs(all_received - d0.at), drain_s);
  print_client_cpu(d0, d1, "envelope", static_cast<double>(acked));
  print_store_window(t0m, t1m, drain_s);
  if (!probe_lat.empty()) {
    std::sort(probe_lat.begin(), probe_lat.end());
    std::printf(
        "  %zu live messages sent during the drain (one a millisecond between two online "
        "devices; %zu more skipped with 60 in flight), %zu delivered: p50 %.2f ms, p99 %.2f "
        "ms, max %.2f ms from send to delivery\n",
        static_cast<std::size_t>(probe_sent), static_cast<std::size_t>(probe_skipped),
        probe_lat.size(), percentile(probe_lat, 0.50) / 1e6, percentile(probe_lat, 0.99) / 1e6,
        static_cast<double>(probe_lat.back()) / 1e6);
  }
  print_open_problems("login", logins);
  if (delivered != sent_ok) {
    fault("offline: " + std::to_string(delivered) + " envelopes received for " +
          std::to_string(sent_ok) + " messages stored");
  }
  if (acked != sent_ok) {
    fault("offline: the server deleted " + std::to_string(acked) + " of " +
          std::to_string(sent_ok) + " envelopes within 30 s of receiving them all");
  }
  add_run_figure("offline drain envelopes/s", drain_rate, "%.0f", "-", "-", nullptr);
  acks.stop();
  close_all(ctx, logins.conns);
  close_all(ctx, prober);
}

// ---- (e) handshakes --------------------------------------------------------------------------------

// One phase of the handshake scenario: full handshakes (resume_tls off) or resumed ones (the
// client offers the ticket of an earlier connection to the same server).
// `kind` names the phase in the report. Without `warm_up` the window starts with the first
// connection (right after a restart, say), so its handshakes count too.
void handshake_phase(const Options& o, Parleyd& server, bool resume, const char* kind,
                     bool warm_up = true) {
  g_run_faults_at = g_faults.size();  // a fault of an earlier phase does not void this one's
  const int K = o.handshake_concurrency;
  Ctx ctx(o, server);
  ctx.client.resume_tls = resume;
  auto work = net::make_work_guard(ctx.io);
  int opening = 0, closing = 0;
  std::uint64_t done = 0, window_done = 0, window_resumed = 0, failed = 0;
  std::map<std::string, int> errors;
  bool running = true, measuring = false;
  auto hooks = std::make_shared<Hooks>();
  hooks->ended = [&](Conn&, const Status&) { --closing; };
  std::function<void()> launch = [&] {
    // Bound the sockets still closing too (each holds a file descriptor).
    while (running && opening < K && closing < 2000) {
      ++opening;
      auto c = std::make_shared<Conn>(ctx, -1, Conn::Auth::kNone, hooks, [&](Conn& conn, const Status& s) {
        --opening;
        if (s.is_ok()) {
          ++done;
          if (measuring) {
            ++window_done;
            if (conn.tls_resumed()) ++window_resumed;
          }
          ++closing;
          conn.close();
        } else {
          ++failed;
          std::string key = s.to_string();
          if (key.size() > 100) key.resize(100);
          ++errors[key];
        }
        launch();
      });
      c->start();
    }
  };
  // Connections that stalled because too many were closing are restarted by this timer.
  net::steady_timer kick(ctx.io);
  std::function<void()> rearm = [&] {
    kick.expires_after(milliseconds(5));
    kick.async_wait([&](boost::system::error_code ec) {
      if (ec || !running) return;
      launch();
      rearm();
    });
  };
  measuring = !warm_up;
  CpuMark m0 = cpu_mark(server.pid());
  launch();
  rearm();
  if (warm_up) {
    ctx.run_for(seconds(1));
    m0 = cpu_mark(server.pid());
    measuring = true;
  }
  ctx.run_for(seconds(o.seconds));
  measuring = false;
  CpuMark m1 = cpu_mark(server.pid());
  running = false;
  kick.cancel();
  ctx.run_until([&] { return opening == 0 && closing <= 0; }, seconds(20));
  const double wall = secs(m1.at - m0.at);
  const double rate = static_cast<double>(window_done) / wall;
  std::printf(
      "handshake (%s): %.0f TLS+WebSocket handshakes/s (concurrency %d, %.1f s, %" PRIu64
      " of %" PRIu64 " resumed), server CPU %.0f µs/handshake\n",
      kind, rate, K, wall, window_resumed, window_done,
      (m1.server_us - m0.server_us) / std::max<double>(1, static_cast<double>(window_done)));
  print_client_cpu(m0, m1, "handshake", static_cast<double>(window_done));
  if (failed > 0) {
    fault(std::string("handshake (") + kind + "): " + std::to_string(failed) + " failed");
    for (const auto& [why, n] : errors) std::printf("    %d x %s\n", n, why.c_str());
  }
  // Every handshake of the resumed phase must have resumed, and none of the full phase.
  const bool as_asked = window_resumed == (resume ? window_done : 0);
  if (!as_asked) {
    fault(std::string("handshake (") + kind + "): " + std::to_string(window_resumed) + " of " +
          std::to_string(window_done) + " resumed");
  }
  if (window_done == 0) fault(std::string("handshake (") + kind + "): none completed");
  // A phase that did not resume as asked faulted above, and its figure for this run is left out.
  add_run_figure(std::string("TLS handshakes/s (") + kind + ")", rate, "%.0f", ">= 4,000", "-",
                 [](double median) { return median >= 4000; });
  launch = nullptr;
  rearm = nullptr;
}

void scenario_handshake(const Options& o) {
  std::printf(
      "\n== handshake: TLS + WebSocket connections, %d opening at once, each closed after the "
      "Challenge push, %d s full handshakes, %d s resumed ones, and %d s resumed ones after "
      "parleyd restarted\n",
      o.handshake_concurrency, o.seconds, o.seconds, o.seconds);
  auto server = Parleyd::start(o, "handshake");
  if (!server) return fault("handshake: parleyd did not start");
  handshake_phase(o, *server, false, "full");
  handshake_phase(o, *server, true, "resumed");
  // parleyd keeps its ticket keys in its data directory: the clients' tickets from before a
  // restart (an upgrade, say) still resume after it.
  if (!server->restart()) {
    return fault("handshake (resumed after a restart): parleyd did not come back (log: " +
                 server->log() + ")");
  }
  // No warm-up: the first connections after the restart must resume too.
  handshake_phase(o, *server, true, "resumed after a restart", /*warm_up=*/false);
}

void print_summary(const Options& o) {
  std::printf("\n== summary (load generator on 1 thread, same machine, %ld CPUs; parleyd on the rest)\n",
              ::sysconf(_SC_NPROCESSORS_ONLN));
  std::size_t w0 = 6, w1 = 8, w2 = 4, w3 = 8;
  for (const auto& f : g_figures) {
    w0 = std::max(w0, f.name.size());
    w1 = std::max(w1, f.measured.size());
    w2 = std::max(w2, f.goal.size());
    w3 = std::max(w3, f.ejabberd.size());
  }
  auto row = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d,
                 const std::string& e) {
    std::printf("%-*s  %*s  %-*s  %-4s  %s\n", static_cast<int>(w0), a.c_str(), static_cast<int>(w1),
                b.c_str(), static_cast<int>(w2), c.c_str(), e.c_str(), d.c_str());
  };
  row("figure", "measured", "goal", "ejabberd 23.01", "met");
  for (const auto& f : g_figures) {
    row(f.name, f.measured, f.goal, f.ejabberd, f.met ? (*f.met ? "yes" : "NO") : "-");
  }
  (void)o;
}

}  // namespace
}  // namespace parley::load

int main(int argc, char** argv) {
  using namespace parley::load;  // NOLINT
  auto parsed = parse_args(argc, argv);
  if (!parsed) {
    usage();
    return 2;
  }
  Options o = *parsed;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  ::signal(SIGPIPE, SIG_IGN);
  // Raise the open-file limit to the hard limit (parleyd, started from here, inherits it).
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) std::printf("could not raise RLIMIT_NOFILE\n");
  }
  ::getrlimit(RLIMIT_NOFILE, &rl);
  struct statfs sf{};
  const std::string base = o.dir.empty() ? std::filesystem::temp_directory_path().string() : o.dir;
  const bool tmpfs = ::statfs(base.c_str(), &sf) == 0 && sf.f_type == 0x01021994;
  {
    std::ifstream la("/proc/loadavg");
    double l1 = 0;
    la >> l1;
    if (l1 > 0.5) {
      std::printf("parley-load: WARNING: load average %.2f before start: other processes are busy, "
                  "figures will be low\n",
                  l1);
    }
  }
  std::printf("parley-load: parleyd %s, data under %s%s; RLIMIT_NOFILE %llu; %ld CPUs; the load "
              "generator runs on one thread (one io_context), parleyd gets the other core(s)\n",
              o.parleyd.c_str(), base.c_str(), tmpfs ? " (tmpfs: NOT durable)" : "",
              static_cast<unsigned long long>(rl.rlim_cur), ::sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("parley-load: acknowledgements %s\n",
              o.oneway_acks ? "one way (Frame.ack, no response; a server before wire_version 2 "
                              "gets AckRequests)"
                            : "as AckRequests (each answered)");
  const bool all = o.scenario == "all";
  auto repeated = [&](const char* name, void (*scenario)(const Options&)) {
    if (!all && o.scenario != name) return;
    g_run_scenario = name;
    for (int r = 1; r <= o.runs; ++r) {
      if (o.runs > 1) std::printf("\n-- %s, run %d of %d", name, r, o.runs);
      g_run_faults_at = g_faults.size();
      scenario(o);
    }
    count_runs_that_ended_early(name, o.runs);
  };
  repeated("throughput", scenario_throughput);
  repeated("latency", scenario_latency);
  repeated("offline", scenario_offline);
  repeated("handshake", scenario_handshake);
  if (all || o.scenario == "idle") scenario_idle(o);
  print_summary(o);
  if (g_faults.empty()) return 0;
  std::printf("\n== %zu faults: the figures above do not stand\n", g_faults.size());
  for (const auto& f : g_faults) std::printf("  %s\n", f.c_str());
  return 1;
}
