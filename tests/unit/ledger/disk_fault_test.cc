// The sequencer and a follower when their disks fail (storage/fault_env.h):
// a block whose write failed is never announced, never left half written and
// never forks the chain. After the fault clears and the failed side restarts
// on the same data, the chain resumes at the last fully written block,
// continues, and the follower holds exactly the sequencer's blocks.
//
// Real p2p Hosts on 127.0.0.1 and real LevelDB; nothing sleeps: every wait
// runs the io_contexts until a condition holds or a generous deadline passes.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>

#include <spdlog/spdlog.h>

#include "ledger/client.h"
#include "ledger/codec.h"
#include "ledger/server.h"
#include "storage/fault_env.h"
#include "tests/support/test_support.h"
#include "util/clock.h"

namespace tipd::ledger {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using storage::FaultEnv;
using storage::FaultOp;
using storage::FileKind;

constexpr char kChain[] = "tipd-ledger-disk-fault-test";

class CountingRandom final : public crypto::RandomSource {
 public:
  explicit CountingRandom(uint64_t start) : n_(start) {}
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) {
      n_ = n_ * 6364136223846793005ULL + 1442695040888963407ULL;
      b = static_cast<uint8_t>(n_ >> 56);
    }
  }

 private:
  uint64_t n_;
};

crypto::KeyPair Key(uint8_t fill) {
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(Bytes(32, fill)).value());
}
std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

// Runs every live io_context until `pred` holds or `timeout` passes.
bool RunUntil(const std::vector<asio::io_context*>& ios, const std::function<bool()>& pred,
              std::chrono::milliseconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    for (auto* io : ios) {
      io->restart();
      io->poll();
    }
    ios[0]->restart();
    ios[0]->run_one_for(2ms);
  }
  return true;
}

// One run of a process's ledger role over a data dir that outlives it: its
// own io_context (destroyed last, so nothing of the old run is ever invoked
// after it ends), database, chain and Host.
struct Incarnation {
  asio::io_context io;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<Chain> chain;
  std::unique_ptr<p2p::Host> host;
  std::unique_ptr<LedgerServer> server;  // sequencer only
  std::unique_ptr<LedgerClient> client;  // follower only
};

// Faults a block write can meet, by name for the trace.
struct BlockFault {
  const char* name;
  std::function<void(FaultEnv&)> arm;
  bool may_persist;  // the data reached the file; only its sync failed
};

std::vector<BlockFault> BlockFaults() {
  return {
      {"failed log sync", [](FaultEnv& e) { e.FailFromNow(FaultOp::kSync, FileKind::kLog); }, true},
      {"torn log append",
       [](FaultEnv& e) {
         storage::FaultRule r;
         r.op = FaultOp::kAppend;
         r.kind = FileKind::kLog;
         r.times = storage::FaultRule::kForever;
         r.skip = 1;  // the record header is written, the body is torn
         r.torn = true;
         e.Inject(r);
       },
       false},
      {"disk full", [](FaultEnv& e) { e.SetDiskFull(true); }, false},
  };
}

class LedgerDiskFaultTest : public ::testing::Test {
 protected:
  LedgerDiskFaultTest() : seq_key_(Key(9)), alice_(Key(1)), bob_(Key(2)), rng_(seed_) {
    genesis_.set_chain_id(kChain);
    genesis_.set_sequencer_key(Str(seq_key_.XOnly()));
    auto* a = genesis_.add_allocations();
    a->set_account(Str(alice_.XOnly()));
    a->set_amount(1'000'000);
    genesis_.set_fee_per_tx(1);
    genesis_.set_min_settle_timeout(1);
    genesis_.set_max_settle_timeout(10);
    genesis_.set_block_interval_ms(100);
    genesis_.set_genesis_time_ms(1000);
  }
  ~LedgerDiskFaultTest() override {
    std::printf("[faults] %s: sequencer %s; follower %s\n",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                seq_env_.counters().InjectedSummary().c_str(),
                follower_env_.counters().InjectedSummary().c_str());
  }

  std::unique_ptr<Incarnation> Open(const std::string& name, FaultEnv* env) {
    auto inc = std::make_unique<Incarnation>();
    storage::Options o;
    o.env = env;
    auto db = storage::Database::Open(dir_.path() / name, o);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (!db.ok()) return nullptr;
    inc->db = std::move(db).value();
    auto chain = Chain::Open(inc->db.get(), ValidateGenesis(genesis_).value());
    EXPECT_TRUE(chain.ok()) << chain.status().ToString();
    if (!chain.ok()) return nullptr;
    inc->chain = std::move(chain).value();
    return inc;
  }

