#pragma once
// Internal to src/transport: the built-in website, made from a per-installation seed.
//
// A site that is byte-identical on every server (the same pages, ETag and Last-Modified) lets
// one `GET /` find every installation that keeps it. So the built-in site is a small trade's
// homepage whose trade, name, address, hours, wording, page names, stylesheet and date all
// follow from the seed: the same seed gives the same site at every start, another seed another
// site. This only spoils exact-match rules; a censor who learns the template can still match
// its structure, so an operator who can should give a site of their own (`--site`).

#include <cstdint>
#include <string>
#include <vector>

namespace parley::transport::internal {

struct BuiltinPage {
  std::string path;  // "/", "/index.html", ...
  std::string content_type;
  std::string body;
};

struct BuiltinSite {
  std::vector<BuiltinPage> pages;
  std::string not_found;      // the 404 page's body
  std::int64_t modified_s{};  // every page's Last-Modified (seconds since the epoch)
};

// `seed`: StaticSite's hash of the installation's seed (any bytes; none gives one fixed site).
BuiltinSite make_builtin_site(std::uint64_t seed);

}  // namespace parley::transport::internal
