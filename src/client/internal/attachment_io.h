#pragma once
// Internal to src/client: the small POSIX file layer under attachment encryption and transfer
// (files far larger than memory, temp files made visible only when complete, private modes).
// Error messages name the step and the OS condition, never a path (paths and file names are
// user data). Not thread-safe; a File is owned by one holder.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <utility>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"

namespace parley::client::internal {

// An open file descriptor, closed when destroyed. Move-only.
class File {
 public:
  File() = default;
  explicit File(int fd) : fd_(fd) {}
  ~File();
  File(File&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // A regular file for reading (symlinks refused). kNotFound when it does not exist.
  static Result<File> open_read(const std::filesystem::path& path);
  // A regular file for reading and writing, created with mode 0600 if missing (symlinks refused).
  static Result<File> open_or_create(const std::filesystem::path& path);
  // A new uniquely named file (mode 0600) in `dir`: "<dir>/<prefix>XXXXXX". Returns its path.
  static Result<std::pair<File, std::filesystem::path>> create_temp(
      const std::filesystem::path& dir, std::string_view prefix);

  bool is_open() const { return fd_ >= 0; }
  Result<std::uint64_t> size() const;
  // Up to out.size() bytes from the current position; 0 at the end of the file.
  Result<std::size_t> read(std::span<std::uint8_t> out);
  // Exactly out.size() bytes at `offset`; kIo if the file is shorter.
  Status read_exact_at(std::span<std::uint8_t> out, std::uint64_t offset);
  Status write_all(ByteView data);
  Status write_all_at(ByteView data, std::uint64_t offset);
  Status truncate(std::uint64_t size);
  Status sync();
  // Closes now, reporting an error close() returns (data may not be stored).
  Status close();

 private:
  int fd_ = -1;
};

// Makes a create/rename/unlink in `dir` durable.
Status sync_dir(const std::filesystem::path& dir);
// Removes a file if present, ignoring errors (cleanup after a failure).
void remove_quietly(const std::filesystem::path& path);
// Makes the complete file `from` visible as `to` without ever replacing an existing file:
// kAlreadyExists when `to` is taken (then `from` is left in place). Same directory only.
Status publish_no_replace(const std::filesystem::path& from, const std::filesystem::path& to);
// Replaces `path` atomically with `data` (a temp file, fsync, rename, fsync of the directory);
// the file has mode 0600.
Status write_file_atomically(const std::filesystem::path& path, ByteView data);
// Reads a whole regular file of at most `max_size` bytes into zeroizing memory (kTooLarge when
// larger, kNotFound when missing).
Result<SecretBytes> read_small_file(const std::filesystem::path& path, std::size_t max_size);

}  // namespace parley::client::internal
