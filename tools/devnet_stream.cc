// `tipd devnet --stream`: the demo tips (message + bLIP-10 style metadata)
// sent between the nodes over their HTTP API, the live status line and the
// summary (Devnet::Loop), and the latency histogram behind their p50/p99.
// Bring-up, restart and stop are in tools/devnet.cc.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>

#include "tipd/api.pb.h"
#include "tools/devnet.h"
#include "tools/devnet_internal.h"

namespace tipd::tools {

// ---------------------------------------------------------------------------
// LatencyHistogram
// ---------------------------------------------------------------------------

size_t LatencyHistogram::Bucket(uint64_t micros) {
  if (micros <= 1) return 0;
  double b = std::ceil(std::log(static_cast<double>(micros)) / std::log(1.02));
  return std::min(static_cast<size_t>(b), kBuckets - 1);
}

uint64_t LatencyHistogram::BucketValue(size_t bucket) {
  return static_cast<uint64_t>(std::llround(std::pow(1.02, static_cast<double>(bucket))));
}

void LatencyHistogram::Record(uint64_t micros) {
  ++counts_[Bucket(micros)];
  ++count_;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
}

void LatencyHistogram::Clear() {
  counts_.fill(0);
  count_ = 0;
}

uint64_t LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  // Nearest rank: the smallest value with at least p% of the samples <= it.
  auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return BucketValue(i);
  }
  return BucketValue(kBuckets - 1);
}

namespace devnet_detail {

namespace {

constexpr const char* kPersonas[] = {"alice",  "bob",   "carol",  "dave", "erin",    "frank",
                                     "grace",  "heidi", "ivan",   "judy", "mallory", "niaj",
                                     "olivia", "peggy", "rupert", "sybil"};
static_assert(std::size(kPersonas) >= kDevnetMaxNodes);

std::string Persona(uint32_t index) { return kPersonas[index % std::size(kPersonas)]; }

std::string Millis(uint64_t micros) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(micros < 10'000 ? 2 : 1) << micros / 1000.0 << " ms";
  return s.str();
}

constexpr const char* kMessages[] = {
    "great episode! #{}",        "that guest was amazing #{}",    "love this part #{}",
    "thanks for the stream #{}", "boost for the intro music #{}", "¡gracias! #{}",
    "more of this please #{}",   "tip from the back row #{}"};

std::string Format(std::string_view pattern, uint64_t n) {
  std::string s(pattern);
  size_t pos = s.find("{}");
  if (pos != std::string::npos) s.replace(pos, 2, std::to_string(n));
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// Streamer
// ---------------------------------------------------------------------------

void Streamer::Start() {
  // Several requests in flight per channel so that tips coalesce.
  size_t workers = std::clamp<size_t>(4 * m_.channels.size(), 1, 32);
  run_id_ = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
  for (size_t w = 0; w < workers; ++w) threads_.emplace_back([this, w] { Work(w); });
}
void Streamer::Stop() {
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
}
void Streamer::Work(size_t worker) {
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    auto url = ParseHttpUrl(m_.nodes[i].RpcUrl());
    clients.push_back(std::make_unique<HttpClient>(*url, tokens_[i], 10s));
  }
  std::mt19937_64 rng(std::random_device{}() ^ (worker * 0x9e3779b97f4a7c15ull));
  std::uniform_int_distribution<uint64_t> amount_dist(1, 100);
  std::uniform_int_distribution<size_t> channel_dist(0, m_.channels.size() - 1);
  std::uniform_int_distribution<size_t> message_dist(0, std::size(kMessages) - 1);
  uint64_t seq = 0;
  while (!stop_) {
    auto slot = pacer_.Next();
    while (!stop_ && Steady::now() < slot) {
      std::this_thread::sleep_for(std::min<Steady::duration>(slot - Steady::now(), 50ms));
    }
    if (stop_) break;
    const DevnetChannel& ch = m_.channels[channel_dist(rng)];
    bool forward = rng() & 1;
    uint32_t from = forward ? ch.opener : ch.peer;
    uint64_t episode = 1 + rng() % 120;
    v1::TipRequest req;
    req.set_channel_id(ch.channel_id);
    req.set_amount(amount_dist(rng));
    req.set_message(Format(kMessages[message_dist(rng)], episode));
    auto& md = *req.mutable_metadata();
    md["app_name"] = "tipd-devnet";
    md["sender_name"] = Persona(from);
    md["feed"] = "devnet-radio";
    md["item"] = "episode-" + std::to_string(episode);
    md["action"] = "boost";
    md["ts"] = std::to_string(rng() % 3600);
    req.set_idempotency_key("devnet-" + run_id_ + "-" + std::to_string(worker) + "-" +
                            std::to_string(seq++));
    std::string body = ToJson(req);
    auto start = Steady::now();
    auto res = clients[from]->Request("POST", "/v1/tips", body);
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - start);
    bool ok = res.ok() && Is2xx(res->status);
    {
      std::lock_guard<std::mutex> lock(stats_.mu);
      if (ok) {
        stats_.window.Record(static_cast<uint64_t>(micros.count()));
        stats_.total.Record(static_cast<uint64_t>(micros.count()));
        ++stats_.tips;
        stats_.amount += req.amount();
      } else {
        ++stats_.errors;
        stats_.last_error =
            m_.nodes[from].name + ": " +
            (res.ok() ? HttpClient::ApiErrorStatus(*res).message() : res.status().message());
      }
    }
    // Back off on errors (e.g. a peer reconnecting) instead of spinning.
    if (!ok) std::this_thread::sleep_for(200ms);
  }
}

// ---------------------------------------------------------------------------
// The status line
// ---------------------------------------------------------------------------

// Per node: the balance on its side of its channels (GET /v1/balance).
std::string Devnet::BalancesLine(bool compact) {
  std::string out;
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    auto bal = Call<v1::BalanceResponse>(*clients_[i], "GET", "/v1/balance");
    if (!out.empty()) out += compact ? " " : ", ";
    out += m_.nodes[i].name + (compact ? " " : "=");
    if (!bal.ok()) {
      out += "?";
    } else {
      out += compact ? WithThousands(bal->channels_local()) : std::to_string(bal->channels_local());
    }
  }
  return out;
}