  // The sequencer on port_ (chosen by the first run, kept by restarts).
  void StartSequencer() {
    seq_ = Open("sequencer", &seq_env_);
    ASSERT_NE(seq_, nullptr);
    p2p::HostOptions ho;
    ho.chain_id = kChain;
    seq_->host = std::make_unique<p2p::Host>(seq_->io, seq_key_, rng_, ho);
    auto port = seq_->host->Listen("127.0.0.1", port_);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    LedgerServerOptions opts;
    opts.block_interval_ms = 3'600'000;  // blocks are sealed by the test
    seq_->server = std::make_unique<LedgerServer>(seq_->io, *seq_->host, *seq_->chain, seq_key_,
                                                  rng_, clock_, opts, spdlog::default_logger());
    seq_->server->Start();
  }

  void StartFollower() {
    follower_ = Open("follower", &follower_env_);
    ASSERT_NE(follower_, nullptr);
    p2p::HostOptions ho;
    ho.chain_id = kChain;
    ho.reconnect_max = 500ms;  // redial a restarted sequencer soon
    follower_->host = std::make_unique<p2p::Host>(follower_->io, Key(3), rng_, ho);
    follower_->client =
        std::make_unique<LedgerClient>(*follower_->host, *follower_->chain, seq_key_.public_key(),
                                       "127.0.0.1", port_, spdlog::default_logger());
    LedgerClient* client = follower_->client.get();
    p2p::Callbacks cb;
    cb.on_connected = [client](const p2p::PeerInfo& p) { client->OnConnected(p); };
    cb.on_disconnected = [client](const p2p::DisconnectEvent& e) { client->OnDisconnected(e); };
    cb.on_message = [client](p2p::PeerId id, const v1::Envelope& e) { client->OnMessage(id, e); };
    follower_->host->SetCallbacks(cb);
    ASSERT_TRUE(client->Start().ok());
  }

  std::vector<asio::io_context*> Ios() {
    std::vector<asio::io_context*> ios;
    if (seq_) ios.push_back(&seq_->io);
    if (follower_) ios.push_back(&follower_->io);
    for (auto& p : probes_) ios.push_back(&p->io);
    return ios;
  }
  bool Run(const std::function<bool()>& pred) { return RunUntil(Ios(), pred); }

  v1::Transaction Transfer(uint64_t amount) {
    const Account* a = seq_->chain->state().FindAccount(alice_.XOnly());
    v1::Transaction tx;
    tx.set_chain_id(kChain);
    tx.set_signer(Str(alice_.XOnly()));
    tx.set_nonce(a ? a->nonce : 0);
    tx.set_fee(1);
    tx.mutable_transfer()->set_to(Str(bob_.XOnly()));
    tx.mutable_transfer()->set_amount(amount);
    EXPECT_TRUE(SignTransaction(&tx, alice_, rng_).ok());
    return tx;
  }

  // Seals one block of `txs` transfers on the sequencer.
  void SealWithTransfers(int txs) {
    for (int i = 0; i < txs; ++i) {
      auto e = seq_->chain->AddToPending(Transfer(1 + i));
      ASSERT_FALSE(e.has_value()) << e->ToString();
    }
    const uint64_t before = seq_->chain->height();
    clock_.AdvanceMs(100);
    seq_->server->SealNow();
    ASSERT_EQ(seq_->chain->height(), before + 1) << seq_->server->health().ToString();
  }

  // The follower's chain equals the sequencer's, block by block.
  void ExpectSameChain() {
    ASSERT_EQ(follower_->chain->height(), seq_->chain->height());
    for (uint64_t h = 1; h <= seq_->chain->height(); ++h) {
      auto a = seq_->chain->GetBlock(h);
      auto b = follower_->chain->GetBlock(h);
      ASSERT_TRUE(a.ok() && a->has_value()) << "sequencer block " << h;
      ASSERT_TRUE(b.ok() && b->has_value()) << "follower block " << h;
      EXPECT_EQ(BlockHash((*a)->header()).value(), BlockHash((*b)->header()).value())
          << "fork at height " << h;
    }
    EXPECT_EQ(follower_->chain->tip_hash(), seq_->chain->tip_hash());
    EXPECT_EQ(follower_->chain->state_hash(), seq_->chain->state_hash());
  }

