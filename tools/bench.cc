// `tipd bench` (tools/bench.h, docs/performance.md): bring-up of a ledger and
// four nodes (a pair with coalescing, a naive pair with max-tips-per-update
// 1), then the sections in the order Bench::Run lists them, a table on
// stdout and the JSON file. The load generator is tools/bench_load.h.
#include "tools/bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "api/auth.h"
#include "api/http_client.h"
#include "crypto/crypto.h"
#include "node/lifecycle.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tools/bench_load.h"
#include "tools/devnet_internal.h"
#include "tools/process.h"

namespace tipd::tools {

namespace bench_detail {

namespace {

namespace fs = std::filesystem;
using devnet_detail::Call;
using devnet_detail::FromJson;
using devnet_detail::Is2xx;
using devnet_detail::ToJson;
using namespace std::chrono_literals;

constexpr const char* kChainId = "tipd-bench";
constexpr uint64_t kFund = 10'000'000'000ull;
constexpr uint64_t kMainDeposit = 5'000'000'000ull;  // amount 1 per tip: billions of tips
constexpr uint64_t kExtraDeposit = 10;               // each of the many idle channels
constexpr auto kReadyTimeout = 120s;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

// A field of /proc/PID/status in KiB ("VmRSS:", "RssAnon:").
uint64_t StatusKiB(pid_t pid, std::string_view field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field, 0) == 0) return std::strtoull(line.c_str() + field.size(), nullptr, 10);
  }
  return 0;
}
uint64_t RssKiB(pid_t pid) { return StatusKiB(pid, "VmRSS:"); }

// --slow-ms: the slow requests of one load, by 100 ms of wall-clock time
// (UTC, as LevelDB's db/LOG and the nodes' logs stamp their lines).
void PrintSlow(const std::string& label, std::vector<LoadResult::Slow> slow) {
  if (slow.empty()) return;
  std::sort(slow.begin(), slow.end(),
            [](const auto& x, const auto& y) { return x.answered_ms < y.answered_ms; });
  std::cerr << "bench: slow requests at " << label << " (answered, UTC):\n";
  for (size_t i = 0; i < slow.size();) {
    const int64_t window = slow[i].answered_ms / 100;
    size_t n = 0;
    uint64_t worst = 0;
    for (; i < slow.size() && slow[i].answered_ms / 100 == window; ++i, ++n) {
      worst = std::max(worst, slow[i].latency_us);
    }
    const std::time_t t = static_cast<std::time_t>(window / 10);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char when[32];
    std::strftime(when, sizeof(when), "%H:%M:%S", &tm);
    std::cerr << "bench:   " << when << "." << (window % 10) << "  " << n << " requests, worst "
              << std::fixed << std::setprecision(1) << static_cast<double>(worst) / 1000.0
              << " ms\n";
  }
}

// CPU time (user + system) of every thread of `pid`, in clock ticks.
uint64_t ProcessTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command (in parentheses, which may hold spaces).
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) {
      stime = std::strtoull(f.c_str(), nullptr, 10);
      break;
    }
  }
  return utime + stime;
}

// Waits until `pids` together use under a tenth of a core over 250 ms (the
// previous section's LevelDB compactions and flushes are done), at most
// `limit`: a measured load then starts from an idle machine rather than in
// the work the one before it left.
void Settle(const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  const auto start = Steady::now();
  const double ticks_per_second = static_cast<double>(::sysconf(_SC_CLK_TCK));
  auto total = [&] {
    uint64_t t = 0;
    for (pid_t p : pids) t += ProcessTicks(p);
    return t;
  };
  while (Steady::now() - start < limit) {
    const uint64_t before = total();
    std::this_thread::sleep_for(250ms);
    const double cores = static_cast<double>(total() - before) / ticks_per_second / 0.25;
    if (cores < 0.1) return;
  }
}

uint64_t DirBytes(const fs::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

// Every thread of `pid` on `cpus` (like `taskset -a -p`).
void PinProcess(pid_t pid, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    pid_t tid = static_cast<pid_t>(std::strtol(e.path().filename().c_str(), nullptr, 10));
    if (tid > 0) sched_setaffinity(tid, sizeof(set), &set);
  }
}

// A pool of messages of 64..200 bytes of random letters and digits, so that
// LevelDB's compression does not flatter the bytes on disk per tip.
std::vector<std::string> MessagePool(size_t n) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
  std::mt19937_64 rng(11);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    size_t len = 64 + rng() % 137;
    std::string m(len, ' ');
    for (char& c : m) c = kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
    out.push_back(std::move(m));
  }
  return out;
}

// ---------------------------------------------------------------------------
// JSON output (flat objects of numbers, nested by section)
// ---------------------------------------------------------------------------

class JsonOut {
 public:
  void Begin(const std::string& key) {
    Sep();
    Key(key);
    s_ << "{";
    first_ = true;
  }
  void BeginArray(const std::string& key) {
    Sep();
    Key(key);
    s_ << "[";
    first_ = true;
  }
  void BeginItem() {
    Sep();
    s_ << "{";
    first_ = true;
  }
  void End() {
    s_ << "}";
    first_ = false;
  }
  void EndArray() {
    s_ << "]";
    first_ = false;
  }
  void Num(const std::string& key, double v) {
    Sep();
    Key(key);
    std::ostringstream o;
    o << std::setprecision(10) << v;
    s_ << o.str();
  }
  void Int(const std::string& key, uint64_t v) {
    Sep();
    Key(key);
    s_ << v;
  }
  void Str(const std::string& key, const std::string& v) {
    Sep();
    Key(key);
    s_ << '"';
    for (char c : v) {
      if (c == '"' || c == '\\')
        s_ << '\\' << c;
      else if (static_cast<unsigned char>(c) < 0x20)
        s_ << ' ';
      else
        s_ << c;
    }
    s_ << '"';
  }
  void Bool(const std::string& key, bool v) {
    Sep();
    Key(key);
    s_ << (v ? "true" : "false");
  }
  std::string Take() { return "{" + s_.str() + "}\n"; }

 private:
  void Sep() {
    if (!first_) s_ << ",";
    first_ = false;
  }
  void Key(const std::string& k) { s_ << '"' << k << "\":"; }
  std::ostringstream s_;
  bool first_ = true;
};

