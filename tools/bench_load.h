// `tipd bench`'s load generator: a minimal blocking HTTP/1.1 client over raw
// loopback sockets (keep-alive, requests built once and reused, responses
// scanned rather than parsed) and the closed- and open-loop drivers built on
// it. Not a general HTTP client: it expects the tipd API's answers
// (Content-Length bodies). Internal to tools/bench*.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/devnet.h"
#include "util/status.h"

namespace tipd::tools::bench_detail {

using Steady = std::chrono::steady_clock;

class RawHttp {
 public:
  RawHttp(uint16_t port, std::string token) : port_(port), token_(std::move(token)) {}
  ~RawHttp();
  RawHttp(const RawHttp&) = delete;
  RawHttp& operator=(const RawHttp&) = delete;

  // A whole request (headers and body) for Send.
  std::string Build(std::string_view method, std::string_view target, std::string_view body) const;
  // Sends `request` (connecting first if needed) and reads one answer into
  // *status and *body (a view into this object's buffer, valid until the
  // next call). A broken connection is reconnected once before failing.
  Status RoundTrip(std::string_view request, int* status, std::string_view* body);

 private:
  Status Connect();
  void Close();
  Status SendAll(std::string_view data);
  Status ReadAnswer(int* status, std::string_view* body);

  uint16_t port_;
  std::string token_;
  int fd_ = -1;
  std::string buf_;
  size_t consumed_ = 0;  // bytes of buf_ that belong to the previous answer
};

// How many tips of a POST /v1/tips/batch answer were acknowledged (carry a
// receipt), and how many were refused (error_code set).
struct BatchCount {
  uint64_t acked = 0;
  uint64_t refused = 0;
  std::string first_error;
};
BatchCount CountBatchAnswer(std::string_view body);

// CPU time (user + system) this whole process used so far, in microseconds.
uint64_t ProcessCpuMicros();

struct LoadResult {
  uint64_t requests = 0;
  uint64_t tips_acked = 0;
  uint64_t tips_failed = 0;  // refused, pending (no receipt) or a failed request
  // Open loop: tips not sent because their batch was already more than 2 s
  // late (the node cannot take the offered load; the run stops offering).
  uint64_t tips_unsent = 0;
  double seconds = 0;
  double loadgen_cpu_cores = 0;  // this process's CPU time / wall time
  LatencyHistogram latency;      // per request (closed) or per tip (open), us
  // Open loop with a slow threshold: each request above it, by when it was
  // answered (wall clock, ms since the epoch) and its first tip's latency.
  struct Slow {
    int64_t answered_ms = 0;
    uint64_t latency_us = 0;
  };
  std::vector<Slow> slow;
  std::string first_error;
  double TipsPerSecond() const {
    return seconds > 0 ? static_cast<double>(tips_acked) / seconds : 0;
  }
};

// The request a worker sends next: `tips` is how many tips it carries.
struct PreparedRequest {
  std::string wire;
  uint32_t tips = 1;
  bool batch = false;
};

// Closed loop: `connections` threads, each with one keep-alive connection
// and one request in flight, for `duration`. `make(worker, seq)` gives each
// request (called on the worker's thread).
LoadResult RunClosedLoop(uint16_t port, const std::string& token, uint32_t connections,
                         std::chrono::milliseconds duration,
                         const std::function<PreparedRequest(uint32_t, uint64_t)>& make);

// Open loop at `tips_per_second` for `duration`: tip i is due at
// start + i / rate; tips are grouped into batches of the tips due within
// `slot` (at least one), each sent when its last tip is due by the next free
// worker of `connections`. A tip's latency runs from when it was due to its
// signed receipt, so a slow answer delays the measurement of what queued
// behind it instead of hiding it (no coordinated omission). Once the run is
// more than 2 s behind, the rest is counted in tips_unsent and not sent, so an
// overload ends on time. `make(worker,
// seq, tips)` builds a batch of `tips` tips.
LoadResult RunOpenLoop(uint16_t port, const std::string& token, uint32_t connections,
                       uint64_t tips_per_second, std::chrono::milliseconds duration,
                       std::chrono::microseconds slot,
                       const std::function<PreparedRequest(uint32_t, uint64_t, uint32_t)>& make,
                       std::chrono::microseconds slow_over = std::chrono::microseconds::zero());

}  // namespace tipd::tools::bench_detail
