// The node's HTTP/JSON API on a real `tipd node` (issue 5 groundwork): tokens
// and scopes, info, balance, an idempotent ledger transfer, blocks, metrics.
#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "api/auth.h"
#include "tests/integration/channel_fixture.h"
#include "tests/support/http_client.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

class NodeApiTest : public NetworkFixture {};

// The names of a process's threads (/proc/PID/task/*/comm).
std::multiset<std::string> ThreadNames(pid_t pid) {
  std::multiset<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::ifstream in(it->path() / "comm");
    std::string name;
    if (std::getline(in, name)) names.insert(name);
  }
  return names;
}

// `top -H` tells the node's threads apart (util/thread_name.h).
TEST_F(NodeApiTest, TheNodesThreadsAreNamed) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Process* node = StartNode("node", &accounts_[0].key, 0, 0, {"--rpc-threads", "2"});
  ASSERT_NE(node, nullptr);
  const auto names = ThreadNames(node->pid());
  EXPECT_EQ(names.count("tipd"), 1u) << "the io thread keeps the process's name";
  EXPECT_EQ(names.count("tipd-commit"), 1u);
  EXPECT_EQ(names.count("tipd-work"), 2u) << "every pool thread is named";
}

// The tipd binary runs on jemalloc unless built with sanitizers (CMake
// TIPD_JEMALLOC; docs/performance.md "The allocator"), and says which
// allocator and write buffer it runs with in its log.
TEST_F(NodeApiTest, TheNodeRunsOnTheAllocatorItWasBuiltWith) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Process* node = StartNode("node", &accounts_[0].key, 0, 0, {"--db-write-buffer", "8"});
  ASSERT_NE(node, nullptr);
  std::ifstream maps("/proc/" + std::to_string(node->pid()) + "/maps");
  const std::string mapped((std::istreambuf_iterator<char>(maps)),
                           std::istreambuf_iterator<char>());
  std::ifstream log(dir_.path() / "node.log");
  const std::string logged((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
#if defined(TIPD_EXPECT_JEMALLOC)
  EXPECT_NE(mapped.find("libjemalloc"), std::string::npos);
  EXPECT_NE(logged.find("memory allocator: jemalloc 5."), std::string::npos) << logged;
#else
  EXPECT_EQ(mapped.find("libjemalloc"), std::string::npos);
  EXPECT_NE(logged.find("memory allocator: glibc malloc"), std::string::npos) << logged;
#endif
  EXPECT_NE(logged.find("database write buffer 8 MiB"), std::string::npos) << logged;
}

TEST_F(NodeApiTest, TokensScopesInfoAndAnIdempotentTransfer) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  // accounts_[0] is funded by the genesis: it becomes the node's key.
  ASSERT_NE(StartNode("node", &accounts_[0].key), nullptr);
  const uint16_t rpc = RpcPort("node");
  auto admin = api::ReadTokenFile(NodeDir("node") / "admin.token");
  ASSERT_TRUE(admin.ok()) << admin.status().ToString();

  // Auth: no token 401, garbage 401, admin 200.
  EXPECT_EQ(HttpRequest(rpc, "GET", "/v1/info").status, 401);
  EXPECT_EQ(HttpRequest(rpc, "GET", "/v1/info", "tipd1_00").status, 401);
  auto info = HttpRequest(rpc, "GET", "/v1/info", *admin);
  ASSERT_EQ(info.status, 200) << info.body;
  auto info_msg = FromJson<v1::InfoResponse>(info.body);
  EXPECT_EQ(info_msg.node_id(), accounts_[0].key.public_key().Hex());
  EXPECT_EQ(info_msg.chain_id(), "tipd-itest");

  // A read-only token can read but not transfer or mint tokens.
  auto created = HttpRequest(rpc, "POST", "/v1/tokens", *admin, R"({"scopes":["read"]})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string reader = FromJson<v1::CreateTokenResponse>(created.body).token();
  EXPECT_EQ(HttpRequest(rpc, "GET", "/v1/balance", reader).status, 200);
  std::string to = HexEncode(accounts_[1].key.XOnly());
  std::string transfer = R"({"to":")" + to + R"(","amount":"700","idempotency_key":"pay-1"})";
  EXPECT_EQ(HttpRequest(rpc, "POST", "/v1/ledger/transfer", reader, transfer).status, 403);
  EXPECT_EQ(HttpRequest(rpc, "POST", "/v1/tokens", reader, R"({"scopes":["read"]})").status, 403);
  auto bad = HttpRequest(rpc, "POST", "/v1/ledger/transfer", *admin, R"({"to":"zz","amount":"1"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("INVALID_ACCOUNT"), std::string::npos) << bad.body;

  // The transfer answers once included; the retry returns the same answer.
  auto first = HttpRequest(rpc, "POST", "/v1/ledger/transfer", *admin, transfer);
  ASSERT_EQ(first.status, 200) << first.body;
  auto first_msg = FromJson<v1::TransferResponse>(first.body);
  ASSERT_GT(first_msg.height(), 0u);
  auto again = HttpRequest(rpc, "POST", "/v1/ledger/transfer", *admin, transfer);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(FromJson<v1::TransferResponse>(again.body).tx_id(), first_msg.tx_id());
  std::string other = R"({"to":")" + to + R"(","amount":"701","idempotency_key":"pay-1"})";
  EXPECT_EQ(HttpRequest(rpc, "POST", "/v1/ledger/transfer", *admin, other).status, 409);

  // Paid exactly once: 1,000,000 - 700 - fee 1.
  auto balance = HttpRequest(rpc, "GET", "/v1/balance", reader);
  ASSERT_EQ(balance.status, 200);
  EXPECT_EQ(FromJson<v1::BalanceResponse>(balance.body).onchain(), 1'000'000u - 701);

  auto block =
      HttpRequest(rpc, "GET", "/v1/ledger/blocks/" + std::to_string(first_msg.height()), reader);
  ASSERT_EQ(block.status, 200) << block.body;
  auto block_msg = FromJson<v1::BlockResponse>(block.body);
  bool found = false;
  for (const auto& tx : block_msg.block().transactions()) {
    found |= tx.has_transfer() && tx.transfer().amount() == 700;
  }
  EXPECT_TRUE(found) << block.body;
  EXPECT_EQ(block_msg.block_hash().size(), 64u);
  EXPECT_EQ(HttpRequest(rpc, "GET", "/v1/ledger/blocks/999999", reader).status, 404);

  auto metrics = HttpRequest(rpc, "GET", "/metrics", reader);
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("# TYPE tipd_ledger_height gauge"), std::string::npos);
}

}  // namespace
}  // namespace tipd::testing
