// ChildProcess: fork/exec, the log file or capture pipe, and the waits.
#include "tools/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace tipd::tools {

namespace {

using namespace std::chrono_literals;

// The longest a wait blocks before it consults its Interrupt again.
constexpr auto kSlice = 50ms;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

int OpenPidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // close-on-exec
#else
  (void)pid;
  return -1;
#endif
}

void WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// The time left until `deadline`, at most `cap`, never negative.
std::chrono::milliseconds Until(ChildProcess::Clock::time_point deadline,
                                std::chrono::milliseconds cap) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - ChildProcess::Clock::now());
  return std::clamp(left, 0ms, cap);
}

}  // namespace

Result<std::unique_ptr<ChildProcess>> ChildProcess::Start(ProcessOptions options) {
  if (options.argv.empty()) return Status::InvalidArgument("no program to start");
  if (options.log.empty() && !options.capture) {
    return Status::InvalidArgument("a child's output needs a log file or capture");
  }
  int log_fd = -1;
  uint64_t log_start = 0;
  if (!options.log.empty()) {
    log_fd = ::open(options.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) return Status::IOError(Errno("open " + options.log.string()));
    struct stat st {};
    if (::fstat(log_fd, &st) == 0) log_start = static_cast<uint64_t>(st.st_size);
  }
  int pipe_fds[2] = {-1, -1};
  if (options.capture && ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    Status s = Status::IOError(Errno("pipe"));
    if (log_fd >= 0) ::close(log_fd);
    return s;
  }
  const int out_fd = options.capture ? pipe_fds[1] : log_fd;
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> args;
  for (const auto& a : options.argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string exec_failed =
      (options.exec_tag.empty() ? "" : options.exec_tag + ": ") + "exec failed\n";
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    Status s = Status::IOError(Errno("fork"));
    for (int fd : {log_fd, pipe_fds[0], pipe_fds[1], null_fd}) {
      if (fd >= 0) ::close(fd);
    }
    return s;
  }
  if (pid == 0) {
    // Async-signal-safe calls only from here on.
    if (options.new_process_group) ::setpgid(0, 0);
    if (options.parent_death_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, options.parent_death_signal);
      if (::getppid() != parent) ::_exit(1);  // the parent is already gone
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    ::execv(args[0], args.data());
    (void)!::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    ::_exit(127);
  }
  if (null_fd >= 0) ::close(null_fd);
  std::unique_ptr<ChildProcess> p(new ChildProcess());
  p->pid_ = pid;
  p->pidfd_ = OpenPidfd(pid);
  p->name_ = options.name.empty() ? options.argv[0] : options.name;
  p->log_path_ = options.log;
  p->log_start_ = log_start;
  p->capture_ = options.capture;
  if (options.capture) {
    ::close(pipe_fds[1]);
    int read_fd = pipe_fds[0];
    // The reader owns the log fd: it appends what it reads.
    p->reader_ = std::thread([raw = p.get(), read_fd, log_fd] { raw->ReadLoop(read_fd, log_fd); });
  } else {
    ::close(log_fd);
  }
  return p;
}

std::unique_ptr<ChildProcess> ChildProcess::Start(const std::vector<std::string>& argv,
                                                  const std::filesystem::path& log_path,
                                                  std::string* error) {
  ProcessOptions options;
  options.argv = argv;
  options.log = log_path;
  options.capture = true;
  auto p = Start(std::move(options));
  if (!p.ok()) {
    if (error) *error = p.status().message();
    return nullptr;
  }
  return std::move(*p);
}

void ChildProcess::ReadLoop(int fd, int log_fd) {
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (log_fd >= 0) WriteAll(log_fd, buf, static_cast<size_t>(n));
    std::lock_guard<std::mutex> lock(mu_);
    output_.append(buf, static_cast<size_t>(n));
    cv_.notify_all();
  }
  ::close(fd);
  if (log_fd >= 0) ::close(log_fd);
  std::lock_guard<std::mutex> lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_) Kill();
  if (reader_.joinable()) reader_.join();
  if (pidfd_ >= 0) ::close(pidfd_);
}

bool ChildProcess::TryReap(bool block) {
  if (exit_code_) return true;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == ECHILD) {
      exit_code_ = -1;  // reaped elsewhere: gone, code unknown
      return true;
    }
    return false;
  }
}

bool ChildProcess::Running() { return !TryReap(false); }

void ChildProcess::Signal(int signo) const {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, signo);
}

void ChildProcess::Kill() {
  if (pid_ <= 0 || exit_code_) return;
  ::kill(pid_, SIGKILL);
  TryReap(true);
}

void ChildProcess::PollExit(std::chrono::milliseconds timeout) const {
  pollfd fd{pidfd_, POLLIN, 0};
  // Without a pidfd this is a plain pause between two looks (old kernels).
  ::poll(&fd, pidfd_ >= 0 ? 1 : 0, static_cast<int>(timeout.count()));
}

ChildProcess::Outcome ChildProcess::AwaitOutput(std::string_view needle, Clock::time_point deadline,
                                                size_t from_offset, size_t* end,
                                                const Interrupt& interrupt) {
  auto match = [&](const std::string& text, size_t base) {
    size_t pos =
        text.find(needle, std::min(from_offset - std::min(from_offset, base), text.size()));
    if (pos == std::string::npos) return false;
    if (end) *end = base + pos + needle.size();
    return true;
  };
  if (capture_) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (match(output_, 0)) return Outcome::kDone;
      if (eof_) return Outcome::kExited;
      if (Clock::now() >= deadline) return Outcome::kTimedOut;
      if (interrupt) {
        lock.unlock();
        bool stop = interrupt();
        lock.lock();
        if (stop) return Outcome::kInterrupted;
        cv_.wait_until(lock, std::min(deadline, Clock::now() + kSlice));
      } else {
        cv_.wait_until(lock, deadline);
      }
    }
  }
  // The log file, read on from where the last look stopped.
  std::string seen;
  for (;;) {
    bool running = Running();  // before reading: output printed before an exit is seen
    {
      std::ifstream in(log_path_, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(log_start_ + from_offset + seen.size()));
      seen.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    if (match(seen, from_offset)) return Outcome::kDone;
    if (!running) return Outcome::kExited;
    if (Clock::now() >= deadline) return Outcome::kTimedOut;
    if (interrupt && interrupt()) return Outcome::kInterrupted;
    PollExit(Until(deadline, kSlice));
  }
}

std::optional<size_t> ChildProcess::WaitForOutput(std::string_view needle,
                                                  std::chrono::milliseconds timeout,
                                                  size_t from_offset) {
  size_t end = 0;
  if (AwaitOutput(needle, Clock::now() + timeout, from_offset, &end) != Outcome::kDone) {
    return std::nullopt;
  }
  return end;
}

ChildProcess::Outcome ChildProcess::AwaitExit(Clock::time_point deadline,
                                              const Interrupt& interrupt) {
  while (Running()) {
    if (Clock::now() >= deadline) return Outcome::kTimedOut;
    if (interrupt && interrupt()) return Outcome::kInterrupted;
    PollExit(Until(deadline, kSlice));
  }
  if (capture_) {
    // The pipe reaches EOF once the child (and anything it passed its output
    // to) is gone; then Output() holds everything.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return eof_; });
  }
  return Outcome::kDone;
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (AwaitExit(Clock::now() + timeout) != Outcome::kDone) return std::nullopt;
  return exit_code_;
}

std::string ChildProcess::Output() const {
  if (capture_) {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }
  std::ifstream in(log_path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(log_start_));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace tipd::tools
