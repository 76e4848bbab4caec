// The real `tipctl` binary against a real `tipd node` (and against nothing):
// config resolution (--datadir, env, flags), JSON and --human output, API
// errors (exit 1), usage errors (exit 2), an unreachable node (exit 3).
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

TEST(TipctlNoNodeTest, UsageErrorsAndAnUnreachableNode) {
  TempDir dir("tipctl");
  auto help = RunTipctl(dir.path(), {"--help"});
  EXPECT_EQ(help.exit_code, 0) << help;
  for (const char* cmd : {"getinfo", "balance", "peers", "connect", "open", "channels", "channel",
                          "deposit", "close", "tip", "tips", "transfer", "block", "events", "token",
                          "metrics", "TIPD_TOKEN", "Exit codes"}) {
    EXPECT_TRUE(Contains(help.out, cmd)) << cmd << "\n" << help;
  }
  auto sub_help = RunTipctl(dir.path(), {"tip", "--help"});
  EXPECT_EQ(sub_help.exit_code, 0) << sub_help;
  EXPECT_TRUE(Contains(sub_help.out, "--idempotency-key")) << sub_help;

  // Usage errors: exit 2, nothing on stdout.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"transfer", "abcd"},
           {"block", "notanumber"},
           {"token", "create", "--scope", "sudo"},
           {"tip", "5"},
           {"tip", "--channel", "aa", "--peer", "bb", "5"},
           {"connect", "no-at-sign"},
           {"--token", "a", "--token-file", "b", "getinfo"},
           {"--rpc", "https://127.0.0.1:8080", "--token", "t", "getinfo"}}) {
    auto r = RunTipctl(dir.path(), args);
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_TRUE(r.out.empty()) << r;
    EXPECT_FALSE(r.err.empty()) << r;
  }
  auto typo = RunTipctl(dir.path(), {"--rpc", "http://127.0.0.1:1", "getinf"});
  EXPECT_EQ(typo.exit_code, 2) << typo;
  EXPECT_TRUE(Contains(typo.err, "unknown command 'getinf' (did you mean 'getinfo'?)")) << typo;
  auto no_token = RunTipctl(dir.path(), {"getinfo"});
  EXPECT_EQ(no_token.exit_code, 2) << no_token;
  EXPECT_TRUE(Contains(no_token.err, "no API token")) << no_token;

  // Nobody listens: exit 3 with a message that says what to check. The URL
  // comes from <datadir>/rpc.url.
  const ClosedLoopbackPort closed;  // held unlistened for the whole test
  const uint16_t port = closed.port();
  auto datadir = dir.path() / "node";
  std::filesystem::create_directories(datadir);
  std::ofstream(datadir / "rpc.url") << "http://127.0.0.1:" << port << "\n";
  std::ofstream(datadir / "admin.token") << "tipd1_x\n";
  auto r = RunTipctl(dir.path(), {"--datadir", datadir.string(), "getinfo"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_EQ(r.err, "tipctl: cannot reach tipd at http://127.0.0.1:" + std::to_string(port) +
                       ": connection refused; is the node running? (GET /v1/info)\n")
      << r;
  r = RunTipctl(dir.path(), {"events"}, {{"TIPD_DATADIR", datadir.string()}});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "cannot reach tipd")) << r;
}

class TipctlTest : public NetworkFixture {};