void Latency(JsonOut& j, const LatencyHistogram& h) {
  j.Int("count", h.count());
  j.Num("p50_ms", h.Percentile(50) / 1000.0);
  j.Num("p99_ms", h.Percentile(99) / 1000.0);
  j.Num("p999_ms", h.Percentile(99.9) / 1000.0);
}

std::string Ms(uint64_t us) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(us < 10'000 ? 2 : 1) << us / 1000.0;
  return o.str();
}

std::string Fixed(double v, int digits) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(digits) << v;
  return o.str();
}

std::string Rate(double v) {
  return devnet_detail::WithThousands(static_cast<uint64_t>(v + 0.5)) + "/s";
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

struct BenchNode {
  std::string name;
  fs::path datadir;
  std::string node_id;
  uint16_t p2p_port = 0;
  uint16_t rpc_port = 0;
  std::vector<std::string> extra_args;
  std::string token;
  std::unique_ptr<ChildProcess> proc;
  std::unique_ptr<api::HttpClient> client;
};

struct LoadFigures {
  LoadResult r;
  uint32_t connections = 0;
  uint32_t batch = 0;
};

struct RestartFigures {
  double seconds = 0;
  uint64_t rss_kib = 0;
  // The anonymous part (heap, stacks): what the node holds. VmRSS also
  // counts the LevelDB table pages mapped from the file cache, which swing
  // by tens of MB right after a restart whatever the node holds.
  uint64_t anon_kib = 0;
  uint64_t disk_bytes = 0;
  uint64_t tips = 0;      // received tips B holds
  uint64_t channels = 0;  // channels B holds
};

class Bench {
 public:
  explicit Bench(const BenchOptions& o) : o_(o) {}
  int Run();

 private:
  Status Prepare();
  Status StartLedger();
  Status StartNode(BenchNode& n);
  Status StopNode(BenchNode& n);
  Status ConnectAndWait(BenchNode& from, BenchNode& to);
  Result<std::string> OpenChannel(BenchNode& from, BenchNode& to, uint64_t deposit);
  Status WaitOpen(BenchNode& n, const std::string& channel_id);
  Result<v1::ChannelApi> GetChannel(BenchNode& n, const std::string& id);
  Status ProbeBatch();

  PreparedRequest Batch(const RawHttp& http, const std::string& channel, uint64_t seq,
                        uint32_t tips) const;
  PreparedRequest Single(const RawHttp& http, const std::string& channel, uint64_t seq) const;
  LoadFigures ClosedBatch(BenchNode& from, const std::string& channel, std::chrono::milliseconds d);

  // Settle (above) on the coalescing pair, before a measured section.
  void SettlePair() { Settle({a_.proc->pid(), b_.proc->pid()}, o_.quick ? 2s : 20s); }

  void RawLimits();
  Status Throughput();
  Status Scaling();
  Status Loads();
  Status HttpSingle();
  Status SizeTargets();
  Result<RestartFigures> Restart(BenchNode& n);
  Status OpenManyChannels(uint64_t target);
  Status Listing();
  void Report();

  BenchOptions o_;
  fs::path dir_, tipd_;
  bool made_dir_ = false;
  std::unique_ptr<ChildProcess> ledger_;
  uint16_t ledger_port_ = 0;
  std::string sequencer_id_;
  // a -> b: coalescing; c -> d: naive (max-tips-per-update 1).
  BenchNode a_, b_, c_, d_;
  std::string main_channel_, naive_channel_;
  std::vector<std::string> messages_;
  uint32_t batch_ = 1000;     // tips per batch the node accepts (probed)
  uint32_t batch_conns_ = 4;  // closed-loop batch connections
  std::chrono::milliseconds run_{10s};
  uint64_t history_target_ = 1'000'000, channel_target_ = 10'000;

  // Figures.
  double sign_per_s_ = 0, verify_per_s_ = 0, synced_batches_per_s_ = 0;
  LoadFigures coalesced_, naive_, single_, unloaded_;
  struct Offered {
    uint64_t rate = 0;
    std::string label;
    LoadResult r;
  };
  std::vector<Offered> loads_;
  struct Scale {
    uint32_t cores = 0;
    LoadResult r;
  };
  std::vector<Scale> scaling_;
  RestartFigures small_, filled_, full_;
  // Marginal: the database growth over the fill per added tip; average: the
  // whole database over every tip it holds. Both less the mean message.
  double bytes_per_tip_ = 0, avg_bytes_per_tip_ = 0, mean_message_ = 0;
  double rss_per_channel_ = 0;
  struct Listed {
    std::string name;
    std::string target;
    LatencyHistogram h;
    uint64_t bytes = 0;
    std::string note;
  };
  std::vector<Listed> listings_;
  bool channels_paged_ = false;
  std::string load_avg_;
};

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

Status Bench::Prepare() {
  std::error_code ec;
  if (o_.tipd_binary.empty()) {
    tipd_ = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return Status::IOError("cannot find the tipd binary: " + ec.message());
  } else {
    tipd_ = fs::absolute(o_.tipd_binary);
  }
  if (o_.dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/tipd-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Status::IOError("mkdtemp " + pattern + ": " + std::strerror(errno));
    }
    dir_ = pattern;
    made_dir_ = true;
  } else {
    dir_ = fs::absolute(o_.dir);
    if (fs::exists(dir_) && !fs::is_empty(dir_, ec)) {
      return Status::FailedPrecondition(dir_.string() +
                                        " is not empty; a bench needs a fresh directory");
    }
    TIPD_RETURN_IF_ERROR(node::PrepareDataDir(dir_));
  }
  run_ = std::chrono::milliseconds(1000 * (o_.seconds ? o_.seconds : (o_.quick ? 3 : 10)));
  history_target_ = o_.history_tips ? o_.history_tips : (o_.quick ? 20'000 : 1'000'000);
  channel_target_ = o_.channels ? o_.channels : (o_.quick ? 200 : 10'000);
  messages_ = MessagePool(1024);
  double sum = 0;
  for (const auto& m : messages_) sum += static_cast<double>(m.size());
  mean_message_ = sum / static_cast<double>(messages_.size());
  return Status::Ok();
}

Result<std::unique_ptr<ChildProcess>> Spawn(const std::string& name, const fs::path& log,
                                            std::vector<std::string> argv) {
  ProcessOptions options;
  options.argv = std::move(argv);
  options.log = log;
  options.name = name;
  options.new_process_group = true;
  options.parent_death_signal = SIGTERM;
  options.exec_tag = "tipd bench";
  return ChildProcess::Start(std::move(options));
}

Status AwaitLog(ChildProcess& c, std::string_view needle, std::chrono::milliseconds timeout) {
  switch (c.AwaitOutput(needle, Steady::now() + timeout)) {
    case ChildProcess::Outcome::kDone:
      return Status::Ok();
    case ChildProcess::Outcome::kExited:
      return Status::Unavailable(c.name() + " exited; see " + c.log_path().string());
    default:
      return Status::Unavailable(c.name() + " did not print \"" + std::string(needle) +
                                 "\" in time; see " + c.log_path().string());
  }
}

Status Bench::StartLedger() {
  // Keys first: the genesis funds the nodes' accounts.
  int i = 0;
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) {
    n->name = std::string("node-") + "abcd"[i++];
    n->datadir = dir_ / n->name;
    TIPD_RETURN_IF_ERROR(node::PrepareDataDir(n->datadir));
    TIPD_ASSIGN_OR_RETURN(crypto::KeyPair key, crypto::LoadOrCreateKeyFile(n->datadir / "node.key",
                                                                           crypto::SystemRng()));
    n->node_id = key.public_key().Hex();
  }
  c_.extra_args = d_.extra_args = {"--max-tips-per-update", "1"};
  a_.extra_args = b_.extra_args = o_.node_args;
  std::set<uint16_t> used;
  auto pick = [&]() -> Result<uint16_t> {
    for (int attempt = 0; attempt < 100; ++attempt) {
      // Any free port: bind 0 through a throwaway socket.
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(addr);
      uint16_t port = 0;
      if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port = ntohs(addr.sin_port);
      }
      if (fd >= 0) ::close(fd);
      if (port != 0 && used.insert(port).second) return port;
    }
    return Status::Unavailable("no free loopback port");
  };
  TIPD_ASSIGN_OR_RETURN(ledger_port_, pick());
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) {
    TIPD_ASSIGN_OR_RETURN(n->p2p_port, pick());
    TIPD_ASSIGN_OR_RETURN(n->rpc_port, pick());
  }
  const fs::path ldir = dir_ / "ledger";
  TIPD_RETURN_IF_ERROR(node::PrepareDataDir(ldir));
  std::vector<std::string> argv = {tipd_.string(),
                                   "ledger",
                                   "init",
                                   "--datadir",
                                   ldir.string(),
                                   "--chain-id",
                                   kChainId,
                                   "--block-interval-ms",
                                   "200",
                                   "--min-settle-timeout",
                                   "3",
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(ledger_port_)};
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) {
    argv.push_back("--fund");
    argv.push_back(n->node_id + "=" + std::to_string(kFund));
  }
  TIPD_ASSIGN_OR_RETURN(auto init, Spawn("ledger init", ldir / "tipd.log", argv));
  if (init->AwaitExit(Steady::now() + kReadyTimeout) != ChildProcess::Outcome::kDone ||
      init->exit_code() != 0) {
    return Status::Unavailable("tipd ledger init failed; see " + init->log_path().string());
  }
  TIPD_ASSIGN_OR_RETURN(crypto::SecretKey seq, crypto::LoadKeyFile(ldir / "sequencer.key"));
  sequencer_id_ = crypto::KeyPair::FromSecret(seq).public_key().Hex();
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) {
    fs::copy_file(ldir / "genesis.json", n->datadir / "genesis.json",
                  fs::copy_options::overwrite_existing);
  }
  TIPD_ASSIGN_OR_RETURN(
      ledger_, Spawn("ledger", ldir / "tipd.log",
                     {tipd_.string(), "ledger", "--datadir", ldir.string(), "--listen",
                      "127.0.0.1:" + std::to_string(ledger_port_), "--block-interval", "200ms",
                      "--seal-on-submit", "--max-inbound-per-address", "32"}));
  return AwaitLog(*ledger_, "listening on", kReadyTimeout);
}

