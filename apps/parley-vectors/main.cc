// parley-vectors: checks parley against recorded protocol transcripts.
//
//   parley-vectors signal-v3 FILE...
//
// Prints one line per check and ends with "N passed, M failed"; exits 1 on any failure,
// 2 on a usage error.
#include <cstdio>
#include <string>
#include <vector>

#include "signal_v3.h"

int main(int argc, char** argv) {
  if (argc < 3 || std::string(argv[1]) != "signal-v3") {
    std::fprintf(stderr, "usage: parley-vectors signal-v3 FILE...\n");
    return 2;
  }
  parley::vectors::Report report;
  for (int i = 2; i < argc; ++i) parley::vectors::verify_signal_v3_file(argv[i], report);
  std::printf("%d passed, %d failed\n", report.passed, report.failed);
  return report.failed == 0 ? 0 : 1;
}
