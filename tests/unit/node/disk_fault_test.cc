// A node whose disk fails while it streams tips: the whole node in one
// process (NodeContext: real LevelDB, p2p, follower, committer, channel
// manager and HTTP API on loopback), its database behind a FaultEnv
// (storage/fault_env.h) given through NodeContext::Create's test seam; its
// peer and an in-process sequencer on their own healthy disks.
//
// While the fault lasts the API never answers 200 for what was not durable:
// every tip after the failed write is refused with 503 NODE_READ_ONLY and
// /v1/info says read_only with the reason. After the disk is healthy again
// and the node restarts on the same data dir, its state is exactly what it
// acknowledged: every 200'd tip is at the receiver once, byte for byte; a
// refused tip is at both sides or at neither; the two sides agree on the
// channel; a retry of every refused key answers 200 and pays at most once.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include "api/auth.h"
#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "ledger/genesis.h"
#include "ledger/server.h"
#include "node/context.h"
#include "p2p/p2p.h"
#include "storage/fault_env.h"
#include "storage/storage.h"
#include "tests/support/http_client.h"
#include "tests/support/test_support.h"
#include "tipd/api.pb.h"
#include "util/clock.h"

namespace tipd::node {
namespace {

using namespace std::chrono_literals;
using storage::FaultEnv;
using storage::FaultOp;
using storage::FileKind;
using testing::HttpRequest;
using testing::HttpResult;

constexpr char kChain[] = "tipd-node-disk-fault";

template <typename T>
T FromJson(const std::string& body) {
  T out;
  auto s = google::protobuf::util::JsonStringToMessage(body, &out);
  EXPECT_TRUE(s.ok()) << body;
  return out;
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// The sequencer: a chain on a healthy disk, sealing as soon as transactions
// arrive, on its own io thread.
class Sequencer {
 public:
  Sequencer(const std::filesystem::path& dir, const crypto::KeyPair& key,
            const v1::GenesisParams& genesis, const Clock& clock)
      : key_(key) {
    std::filesystem::create_directories(dir);
    db_ = storage::Database::Open(dir / "db").value();
    chain_ = ledger::Chain::Open(db_.get(), ledger::ValidateGenesis(genesis).value()).value();
    p2p::HostOptions ho;
    ho.chain_id = kChain;
    host_ = std::make_unique<p2p::Host>(io_, key_, crypto::SystemRng(), ho);
    port_ = host_->Listen("127.0.0.1", 0).value();
    ledger::LedgerServerOptions opts;
    opts.block_interval_ms = genesis.block_interval_ms();
    opts.seal_on_submit = true;
    server_ = std::make_unique<ledger::LedgerServer>(
        io_, *host_, *chain_, key_, crypto::SystemRng(), clock, opts, spdlog::default_logger());
    server_->Start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Sequencer() {
    boost::asio::post(io_, [this] {
      server_->Stop();
      host_->Shutdown();
      io_.stop();
    });
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  const crypto::KeyPair& key_;
  boost::asio::io_context io_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<ledger::Chain> chain_;
  std::unique_ptr<p2p::Host> host_;
  std::unique_ptr<ledger::LedgerServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
};

// One running NodeContext and the thread that runs its io_context.
struct RunningNode {
  NodeConfig config;
  crypto::KeyPair key = crypto::KeyPair::Generate(crypto::SystemRng());
  std::unique_ptr<NodeContext> ctx;
  std::thread thread;
  std::string token;
  uint16_t rpc = 0;

  HttpResult Call(const std::string& method, const std::string& path,
                  const std::string& body = "") const {
    return HttpRequest(rpc, method, path, token, body);
  }
};

struct Answer {
  std::string key;
  std::string message;
  uint64_t amount = 0;
  int status = 0;
  std::string body;
};

class NodeDiskFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::pair<ledger::AccountId, uint64_t>> alloc = {{a_.key.XOnly(), 1'000'000},
                                                                 {b_.key.XOnly(), 100'000}};
    genesis_ = ledger::MakeDevnetGenesis(kChain, seq_key_.XOnly(), alloc, clock_.NowMs());
    genesis_.set_block_interval_ms(1000);
    ASSERT_TRUE(ledger::WriteGenesisFile(dir_.path() / "genesis.json", genesis_).ok());
    sequencer_ = std::make_unique<Sequencer>(dir_.path() / "ledger", seq_key_, genesis_, clock_);
    Configure(a_, "a");
    Configure(b_, "b");
  }
  void TearDown() override {
    Stop(a_);
    Stop(b_);
    sequencer_.reset();
    std::printf("[faults] %s: %llu injected into node a (%s), %llu into node b (%s)\n",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                static_cast<unsigned long long>(env_.counters().TotalInjected()),
                env_.counters().InjectedSummary().c_str(),
                static_cast<unsigned long long>(b_env_.counters().TotalInjected()),
                b_env_.counters().InjectedSummary().c_str());
  }

  void Configure(RunningNode& n, const std::string& name) {
    n.config.datadir = dir_.path() / name;
    std::filesystem::create_directories(n.config.datadir);
    ASSERT_TRUE(crypto::SaveKeyFile(n.config.datadir / "node.key", n.key.secret()).ok());
    n.config.genesis = dir_.path() / "genesis.json";
    n.config.listen = {"127.0.0.1", 0};
    n.config.rpc_listen = {"127.0.0.1", 0};
    n.config.ledger.address = {"127.0.0.1", sequencer_->port()};
    n.config.ledger.sequencer_xonly = seq_key_.XOnly();
    n.config.ledger.sequencer_pubkey = seq_key_.public_key();
    n.config.min_settle_seconds = 1;
  }

  void Start(RunningNode& n, leveldb::Env* env) {
    auto ctx = NodeContext::Create(n.config, clock_, env);
    ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
    n.ctx = std::move(ctx).value();
    ASSERT_TRUE(n.ctx->Start().ok());
    n.rpc = n.ctx->rpc_port();
    NodeContext* raw = n.ctx.get();
    n.thread = std::thread([raw] { raw->io().run(); });
    auto token = api::ReadTokenFile(n.config.datadir / "admin.token");
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    n.token = *token;
  }

  void Stop(RunningNode& n) {
    if (!n.ctx) return;
    NodeContext* raw = n.ctx.get();
    boost::asio::post(raw->io(), [raw] { raw->Stop(); });
    n.thread.join();
    n.ctx.reset();  // flushes what the committer holds, closes the database
  }

  bool Connected(const RunningNode& from, const RunningNode& to) {
    auto peers = from.Call("GET", "/v1/peers");
    return peers.status == 200 && peers.body.find(to.key.public_key().Hex()) != std::string::npos;
  }

  v1::ChannelApi Channel(const RunningNode& n) {
    auto r = n.Call("GET", "/v1/channels/" + channel_);
    EXPECT_EQ(r.status, 200) << r.body;
    return FromJson<v1::GetChannelResponse>(r.body).channel();
  }

  // Every tip of one direction of the channel, by index.
  std::map<uint64_t, v1::TipApi> History(const RunningNode& n, const std::string& direction) {
    std::map<uint64_t, v1::TipApi> out;
    std::string cursor;
    do {
      auto r = n.Call("GET", "/v1/tips?channel_id=" + channel_ + "&direction=" + direction +
                                 "&limit=500&cursor=" + cursor);
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) break;
      auto page = FromJson<v1::ListTipsResponse>(r.body);
      for (const auto& t : page.tips()) out[t.tip().index()] = t;
      cursor = page.next_cursor();
    } while (!cursor.empty());
    return out;
  }

  static std::string TipBody(const std::string& channel, const Answer& a) {
    return R"({"channel_id":")" + channel + R"(","amount":")" + std::to_string(a.amount) +
           R"(","message":")" + a.message + R"(","idempotency_key":")" + a.key +
           R"(","metadata":{"app_name":"disk-fault-test"}})";
  }

