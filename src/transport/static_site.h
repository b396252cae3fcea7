#pragma once
// The plain website that the TLS listener shows to anyone who does not know the secret path.
// Internal to src/transport (server.cc turns a SiteResponse into an HTTP response).
//
// Either the built-in site (a few small pages of a fictional trade's homepage, held in memory
// and made from a per-installation seed: internal/builtin_site.h) or the files under a
// directory. Requests are resolved without ever leaving that directory:
// "..", "." and backslash segments, NUL bytes and symlinks that point outside are refused with
// the 404 page. Immutable after construction and thread-safe.

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "transport/internal/builtin_site.h"

namespace parley::transport {

struct SiteResponse {
  unsigned status = 200;
  std::string content_type;  // empty for 304
  std::string body;          // in-memory body (when file_path is empty)
  std::string file_path;     // or: stream this file (file_size bytes), opened with
                             // open_site_file()
  std::uint64_t file_size = 0;
  dev_t file_device = 0;  // the file as checked (open_site_file opens only that file)
  ino_t file_inode = 0;
  std::string etag;           // quoted, or empty
  std::string last_modified;  // IMF-fixdate, or empty
  std::string allow;          // for 405
};

class StaticSite {
 public:
  // `site_dir` empty: the built-in site made from `seed` (the same seed, the same site).
  explicit StaticSite(std::string site_dir, std::string_view seed = {});

  // A GET or HEAD (any other method gets 405). `target` is the raw request target.
  SiteResponse handle(std::string_view method, std::string_view target,
                      std::string_view if_none_match) const;

  // The page for an error status (400, 401, 403, 404, 405, 408, 411, 413, 416, 431, 500, 503).
  SiteResponse error_page(unsigned status) const;

 private:
  SiteResponse builtin(std::string_view path, std::string_view if_none_match) const;
  SiteResponse from_dir(std::string_view path, std::string_view if_none_match) const;
  // The canonical path of `full` when it is a regular file inside the site (also through
  // symlinks), with its `st`; empty otherwise.
  std::string regular_file_inside(const std::string& full, struct stat& st) const;

  std::string site_dir_;  // canonical, no trailing slash; empty: built-in
  internal::BuiltinSite builtin_;  // when site_dir_ is empty
};

// Opens a SiteResponse's file for reading: only the file the site checked, a regular file
// whose path the kernel names as the checked one (so no symlink was followed on the way), on the
// same device and inode. -1 when it is gone or has been replaced since: someone who can write
// into the site directory could otherwise swap a directory on the checked path for a symlink
// out of the site between the check and the open. Needs /proc (Linux).
int open_site_file(const SiteResponse& page);

// "/a%20b/c?x=1" -> "/a b/c"; nullopt-like empty string when the path is not acceptable
// (no leading '/', bad escapes, NUL, backslash, "." or ".." segments).
std::string normalize_site_path(std::string_view target);

}  // namespace parley::transport
