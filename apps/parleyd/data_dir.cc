#include "data_dir.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/private_file.h"

namespace parley::parleyd {
namespace fs = std::filesystem;
namespace {

Result<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, "cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Creates DIR and its secrets on first start; loads them afterwards.
Status prepare_data_dir(server::ServerConfig& cfg, Rng& rng, crypto::TlsIdentity& tls) {
  std::error_code ec;
  fs::create_directories(cfg.data_dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot create " + cfg.data_dir);
  ::chmod(cfg.data_dir.c_str(), 0700);
  const fs::path dir(cfg.data_dir);
  const fs::path ws_file = dir / "ws_path";
  if (!fs::exists(ws_file)) {
    PARLEY_TRY(write_private_file(ws_file.string(), "/" + random_token(rng, 22) + "\n"));
  }
  PARLEY_ASSIGN_OR_RETURN(std::string ws, read_file(ws_file));
  while (!ws.empty() && (ws.back() == '\n' || ws.back() == '\r')) ws.pop_back();
  if (ws.size() < 8 || ws.front() != '/') {
    return make_error(ErrorCode::kInvalidArgument, "bad " + ws_file.string());
  }
  cfg.ws_path = ws;
  // Not a secret: it shows in the website it makes. Read as it is (any bytes will do).
  const fs::path seed_file = dir / "site_seed";
  if (!fs::exists(seed_file) || fs::file_size(seed_file, ec) == 0) {  // emptied: a new one
    PARLEY_TRY(write_private_file(seed_file.string(), random_token(rng, 22) + "\n"));
  }
  PARLEY_ASSIGN_OR_RETURN(cfg.site_seed, read_file(seed_file));

  // DIR/tls holds the generated certificate and key, and the ticket keys (also with --cert).
  const fs::path tls_dir = dir / "tls";
  fs::create_directories(tls_dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot create " + tls_dir.string());
  ::chmod(tls_dir.c_str(), 0700);
  if (!cfg.cert_file.empty() || !cfg.key_file.empty()) {
    if (cfg.cert_file.empty() || cfg.key_file.empty()) {
      return make_error(ErrorCode::kInvalidArgument, "--cert and --key go together");
    }
    PARLEY_ASSIGN_OR_RETURN(tls.cert_pem, read_file(cfg.cert_file));
    PARLEY_ASSIGN_OR_RETURN(tls.key_pem, read_file(cfg.key_file));
    return Status::ok();
  }
  if (!fs::exists(tls_dir / "cert.pem") || !fs::exists(tls_dir / "key.pem")) {
    PARLEY_ASSIGN_OR_RETURN(crypto::TlsIdentity fresh,
                            crypto::generate_self_signed(cfg.public_host, 3650));
    PARLEY_TRY(write_private_file((tls_dir / "key.pem").string(), fresh.key_pem));
    PARLEY_TRY(write_private_file((tls_dir / "cert.pem").string(), fresh.cert_pem));
    spdlog::info("event=tls_identity_created");
  }
  PARLEY_ASSIGN_OR_RETURN(tls.cert_pem, read_file(tls_dir / "cert.pem"));
  PARLEY_ASSIGN_OR_RETURN(tls.key_pem, read_file(tls_dir / "key.pem"));
  return Status::ok();
}

std::int64_t build_day_ms() { return static_cast<std::int64_t>(PARLEY_BUILD_DAY_S) * 1000; }

}  // namespace

std::string random_token(Rng& rng, std::size_t bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  Bytes b(bytes);
  rng.fill(b);
  std::string out;
  for (std::uint8_t v : b) out.push_back(kAlphabet[v & 63]);
  return out;
}

std::optional<crypto::Sha256Digest> prepare_identity(server::ServerConfig& cfg, Rng& rng,
                                                     crypto::TlsIdentity& tls) {
  if (Status s = prepare_data_dir(cfg, rng, tls); !s.is_ok()) {
    std::fprintf(stderr, "parleyd: %s\n", s.to_string().c_str());
    return std::nullopt;
  }
  auto pin = crypto::certificate_pin(tls.cert_pem);
  if (!pin) {
    std::fprintf(stderr, "parleyd: certificate: %s\n", pin.error().to_string().c_str());
    return std::nullopt;
  }
  return *pin;
}

std::int64_t clock_floor_ms(const Clock& system, const std::string& data_dir) {
  std::int64_t floor = build_day_ms();
  if (system.now_ms() >= floor) return floor;
  for (const char* name : {"parley.db", "parley.db-wal"}) {
    std::error_code ec;
    const auto written = fs::last_write_time(fs::path(data_dir) / name, ec);
    if (ec) continue;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::file_clock::to_sys(written).time_since_epoch())
                        .count();
    floor = std::max<std::int64_t>(floor, ms);
  }
  return floor;
}

std::int64_t with_expiry_clock(const Clock& system, std::int64_t floor, std::int64_t kept_ms) {
  constexpr std::int64_t kBelievableMs = std::int64_t{20} * 366 * 24 * 3600 * 1000;
  if (system.now_ms() >= build_day_ms()) return floor;
  if (kept_ms > build_day_ms() + kBelievableMs) {
    spdlog::warn(
        "event=expiry_clock_ignored reason=\"the kept reading is decades past the build "
        "day\"");
    return floor;
  }
  return std::max(floor, kept_ms);
}

}  // namespace parley::parleyd
