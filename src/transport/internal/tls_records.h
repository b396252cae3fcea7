#pragma once
// Internal to src/transport: TLS 1.3 record protection (RFC 8446 section 5) for a server
// connection whose handshake OpenSSL has completed.
//
// Why: an OpenSSL 3.0 `SSL` object costs about 13.7 KB for as long as the connection lives,
// more than the whole 8 KB a connection may take (docs/benchmarks.md, session 16). Kernel TLS,
// the usual way to drop it after the handshake, is not in this machine's kernel. So TlsSocket
// takes the application traffic secrets from OpenSSL when the handshake ends (its key log
// callback), frees the `SSL`, and protects records here with only the keys, sequence numbers and
// buffers a connection needs (an idle one holds no buffer).
// The cryptography stays OpenSSL's: the AEADs through EVP, the key schedule through its
// "TLS13-KDF". What is written here is the framing around them: the record header, the nonce,
// the inner content type and its padding, and KeyUpdate.
//
// Only TLS 1.3 with the three suites below is handed over; a TLS 1.2 connection (or any other
// suite) keeps its `SSL` (tls_socket.cc).
//
// Not thread-safe: one connection's records, on its strand. The cipher contexts belong to the
// thread, a bounded cache keyed on use (tls_records.cc), so an idle connection holds no EVP
// state.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"

namespace parley::transport::internal {

class TlsRecords {
 public:
  enum class Suite { kAes128GcmSha256, kAes256GcmSha384, kChaCha20Poly1305Sha256 };
  // The outer and inner content types (RFC 8446 section 5.1) this layer deals in.
  enum ContentType : std::uint8_t { kAlert = 21, kHandshake = 22, kApplicationData = 23 };
  // Alert descriptions (RFC 8446 section 6) this layer sends or tells apart.
  enum Alert : std::uint8_t {
    kCloseNotify = 0,
    kUnexpectedMessage = 10,
    kBadRecordMac = 20,
    kRecordOverflow = 22,
    kIllegalParameter = 47,
    kDecodeError = 50,
    kInternalError = 80,
  };

  static constexpr std::size_t kHeaderSize = 5;
  static constexpr std::size_t kTagSize = 16;
  static constexpr std::size_t kMaxPlaintext = 16384;  // 2^14
  // TLSCiphertext.length may be at most 2^14 + 256.
  static constexpr std::size_t kMaxCiphertext = kMaxPlaintext + 256;
  static constexpr std::size_t kMaxRecord = kHeaderSize + kMaxCiphertext;
  // What sealing adds to a plaintext: header, inner content type, tag.
  static constexpr std::size_t kOverhead = kHeaderSize + 1 + kTagSize;

  // The suite of an IANA cipher suite id (0x1301..0x1303), or nullopt for any other.
  static std::optional<Suite> suite_for(std::uint16_t cipher_id);

  // `read_secret` and `write_secret` are the peer's and our application traffic secrets (the
  // hash's length); `read_seq` and `write_seq` the records each side has already protected
  // with them. kInvalidArgument on a secret of the wrong length, kInternal when OpenSSL fails.
  // `records_per_key`: how many records each of our write keys protects before we change it
  // (write_key_worn); kRecordsPerKey but in tests, which lower it to reach the change.
  static Result<std::unique_ptr<TlsRecords>> make(Suite suite, ByteView read_secret,
                                                  ByteView write_secret, std::uint64_t read_seq,
                                                  std::uint64_t write_seq,
                                                  std::uint32_t records_per_key = kRecordsPerKey);

  // Copying would share a key and its sequence number: nonce reuse.
  TlsRecords(const TlsRecords&) = delete;
  TlsRecords& operator=(const TlsRecords&) = delete;
  ~TlsRecords();

  // Whether our next record should be a KeyUpdate (RFC 8446 section 5.5: an AES-GCM key must
  // change long before 2^24.5 full records; ours change every 2^23, whatever the suite).
  static constexpr std::uint32_t kRecordsPerKey = std::uint32_t{1} << 23;
  bool write_key_worn() const { return write_.seq >= records_per_key_; }

  // Seals `n` bytes (at most kMaxPlaintext) as one record with inner type `type` into `out`,
  // which must hold n + kOverhead bytes. `plain` may be out + kHeaderSize (sealed in place) but
  // must not overlap the header. Returns the record's size; kInternal when OpenSSL
  // fails, kResourceExhausted when the sequence number would wrap (the connection must end).
  Result<std::size_t> seal(ContentType type, const std::uint8_t* plain, std::size_t n,
                           std::uint8_t* out);

  // The size of the record whose header starts `data`: 0 while fewer than kHeaderSize bytes are
  // there; an error naming the alert to send for a header no TLS 1.3 peer sends (a wrong outer
  // type or version, a length over kMaxCiphertext or under kTagSize + 1).
  struct Fault {
    Alert alert;
    const char* what;
  };
  static std::optional<Fault> check_header(const std::uint8_t* data, std::size_t n,
                                           std::size_t* record_size);

  // Opens one whole record (its header checked) in place. On success the inner plaintext is
  // record[kHeaderSize, kHeaderSize + size) and its type is `type`.
  struct Opened {
    ContentType type;
    std::size_t size;
  };
  struct OpenResult {
    std::optional<Opened> opened;
    Fault fault{kBadRecordMac, ""};
  };
  OpenResult open(std::uint8_t* record, std::size_t size);

  // KeyUpdate (RFC 8446 section 7.2): the next secret of one direction, and its key and IV.
  Status update_read_key();
  Status update_write_key();

  Suite suite() const { return suite_; }
  std::uint64_t read_seq() const { return read_.seq; }
  std::uint64_t write_seq() const { return write_.seq; }

 private:
  // Kept inline, not in SecretBytes: four heap blocks a connection were a tenth of an idle
  // connection's memory. Zeroized when replaced and when destroyed.
  struct Direction {
    std::uint8_t secret[48] = {};
    std::size_t secret_size = 0;
    std::uint8_t key[32] = {};
    std::uint8_t iv[12] = {};
    std::uint64_t seq = 0;
    std::uint64_t serial = 0;  // which key a thread's cipher context holds (tls_records.cc)
    ~Direction();
  };
  TlsRecords(Suite suite, std::uint32_t records_per_key)
      : suite_(suite), records_per_key_(records_per_key) {}
  Status set_secret(Direction& d, ByteView secret);
  Status next_secret(Direction& d);

  Suite suite_;
  std::uint32_t records_per_key_;  // beside suite_: no larger (memory per idle connection)
  Direction read_;
  Direction write_;
};

}  // namespace parley::transport::internal