  // The stored chain is whole: a tip record, every block up to it, none
  // above it (a half-written block would be a block without its tip, or the
  // reverse).
  static void ExpectWholeChain(const Chain& chain) {
    for (uint64_t h = 1; h <= chain.height(); ++h) {
      auto b = chain.GetBlock(h);
      ASSERT_TRUE(b.ok() && b->has_value()) << "block " << h << " missing below the tip";
    }
    auto above = chain.GetBlock(chain.height() + 1);
    ASSERT_TRUE(above.ok());
    EXPECT_FALSE(above->has_value()) << "block " << chain.height() + 1 << " stored above the tip";
  }

  // A raw subscriber that records every block pushed to it and the answers
  // to its GetBlocks: pushes and answers travel in order on one connection,
  // so once an answer arrived, any push sent before it has arrived too.
  struct Probe {
    explicit Probe(uint64_t seed) : rng(seed), key(crypto::KeyPair::Generate(rng)) {}
    asio::io_context io;
    CountingRandom rng;
    crypto::KeyPair key;
    std::unique_ptr<p2p::Host> host;
    std::optional<p2p::PeerId> peer;
    std::vector<uint64_t> pushed;  // heights of NewBlock pushes
    std::map<uint64_t, v1::Blocks> answers;
  };
  Probe& Subscribe() {
    probes_.push_back(std::make_unique<Probe>(seed_ + probes_.size() + 7));
    Probe* p = probes_.back().get();
    p2p::HostOptions ho;
    ho.chain_id = kChain;
    p2p::Callbacks cb;
    cb.on_connected = [p](const p2p::PeerInfo& info) { p->peer = info.id; };
    cb.on_message = [p](p2p::PeerId, const v1::Envelope& e) {
      if (e.has_new_block()) p->pushed.push_back(e.new_block().block().header().height());
      if (e.has_blocks()) p->answers[e.blocks().request_id()] = e.blocks();
    };
    p->host = std::make_unique<p2p::Host>(p->io, p->key, p->rng, ho, cb);
    EXPECT_TRUE(p->host->Connect("127.0.0.1", port_, seq_key_.public_key()).ok());
    EXPECT_TRUE(Run([p] { return p->peer.has_value(); }));
    v1::Envelope sub;
    sub.mutable_subscribe_blocks()->set_from_height(seq_->chain->height() + 1);
    EXPECT_TRUE(p->host->Send(*p->peer, sub).ok());
    EXPECT_TRUE(Run([p] { return p->answers.count(0) > 0; }));  // the catch-up answer
    return *p;
  }
  const v1::Blocks* Ask(Probe& p, uint64_t from, uint64_t request_id) {
    v1::Envelope env;
    env.mutable_get_blocks()->set_request_id(request_id);
    env.mutable_get_blocks()->set_from_height(from);
    EXPECT_TRUE(p.host->Send(*p.peer, env).ok());
    if (!Run([&] { return p.answers.count(request_id) > 0; })) return nullptr;
    return &p.answers[request_id];
  }

  const uint64_t seed_ = tipd::testing::TestSeed();
  tipd::testing::TempDir dir_{"tipd-ledger-disk"};
  crypto::KeyPair seq_key_, alice_, bob_;
  CountingRandom rng_;
  ManualClock clock_;
  v1::GenesisParams genesis_;
  FaultEnv seq_env_;
  FaultEnv follower_env_;
  uint16_t port_ = 0;
  std::unique_ptr<Incarnation> seq_;
  std::unique_ptr<Incarnation> follower_;
  std::vector<std::unique_ptr<Probe>> probes_;
};

