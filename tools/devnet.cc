#include "tools/devnet.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "api/auth.h"
#include "api/http_client.h"
#include "crypto/crypto.h"
#include "node/lifecycle.h"
#include "tipd/api.pb.h"

namespace tipd::node {

namespace fs = std::filesystem;
namespace pb = google::protobuf;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------

std::string DevnetLedger::LedgerArg() const {
  return "127.0.0.1:" + std::to_string(port) + "@" + sequencer_id;
}
std::string DevnetNode::P2pAddress() const { return "127.0.0.1:" + std::to_string(p2p_port); }
std::string DevnetNode::RpcUrl() const { return "http://127.0.0.1:" + std::to_string(rpc_port); }

namespace {

std::string JsonQuote(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

Result<const pb::Value*> Field(const pb::Struct& s, const std::string& key,
                               const std::string& where, pb::Value::KindCase kind) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || it->second.kind_case() != kind) {
    return Status::Corruption("devnet.json: " + where + key + " is missing or has the wrong type");
  }
  return &it->second;
}
Result<std::string> GetStr(const pb::Struct& s, const std::string& key, const std::string& where) {
  TIPD_ASSIGN_OR_RETURN(const pb::Value* v, Field(s, key, where, pb::Value::kStringValue));
  return v->string_value();
}
Result<uint64_t> GetNum(const pb::Struct& s, const std::string& key, const std::string& where,
                        uint64_t max) {
  TIPD_ASSIGN_OR_RETURN(const pb::Value* v, Field(s, key, where, pb::Value::kNumberValue));
  double d = v->number_value();
  if (!(d >= 0) || d != std::floor(d) || d > static_cast<double>(max)) {
    return Status::Corruption("devnet.json: " + where + key + " is not an integer in 0.." +
                              std::to_string(max));
  }
  return static_cast<uint64_t>(d);
}

}  // namespace

std::string ManifestToJson(const DevnetManifest& m) {
  // Written by hand (ParseManifest reads it with protobuf's JSON parser) so
  // the keys keep a readable order: one key per line, objects in lists on one.
  using Fields = std::vector<std::string>;
  auto str = [](const std::string& key, const std::string& value) {
    return JsonQuote(key) + ": " + JsonQuote(value);
  };
  auto num = [](const std::string& key, uint64_t value) {
    return JsonQuote(key) + ": " + std::to_string(value);
  };
  auto object = [](const Fields& fields, const std::string& indent) {
    std::string out = "{";
    for (size_t i = 0; i < fields.size(); ++i) {
      out += "\n" + indent + "  " + fields[i] + (i + 1 < fields.size() ? "," : "");
    }
    return out + "\n" + indent + "}";
  };
  std::vector<std::string> nodes, channels;
  for (const DevnetNode& n : m.nodes) {
    nodes.push_back(object(
        {str("name", n.name), str("node_id", n.node_id), str("datadir", n.datadir.string()),
         num("p2p_port", n.p2p_port), str("p2p_address", n.P2pAddress()),
         num("rpc_port", n.rpc_port), str("rpc_url", n.RpcUrl()),
         str("token_file", n.TokenFile().string()), str("log", (n.datadir / "tipd.log").string()),
         num("pid", static_cast<uint64_t>(n.pid))},
        "    "));
  }
  for (const DevnetChannel& c : m.channels) {
    channels.push_back(
        object({str("channel_id", c.channel_id), num("opener", c.opener), num("peer", c.peer),
                num("deposit", c.deposit), num("push_deposit", c.push_deposit)},
               "    "));
  }
  auto list = [](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) {
      out += "\n    " + items[i] + (i + 1 < items.size() ? "," : "");
    }
    return out + (items.empty() ? "]" : "\n  ]");
  };
  std::string ledger = object(
      {str("datadir", m.ledger.datadir.string()), str("sequencer_id", m.ledger.sequencer_id),
       num("port", m.ledger.port), str("address", "127.0.0.1:" + std::to_string(m.ledger.port)),
       str("ledger_arg", m.ledger.LedgerArg()),
       str("log", (m.ledger.datadir / "tipd.log").string()),
       num("pid", static_cast<uint64_t>(m.ledger.pid))},
      "  ");
  return object({num("version", 1), str("chain_id", m.chain_id),
                 num("devnet_pid", static_cast<uint64_t>(m.devnet_pid)),
                 JsonQuote("ledger") + ": " + ledger, JsonQuote("nodes") + ": " + list(nodes),
                 JsonQuote("channels") + ": " + list(channels)},
                "") +
         "\n";
}

