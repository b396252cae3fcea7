// MessageBuffer (internal/message_buffer.h): Beast's WebSocket reads whole messages into it,
// unfragmented and in many frames, of every size around Beast's 1,536-byte first read, and it
// holds no memory once released.
#include "transport/internal/message_buffer.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/websocket.hpp>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

namespace parley::transport::internal {
namespace {

namespace net = boost::asio;
namespace websocket = boost::beast::websocket;
using tcp = net::ip::tcp;

std::string message_of(std::size_t n, std::size_t k) {
  std::string m(n, '\0');
  for (std::size_t i = 0; i < n; ++i) m[i] = static_cast<char>(i * 13 + k);
  return m;
}

TEST(MessageBuffer, HoldsNothingWhenEmptyAndReadsWholeMessages) {
  MessageBuffer empty;
  EXPECT_EQ(empty.max_size(), 1u);  // Beast's first read of a message is then one byte
  EXPECT_EQ(empty.capacity(), 0u);

  const std::vector<std::size_t> sizes = {0, 1, 2, 125, 126, 1535, 1536, 1537, 65536, 200000};
  net::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  std::string client_failed;
  std::thread client([&] {
    try {
      net::io_context cio;
      websocket::stream<tcp::socket> ws(cio);
      ws.next_layer().connect(acceptor.local_endpoint());
      ws.handshake("localhost", "/");
      ws.binary(true);
      for (int pass = 0; pass < 2; ++pass) {
        // The second pass sends each message in frames of at most 1,000 bytes.
        ws.auto_fragment(pass == 1);
        ws.write_buffer_bytes(1000);
        for (std::size_t k = 0; k < sizes.size(); ++k) {
          ws.write(net::buffer(message_of(sizes[k], k)));
        }
      }
      ws.close(websocket::close_code::normal);
    } catch (const std::exception& e) {
      client_failed = e.what();
    }
  });
  websocket::stream<tcp::socket> ws(acceptor.accept());
  ws.accept();
  MessageBuffer buffer;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      boost::system::error_code ec;
      ws.read(buffer, ec);
      ASSERT_FALSE(ec) << ec.message();
      const auto data = buffer.cdata();
      EXPECT_EQ(std::string(static_cast<const char*>(data.data()), data.size()),
                message_of(sizes[k], k))
          << "size " << sizes[k] << ", pass " << pass;
      buffer.release();
      EXPECT_EQ(buffer.capacity(), 0u);
      EXPECT_EQ(buffer.max_size(), 1u);
    }
  }
  boost::system::error_code ec;
  ws.read(buffer, ec);
  EXPECT_EQ(ec, websocket::error::closed);
  client.join();
  EXPECT_EQ(client_failed, "");
}

}  // namespace
}  // namespace parley::transport::internal
