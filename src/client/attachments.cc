#include "client/attachments.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <map>
#include <optional>
#include <thread>

#include "client/internal/attachment_io.h"
#include "client/transports.h"
#include "crypto/primitives.h"

namespace parley::client {
namespace fs = std::filesystem;
using internal::File;

namespace {

constexpr std::string_view kStateVersion = "parley-attachment-upload v1";
constexpr std::size_t kMaxStateFile = 16 * 1024;
constexpr std::size_t kMaxPathLength = 512;
constexpr std::size_t kMaxTokenLength = 256;
constexpr std::size_t kMaxSafeName = 200;
constexpr std::size_t kSlotIdLength = 32;

Status cancelled_error() {
  return make_error(ErrorCode::kUnavailable, "attachment transfer cancelled");
}

bool retryable(const Status& s) {
  return s.code() == ErrorCode::kIo || s.code() == ErrorCode::kUnavailable ||
         s.code() == ErrorCode::kInternal;
}

bool lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// An HTTP path of an attachment: a plain absolute path ending in "/att/<32 hex>", made of
// characters that cannot break the request line or a header.
bool valid_attachment_path(std::string_view p) {
  if (p.empty() || p.size() > kMaxPathLength || p.front() != '/') return false;
  for (char c : p) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '-' || c == '_' || c == '.' || c == '~' || c == '%' ||
                    c == '+' || c == '=';
    if (!ok) return false;
  }
  if (p.find("/../") != std::string_view::npos || p.find("/./") != std::string_view::npos) {
    return false;
  }
  constexpr std::string_view kAtt = "/att/";
  if (p.size() < kAtt.size() + kSlotIdLength) return false;
  const std::string_view tail = p.substr(p.size() - kSlotIdLength - kAtt.size());
  return tail.substr(0, kAtt.size()) == kAtt && lower_hex(tail.substr(kAtt.size()));
}

bool valid_token(std::string_view t) {
  if (t.empty() || t.size() > kMaxTokenLength) return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
  });
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// "bytes A-B/T" -> {A, B, T}.
struct ContentRange {
  std::uint64_t first = 0, last = 0, total = 0;
};
std::optional<ContentRange> parse_content_range(std::string_view v) {
  constexpr std::string_view kUnit = "bytes ";
  if (v.substr(0, kUnit.size()) != kUnit) return std::nullopt;
  v.remove_prefix(kUnit.size());
  const std::size_t dash = v.find('-');
  const std::size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  auto a = parse_u64(v.substr(0, dash));
  auto b = parse_u64(v.substr(dash + 1, slash - dash - 1));
  auto t = parse_u64(v.substr(slash + 1));
  if (!a || !b || !t || *a > *b || *b >= *t) return std::nullopt;
  return ContentRange{*a, *b, *t};
}

transport::ClientOptions http_options(const wire::Invite& server) {
  return server_options(server);
}

std::string hex_of(std::string_view s) { return to_hex(as_bytes(s)); }

// A string that briefly holds secrets (the serialized state), zeroized when the scope ends.
class WipedString {
 public:
  WipedString() = default;
  ~WipedString() { secure_zero(s_.data(), s_.size()); }
  WipedString(const WipedString&) = delete;
  WipedString& operator=(const WipedString&) = delete;
  std::string& get() { return s_; }

 private:
  std::string s_;
};

void notify(const ProgressFn& progress, std::uint64_t done, std::uint64_t total) {
  if (progress) progress(done, total);
}

}  // namespace

// ---- Pointer conversions and names --------------------------------------------------------------

void to_attachment_proto(const AttachmentPointer& pointer, Attachment* out) {
  out->set_path(pointer.path);
  out->set_key(std::string(as_chars(pointer.key.view())));
  out->set_digest(std::string(as_chars(pointer.digest)));
  out->set_size(pointer.size);
  out->set_file_name(pointer.file_name);
  out->set_sha256(std::string(as_chars(pointer.sha256)));
}

