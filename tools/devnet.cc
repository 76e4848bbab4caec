// `tipd devnet` (docs/devnet.md): bring-up of a new devnet (keys, genesis,
// devnet.json), restart of a recorded one (same keys, ports when free,
// channels), the ledger and node children, peers and channels, what to run
// next, and stopping every child on SIGINT/SIGTERM. devnet.json is read and
// written in tools/devnet_manifest.cc; the tip stream and status line are in
// tools/devnet_stream.cc; child processes are tools/process.h's.
#include "tools/devnet.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include "api/auth.h"
#include "api/http_client.h"
#include "crypto/crypto.h"
#include "node/lifecycle.h"
#include "tipd/api.pb.h"
#include "tools/devnet_internal.h"
#include "tools/process.h"

namespace tipd::tools {

namespace devnet_detail {

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
// ---------------------------------------------------------------------------
// Child processes (tools/process.h)
// ---------------------------------------------------------------------------

using tools::ChildProcess;

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

// Starts `argv` (argv[0] is the binary) as `name` in its own process group
// with stdin from /dev/null and stdout/stderr appended to `log`. The child
// gets SIGTERM if this process dies (PR_SET_PDEATHSIG), so a killed devnet
// does not leave daemons behind.
Result<std::unique_ptr<ChildProcess>> Spawn(std::string name, const fs::path& log,
                                            std::vector<std::string> argv) {
  tools::ProcessOptions options;
  options.argv = std::move(argv);
  options.log = log;
  options.name = std::move(name);
  options.new_process_group = true;  // Ctrl-C reaches the devnet, which stops children in order
  options.parent_death_signal = SIGTERM;
  options.exec_tag = "tipd devnet";
  return ChildProcess::Start(std::move(options));
}

Status ChildDied(const ChildProcess& c, const std::string& when) {
  return Status::Unavailable(c.name() + " exited with code " +
                             std::to_string(c.exit_code().value_or(-1)) + " " + when + "; see " +
                             c.log_path().string() + ":\n" + LogTail(c.log_path()));
}

// Waits until the child's log (what it wrote since it started) contains
// `needle`; SIGINT/SIGTERM end the wait with "interrupted".
Status WaitForLog(ChildProcess& c, const std::string& needle, Steady::time_point deadline,
                  StopSignals& signals) {
  switch (c.AwaitOutput(needle, deadline, 0, nullptr, [&] { return signals.Poll(); })) {
    case ChildProcess::Outcome::kDone:
      return Status::Ok();
    case ChildProcess::Outcome::kExited:
      return ChildDied(c, "before it was ready");
    case ChildProcess::Outcome::kTimedOut:
      return Status::Unavailable(c.name() + " was not ready within " +
                                 std::to_string(kReadyTimeout.count()) + " s; see " +
                                 c.log_path().string() + ":\n" + LogTail(c.log_path()));
    case ChildProcess::Outcome::kInterrupted:
      break;
  }
  return Status::Unavailable("interrupted");
}

// SIGTERM to every running child, wait up to `grace` (a further signal to
// the devnet cuts it short), then SIGKILL what is left. Reaps all.
void StopChildren(const std::vector<ChildProcess*>& children, StopSignals& signals,
                  std::chrono::milliseconds grace) {
  for (ChildProcess* c : children) {
    if (c->Running()) c->Signal(SIGTERM);
  }
  auto deadline = Steady::now() + grace;
  for (ChildProcess* c : children) {
    auto outcome = c->AwaitExit(deadline, [&] { return signals.PollAgain(); });
    if (outcome == ChildProcess::Outcome::kInterrupted) break;
  }
  for (ChildProcess* c : children) {
    if (!c->Running()) continue;
    std::cerr << "devnet: " << c->name() << " did not stop in time; killing it\n";
    c->Kill();
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

}  // namespace

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
  TIPD_RETURN_IF_ERROR(node::PrepareDataDir(dir_));
  std::cout << "devnet: creating a new devnet of " << n << " node(s) in " << Rel(dir_) << "\n";
  m_.chain_id = kChainId;
  m_.ledger.datadir = dir_ / "ledger";
  for (uint32_t i = 0; i < n; ++i) {
    DevnetNode node;
    node.name = "node-" + std::to_string(i);
    node.datadir = dir_ / node.name;
    TIPD_RETURN_IF_ERROR(node::PrepareDataDir(node.datadir));
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
  TIPD_RETURN_IF_ERROR(node::PrepareDataDir(m_.ledger.datadir));
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
  TIPD_ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> init,
                        Spawn("ledger init", m_.ledger.datadir / "tipd.log", argv));
  if (init->AwaitExit(Steady::now() + kReadyTimeout) != ChildProcess::Outcome::kDone) {
    StopChildren({init.get()}, signals_, 1s);
    return Status::Unavailable("tipd ledger init did not finish; see " + init->log_path().string());
  }
  if (init->exit_code() != 0) return ChildDied(*init, "while writing the genesis");
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
  return api::WriteFileAtomic0600(dir_ / "devnet.json", ManifestToJson(m_));
}

Status Devnet::StartAll() {
  TIPD_RETURN_IF_ERROR(AssignPorts());
  m_.devnet_pid = ::getpid();

  TIPD_ASSIGN_OR_RETURN(
      ledger_, Spawn("ledger", m_.ledger.datadir / "tipd.log",
                     {tipd_.string(), "ledger", "--datadir", m_.ledger.datadir.string(), "--listen",
                      "127.0.0.1:" + std::to_string(m_.ledger.port), "--block-interval",
                      std::to_string(kBlockIntervalMs) + "ms", "--seal-on-submit",
                      // Every node follows from 127.0.0.1, which p2p does not exempt
                      // from its per-address limit: room for each node's session and
                      // a stale one while it reconnects.
                      "--max-inbound-per-address", std::to_string(2 * m_.nodes.size() + 8)}));
  m_.ledger.pid = ledger_->pid();
  TIPD_RETURN_IF_ERROR(
      WaitForLog(*ledger_, "listening on", Steady::now() + kReadyTimeout, signals_));
  std::cout << "devnet: ledger up on 127.0.0.1:" << m_.ledger.port << " (pid " << ledger_->pid()
            << ")\n";

  nodes_.clear();
  for (DevnetNode& n : m_.nodes) {
    TIPD_ASSIGN_OR_RETURN(
        std::unique_ptr<ChildProcess> child,
        Spawn(n.name, n.datadir / "tipd.log",
              {tipd_.string(), "node", "--datadir", n.datadir.string(), "--ledger",
               m_.ledger.LedgerArg(), "--listen", n.P2pAddress(), "--rpc-listen",
               "127.0.0.1:" + std::to_string(n.rpc_port), "--chain-id", m_.chain_id,
               // A toy network: short windows, and nodes fund what peers ask
               // (docs/devnet.md). Real nodes keep the safe defaults.
               "--min-settle-seconds", "1", "--max-accept-deposit", "1000000000000"}));
    n.pid = child->pid();
    nodes_.push_back(std::move(child));
  }
  TIPD_RETURN_IF_ERROR(WriteManifest());  // the pids, before anything can fail
  auto deadline = Steady::now() + kReadyTimeout;
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    TIPD_RETURN_IF_ERROR(WaitForLog(*nodes_[i], "API on http://", deadline, signals_));
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
  // Ready: storage writable, caught up with the ledger, API serving.
  for (size_t i = 0; i < m_.nodes.size(); ++i) {
    std::string last;
    for (;;) {
      TIPD_ASSIGN_OR_RETURN(HttpResponse res, clients_[i]->Request("GET", "/readyz"));
      if (res.status == 200) break;
      last = res.body;
      if (Steady::now() >= deadline) {
        return Status::Unavailable(m_.nodes[i].name + " was not ready within " +
                                   std::to_string(kReadyTimeout.count()) + " s: " + last);
      }
      if (signals_.Wait(100ms)) return Status::Unavailable("interrupted");
    }
  }
  std::cout << "devnet: " << m_.nodes.size() << " node(s) up and ready\n";
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
  // In a build tree tipctl is build/tools/tipctl beside build/node/tipd; an
  // install puts both in one directory. Name it by its path if found.
  std::string tipctl = "tipctl";
  for (const fs::path& candidate :
       {tipd_.parent_path() / "tipctl", tipd_.parent_path().parent_path() / "tools" / "tipctl"}) {
    if (std::error_code ec; fs::exists(candidate, ec)) {
      tipctl = Rel(candidate);
      if (tipctl.find('/') == std::string::npos) tipctl = "./" + tipctl;
      break;
    }
  }
  const std::string ctl = "  " + tipctl + " --datadir " + Rel(a.datadir) + " --human ";
  s << "\nnext, in another terminal:\n"
    << ctl << "getinfo\n"
    << ctl << "channels\n"
    << ctl << "balance\n"
    << "  curl -s -H \"Authorization: Bearer $(cat " << Rel(a.TokenFile()) << ")\" " << a.RpcUrl()
    << "/v1/info\n"
    << "  open " << a.RpcUrl() << "/ in a browser: the live dashboard (paste the token of "
    << Rel(a.TokenFile()) << ")\n";
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

void Devnet::PrintDashboards() {
  std::ostringstream s;
  s << "devnet: watch them live in a browser (docs/dashboard.md); paste the node's token:\n";
  for (const DevnetNode& n : m_.nodes) {
    s << "  " << std::left << std::setw(8) << n.name << "dashboard " << n.RpcUrl() << "/  token "
      << Rel(n.TokenFile()) << "\n";
  }
  std::cout << s.str() << std::flush;
}

bool Devnet::ChildrenRunning() {
  bool all = ledger_->Running();
  for (auto& c : nodes_) all &= c->Running();  // &=: every child is looked at
  return all;
}

void Devnet::ReportDeadChildren() {
  if (ledger_->exit_code()) {
    std::cerr << "devnet: " << ChildDied(*ledger_, "unexpectedly").message();
  }
  for (auto& c : nodes_) {
    if (c->exit_code()) std::cerr << "devnet: " << ChildDied(*c, "unexpectedly").message();
  }
}

void Devnet::StopAll() {
  std::vector<ChildProcess*> nodes;
  for (auto& c : nodes_) nodes.push_back(c.get());
  std::cout << "devnet: stopping" << std::flush;
  StopChildren(nodes, signals_, kStopGrace);  // nodes first: they close their peers
  if (ledger_) StopChildren({ledger_.get()}, signals_, kStopGrace);
  std::cout << " - stopped " << (nodes_.size() + (ledger_ ? 1 : 0))
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
                << "\n";
      PrintDashboards();
    } else if (o_.stream) {
      std::cout << "devnet: nothing to stream (needs at least 2 nodes and the channel API)\n";
    }
    code = Loop();
  }
  streamer_.reset();
  clients_.clear();
  if (ledger_ || !nodes_.empty()) StopAll();
  return code;
}

}  // namespace devnet_detail

int RunDevnet(const DevnetOptions& options) {
  devnet_detail::StopSignals signals;
  devnet_detail::Devnet devnet(options, signals);
  return devnet.Run();
}

}  // namespace tipd::tools
