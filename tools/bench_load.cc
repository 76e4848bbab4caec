// `tipd bench`'s load generator (tools/bench_load.h).
#include "tools/bench_load.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

namespace tipd::tools::bench_detail {

RawHttp::~RawHttp() { Close(); }

void RawHttp::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
  consumed_ = 0;
}

Status RawHttp::Connect() {
  Close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port_);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Status s = Status::Unavailable("connect 127.0.0.1:" + std::to_string(port_) + ": " +
                                   std::strerror(errno));
    Close();
    return s;
  }
  return Status::Ok();
}

std::string RawHttp::Build(std::string_view method, std::string_view target,
                           std::string_view body) const {
  std::string r;
  r.reserve(body.size() + 200 + token_.size());
  r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  r.append("Authorization: Bearer ").append(token_).append("\r\n");
  if (method != "GET") {
    r.append("Content-Type: application/json\r\nContent-Length: ")
        .append(std::to_string(body.size()))
        .append("\r\n");
  }
  r.append("\r\n").append(body);
  return r;
}

Status RawHttp::SendAll(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Unavailable(std::string("send: ") + std::strerror(errno));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status RawHttp::ReadAnswer(int* status, std::string_view* body) {
  // Drop the previous answer; keep whatever followed it.
  buf_.erase(0, consumed_);
  consumed_ = 0;
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  char chunk[65536];
  for (;;) {
    if (header_end == std::string::npos) {
      header_end = buf_.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        // "HTTP/1.1 200 OK"
        if (buf_.size() < 12 || buf_.compare(0, 5, "HTTP/") != 0) {
          return Status::Internal("not an HTTP answer: " + buf_.substr(0, 40));
        }
        *status = std::atoi(buf_.c_str() + 9);
        std::string_view head(buf_.data(), header_end);
        size_t pos = 0;
        bool found = false;
        while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
          pos += 2;
          if (head.size() - pos >= 15 &&
              strncasecmp(head.data() + pos, "content-length:", 15) == 0) {
            content_length = std::strtoull(head.data() + pos + 15, nullptr, 10);
            found = true;
            break;
          }
        }
        if (!found) return Status::Internal("answer without Content-Length");
        header_end += 4;
      }
    }
    if (header_end != std::string::npos && buf_.size() >= header_end + content_length) {
      *body = std::string_view(buf_.data() + header_end, content_length);
      consumed_ = header_end + content_length;
      return Status::Ok();
    }
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return Status::Unavailable(n == 0 ? std::string("connection closed by the node")
                                        : std::string("recv: ") + std::strerror(errno));
    }
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

Status RawHttp::RoundTrip(std::string_view request, int* status, std::string_view* body) {
  for (int attempt = 0;; ++attempt) {
    Status s = fd_ < 0 ? Connect() : Status::Ok();
    if (s.ok()) s = SendAll(request);
    if (s.ok()) s = ReadAnswer(status, body);
    if (s.ok()) return s;
    Close();
    if (attempt >= 1 || s.code() != StatusCode::kUnavailable) return s;
  }
}

BatchCount CountBatchAnswer(std::string_view body) {
  BatchCount c;
  // The compact answer (?answer=compact) says "status":"acked" per tip; the
  // full one holds a receipt per acknowledged tip.
  const bool compact = body.find("\"results\":[") != std::string_view::npos;
  const std::string_view acked = compact ? "\"status\":\"acked\"" : "\"receipt\":{";
  for (size_t pos = 0; (pos = body.find(acked, pos)) != std::string_view::npos;
       pos += acked.size()) {
    ++c.acked;
  }
  constexpr std::string_view kError = "\"error_code\":\"";
  for (size_t pos = 0; (pos = body.find(kError, pos)) != std::string_view::npos;) {
    pos += kError.size();
    if (pos < body.size() && body[pos] != '"') {
      ++c.refused;
      if (c.first_error.empty()) {
        size_t end = body.find('"', pos);
        c.first_error =
            std::string(body.substr(pos, end == std::string_view::npos ? 40 : end - pos));
      }
    }
  }
  return c;
}

uint64_t ProcessCpuMicros() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto us = [](const timeval& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1'000'000 + static_cast<uint64_t>(t.tv_usec);
  };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

namespace {

// One answer's tips: acked and failed, from a single-tip or a batch answer.
void Account(const PreparedRequest& req, int status, std::string_view body, uint64_t* acked,
             uint64_t* failed, std::string* first_error) {
  if (req.batch) {
    if (status == 200) {
      BatchCount c = CountBatchAnswer(body);
      *acked += c.acked;
      *failed += req.tips - std::min<uint64_t>(req.tips, c.acked);
      if (first_error->empty() && !c.first_error.empty()) *first_error = c.first_error;
      return;
    }
  } else if (status == 200) {
    *acked += 1;
    return;
  }
  *failed += req.tips;
  if (first_error->empty()) {
    *first_error = "HTTP " + std::to_string(status) + ": " + std::string(body.substr(0, 160));
  }
}

struct Shared {
  std::mutex mu;
  LoadResult total;
};

void MergeInto(Shared& shared, const LoadResult& mine) {
  std::lock_guard<std::mutex> lock(shared.mu);
  shared.total.requests += mine.requests;
  shared.total.tips_acked += mine.tips_acked;
  shared.total.tips_failed += mine.tips_failed;
  shared.total.tips_unsent += mine.tips_unsent;
  shared.total.latency.Merge(mine.latency);
  shared.total.slow.insert(shared.total.slow.end(), mine.slow.begin(), mine.slow.end());
  if (shared.total.first_error.empty()) shared.total.first_error = mine.first_error;
}

constexpr auto kGiveUp = std::chrono::seconds(2);

uint64_t Micros(Steady::duration d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return us < 0 ? 0 : static_cast<uint64_t>(us);
}

}  // namespace

