#pragma once
// AttachmentTransfer: uploads a file as an encrypted attachment through the server's resumable
// endpoints, and downloads, verifies and decrypts one (docs/protocol.md, "Attachments"; the
// encryption is attachment_cipher.h).
//
// Upload: the file is encrypted into `work_dir` under a fresh random key; a slot is requested
// over the authenticated link (AttachmentSlotRequest); HEAD asks the server how much it holds;
// the rest is PUT in chunks with Content-Range, each chunk retried a bounded number of times
// with jittered exponential back-off (re-asking the offset after a failure, since a cut PUT can
// leave part of a chunk stored). A per-upload state file lets a new AttachmentTransfer (in a
// new process) continue the same upload instead of starting over; it is removed on success.
//
// Download: GETs the ciphertext in ranges into a hidden ".part" file in `dest_dir` (a partial
// download resumes from it), then checks size, MAC and digest before decrypting, checks the
// plaintext's size and SHA-256, and saves it under a sanitized, never-overwriting name.
//
// Every size that comes from the network or a peer is bounded: the pointer's size against
// TransferOptions::max_size, and each server answer against what was asked for.
//
// Upload state file: "<work_dir>/upload-<ID>.state", beside the ciphertext
// "<work_dir>/upload-<ID>.enc". ID is 32 hex characters: the first 16 bytes of
// SHA-256("parley-upload-v1" 0x00 absolute-path 0x00 size 0x00 mtime-ns 0x00 inode), so the
// same unchanged file maps to the same upload. The file is text, mode 0600, replaced atomically;
// the first line is the version, then one "name=value" line per field, in any order:
//   parley-attachment-upload v1
//   key=<128 hex>           the 64-byte attachment key (secret)
//   digest=<64 hex>         SHA-256 of the ciphertext file
//   sha256=<64 hex>         SHA-256 of the plaintext
//   plain_size=<decimal>    plaintext bytes
//   cipher_size=<decimal>   ciphertext bytes (= the slot size)
//   file_name=<hex>         the file name to announce (UTF-8 bytes, hex-encoded)
//   slot_id=<32 hex>        the server's attachment id
//   token=<hex>             the upload bearer token (secret; its bytes, hex-encoded)
//   path=<hex>              the HTTP path of the slot (hex-encoded)
// A state file that does not parse, or whose ciphertext file is missing or no longer has the
// recorded digest, is discarded and the upload starts over. Because it holds the key and the
// token, `work_dir` should be private to the profile.
//
// Thread-safety: one thread drives an AttachmentTransfer; cancel() may be called from any
// thread (also from inside the progress callback).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "base/rng.h"
#include "base/secret_bytes.h"
#include "client/attachment_cipher.h"
#include "client/content.pb.h"
#include "client/server_link.h"
#include "wire/invite.h"

namespace parley::client {

// Progress in ciphertext bytes: `done` of `total`. Called on the transferring thread after each
// chunk (and once at the start with what was already there).
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

// What a message carries to let its recipient fetch an attachment (client::Attachment).
// `key` is secret.
struct AttachmentPointer {
  std::string path;        // HTTP path of the ciphertext on the server
  SecretBytes key;         // kAttachmentKeySize bytes
  Bytes digest;            // SHA-256 of the ciphertext (32 bytes)
  std::uint64_t size = 0;  // plaintext bytes
  std::string file_name;   // as the sender named it: untrusted, sanitized on saving
  Bytes sha256;            // SHA-256 of the plaintext (32 bytes)
};

// Conversions to and from the message field. The proto copies the key into a std::string (not
// zeroized): callers keep such messages short-lived. from_attachment_proto checks the sizes of
// key, digest and sha256 (kMalformed) but not the path (download() does).
void to_attachment_proto(const AttachmentPointer& pointer, Attachment* out);
Result<AttachmentPointer> from_attachment_proto(const Attachment& attachment);

// A name that is safe to create in a directory: the last component after any '/' or '\',
// without control characters, leading dots or spaces (no "..", no hidden files), trailing dots
// or spaces, at most 200 bytes (cut at a UTF-8 boundary); "attachment" when nothing is left.
std::string safe_attachment_file_name(std::string_view untrusted);

struct TransferOptions {
  std::size_t chunk_size = std::size_t{1} << 20;       // bytes per PUT / ranged GET
  std::uint64_t max_size = kDefaultMaxAttachmentSize;  // plaintext bound, both directions
  int max_attempts = 5;                                // per chunk, including the first
  std::chrono::milliseconds backoff_base{250};         // doubled per attempt, with jitter
  std::chrono::milliseconds backoff_max{8000};
  std::chrono::milliseconds call_timeout{15000};  // the slot request
  // How to wait between attempts; empty: std::this_thread::sleep_for. Tests inject a fake.
  std::function<void(std::chrono::milliseconds)> sleep;
};

// What the last upload() or download() did (for progress displays and tests).
struct TransferStats {
  bool resumed_state = false;        // upload: continued from a state file
  std::uint64_t resumed_from = 0;    // bytes the server (upload) or the .part file (download) held
  std::uint64_t bytes_sent = 0;      // upload: PUT body bytes sent, all attempts
  std::uint64_t bytes_received = 0;  // download: GET body bytes received
  std::uint32_t retries = 0;         // failed attempts that were retried
  std::uint32_t new_slots = 0;       // slots requested
};

class AttachmentTransfer {
 public:
  // `rng` (keys, IVs, jitter) must outlive this object; it must be cryptographically secure
  // outside tests.
  explicit AttachmentTransfer(Rng& rng, TransferOptions options = {});

