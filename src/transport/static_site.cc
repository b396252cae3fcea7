#include "transport/static_site.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <array>
#include <filesystem>
#include <system_error>

#include "transport/internal/builtin_site.h"
#include "transport/internal/http_util.h"

namespace parley::transport {
namespace {

// "\"<a>-<b>\"" in hex. (Formatted with snprintf: GCC 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::string&&` concatenations.)
std::string make_etag(std::uint64_t a, std::uint64_t b) {
  char buf[48];
  const int n = std::snprintf(buf, sizeof buf, "\"%llx-%llx\"", static_cast<unsigned long long>(a),
                              static_cast<unsigned long long>(b));
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

// FNV-1a: a stable tag for the built-in bodies, and the built-in site's seed folded to the 64
// bits its generator takes (neither security relevant).
std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string_view content_type_for(std::string_view path) {
  auto dot = path.rfind('.');
  auto slash = path.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) {
    return "application/octet-stream";
  }
  std::string ext(path.substr(dot + 1));
  for (char& c : ext) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 16> kTypes = {{
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css"},
      {"js", "application/javascript"},
      {"txt", "text/plain; charset=utf-8"},
      {"json", "application/json"},
      {"xml", "text/xml"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"woff2", "font/woff2"},
      {"pdf", "application/pdf"},
  }};
  for (const auto& [e, t] : kTypes) {
    if (ext == e) return t;
  }
  return "application/octet-stream";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string normalize_site_path(std::string_view target) {
  auto q = target.find_first_of("?#");
  if (q != std::string_view::npos) target = target.substr(0, q);
  if (target.empty() || target.front() != '/' || target.size() > 1024) return {};
  std::string out;
  out.reserve(target.size());
  for (std::size_t i = 0; i < target.size(); ++i) {
    char c = target[i];
    if (c == '%') {
      if (i + 2 >= target.size()) return {};
      int hi = hex_value(target[i + 1]);
      int lo = hex_value(target[i + 2]);
      if (hi < 0 || lo < 0) return {};
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0' || c == '\\') return {};
    out.push_back(c);
  }
  // Refuse "." and ".." segments.
  std::size_t pos = 1;
  while (pos <= out.size()) {
    auto next = out.find('/', pos);
    std::string_view seg = std::string_view(out).substr(
        pos, next == std::string::npos ? std::string::npos : next - pos);
    if (seg == "." || seg == "..") return {};
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  return out;
}

StaticSite::StaticSite(std::string site_dir, std::string_view seed) {
  if (site_dir.empty()) {
    builtin_ = internal::make_builtin_site(fnv1a(seed));
    return;
  }
  std::error_code ec;
  auto canonical = std::filesystem::canonical(site_dir, ec);
  site_dir_ = ec ? site_dir : canonical.string();
  while (site_dir_.size() > 1 && site_dir_.back() == '/') site_dir_.pop_back();
}

SiteResponse StaticSite::handle(std::string_view method, std::string_view target,
                                std::string_view if_none_match) const {
  if (method != "GET" && method != "HEAD") return error_page(405);
  std::string path = normalize_site_path(target);
  if (path.empty()) return error_page(404);
  return site_dir_.empty() ? builtin(path, if_none_match) : from_dir(path, if_none_match);
}

SiteResponse StaticSite::builtin(std::string_view path, std::string_view if_none_match) const {
  for (const auto& page : builtin_.pages) {
    if (page.path != path) continue;
    SiteResponse r;
    const auto modified = static_cast<std::uint64_t>(builtin_.modified_s);
    r.etag = make_etag(modified, fnv1a(page.body) & 0xffffffffu);
    r.last_modified = internal::http_date(builtin_.modified_s);
    if (internal::etag_matches(if_none_match, r.etag)) {
      r.status = 304;
      return r;
    }
    r.content_type = page.content_type;
    r.body = page.body;
    return r;
  }
  return error_page(404);
}

namespace {

// Opens `resolved` (a canonical path) for reading when the file opened is a regular file at that
// very path: the kernel's name for the open file (/proc/self/fd) must be `resolved`, so a
// directory on the path swapped for a symlink after `resolved` was worked out is not followed.
// -1 otherwise; `st` is the open file's.
int open_resolved(const std::string& resolved, struct stat& st) {
  // O_NONBLOCK: a FIFO put in the site would otherwise block the open, and the io thread, until
  // someone opens it for writing (it is refused below, as is anything but a regular file).
  const int fd =
      ::open(resolved.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return -1;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  std::string actual(resolved.size() + 1, '\0');  // one more: a longer name does not fit
  const ssize_t n = ::readlink(link, actual.data(), actual.size());
  if (n < 0 || static_cast<std::size_t>(n) != resolved.size() ||
      actual.compare(0, resolved.size(), resolved) != 0 || ::fstat(fd, &st) != 0 ||
      !S_ISREG(st.st_mode)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::string StaticSite::regular_file_inside(const std::string& full, struct stat& st) const {
  std::error_code ec;
  auto canonical = std::filesystem::canonical(full, ec);
  if (ec) return {};
  std::string resolved = canonical.string();
  if (resolved.size() <= site_dir_.size() + 1 ||
      resolved.compare(0, site_dir_.size(), site_dir_) != 0 || resolved[site_dir_.size()] != '/') {
    return {};  // outside the site (a symlink pointing elsewhere)
  }
  // The file's identity is taken from the file opened at that path, not from a second walk of
  // it (which a swapped directory could send elsewhere); open_site_file() opens only that file.
  const int fd = open_resolved(resolved, st);
  if (fd < 0) return {};
  ::close(fd);
  return resolved;
}

SiteResponse StaticSite::from_dir(std::string_view path, std::string_view if_none_match) const {
  std::string full = site_dir_ + std::string(path);
  std::error_code ec;
  if (std::filesystem::is_directory(full, ec)) {
    if (full.back() != '/') full.push_back('/');
    full += "index.html";
  }
  struct stat st {};
  const std::string resolved = regular_file_inside(full, st);
  if (resolved.empty()) return error_page(404);
  SiteResponse r;
  r.etag = make_etag(static_cast<std::uint64_t>(st.st_mtime), static_cast<std::uint64_t>(st.st_size));
  r.last_modified = internal::http_date(static_cast<std::int64_t>(st.st_mtime));
  if (internal::etag_matches(if_none_match, r.etag)) {
    r.status = 304;
    return r;
  }
  r.content_type = std::string(content_type_for(resolved));
  r.file_path = resolved;
  r.file_size = static_cast<std::uint64_t>(st.st_size);
  r.file_device = st.st_dev;
  r.file_inode = st.st_ino;
  return r;
}

int open_site_file(const SiteResponse& page) {
  struct stat st {};
  const int fd = open_resolved(page.file_path, st);
  if (fd < 0) return -1;
  if (st.st_dev != page.file_device || st.st_ino != page.file_inode) {
    ::close(fd);
    return -1;
  }
  return fd;
}

SiteResponse StaticSite::error_page(unsigned status) const {
  SiteResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  if (status == 404) {
    if (!site_dir_.empty()) {
      struct stat st {};
      if (std::string custom = regular_file_inside(site_dir_ + "/404.html", st); !custom.empty()) {
        r.file_path = std::move(custom);
        r.file_size = static_cast<std::uint64_t>(st.st_size);
        r.file_device = st.st_dev;
        r.file_inode = st.st_ino;
        return r;
      }
    }
    r.body = builtin_.not_found;
    return r;
  }
  std::string_view title;
  switch (status) {
    case 400: title = "400 Bad Request"; break;
    case 401: title = "401 Authorization Required"; break;
    case 403: title = "403 Forbidden"; break;
    case 405: title = "405 Method Not Allowed"; break;
    case 408: title = "408 Request Timeout"; break;
    case 411: title = "411 Length Required"; break;
    case 413: title = "413 Request Entity Too Large"; break;
    case 416: title = "416 Requested Range Not Satisfiable"; break;
    case 431: title = "431 Request Header Fields Too Large"; break;
    case 503: title = "503 Service Unavailable"; break;
    default: r.status = 500; title = "500 Internal Server Error"; break;
  }
  if (status == 405) r.allow = "GET, HEAD";
  r.body = "<!DOCTYPE html>\n<html>\n<head><title>" + std::string(title) +
           "</title></head>\n<body>\n<h1>" + std::string(title) + "</h1>\n</body>\n</html>\n";
  return r;
}

}  // namespace parley::transport
