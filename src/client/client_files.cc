// Client: sending and receiving files (attachments.h does the transfer).
#include <system_error>

#include "client/attachments.h"
#include "client/client.h"
#include "client/content.h"
#include "client/internal/client_util.h"
#include "client/server_link.h"

namespace parley::client {
namespace {

// Where interrupted uploads keep their state, and received files land by default.
constexpr const char* kUploadDir = "uploads";
constexpr const char* kDownloadDir = "files";
// Connections an upload may go through before send_file gives up (the state file stays: the
// next send of the same file resumes).
constexpr int kUploadConnections = 3;

}  // namespace

Status Client::send_file(std::string_view to, bool to_group, const std::filesystem::path& file,
                         std::string_view caption, const TransferProgress& progress) {
  PARLEY_TRY(check_utf8("a caption", caption));
  PARLEY_TRY(check_utf8("a file name", file.filename().string()));
  std::string recipient;
  Bytes group_id;
  if (to_group) {
    PARLEY_ASSIGN_OR_RETURN(Group g, find_group(to));
    if (g.left) return make_error(ErrorCode::kPermissionDenied, "you are not in this group");
    group_id = g.id;
    recipient = std::string(kGroupRecipientPrefix) + to_hex(g.id);
  } else {
    PARLEY_ASSIGN_OR_RETURN(recipient, canonical_address(to));
  }
  AttachmentTransfer transfer(rng_);
  const bool half_failpoint = std::getenv("PARLEY_FAILPOINT") != nullptr;
  auto report = [&](std::uint64_t done, std::uint64_t total) {
    if (half_failpoint && done * 2 >= total && done < total) failpoint("upload_half");
    if (progress) progress(done, total);
  };
  // A link that fails during the upload is replaced (racing the transports again) and the
  // upload resumes from what the server holds, by range.
  Result<AttachmentPointer> pointer = make_error(ErrorCode::kUnavailable, "not started");
  for (int attempt = 0; attempt < kUploadConnections; ++attempt) {
    PARLEY_TRY(ensure_link());
    // HTTPS goes the way the link went (proxy, bridge or pluggable transport).
    const transport::ClientOptions http = link_options_;
    pointer = transfer.upload(*link_, http, file, profile_->dir() / kUploadDir, report);
    if (pointer || !transient(pointer.error())) break;
    drop_link(pointer.error());
  }
  if (!pointer) return pointer.error();

  Content content;
  content.set_timestamp(static_cast<std::uint64_t>(clock_.now_ms()));
  auto* data = content.mutable_data();
  data->set_text(std::string(caption));
  to_attachment_proto(*pointer, data->mutable_attachment());
  if (to_group) {
    data->mutable_group()->set_id(std::string(as_chars(group_id)));
    data->mutable_group()->set_kind(GroupContext::MESSAGE);
  }
  const Bytes payload = encode_content(content);
  data->mutable_attachment()->mutable_key()->assign(data->attachment().key().size(), '\0');
  PARLEY_ASSIGN_OR_RETURN(OutboxItem item, store_->outbox_put(recipient, payload));
  return send_until_acknowledged(item);
}

void Client::fetch_attachment(const Attachment& proto, const ReceiveOptions& options,
                              IncomingMessage& m) {
  IncomingMessage::File f;
  f.name = safe_attachment_file_name(proto.file_name());
  f.size = proto.size();
  f.sha256 = to_hex(as_bytes(proto.sha256()));
  auto fail = [&](const Status& s) {
    f.error = s.to_string();
    m.attachment = std::move(f);
  };
  Result<AttachmentPointer> pointer = from_attachment_proto(proto);
  if (!pointer) return fail(pointer.error());
  // Called while the link is up: the same route as the link.
  Result<wire::Invite> server = server_invite();
  if (!server) return fail(server.error());
  transport::ClientOptions http = link_options_;
  if (!link_) {
    http = server_options(*server);
  }
  const std::filesystem::path dir =
      options.download_dir.empty() ? profile_->dir() / kDownloadDir : options.download_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(make_error(ErrorCode::kIo, "cannot create " + dir.string()));
  AttachmentTransfer transfer(rng_);
  std::filesystem::path saved;
  Status s = transfer.download(http, *pointer, dir, options.progress, &saved);
  if (!s.is_ok()) return fail(s);
  f.path = saved.string();
  m.attachment = std::move(f);
}

}  // namespace parley::client
