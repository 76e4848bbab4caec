#include "node/lifecycle.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>

#include <boost/asio/signal_set.hpp>

#include "node/logging.h"

namespace tipd::node {
namespace fs = std::filesystem;

namespace {

std::string Errno(int err) { return std::strerror(err); }

}  // namespace

Status PrepareDataDir(const fs::path& datadir) {
  if (datadir.empty()) return Status::InvalidArgument("data dir path is empty");
  std::error_code ec;
  fs::file_status st = fs::status(datadir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::IOError("cannot inspect data dir " + datadir.string() + ": " + ec.message());
  }
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) {
      return Status::FailedPrecondition("data dir " + datadir.string() +
                                        " exists but is not a directory");
    }
  } else {
    fs::path parent = datadir.parent_path();
    if (!parent.empty()) {
      fs::create_directories(parent, ec);
      if (ec) {
        return Status::IOError("cannot create parent directories of data dir " + datadir.string() +
                               ": " + ec.message());
      }
    }
    if (::mkdir(datadir.c_str(), 0700) != 0 && errno != EEXIST) {
      int err = errno;
      if (err == EACCES || err == EPERM || err == EROFS) {
        return Status::PermissionDenied("cannot create data dir " + datadir.string() + ": " +
                                        Errno(err));
      }
      return Status::IOError("cannot create data dir " + datadir.string() + ": " + Errno(err));
    }
    // mkdir's mode is filtered by the umask; the data dir is exactly 0700.
    if (::chmod(datadir.c_str(), 0700) != 0) {
      return Status::IOError("cannot set mode 0700 on data dir " + datadir.string() + ": " +
                             Errno(errno));
    }
  }
  if (::access(datadir.c_str(), W_OK | X_OK) != 0) {
    int err = errno;
    if (err == EACCES || err == EPERM || err == EROFS) {
      return Status::PermissionDenied("data dir " + datadir.string() +
                                      " is not writable by this user: " + Errno(err));
    }
    return Status::IOError("cannot access data dir " + datadir.string() + ": " + Errno(err));
  }
  return Status::Ok();
}

// ---- PidLock ----

Result<PidLock> PidLock::Acquire(const fs::path& datadir) {
  fs::path path = datadir / "tipd.pid";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return Status::IOError("cannot open pid file " + path.string() + ": " + Errno(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) {
      ::close(fd);
      return Status::IOError("cannot lock pid file " + path.string() + ": " + Errno(err));
    }
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    std::string owner = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!owner.empty() && (owner.back() == '\n' || owner.back() == ' ')) owner.pop_back();
    if (owner.empty()) owner = "unknown";
    return Status::FailedPrecondition("data dir " + datadir.string() + " is in use by pid " +
                                      owner + " (lock held on " + path.string() + ")");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    int err = errno;
    ::close(fd);
    return Status::IOError("cannot write pid file " + path.string() + ": " + Errno(err));
  }
  return PidLock(fd, std::move(path));
}

PidLock::PidLock(PidLock&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

PidLock& PidLock::operator=(PidLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

PidLock::~PidLock() { Release(); }

void PidLock::Release() {
  if (fd_ < 0) return;
  // Best effort: an empty file tells readers nobody holds it. Closing the
  // descriptor releases the lock whatever happens here.
  if (::ftruncate(fd_, 0) != 0) {
    Logger("node")->warn("cannot truncate pid file {}: {}", path_.string(), Errno(errno));
  }
  ::close(fd_);
  fd_ = -1;
}

// ---- ShutdownSignals ----

struct ShutdownSignals::State {
  std::unique_ptr<boost::asio::signal_set> stop_set;
  std::unique_ptr<boost::asio::signal_set> hup_set;
  std::function<void(int)> on_stop;
  std::function<void()> on_hup;
  bool stop_requested = false;
  bool cancelled = false;
};

namespace {

const char* SignalName(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal";
  }
}

}  // namespace

// Static, so handlers hold the State, never `this`.
void ShutdownSignals::WaitForStop(const std::shared_ptr<State>& state) {
  state->stop_set->async_wait([state](const boost::system::error_code& ec, int signal_number) {
    if (ec || state->cancelled) return;
    if (state->stop_requested) {
      Logger("node")->warn("second {} while stopping, exiting now", SignalName(signal_number));
      FlushLogs();
      std::_Exit(128 + signal_number);
    }
    state->stop_requested = true;
    Logger("node")->info("{} received, stopping", SignalName(signal_number));
    // Re-arm first: the callback may Cancel() or destroy the owner.
    WaitForStop(state);
    state->on_stop(signal_number);
  });
}

void ShutdownSignals::WaitForHup(const std::shared_ptr<State>& state) {
  state->hup_set->async_wait([state](const boost::system::error_code& ec, int) {
    if (ec || state->cancelled) return;
    WaitForHup(state);
    state->on_hup();
  });
}

ShutdownSignals::ShutdownSignals(boost::asio::io_context& io,
                                 std::function<void(int signal_number)> on_stop,
                                 std::function<void()> on_hup)
    : state_(std::make_shared<State>()) {
  state_->on_stop = std::move(on_stop);
  state_->on_hup = std::move(on_hup);
  state_->stop_set = std::make_unique<boost::asio::signal_set>(io, SIGTERM, SIGINT);
  WaitForStop(state_);
  if (state_->on_hup) {
    state_->hup_set = std::make_unique<boost::asio::signal_set>(io, SIGHUP);
    WaitForHup(state_);
  }
}

ShutdownSignals::~ShutdownSignals() { Cancel(); }

void ShutdownSignals::Cancel() {
  if (state_->cancelled) return;
  state_->cancelled = true;
  boost::system::error_code ec;
  for (auto* set : {&state_->stop_set, &state_->hup_set}) {
    if (*set) {
      (*set)->cancel(ec);
      (*set)->clear(ec);  // restores the default disposition
      set->reset();
    }
  }
}

bool ShutdownSignals::stop_requested() const { return state_->stop_requested; }

}  // namespace tipd::node
