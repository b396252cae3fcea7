#pragma once
// Attachment files for the HTTP layer: DIR/attachments/<id>, metadata in the store. The bearer
// token is checked by its SHA-256 in constant time. Each call completes on the store's thread;
// the HTTP layer resumes the request on its connection's thread.

#include <memory>

#include "transport/server.h"

namespace parley::server {

class Service;
std::unique_ptr<transport::HttpFiles> make_attachment_files(Service& service);

}  // namespace parley::server
