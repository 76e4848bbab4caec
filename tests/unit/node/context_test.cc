// NodeContext in one process: the whole node as `tipd node` builds it (real
// LevelDB, p2p host, follower, committer, events, channel manager, tokens,
// HTTP API on loopback), started and stopped inside a test.
#include "node/context.h"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <thread>

#include "api/auth.h"
#include "crypto/crypto.h"
#include "ledger/genesis.h"
#include "node/channel_manager.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"
#include "tipd/api.pb.h"
#include "util/clock.h"

#include <google/protobuf/util/json_util.h>

namespace tipd::node {
namespace {

using namespace std::chrono_literals;

class NodeContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_key_ = crypto::KeyPair::Generate(crypto::SystemRng());
    sequencer_ = crypto::KeyPair::Generate(crypto::SystemRng());
    ASSERT_TRUE(crypto::SaveKeyFile(dir_.path() / "node.key", node_key_.secret()).ok());
    v1::GenesisParams g = ledger::MakeDevnetGenesis("tipd-context-test", sequencer_.XOnly(),
                                                    {{node_key_.XOnly(), 10'000}}, clock_.NowMs());
    ASSERT_TRUE(ledger::WriteGenesisFile(dir_.path() / "genesis.json", g).ok());
    config_.datadir = dir_.path();
    config_.genesis = dir_.path() / "genesis.json";
    config_.listen = {"127.0.0.1", 0};
    config_.rpc_listen = {"127.0.0.1", 0};
    // No sequencer runs at this address: the follower keeps redialling and
    // every submission's outcome is unknown.
    config_.ledger.address = {"127.0.0.1", no_ledger_.port()};
    config_.ledger.sequencer_xonly = sequencer_.XOnly();
    config_.ledger.sequencer_pubkey = sequencer_.public_key();
  }

  // Runs the node's io_context on a thread until the test ends.
  void Run(NodeContext& node) {
    thread_ = std::thread([&node] { node.io().run(); });
  }
  void StopAndJoin(NodeContext& node) {
    boost::asio::post(node.io(), [&node] { node.Stop(); });
    thread_.join();
  }

  testing::TempDir dir_{"tipd-context"};
  testing::ClosedLoopbackPort no_ledger_;  // refused while the test runs
  SystemClock clock_;
  crypto::KeyPair node_key_ = crypto::KeyPair::Generate(crypto::SystemRng());
  crypto::KeyPair sequencer_ = crypto::KeyPair::Generate(crypto::SystemRng());
  NodeConfig config_;
  std::thread thread_;
};

TEST_F(NodeContextTest, StartsServesTheApiAndStopsInProcess) {
  auto node = NodeContext::Create(config_, clock_);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  EXPECT_NE((*node)->rpc_port(), 0);
  EXPECT_NE((*node)->p2p_port(), 0);
  EXPECT_EQ((*node)->db().write_buffer_bytes(), size_t{64} << 20);  // db-write-buffer's default
  EXPECT_EQ((*node)->key().public_key(), node_key_.public_key());
  Run(**node);
  auto token = api::ReadTokenFile(dir_.path() / "admin.token");
  ASSERT_TRUE(token.ok());
  auto info = testing::HttpRequest((*node)->rpc_port(), "GET", "/v1/info", *token);
  ASSERT_EQ(info.status, 200) << info.body;
  v1::InfoResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(info.body, &parsed).ok()) << info.body;
  EXPECT_EQ(parsed.node_id(), node_key_.public_key().Hex());
  EXPECT_EQ(parsed.chain_id(), "tipd-context-test");
  EXPECT_FALSE(parsed.read_only());
  EXPECT_EQ(parsed.fee_reserve(), 0u);
  // tipctl finds the API through rpc.url.
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "rpc.url"));
  StopAndJoin(**node);
  node->reset();
  // The same data dir starts again (everything was closed in order), with
  // the database opened as configured.
  config_.db_write_buffer_mib = 4;
  auto again = NodeContext::Create(config_, clock_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->db().write_buffer_bytes(), size_t{4} << 20);
}

// Issue 9, defect 6 (transfers): a transfer whose ledger answer never came
// kept no record, so a retry could pay twice once the ledger was back. Now
// the key keeps its record: the retry answers with the same transaction.
TEST_F(NodeContextTest, ATransferWithAnUnknownOutcomeKeepsItsKey) {
  auto node = NodeContext::Create(config_, clock_);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  Run(**node);
  auto token = api::ReadTokenFile(dir_.path() / "admin.token");
  ASSERT_TRUE(token.ok());
  const std::string to = HexEncode(crypto::KeyPair::Generate(crypto::SystemRng()).XOnly());
  const std::string body = R"({"to":")" + to + R"(","amount":"700","idempotency_key":"pay-once"})";
  auto first =
      testing::HttpRequest((*node)->rpc_port(), "POST", "/v1/ledger/transfer", *token, body);
  EXPECT_EQ(first.status, 503) << first.body;
  EXPECT_NE(first.body.find("LEDGER_UNAVAILABLE"), std::string::npos) << first.body;
  auto retry =
      testing::HttpRequest((*node)->rpc_port(), "POST", "/v1/ledger/transfer", *token, body);
  ASSERT_EQ(retry.status, 202) << retry.body;  // the first transfer, still pending
  v1::TransferResponse replay;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(retry.body, &replay).ok());
  EXPECT_EQ(replay.nonce(), 0u);  // the first transaction's nonce: no second one was signed
  EXPECT_FALSE(replay.tx_id().empty());
  // Another token's key space is its own.
  api::TokenAuthority authority =
      api::TokenAuthority::LoadOrCreate(dir_.path(), crypto::SystemRng()).value();
  std::string other = authority.Issue(api::TokenAuthority::NewClaims(
      static_cast<uint32_t>(api::Scope::kAdmin), 0, 0, crypto::SystemRng()));
  auto theirs =
      testing::HttpRequest((*node)->rpc_port(), "POST", "/v1/ledger/transfer", other, body);
  EXPECT_EQ(theirs.status, 503) << theirs.body;  // a new request, not the first one's answer
  StopAndJoin(**node);
}

}  // namespace
}  // namespace tipd::node
