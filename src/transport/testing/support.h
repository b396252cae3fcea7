#pragma once
// For the transport tests: a directory per test, one TLS identity per test binary, and a plain
// TCP connection to a loopback port.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

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

}  // namespace parley::transport::test_support
