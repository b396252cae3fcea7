#pragma once
// For the transport tests: a directory per test, one TLS identity per test binary, a plain
// TCP connection to a loopback port, and a blocking OpenSSL client on one.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "crypto/x509.h"

namespace parley::transport::test_support {

// A fresh, empty directory for the running test, named after it, under the system's temporary
// directory. The caller removes it.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const auto dir = std::filesystem::temp_directory_path() /
                   (prefix + "_" + std::to_string(::getpid()) + "_" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A self-signed certificate for "localhost" and its key, made once.
inline const crypto::TlsIdentity& test_identity() {
  static const crypto::TlsIdentity id = [] {
    auto r = crypto::generate_self_signed("localhost", 30);
    if (!r) std::abort();
    return std::move(r).value();
  }();
  return id;
}

// A blocking TCP connection to 127.0.0.1:port with a receive timeout; -1 if it fails.
inline int connect_loopback(std::uint16_t port, int recv_timeout_s) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{recv_timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A blocking OpenSSL client on a loopback connection (10 s send and receive timeouts): a TLS
// peer that is not parley's own stream, for tests of that stream. Not copyable.
class TlsPeer {
 public:
  TlsPeer() = default;
  TlsPeer(const TlsPeer&) = delete;
  TlsPeer& operator=(const TlsPeer&) = delete;
  ~TlsPeer() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  // Connects to 127.0.0.1:port and completes the handshake: "" or what failed. `tls13_suites`,
  // when given, replaces OpenSSL's list of TLS 1.3 suites to offer.
  std::string connect(std::uint16_t port, const char* tls13_suites = nullptr) {
    return handshake_on(connect_loopback(port, 10), {}, tls13_suites);
  }
  // The same on a connected socket `fd` (owned from now on), after sending `preamble` on it
  // in the clear (a relay's PROXY header).
  std::string handshake_on(int fd, std::string_view preamble, const char* tls13_suites = nullptr) {
    // OpenSSL writes with send() without MSG_NOSIGNAL: a server that closes on a peer the test
    // makes misbehave must fail the handshake, not kill the test process.
    std::signal(SIGPIPE, SIG_IGN);
    fd_ = fd;
    if (fd_ < 0) return "connect";
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!preamble.empty() && ::send(fd_, preamble.data(), preamble.size(), MSG_NOSIGNAL) !=
                                 static_cast<ssize_t>(preamble.size())) {
      return "send preamble";
    }
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ != nullptr && max_version != 0 &&
        SSL_CTX_set_max_proto_version(ctx_, max_version) != 1) {
      return "SSL_CTX_set_max_proto_version";
    }
    if (ctx_ != nullptr && tls13_suites != nullptr &&
        SSL_CTX_set_ciphersuites(ctx_, tls13_suites) != 1) {
      return "SSL_CTX_set_ciphersuites";
    }
    ssl_ = ctx_ != nullptr ? SSL_new(ctx_) : nullptr;
    if (ssl_ == nullptr) return "SSL_new";
    SSL_set_fd(ssl_, fd_);
    return SSL_connect(ssl_) == 1 ? "" : "SSL_connect";
  }
  SSL* ssl() const { return ssl_; }
  int fd() const { return fd_; }
  // The highest protocol version to offer (TLS1_2_VERSION, ...); 0: OpenSSL's default. Set
  // before connecting.
  int max_version = 0;

  // Sends close_notify when asked, half-closes, and reads until the server closes: closing with
  // unread bytes (the server's session tickets) would reset the connection and lose what is
  // still in flight to it.
  void end(bool close_notify) {
    if (close_notify && ssl_ != nullptr) SSL_shutdown(ssl_);
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 1000 && ::recv(fd_, sink, sizeof sink, 0) > 0; ++i) {
    }
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

}  // namespace parley::transport::test_support
