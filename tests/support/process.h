// Real child processes for integration tests: start a binary with its output
// captured, wait for a log line or for exit (with deadlines, never sleeps),
// signal it. Used to run real `tipd` daemons on loopback.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tipd::testing {

class Process {
 public:
  // Starts argv[0] with `argv`; stdout and stderr are read by a background
  // thread into memory and appended to `log_path` (for post-mortems).
  // Returns nullptr (with the reason in *error) if fork/exec fails.
  static std::unique_ptr<Process> Start(const std::vector<std::string>& argv,
                                        const std::filesystem::path& log_path, std::string* error);
  // Kills (SIGKILL) a child that is still running and reaps it.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int signo) const;
  // Waits until the output (from `from_offset` on) contains `needle`; returns
  // the offset just past the match, or nullopt at the deadline or if the
  // process exited without printing it.
  std::optional<size_t> WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout,
                                      size_t from_offset = 0);
  // Waits for the process to exit; returns its exit code (128 + signal if
  // killed), or nullopt at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // Everything captured so far.
  std::string Output() const;
  const std::filesystem::path& log_path() const { return log_path_; }

 private:
  Process() = default;
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  std::filesystem::path log_path_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;  // guarded by mu_
  bool eof_ = false;    // guarded by mu_
  std::optional<int> exit_code_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
// released). Good enough on a test machine.
uint16_t FreeLoopbackPort();

}  // namespace tipd::testing
