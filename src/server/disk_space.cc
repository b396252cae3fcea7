#include "server/disk_space.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

namespace parley::server {

Result<std::uint64_t> available_disk_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return make_error(ErrorCode::kIo, std::string("statvfs: ") + std::strerror(errno));
  }
  return static_cast<std::uint64_t>(st.f_bavail) * static_cast<std::uint64_t>(st.f_frsize);
}

}  // namespace parley::server
