#pragma once
// Attachment files for the HTTP layer: DIR/attachments/<id>, metadata in the store. The bearer
// token is checked by its SHA-256 in constant time. Calls block on the store briefly (they run on
// HTTP connection strands, off the message path).

#include <memory>

#include "transport/server.h"

namespace parley::server {

class Service;
std::unique_ptr<transport::HttpFiles> make_attachment_files(Service& service);

}  // namespace parley::server
