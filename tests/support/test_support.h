// Helpers shared by every test binary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace tipd::testing {

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tipd-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Seed for randomized tests: $TIPD_TEST_SEED if set, else a fresh one. Tests
// print it on failure so a run can be replayed.
uint64_t TestSeed();

}  // namespace tipd::testing
