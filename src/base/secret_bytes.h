#pragma once
// SecretBytes: an owning, move-only buffer for key material.
//
// - The memory is zeroized when the object is destroyed, moved from, resized or cleared.
// - Copies are explicit (clone()), so secrets are never duplicated by accident.
// - Equality is constant-time in the contents (the length is not secret).
// - There is no implicit conversion to Bytes or std::string; view() gives a ByteView that is
//   valid while this object is alive and unmodified.
// Not thread-safe; owned by one holder at a time.

#include <cstddef>
#include <cstdint>

#include "base/bytes.h"

namespace parley {

// Overwrites `len` bytes at `p` with zeros in a way the optimizer cannot remove.
void secure_zero(void* p, std::size_t len);

// Constant-time equality of two equal-length buffers; false (fast) when lengths differ.
bool constant_time_equal(ByteView a, ByteView b);

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::size_t size) : data_(size) {}
  explicit SecretBytes(ByteView bytes) : data_(bytes.begin(), bytes.end()) {}
  ~SecretBytes() { wipe(); }

  SecretBytes(SecretBytes&& other) noexcept : data_(std::move(other.data_)) { other.wipe(); }
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      wipe();
      data_ = std::move(other.data_);
      other.wipe();
    }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  SecretBytes clone() const { return SecretBytes(view()); }

  std::size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }
  std::uint8_t* data() { return data_.data(); }
  const std::uint8_t* data() const { return data_.data(); }
  ByteView view() const { return ByteView(data_.data(), data_.size()); }
  std::span<std::uint8_t> mutable_view() { return std::span<std::uint8_t>(data_); }

  // Zeroizes and empties.
  void clear() {
    wipe();
    data_.clear();
  }

  friend bool operator==(const SecretBytes& a, const SecretBytes& b) {
    return constant_time_equal(a.view(), b.view());
  }

 private:
  void wipe() {
    if (!data_.empty()) secure_zero(data_.data(), data_.size());
  }
  Bytes data_;
};

}  // namespace parley
