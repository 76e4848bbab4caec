// `tipd devnet` as a user runs it: a real child process that starts a ledger
// and nodes, writes devnet.json, streams tips, stops on SIGTERM or after
// --duration, and brings the same network back when run again.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "api/auth.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"
#include "tipd/api.pb.h"
#include "tools/devnet.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

template <typename M>
M FromJson(const std::string& json) {
  M m;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(json, &m, opts);
  EXPECT_TRUE(st.ok()) << json;
  return m;
}

bool PidGone(pid_t pid) { return pid > 0 && ::kill(pid, 0) == -1 && errno == ESRCH; }

tools::DevnetManifest ReadManifest(const fs::path& dir) {
  std::ifstream in(dir / "devnet.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto m = tools::ParseManifest(text);
  EXPECT_TRUE(m.ok()) << m.status().ToString() << "\n" << text;
  return m.ok() ? *m : tools::DevnetManifest{};
}

std::string Token(const tools::DevnetNode& n) {
  auto t = api::ReadTokenFile(n.TokenFile());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : "";
}

// "devnet: balances: node-0=1000123, node-1=..." -> name -> amount.
std::map<std::string, uint64_t> ParseBalances(const std::string& output) {
  std::map<std::string, uint64_t> out;
  size_t pos = output.find("devnet: balances: ");
  if (pos == std::string::npos) return out;
  std::string line = output.substr(pos, output.find('\n', pos) - pos);
  std::regex item("(node-[0-9]+)=([0-9]+)");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), item); it != std::sregex_iterator();
       ++it) {
    out[(*it)[1]] = std::stoull((*it)[2]);
  }
  return out;
}

class DevnetTest : public ::testing::Test {
 protected:
  std::unique_ptr<Process> Start(std::vector<std::string> args, const std::string& log_name) {
    args.insert(args.begin(), {TIPD_BINARY, "devnet", "--dir", dir_.string()});
    std::string error;
    auto p = Process::Start(args, tmp_.path() / log_name, &error);
    EXPECT_NE(p, nullptr) << error;
    return p;
  }
  // Waits for "devnet up"; on failure prints the devnet's output.
  bool WaitUp(Process& p) {
    bool up = p.WaitForOutput("devnet up:", 180s).has_value();
    EXPECT_TRUE(up) << p.Output();
    return up;
  }
  // Every process in the manifest answers (nodes: GET /v1/info with the
  // token from the token file) and is running.
  void ExpectUp(const tools::DevnetManifest& m) {
    EXPECT_EQ(m.chain_id, "tipd-devnet");
    EXPECT_GT(m.ledger.port, 0);
    EXPECT_EQ(m.ledger.sequencer_id.size(), 66u);
    EXPECT_EQ(::kill(m.ledger.pid, 0), 0) << "ledger pid " << m.ledger.pid;
    std::set<uint16_t> ports{m.ledger.port};
    for (const tools::DevnetNode& n : m.nodes) {
      EXPECT_EQ(n.node_id.size(), 66u);
      EXPECT_TRUE(ports.insert(n.p2p_port).second) << "port reused: " << n.p2p_port;
      EXPECT_TRUE(ports.insert(n.rpc_port).second) << "port reused: " << n.rpc_port;
      EXPECT_EQ(::kill(n.pid, 0), 0) << n.name << " pid " << n.pid;
      EXPECT_EQ(n.RpcUrl(), "http://127.0.0.1:" + std::to_string(n.rpc_port));
      auto info = HttpRequest(n.rpc_port, "GET", "/v1/info", Token(n));
      ASSERT_EQ(info.status, 200) << n.name << ": " << info.body;
      EXPECT_EQ(FromJson<v1::InfoResponse>(info.body).node_id(), n.node_id);
      EXPECT_EQ(HttpRequest(n.rpc_port, "GET", "/v1/info").status, 401);
      // The dashboard page needs no token (it asks for one).
      auto page = HttpRequest(n.rpc_port, "GET", "/");
      EXPECT_EQ(page.status, 200) << n.name;
      EXPECT_NE(page.body.find("<title>tipd dashboard</title>"), std::string::npos) << n.name;
    }
  }
  void ExpectAllGone(const tools::DevnetManifest& m, pid_t devnet_pid) {
    EXPECT_TRUE(PidGone(m.ledger.pid)) << "ledger " << m.ledger.pid;
    for (const tools::DevnetNode& n : m.nodes)
      EXPECT_TRUE(PidGone(n.pid)) << n.name << " " << n.pid;
    EXPECT_EQ(m.devnet_pid, devnet_pid);
  }

  TempDir tmp_{"tipd-devnet"};
  fs::path dir_ = tmp_.path() / "net";
};

