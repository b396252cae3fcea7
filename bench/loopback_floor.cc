// parley-bench-loopback: what the kernel alone charges for moving small messages over loopback
// TCP on this machine, as a floor under parleyd's CPU per message.
//
// One thread echoes (an epoll loop: recv what is there, send it back); another thread keeps
// `window` messages of `size` bytes in flight on each of `connections` connections and counts
// the echoes. No TLS, no WebSocket, no parsing: a message costs the echo thread one frame in and
// one frame out, plus its share of the epoll_wait calls. parleyd handles four frames per
// delivered message (the send, its response, the push, the acknowledgement), so its kernel
// floor is about twice the echo's figure when its frames gather as the echo's do.
//
// What a message costs depends on how many share a system call, which the output reports:
// - `--gather 0` (the default): the sender sends each message with a send() of its own, so the
//   echo's recv gathers what came in meanwhile but every message is still a segment of its own.
//   With window 1 every frame is a system call of its own on both sides, as in parleyd at
//   parley-load's 10,000 messages/s across 500 pairs.
// - `--gather 1`: the sender sends all the messages an echo freed with one send(), so with a
//   window above 1 both sides move many messages per system call and per segment.
//
// Usage: parley-bench-loopback [--connections N] [--window W] [--size BYTES] [--seconds S]
//                              [--gather 0|1]
// Prints messages/s, the CPU µs per message of the echo thread and of the sending thread
// (CLOCK_THREAD_CPUTIME_ID), and the messages per recv and per send of each. Only 127.0.0.1;
// every loop is bounded by the deadline.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int connections = 500;
  int window = 1;
  int size = 300;
  int seconds = 5;
  bool gather = false;
};