int Devnet::Loop() {
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  const auto interval = tty ? 1s : 5s;
  const auto started = Steady::now();
  // No optional<time_point> here: GCC 12 warns it may be used uninitialized.
  const Steady::time_point end = o_.duration_ms
                                     ? started + std::chrono::milliseconds(*o_.duration_ms)
                                     : Steady::time_point::max();
  auto last = started;
  bool streaming = streamer_ != nullptr;
  int code = 0;
  for (;;) {
    // Wake for the next status line, the end, and at least every second to
    // notice a child that died.
    auto wake = std::min({last + interval, end, Steady::now() + 1s});
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Steady::now());
    if (signals_.Wait(std::max(wait, 0ms))) break;
    if (!ChildrenRunning()) {
      if (tty && streaming) std::cout << "\n";
      ReportDeadChildren();
      code = 1;
      break;
    }
    auto now = Steady::now();
    if (now >= end) break;
    if (now >= last + interval) {
      double secs = std::chrono::duration<double>(now - last).count();
      last = now;
      if (!streaming) continue;
      uint64_t tips, errors, n, p50, p99;
      std::string last_error;
      {
        std::lock_guard<std::mutex> lock(streamer_->stats().mu);
        StreamStats& st = streamer_->stats();
        tips = st.tips;
        errors = st.errors;
        n = st.window.count();
        p50 = st.window.Percentile(50);
        p99 = st.window.Percentile(99);
        st.window.Clear();
        last_error = st.last_error;
      }
      std::ostringstream line;
      line << "tips " << WithThousands(tips) << " | " << std::fixed << std::setprecision(1)
           << n / secs << "/s | p50 " << Millis(p50) << " p99 " << Millis(p99);
      if (errors > 0) line << " | errors " << errors;
      line << " | " << BalancesLine(true);
      if (tty) {
        // Refreshed in place: one line, cut to the terminal's width.
        std::string text = line.str();
        winsize ws{};
        if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
            text.size() >= ws.ws_col) {
          text.resize(ws.ws_col - 1);
        }
        std::cout << "\r\x1b[2K" << text << std::flush;
      } else {
        std::cout << "devnet: " << line.str() << "\n";
        if (errors > 0 && !last_error.empty())
          std::cout << "devnet: last error: " << last_error << "\n";
        std::cout << std::flush;
      }
    }
  }
  if (tty && streaming) std::cout << "\n";
  double secs = std::chrono::duration<double>(Steady::now() - started).count();
  if (streaming) {
    streamer_->Stop();
    StreamStats& st = streamer_->stats();
    std::cout << "devnet: summary: " << st.tips << " tips sent (" << st.amount << " units) in "
              << std::fixed << std::setprecision(1) << secs << " s, "
              << st.tips / std::max(secs, 1e-3) << " tips/s, p50 "
              << Millis(st.total.Percentile(50)) << ", p99 " << Millis(st.total.Percentile(99))
              << ", " << st.errors << " error(s)\n";
    if (st.errors > 0) std::cout << "devnet: last error: " << st.last_error << "\n";
  }
  if (code == 0) std::cout << "devnet: balances: " << BalancesLine(false) << "\n";
  return code;
}

}  // namespace devnet_detail

}  // namespace tipd::tools
