#pragma once
// Files that hold secrets (keys, tokens): written so that no one else can read them, not even
// for a moment, and so that a crash leaves the old file or the new one, never a mix.

#include <string>
#include <string_view>

#include "base/status.h"

namespace parley {

// Writes `data` to PATH.tmp (created with mode 0600, no symlink followed), syncs it, renames it
// over `path` and syncs the directory. kIo naming the path and the reason; the temporary file is
// then removed and `path` is left as it was.
Status write_private_file(const std::string& path, std::string_view data);

// Syncs the directory that holds `path`, so that a name just created or renamed there survives
// a power cut. kIo naming the directory and the reason.
Status sync_parent_directory(const std::string& path);

}  // namespace parley