Result<AttachmentPointer> from_attachment_proto(const Attachment& a) {
  if (a.key().size() != kAttachmentKeySize || a.digest().size() != kAttachmentDigestSize ||
      a.sha256().size() != 32) {
    return make_error(ErrorCode::kMalformed, "attachment pointer: key, digest or hash size");
  }
  AttachmentPointer p;
  p.path = a.path();
  p.key = SecretBytes(as_bytes(a.key()));
  p.digest = to_bytes(a.digest());
  p.size = a.size();
  p.file_name = a.file_name();
  p.sha256 = to_bytes(a.sha256());
  return p;
}

std::string safe_attachment_file_name(std::string_view untrusted) {
  const std::size_t sep = untrusted.find_last_of("/\\");
  const std::string_view last =
      sep == std::string_view::npos ? untrusted : untrusted.substr(sep + 1);
  std::string out;
  for (char c : last) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) continue;
    out.push_back(c);
  }
  auto trim = [&out] {
    const std::size_t b = out.find_first_not_of(". ");
    if (b == std::string::npos) {
      out.clear();
      return;
    }
    out.erase(0, b);
    out.erase(out.find_last_not_of(". ") + 1);
  };
  trim();
  if (out.size() > kMaxSafeName) {
    std::size_t cut = kMaxSafeName;
    // Do not split a UTF-8 sequence: back up to the start of a character.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    trim();
  }
  if (out.empty()) out = "attachment";
  return out;
}

// ---- Upload state -------------------------------------------------------------------------------

struct AttachmentTransfer::UploadState {
  SecretBytes key;
  Bytes digest;
  Bytes sha256;
  std::uint64_t plain_size = 0;
  std::uint64_t cipher_size = 0;
  std::string file_name;
  std::string slot_id;
  std::string token;  // secret
  std::string path;
  fs::path enc_path;

  UploadState() = default;
  UploadState(const UploadState&) = delete;
  UploadState& operator=(const UploadState&) = delete;
  ~UploadState() { secure_zero(token.data(), token.size()); }

  Status save(const fs::path& state_path) const {
    WipedString text;
    std::string& t = text.get();
    t.reserve(1024);
    t += kStateVersion;
    t += "\nkey=" + to_hex(key.view());
    t += "\ndigest=" + to_hex(digest);
    t += "\nsha256=" + to_hex(sha256);
    t += "\nplain_size=" + std::to_string(plain_size);
    t += "\ncipher_size=" + std::to_string(cipher_size);
    t += "\nfile_name=" + hex_of(file_name);
    t += "\nslot_id=" + slot_id;
    t += "\ntoken=" + hex_of(token);
    t += "\npath=" + hex_of(path);
    t += "\n";
    return internal::write_file_atomically(state_path, as_bytes(t));
  }

  // Parses a state file (kMalformed when anything is missing or out of shape).
  static Result<std::unique_ptr<UploadState>> load(const fs::path& state_path,
                                                   std::uint64_t max_size) {
    PARLEY_ASSIGN_OR_RETURN(SecretBytes raw, internal::read_small_file(state_path, kMaxStateFile));
    const std::string_view text = as_chars(raw.view());
    const Status bad = make_error(ErrorCode::kMalformed, "attachment upload state is malformed");
    std::map<std::string_view, std::string_view> fields;
    std::size_t pos = 0;
    bool first = true;
    while (pos < text.size()) {
      std::size_t nl = text.find('\n', pos);
      if (nl == std::string_view::npos) nl = text.size();
      const std::string_view line = text.substr(pos, nl - pos);
      pos = nl + 1;
      if (first) {
        if (line != kStateVersion) return bad;
        first = false;
        continue;
      }
      if (line.empty()) continue;
      const std::size_t eq = line.find('=');
      if (eq == std::string_view::npos) return bad;
      fields[line.substr(0, eq)] = line.substr(eq + 1);
    }
    if (first) return bad;
    auto field = [&fields](std::string_view name) -> std::string_view {
      auto it = fields.find(name);
      return it == fields.end() ? std::string_view() : it->second;
    };
    auto s = std::make_unique<UploadState>();
    {
      std::optional<Bytes> key = from_hex(field("key"));
      if (!key) return bad;
      s->key = SecretBytes(*key);
      secure_zero(key->data(), key->size());
    }
    auto digest = from_hex(field("digest"));
    auto sha = from_hex(field("sha256"));
    auto plain = parse_u64(field("plain_size"));
    auto cipher = parse_u64(field("cipher_size"));
    auto name = from_hex(field("file_name"));
    auto token = from_hex(field("token"));
    auto path = from_hex(field("path"));
    if (!digest || !sha || !plain || !cipher || !name || !token || !path) return bad;
    s->digest = std::move(*digest);
    s->sha256 = std::move(*sha);
    s->plain_size = *plain;
    s->cipher_size = *cipher;
    s->file_name = std::string(as_chars(*name));
    s->slot_id = std::string(field("slot_id"));
    s->token = std::string(as_chars(*token));
    secure_zero(token->data(), token->size());
    s->path = std::string(as_chars(*path));
    if (s->key.size() != kAttachmentKeySize || s->digest.size() != kAttachmentDigestSize ||
        s->sha256.size() != 32 || s->plain_size > max_size ||
        s->cipher_size != attachment_ciphertext_size(s->plain_size) ||
        s->slot_id.size() != kSlotIdLength || !lower_hex(s->slot_id) || !valid_token(s->token) ||
        !valid_attachment_path(s->path)) {
      return bad;
    }
    return s;
  }
};

