// Runs the real `tipctl` binary (TIPCTL_BINARY) as a child process and
// captures its exit code, stdout and stderr.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace tipd::testing {

struct CliResult {
  int exit_code = -1;  // 128 + signal if killed; -1 if it did not finish in time
  std::string out;
  std::string err;
};

// Runs tipctl with `args`, writing its output under `scratch`. The child's
// TIPD_* variables are cleared, then `env` is set; HOME points inside
// `scratch` so the default datadir is never the user's.
CliResult RunTipctl(const std::filesystem::path& scratch, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(60));

std::ostream& operator<<(std::ostream& os, const CliResult& r);

// The whole content of a file ("" if it cannot be read).
std::string ReadAll(const std::filesystem::path& p);

}  // namespace tipd::testing
