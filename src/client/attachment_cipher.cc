#include "client/attachment_cipher.h"

#include <array>
#include <string>

#include "client/internal/attachment_io.h"
#include "crypto/stream_cipher.h"

namespace parley::client {
namespace fs = std::filesystem;
using internal::File;

namespace {

constexpr std::size_t kPiece = 64 * 1024;
constexpr std::size_t kAesKeySize = 32;
constexpr std::size_t kMaxNameAttempts = 1000;
constexpr std::size_t kMaxFileNameBytes = 255;

// Removes a temporary file on every path out of a function unless release()d.
class TempFileGuard {
 public:
  explicit TempFileGuard(fs::path path) : path_(std::move(path)) {}
  ~TempFileGuard() {
    if (!path_.empty()) internal::remove_quietly(path_);
  }
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  void release() { path_.clear(); }

 private:
  fs::path path_;
};

fs::path dir_of(const fs::path& file) {
  return file.parent_path().empty() ? fs::path(".") : file.parent_path();
}

bool plain_component(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > kMaxFileNameBytes) return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

// "name.ext" -> "name (n).ext"; "name" -> "name (n)".
std::string with_suffix(std::string_view name, std::size_t n) {
  const std::size_t dot = name.rfind('.');
  const std::string tag = " (" + std::to_string(n) + ")";
  if (dot == std::string_view::npos || dot == 0) return std::string(name) + tag;
  return std::string(name.substr(0, dot)) + tag + std::string(name.substr(dot));
}

// Writes the (non-empty) output of a cipher step to the file and into the MAC and digest.
Status emit(File& out, const Bytes& bytes, crypto::HmacSha256Stream& mac, crypto::Sha256& digest) {
  if (bytes.empty()) return Status::ok();
  mac.update(bytes);
  digest.update(bytes);
  return out.write_all(bytes);
}

Status check_expectation(const AttachmentExpectation& expect, std::string_view file_name) {
  if (expect.key.size() != kAttachmentKeySize || expect.digest.size() != kAttachmentDigestSize ||
      (!expect.plaintext_sha256.empty() && expect.plaintext_sha256.size() != 32)) {
    return make_error(ErrorCode::kInvalidArgument, "attachment: key or digest of the wrong size");
  }
  if (!plain_component(file_name)) {
    return make_error(ErrorCode::kInvalidArgument, "attachment: file name is not a plain name");
  }
  if (expect.plaintext_size > expect.max_plaintext_size) {
    return make_error(ErrorCode::kTooLarge, "attachment: larger than the allowed size");
  }
  return Status::ok();
}

// Pass 1: MAC and digest over the whole file, before any decryption. Returns the stored tag.
Result<crypto::Sha256Digest> verify_mac_and_digest(File& in, std::uint64_t size,
                                                   const AttachmentExpectation& expect) {
  const std::uint64_t body = size - kAttachmentMacSize;
  crypto::HmacSha256Stream mac(expect.key.subspan(kAesKeySize));
  crypto::Sha256 digest;
  Bytes buf(kPiece);
  for (std::uint64_t off = 0; off < body;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kPiece, body - off));
    const auto piece = std::span<std::uint8_t>(buf).first(n);
    PARLEY_TRY(in.read_exact_at(piece, off));
    mac.update(piece);
    digest.update(piece);
    off += n;
  }
  crypto::Sha256Digest tag{};
  PARLEY_TRY(in.read_exact_at(tag, body));
  digest.update(tag);
  const crypto::Sha256Digest computed = mac.finish();
  if (!constant_time_equal(computed, tag)) {
    return make_error(ErrorCode::kBadMac, "attachment: MAC does not verify");
  }
  const crypto::Sha256Digest whole = digest.finish();
  if (!constant_time_equal(whole, expect.digest)) {
    return make_error(ErrorCode::kBadMac, "attachment: digest does not match");
  }
  return tag;
}

