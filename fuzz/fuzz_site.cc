// The plain website's request handling (transport/static_site.h) and the HTTP helpers it and
// the attachment routes share (transport/internal/http_util.h), with every part taken from the
// input: the request target, If-None-Match, a Range header and the resource size it applies to.
//
// Invariants: nothing crashes;
// - normalize_site_path() gives "" or a path that starts with '/' and holds no NUL, backslash,
//   "." or ".." segment;
// - a site in a directory never serves a file outside it, also through a symlink that points
//   out (the directory is made once: an index, a file, a subdirectory, and links out of it);
// - the built-in site, made from a seed in the input, serves only its own pages, from memory,
//   and every page its home page links to;
// - a satisfiable range lies within the resource; a resource of 0 bytes has none;
// - an If-None-Match naming the tag (as given, weak, or in a list) matches it.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "transport/internal/http_util.h"
#include "transport/static_site.h"

using namespace parley;             // NOLINT: a fuzz target
using namespace parley::transport;  // NOLINT: a fuzz target

namespace {

namespace fs = std::filesystem;

// <tmp>/parley_fuzz_site_<pid>/{site/{index.html,a.txt,sub/index.html,out,up,404.html},secret},
// where site/out and site/404.html link to ../secret and site/up to the parent directory.
struct SiteDir {
  SiteDir() {
    root = fs::temp_directory_path() / ("parley_fuzz_site_" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root / "site" / "sub");
    for (const char* f : {"site/index.html", "site/a.txt", "site/sub/index.html", "secret"}) {
      std::ofstream(root / f) << f;
    }
    fs::create_symlink("../secret", root / "site" / "out");
    fs::create_symlink("..", root / "site" / "up");
    fs::create_symlink("../secret", root / "site" / "404.html");
    site_dir = fs::canonical(root / "site").string();
  }
  ~SiteDir() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  fs::path root;
  std::string site_dir;
};

void check_path(const std::string& path) {
  if (path.empty()) return;
  PARLEY_FUZZ_CHECK(path.front() == '/');
  PARLEY_FUZZ_CHECK(path.find('\0') == std::string::npos);
  PARLEY_FUZZ_CHECK(path.find('\\') == std::string::npos);
  std::size_t pos = 1;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    const std::string_view segment(path.data() + pos, slash - pos);
    PARLEY_FUZZ_CHECK(segment != "." && segment != "..");
    pos = slash + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const SiteDir dir;
  static const StaticSite in_dir(dir.site_dir);

  FuzzedDataProvider in(data, size);
  const std::uint64_t resource_size = in.ConsumeIntegral<std::uint64_t>();
  const std::string range = in.ConsumeRandomLengthString(256);
  const std::string if_none_match = in.ConsumeRandomLengthString(256);
  const std::string seed = in.ConsumeRandomLengthString(64);
  const StaticSite builtin("", seed);
  const std::string method = in.ConsumeBool() ? "GET" : in.ConsumeBool() ? "HEAD" : "POST";
  const std::string target = in.ConsumeRemainingBytesAsString();

  check_path(normalize_site_path(target));

  const SiteResponse served = in_dir.handle(method, target, if_none_match);
  if (!served.file_path.empty()) {  // a page or the custom 404: inside the site, whatever links
    PARLEY_FUZZ_CHECK(served.status == 200);  // the only 404.html links out
    PARLEY_FUZZ_CHECK(served.file_path.size() > dir.site_dir.size() + 1 &&
                      served.file_path.compare(0, dir.site_dir.size(), dir.site_dir) == 0 &&
                      served.file_path[dir.site_dir.size()] == '/');
    PARLEY_FUZZ_CHECK(fs::canonical(served.file_path).string() == served.file_path);
  }
  const SiteResponse page = builtin.handle(method, target, if_none_match);
  PARLEY_FUZZ_CHECK(page.file_path.empty());
  PARLEY_FUZZ_CHECK(page.status == 200 || page.status == 304 || page.status == 404 ||
                    page.status == 405);
  if (page.status == 200) PARLEY_FUZZ_CHECK(!page.body.empty() && !page.content_type.empty());
  // Every link and the stylesheet of the site made from this seed are there.
  const std::string home = builtin.handle("GET", "/", "").body;
  for (std::size_t at = home.find("href=\""); at != std::string::npos;
       at = home.find("href=\"", at + 1)) {
    const std::string href = home.substr(at + 6, home.find('"', at + 6) - (at + 6));
    PARLEY_FUZZ_CHECK(builtin.handle("GET", href, "").status == 200);
  }
  // 304 only for a request whose If-None-Match names the page's tag.
  for (const SiteResponse* r : {&served, &page}) {
    if (r->status == 304) PARLEY_FUZZ_CHECK(internal::etag_matches(if_none_match, r->etag));
    if (r->status == 200 && !r->etag.empty()) {
      PARLEY_FUZZ_CHECK(!internal::etag_matches(if_none_match, r->etag));
    }
  }

  if (auto r = internal::parse_range(range, resource_size); r && r->satisfiable) {
    PARLEY_FUZZ_CHECK(resource_size > 0 && r->first <= r->last && r->last < resource_size);
  }

  const std::string& tag = if_none_match;
  if (!tag.empty()) {
    PARLEY_FUZZ_CHECK(internal::etag_matches("*", tag));
    if (tag.find(',') == std::string::npos && tag.front() != ' ' && tag.back() != ' ' &&
        tag.rfind("W/", 0) != 0) {
      PARLEY_FUZZ_CHECK(internal::etag_matches(tag, tag));
      PARLEY_FUZZ_CHECK(internal::etag_matches("W/" + tag, tag));
      PARLEY_FUZZ_CHECK(internal::etag_matches("\"x\", " + tag + " ,W/\"y\"", tag));
      // A list that does not hold the tag does not match it.
      if (tag != "\"x\"" && tag != "\"y\"") {
        PARLEY_FUZZ_CHECK(!internal::etag_matches("\"x\", W/\"y\" ,\"y\"", tag));
      }
    }
  }
  PARLEY_FUZZ_CHECK(!internal::etag_matches(if_none_match, ""));
  return 0;
}