// ---- AttachmentTransfer -------------------------------------------------------------------------

AttachmentTransfer::AttachmentTransfer(Rng& rng, TransferOptions options)
    : rng_(rng), options_(std::move(options)) {
  options_.chunk_size = std::max<std::size_t>(options_.chunk_size, 1);
  options_.max_attempts = std::max(options_.max_attempts, 1);
}

bool AttachmentTransfer::retry_after_failure(int& failures) {
  ++failures;
  if (failures >= options_.max_attempts) return false;
  ++stats_.retries;
  // Exponential back-off with "equal jitter": a delay in [d/2, d].
  const auto base = options_.backoff_base.count();
  const auto cap = options_.backoff_max.count();
  std::int64_t d = base;
  for (int i = 1; i < failures && d < cap; ++i) d *= 2;
  d = std::min<std::int64_t>(d, cap);
  const auto half = static_cast<std::uint32_t>(std::max<std::int64_t>(d / 2, 0));
  const std::int64_t wait = d - half + (half > 0 ? rng_.uniform(half + 1) : 0);
  const std::chrono::milliseconds delay(wait);
  if (options_.sleep) {
    options_.sleep(delay);
  } else {
    std::this_thread::sleep_for(delay);
  }
  return true;
}

Status AttachmentTransfer::request_slot(ServerLink& link, UploadState& state) {
  wire::Request r;
  r.mutable_attachment_slot()->set_size(state.cipher_size);
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link.call(std::move(r), options_.call_timeout));
  PARLEY_TRY(response_status(resp, "attachment slot"));
  if (!resp.has_attachment_slot()) {
    return make_error(ErrorCode::kMalformed, "attachment slot: no slot in the answer");
  }
  const wire::AttachmentSlotResult& slot = resp.attachment_slot();
  if (slot.id().size() != kSlotIdLength || !lower_hex(slot.id()) ||
      !valid_token(slot.upload_token()) || !valid_attachment_path(slot.path()) ||
      slot.max_size() < state.cipher_size) {
    return make_error(ErrorCode::kMalformed, "attachment slot: the answer is out of shape");
  }
  secure_zero(state.token.data(), state.token.size());
  state.slot_id = slot.id();
  state.token = slot.upload_token();
  state.path = slot.path();
  ++stats_.new_slots;
  return Status::ok();
}

Result<AttachmentPointer> AttachmentTransfer::upload(ServerLink& link, const wire::Invite& server,
                                                     const fs::path& file, const fs::path& work_dir,
                                                     ProgressFn progress) {
  return upload(link, http_options(server), file, work_dir, std::move(progress));
}

