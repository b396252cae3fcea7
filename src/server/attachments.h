#pragma once
// Attachment files for the HTTP layer: DIR/attachments/<id>, metadata in the store. The bearer
// token is checked by its SHA-256 in constant time. Each call completes on the store's thread;
// the HTTP layer resumes the request on its connection's thread.

#include <memory>

#include "transport/server.h"

namespace parley::server {

class Service;
std::unique_ptr<transport::HttpFiles> make_attachment_files(Service& service);

// Whether writing `size` more bytes into DIR/attachments would break the disk reserve
// (attachments.min_free_disk_mb), counted in the metrics when it would. The one check for a
// new slot and for each part of an upload.
bool attachment_breaks_disk_reserve(Service& service, std::uint64_t size);

// Removes the files in DIR/attachments that no attachment in the store names any more: housekeeping
// deletes an expired attachment's row first and its file after the commit, so a crash in between
// leaves the file behind for good. Lists the directory, then looks the files up one at a time,
// each answer handled on the service's io_context; logs event=attachment_sweep with the counts
// when done. A store error stops it until the next start. Call once, on the io_context, at start.
void sweep_orphan_attachment_files(Service& service);

}  // namespace parley::server