// System calls that moved data, counted over the measured interval.
struct Calls {
  std::uint64_t recvs = 0;
  std::uint64_t sends = 0;
};

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "parley-bench-loopback: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void no_delay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const std::string value = argv[i + 1];
    if (a == "--gather") {
      if (value != "0" && value != "1") return false;
      o.gather = value == "1";
      continue;
    }
    const int v = std::atoi(value.c_str());
    if (v <= 0) return false;
    if (a == "--connections") {
      o.connections = v;
    } else if (a == "--window") {
      o.window = v;
    } else if (a == "--size") {
      o.size = v;
    } else if (a == "--seconds") {
      o.seconds = v;
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && o.connections <= 9000 && o.size <= 65536 && o.window <= 1024;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: parley-bench-loopback [--connections N<=9000] [--window W<=1024] "
                 "[--size BYTES<=65536] [--seconds S] [--gather 0|1]\n");
    return 2;
  }
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(lfd, 4096) != 0) die("listen");
  if (::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");

  std::vector<int> clients;
  std::vector<int> accepted;
  for (int i = 0; i < o.connections; ++i) {
    const int c = ::socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0) die("socket");
    if (::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("connect");
    const int s = ::accept(lfd, nullptr, nullptr);
    if (s < 0) die("accept");
    for (int fd : {c, s}) {
      no_delay(fd);
      ::fcntl(fd, F_SETFL, O_NONBLOCK);
    }
    clients.push_back(c);
    accepted.push_back(s);
  }
  ::close(lfd);

  const auto deadline = Clock::now() + std::chrono::seconds(o.seconds + 1);
  const auto measure_from = Clock::now() + std::chrono::seconds(1);  // after a warm-up second
  // The sender's measured interval, which the echo thread follows (to within one of its
  // epoll_wait calls): 0 warm-up, 1 measuring, 2 done.
  std::atomic<int> phase{0};
  double echo_cpu = 0;
  Calls echo_calls;

  std::thread echo([&] {
    const int ep = ::epoll_create1(0);
    for (int fd : accepted) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    std::vector<char> buf(1 << 16);
    std::vector<epoll_event> events(512);
    bool measuring = false;
    double cpu0 = 0;
    for (;;) {
      const int now = phase.load(std::memory_order_acquire);
      if (now == 2) break;
      if (!measuring && now == 1) {
        measuring = true;
        cpu0 = thread_cpu_seconds();
      }
      const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 10);
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<std::size_t>(i)].data.fd;
        const ssize_t got = ::recv(fd, buf.data(), buf.size(), 0);
        if (measuring) ++echo_calls.recvs;
        if (got <= 0) continue;
        // The peer reads continuously and its buffers are far larger than a window, so the
        // echo is written whole (a short write would only end the run's count early).
        if (measuring) ++echo_calls.sends;
        if (::send(fd, buf.data(), static_cast<std::size_t>(got), MSG_NOSIGNAL) < 0) continue;
      }
    }
    echo_cpu = thread_cpu_seconds() - cpu0;
    ::close(ep);
  });

  // The sender: `window` messages in flight per connection; an echo's bytes free its slots.
  const int ep = ::epoll_create1(0);
  for (std::size_t i = 0; i < clients.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, clients[i], &ev);
  }
  const std::string message(static_cast<std::size_t>(o.size), 'm');
  const std::string burst = [&] {
    std::string b;
    for (int i = 0; i < o.window; ++i) b += message;
    return b;
  }();
  for (int fd : clients) {
    if (::send(fd, burst.data(), burst.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(burst.size())) {
      die("send");
    }
  }
  std::vector<std::size_t> pending(clients.size(), 0);  // echoed bytes short of a whole message
  std::vector<char> buf(1 << 16);
  std::vector<epoll_event> events(512);
  std::uint64_t messages = 0;
  std::uint64_t short_sends = 0;  // a full socket buffer: the connection's window shrinks
  Calls send_calls;
  bool measuring = false;
  double cpu0 = 0;
  Clock::time_point t0;
  while (Clock::now() < deadline) {
    if (!measuring && Clock::now() >= measure_from) {
      measuring = true;
      messages = 0;
      send_calls = {};
      cpu0 = thread_cpu_seconds();
      t0 = Clock::now();
      phase.store(1, std::memory_order_release);
    }
    const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      const std::size_t c = events[static_cast<std::size_t>(i)].data.u64;
      const ssize_t got = ::recv(clients[c], buf.data(), buf.size(), 0);
      ++send_calls.recvs;
      if (got <= 0) continue;
      pending[c] += static_cast<std::size_t>(got);
      const std::size_t whole = pending[c] / message.size();
      pending[c] %= message.size();
      messages += whole;
      // The burst holds a whole window, and no more than a window is ever echoed back.
      const std::size_t per_send = o.gather ? whole : 1;
      for (std::size_t k = 0; k < whole; k += per_send) {
        const std::size_t bytes = per_send * message.size();
        const ssize_t sent = ::send(clients[c], burst.data(), bytes, MSG_NOSIGNAL);
        ++send_calls.sends;
        if (sent != static_cast<ssize_t>(bytes)) ++short_sends;
      }
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  const double send_cpu = thread_cpu_seconds() - cpu0;
  phase.store(2, std::memory_order_release);
  echo.join();
  const double m = static_cast<double>(messages);
  if (short_sends > 0) {
    std::fprintf(stderr, "parley-bench-loopback: %llu sends were short; the windows shrank\n",
                 static_cast<unsigned long long>(short_sends));
  }
  auto per = [m](std::uint64_t calls) {
    return m / std::max<double>(1, static_cast<double>(calls));
  };
  std::printf(
      "loopback: %d connections, window %d, %d-byte messages, gather %d, %.1f s: %.0f "
      "messages/s; echo thread %.2f µs/message (%.0f%% of a core), sending thread %.2f "
      "µs/message; messages per call: echo recv %.1f send %.1f, sender recv %.1f send %.1f\n",
      o.connections, o.window, o.size, o.gather ? 1 : 0, elapsed, m / elapsed, echo_cpu * 1e6 / m,
      echo_cpu * 100 / elapsed, send_cpu * 1e6 / m, per(echo_calls.recvs), per(echo_calls.sends),
      per(send_calls.recvs), per(send_calls.sends));
  return 0;
}