Result<AttachmentPointer> AttachmentTransfer::upload(ServerLink& link,
                                                     const transport::ClientOptions& http_opts,
                                                     const fs::path& file, const fs::path& work_dir,
                                                     ProgressFn progress) {
  cancelled_.store(false);
  stats_ = TransferStats{};
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    return make_error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                      "attachment: cannot read the file");
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(ErrorCode::kInvalidArgument, "attachment: not a regular file");
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size > options_.max_size) {
    return make_error(ErrorCode::kTooLarge, "attachment: larger than the allowed size");
  }
  std::error_code ec;
  if (!fs::is_directory(work_dir, ec)) {
    fs::create_directories(work_dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "attachment: cannot create the work directory");
    fs::permissions(work_dir, fs::perms::owner_all, ec);
  }

  // The upload's identity: this file, unchanged.
  const std::string abs = fs::absolute(file, ec).lexically_normal().string();
  const std::string ident = std::string("parley-upload-v1") + '\0' + abs + '\0' +
                            std::to_string(file_size) + '\0' + std::to_string(st.st_mtim.tv_sec) +
                            "." + std::to_string(st.st_mtim.tv_nsec) + '\0' +
                            std::to_string(st.st_ino);
  const std::string id = to_hex(ByteView(crypto::sha256(as_bytes(ident))).first(16));
  const fs::path state_path = work_dir / ("upload-" + id + ".state");
  std::unique_ptr<UploadState> state;

  if (fs::exists(state_path, ec)) {
    auto loaded = UploadState::load(state_path, options_.max_size);
    if (loaded && (*loaded)->plain_size == file_size) {
      (*loaded)->enc_path = work_dir / ("upload-" + id + ".enc");
      auto enc_digest = sha256_file((*loaded)->enc_path);
      if (enc_digest && constant_time_equal(*enc_digest, (*loaded)->digest)) {
        state = std::move(*loaded);
        stats_.resumed_state = true;
      }
    }
    if (!state) internal::remove_quietly(state_path);  // unusable: start over
  }
  if (!state) {
    state = std::make_unique<UploadState>();
    state->enc_path = work_dir / ("upload-" + id + ".enc");
    PARLEY_ASSIGN_OR_RETURN(
        EncryptedAttachmentFile enc,
        encrypt_attachment_file(file, state->enc_path, rng_, options_.max_size));
    if (enc.plaintext_size != file_size) {  // replaced between stat() and open()
      internal::remove_quietly(state->enc_path);
      return make_error(ErrorCode::kIo, "attachment: the file changed while being encrypted");
    }
    state->key = std::move(enc.key);
    state->digest = Bytes(enc.digest.begin(), enc.digest.end());
    state->sha256 = Bytes(enc.plaintext_sha256.begin(), enc.plaintext_sha256.end());
    state->plain_size = enc.plaintext_size;
    state->cipher_size = enc.ciphertext_size;
    state->file_name = file.filename().string();
    Status s = request_slot(link, *state);
    if (s.is_ok()) s = state->save(state_path);
    if (!s.is_ok()) {
      internal::remove_quietly(state->enc_path);
      return s;
    }
  }

  transport::HttpsClient http(http_opts);
  PARLEY_TRY(send_rest(link, http, *state, state_path, progress));

  AttachmentPointer out;
  out.path = state->path;
  out.key = std::move(state->key);
  out.digest = state->digest;
  out.size = state->plain_size;
  out.file_name = state->file_name;
  out.sha256 = state->sha256;
  internal::remove_quietly(state_path);
  internal::remove_quietly(state->enc_path);
  internal::sync_dir(work_dir).ignore();  // the upload is done; a stale state only costs a HEAD
  return out;
}

