#pragma once
// Verifier for Signal Protocol v3 transcripts in the schema of shared/vectors/signal-v3/.

#include <string>

namespace parley::vectors {

struct Report {
  int passed = 0;
  int failed = 0;
  void check(bool ok, const std::string& what, const std::string& detail = "");
};

// Runs every check of one transcript file, printing a line per check into stdout.
void verify_signal_v3_file(const std::string& path, Report& report);

}  // namespace parley::vectors
