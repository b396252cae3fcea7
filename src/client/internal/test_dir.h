#pragma once
// Test-only: a fresh directory under /tmp, removed with everything in it when destroyed.

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace parley::client::testing {

class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/parley-client-test-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // A profile directory inside this one that does not exist yet.
  std::filesystem::path profile() const { return path_ / "profile"; }

 private:
  std::filesystem::path path_;
};

}  // namespace parley::client::testing