// Pass 2: decrypts into `out`, MACing the bytes actually decrypted again (the file could change
// between the passes) and hashing the plaintext.
Status decrypt_into(File& in, std::uint64_t size, const crypto::Sha256Digest& tag,
                    const AttachmentExpectation& expect, File& out) {
  const std::uint64_t body = size - kAttachmentMacSize;
  std::array<std::uint8_t, kAttachmentIvSize> iv{};
  PARLEY_TRY(in.read_exact_at(iv, 0));
  PARLEY_ASSIGN_OR_RETURN(
      auto aes, crypto::Aes256CbcStream::create(crypto::Aes256CbcStream::Direction::kDecrypt,
                                                expect.key.first(kAesKeySize), iv));
  crypto::HmacSha256Stream mac(expect.key.subspan(kAesKeySize));
  mac.update(iv);
  crypto::Sha256 plain_hash;
  std::uint64_t plain_size = 0;
  Bytes buf(kPiece);
  Bytes plain;
  plain.reserve(kPiece + kAttachmentIvSize);
  auto write_plain = [&]() -> Status {
    plain_hash.update(plain);
    plain_size += plain.size();
    if (plain_size > expect.plaintext_size) {
      return make_error(ErrorCode::kDecryptFailed, "attachment: plaintext longer than promised");
    }
    return out.write_all(plain);
  };
  for (std::uint64_t off = kAttachmentIvSize; off < body;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kPiece, body - off));
    const auto piece = std::span<std::uint8_t>(buf).first(n);
    PARLEY_TRY(in.read_exact_at(piece, off));
    mac.update(piece);
    plain.clear();
    PARLEY_TRY(aes.update(piece, plain));
    PARLEY_TRY(write_plain());
    off += n;
  }
  if (!constant_time_equal(mac.finish(), tag)) {
    return make_error(ErrorCode::kBadMac, "attachment: changed while being decrypted");
  }
  plain.clear();
  PARLEY_TRY(aes.finish(plain));
  PARLEY_TRY(write_plain());
  if (plain_size != expect.plaintext_size) {
    return make_error(ErrorCode::kDecryptFailed, "attachment: plaintext size does not match");
  }
  if (!expect.plaintext_sha256.empty() &&
      !constant_time_equal(plain_hash.finish(), expect.plaintext_sha256)) {
    return make_error(ErrorCode::kDecryptFailed, "attachment: plaintext hash does not match");
  }
  return Status::ok();
}

}  // namespace

std::uint64_t attachment_ciphertext_size(std::uint64_t plaintext_size) {
  return kAttachmentIvSize + 16 * (plaintext_size / 16 + 1) + kAttachmentMacSize;
}