// Needs only the node API that exists without channels: up, devnet.json,
// tokens, stop on SIGTERM, restart with the same identities and ports.
TEST_F(DevnetTest, UpStopAndRestartWithTheSameNetwork) {
  const size_t n = 2;
  auto first = Start({"--nodes", std::to_string(n)}, "devnet-1.log");
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(WaitUp(*first));
  tools::DevnetManifest m1 = ReadManifest(dir_);
  ASSERT_EQ(m1.nodes.size(), n);
  ExpectUp(m1);
  EXPECT_EQ(m1.devnet_pid, first->pid());
  for (const auto& n : m1.nodes) {
    EXPECT_TRUE(fs::exists(n.datadir / "genesis.json")) << n.name;
    EXPECT_TRUE(fs::exists(n.datadir / "tipd.log")) << n.name;
  }
  // What to run next names the token file and the API.
  std::string out = first->Output();
  EXPECT_NE(out.find("tipctl --datadir"), std::string::npos) << out;
  EXPECT_NE(out.find("curl -s -H \"Authorization: Bearer $(cat"), std::string::npos) << out;
  EXPECT_NE(out.find(m1.nodes[0].RpcUrl()), std::string::npos) << out;

  first->Signal(SIGTERM);
  auto code = first->Wait(60s);
  ASSERT_TRUE(code.has_value()) << first->Output();
  EXPECT_EQ(*code, 0) << first->Output();
  ExpectAllGone(m1, first->pid());

  // Again on the same directory, without --nodes: the same network.
  auto second = Start({}, "devnet-2.log");
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitUp(*second));
  EXPECT_NE(second->Output().find("restarting the devnet of " + std::to_string(n) + " node(s)"),
            std::string::npos);
  tools::DevnetManifest m2 = ReadManifest(dir_);
  ASSERT_EQ(m2.nodes.size(), n);
  ExpectUp(m2);
  EXPECT_EQ(m2.ledger.sequencer_id, m1.ledger.sequencer_id);
  EXPECT_EQ(m2.ledger.port, m1.ledger.port);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(m2.nodes[i].node_id, m1.nodes[i].node_id);
    EXPECT_EQ(m2.nodes[i].rpc_port, m1.nodes[i].rpc_port);
    EXPECT_EQ(m2.nodes[i].p2p_port, m1.nodes[i].p2p_port);
  }
  // A different node count for a recorded devnet is refused.
  auto wrong = Start({"--nodes", std::to_string(n + 1), "--duration", "1s"}, "devnet-3.log");
  ASSERT_NE(wrong, nullptr);
  EXPECT_EQ(wrong->Wait(60s), 2) << wrong->Output();
  EXPECT_NE(wrong->Output().find("run with --nodes " + std::to_string(n)), std::string::npos)
      << wrong->Output();

  // A second devnet on a directory in use is refused.
  auto again = Start({"--duration", "1s"}, "devnet-4.log");
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->Wait(60s), 1) << again->Output();
  EXPECT_NE(again->Output().find("is in use by tipd devnet pid " + std::to_string(second->pid())),
            std::string::npos)
      << again->Output();

  second->Signal(SIGINT);
  EXPECT_EQ(second->Wait(60s), 0) << second->Output();
  ExpectAllGone(m2, second->pid());
}