TEST_F(TipctlTest, EveryLedgerAndAdminCommandAgainstARealNode) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  ASSERT_NE(StartNode("node", &accounts_[0].key), nullptr);
  const uint16_t rpc = RpcPort("node");
  const ClosedLoopbackPort closed;  // nobody listens there while the test runs
  const std::string datadir = NodeDir("node").string();
  const std::filesystem::path scratch = dir_.path();
  const std::vector<std::string> dd = {"--datadir", datadir};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), dd.begin(), dd.end());
    return args;
  };

  // getinfo through --datadir (rpc.url + admin.token): pretty JSON.
  auto info = RunTipctl(scratch, with({"getinfo"}));
  ASSERT_EQ(info.exit_code, 0) << info;
  EXPECT_TRUE(info.err.empty()) << info;
  EXPECT_TRUE(Contains(info.out, "{\n  \"node_id\": \"")) << info;
  const std::string node_id = accounts_[0].key.public_key().Hex();
  EXPECT_EQ(FromJson<v1::InfoResponse>(info.out).node_id(), node_id);
  EXPECT_EQ(FromJson<v1::InfoResponse>(info.out).chain_id(), "tipd-itest");

  // --human (also after the command): one line.
  auto human = RunTipctl(scratch, with({"getinfo", "--human"}));
  ASSERT_EQ(human.exit_code, 0) << human;
  EXPECT_TRUE(Contains(human.out, "node " + node_id + " on tipd-itest at height ")) << human;
  EXPECT_EQ(std::count(human.out.begin(), human.out.end(), '\n'), 1) << human;

  // balance through TIPD_DATADIR.
  auto balance = RunTipctl(scratch, {"balance"}, {{"TIPD_DATADIR", datadir}});
  ASSERT_EQ(balance.exit_code, 0) << balance;
  EXPECT_EQ(FromJson<v1::BalanceResponse>(balance.out).onchain(), 1'000'000u);

  // peers / connect (asynchronous: 202 with the peer).
  auto peers = RunTipctl(scratch, with({"peers"}));
  ASSERT_EQ(peers.exit_code, 0) << peers;
  EXPECT_TRUE(Contains(peers.out, "\"peers\"")) << peers;
  const std::string other = accounts_[1].key.public_key().Hex();
  const std::string addr = "127.0.0.1:" + std::to_string(closed.port());
  auto connect = RunTipctl(scratch, with({"connect", other + "@" + addr, "--persistent"}));
  ASSERT_EQ(connect.exit_code, 0) << connect;
  auto connected = FromJson<v1::ConnectPeerResponse>(connect.out);
  EXPECT_EQ(connected.peer().node_id(), other);
  EXPECT_EQ(connected.peer().address(), addr);
  EXPECT_TRUE(connected.peer().persistent());
  auto bad_peer = RunTipctl(scratch, with({"connect", other + "@nohost"}));
  EXPECT_EQ(bad_peer.exit_code, 1) << bad_peer;
  EXPECT_TRUE(Contains(bad_peer.err, "HTTP 400)")) << bad_peer;

  // token create, then use it via TIPD_TOKEN: env beats admin.token, and an
  // admin command answers 403 (exit 1) with the API's message.
  auto created = RunTipctl(scratch, with({"token", "create", "--scope", "read", "--ttl", "1h"}));
  ASSERT_EQ(created.exit_code, 0) << created;
  auto token = FromJson<v1::CreateTokenResponse>(created.out);
  ASSERT_EQ(token.scopes_size(), 1);
  EXPECT_EQ(token.scopes(0), "read");
  EXPECT_GT(token.expires_at_ms(), 0u);
  const std::string to = HexEncode(accounts_[1].key.XOnly());
  std::map<std::string, std::string> reader_env = {{"TIPD_TOKEN", token.token()}};
  auto read_ok = RunTipctl(scratch, with({"balance"}), reader_env);
  EXPECT_EQ(read_ok.exit_code, 0) << read_ok;
  auto denied = RunTipctl(scratch, with({"transfer", to, "5"}), reader_env);
  EXPECT_EQ(denied.exit_code, 1) << denied;
  EXPECT_TRUE(denied.out.empty()) << denied;
  EXPECT_TRUE(Contains(denied.err, "tipctl: ")) << denied;
  EXPECT_TRUE(Contains(denied.err, "(permission_denied, HTTP 403)")) << denied;
  // A --token flag beats TIPD_TOKEN.
  auto admin_token = ReadAll(NodeDir("node") / "admin.token");
  while (!admin_token.empty() && admin_token.back() == '\n') admin_token.pop_back();
  auto flag_wins = RunTipctl(scratch,
                             with({"--token", admin_token, "token", "create", "--scope", "tip,read",
                                   "--daily-cap", "100", "--human"}),
                             reader_env);
  ASSERT_EQ(flag_wins.exit_code, 0) << flag_wins;
  EXPECT_TRUE(Contains(flag_wins.out, "tipd1_")) << flag_wins;
  EXPECT_TRUE(Contains(flag_wins.out, "daily cap 100")) << flag_wins;
  // --rpc beats TIPD_RPC, which beats rpc.url.
  std::map<std::string, std::string> bad_rpc = {
      {"TIPD_RPC", "http://127.0.0.1:" + std::to_string(closed.port())}};
  EXPECT_EQ(RunTipctl(scratch, with({"getinfo"}), bad_rpc).exit_code, 3);
  auto rpc_flag = RunTipctl(
      scratch, with({"--rpc", "http://127.0.0.1:" + std::to_string(rpc), "getinfo"}), bad_rpc);
  EXPECT_EQ(rpc_flag.exit_code, 0) << rpc_flag;

  // transfer: idempotent with a key.
  auto first = RunTipctl(scratch, with({"transfer", to, "700", "--idempotency-key", "cli-1"}));
  ASSERT_EQ(first.exit_code, 0) << first;
  auto first_msg = FromJson<v1::TransferResponse>(first.out);
  ASSERT_GT(first_msg.height(), 0u) << first;
  auto again = RunTipctl(scratch, with({"transfer", to, "700", "--idempotency-key", "cli-1"}));
  ASSERT_EQ(again.exit_code, 0) << again;
  EXPECT_EQ(FromJson<v1::TransferResponse>(again.out).tx_id(), first_msg.tx_id());
  auto reused = RunTipctl(scratch, with({"transfer", to, "701", "--idempotency-key", "cli-1"}));
  EXPECT_EQ(reused.exit_code, 1) << reused;
  EXPECT_TRUE(Contains(reused.err, "HTTP 409)")) << reused;
  auto after = RunTipctl(scratch, with({"balance"}));
  ASSERT_EQ(after.exit_code, 0) << after;
  EXPECT_EQ(FromJson<v1::BalanceResponse>(after.out).onchain(), 1'000'000u - 701);

  // block: JSON, --human, and past the tip (404, exit 1).
  const std::string height = std::to_string(first_msg.height());
  auto block = RunTipctl(scratch, with({"block", height}));
  ASSERT_EQ(block.exit_code, 0) << block;
  EXPECT_EQ(FromJson<v1::BlockResponse>(block.out).block_hash().size(), 64u) << block;
  auto block_human = RunTipctl(scratch, with({"--human", "block", height}));
  ASSERT_EQ(block_human.exit_code, 0) << block_human;
  EXPECT_TRUE(Contains(block_human.out, "block " + height + " ")) << block_human;
  auto missing = RunTipctl(scratch, with({"block", "999999"}));
  EXPECT_EQ(missing.exit_code, 1) << missing;
  EXPECT_TRUE(Contains(missing.err, "HTTP 404)")) << missing;

  // metrics: raw text.
  auto metrics = RunTipctl(scratch, with({"metrics"}));
  ASSERT_EQ(metrics.exit_code, 0) << metrics;
  EXPECT_TRUE(Contains(metrics.out, "# TYPE tipd_ledger_height gauge")) << metrics;
}

}  // namespace
}  // namespace tipd::testing