  // Encrypts and uploads `file`, resuming an earlier upload of the same unchanged file from its
  // state file in `work_dir` (created if missing). `link` must be logged in. On success the
  // state and ciphertext files are removed and the pointer is returned (file_name is the
  // file's own name).
  // Errors: kNotFound / kInvalidArgument / kTooLarge for the input file; kIo / kUnavailable for
  // network failures that outlasted the retries, and kUnavailable "cancelled" after cancel() —
  // in both cases the state file stays, so calling upload() again continues; kMalformed when
  // the server's answers are inconsistent; the slot request's own status otherwise.
  [[nodiscard]] Result<AttachmentPointer> upload(ServerLink& link, const wire::Invite& server,
                                                 const std::filesystem::path& file,
                                                 const std::filesystem::path& work_dir,
                                                 ProgressFn progress);
  // The same with the HTTPS requests made with `http` (the route of the current link: proxy,
  // bridge or pluggable transport).
  [[nodiscard]] Result<AttachmentPointer> upload(ServerLink& link,
                                                 const transport::ClientOptions& http,
                                                 const std::filesystem::path& file,
                                                 const std::filesystem::path& work_dir,
                                                 ProgressFn progress);

  // Downloads, verifies and decrypts `pointer`, saving it in `dest_dir` (which must exist) and
  // setting `*saved_as` (if not null) to the path written.
  // Errors: kTooLarge (pointer size above max_size), kMalformed (a bad pointer, or server
  // answers that do not fit it), kNotFound (gone from the server), kBadMac (MAC or digest
  // mismatch), kDecryptFailed (padding, plaintext size or hash), kIo / kUnavailable (network,
  // after retries; the .part file stays so a new call resumes), kUnavailable "cancelled".
  // After a verification failure the .part file is deleted; no plaintext file is ever left.
  [[nodiscard]] Status download(const wire::Invite& server, const AttachmentPointer& pointer,
                                const std::filesystem::path& dest_dir, ProgressFn progress,
                                std::filesystem::path* saved_as);
  [[nodiscard]] Status download(const transport::ClientOptions& http,
                                const AttachmentPointer& pointer,
                                const std::filesystem::path& dest_dir, ProgressFn progress,
                                std::filesystem::path* saved_as);

  // Asks the running transfer to stop after the current chunk (a cancel() before upload() or
  // download() starts is forgotten: each call starts uncancelled).
  void cancel() { cancelled_.store(true); }

  const TransferStats& last_stats() const { return stats_; }

 private:
  struct UploadState;

  Status request_slot(ServerLink& link, UploadState& state);
  Status send_rest(ServerLink& link, transport::HttpsClient& http, UploadState& state,
                   const std::filesystem::path& state_path, const ProgressFn& progress);
  Status fetch_rest(transport::HttpsClient& http, const AttachmentPointer& pointer,
                    std::uint64_t total, const std::filesystem::path& part,
                    const ProgressFn& progress);
  // Counts a failed attempt; false (give up) once max_attempts is reached, else waits first.
  bool retry_after_failure(int& failures);

  Rng& rng_;
  TransferOptions options_;
  TransferStats stats_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace parley::client