Status Bench::StartNode(BenchNode& n) {
  std::vector<std::string> argv = {
      tipd_.string(),
      "node",
      "--datadir",
      n.datadir.string(),
      "--ledger",
      "127.0.0.1:" + std::to_string(ledger_port_) + "@" + sequencer_id_,
      "--listen",
      "127.0.0.1:" + std::to_string(n.p2p_port),
      "--rpc-listen",
      "127.0.0.1:" + std::to_string(n.rpc_port),
      "--chain-id",
      kChainId,
      "--min-settle-seconds",
      "1",
      "--max-accept-deposit",
      "1000000000000"};
  argv.insert(argv.end(), n.extra_args.begin(), n.extra_args.end());
  n.client.reset();
  TIPD_ASSIGN_OR_RETURN(n.proc, Spawn(n.name, n.datadir / "tipd.log", argv));
  TIPD_RETURN_IF_ERROR(AwaitLog(*n.proc, "API on http://", kReadyTimeout));
  TIPD_ASSIGN_OR_RETURN(n.token, api::ReadTokenFile(n.datadir / "admin.token"));
  TIPD_ASSIGN_OR_RETURN(api::HttpUrl url,
                        api::ParseHttpUrl("http://127.0.0.1:" + std::to_string(n.rpc_port)));
  n.client = std::make_unique<api::HttpClient>(url, n.token, 60s);
  TIPD_ASSIGN_OR_RETURN(auto info, Call<v1::InfoResponse>(*n.client, "GET", "/v1/info"));
  if (info.node_id() != n.node_id) return Status::Internal(n.name + " answers as another node");
  return Status::Ok();
}

Status Bench::StopNode(BenchNode& n) {
  n.client.reset();
  if (!n.proc) return Status::Ok();
  n.proc->Signal(SIGTERM);
  if (n.proc->AwaitExit(Steady::now() + 60s) != ChildProcess::Outcome::kDone) {
    n.proc->Kill();
    return Status::Unavailable(n.name + " did not stop within 60 s after SIGTERM");
  }
  return Status::Ok();
}

