#pragma once
// Internal to TlsSocket (tls_socket.cc, tls_socket_records.cc): what a server's handshake
// collects for the handoff, and the state of a connection whose records are protected here.

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/secret_bytes.h"
#include "transport/internal/tls_records.h"
#include "transport/internal/tls_socket.h"

namespace parley::transport::internal {

// A record read buffer: the whole of a record always fits in it after compaction, with room to
// read the start of the next.
inline constexpr std::size_t kRecordReadBuffer = TlsRecords::kMaxRecord + 1024;

// Filled by OpenSSL's callbacks while a server handshakes (tls_socket.cc).
struct TlsSocket::Capture {
  SecretBytes client_secret;  // CLIENT_TRAFFIC_SECRET_0
  SecretBytes server_secret;  // SERVER_TRAFFIC_SECRET_0
  // Records OpenSSL sealed with the server's application secret before the handshake returned
  // (its NewSessionTicket messages): the record headers it wrote once that secret was logged.
  // The key log callback runs when OpenSSL switches its write key, after the server's Finished
  // record is made and before the first record under the new key.
  std::uint64_t records_sealed = 0;
  bool unexpected = false;  // a message the handoff cannot account for (a KeyUpdate)
};

struct TlsSocket::Records {
  // At most this much plaintext is sealed for one write (four full records).
  static constexpr std::size_t kWriteBatch = 4 * TlsRecords::kMaxPlaintext;

  std::unique_ptr<TlsRecords> keys;

  // Read side: bytes received and not yet used are rbuf[rpos, rend); the opened record's
  // plaintext not yet read is rbuf[plain_pos, plain_pos + plain_size). The buffer is handed
  // back (to a per-thread spare) whenever nothing is left in it.
  std::unique_ptr<std::uint8_t[]> rbuf;
  std::size_t rpos = 0, rend = 0, plain_pos = 0, plain_size = 0;
  bool drained = false;      // the last recv came back short (see tls_socket.cc's BIO)
  bool peer_closed = false;  // close_notify received

  // Write side: sealed records not yet sent are wbuf[wpos, wend).
  std::unique_ptr<std::uint8_t[]> wbuf;
  std::size_t wcap = 0, wpos = 0, wend = 0;
  // A write (or the close_notify) is sealed and being sent; `taken` is its plaintext size.
  bool write_sealed = false;
  std::size_t taken = 0;
  bool key_update_owed = false;  // the peer asked for our KeyUpdate; sent before more data
  bool close_notify_sent = false;
  // Records in a row that carried no application data (KeyUpdates, empty records): a peer
  // that sends nothing else only makes the server work; ended above kMaxEmptyRecords, as
  // OpenSSL does.
  static constexpr int kMaxEmptyRecords = 32;
  int empty_records = 0;

  // Once set, every operation fails with it.
  boost::system::error_code failed;
};

}  // namespace parley::transport::internal