// Needs the channel and tip endpoints: channels in a ring, a tip stream,
// the summary, and the same channels and balances after a restart.
TEST_F(DevnetTest, StreamsTipsAndComesBackWithChannelsAndBalances) {
  auto first = Start({"--nodes", "3", "--stream", "--duration", "6s"}, "devnet-1.log");
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(WaitUp(*first));
  ASSERT_EQ(first->Output().find("no channel API"), std::string::npos)
      << "this tipd has no channel endpoints yet";
  tools::DevnetManifest m1 = ReadManifest(dir_);
  ASSERT_EQ(m1.nodes.size(), 3u);
  ExpectUp(m1);
  ASSERT_EQ(m1.channels.size(), 3u);  // a ring
  for (const auto& ch : m1.channels) {
    EXPECT_FALSE(ch.channel_id.empty());
    EXPECT_EQ(ch.peer, (ch.opener + 1) % 3);
  }
  auto code = first->Wait(120s);
  ASSERT_TRUE(code.has_value()) << first->Output();
  EXPECT_EQ(*code, 0) << first->Output();
  std::string out = first->Output();
  // --stream names each node's dashboard.
  for (const tools::DevnetNode& n : m1.nodes) {
    EXPECT_NE(out.find(n.name + "  dashboard " + n.RpcUrl() + "/  token "), std::string::npos)
        << out;
  }
  std::smatch summary;
  ASSERT_TRUE(std::regex_search(out, summary, std::regex("devnet: summary: ([0-9]+) tips sent")))
      << out;
  EXPECT_GT(std::stoull(summary[1]), 0u) << out;
  std::map<std::string, uint64_t> balances = ParseBalances(out);
  ASSERT_EQ(balances.size(), 3u) << out;
  uint64_t total = 0;
  for (const auto& [name, amount] : balances) total += amount;
  EXPECT_EQ(total, 3 * 2 * 1'000'000u) << out;  // tips move value, never create it
  ExpectAllGone(m1, first->pid());

  auto second = Start({}, "devnet-2.log");
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitUp(*second));
  tools::DevnetManifest m2 = ReadManifest(dir_);
  ASSERT_EQ(m2.channels.size(), 3u);
  ExpectUp(m2);
  std::string out2 = second->Output();
  EXPECT_EQ(out2.find("opened channel"), std::string::npos) << out2;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(m2.nodes[i].node_id, m1.nodes[i].node_id);
    EXPECT_EQ(m2.channels[i].channel_id, m1.channels[i].channel_id);
  }
  for (const tools::DevnetNode& n : m2.nodes) {
    std::string token = Token(n);
    auto bal = HttpRequest(n.rpc_port, "GET", "/v1/balance", token);
    ASSERT_EQ(bal.status, 200) << bal.body;
    EXPECT_EQ(FromJson<v1::BalanceResponse>(bal.body).channels_local(), balances[n.name]) << n.name;
    auto channels = HttpRequest(n.rpc_port, "GET", "/v1/channels", token);
    ASSERT_EQ(channels.status, 200) << channels.body;
    auto list = FromJson<v1::ListChannelsResponse>(channels.body);
    EXPECT_EQ(list.channels_size(), 2) << channels.body;  // two ring neighbours
    for (const auto& c : list.channels()) EXPECT_EQ(c.state(), "open") << channels.body;
  }
  // The streamed tips are in the nodes' history, with their messages.
  auto tips = HttpRequest(m2.nodes[0].rpc_port, "GET", "/v1/tips?limit=5", Token(m2.nodes[0]));
  ASSERT_EQ(tips.status, 200) << tips.body;
  auto tip_list = FromJson<v1::ListTipsResponse>(tips.body);
  ASSERT_GT(tip_list.tips_size(), 0) << tips.body;
  EXPECT_FALSE(tip_list.tips(0).tip().message().empty()) << tips.body;
  std::map<std::string, std::string> metadata;
  for (const auto& e : tip_list.tips(0).tip().metadata()) metadata[e.key()] = e.value();
  EXPECT_EQ(metadata["app_name"], "tipd-devnet") << tips.body;
  EXPECT_FALSE(metadata["sender_name"].empty()) << tips.body;
  EXPECT_EQ(metadata["feed"], "devnet-radio") << tips.body;

  second->Signal(SIGTERM);
  EXPECT_EQ(second->Wait(60s), 0) << second->Output();
  ExpectAllGone(m2, second->pid());
}

TEST(DevnetManifestTest, RoundTripsAndNamesBadFields) {
  tools::DevnetManifest m;
  m.chain_id = "tipd-devnet";
  m.devnet_pid = 42;
  m.ledger = {"/d/ledger", std::string(66, 'a'), 9736, 43};
  m.nodes.push_back({"node-0", std::string(66, 'b'), "/d/node-0", 9737, 9738, 44});
  m.nodes.push_back({"node-1", std::string(66, 'c'), "/d/node-1", 9739, 9740, 45});
  m.channels.push_back({"ff00", 0, 1, 1000, 2000});
  std::string json = tools::ManifestToJson(m);
  EXPECT_NE(json.find("\"token_file\": \"/d/node-0/admin.token\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rpc_url\": \"http://127.0.0.1:9738\""), std::string::npos) << json;
  auto back = tools::ParseManifest(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ledger.LedgerArg(), "127.0.0.1:9736@" + std::string(66, 'a'));
  EXPECT_EQ(back->nodes[1].rpc_port, 9740);
  EXPECT_EQ(back->nodes[1].pid, 45);
  EXPECT_EQ(back->channels[0].channel_id, "ff00");
  EXPECT_EQ(back->channels[0].push_deposit, 2000u);

  std::string bad = std::regex_replace(json, std::regex("\"rpc_port\": 9740"), "\"rpc_port\": -1");
  auto err = tools::ParseManifest(bad);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("nodes[1].rpc_port"), std::string::npos)
      << err.status().message();
  EXPECT_FALSE(tools::ParseManifest("{").ok());
}

TEST(LatencyHistogramTest, PercentilesWithinTwoPercent) {
  tools::LatencyHistogram h;
  EXPECT_EQ(h.Percentile(50), 0u);
  for (uint64_t us = 1; us <= 10'000; ++us) h.Record(us);
  EXPECT_EQ(h.count(), 10'000u);
  auto near = [](uint64_t got, double want) { return std::abs(got - want) <= want * 0.02 + 1; };
  EXPECT_TRUE(near(h.Percentile(50), 5000)) << h.Percentile(50);
  EXPECT_TRUE(near(h.Percentile(99), 9900)) << h.Percentile(99);
  EXPECT_TRUE(near(h.Percentile(100), 10'000)) << h.Percentile(100);
  tools::LatencyHistogram other;
  other.Record(1'000'000);
  h.Merge(other);
  EXPECT_TRUE(near(h.Percentile(100), 1'000'000)) << h.Percentile(100);
  h.Clear();
  EXPECT_EQ(h.count(), 0u);
}

}  // namespace
}  // namespace tipd::testing