Status AttachmentTransfer::send_rest(ServerLink& link, transport::HttpsClient& http,
                                     UploadState& state, const fs::path& state_path,
                                     const ProgressFn& progress) {
  PARLEY_ASSIGN_OR_RETURN(File enc, File::open_read(state.enc_path));
  PARLEY_ASSIGN_OR_RETURN(const std::uint64_t enc_size, enc.size());
  const std::uint64_t total = state.cipher_size;
  if (enc_size != total) return make_error(ErrorCode::kIo, "attachment: ciphertext file changed");
  Bytes buf(static_cast<std::size_t>(std::min<std::uint64_t>(options_.chunk_size, total)));
  std::optional<std::uint64_t> offset;  // unknown: ask the server
  bool first_head = true;
  bool renewed = false;
  int failures = 0;
  Status last = make_error(ErrorCode::kUnavailable, "attachment upload failed");

  for (;;) {
    if (cancelled_.load()) return cancelled_error();
    if (!offset) {
      auto head = http.head(state.path, state.token);
      if (!head) {
        last = head.error();
        if (!retryable(last) || !retry_after_failure(failures)) return last;
        continue;
      }
      if (head->status == 404 || head->status == 403 || head->status == 401) {
        // The slot expired or the server forgot it: the same ciphertext goes to a new slot.
        if (renewed)
          return make_error(ErrorCode::kNotFound, "attachment slot: refused by the server");
        renewed = true;
        PARLEY_TRY(request_slot(link, state));
        PARLEY_TRY(state.save(state_path));
        continue;
      }
      if (head->status != 200) {
        last = make_error(ErrorCode::kUnavailable,
                          "attachment: server answered " + std::to_string(head->status));
        if (!retry_after_failure(failures)) return last;
        continue;
      }
      auto have = parse_u64(head->header("Upload-Offset"));
      auto length = parse_u64(head->header("Upload-Length"));
      if (!have || !length || *length != total || *have > total) {
        return make_error(ErrorCode::kMalformed,
                          "attachment: the server's upload state is out of shape");
      }
      offset = *have;
      if (first_head) {
        stats_.resumed_from = *have;
        first_head = false;
      }
      notify(progress, *offset, total);
    }
    if (*offset == total) return Status::ok();

    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - *offset));
    const ByteView chunk = ByteView(buf).first(n);
    PARLEY_TRY(enc.read_exact_at(std::span<std::uint8_t>(buf).first(n), *offset));
    stats_.bytes_sent += n;
    auto put = http.put_range(state.path, state.token, *offset, chunk, total);
    if (!put) {
      last = put.error();
      if (!retryable(last) || !retry_after_failure(failures)) return last;
      offset.reset();  // part of the chunk may be stored: ask
      continue;
    }
    const unsigned code = put->status;
    if (code == 200 || code == 308) {
      const std::uint64_t expected = *offset + n;
      const auto now = code == 200 ? std::optional<std::uint64_t>(total)
                                   : parse_u64(put->header("Upload-Offset"));
      // The server answers with what it holds, which is more when another connection of ours
      // (a part sent before a reconnect) went further: go on from there.
      if (now && *now >= expected && *now <= total) {
        offset = *now;
        failures = 0;
        notify(progress, *now, total);
        continue;
      }
      last =
          make_error(ErrorCode::kMalformed, "attachment: the server stored an unexpected amount");
      if (!retry_after_failure(failures)) return last;
      offset.reset();
      continue;
    }
    if (code == 409 || code == 401 || code == 403 || code == 404 || code >= 500) {
      // Out of step, slot gone or a server error: ask (HEAD handles a lost slot).
      last = make_error(code >= 500 ? ErrorCode::kUnavailable : ErrorCode::kMalformed,
                        "attachment: server answered " + std::to_string(code));
      if (!retry_after_failure(failures)) return last;
      offset.reset();
      continue;
    }
    return make_error(code == 413 ? ErrorCode::kTooLarge : ErrorCode::kMalformed,
                      "attachment: server refused the upload (" + std::to_string(code) + ")");
  }
}

// ---- Download -----------------------------------------------------------------------------------

Status AttachmentTransfer::download(const wire::Invite& server, const AttachmentPointer& pointer,
                                    const fs::path& dest_dir, ProgressFn progress,
                                    fs::path* saved_as) {
  return download(http_options(server), pointer, dest_dir, std::move(progress), saved_as);
}