Status Bench::ConnectAndWait(BenchNode& from, BenchNode& to) {
  v1::ConnectPeerRequest req;
  req.set_node_id(to.node_id);
  req.set_address("127.0.0.1:" + std::to_string(to.p2p_port));
  req.set_persistent(true);
  TIPD_ASSIGN_OR_RETURN(auto res, from.client->Request("POST", "/v1/peers", ToJson(req)));
  if (!Is2xx(res.status) && res.status != 409) return api::HttpClient::ApiErrorStatus(res);
  auto deadline = Steady::now() + 60s;
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(auto peers,
                          Call<v1::ListPeersResponse>(*from.client, "GET", "/v1/peers"));
    for (const auto& p : peers.peers()) {
      if (p.node_id() == to.node_id) return Status::Ok();
    }
    if (Steady::now() > deadline)
      return Status::Unavailable(from.name + " cannot reach " + to.name);
    std::this_thread::sleep_for(50ms);
  }
}

Result<v1::ChannelApi> Bench::GetChannel(BenchNode& n, const std::string& id) {
  TIPD_ASSIGN_OR_RETURN(auto got,
                        Call<v1::GetChannelResponse>(*n.client, "GET", "/v1/channels/" + id));
  return got.channel();
}

Status Bench::WaitOpen(BenchNode& n, const std::string& channel_id) {
  auto deadline = Steady::now() + kReadyTimeout;
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(v1::ChannelApi ch, GetChannel(n, channel_id));
    if (ch.state() == "open") return Status::Ok();
    if (ch.state() != "opening") return Status::FailedPrecondition("channel is " + ch.state());
    if (Steady::now() > deadline) return Status::Unavailable("channel did not open");
    std::this_thread::sleep_for(20ms);
  }
}

Result<std::string> Bench::OpenChannel(BenchNode& from, BenchNode& to, uint64_t deposit) {
  v1::OpenChannelRequest req;
  req.set_peer_node_id(to.node_id);
  req.set_deposit(deposit);
  req.set_settle_timeout(10);
  auto deadline = Steady::now() + kReadyTimeout;
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(auto res, from.client->Request("POST", "/v1/channels", ToJson(req)));
    if (Is2xx(res.status)) {
      TIPD_ASSIGN_OR_RETURN(auto opened, FromJson<v1::OpenChannelResponse>(res));
      TIPD_RETURN_IF_ERROR(WaitOpen(from, opened.channel().channel_id()));
      return opened.channel().channel_id();
    }
    // 503: peer or ledger not there yet; 409 with TOO_MANY_PENDING_OPENS: wait.
    bool retry = res.status == 503 || res.body.find("TOO_MANY_PENDING_OPENS") != std::string::npos;
    if (!retry || Steady::now() > deadline) return api::HttpClient::ApiErrorStatus(res);
    std::this_thread::sleep_for(20ms);
  }
}

PreparedRequest Bench::Batch(const RawHttp& http, const std::string& channel, uint64_t seq,
                             uint32_t tips) const {
  std::string body;
  body.reserve(tips * 260 + 16);
  body += "{\"tips\":[";
  for (uint32_t i = 0; i < tips; ++i) {
    if (i) body += ',';
    body += "{\"channel_id\":\"";
    body += channel;
    body += "\",\"amount\":\"1\",\"message\":\"";
    body += messages_[(seq * 7919 + i) % messages_.size()];
    body += "\",\"metadata\":{\"app_name\":\"bench\"}}";
  }
  body += "]}";
  return PreparedRequest{http.Build("POST", "/v1/tips/batch?answer=compact", body), tips, true};
}

PreparedRequest Bench::Single(const RawHttp& http, const std::string& channel, uint64_t seq) const {
  std::string body = "{\"channel_id\":\"" + channel + "\",\"amount\":\"1\",\"message\":\"" +
                     messages_[seq % messages_.size()] +
                     "\",\"metadata\":{\"app_name\":\"bench\"}}";
  return PreparedRequest{http.Build("POST", "/v1/tips", body), 1, false};
}

// The biggest batch (<= 1000 tips of these messages) the node takes: the
// body limit may refuse 1000 (413), then halve.
Status Bench::ProbeBatch() {
  RawHttp http(a_.rpc_port, a_.token);
  for (uint32_t n = 1000; n >= 10; n /= 2) {
    PreparedRequest req = Batch(http, main_channel_, 0, n);
    int status = 0;
    std::string_view body;
    TIPD_RETURN_IF_ERROR(http.RoundTrip(req.wire, &status, &body));
    if (status == 200) {
      batch_ = n;
      batch_conns_ = std::clamp<uint32_t>(4000 / n, 1, 4);
      return Status::Ok();
    }
    if (status != 413) {
      return Status::Internal("POST /v1/tips/batch: HTTP " + std::to_string(status) + " " +
                              std::string(body.substr(0, 200)));
    }
  }
  return Status::Internal("POST /v1/tips/batch refuses even 10 tips");
}

LoadFigures Bench::ClosedBatch(BenchNode& from, const std::string& channel,
                               std::chrono::milliseconds d) {
  RawHttp builder(from.rpc_port, from.token);
  LoadFigures f;
  f.connections = batch_conns_;
  f.batch = batch_;
  f.r = RunClosedLoop(from.rpc_port, from.token, batch_conns_, d, [&](uint32_t w, uint64_t seq) {
    return Batch(builder, channel, seq * 64 + w, batch_);
  });
  return f;
}

// 5. Raw limits, in this process, one core.
void Bench::RawLimits() {
  const auto slice = o_.quick ? 500ms : 2000ms;
  crypto::KeyPair kp = crypto::KeyPair::Generate(crypto::SystemRng());
  std::array<uint8_t, 32> msg{}, aux{};
  crypto::Signature sig{};
  uint64_t n = 0;
  auto t0 = Steady::now();
  while (Steady::now() - t0 < slice) {
    for (int i = 0; i < 64; ++i, ++n) {
      msg[0] = static_cast<uint8_t>(n);
      msg[1] = static_cast<uint8_t>(n >> 8);
      sig = crypto::SchnorrSign(kp, msg, aux);
    }
  }
  sign_per_s_ = static_cast<double>(n) / Seconds(Steady::now() - t0);
  const auto xonly = kp.XOnly();
  uint64_t ok = 0;
  n = 0;
  t0 = Steady::now();
  while (Steady::now() - t0 < slice) {
    for (int i = 0; i < 64; ++i, ++n) ok += crypto::SchnorrVerify(xonly, msg, sig) ? 1 : 0;
  }
  verify_per_s_ = ok == n ? static_cast<double>(n) / Seconds(Steady::now() - t0) : 0;

  auto db = storage::Database::Open(dir_ / "raw-leveldb");
  if (!db.ok()) return;
  std::string value(200, 'v');
  n = 0;
  t0 = Steady::now();
  while (Steady::now() - t0 < slice) {
    storage::WriteBatch batch;
    batch.Put("T" + std::to_string(n), value);
    if (!(*db)->Write(batch).ok()) return;
    ++n;
  }
  synced_batches_per_s_ = static_cast<double>(n) / Seconds(Steady::now() - t0);
}