LoadResult RunClosedLoop(uint16_t port, const std::string& token, uint32_t connections,
                         std::chrono::milliseconds duration,
                         const std::function<PreparedRequest(uint32_t, uint64_t)>& make) {
  Shared shared;
  const uint64_t cpu0 = ProcessCpuMicros();
  const auto start = Steady::now();
  const auto end = start + duration;
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < connections; ++w) {
    threads.emplace_back([&, w] {
      auto mine = std::make_unique<LoadResult>();
      RawHttp http(port, token);
      for (uint64_t seq = 0; Steady::now() < end; ++seq) {
        PreparedRequest req = make(w, seq);
        int status = 0;
        std::string_view body;
        auto t0 = Steady::now();
        Status s = http.RoundTrip(req.wire, &status, &body);
        mine->latency.Record(Micros(Steady::now() - t0));
        ++mine->requests;
        if (!s.ok()) {
          mine->tips_failed += req.tips;
          if (mine->first_error.empty()) mine->first_error = s.ToString();
          break;
        }
        Account(req, status, body, &mine->tips_acked, &mine->tips_failed, &mine->first_error);
      }
      MergeInto(shared, *mine);
    });
  }
  for (auto& t : threads) t.join();
  const auto wall = Steady::now() - start;
  shared.total.seconds = std::chrono::duration<double>(wall).count();
  shared.total.loadgen_cpu_cores =
      static_cast<double>(ProcessCpuMicros() - cpu0) / 1e6 / shared.total.seconds;
  return std::move(shared.total);
}

LoadResult RunOpenLoop(uint16_t port, const std::string& token, uint32_t connections,
                       uint64_t tips_per_second, std::chrono::milliseconds duration,
                       std::chrono::microseconds slot,
                       const std::function<PreparedRequest(uint32_t, uint64_t, uint32_t)>& make,
                       std::chrono::microseconds slow_over) {
  Shared shared;
  if (tips_per_second == 0) return std::move(shared.total);
  // Tips per batch: those due within one slot, at least one.
  const uint64_t per_batch =
      std::max<uint64_t>(1, tips_per_second * static_cast<uint64_t>(slot.count()) / 1'000'000);
  const uint64_t total_tips = std::max<uint64_t>(
      per_batch, tips_per_second * static_cast<uint64_t>(duration.count()) / 1000);
  const uint64_t batches = (total_tips + per_batch - 1) / per_batch;
  const double ns_per_tip = 1e9 / static_cast<double>(tips_per_second);
  std::atomic<uint64_t> next{0};
  const uint64_t cpu0 = ProcessCpuMicros();
  const auto start = Steady::now() + std::chrono::milliseconds(20);
  auto due = [&](uint64_t tip) {
    return start +
           std::chrono::nanoseconds(static_cast<int64_t>(ns_per_tip * static_cast<double>(tip)));
  };
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < connections; ++w) {
    threads.emplace_back([&, w] {
      auto mine = std::make_unique<LoadResult>();
      RawHttp http(port, token);
      bool broken = false;
      for (;;) {
        const uint64_t b = next.fetch_add(1);
        if (b >= batches) break;
        const uint64_t first = b * per_batch;
        const uint64_t count = std::min(per_batch, total_tips - first);
        // Hopelessly behind (the node cannot take this load): stop offering,
        // and say how many tips were never sent rather than wait for them.
        if (Steady::now() > due(first) + kGiveUp) {
          mine->tips_unsent += count;
          continue;
        }
        PreparedRequest req = make(w, b, static_cast<uint32_t>(count));
        std::this_thread::sleep_until(due(first + count - 1));
        int status = 0;
        std::string_view body;
        Status s = broken ? Status::Unavailable("connection failed earlier")
                          : http.RoundTrip(req.wire, &status, &body);
        const auto done = Steady::now();
        ++mine->requests;
        uint64_t acked = 0, failed = 0;
        if (!s.ok()) {
          broken = true;
          failed = count;
          if (mine->first_error.empty()) mine->first_error = s.ToString();
        } else {
          Account(req, status, body, &acked, &failed, &mine->first_error);
        }
        mine->tips_acked += acked;
        mine->tips_failed += failed;
        // Every acked tip of the batch: from when it was due. The batch's
        // refused tips (if any) are not latencies.
        for (uint64_t i = 0; i < acked; ++i) mine->latency.Record(Micros(done - due(first + i)));
        if (slow_over.count() > 0 && acked > 0 && done - due(first) > slow_over) {
          mine->slow.push_back({std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count(),
                                Micros(done - due(first))});
        }
      }
      MergeInto(shared, *mine);
    });
  }
  for (auto& t : threads) t.join();
  const auto wall = Steady::now() - start;
  shared.total.seconds = std::chrono::duration<double>(wall).count();
  shared.total.loadgen_cpu_cores =
      static_cast<double>(ProcessCpuMicros() - cpu0) / 1e6 / shared.total.seconds;
  return std::move(shared.total);
}

}  // namespace tipd::tools::bench_detail