  // Two nodes connected, a channel a -> b open.
  void OpenNetwork(FaultEnv* b_env = nullptr) {
    ASSERT_NO_FATAL_FAILURE(Start(b_, b_env));
    ASSERT_NO_FATAL_FAILURE(Start(a_, &env_));
    auto r = a_.Call("POST", "/v1/peers",
                     R"({"node_id":")" + b_.key.public_key().Hex() + R"(","address":"127.0.0.1:)" +
                         std::to_string(b_.ctx->p2p_port()) + R"(","persistent":true})");
    ASSERT_EQ(r.status, 202) << r.body;
    ASSERT_TRUE(WaitFor([&] { return Connected(a_, b_); }));
    auto open = a_.Call("POST", "/v1/channels",
                        R"({"peer_node_id":")" + b_.key.public_key().Hex() +
                            R"(","deposit":"200000","push_deposit":"0","settle_timeout":"20"})");
    ASSERT_EQ(open.status, 200) << open.body;
    channel_ = FromJson<v1::OpenChannelResponse>(open.body).channel().channel_id();
    ASSERT_TRUE(WaitFor([&] { return Channel(b_).state() == "open"; }));
  }

  // Streams keyed tips from `clients` threads; once `before_fault` tips were
  // answered 200, `arm` breaks a's disk. Each client stops after it saw 3
  // refusals (or 300 tips). Returns every answer.
  std::vector<Answer> StreamThroughFault(const std::function<void()>& arm, int clients = 2,
                                         int before_fault = 12) {
    std::mutex mu;
    std::vector<Answer> answers;
    std::atomic<int> ok{0};
    std::atomic<bool> armed{false};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        int refused = 0;
        for (int i = 0; i < 300 && refused < 3; ++i) {
          Answer a;
          a.key = "c" + std::to_string(c) + "-" + std::to_string(i);
          a.message = "tip " + a.key;
          a.amount = 1 + static_cast<uint64_t>((seed_ + i) % 7);
          HttpResult r = a_.Call("POST", "/v1/tips", TipBody(channel_, a));
          a.status = r.status;
          a.body = r.body;
          if (r.status == 200) ++ok;
          if (r.status != 200 && r.status != 202 && armed) ++refused;
          std::lock_guard<std::mutex> lock(mu);
          answers.push_back(std::move(a));
        }
      });
    }
    EXPECT_TRUE(WaitFor([&] { return ok.load() >= before_fault; }));
    arm();
    armed = true;
    for (auto& t : threads) t.join();
    return answers;
  }

  // The whole scenario for one kind of disk fault on node a.
  void RunScenario(const std::function<void()>& arm, bool sync_may_persist) {
    ASSERT_NO_FATAL_FAILURE(OpenNetwork());
    std::vector<Answer> answers = StreamThroughFault(arm);

    // Every answer is 200 (paid and acked), 202 (durable, ack pending) or
    // 503 NODE_READ_ONLY; never anything else, never silence.
    int paid = 0, refused = 0;
    for (const Answer& a : answers) {
      if (a.status == 200 || a.status == 202) {
        ++paid;
        continue;
      }
      ++refused;
      EXPECT_EQ(a.status, 503) << a.key << ": " << a.body;
      EXPECT_NE(a.body.find("NODE_READ_ONLY"), std::string::npos) << a.key << ": " << a.body;
    }
    EXPECT_GE(paid, 12);
    EXPECT_GE(refused, 6) << "the fault never reached the API";
    std::printf("[node disk fault] seed %llu: %d tips paid, %d refused\n",
                static_cast<unsigned long long>(seed_), paid, refused);

    // The node says it is read-only and why, and refuses new work.
    auto info = FromJson<v1::InfoResponse>(a_.Call("GET", "/v1/info").body);
    EXPECT_TRUE(info.read_only());
    EXPECT_NE(info.read_only_reason().find("injected"), std::string::npos)
        << info.read_only_reason();
    Answer fresh{"fresh-after-fault", "fresh", 1, 0, ""};
    auto refused_new = a_.Call("POST", "/v1/tips", TipBody(channel_, fresh));
    EXPECT_EQ(refused_new.status, 503) << refused_new.body;

    // The operator fixes the disk and restarts a on the same data dir.
    Stop(a_);
    env_.Clear();
    ASSERT_NO_FATAL_FAILURE(Start(a_, &env_));
    info = FromJson<v1::InfoResponse>(a_.Call("GET", "/v1/info").body);
    EXPECT_FALSE(info.read_only()) << info.read_only_reason();
    ASSERT_TRUE(WaitFor([&] { return Connected(a_, b_); }));
    // Reestablish: both sides agree on the channel.
    ASSERT_TRUE(WaitFor([&] {
      v1::ChannelApi ca = Channel(a_), cb = Channel(b_);
      return ca.tips_sent() == cb.tips_received() && ca.balance_local() == cb.balance_remote() &&
             ca.balance_remote() == cb.balance_local() &&
             History(a_, "sent").size() == History(b_, "received").size();
    })) << Channel(a_).DebugString()
        << Channel(b_).DebugString();

    // What a stored and what b received are the same tips, byte for byte.
    auto sent = History(a_, "sent");
    auto received = History(b_, "received");
    ASSERT_EQ(sent.size(), received.size());
    std::map<std::string, int> at_b;  // message -> times received
    uint64_t total = 0;
    for (const auto& [index, tip] : sent) {
      auto it = received.find(index);
      ASSERT_NE(it, received.end()) << "tip " << index << " sent but not received";
      EXPECT_EQ(it->second.tip().SerializeAsString(), tip.tip().SerializeAsString())
          << "tip " << index;
      ++at_b[it->second.tip().message()];
      total += tip.tip().amount();
    }
    const v1::ChannelApi after = Channel(a_);
    EXPECT_EQ(after.balance_local(), 200'000 - total);
    EXPECT_EQ(Channel(b_).balance_local(), total);
    for (const auto& [message, times] : at_b) EXPECT_EQ(times, 1) << message;

    // Every acknowledged tip is there; a refused one may be there only if
    // its write reached the file before the sync failed (then whole).
    int refused_but_durable = 0;
    for (const Answer& a : answers) {
      const bool there = at_b.count(a.message) > 0;
      if (a.status == 200 || a.status == 202) {
        EXPECT_TRUE(there) << "acknowledged tip " << a.key << " lost";
      } else if (there) {
        ++refused_but_durable;
        EXPECT_TRUE(sync_may_persist) << "refused tip " << a.key << " was paid";
      }
    }
    EXPECT_EQ(at_b.count("fresh"), 0u);
    std::printf("[node disk fault] %d refused tips were durable after all\n", refused_but_durable);

    // A retry of every refused key learns the truth and pays at most once;
    // the node takes new work again.
    for (const Answer& a : answers) {
      if (a.status == 200 || a.status == 202) continue;
      auto retry = a_.Call("POST", "/v1/tips", TipBody(channel_, a));
      EXPECT_EQ(retry.status, 200) << a.key << ": " << retry.body;
    }
    auto again = a_.Call("POST", "/v1/tips", TipBody(channel_, fresh));
    EXPECT_EQ(again.status, 200) << again.body;
    std::map<std::string, int> final_at_b;
    for (const auto& [index, tip] : History(b_, "received")) ++final_at_b[tip.tip().message()];
    for (const Answer& a : answers) EXPECT_EQ(final_at_b[a.message], 1) << a.key;
    EXPECT_EQ(final_at_b["fresh"], 1);
  }

  const uint64_t seed_ = testing::TestSeed();
  testing::TempDir dir_{"tipd-node-disk"};
  SystemClock clock_;
  crypto::KeyPair seq_key_ = crypto::KeyPair::Generate(crypto::SystemRng());
  v1::GenesisParams genesis_;
  std::unique_ptr<Sequencer> sequencer_;
  FaultEnv env_;    // node a's disk
  FaultEnv b_env_;  // node b's disk (the receiver test)
  RunningNode a_, b_;
  std::string channel_;
};

