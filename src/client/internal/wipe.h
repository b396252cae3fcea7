#pragma once
// Internal to src/client: zeroizes a non-secret-typed buffer that briefly held secrets (the
// protocol's serialized records contain private keys and chain keys) when the scope ends.

#include "base/bytes.h"
#include "base/secret_bytes.h"

namespace parley::client::internal {

class WipeOnExit {
 public:
  explicit WipeOnExit(Bytes& bytes) : bytes_(bytes) {}
  ~WipeOnExit() { secure_zero(bytes_.data(), bytes_.size()); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  Bytes& bytes_;
};

}  // namespace parley::client::internal