TEST_F(LedgerDiskFaultTest, SequencerNeverAnnouncesABlockItCouldNotPersist) {
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed_));
  for (const BlockFault& fault : BlockFaults()) {
    SCOPED_TRACE(fault.name);
    std::printf("[ledger disk fault] %s\n", fault.name);
    // A fresh chain per fault: one sequencer, one follower, one probe.
    probes_.clear();
    follower_.reset();
    seq_.reset();
    std::filesystem::remove_all(dir_.path() / "sequencer");
    std::filesystem::remove_all(dir_.path() / "follower");
    port_ = 0;
    ASSERT_NO_FATAL_FAILURE(StartSequencer());
    ASSERT_NO_FATAL_FAILURE(StartFollower());
    for (int b = 0; b < 3; ++b) ASSERT_NO_FATAL_FAILURE(SealWithTransfers(2));
    ASSERT_TRUE(Run([&] { return follower_->chain->height() == 3; })) << follower_->chain->height();
    Probe& probe = Subscribe();

    // Block 4 fails to persist.
    for (int i = 0; i < 3; ++i) ASSERT_FALSE(seq_->chain->AddToPending(Transfer(10 + i)));
    fault.arm(seq_env_);
    const uint64_t injected_before = seq_env_.counters().TotalInjected();
    seq_->server->SealNow();
    EXPECT_GT(seq_env_.counters().TotalInjected(), injected_before);
    EXPECT_EQ(seq_->chain->height(), 3u);
    const Status halted = seq_->server->health();
    EXPECT_EQ(halted.code(), StatusCode::kIOError) << halted.ToString();
    EXPECT_NE(halted.message().find("writing block 4 failed"), std::string::npos)
        << halted.ToString();
    // It halts: no new transaction is accepted, no block is sealed.
    auto refused = seq_->chain->AddToPending(Transfer(99));
    ASSERT_TRUE(refused.has_value());
    EXPECT_NE(refused->reason.find("ledger halted"), std::string::npos) << refused->ToString();
    seq_->server->SealNow();
    EXPECT_EQ(seq_->chain->height(), 3u);
    // Nothing was pushed: the probe's answer to a later request arrives after
    // any push, and it says the tip is still 3 with no block 4.
    const v1::Blocks* answer = Ask(probe, 4, 41);
    ASSERT_NE(answer, nullptr);
    EXPECT_EQ(answer->tip_height(), 3u);
    EXPECT_EQ(answer->blocks_size(), 0);
    EXPECT_TRUE(probe.pushed.empty()) << "pushed block " << probe.pushed[0];
    EXPECT_EQ(follower_->chain->height(), 3u);

    // The operator frees the disk and restarts the sequencer on its data.
    probes_.clear();
    seq_.reset();
    seq_env_.Clear();
    ASSERT_NO_FATAL_FAILURE(StartSequencer());
    const uint64_t resumed = seq_->chain->height();
    if (fault.may_persist) {
      EXPECT_TRUE(resumed == 3 || resumed == 4) << resumed;
    } else {
      EXPECT_EQ(resumed, 3u);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectWholeChain(*seq_->chain));
    // It continues, and the follower (still running, redialling) agrees.
    for (int b = 0; b < 2; ++b) ASSERT_NO_FATAL_FAILURE(SealWithTransfers(2));
    ASSERT_TRUE(Run([&] { return follower_->chain->height() == seq_->chain->height(); }))
        << "follower at " << follower_->chain->height() << ", sequencer at "
        << seq_->chain->height();
    EXPECT_TRUE(follower_->client->health().ok()) << follower_->client->health().ToString();
    ASSERT_NO_FATAL_FAILURE(ExpectSameChain());
  }
}

TEST_F(LedgerDiskFaultTest, FollowerWhoseBlockWriteFailsHaltsAndResumesAfterRestart) {
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed_));
  for (const BlockFault& fault : BlockFaults()) {
    SCOPED_TRACE(fault.name);
    follower_.reset();
    seq_.reset();
    std::filesystem::remove_all(dir_.path() / "sequencer");
    std::filesystem::remove_all(dir_.path() / "follower");
    port_ = 0;
    ASSERT_NO_FATAL_FAILURE(StartSequencer());
    ASSERT_NO_FATAL_FAILURE(StartFollower());
    for (int b = 0; b < 3; ++b) ASSERT_NO_FATAL_FAILURE(SealWithTransfers(2));
    ASSERT_TRUE(Run([&] { return follower_->chain->height() == 3; }));

    fault.arm(follower_env_);
    ASSERT_NO_FATAL_FAILURE(SealWithTransfers(3));
    ASSERT_TRUE(Run([&] { return !follower_->client->health().ok(); }));
    const Status halted = follower_->client->health();
    EXPECT_EQ(halted.code(), StatusCode::kIOError) << halted.ToString();
    EXPECT_EQ(follower_->chain->height(), 3u);
    ASSERT_NO_FATAL_FAILURE(SealWithTransfers(1));  // the sequencer goes on

    // Restarted on the same data with a healthy disk, it catches up.
    follower_.reset();
    follower_env_.Clear();
    ASSERT_NO_FATAL_FAILURE(StartFollower());
    const uint64_t resumed = follower_->chain->height();
    if (fault.may_persist) {
      EXPECT_TRUE(resumed == 3 || resumed == 4) << resumed;
    } else {
      EXPECT_EQ(resumed, 3u);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectWholeChain(*follower_->chain));
    ASSERT_TRUE(Run([&] { return follower_->chain->height() == seq_->chain->height(); }))
        << follower_->chain->height();
    EXPECT_TRUE(follower_->client->health().ok());
    ASSERT_NO_FATAL_FAILURE(ExpectSameChain());
  }
}

}  // namespace
}  // namespace tipd::ledger
