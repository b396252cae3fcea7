#pragma once
// Internal to src/transport: the buffer a WebSocket connection reads its messages into, which
// holds no memory between messages.
//
// Beast prepares the first read of a message before any byte of it has come: min(1,536,
// max_size() - size()) bytes. With a beast::flat_buffer every idle connection kept those
// 1,536 bytes for as long as it waited (docs/benchmarks.md, session 21). While it is empty this
// buffer reports a max_size() of 1, so the first read of a message is of one byte; from the
// first byte on it is a plain flat_buffer, which Beast grows to the frame's size as before.
// release() hands the memory back after each message.
//
// The price is one more small read per message out of Beast's own buffer (no system call).

#include <boost/beast/core/flat_buffer.hpp>

#include <cstddef>

namespace parley::transport::internal {

class MessageBuffer {
 public:
  using const_buffers_type = boost::beast::flat_buffer::const_buffers_type;
  using mutable_buffers_type = boost::beast::flat_buffer::mutable_buffers_type;

  // The DynamicBuffer (v1) requirements Beast reads into.
  std::size_t size() const { return b_.size(); }
  std::size_t max_size() const { return b_.size() == 0 ? 1 : b_.max_size(); }
  std::size_t capacity() const { return b_.capacity(); }
  const_buffers_type data() const { return b_.data(); }
  const_buffers_type cdata() const { return b_.cdata(); }
  mutable_buffers_type data() { return b_.data(); }
  mutable_buffers_type prepare(std::size_t n) { return b_.prepare(n); }
  void commit(std::size_t n) { b_.commit(n); }
  void consume(std::size_t n) { b_.consume(n); }

  // Empties the buffer and frees its memory.
  void release() {
    b_.clear();
    b_.shrink_to_fit();
  }

 private:
  boost::beast::flat_buffer b_;
};

}  // namespace parley::transport::internal