Result<DevnetManifest> ParseManifest(const std::string& json) {
  pb::Struct root;
  auto st = pb::util::JsonStringToMessage(json, &root);
  if (!st.ok()) {
    return Status::Corruption("devnet.json is not valid JSON: " + std::string(st.message()));
  }
  DevnetManifest m;
  TIPD_ASSIGN_OR_RETURN(uint64_t version, GetNum(root, "version", "", 1000));
  if (version != 1) {
    return Status::Corruption("devnet.json: version " + std::to_string(version) +
                              " is not known to this tipd (expected 1)");
  }
  TIPD_ASSIGN_OR_RETURN(m.chain_id, GetStr(root, "chain_id", ""));
  TIPD_ASSIGN_OR_RETURN(uint64_t devnet_pid, GetNum(root, "devnet_pid", "", INT32_MAX));
  m.devnet_pid = static_cast<pid_t>(devnet_pid);
  TIPD_ASSIGN_OR_RETURN(const pb::Value* ledger_v,
                        Field(root, "ledger", "", pb::Value::kStructValue));
  const pb::Struct& ledger = ledger_v->struct_value();
  TIPD_ASSIGN_OR_RETURN(std::string ledger_dir, GetStr(ledger, "datadir", "ledger."));
  m.ledger.datadir = ledger_dir;
  TIPD_ASSIGN_OR_RETURN(m.ledger.sequencer_id, GetStr(ledger, "sequencer_id", "ledger."));
  TIPD_ASSIGN_OR_RETURN(uint64_t ledger_port, GetNum(ledger, "port", "ledger.", 65535));
  m.ledger.port = static_cast<uint16_t>(ledger_port);
  TIPD_ASSIGN_OR_RETURN(uint64_t ledger_pid, GetNum(ledger, "pid", "ledger.", INT32_MAX));
  m.ledger.pid = static_cast<pid_t>(ledger_pid);

  TIPD_ASSIGN_OR_RETURN(const pb::Value* nodes_v, Field(root, "nodes", "", pb::Value::kListValue));
  for (int i = 0; i < nodes_v->list_value().values_size(); ++i) {
    const pb::Value& v = nodes_v->list_value().values(i);
    std::string where = "nodes[" + std::to_string(i) + "].";
    if (v.kind_case() != pb::Value::kStructValue) {
      return Status::Corruption("devnet.json: " + where + " is not an object");
    }
    const pb::Struct& o = v.struct_value();
    DevnetNode n;
    TIPD_ASSIGN_OR_RETURN(n.name, GetStr(o, "name", where));
    TIPD_ASSIGN_OR_RETURN(n.node_id, GetStr(o, "node_id", where));
    TIPD_ASSIGN_OR_RETURN(std::string datadir, GetStr(o, "datadir", where));
    n.datadir = datadir;
    TIPD_ASSIGN_OR_RETURN(uint64_t p2p, GetNum(o, "p2p_port", where, 65535));
    TIPD_ASSIGN_OR_RETURN(uint64_t rpc, GetNum(o, "rpc_port", where, 65535));
    TIPD_ASSIGN_OR_RETURN(uint64_t pid, GetNum(o, "pid", where, INT32_MAX));
    n.p2p_port = static_cast<uint16_t>(p2p);
    n.rpc_port = static_cast<uint16_t>(rpc);
    n.pid = static_cast<pid_t>(pid);
    m.nodes.push_back(std::move(n));
  }
  TIPD_ASSIGN_OR_RETURN(const pb::Value* channels_v,
                        Field(root, "channels", "", pb::Value::kListValue));
  for (int i = 0; i < channels_v->list_value().values_size(); ++i) {
    const pb::Value& v = channels_v->list_value().values(i);
    std::string where = "channels[" + std::to_string(i) + "].";
    if (v.kind_case() != pb::Value::kStructValue) {
      return Status::Corruption("devnet.json: " + where + " is not an object");
    }
    const pb::Struct& o = v.struct_value();
    DevnetChannel c;
    TIPD_ASSIGN_OR_RETURN(c.channel_id, GetStr(o, "channel_id", where));
    TIPD_ASSIGN_OR_RETURN(uint64_t opener, GetNum(o, "opener", where, m.nodes.size()));
    TIPD_ASSIGN_OR_RETURN(uint64_t peer, GetNum(o, "peer", where, m.nodes.size()));
    if (opener >= m.nodes.size() || peer >= m.nodes.size() || opener == peer) {
      return Status::Corruption("devnet.json: " + where + "opener/peer name no two nodes");
    }
    c.opener = static_cast<uint32_t>(opener);
    c.peer = static_cast<uint32_t>(peer);
    TIPD_ASSIGN_OR_RETURN(c.deposit, GetNum(o, "deposit", where, uint64_t{1} << 53));
    TIPD_ASSIGN_OR_RETURN(c.push_deposit, GetNum(o, "push_deposit", where, uint64_t{1} << 53));
    m.channels.push_back(c);
  }
  return m;
}

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