// 1 and 2: the closed-loop maximum with coalescing, then the naive pair.
Status Bench::Throughput() {
  coalesced_ = ClosedBatch(a_, main_channel_, run_);
  if (coalesced_.r.tips_acked == 0) {
    return Status::Internal("no tip acknowledged in the coalesced run: " +
                            coalesced_.r.first_error);
  }
  naive_ = ClosedBatch(c_, naive_channel_, run_);
  if (naive_.r.tips_acked == 0) {
    return Status::Internal("no tip acknowledged in the naive run: " + naive_.r.first_error);
  }
  return Status::Ok();
}

// 1 -> N cores: every child and this process pinned to the first k CPUs.
Status Bench::Scaling() {
  std::vector<int> cpus = AllowedCpus();
  std::vector<uint32_t> counts = o_.cores;
  if (counts.empty()) {
    counts.push_back(1);
    if (cpus.size() > 1) counts.push_back(static_cast<uint32_t>(cpus.size()));
  }
  std::vector<pid_t> pids = {::getpid(), ledger_->pid()};
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) pids.push_back(n->proc->pid());
  for (uint32_t k : counts) {
    if (k == 0 || k > cpus.size()) {
      return Status::InvalidArgument("--cores " + std::to_string(k) + ": this process may use " +
                                     std::to_string(cpus.size()) + " CPU(s)");
    }
    std::vector<int> use(cpus.begin(), cpus.begin() + k);
    for (pid_t p : pids) PinProcess(p, use);
    Scale s;
    s.cores = k;
    s.r = ClosedBatch(a_, main_channel_, std::max<std::chrono::milliseconds>(run_ / 2, 1000ms)).r;
    scaling_.push_back(std::move(s));
  }
  for (pid_t p : pids) PinProcess(p, cpus);
  return Status::Ok();
}

