// `tipd devnet`'s insides, shared by tools/devnet.cc (bring-up, restart,
// stop), tools/devnet_stream.cc (the demo tip stream and status line) and
// nothing else: the stop signals, API call helpers, the Streamer and the
// Devnet class. Not a public interface; tools/devnet.h is.
#pragma once

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <vector>
#include "api/auth.h"
#include "api/http_client.h"

#include "api/http_client.h"
#include "tools/devnet.h"
#include "tools/process.h"

namespace tipd::tools::devnet_detail {

namespace fs = std::filesystem;
namespace pb = google::protobuf;

// What the devnet uses of the API client and the daemon's helpers.
using api::HttpClient;
using api::HttpResponse;
using api::HttpUrl;
using api::ParseHttpUrl;
using api::ReadTokenFile;
using api::Scope;
using api::TokenAuthority;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline std::string WithThousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// ---------------------------------------------------------------------------
// Signals: SIGINT/SIGTERM are blocked in every thread and read synchronously
// by the main thread (children get an empty mask before exec).
// ---------------------------------------------------------------------------

class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    old_pipe_ = ::signal(SIGPIPE, SIG_IGN);
  }
  ~StopSignals() {
    ::signal(SIGPIPE, old_pipe_);
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  // Waits up to `timeout` for SIGINT/SIGTERM; true (and remembered) if one
  // arrived now or earlier.
  bool Wait(std::chrono::milliseconds timeout) {
    if (stop_) return true;
    timespec ts{static_cast<time_t>(timeout.count() / 1000),
                static_cast<long>((timeout.count() % 1000) * 1'000'000)};
    int sig = sigtimedwait(&set_, nullptr, &ts);
    if (sig > 0) {
      stop_ = true;
      signal_ = sig;
    }
    return stop_;
  }
  bool Poll() { return Wait(0ms); }
  // True when another signal arrived after the first (impatient Ctrl-C).
  bool PollAgain() {
    timespec ts{0, 0};
    return sigtimedwait(&set_, nullptr, &ts) > 0;
  }
  int signal_number() const { return signal_; }

 private:
  sigset_t set_{}, old_{};
  void (*old_pipe_)(int) = SIG_DFL;
  bool stop_ = false;
  int signal_ = 0;
};

// ---------------------------------------------------------------------------
// API calls
// ---------------------------------------------------------------------------

inline std::string ToJson(const pb::Message& m) {
  pb::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string out;
  (void)pb::util::MessageToJsonString(m, &out, opts);
  return out;
}

template <typename M>
Result<M> FromJson(const HttpResponse& res) {
  M m;
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // newer nodes may add fields
  auto st = pb::util::JsonStringToMessage(res.body, &m, opts);
  if (!st.ok()) {
    return Status::Internal("unexpected answer (HTTP " + std::to_string(res.status) +
                            "): " + res.body.substr(0, 200));
  }
  return m;
}

inline bool Is2xx(int status) { return status >= 200 && status < 300; }

// One API call; a non-2xx answer becomes a Status.
template <typename M>
Result<M> Call(HttpClient& client, std::string_view method, std::string_view target,
               std::string_view body = {}) {
  TIPD_ASSIGN_OR_RETURN(HttpResponse res, client.Request(method, target, body));
  if (!Is2xx(res.status)) return HttpClient::ApiErrorStatus(res);
  return FromJson<M>(res);
}

// ---------------------------------------------------------------------------
// Streaming demo tips (tools/devnet_stream.cc)
// ---------------------------------------------------------------------------

struct StreamStats {
  std::mutex mu;
  LatencyHistogram window;  // since the last status line
  LatencyHistogram total;
  uint64_t tips = 0;
  uint64_t amount = 0;
  uint64_t errors = 0;
  std::string last_error;
};

class Pacer {
 public:
  explicit Pacer(uint64_t per_second) : per_second_(per_second) {}
  // The time this caller may send at (now when unlimited).
  Steady::time_point Next() {
    if (per_second_ == 0) return Steady::now();
    std::lock_guard<std::mutex> lock(mu_);
    auto now = Steady::now();
    if (next_ < now) next_ = now;
    auto slot = next_;
    next_ += std::chrono::nanoseconds(1'000'000'000 / per_second_);
    return slot;
  }

 private:
  uint64_t per_second_;
  std::mutex mu_;
  Steady::time_point next_{};
};

class Streamer {
 public:
  Streamer(const DevnetManifest& m, std::vector<std::string> tokens, uint64_t tips_per_second)
      : m_(m), tokens_(std::move(tokens)), pacer_(tips_per_second) {}
  ~Streamer() { Stop(); }

  void Start();
  void Stop();
  StreamStats& stats() { return stats_; }

 private:
  void Work(size_t worker);

  const DevnetManifest& m_;
  std::vector<std::string> tokens_;
  Pacer pacer_;
  std::string run_id_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  StreamStats stats_;
};

// ---------------------------------------------------------------------------
// The devnet
// ---------------------------------------------------------------------------

class Devnet {
 public:
  Devnet(const DevnetOptions& o, StopSignals& signals) : o_(o), signals_(signals) {}

  // Returns the exit code.
  int Run();

 private:
  Status Prepare();
  Status CreateNew(uint32_t n);
  Status LoadExisting();
  Status AssignPorts();
  Status WriteManifest();
  Status StartAll();
  Status ConnectPeers();
  Status OpenChannels();
  Status EnsureChannel(DevnetChannel& ch);
  Status WaitChannelOpen(HttpClient& client, const std::string& channel_id);
  void PrintNext();
  // With --stream: every node's dashboard URL (GET / of its API) and token file.
  void PrintDashboards();
  std::string BalancesLine(bool compact);
  int Loop();
  // Reaps children that exited; true if the ledger and every node run.
  bool ChildrenRunning();
  // On stderr: which children exited, their codes and their logs' last lines.
  void ReportDeadChildren();
  void StopAll();
  bool Interrupted() { return signals_.Poll(); }

  std::string Rel(const fs::path& p) const;

  DevnetOptions o_;
  StopSignals& signals_;
  fs::path dir_;        // absolute
  fs::path tipd_;       // the binary
  bool fresh_ = false;  // created now
  bool channels_api_ = true;
  DevnetManifest m_;
  std::unique_ptr<tools::ChildProcess> ledger_;  // null until started
  std::vector<std::unique_ptr<tools::ChildProcess>> nodes_;
  std::vector<std::string> tokens_;
  std::vector<std::unique_ptr<HttpClient>> clients_;  // main thread's, one per node
  std::unique_ptr<Streamer> streamer_;
};

}  // namespace tipd::tools::devnet_detail