namespace {

// ---------------------------------------------------------------------------
// Constants of a devnet
// ---------------------------------------------------------------------------

constexpr const char* kChainId = "tipd-devnet";
constexpr uint64_t kFundPerNode = 100'000'000;
constexpr uint64_t kChannelDeposit = 1'000'000;  // each side
constexpr uint64_t kSettleTimeoutBlocks = 10;
constexpr uint64_t kBlockIntervalMs = 200;
constexpr auto kReadyTimeout = 60s;
constexpr auto kStopGrace = 10s;
constexpr const char* kPersonas[] = {"alice",  "bob",   "carol",  "dave", "erin",    "frank",
                                     "grace",  "heidi", "ivan",   "judy", "mallory", "niaj",
                                     "olivia", "peggy", "rupert", "sybil"};
static_assert(std::size(kPersonas) >= kDevnetMaxNodes);

std::string Persona(uint32_t index) { return kPersonas[index % std::size(kPersonas)]; }

std::string WithThousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Millis(uint64_t micros) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(micros < 10'000 ? 2 : 1) << micros / 1000.0 << " ms";
  return s.str();
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
// Child processes
// ---------------------------------------------------------------------------

struct Child {
  std::string name;  // "ledger", "node-0"
  fs::path log;
  pid_t pid = -1;
  std::optional<int> exit_code;  // once reaped
  bool running() const { return pid > 0 && !exit_code; }
};

Child MakeChild(std::string name, fs::path log) {
  Child c;
  c.name = std::move(name);
  c.log = std::move(log);
  return c;
}

uint64_t FileSize(const fs::path& p) {
  std::error_code ec;
  auto size = fs::file_size(p, ec);
  return ec ? 0 : size;
}

std::string LogTail(const fs::path& log, size_t lines = 5) {
  std::ifstream in(log);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "    " + all[i] + "\n";
  }
  return out;
}

// Starts `argv` (argv[0] is the binary) in its own process group with stdin
// from /dev/null and stdout/stderr appended to child->log. The child gets
// SIGTERM if this process dies (PR_SET_PDEATHSIG), so a killed devnet does
// not leave daemons behind.
Status Spawn(const std::vector<std::string>& argv, Child* child) {
  int log_fd = ::open(child->log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    return Status::IOError("open " + child->log.string() + ": " + std::strerror(errno));
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return Status::IOError(std::string("fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    // Async-signal-safe calls only from here on.
    ::setpgid(0, 0);  // Ctrl-C reaches the devnet, which stops children in order
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(args[0], args.data());
    const char msg[] = "tipd devnet: exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  child->pid = pid;
  child->exit_code.reset();
  return Status::Ok();
}

// Reaps the child if it exited; true if it is still running.
bool Alive(Child& c) {
  if (!c.running()) return false;
  int status = 0;
  pid_t r = ::waitpid(c.pid, &status, WNOHANG);
  if (r == c.pid) {
    c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

Status ChildDied(const Child& c, const std::string& when) {
  return Status::Unavailable(c.name + " exited with code " +
                             std::to_string(c.exit_code.value_or(-1)) + " " + when + "; see " +
                             c.log.string() + ":\n" + LogTail(c.log));
}

// Waits until the child's log (from byte `offset`) contains `needle`; returns
// the rest of the line after it.
Result<std::string> WaitForLog(Child& c, uint64_t offset, const std::string& needle,
                               Steady::time_point deadline, StopSignals& signals) {
  std::string seen;
  for (;;) {
    {
      std::ifstream in(c.log, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(offset + seen.size()));
      std::string more((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      seen += more;
    }
    size_t pos = seen.find(needle);
    if (pos != std::string::npos) {
      size_t end = seen.find('\n', pos);
      if (end != std::string::npos) {
        return seen.substr(pos + needle.size(), end - pos - needle.size());
      }
    }
    if (!Alive(c)) return ChildDied(c, "before it was ready");
    if (Steady::now() >= deadline) {
      return Status::Unavailable(c.name + " was not ready within " +
                                 std::to_string(kReadyTimeout.count()) + " s; see " +
                                 c.log.string() + ":\n" + LogTail(c.log));
    }
    if (signals.Wait(50ms)) return Status::Unavailable("interrupted");
  }
}

// SIGTERM to every running child, wait up to `grace` (a further signal to
// the devnet cuts it short), then SIGKILL what is left. Reaps all.
void StopChildren(const std::vector<Child*>& children, StopSignals& signals,
                  std::chrono::milliseconds grace) {
  for (Child* c : children) {
    if (Alive(*c)) ::kill(c->pid, SIGTERM);
  }
  auto deadline = Steady::now() + grace;
  for (;;) {
    bool any = false;
    for (Child* c : children) any |= Alive(*c);
    if (!any) return;
    if (Steady::now() >= deadline || signals.PollAgain()) break;
    std::this_thread::sleep_for(20ms);
  }
  for (Child* c : children) {
    if (!Alive(*c)) continue;
    std::cerr << "devnet: " << c->name << " did not stop in time; killing it\n";
    ::kill(c->pid, SIGKILL);
    int status = 0;
    ::waitpid(c->pid, &status, 0);
    c->exit_code = 128 + SIGKILL;
  }
}

// True if `pid` runs `tipd devnet` (its command line says so): a pid from an
// old devnet.json may since belong to an unrelated process.
bool IsRunningDevnet(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < cmdline.size();) {
    size_t end = cmdline.find('\0', start);
    if (end == std::string::npos) end = cmdline.size();
    args.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  return args.size() >= 2 && fs::path(args[0]).filename().string().starts_with("tipd") &&
         args[1] == "devnet";
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

// Binds 127.0.0.1:port (0: any) with SO_REUSEADDR like the daemons do, and
// returns the bound port, or 0 if it is taken.
uint16_t TryBind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  uint16_t bound = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      bound = ntohs(addr.sin_port);
    }
  }
  ::close(fd);
  return bound;
}

// The recorded port if free, else the --base-port one if free, else any.
Result<uint16_t> PickPort(uint16_t recorded, uint16_t from_base, std::set<uint16_t>* used) {
  for (uint16_t candidate : {recorded, from_base}) {
    if (candidate != 0 && !used->contains(candidate) && TryBind(candidate) == candidate) {
      used->insert(candidate);
      return candidate;
    }
  }
  for (int attempt = 0; attempt < 100; ++attempt) {
    uint16_t p = TryBind(0);
    if (p != 0 && !used->contains(p)) {
      used->insert(p);
      return p;
    }
  }
  return Status::Unavailable("no free loopback port");
}

uint16_t BasePort(uint16_t base, int offset) {
  if (base == 0 || base + offset > 65535) return 0;
  return static_cast<uint16_t>(base + offset);
}

// ---------------------------------------------------------------------------
// API calls
// ---------------------------------------------------------------------------

std::string ToJson(const pb::Message& m) {
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

bool Is2xx(int status) { return status >= 200 && status < 300; }

// One API call; a non-2xx answer becomes a Status.
template <typename M>
Result<M> Call(HttpClient& client, std::string_view method, std::string_view target,
               std::string_view body = {}) {
  TIPD_ASSIGN_OR_RETURN(HttpResponse res, client.Request(method, target, body));
  if (!Is2xx(res.status)) return HttpClient::ApiErrorStatus(res);
  return FromJson<M>(res);
}

// ---------------------------------------------------------------------------
// Streaming demo tips
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

class Streamer {
 public:
  Streamer(const DevnetManifest& m, std::vector<std::string> tokens, uint64_t tips_per_second)
      : m_(m), tokens_(std::move(tokens)), pacer_(tips_per_second) {}
  ~Streamer() { Stop(); }

  void Start() {
    // Several requests in flight per channel so that tips coalesce.
    size_t workers = std::clamp<size_t>(4 * m_.channels.size(), 1, 32);
    run_id_ = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
    for (size_t w = 0; w < workers; ++w) threads_.emplace_back([this, w] { Work(w); });
  }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  StreamStats& stats() { return stats_; }

 private:
  void Work(size_t worker) {
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
  std::string BalancesLine(bool compact);
  int Loop();
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
  Child ledger_;
  std::vector<Child> nodes_;
  std::vector<std::string> tokens_;
  std::vector<std::unique_ptr<HttpClient>> clients_;  // main thread's, one per node
  std::unique_ptr<Streamer> streamer_;
};

std::string Devnet::Rel(const fs::path& p) const {
  std::error_code ec;
  fs::path rel = fs::relative(p, fs::current_path(ec), ec);
  if (ec || rel.empty() || rel.string().starts_with("..")) return p.string();
  return rel.string();
}

Status Devnet::Prepare() {
  std::error_code ec;
  dir_ = fs::absolute(o_.dir, ec).lexically_normal();
  if (ec) return Status::IOError("--dir " + o_.dir.string() + ": " + ec.message());
  if (dir_.has_filename() == false) dir_ = dir_.parent_path();
  if (o_.tipd_binary.empty()) {
    tipd_ = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return Status::IOError("cannot find the tipd binary: /proc/self/exe: " + ec.message());
  } else {
    tipd_ = fs::absolute(o_.tipd_binary);
  }
  if (o_.nodes && (*o_.nodes < 1 || *o_.nodes > kDevnetMaxNodes)) {
    return Status::InvalidArgument("--nodes must be 1.." + std::to_string(kDevnetMaxNodes));
  }
  if (fs::exists(dir_ / "devnet.json")) return LoadExisting();
  if (fs::exists(dir_) && !fs::is_empty(dir_, ec)) {
    return Status::FailedPrecondition(
        dir_.string() +
        " exists but holds no devnet.json (not a devnet, or its first set-up was interrupted); "
        "remove it or choose another --dir");
  }
  return CreateNew(o_.nodes.value_or(3));
}

Status Devnet::CreateNew(uint32_t n) {
  fresh_ = true;
  TIPD_RETURN_IF_ERROR(PrepareDataDir(dir_));
  std::cout << "devnet: creating a new devnet of " << n << " node(s) in " << Rel(dir_) << "\n";
  m_.chain_id = kChainId;
  m_.ledger.datadir = dir_ / "ledger";
  for (uint32_t i = 0; i < n; ++i) {
    DevnetNode node;
    node.name = "node-" + std::to_string(i);
    node.datadir = dir_ / node.name;
    TIPD_RETURN_IF_ERROR(PrepareDataDir(node.datadir));
    // The key exists before the genesis, so the genesis can fund its account.
    TIPD_ASSIGN_OR_RETURN(crypto::KeyPair key, crypto::LoadOrCreateKeyFile(
                                                   node.datadir / "node.key", crypto::SystemRng()));
    node.node_id = key.public_key().Hex();
    m_.nodes.push_back(std::move(node));
  }
  // A ring, each channel funded on both sides so tips flow both ways.
  std::vector<std::pair<uint32_t, uint32_t>> edges;
  if (n == 2) edges = {{0, 1}};
  if (n >= 3) {
    for (uint32_t i = 0; i < n; ++i) edges.emplace_back(i, (i + 1) % n);
  }
  for (auto [a, b] : edges) {
    m_.channels.push_back(DevnetChannel{"", a, b, kChannelDeposit, kChannelDeposit});
  }
  std::set<uint16_t> used;
  TIPD_ASSIGN_OR_RETURN(m_.ledger.port, PickPort(0, BasePort(o_.base_port, 0), &used));

  // tipd ledger init, as a child like everything else.
  TIPD_RETURN_IF_ERROR(PrepareDataDir(m_.ledger.datadir));
  std::vector<std::string> argv = {tipd_.string(),
                                   "ledger",
                                   "init",
                                   "--datadir",
                                   m_.ledger.datadir.string(),
                                   "--chain-id",
                                   kChainId,
                                   "--block-interval-ms",
                                   std::to_string(kBlockIntervalMs),
                                   "--min-settle-timeout",
                                   "3",
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(m_.ledger.port)};
  for (const DevnetNode& node : m_.nodes) {
    argv.push_back("--fund");
    argv.push_back(node.node_id + "=" + std::to_string(kFundPerNode));
  }
  Child init = MakeChild("ledger init", m_.ledger.datadir / "tipd.log");
  TIPD_RETURN_IF_ERROR(Spawn(argv, &init));
  auto deadline = Steady::now() + kReadyTimeout;
  while (Alive(init)) {
    if (Steady::now() >= deadline) {
      StopChildren({&init}, signals_, 1s);
      return Status::Unavailable("tipd ledger init did not finish; see " + init.log.string());
    }
    std::this_thread::sleep_for(20ms);
  }
  if (init.exit_code != 0) return ChildDied(init, "while writing the genesis");
  TIPD_ASSIGN_OR_RETURN(crypto::SecretKey seq,
                        crypto::LoadKeyFile(m_.ledger.datadir / "sequencer.key"));
  m_.ledger.sequencer_id = crypto::KeyPair::FromSecret(seq).public_key().Hex();
  for (const DevnetNode& node : m_.nodes) {
    fs::copy_file(m_.ledger.datadir / "genesis.json", node.datadir / "genesis.json",
                  fs::copy_options::overwrite_existing);
  }
  std::cout << "devnet: genesis written (chain " << kChainId << ", " << n << " account(s) of "
            << WithThousands(kFundPerNode) << ")\n";
  // From here on, a rerun restarts this devnet.
  return WriteManifest();
}

Status Devnet::LoadExisting() {
  std::ifstream in(dir_ / "devnet.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TIPD_ASSIGN_OR_RETURN(m_, ParseManifest(text));
  if (o_.nodes && *o_.nodes != m_.nodes.size()) {
    return Status::InvalidArgument(
        (dir_ / "devnet.json").string() + " holds a devnet of " + std::to_string(m_.nodes.size()) +
        " node(s); run with --nodes " + std::to_string(m_.nodes.size()) +
        " (or without --nodes), or choose another --dir for " + std::to_string(*o_.nodes));
  }
  // The directory may have moved: paths follow DIR, not the recorded ones.
  m_.ledger.datadir = dir_ / "ledger";
  for (DevnetNode& node : m_.nodes) {
    node.datadir = dir_ / node.name;
    TIPD_ASSIGN_OR_RETURN(crypto::SecretKey sk, crypto::LoadKeyFile(node.datadir / "node.key"));
    std::string id = crypto::KeyPair::FromSecret(sk).public_key().Hex();
    if (id != node.node_id) {
      return Status::Corruption((node.datadir / "node.key").string() + " is not the key of " +
                                node.name + " recorded in devnet.json (" + node.node_id + ")");
    }
  }
  if (m_.devnet_pid > 0 && m_.devnet_pid != ::getpid() && IsRunningDevnet(m_.devnet_pid)) {
    return Status::FailedPrecondition(dir_.string() + " is in use by tipd devnet pid " +
                                      std::to_string(m_.devnet_pid) + "; stop it first (kill " +
                                      std::to_string(m_.devnet_pid) + ")");
  }
  std::cout << "devnet: restarting the devnet of " << m_.nodes.size() << " node(s) in " << Rel(dir_)
            << "\n";
  return Status::Ok();
}

Status Devnet::AssignPorts() {
  std::set<uint16_t> used;
  if (!fresh_) {
    TIPD_ASSIGN_OR_RETURN(m_.ledger.port,
                          PickPort(m_.ledger.port, BasePort(o_.base_port, 0), &used));
  } else {
    used.insert(m_.ledger.port);
  }
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    DevnetNode& n = m_.nodes[i];
    int k = static_cast<int>(i);
    TIPD_ASSIGN_OR_RETURN(n.p2p_port,
                          PickPort(n.p2p_port, BasePort(o_.base_port, 1 + 2 * k), &used));
    TIPD_ASSIGN_OR_RETURN(n.rpc_port,
                          PickPort(n.rpc_port, BasePort(o_.base_port, 2 + 2 * k), &used));
  }
  return Status::Ok();
}

Status Devnet::WriteManifest() {
  return WriteFileAtomic0600(dir_ / "devnet.json", ManifestToJson(m_));
}

Status Devnet::StartAll() {
  TIPD_RETURN_IF_ERROR(AssignPorts());
  m_.devnet_pid = ::getpid();

  ledger_ = MakeChild("ledger", m_.ledger.datadir / "tipd.log");
  uint64_t offset = FileSize(ledger_.log);
  TIPD_RETURN_IF_ERROR(
      Spawn({tipd_.string(), "ledger", "--datadir", m_.ledger.datadir.string(), "--listen",
             "127.0.0.1:" + std::to_string(m_.ledger.port), "--block-interval",
             std::to_string(kBlockIntervalMs) + "ms", "--seal-on-submit",
             // Every node follows from 127.0.0.1, which p2p does not exempt
             // from its per-address limit: room for each node's session and
             // a stale one while it reconnects.
             "--max-inbound-per-address", std::to_string(2 * m_.nodes.size() + 8)},
            &ledger_));
  m_.ledger.pid = ledger_.pid;
  TIPD_RETURN_IF_ERROR(
      WaitForLog(ledger_, offset, "listening on", Steady::now() + kReadyTimeout, signals_)
          .status());
  std::cout << "devnet: ledger up on 127.0.0.1:" << m_.ledger.port << " (pid " << ledger_.pid
            << ")\n";

  nodes_.clear();
  std::vector<uint64_t> offsets;
  for (DevnetNode& n : m_.nodes) {
    nodes_.push_back(MakeChild(n.name, n.datadir / "tipd.log"));
    offsets.push_back(FileSize(nodes_.back().log));
  }
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    DevnetNode& n = m_.nodes[i];
    TIPD_RETURN_IF_ERROR(
        Spawn({tipd_.string(), "node", "--datadir", n.datadir.string(), "--ledger",
               m_.ledger.LedgerArg(), "--listen", n.P2pAddress(), "--rpc-listen",
               "127.0.0.1:" + std::to_string(n.rpc_port), "--chain-id", m_.chain_id,
               // A toy network: short windows, and nodes fund what peers ask
               // (docs/devnet.md). Real nodes keep the safe defaults.
               "--min-settle-seconds", "1", "--max-accept-deposit", "1000000000000"},
              &nodes_[i]));
    n.pid = nodes_[i].pid;
  }
  TIPD_RETURN_IF_ERROR(WriteManifest());  // the pids, before anything can fail
  auto deadline = Steady::now() + kReadyTimeout;
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    TIPD_RETURN_IF_ERROR(
        WaitForLog(nodes_[i], offsets[i], "API on http://", deadline, signals_).status());
  }
  // The API answers with the token the node wrote, as the node we keyed.
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    const DevnetNode& n = m_.nodes[i];
    TIPD_ASSIGN_OR_RETURN(std::string token, ReadTokenFile(n.TokenFile()));
    tokens_.push_back(token);
    TIPD_ASSIGN_OR_RETURN(HttpUrl url, ParseHttpUrl(n.RpcUrl()));
    clients_.push_back(std::make_unique<HttpClient>(url, token, 30s));
    TIPD_ASSIGN_OR_RETURN(v1::InfoResponse info,
                          Call<v1::InfoResponse>(*clients_.back(), "GET", "/v1/info"));
    if (info.node_id() != n.node_id) {
      return Status::FailedPrecondition(n.RpcUrl() + " answers as " + info.node_id() + ", not as " +
                                        n.name + " (" + n.node_id + ")");
    }
  }
  std::cout << "devnet: " << m_.nodes.size() << " node(s) up\n";
  return Status::Ok();
}

Status Devnet::ConnectPeers() {
  for (const DevnetChannel& ch : m_.channels) {
    const DevnetNode& peer = m_.nodes[ch.peer];
    v1::ConnectPeerRequest req;
    req.set_node_id(peer.node_id);
    req.set_address(peer.P2pAddress());
    req.set_persistent(true);
    TIPD_ASSIGN_OR_RETURN(HttpResponse res,
                          clients_[ch.opener]->Request("POST", "/v1/peers", ToJson(req)));
    // 409: already a persistent peer (e.g. the node kept it).
    if (!Is2xx(res.status) && res.status != 409) return HttpClient::ApiErrorStatus(res);
  }
  auto deadline = Steady::now() + 30s;
  for (const DevnetChannel& ch : m_.channels) {
    for (;;) {
      TIPD_ASSIGN_OR_RETURN(auto peers,
                            Call<v1::ListPeersResponse>(*clients_[ch.opener], "GET", "/v1/peers"));
      bool found = std::any_of(peers.peers().begin(), peers.peers().end(), [&](const auto& p) {
        return p.node_id() == m_.nodes[ch.peer].node_id;
      });
      if (found) break;
      if (Steady::now() >= deadline) {
        return Status::Unavailable(m_.nodes[ch.opener].name + " could not connect to " +
                                   m_.nodes[ch.peer].name + " within 30 s; see their logs");
      }
      if (signals_.Wait(100ms)) return Status::Unavailable("interrupted");
    }
  }
  if (!m_.channels.empty()) {
    std::cout << "devnet: peers connected (" << m_.channels.size() << " link(s) in a ring)\n";
  }
  return Status::Ok();
}

Status Devnet::WaitChannelOpen(HttpClient& client, const std::string& channel_id) {
  auto deadline = Steady::now() + kReadyTimeout;
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(
        auto got, Call<v1::GetChannelResponse>(client, "GET", "/v1/channels/" + channel_id));
    const std::string& state = got.channel().state();
    if (state == "open") return Status::Ok();
    if (state != "opening") {
      return Status::FailedPrecondition("channel " + channel_id + " is " + state);
    }
    if (Steady::now() >= deadline) {
      return Status::Unavailable("channel " + channel_id + " did not open within " +
                                 std::to_string(kReadyTimeout.count()) + " s");
    }
    if (signals_.Wait(100ms)) return Status::Unavailable("interrupted");
  }
}

Status Devnet::EnsureChannel(DevnetChannel& ch) {
  HttpClient& client = *clients_[ch.opener];
  const DevnetNode& opener = m_.nodes[ch.opener];
  const DevnetNode& peer = m_.nodes[ch.peer];
  TIPD_ASSIGN_OR_RETURN(auto list, Call<v1::ListChannelsResponse>(client, "GET", "/v1/channels"));
  // Reuse: the recorded channel, else any live channel with that peer (a run
  // that stopped between opening and recording it).
  const v1::ChannelApi* reuse = nullptr;
  for (const auto& c : list.channels()) {
    bool live = c.state() == "open" || c.state() == "opening";
    if (!live || c.peer_node_id() != peer.node_id) continue;
    if (reuse == nullptr || c.channel_id() == ch.channel_id) reuse = &c;
  }
  if (reuse != nullptr) {
    ch.channel_id = reuse->channel_id();
    TIPD_RETURN_IF_ERROR(WaitChannelOpen(client, ch.channel_id));
    std::cout << "devnet: reusing channel " << ch.channel_id.substr(0, 16) << "… " << opener.name
              << " <-> " << peer.name << "\n";
    return Status::Ok();
  }
  if (!ch.channel_id.empty()) {
    std::cout << "devnet: recorded channel " << ch.channel_id.substr(0, 16) << "… of "
              << opener.name << " is gone; opening a new one\n";
  }
  v1::OpenChannelRequest req;
  req.set_peer_node_id(peer.node_id);
  req.set_deposit(ch.deposit);
  req.set_push_deposit(ch.push_deposit);
  req.set_settle_timeout(kSettleTimeoutBlocks);
  auto deadline = Steady::now() + kReadyTimeout;
  for (;;) {
    TIPD_ASSIGN_OR_RETURN(HttpResponse res, client.Request("POST", "/v1/channels", ToJson(req)));
    if (Is2xx(res.status)) {
      TIPD_ASSIGN_OR_RETURN(auto opened, FromJson<v1::OpenChannelResponse>(res));
      ch.channel_id = opened.channel().channel_id();
      break;
    }
    // 503: the ledger or the peer is not reachable yet; retry until the deadline.
    if (res.status != 503 || Steady::now() >= deadline) {
      Status s = HttpClient::ApiErrorStatus(res);
      return Status(s.code(),
                    opener.name + " could not open a channel to " + peer.name + ": " + s.message());
    }
    if (signals_.Wait(200ms)) return Status::Unavailable("interrupted");
  }
  TIPD_RETURN_IF_ERROR(WriteManifest());
  TIPD_RETURN_IF_ERROR(WaitChannelOpen(client, ch.channel_id));
  std::cout << "devnet: opened channel " << ch.channel_id.substr(0, 16) << "… " << opener.name
            << " <-> " << peer.name << " (" << WithThousands(ch.deposit) << " + "
            << WithThousands(ch.push_deposit) << ")\n";
  return Status::Ok();
}

Status Devnet::OpenChannels() {
  if (m_.channels.empty()) return Status::Ok();
  // A tipd without the channel API (an older build) still gives a network.
  TIPD_ASSIGN_OR_RETURN(HttpResponse probe, clients_[0]->Request("GET", "/v1/channels"));
  if (probe.status == 404) {
    channels_api_ = false;
    std::cout << "devnet: this tipd has no channel API (GET /v1/channels: 404); "
                 "no channels are opened and no tips streamed\n";
    return Status::Ok();
  }
  // One at a time: each open is a ledger transaction signed by both parties.
  for (DevnetChannel& ch : m_.channels) TIPD_RETURN_IF_ERROR(EnsureChannel(ch));
  return WriteManifest();
}

void Devnet::PrintNext() {
  const DevnetNode& a = m_.nodes[0];
  std::ostringstream s;
  s << "\ndevnet up: chain " << m_.chain_id << ", ledger 127.0.0.1:" << m_.ledger.port << ", "
    << m_.nodes.size() << " node(s), " << (channels_api_ ? m_.channels.size() : 0)
    << " channel(s); state in " << Rel(dir_ / "devnet.json") << "\n";
  for (const DevnetNode& n : m_.nodes) {
    s << "  " << std::left << std::setw(8) << n.name << n.node_id.substr(0, 16) << "…  p2p "
      << n.P2pAddress() << "  api " << n.RpcUrl() << "  token " << Rel(n.TokenFile()) << "\n";
  }
  // tipctl is built next to tipd (build/node/); name it by its path if so.
  std::string tipctl = "tipctl";
  if (std::error_code ec; fs::exists(tipd_.parent_path() / "tipctl", ec)) {
    tipctl = Rel(tipd_.parent_path() / "tipctl");
    if (tipctl.find('/') == std::string::npos) tipctl = "./" + tipctl;
  }
  const std::string ctl = "  " + tipctl + " --datadir " + Rel(a.datadir) + " --human ";
  s << "\nnext, in another terminal:\n"
    << ctl << "getinfo\n"
    << ctl << "channels\n"
    << ctl << "balance\n"
    << "  curl -s -H \"Authorization: Bearer $(cat " << Rel(a.TokenFile()) << ")\" " << a.RpcUrl()
    << "/v1/info\n";
  if (channels_api_ && !m_.channels.empty()) {
    const DevnetChannel& ch = m_.channels[0];
    const DevnetNode& from = m_.nodes[ch.opener];
    const DevnetNode& to = m_.nodes[ch.peer];
    s << "  " << tipctl << " --datadir " << Rel(from.datadir) << " tip --channel " << ch.channel_id
      << " 21 \"great episode!\" --meta app_name=tipctl\n"
      << "  " << tipctl << " --datadir " << Rel(to.datadir) << " --human tips\n"
      << "  curl -s -H \"Authorization: Bearer $(cat " << Rel(from.TokenFile())
      << ")\" -d '{\"channel_id\":\"" << ch.channel_id
      << "\",\"amount\":\"21\",\"message\":\"great episode!\",\"metadata\":{\"app_name\":\"curl\"},"
         "\"idempotency_key\":\"hello-1\"}' "
      << from.RpcUrl() << "/v1/tips\n"
      << "  curl -sN -H \"Authorization: Bearer $(cat " << Rel(to.TokenFile()) << ")\" "
      << to.RpcUrl() << "/v1/events\n";
  }
  s << "logs: " << Rel(dir_) << "/<ledger|node-N>/tipd.log; stop with Ctrl-C; run the same "
    << "command again to bring this network back\n";
  std::cout << s.str() << std::flush;
}

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
    bool dead = false;
    for (Child* c : {&ledger_}) dead |= !Alive(*c);
    for (Child& c : nodes_) dead |= !Alive(c);
    if (dead) {
      if (tty && streaming) std::cout << "\n";
      for (Child* c : {&ledger_}) {
        if (c->exit_code) std::cerr << "devnet: " << ChildDied(*c, "unexpectedly").message();
      }
      for (Child& c : nodes_) {
        if (c.exit_code) std::cerr << "devnet: " << ChildDied(c, "unexpectedly").message();
      }
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

void Devnet::StopAll() {
  std::vector<Child*> nodes;
  for (Child& c : nodes_) nodes.push_back(&c);
  std::cout << "devnet: stopping" << std::flush;
  StopChildren(nodes, signals_, kStopGrace);  // nodes first: they close their peers
  StopChildren({&ledger_}, signals_, kStopGrace);
  std::cout << " - stopped " << (nodes_.size() + (ledger_.pid > 0 ? 1 : 0))
            << " process(es); state kept in " << Rel(dir_) << "\n"
            << std::flush;
}

int Devnet::Run() {
  Status s = Prepare();
  if (s.ok()) s = StartAll();
  if (s.ok()) s = ConnectPeers();
  if (s.ok()) s = OpenChannels();
  int code = 0;
  if (!s.ok()) {
    if (Interrupted() && s.message() == "interrupted") {
      code = 0;
    } else {
      std::cerr << "tipd devnet: " << s.message() << "\n";
      code = s.code() == StatusCode::kInvalidArgument ? 2 : 1;
    }
  } else {
    PrintNext();
    if (o_.stream && channels_api_ && !m_.channels.empty()) {
      streamer_ = std::make_unique<Streamer>(m_, tokens_, o_.tips_per_second);
      streamer_->Start();
      std::cout << "devnet: streaming demo tips"
                << (o_.tips_per_second ? " at up to " + std::to_string(o_.tips_per_second) + "/s"
                                       : std::string(" as fast as the nodes answer"))
                << "\n"
                << std::flush;
    } else if (o_.stream) {
      std::cout << "devnet: nothing to stream (needs at least 2 nodes and the channel API)\n";
    }
    code = Loop();
  }
  streamer_.reset();
  clients_.clear();
  if (ledger_.pid > 0 || !nodes_.empty()) StopAll();
  return code;
}

}  // namespace

int RunDevnet(const DevnetOptions& options) {
  StopSignals signals;
  Devnet devnet(options, signals);
  return devnet.Run();
}

}  // namespace tipd::node