// 3. Fixed offered loads, open loop; and one tip at a time, unloaded.
Status Bench::Loads() {
  RawHttp builder(a_.rpc_port, a_.token);
  SettlePair();
  unloaded_.connections = 1;
  unloaded_.r =
      RunClosedLoop(a_.rpc_port, a_.token, 1, o_.quick ? 1000ms : 3000ms,
                    [&](uint32_t, uint64_t seq) { return Single(builder, main_channel_, seq); });
  const uint64_t max = static_cast<uint64_t>(coalesced_.r.TipsPerSecond());
  std::vector<std::pair<uint64_t, std::string>> rates = {
      {1'000, "1k/s"},
      {10'000, "10k/s"},
      {50'000, "50k/s"},
      {std::max<uint64_t>(1, max / 2), "50% of max"}};
  const auto each = std::max<std::chrono::milliseconds>(run_ / 2, 1000ms);
  for (auto& [rate, label] : rates) {
    SettlePair();
    Offered off;
    off.rate = rate;
    off.label = label;
    off.r = RunOpenLoop(
        a_.rpc_port, a_.token, 32, rate, each, 2000us,
        [&](uint32_t w, uint64_t seq, uint32_t tips) {
          return Batch(builder, main_channel_, seq * 64 + w, tips);
        },
        std::chrono::milliseconds(o_.slow_ms));
    PrintSlow(label, off.r.slow);
    loads_.push_back(std::move(off));
  }
  return Status::Ok();
}

// 4. Single tips over 16 keep-alive connections (the batch endpoint's
// figure is the coalesced run's).
Status Bench::HttpSingle() {
  RawHttp builder(a_.rpc_port, a_.token);
  SettlePair();
  single_.connections = 16;
  single_.batch = 1;
  single_.r = RunClosedLoop(a_.rpc_port, a_.token, 16, run_, [&](uint32_t w, uint64_t seq) {
    return Single(builder, main_channel_, seq * 16 + w);
  });
  if (single_.r.tips_acked == 0) {
    return Status::Internal("no single tip acknowledged: " + single_.r.first_error);
  }
  return Status::Ok();
}

// Restarts `n` and measures the time from exec to an API that answers (and
// /readyz ready if the node has it), its RSS then, and its database size.
Result<RestartFigures> Bench::Restart(BenchNode& n) {
  // A first restart turns LevelDB's log into a table (it replays the log into
  // a memtable and writes it out); the measured second one starts from that,
  // as a node restarted after a normal stop-start cycle does, so neither the
  // time nor the RSS depend on how much of the log the last run left.
  TIPD_RETURN_IF_ERROR(StopNode(n));
  TIPD_RETURN_IF_ERROR(StartNode(n));
  TIPD_RETURN_IF_ERROR(StopNode(n));
  RestartFigures f;
  const auto t0 = Steady::now();
  TIPD_RETURN_IF_ERROR(StartNode(n));
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(auto res, n.client->Request("GET", "/readyz"));
    if (res.status != 503) break;  // 200: ready; 404: a node without /readyz
    if (Steady::now() - t0 > kReadyTimeout) return Status::Unavailable(n.name + " never ready");
    std::this_thread::sleep_for(5ms);
  }
  f.seconds = Seconds(Steady::now() - t0);
  // Memory once the node has settled: at /readyz its peer may still be
  // reestablishing every channel, whose messages come and go.
  Settle({n.proc->pid()}, o_.quick ? 2s : 10s);
  f.rss_kib = RssKiB(n.proc->pid());
  f.anon_kib = StatusKiB(n.proc->pid(), "RssAnon:");
  f.disk_bytes = DirBytes(n.datadir / "db");
  TIPD_ASSIGN_OR_RETURN(auto list,
                        Call<v1::ListChannelsResponse>(*n.client, "GET", "/v1/channels"));
  f.channels = static_cast<uint64_t>(list.channels_size());
  for (const auto& c : list.channels()) f.tips += c.tips_received();
  return f;
}

Status Bench::OpenManyChannels(uint64_t target) {
  TIPD_RETURN_IF_ERROR(ConnectAndWait(a_, b_));
  TIPD_ASSIGN_OR_RETURN(auto list,
                        Call<v1::ListChannelsResponse>(*a_.client, "GET", "/v1/channels"));
  const uint64_t have = static_cast<uint64_t>(list.channels_size());
  if (have >= target) return Status::Ok();
  std::atomic<uint64_t> left{target - have};
  std::atomic<uint64_t> retried{0};
  const auto started = Steady::now();
  std::mutex mu;
  Status first = Status::Ok();
  std::vector<std::thread> threads;
  // The peer holds at most 4 pending opens from one peer (open policy); 3
  // at a time leaves room for one it has not seen land yet.
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      api::HttpClient client(*api::ParseHttpUrl("http://127.0.0.1:" + std::to_string(a_.rpc_port)),
                             a_.token, 60s);
      for (;;) {
        uint64_t before = left.load();
        if (before == 0 || !left.compare_exchange_weak(before, before - 1)) {
          if (before == 0) return;
          continue;
        }
        v1::OpenChannelRequest req;
        req.set_peer_node_id(b_.node_id);
        req.set_deposit(kExtraDeposit);
        req.set_settle_timeout(10);
        Status s = Status::Ok();
        auto deadline = Steady::now() + kReadyTimeout;
        for (;;) {
          auto res = client.Request("POST", "/v1/channels", ToJson(req));
          if (!res.ok()) {
            s = res.status();
            break;
          }
          if (Is2xx(res->status)) break;
          // TOO_MANY_PENDING_OPENS: the peer has not seen our last opens
          // land yet. CHANNEL_EXISTS and OPENER_CANNOT_FUND came from nonces
          // handed out twice (fixed: node/tx_sender.h) and are counted, so a
          // regression shows. All are refused before any transaction:
          // trying again is safe.
          bool retry = res->status == 503 ||
                       res->body.find("TOO_MANY_PENDING_OPENS") != std::string::npos ||
                       res->body.find("CHANNEL_EXISTS") != std::string::npos ||
                       res->body.find("OPENER_CANNOT_FUND") != std::string::npos;
          if (res->body.find("CHANNEL_EXISTS") != std::string::npos ||
              res->body.find("OPENER_CANNOT_FUND") != std::string::npos) {
            ++retried;
          }
          if (!retry || Steady::now() > deadline) {
            s = api::HttpClient::ApiErrorStatus(*res);
            break;
          }
          std::this_thread::sleep_for(10ms);
        }
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.ok()) first = s;
          left = 0;
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double secs = Seconds(Steady::now() - started);
  std::cout << "bench:   opened " << (target - have) << " channels in " << std::fixed
            << std::setprecision(1) << secs << " s ("
            << static_cast<double>(target - have) / std::max(secs, 1e-9) << "/s; " << retried.load()
            << " retried after CHANNEL_EXISTS or OPENER_CANNOT_FUND)" << std::endl;
  return first;
}

// 6. The size targets: B restarted with a small history, after the fill to
// the history target, and after opening the channels.
Status Bench::SizeTargets() {
  TIPD_ASSIGN_OR_RETURN(small_, Restart(b_));
  TIPD_RETURN_IF_ERROR(ConnectAndWait(a_, b_));
  // Fill: the coalesced closed loop until B holds the target.
  // At least half the target is added by the fill, for the bytes per tip.
  const uint64_t goal = std::max(history_target_, small_.tips + history_target_ / 2);
  for (int round = 0; round < 1000; ++round) {
    TIPD_ASSIGN_OR_RETURN(v1::ChannelApi ch, GetChannel(b_, main_channel_));
    if (ch.tips_received() >= goal) break;
    const uint64_t missing = goal - ch.tips_received();
    auto d = std::chrono::milliseconds(std::clamp<uint64_t>(
        missing * 1000 / std::max<uint64_t>(1, static_cast<uint64_t>(coalesced_.r.TipsPerSecond())),
        300, 10'000));
    LoadFigures f = ClosedBatch(a_, main_channel_, d);
    if (f.r.tips_acked == 0) return Status::Internal("the fill stalled: " + f.r.first_error);
  }
  TIPD_ASSIGN_OR_RETURN(filled_, Restart(b_));
  const uint64_t added = filled_.tips - small_.tips;
  if (added > 0 && filled_.disk_bytes > small_.disk_bytes) {
    bytes_per_tip_ =
        static_cast<double>(filled_.disk_bytes - small_.disk_bytes) / static_cast<double>(added) -
        mean_message_;
  }
  TIPD_RETURN_IF_ERROR(OpenManyChannels(channel_target_));
  TIPD_ASSIGN_OR_RETURN(full_, Restart(b_));
  if (full_.channels > filled_.channels && full_.anon_kib > filled_.anon_kib) {
    rss_per_channel_ = static_cast<double>(full_.anon_kib - filled_.anon_kib) * 1024.0 /
                       static_cast<double>(full_.channels - filled_.channels);
  }
  if (full_.tips > 0) {
    avg_bytes_per_tip_ =
        static_cast<double>(full_.disk_bytes) / static_cast<double>(full_.tips) - mean_message_;
  }
  return ConnectAndWait(a_, b_);
}

// 7. Listing at full size, on B.
Status Bench::Listing() {
  TIPD_ASSIGN_OR_RETURN(v1::ChannelApi ch, GetChannel(b_, main_channel_));
  const uint64_t n = ch.tips_received();
  const std::string base = "/v1/tips?channel_id=" + main_channel_ + "&direction=received&limit=100";
  listings_ = {
      {"tips, first page", base, {}, 0, ""},
      {"tips, deep cursor",
       base + "&cursor=" + main_channel_ + ".1." + std::to_string(n / 2),
       {},
       0,
       ""},
      {"tips, newest page",
       base + "&cursor=" + main_channel_ + ".1." + std::to_string(n > 99 ? n - 99 : 1),
       {},
       0,
       ""},
      {"tips, all channels", "/v1/tips?limit=100", {}, 0, ""},
      {"channels, all", "/v1/channels", {}, 0, ""},
      {"channels, page of 100", "/v1/channels?limit=100", {}, 0, ""},
  };
  RawHttp http(b_.rpc_port, b_.token);
  const int reps = o_.quick ? 30 : 200;
  for (Listed& l : listings_) {
    std::string wire = http.Build("GET", l.target, "");
    for (int i = -3; i < reps; ++i) {  // 3 warm-up requests, not counted
      int status = 0;
      std::string_view body;
      auto t0 = Steady::now();
      TIPD_RETURN_IF_ERROR(http.RoundTrip(wire, &status, &body));
      if (i >= 0)
        l.h.Record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - t0).count()));
      if (status != 200) {
        return Status::Internal("GET " + l.target + ": HTTP " + std::to_string(status) + " " +
                                std::string(body.substr(0, 200)));
      }
      l.bytes = body.size();
      if (l.name == "channels, page of 100") {
        channels_paged_ = body.find("\"next_cursor\"") != std::string_view::npos;
        if (!channels_paged_) l.note = "no paging: the whole list";
      }
    }
  }
  return Status::Ok();
}

void Bench::Report() {
  std::ostringstream t;
  auto line = [&](const std::string& what, const std::string& figure,
                  const std::string& more = "") {
    t << "  " << std::left << std::setw(50) << what << " " << std::setw(16) << figure << " " << more
      << "\n";
  };
  t << "\ntipd bench" << (o_.quick ? " --quick" : "") << " (load average " << load_avg_ << ")\n";
  t << "1. closed loop, coalescing (batch " << coalesced_.batch << " x " << coalesced_.connections
    << " conn)\n";
  line("   tips acked", Rate(coalesced_.r.TipsPerSecond()),
       "batch p50 " + Ms(coalesced_.r.latency.Percentile(50)) + " ms, loadgen " +
           Fixed(coalesced_.r.loadgen_cpu_cores, 2) + " cores");
  t << "2. naive (max-tips-per-update 1)\n";
  line("   tips acked", Rate(naive_.r.TipsPerSecond()),
       "coalescing gain " +
           Fixed(naive_.r.TipsPerSecond() > 0
                     ? coalesced_.r.TipsPerSecond() / naive_.r.TipsPerSecond()
                     : 0,
                 1) +
           "x");
  t << "3. submit -> signed receipt (open loop)\n";
  line("   one tip at a time, unloaded", "p50 " + Ms(unloaded_.r.latency.Percentile(50)) + " ms",
       "p99 " + Ms(unloaded_.r.latency.Percentile(99)) + " ms");
  for (const Offered& l : loads_) {
    line("   offered " + l.label + " (" + Rate(static_cast<double>(l.rate)) + ")",
         "got " + Rate(l.r.TipsPerSecond()),
         "p50 " + Ms(l.r.latency.Percentile(50)) + " / p99 " + Ms(l.r.latency.Percentile(99)) +
             " / p99.9 " + Ms(l.r.latency.Percentile(99.9)) + " ms" +
             (l.r.tips_failed ? ", " + std::to_string(l.r.tips_failed) + " failed" : "") +
             (l.r.tips_unsent
                  ? ", overloaded: " + devnet_detail::WithThousands(l.r.tips_unsent) + " not sent"
                  : ""));
  }
  t << "4. HTTP API\n";
  line("   single tips, 16 keep-alive conn", Rate(single_.r.TipsPerSecond()),
       "p50 " + Ms(single_.r.latency.Percentile(50)) + " / p99 " +
           Ms(single_.r.latency.Percentile(99)) + " ms, loadgen " +
           Fixed(single_.r.loadgen_cpu_cores, 2) + " cores");
  line("   batch endpoint", Rate(coalesced_.r.TipsPerSecond()), "(= 1.)");
  t << "5. raw limits (one core, this process)\n";
  line("   Schnorr sign", Rate(sign_per_s_));
  line("   Schnorr verify", Rate(verify_per_s_));
  line("   synced LevelDB batches", Rate(synced_batches_per_s_));
  t << "6. size (node-b: received history, channels)\n";
  for (auto [label, f] : {std::pair<const char*, RestartFigures*>{"small", &small_},
                          {"filled", &filled_},
                          {"full", &full_}}) {
    line(std::string("   restart to ready, ") + label + " (" +
             devnet_detail::WithThousands(f->tips) + " tips, " +
             devnet_detail::WithThousands(f->channels) + " ch)",
         Fixed(f->seconds, 3) + " s",
         "RSS " + devnet_detail::WithThousands(f->rss_kib) + " KiB (anon " +
             devnet_detail::WithThousands(f->anon_kib) + "), disk " +
             devnet_detail::WithThousands(f->disk_bytes / 1024) + " KiB");
  }
  line("   disk per tip beyond its message", Fixed(bytes_per_tip_, 1) + " B",
       "marginal over the fill; whole db / tips: " + Fixed(avg_bytes_per_tip_, 1) +
           " B (messages average " + Fixed(mean_message_, 1) + " B)");
  line("   RSS per idle channel", Fixed(rss_per_channel_, 0) + " B",
       "anonymous RSS (heap), full minus filled restart");
  t << "7. listing on node-b at full size\n";
  for (const Listed& l : listings_) {
    line("   " + l.name, "p50 " + Ms(l.h.Percentile(50)) + " ms",
         "p99 " + Ms(l.h.Percentile(99)) + " ms, " + devnet_detail::WithThousands(l.bytes) + " B" +
             (l.note.empty() ? "" : ", " + l.note));
  }
  t << "scaling (closed loop, coalescing; all processes pinned)\n";
  for (const Scale& s : scaling_) {
    line("   " + std::to_string(s.cores) + " core(s)", Rate(s.r.TipsPerSecond()));
  }
  std::cout << t.str() << std::flush;

  if (o_.json.empty()) return;
  JsonOut j;
  j.Int("version", 1);
  j.Bool("quick", o_.quick);
  j.Str("load_average", load_avg_);
  j.Int("cpus", AllowedCpus().size());
  auto load = [&](const std::string& key, const LoadFigures& f) {
    j.Begin(key);
    j.Num("tips_per_second", f.r.TipsPerSecond());
    j.Int("tips_acked", f.r.tips_acked);
    j.Int("tips_failed", f.r.tips_failed);
    j.Int("requests", f.r.requests);
    j.Num("seconds", f.r.seconds);
    j.Int("connections", f.connections);
    j.Int("tips_per_request", f.batch);
    j.Num("loadgen_cpu_cores", f.r.loadgen_cpu_cores);
    j.Begin("request_latency");
    Latency(j, f.r.latency);
    j.End();
    j.Str("first_error", f.r.first_error);
    j.End();
  };
  load("coalesced", coalesced_);
  load("naive", naive_);
  j.Num("coalescing_gain",
        naive_.r.TipsPerSecond() > 0 ? coalesced_.r.TipsPerSecond() / naive_.r.TipsPerSecond() : 0);
  j.Begin("latency");
  j.Begin("unloaded");
  Latency(j, unloaded_.r.latency);
  j.End();
  j.BeginArray("offered");
  for (const Offered& l : loads_) {
    j.BeginItem();
    j.Str("label", l.label);
    j.Int("offered_tips_per_second", l.rate);
    j.Num("achieved_tips_per_second", l.r.TipsPerSecond());
    j.Int("tips_acked", l.r.tips_acked);
    j.Int("tips_failed", l.r.tips_failed);
    j.Int("tips_unsent", l.r.tips_unsent);
    j.Num("loadgen_cpu_cores", l.r.loadgen_cpu_cores);
    Latency(j, l.r.latency);
    j.End();
  }
  j.EndArray();
  j.End();
  j.Begin("http");
  load("single", single_);
  load("batch", coalesced_);
  j.End();
  j.Begin("raw");
  j.Num("schnorr_sign_per_second", sign_per_s_);
  j.Num("schnorr_verify_per_second", verify_per_s_);
  j.Num("synced_leveldb_batches_per_second", synced_batches_per_s_);
  j.End();
  j.Begin("size");
  for (auto [label, f] : {std::pair<const char*, RestartFigures*>{"small", &small_},
                          {"filled", &filled_},
                          {"full", &full_}}) {
    j.Begin(label);
    j.Num("restart_to_ready_seconds", f->seconds);
    j.Int("rss_kib", f->rss_kib);
    j.Int("rss_anon_kib", f->anon_kib);
    j.Int("disk_bytes", f->disk_bytes);
    j.Int("tips", f->tips);
    j.Int("channels", f->channels);
    j.End();
  }
  j.Num("disk_bytes_per_tip_beyond_message", bytes_per_tip_);
  j.Num("disk_bytes_per_tip_beyond_message_average", avg_bytes_per_tip_);
  j.Num("mean_message_bytes", mean_message_);
  j.Num("rss_bytes_per_idle_channel", rss_per_channel_);
  j.End();
  j.BeginArray("listing");
  for (const Listed& l : listings_) {
    j.BeginItem();
    j.Str("name", l.name);
    j.Str("target", l.target);
    j.Int("response_bytes", l.bytes);
    Latency(j, l.h);
    j.End();
  }
  j.EndArray();
  j.Bool("channels_paged", channels_paged_);
  j.BeginArray("scaling");
  for (const Scale& s : scaling_) {
    j.BeginItem();
    j.Int("cores", s.cores);
    j.Num("tips_per_second", s.r.TipsPerSecond());
    j.Num("loadgen_cpu_cores", s.r.loadgen_cpu_cores);
    j.End();
  }
  j.EndArray();
  Status s = api::WriteFileAtomic0600(o_.json, j.Take());
  if (!s.ok()) std::cerr << "tipd bench: " << s.message() << "\n";
}

int Bench::Run() {
  load_avg_ = LoadAverage();
  std::signal(SIGPIPE, SIG_IGN);
  Status s = Prepare();
  auto wanted = [&](const char* section) {
    return o_.only.empty() ||
           std::find(o_.only.begin(), o_.only.end(), std::string(section)) != o_.only.end();
  };
  auto step = [&](const char* what, const std::function<Status()>& f,
                  const char* section = nullptr) {
    if (!s.ok()) return;
    if (section != nullptr && !wanted(section)) return;
    std::cout << "bench: " << what << "..." << std::endl;
    auto t0 = Steady::now();
    s = f();
    if (!s.ok())
      s = Status(s.code(), std::string(what) + ": " + s.message());
    else
      std::cout << "bench:   done in " << std::fixed << std::setprecision(1)
                << Seconds(Steady::now() - t0) << " s" << std::endl;
  };
  step(
      "raw limits (sign, verify, synced batches)",
      [&] {
        RawLimits();
        return Status::Ok();
      },
      "raw");
  step("starting a ledger and 4 nodes", [&] {
    TIPD_RETURN_IF_ERROR(StartLedger());
    for (BenchNode* n : {&a_, &b_, &c_, &d_}) TIPD_RETURN_IF_ERROR(StartNode(*n));
    TIPD_RETURN_IF_ERROR(ConnectAndWait(a_, b_));
    TIPD_RETURN_IF_ERROR(ConnectAndWait(c_, d_));
    TIPD_ASSIGN_OR_RETURN(main_channel_, OpenChannel(a_, b_, kMainDeposit));
    TIPD_ASSIGN_OR_RETURN(naive_channel_, OpenChannel(c_, d_, kMainDeposit));
    return ProbeBatch();
  });
  step(
      "1-2. closed-loop maximum, coalesced then naive", [&] { return Throughput(); }, "throughput");
  step(
      "3. latency at fixed offered loads", [&] { return Loads(); }, "loads");
  step(
      "4. HTTP single tips", [&] { return HttpSingle(); }, "http");
  step(
      "scaling over cores", [&] { return Scaling(); }, "scaling");
  step(
      "6. restart, memory and disk at size", [&] { return SizeTargets(); }, "size");
  step(
      "7. listing at size", [&] { return Listing(); }, "listing");
  int code = 0;
  if (s.ok()) {
    Report();
  } else {
    std::cerr << "tipd bench: " << s.message() << "\n";
    code = s.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  for (BenchNode* n : {&a_, &b_, &c_, &d_}) (void)StopNode(*n);
  if (ledger_) {
    ledger_->Signal(SIGTERM);
    if (ledger_->AwaitExit(Steady::now() + 30s) != ChildProcess::Outcome::kDone) ledger_->Kill();
  }
  if (code == 0 && made_dir_ && !o_.keep) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  } else if (!dir_.empty()) {
    std::cout << "bench: state and logs kept in " << dir_.string() << "\n";
  }
  return code;
}

}  // namespace

}  // namespace bench_detail

int RunBench(const BenchOptions& options) {
  bench_detail::Bench bench(options);
  return bench.Run();
}

}  // namespace tipd::tools
