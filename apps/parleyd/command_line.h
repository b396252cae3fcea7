#pragma once
// parleyd's command line: the built-in defaults, then the TOML file named by --config, then the
// flags given, each over the one before (a flag wins even when it equals the default), then the
// checks across keys (server::validate_config).

#include <optional>

#include "server/config.h"

namespace parley::parleyd {

struct CommandLine {
  // The configuration to run with; empty when parleyd should stop at once with exit_status
  // (--help and --version: 0; a bad flag, file or value: non-zero, after saying why on stderr).
  std::optional<server::ServerConfig> config;
  int exit_status = 0;
};

CommandLine parse_command_line(int argc, char** argv);

}  // namespace parley::parleyd