TEST_F(NodeDiskFaultTest, SyncFailureMidStreamNeverAnswers200AndRestartKeepsWhatWasAcked) {
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed_));
  RunScenario([&] { env_.FailFromNow(FaultOp::kSync, FileKind::kLog); },
              /*sync_may_persist=*/true);
}

TEST_F(NodeDiskFaultTest, DiskFullMidStreamNeverAnswers200AndRestartKeepsWhatWasAcked) {
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed_));
  RunScenario([&] { env_.SetDiskFull(true); }, /*sync_may_persist=*/false);
}

// The receiver's disk fails: it must not acknowledge what it could not
// persist, so the sender never answers 200 for those tips (202 once its ack
// wait ends: durable on the sender, not acknowledged). After the receiver
// restarts on the same data (same p2p port, so the sender redials it),
// reestablish delivers them, and every key retried answers 200 exactly once.
TEST_F(NodeDiskFaultTest, ReceiverDiskFailureNeverLetsTheSenderAnswer200ForWhatItLost) {
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed_));
  ASSERT_NO_FATAL_FAILURE(OpenNetwork(&b_env_));
  std::vector<Answer> before;
  for (int i = 0; i < 5; ++i) {
    Answer a{"before-" + std::to_string(i), "tip before " + std::to_string(i),
             1 + static_cast<uint64_t>((seed_ + i) % 7), 0, ""};
    auto r = a_.Call("POST", "/v1/tips", TipBody(channel_, a));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  b_env_.FailFromNow(FaultOp::kSync, FileKind::kLog);
  // Eight tips at once: none can be acknowledged by b.
  std::vector<Answer> during(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    during[i] = Answer{"during-" + std::to_string(i), "tip during " + std::to_string(i),
                       1 + static_cast<uint64_t>((seed_ + i) % 5), 0, ""};
    threads.emplace_back([&, i] {
      HttpResult r = a_.Call("POST", "/v1/tips", TipBody(channel_, during[i]));
      during[i].status = r.status;
      during[i].body = r.body;
    });
  }
  for (auto& t : threads) t.join();
  auto b_info = FromJson<v1::InfoResponse>(b_.Call("GET", "/v1/info").body);
  EXPECT_TRUE(b_info.read_only());
  int pending = 0;
  for (const Answer& a : during) {
    // 200 only if b acknowledged before its first failed write; never a
    // refusal from a healthy sender with an open channel.
    EXPECT_TRUE(a.status == 200 || a.status == 202) << a.key << ": " << a.status << " " << a.body;
    if (a.status == 202) ++pending;
  }
  EXPECT_GT(pending, 0) << "b acknowledged everything: the fault never fired";

  // b restarts on the same data dir and port with a healthy disk.
  const uint16_t b_port = b_.ctx->p2p_port();
  Stop(b_);
  b_env_.Clear();
  b_.config.listen = {"127.0.0.1", b_port};
  ASSERT_NO_FATAL_FAILURE(Start(b_, &b_env_));
  ASSERT_TRUE(WaitFor([&] { return Connected(a_, b_); }));
  ASSERT_TRUE(WaitFor([&] {
    v1::ChannelApi ca = Channel(a_), cb = Channel(b_);
    return ca.tips_sent() == cb.tips_received() && ca.balance_local() == cb.balance_remote() &&
           History(a_, "sent").size() == History(b_, "received").size() &&
           History(b_, "received").size() == 13;
  })) << Channel(a_).DebugString()
      << Channel(b_).DebugString();
  // Every key retried: 200 (acknowledged now), nothing paid twice.
  for (const Answer& a : during) {
    auto retry = a_.Call("POST", "/v1/tips", TipBody(channel_, a));
    EXPECT_EQ(retry.status, 200) << a.key << ": " << retry.body;
  }
  std::map<std::string, int> at_b;
  for (const auto& [index, tip] : History(b_, "received")) ++at_b[tip.tip().message()];
  for (const Answer& a : during) EXPECT_EQ(at_b[a.message], 1) << a.key;
  EXPECT_EQ(at_b.size(), 13u);
}