Status AttachmentTransfer::download(const transport::ClientOptions& http_opts,
                                    const AttachmentPointer& pointer, const fs::path& dest_dir,
                                    ProgressFn progress, fs::path* saved_as) {
  cancelled_.store(false);
  stats_ = TransferStats{};
  if (pointer.key.size() != kAttachmentKeySize || pointer.digest.size() != kAttachmentDigestSize ||
      pointer.sha256.size() != 32 || !valid_attachment_path(pointer.path)) {
    return make_error(ErrorCode::kMalformed, "attachment pointer is out of shape");
  }
  if (pointer.size > options_.max_size) {
    return make_error(ErrorCode::kTooLarge, "attachment: larger than the allowed size");
  }
  std::error_code ec;
  if (!fs::is_directory(dest_dir, ec)) {
    return make_error(ErrorCode::kNotFound, "attachment: no such destination directory");
  }
  const std::uint64_t total = attachment_ciphertext_size(pointer.size);
  const fs::path part =
      dest_dir / (".parley-" + to_hex(ByteView(pointer.digest).first(16)) + ".part");

  transport::HttpsClient http(http_opts);
  Status fetched = fetch_rest(http, pointer, total, part, progress);
  if (!fetched.is_ok()) {
    if (fetched.code() == ErrorCode::kMalformed) internal::remove_quietly(part);
    return fetched;
  }
  AttachmentExpectation expect;
  expect.key = pointer.key.view();
  expect.digest = pointer.digest;
  expect.plaintext_size = pointer.size;
  expect.plaintext_sha256 = pointer.sha256;
  expect.max_plaintext_size = options_.max_size;
  auto saved =
      decrypt_attachment_file(part, dest_dir, safe_attachment_file_name(pointer.file_name), expect);
  if (!saved) {
    const ErrorCode c = saved.error().code();
    if (c == ErrorCode::kBadMac || c == ErrorCode::kDecryptFailed || c == ErrorCode::kMalformed) {
      internal::remove_quietly(part);  // resuming cannot fix these bytes
    }
    return saved.error();
  }
  internal::remove_quietly(part);
  if (saved_as != nullptr) *saved_as = *saved;
  return Status::ok();
}

Status AttachmentTransfer::fetch_rest(transport::HttpsClient& http,
                                      const AttachmentPointer& pointer, std::uint64_t total,
                                      const fs::path& part, const ProgressFn& progress) {
  PARLEY_ASSIGN_OR_RETURN(File out, File::open_or_create(part));
  PARLEY_ASSIGN_OR_RETURN(std::uint64_t have, out.size());
  if (have > total) {
    PARLEY_TRY(out.truncate(0));
    have = 0;
  }
  stats_.resumed_from = have;
  notify(progress, have, total);
  int failures = 0;
  while (have < total) {
    if (cancelled_.load()) {
      PARLEY_TRY(out.sync());
      return cancelled_error();
    }
    const std::uint64_t want = std::min<std::uint64_t>(options_.chunk_size, total - have);
    // A server that ignores the range may answer the first request with the whole file.
    auto got = http.get(pointer.path, have, want, have == 0 ? std::max(want, total) : want);
    if (!got) {
      if (!retryable(got.error()) || !retry_after_failure(failures)) return got.error();
      continue;
    }
    const unsigned code = got->status;
    if (code == 404) return make_error(ErrorCode::kNotFound, "attachment: not on the server");
    if (code >= 500) {
      if (!retry_after_failure(failures)) {
        return make_error(ErrorCode::kUnavailable,
                          "attachment: server answered " + std::to_string(code));
      }
      continue;
    }
    const std::string& body = got->body;
    bool fits = false;
    if (code == 206) {
      auto range = parse_content_range(got->header("Content-Range"));
      fits = range && range->first == have && range->total == total && !body.empty() &&
             body.size() <= want && range->last == have + body.size() - 1;
    } else if (code == 200) {
      fits = have == 0 && body.size() == total;  // a server that ignored the Range
    }
    if (!fits) {
      return make_error(ErrorCode::kMalformed,
                        "attachment: the server's answer does not fit the pointer (" +
                            std::to_string(code) + ")");
    }
    PARLEY_TRY(out.write_all_at(as_bytes(body), have));
    have += body.size();
    stats_.bytes_received += body.size();
    failures = 0;
    notify(progress, have, total);
  }
  PARLEY_TRY(out.sync());
  return out.close();
}

}  // namespace parley::client
