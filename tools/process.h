// Child processes for `tipd devnet` and the integration tests: start a binary
// with stdout+stderr appended to a log file and/or captured in memory, wait
// for its output to contain a string or for it to exit (always against a
// deadline, never by sleeping), signal it. A child that is still running when
// its ChildProcess is destroyed is killed (SIGKILL) and reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/status.h"

namespace tipd::tools {

struct ProcessOptions {
  // argv[0] is the path of the binary (no PATH search).
  std::vector<std::string> argv;
  // stdout and stderr are appended here (created 0600). Empty: not kept on
  // disk, which needs `capture`.
  std::filesystem::path log;
  // Also keep the output in memory (read by a background thread from a pipe).
  // Without it the child writes to `log` directly and output waits read the
  // file: right for long-running children whose output must not grow in
  // memory, and whose log must outlive this process.
  bool capture = false;
  // Put the child in its own process group, so a Ctrl-C in the terminal
  // reaches only this process (which then stops its children in order).
  bool new_process_group = false;
  // If non-zero, the child gets this signal when the thread that started it
  // exits (PR_SET_PDEATHSIG): a killed parent leaves no children behind.
  int parent_death_signal = 0;
  // Names the child in messages; empty: argv[0].
  std::string name;
  // Written to the log if exec fails: "<exec_tag>: exec failed" (or just
  // "exec failed" when empty); the child then exits with 127.
  std::string exec_tag;
};

class ChildProcess {
 public:
  using Clock = std::chrono::steady_clock;
  // Consulted between slices (at most 50 ms) of a wait; true ends the wait
  // with kInterrupted (the devnet stops waiting on SIGINT/SIGTERM this way).
  using Interrupt = std::function<bool()>;
  enum class Outcome { kDone, kTimedOut, kExited, kInterrupted };

  // Starts the child: stdin from /dev/null, an empty signal mask and default
  // SIGPIPE. Fails if the log cannot be opened or fork fails; an exec failure
  // shows as exit code 127.
  static Result<std::unique_ptr<ChildProcess>> Start(ProcessOptions options);
  // The tests' shorthand: output captured and appended to `log_path`;
  // nullptr (with the reason in *error) on failure.
  static std::unique_ptr<ChildProcess> Start(const std::vector<std::string>& argv,
                                             const std::filesystem::path& log_path,
                                             std::string* error);
  // Kills (SIGKILL) a child that is still running and reaps it.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::filesystem::path& log_path() const { return log_path_; }
  // Reaps the child if it has exited; true while it runs.
  bool Running();
  // The exit code (128 + signal if killed) once reaped.
  std::optional<int> exit_code() const { return exit_code_; }
  // Sends `signo` unless the child was reaped (its pid may be reused).
  void Signal(int signo) const;
  // SIGKILL, then reap (blocks until the kernel has it gone).
  void Kill();

  // Waits until the output from `from_offset` on (offsets count this child's
  // output only, not what the log held before) contains `needle`. kDone sets
  // *end (if given) to the offset just past the match; kExited: the child
  // exited without printing it.
  Outcome AwaitOutput(std::string_view needle, Clock::time_point deadline, size_t from_offset = 0,
                      size_t* end = nullptr, const Interrupt& interrupt = {});
  // The same with a timeout: the offset past the match, or nullopt.
  std::optional<size_t> WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout,
                                      size_t from_offset = 0);
  // Waits for the child to exit and reaps it (kDone; exit_code() is set). With
  // `capture`, also waits (to the same deadline) for the rest of its output.
  Outcome AwaitExit(Clock::time_point deadline, const Interrupt& interrupt = {});
  // The same with a timeout: the exit code, or nullopt at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

  // The child's output so far: captured, or read back from the log.
  std::string Output() const;

 private:
  ChildProcess() = default;
  void ReadLoop(int fd, int log_fd);  // closes both
  // Blocks until the child exits or `timeout` passes.
  void PollExit(std::chrono::milliseconds timeout) const;
  bool TryReap(bool block);

  pid_t pid_ = -1;
  int pidfd_ = -1;  // -1 if the kernel has no pidfd_open: exits are polled
  std::string name_;
  std::filesystem::path log_path_;
  uint64_t log_start_ = 0;  // the log's size when the child started
  bool capture_ = false;
  std::optional<int> exit_code_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;  // guarded by mu_ (capture only)
  bool eof_ = false;    // guarded by mu_ (capture only)
};

}  // namespace tipd::tools