// The first write to fail is the ledger follower's (a block arrives every
// second), not a channel's: the database refuses every later write, so the
// node is read-only from then on and /v1/info must say so before any tip
// finds out the hard way.
TEST_F(NodeDiskFaultTest, AFailedBlockWriteShowsTheNodeReadOnly) {
  ASSERT_NO_FATAL_FAILURE(Start(a_, &env_));
  ASSERT_TRUE(WaitFor([&] {
    return FromJson<v1::InfoResponse>(a_.Call("GET", "/v1/info").body).ledger_height() >= 1;
  }));
  env_.FailFromNow(FaultOp::kSync, FileKind::kLog);
  ASSERT_TRUE(WaitFor([&] {
    auto info = FromJson<v1::InfoResponse>(a_.Call("GET", "/v1/info").body);
    return info.read_only();
  })) << a_.Call("GET", "/v1/info").body;
  auto info = FromJson<v1::InfoResponse>(a_.Call("GET", "/v1/info").body);
  EXPECT_NE(info.read_only_reason().find("injected sync failure"), std::string::npos)
      << info.read_only_reason();
}

}  // namespace
}  // namespace tipd::node

namespace tipd::node {
namespace {

// GET /readyz (no token) reports the failed write: 503 with the storage
// check failing, while /healthz still answers 200.
TEST_F(NodeDiskFaultTest, ReadinessFailsItsStorageCheckOnceAWriteFailed) {
  ASSERT_NO_FATAL_FAILURE(Start(a_, &env_));
  const uint16_t rpc = a_.rpc;
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(rpc, "GET", "/readyz").status == 200; }))
      << HttpRequest(rpc, "GET", "/readyz").body;
  env_.FailFromNow(FaultOp::kSync, FileKind::kLog);
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(rpc, "GET", "/readyz").status == 503; }))
      << HttpRequest(rpc, "GET", "/readyz").body;
  auto ready = FromJson<v1::ReadinessResponse>(HttpRequest(rpc, "GET", "/readyz").body);
  EXPECT_FALSE(ready.ready());
  ASSERT_EQ(ready.checks_size(), 3);
  EXPECT_EQ(ready.checks(0).name(), "storage");
  EXPECT_FALSE(ready.checks(0).ok());
  // The reason stays in the log: no paths or errors in an unauthenticated answer.
  EXPECT_EQ(ready.checks(0).detail().find("injected"), std::string::npos);
  EXPECT_EQ(HttpRequest(rpc, "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace tipd::node
