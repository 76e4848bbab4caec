// Daemon lifecycle pieces: the data directory, the pid lock that keeps two
// daemons out of one data dir, and graceful-stop signals. The clock and timer
// seams are in util/clock.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "util/clock.h"
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