Result<EncryptedAttachmentFile> encrypt_attachment_file(const fs::path& plaintext,
                                                        const fs::path& ciphertext, Rng& rng,
                                                        std::uint64_t max_plaintext_size) {
  PARLEY_ASSIGN_OR_RETURN(File in, File::open_read(plaintext));
  PARLEY_ASSIGN_OR_RETURN(const std::uint64_t size, in.size());
  if (size > max_plaintext_size) {
    return make_error(ErrorCode::kTooLarge, "attachment: larger than the allowed size");
  }
  EncryptedAttachmentFile result;
  result.key = SecretBytes(kAttachmentKeySize);
  rng.fill(result.key.mutable_view());
  std::array<std::uint8_t, kAttachmentIvSize> iv{};
  rng.fill(iv);
  PARLEY_ASSIGN_OR_RETURN(
      auto aes, crypto::Aes256CbcStream::create(crypto::Aes256CbcStream::Direction::kEncrypt,
                                                result.key.view().first(kAesKeySize), iv));
  crypto::HmacSha256Stream mac(result.key.view().subspan(kAesKeySize));
  crypto::Sha256 digest;
  crypto::Sha256 plain_hash;

  const fs::path dir = dir_of(ciphertext);
  PARLEY_ASSIGN_OR_RETURN(auto temp, File::create_temp(dir, ".parley-enc-"));
  auto& [out, temp_path] = temp;
  TempFileGuard guard(temp_path);

  mac.update(iv);
  digest.update(iv);
  PARLEY_TRY(out.write_all(iv));
  Bytes buf(kPiece);
  Bytes ct;
  ct.reserve(kPiece + kAttachmentIvSize);
  std::uint64_t read_total = 0;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(const std::size_t n, in.read(buf));
    if (n == 0) break;
    read_total += n;
    if (read_total > size) break;  // growing while read: refused below
    const ByteView piece = ByteView(buf).first(n);
    plain_hash.update(piece);
    ct.clear();
    PARLEY_TRY(aes.update(piece, ct));
    PARLEY_TRY(emit(out, ct, mac, digest));
  }
  if (read_total != size) {
    return make_error(ErrorCode::kIo, "attachment: the file changed while being encrypted");
  }
  ct.clear();
  PARLEY_TRY(aes.finish(ct));
  PARLEY_TRY(emit(out, ct, mac, digest));
  const crypto::Sha256Digest tag = mac.finish();
  digest.update(tag);
  PARLEY_TRY(out.write_all(tag));
  PARLEY_ASSIGN_OR_RETURN(const std::uint64_t written, out.size());
  if (written != attachment_ciphertext_size(size)) {
    return make_error(ErrorCode::kInternal, "attachment: unexpected ciphertext size");
  }
  PARLEY_TRY(out.sync());
  PARLEY_TRY(out.close());
  std::error_code ec;
  fs::rename(temp_path, ciphertext, ec);
  if (ec) return make_error(ErrorCode::kIo, "attachment: rename: " + ec.message());
  guard.release();
  PARLEY_TRY(internal::sync_dir(dir));

  result.digest = digest.finish();
  result.plaintext_sha256 = plain_hash.finish();
  result.plaintext_size = size;
  result.ciphertext_size = written;
  return result;
}

Result<fs::path> decrypt_attachment_file(const fs::path& ciphertext, const fs::path& dest_dir,
                                         std::string_view file_name,
                                         const AttachmentExpectation& expect) {
  PARLEY_TRY(check_expectation(expect, file_name));
  PARLEY_ASSIGN_OR_RETURN(File in, File::open_read(ciphertext));
  PARLEY_ASSIGN_OR_RETURN(const std::uint64_t size, in.size());
  if (size != attachment_ciphertext_size(expect.plaintext_size)) {
    return make_error(ErrorCode::kMalformed, "attachment: ciphertext has the wrong size");
  }
  PARLEY_ASSIGN_OR_RETURN(const crypto::Sha256Digest tag, verify_mac_and_digest(in, size, expect));

  PARLEY_ASSIGN_OR_RETURN(auto temp, File::create_temp(dest_dir, ".parley-dec-"));
  auto& [out, temp_path] = temp;
  TempFileGuard guard(temp_path);
  PARLEY_TRY(decrypt_into(in, size, tag, expect, out));
  PARLEY_TRY(out.sync());
  PARLEY_TRY(out.close());

  for (std::size_t attempt = 0; attempt < kMaxNameAttempts; ++attempt) {
    const std::string name =
        attempt == 0 ? std::string(file_name) : with_suffix(file_name, attempt);
    const fs::path dest = dest_dir / name;
    Status s = internal::publish_no_replace(temp_path, dest);
    if (s.code() == ErrorCode::kAlreadyExists) continue;
    PARLEY_TRY(s);
    guard.release();
    PARLEY_TRY(internal::sync_dir(dest_dir));
    return dest;
  }
  return make_error(ErrorCode::kAlreadyExists, "attachment: no free file name");
}

Result<crypto::Sha256Digest> sha256_file(const fs::path& path) {
  PARLEY_ASSIGN_OR_RETURN(File in, File::open_read(path));
  crypto::Sha256 hash;
  Bytes buf(kPiece);
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(const std::size_t n, in.read(buf));
    if (n == 0) break;
    hash.update(ByteView(buf).first(n));
  }
  return hash.finish();
}

}  // namespace parley::client
