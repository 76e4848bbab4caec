#include "tests/integration/tipctl_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace tipd::testing {
namespace {

const char* kTipctl = TIPCTL_BINARY;

}  // namespace

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CliResult RunTipctl(const std::filesystem::path& scratch, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env,
                    std::chrono::milliseconds timeout) {
  static int counter = 0;
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const auto out_path = scratch / ("tipctl-" + tag + ".out");
  const auto err_path = scratch / ("tipctl-" + tag + ".err");
  const auto home = scratch / "home";
  std::filesystem::create_directories(home);
  std::vector<std::string> argv = {kTipctl};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) ::_exit(120);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::unsetenv("TIPD_DATADIR");
    ::unsetenv("TIPD_RPC");
    ::unsetenv("TIPD_TOKEN");
    ::setenv("HOME", home.c_str(), 1);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(kTipctl, cargv.data());
    ::_exit(121);
  }
  CliResult r;
  if (pid < 0) return r;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  return r;
}

std::ostream& operator<<(std::ostream& os, const CliResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout ---\n"
            << r.out << "\n--- stderr ---\n"
            << r.err;
}

}  // namespace tipd::testing
