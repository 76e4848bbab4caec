#include "tests/integration/harness.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace tipd::testing {

namespace {
const char* kTipd = TIPD_BINARY;
constexpr auto kStartTimeout = 30s;
constexpr std::string_view kPortInUse = "Address already in use";
}  // namespace

std::optional<uint16_t> PortAfter(const std::string& text, std::string_view prefix) {
  size_t pos = text.find(prefix);
  if (pos == std::string::npos) return std::nullopt;
  pos += prefix.size();
  uint32_t port = 0;
  size_t digits = 0;
  while (pos < text.size() && digits < 6 && text[pos] >= '0' && text[pos] <= '9') {
    port = port * 10 + static_cast<uint32_t>(text[pos++] - '0');
    ++digits;
  }
  if (digits == 0 || port == 0 || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

std::unique_ptr<Process> StartListening(const std::vector<std::string>& argv,
                                        const std::filesystem::path& log_path,
                                        std::string_view ready, std::chrono::milliseconds timeout,
                                        std::string* error) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = 50ms;
  for (int attempt = 1;; ++attempt) {
    auto p = Process::Start(argv, log_path, error);
    if (!p) return nullptr;
    size_t end = 0;
    auto outcome = p->AwaitOutput(ready, deadline, 0, &end);
    // The whole ready line, so a port on it is not cut by a partial read.
    if (outcome == Process::Outcome::kDone) outcome = p->AwaitOutput("\n", deadline, end);
    if (outcome == Process::Outcome::kDone) return p;
    const std::string out = p->Output();
    if (outcome == Process::Outcome::kExited && out.find(kPortInUse) != std::string::npos &&
        std::chrono::steady_clock::now() + pause < deadline) {
      std::fprintf(stderr, "[ harness  ] %s: port in use (attempt %d), retrying\n",
                   argv.size() > 1 ? argv[1].c_str() : "?", attempt);
      std::this_thread::sleep_for(pause);  // a back-off, not an assertion
      pause = std::min<std::chrono::milliseconds>(pause * 2, 1s);
      continue;
    }
    *error = std::string(outcome == Process::Outcome::kExited ? "exited" : "timed out") +
             " before printing \"" + std::string(ready) + "\":\n" + out;
    return nullptr;
  }
}

TestClient::TestClient(const std::filesystem::path& dir, const v1::GenesisParams& genesis,
                       const crypto::PublicKey& sequencer, uint16_t ledger_port)
    : identity_(crypto::KeyPair::Generate(crypto::SystemRng())) {
  db_ = std::move(storage::Database::Open(dir).value());
  chain_ =
      std::move(ledger::Chain::Open(db_.get(), ledger::ValidateGenesis(genesis).value()).value());
  p2p::HostOptions options;
  options.chain_id = genesis.chain_id();
  host_ = std::make_unique<p2p::Host>(io_, identity_, crypto::SystemRng(), options);
  client_ = std::make_unique<ledger::LedgerClient>(*host_, *chain_, sequencer, "127.0.0.1",
                                                   ledger_port, spdlog::default_logger());
  p2p::Callbacks cb;
  cb.on_connected = [this](const p2p::PeerInfo& info) { client_->OnConnected(info); };
  cb.on_disconnected = [this](const p2p::DisconnectEvent& ev) { client_->OnDisconnected(ev); };
  cb.on_message = [this](p2p::PeerId peer, const v1::Envelope& env) {
    client_->OnMessage(peer, env);
  };
  host_->SetCallbacks(std::move(cb));
  EXPECT_TRUE(client_->Start().ok());
}

TestClient::~TestClient() {
  host_->Shutdown();
  client_.reset();
  host_.reset();
}

bool TestClient::WaitConnected(std::chrono::milliseconds timeout) {
  return RunUntil(
      io_, [&] { return client_->connected(); }, timeout);
}

ledger::SubmitOutcome TestClient::SubmitAndWait(const v1::Transaction& tx,
                                                std::chrono::milliseconds timeout) {
  std::optional<ledger::SubmitOutcome> result;
  client_->Submit(tx, [&](const ledger::SubmitOutcome& out) { result = out; });
  if (!RunUntil(
          io_, [&] { return result.has_value(); }, timeout)) {
    return ledger::SubmitOutcome::Unknown("TIMEOUT: no answer in the test's wait");
  }
  return *result;
}

uint64_t TestClient::SubmitAndInclude(const v1::Transaction& tx,
                                      std::chrono::milliseconds timeout) {
  ledger::SubmitOutcome out = SubmitAndWait(tx, timeout);
  EXPECT_TRUE(out.accepted()) << out.ToString();
  if (!out.accepted()) return 0;
  uint64_t height = 0;
  client_->WhenIncluded(out.tx_id, [&](uint64_t h) { height = h; });
  EXPECT_TRUE(RunUntil(
      io_, [&] { return height != 0; }, timeout))
      << "never included";
  return height;
}

bool TestClient::WaitHeight(uint64_t height, std::chrono::milliseconds timeout) {
  return RunUntil(
      io_, [&] { return chain_->height() >= height; }, timeout);
}

NetworkFixture::NetworkFixture() {
  for (int i = 0; i < 4; ++i) accounts_.push_back({crypto::KeyPair::Generate(crypto::SystemRng())});
  ledger_dir_ = dir_.path() / "ledger";
}

NetworkFixture::~NetworkFixture() {
  for (auto& [name, p] : nodes_) {
    p->Signal(SIGTERM);
    p->Wait(10s);
  }
  if (ledger_) {
    ledger_->Signal(SIGTERM);
    ledger_->Wait(10s);
  }
  if (HasFailure()) {
    std::fprintf(stderr, "logs kept under %s\n", dir_.path().c_str());
    for (auto& [name, p] : nodes_)
      std::fprintf(stderr, "--- %s\n%s\n", name.c_str(), p->Output().c_str());
    if (ledger_) std::fprintf(stderr, "--- ledger\n%s\n", ledger_->Output().c_str());
  }
}

void NetworkFixture::InitLedger(uint64_t block_interval_ms, uint64_t min_settle_timeout) {
  ledger_port_ = 0;  // StartLedger binds port 0 and reads the bound one
  std::vector<std::string> argv = {kTipd,
                                   "ledger",
                                   "init",
                                   "--datadir",
                                   ledger_dir_.string(),
                                   "--chain-id",
                                   "tipd-itest",
                                   "--block-interval-ms",
                                   std::to_string(block_interval_ms),
                                   "--min-settle-timeout",
                                   std::to_string(min_settle_timeout)};
  for (const auto& a : accounts_) {
    argv.push_back("--fund");
    argv.push_back(HexEncode(a.key.XOnly()) + "=1000000");
  }
  std::string error;
  auto init = Process::Start(argv, dir_.path() / "ledger-init.log", &error);
  ASSERT_TRUE(init) << error;
  ASSERT_EQ(init->Wait(kStartTimeout), 0) << init->Output();
  auto g = ledger::LoadGenesisFile(ledger_dir_ / "genesis.json");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  genesis_ = *g;
  Bytes node_id = {0x02};
  node_id.insert(node_id.end(), genesis_.sequencer_key().begin(), genesis_.sequencer_key().end());
  sequencer_ = crypto::PublicKey::Parse(node_id).value();
  std::string out = init->Output();
  EXPECT_NE(out.find(sequencer_.Hex()), std::string::npos) << "init prints the ledger node id";
}

void NetworkFixture::StartLedger(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {kTipd, "ledger", "--datadir", ledger_dir_.string()};
  // First start: port 0 (any free one; tipd.conf's default is not used). A
  // restart keeps the port the nodes and clients were given.
  argv.insert(argv.end(), {"--listen", "127.0.0.1:" + std::to_string(ledger_port_)});
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string error;
  // The sequencer's ready line, printed once SIGUSR1 is handled: "ledger
  // <chain> at height H listening on 127.0.0.1:PORT as <id> (block interval ...)".
  ledger_ =
      StartListening(argv, dir_.path() / "ledger.log", "(block interval", kStartTimeout, &error);
  ASSERT_TRUE(ledger_) << error;
  const std::string out = ledger_->Output();
  seal_log_offset_ = out.size();
  auto port = PortAfter(out, "listening on 127.0.0.1:");
  ASSERT_TRUE(port) << out;
  if (ledger_port_ != 0) {
    ASSERT_EQ(*port, ledger_port_) << out;
  }
  ledger_port_ = *port;
}

uint64_t NetworkFixture::SealBlocks(int n) {
  constexpr std::string_view kSealed = "sealed on demand: block ";
  uint64_t height = 0;
  for (int i = 0; i < n; ++i) {
    if (!ledger_) {
      ADD_FAILURE() << "SealBlocks: no ledger running";
      return 0;
    }
    ledger_->Signal(SIGUSR1);
    size_t end = 0;
    if (ledger_->AwaitOutput(kSealed, std::chrono::steady_clock::now() + kStartTimeout,
                             seal_log_offset_, &end) != Process::Outcome::kDone) {
      ADD_FAILURE() << "the ledger did not seal on demand (started without " << kSealOnDemand
                    << "?):\n"
                    << ledger_->Output();
      return 0;
    }
    // The whole line, so the height is not cut by a partial read.
    if (ledger_->AwaitOutput("\n", std::chrono::steady_clock::now() + kStartTimeout, end) !=
        Process::Outcome::kDone) {
      ADD_FAILURE() << "the ledger's seal line never ended:\n" << ledger_->Output();
      return 0;
    }
    seal_log_offset_ = end;
    const std::string out = ledger_->Output();
    height = 0;
    for (size_t k = end; k < out.size() && out[k] >= '0' && out[k] <= '9'; ++k) {
      height = height * 10 + static_cast<uint64_t>(out[k] - '0');
    }
  }
  return height;
}

void NetworkFixture::StopLedger(int signo) {
  ledger_->Signal(signo);
  auto code = ledger_->Wait(kStartTimeout);
  ASSERT_TRUE(code.has_value());
  if (signo == SIGTERM) {
    EXPECT_EQ(*code, 0) << ledger_->Output();
  }
  ledger_.reset();
}

Process* NetworkFixture::StartNode(const std::string& name, const crypto::KeyPair* key,
                                   uint16_t rpc_port, uint16_t p2p_port,
                                   const std::vector<std::string>& extra) {
  auto dir = NodeDir(name);
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  if (key && !std::filesystem::exists(dir / "node.key")) {
    EXPECT_TRUE(crypto::SaveKeyFile(dir / "node.key", key->secret()).ok());
  }
  if (!std::filesystem::exists(dir / "genesis.json")) {
    std::filesystem::copy_file(ledger_dir_ / "genesis.json", dir / "genesis.json");
  }
  // 0: the port it had before (peers know it), or any free one on a first
  // start; the bound ports are read from the node's ready line.
  if (p2p_port == 0) {
    auto known = p2p_ports_.find(name);
    if (known != p2p_ports_.end()) p2p_port = known->second;
  }
  if (rpc_port == 0) {
    auto known = rpc_ports_.find(name);
    if (known != rpc_ports_.end()) rpc_port = known->second;
  }
  std::vector<std::string> argv = {
      kTipd,          "node",
      "--datadir",    dir.string(),
      "--listen",     "127.0.0.1:" + std::to_string(p2p_port),
      "--ledger",     "127.0.0.1:" + std::to_string(ledger_port_) + "@" + sequencer_.Hex(),
      "--rpc-listen", "127.0.0.1:" + std::to_string(rpc_port)};
  // Test ledgers seal every 50-100 ms and tests open short windows, and
  // nodes fund what their peers ask, unless a test says otherwise (flags
  // given later win).
  bool has_min = false, has_accept = false;
  for (const std::string& e : extra) {
    has_min |= e.rfind("--min-settle-seconds", 0) == 0;
    has_accept |= e.rfind("--max-accept-deposit", 0) == 0;
  }
  if (!has_min) argv.insert(argv.end(), {"--min-settle-seconds", "1"});
  if (!has_accept) argv.insert(argv.end(), {"--max-accept-deposit", "1000000000000"});
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string error;
  auto p =
      StartListening(argv, dir_.path() / (name + ".log"), "API on http://", kStartTimeout, &error);
  EXPECT_TRUE(p) << error;
  if (!p) return nullptr;
  // "... listening on 127.0.0.1:P2P, API on http://127.0.0.1:RPC"
  const std::string out = p->Output();
  auto bound_p2p = PortAfter(out, "listening on 127.0.0.1:");
  auto bound_rpc = PortAfter(out, "API on http://127.0.0.1:");
  EXPECT_TRUE(bound_p2p && bound_rpc) << out;
  if (!bound_p2p || !bound_rpc) return nullptr;
  if (p2p_port != 0) {
    EXPECT_EQ(*bound_p2p, p2p_port) << out;
  }
  if (rpc_port != 0) {
    EXPECT_EQ(*bound_rpc, rpc_port) << out;
  }
  p2p_ports_[name] = *bound_p2p;
  rpc_ports_[name] = *bound_rpc;
  Process* raw = p.get();
  nodes_[name] = std::move(p);
  return raw;
}

std::unique_ptr<TestClient> NetworkFixture::Client(const std::string& name) {
  return std::make_unique<TestClient>(dir_.path() / name, genesis_, sequencer_, ledger_port_);
}

v1::Transaction NetworkFixture::Transfer(Account& from, const Account& to, uint64_t amount) {
  v1::Transaction tx;
  tx.set_chain_id(genesis_.chain_id());
  tx.set_signer(Str(from.key.XOnly()));
  tx.set_nonce(from.nonce++);
  tx.set_fee(genesis_.fee_per_tx());
  tx.mutable_transfer()->set_to(Str(to.key.XOnly()));
  tx.mutable_transfer()->set_amount(amount);
  EXPECT_TRUE(ledger::SignTransaction(&tx, from.key, crypto::SystemRng()).ok());
  return tx;
}

}  // namespace tipd::testing
