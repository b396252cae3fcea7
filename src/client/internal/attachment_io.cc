#include "client/internal/attachment_io.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace parley::client::internal {
namespace fs = std::filesystem;

namespace {

Status os_error(std::string_view step) {
  const int e = errno;
  return make_error(e == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                    "attachment file: " + std::string(step) + ": " + std::strerror(e));
}

Status check_regular(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return os_error("stat");
  if (!S_ISREG(st.st_mode))
    return make_error(ErrorCode::kInvalidArgument, "attachment file: not a regular file");
  return Status::ok();
}

}  // namespace

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Result<File> File::open_read(const fs::path& path) {
  File f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!f.is_open()) return os_error("open");
  PARLEY_TRY(check_regular(f.fd_));
  return f;
}

Result<File> File::open_or_create(const fs::path& path) {
  File f(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!f.is_open()) return os_error("open");
  PARLEY_TRY(check_regular(f.fd_));
  return f;
}

Result<std::pair<File, fs::path>> File::create_temp(const fs::path& dir, std::string_view prefix) {
  std::string templ = (dir / (std::string(prefix) + "XXXXXX")).string();
  File f(::mkostemp(templ.data(), O_CLOEXEC));  // mode 0600
  if (!f.is_open()) return os_error("create temp");
  return std::make_pair(std::move(f), fs::path(templ));
}

Result<std::uint64_t> File::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return os_error("stat");
  return static_cast<std::uint64_t>(st.st_size);
}

Result<std::size_t> File::read(std::span<std::uint8_t> out) {
  for (;;) {
    const ssize_t n = ::read(fd_, out.data(), out.size());
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return os_error("read");
  }
}

Status File::read_exact_at(std::span<std::uint8_t> out, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return os_error("read");
    if (n == 0) return make_error(ErrorCode::kIo, "attachment file: shorter than expected");
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status File::write_all(ByteView data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return os_error("write");
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status File::write_all_at(ByteView data, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return os_error("write");
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status File::truncate(std::uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return os_error("truncate");
  return Status::ok();
}

Status File::sync() {
  if (::fsync(fd_) != 0) return os_error("sync");
  return Status::ok();
}

Status File::close() {
  const int fd = std::exchange(fd_, -1);
  if (fd >= 0 && ::close(fd) != 0) return os_error("close");
  return Status::ok();
}

Status sync_dir(const fs::path& dir) {
  File d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.is_open()) return os_error("open directory");
  return d.sync();
}

void remove_quietly(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

Status publish_no_replace(const fs::path& from, const fs::path& to) {
  // renameat2(RENAME_NOREPLACE) is atomic; file systems without it get link() + unlink(), which
  // also fails with EEXIST rather than replace.
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::ok();
  }
  if (errno == EEXIST) return make_error(ErrorCode::kAlreadyExists, "attachment file: name taken");
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return os_error("rename");
  if (::link(from.c_str(), to.c_str()) != 0) {
    if (errno == EEXIST)
      return make_error(ErrorCode::kAlreadyExists, "attachment file: name taken");
    return os_error("link");
  }
  remove_quietly(from);
  return Status::ok();
}

Status write_file_atomically(const fs::path& path, ByteView data) {
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  PARLEY_ASSIGN_OR_RETURN(auto temp,
                          File::create_temp(dir, "." + path.filename().string() + ".tmp-"));
  auto& [file, temp_path] = temp;
  Status s = file.write_all(data);
  if (s.is_ok()) s = file.sync();
  if (s.is_ok()) s = file.close();
  if (s.is_ok()) {
    std::error_code ec;
    fs::rename(temp_path, path, ec);
    if (ec) s = make_error(ErrorCode::kIo, "attachment file: rename: " + ec.message());
  }
  if (!s.is_ok()) {
    remove_quietly(temp_path);
    return s;
  }
  return sync_dir(dir);
}

Result<SecretBytes> read_small_file(const fs::path& path, std::size_t max_size) {
  PARLEY_ASSIGN_OR_RETURN(File f, File::open_read(path));
  PARLEY_ASSIGN_OR_RETURN(std::uint64_t size, f.size());
  if (size > max_size) return make_error(ErrorCode::kTooLarge, "attachment file: too large");
  SecretBytes out(static_cast<std::size_t>(size));
  PARLEY_TRY(f.read_exact_at(out.mutable_view(), 0));
  return out;
}

}  // namespace parley::client::internal
