#include "tests/client/socks_forwarder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace parley::testing {
namespace {

constexpr int kPollMs = 50;
constexpr int kHandshakeMs = 10000;

// Reads exactly n bytes within kHandshakeMs; false on EOF, error or timeout.
bool read_exact(int fd, std::uint8_t* out, std::size_t n) {
  std::size_t got = 0;
  int waited = 0;
  while (got < n) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, kPollMs);
    if (r < 0) return false;
    if (r == 0) {
      waited += kPollMs;
      if (waited >= kHandshakeMs) return false;
      continue;
    }
    const ssize_t k = ::read(fd, out + got, n - got);
    if (k <= 0) return false;
    got += static_cast<std::size_t>(k);
  }
  return true;
}

bool write_all(int fd, const std::uint8_t* data, std::size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, data, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    data += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The server side of a SOCKS5 handshake up to the CONNECT request; false on anything odd.
bool socks_handshake(int fd) {
  std::uint8_t head[2];
  if (!read_exact(fd, head, 2) || head[0] != 5 || head[1] == 0) return false;
  std::uint8_t methods[255];
  if (!read_exact(fd, methods, head[1])) return false;
  bool none = false, userpass = false;
  for (int i = 0; i < head[1]; ++i) {
    none = none || methods[i] == 0;
    userpass = userpass || methods[i] == 2;
  }
  const std::uint8_t choice = userpass ? 2 : none ? 0 : 0xff;
  const std::uint8_t reply[2] = {5, choice};
  if (!write_all(fd, reply, 2) || choice == 0xff) return false;
  if (choice == 2) {
    std::uint8_t v[2];
    if (!read_exact(fd, v, 2) || v[0] != 1) return false;
    std::uint8_t buf[255];
    if (!read_exact(fd, buf, v[1])) return false;
    std::uint8_t plen = 0;
    if (!read_exact(fd, &plen, 1) || !read_exact(fd, buf, plen)) return false;
    const std::uint8_t ok[2] = {1, 0};
    if (!write_all(fd, ok, 2)) return false;
  }
  std::uint8_t req[4];
  if (!read_exact(fd, req, 4) || req[0] != 5 || req[1] != 1) return false;
  std::uint8_t addr[256];
  std::size_t alen = 0;
  if (req[3] == 1) {
    alen = 4;
  } else if (req[3] == 4) {
    alen = 16;
  } else if (req[3] == 3) {
    std::uint8_t l = 0;
    if (!read_exact(fd, &l, 1)) return false;
    alen = l;
  } else {
    return false;
  }
  return read_exact(fd, addr, alen + 2);  // the address and the port: ignored
}

}  // namespace

SocksForwarder::SocksForwarder(std::uint16_t upstream_port, bool plain)
    : upstream_(upstream_port), plain_(plain) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::listen(listen_fd_, 64) == 0) {
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

SocksForwarder::~SocksForwarder() {
  stop_.store(true);
  acceptor_.join();
  std::vector<std::thread> relays;
  {
    std::lock_guard lock(mu_);
    relays.swap(relays_);
  }
  for (auto& t : relays) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void SocksForwarder::cut_all() { cut_before_.store(epoch_.fetch_add(1) + 1); }

void SocksForwarder::freeze_open() { frozen_before_.store(epoch_.fetch_add(1) + 1); }

void SocksForwarder::accept_loop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    relays_.emplace_back([this, fd] { relay(fd); });
  }
}

void SocksForwarder::relay(int client) {
  const std::uint64_t epoch = epoch_.load();
  int upstream = -1;
  if (plain_ || socks_handshake(client)) upstream = connect_loopback(upstream_);
  const std::uint8_t reply_ok[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  const std::uint8_t reply_fail[10] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
  const bool replied = plain_ || write_all(client, upstream >= 0 ? reply_ok : reply_fail, 10);
  if (!replied || upstream < 0) {
    if (upstream >= 0) ::close(upstream);
    ::close(client);
    return;
  }
  connections_.fetch_add(1);
  std::uint8_t buf[16384];
  while (!stop_.load() && epoch >= cut_before_.load()) {
    if (epoch < frozen_before_.load()) {
      ::usleep(kPollMs * 1000);
      continue;
    }
    pollfd p[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
    const int r = ::poll(p, 2, kPollMs);
    if (r < 0) break;
    if (r == 0) continue;
    bool done = false;
    for (int i = 0; i < 2 && !done; ++i) {
      if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t k = ::read(p[i].fd, buf, sizeof buf);
      if (k <= 0 || !write_all(p[1 - i].fd, buf, static_cast<std::size_t>(k))) done = true;
    }
    if (done) break;
  }
  ::close(upstream);
  ::close(client);
}

}  // namespace parley::testing
