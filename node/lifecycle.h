// Daemon lifecycle pieces: the data directory, the pid lock that keeps two
// daemons out of one data dir, the clock seam, and graceful-stop signals.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "util/status.h"

namespace tipd::node {

// Makes `datadir` usable: creates it (and missing parents) with mode 0700 if
// it does not exist. An existing directory keeps its mode. Fails with
// kFailedPrecondition if the path exists but is not a directory, and with
// kPermissionDenied if it is not writable and searchable by this process;
// kIOError for other failures. Messages name the path.
Status PrepareDataDir(const std::filesystem::path& datadir);

// An exclusive advisory lock (flock) on `<datadir>/tipd.pid`, which holds the
// owner's pid in decimal followed by a newline. Held until destruction (or
// until the process dies: the kernel drops flock locks with the last
// descriptor, so a crash never leaves a stale lock). The file is left in place
// (truncated) on release: unlinking it would let two later processes lock two
// different inodes. The descriptor is close-on-exec, so child processes do not
// inherit the lock.
class PidLock {
 public:
  // Fails with kFailedPrecondition "data dir X is in use by pid N" if another
  // open file description holds the lock (another process, or a second
  // PidLock in this one); kIOError if the file cannot be opened or written.
  // REQUIRES: datadir exists (see PrepareDataDir).
  static Result<PidLock> Acquire(const std::filesystem::path& datadir);

  PidLock(PidLock&& other) noexcept;
  PidLock& operator=(PidLock&& other) noexcept;
  PidLock(const PidLock&) = delete;
  PidLock& operator=(const PidLock&) = delete;
  ~PidLock();

  const std::filesystem::path& path() const { return path_; }

 private:
  PidLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  void Release();
  int fd_ = -1;
  std::filesystem::path path_;
};

// The time seam: logic takes a Clock&, never reads the system clock itself.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, milliseconds since the Unix epoch. May jump; use for
  // timestamps shown to people or written in records, not for timeouts.
  virtual int64_t NowMs() const = 0;
  // Monotonic time for timeouts and intervals.
  virtual std::chrono::steady_clock::time_point SteadyNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
  std::chrono::steady_clock::time_point SteadyNow() const override;
};

// A clock that moves only when told. Thread-safe.
class ManualClock final : public Clock {
 public:
  // Starts at `now_ms` wall time and at steady_clock's epoch + 1h.
  explicit ManualClock(int64_t now_ms = 1'700'000'000'000);
  int64_t NowMs() const override { return now_ms_.load(); }
  std::chrono::steady_clock::time_point SteadyNow() const override;
  // Moves both clocks forward by `ms`. REQUIRES: ms >= 0.
  void AdvanceMs(int64_t ms);
  // Sets the wall clock only (it may go backwards, as a real one can).
  void SetNowMs(int64_t now_ms) { now_ms_.store(now_ms); }

 private:
  std::atomic<int64_t> now_ms_;
  std::atomic<int64_t> steady_ms_;
};

// SIGTERM/SIGINT (and optionally SIGHUP) delivered as handlers on an
// io_context, via boost::asio::signal_set.
//
// The first SIGTERM or SIGINT calls `on_stop(signal_number)` once, on the
// io_context's thread; the owner then stops its services in order. A second
// SIGTERM/SIGINT while stopping logs "second signal, exiting now" and ends the
// process at once with std::_Exit(128 + signal) (no destructors run; the data
// stores are crash-safe). SIGHUP calls `on_hup` each time if one was given
// (e.g. ReopenLogFile); if none was given SIGHUP is not caught.
//
// Only one ShutdownSignals should exist per process (asio signal_sets share
// process-wide handlers). Destroying it (or Cancel) stops listening; it must
// be destroyed before the io_context.
class ShutdownSignals {
 public:
  ShutdownSignals(boost::asio::io_context& io, std::function<void(int signal_number)> on_stop,
                  std::function<void()> on_hup = {});
  ~ShutdownSignals();
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  // Stops listening; pending handlers complete with operation_aborted and do
  // nothing. Idempotent.
  void Cancel();
  // True once a stop signal arrived.
  bool stop_requested() const;

 private:
  // Shared with pending handlers so they stay valid after destruction.
  struct State;
  static void WaitForStop(const std::shared_ptr<State>& state);
  static void WaitForHup(const std::shared_ptr<State>& state);
  std::shared_ptr<State> state_;
};

}  // namespace tipd::node
