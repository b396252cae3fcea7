#pragma once
// For the transport tests: a directory per test and one TLS identity per test binary.

#include <gtest/gtest.h>
#include <unistd.h>

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

}  // namespace parley::transport::test_support
