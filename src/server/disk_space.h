#pragma once
// Free space of a filesystem, for parleyd's disk reserve (attachments.min_free_disk_mb): a slot
// for an attachment is refused while writing it would leave less than the reserve, so that
// attachments never fill the disk that the message store commits to (docs/operations.md).
// Plain functions; thread-safe (one statvfs call each).

#include <cstdint>
#include <string>

#include "base/result.h"

namespace parley::server {

// Bytes an unprivileged process may still write on the filesystem holding `path` (statvfs:
// f_bavail * f_frsize). kIo (naming no path) when it cannot be read, e.g. `path` is missing.
Result<std::uint64_t> available_disk_bytes(const std::string& path);

// Whether writing `size` more bytes would leave fewer than `reserve_bytes` of `available`.
inline bool below_disk_reserve(std::uint64_t available, std::uint64_t size,
                               std::uint64_t reserve_bytes) {
  return size > available || available - size < reserve_bytes;
}

// Whether writing `size` more bytes into `dir` would break a reserve of `reserve_mb` MiB
// (attachments.min_free_disk_mb; 0: never). Free space that cannot be read breaks nothing: a
// write that then fails is refused on its own.
inline bool breaks_disk_reserve(const std::string& dir, std::uint64_t size,
                                std::uint64_t reserve_mb) {
  if (reserve_mb == 0) return false;
  const Result<std::uint64_t> available = available_disk_bytes(dir);
  return available.has_value() && below_disk_reserve(*available, size, reserve_mb << 20);
}

}  // namespace parley::server
