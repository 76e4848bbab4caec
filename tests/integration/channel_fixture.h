// Shared fixture of the channel and tip API tests: real `tipd node`
// processes with admin tokens, connected over p2p, with channels opened
// through the API, and small helpers to call and wait on them.
#pragma once

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "tests/integration/harness.h"
#include "tests/support/http_client.h"
#include "tipd/api.pb.h"

namespace tipd::testing {

// A JSON answer parsed into its API message (a parse failure fails the test).
template <typename M>
M FromJson(const std::string& json) {
  M m;
  auto st = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(st.ok()) << json;
  return m;
}

inline bool Contains(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

// One running node as the tests address it.
struct Node {
  std::string name;
  uint16_t rpc = 0;
  std::string token;  // admin
  crypto::PublicKey id;
  const crypto::KeyPair* key = nullptr;
};

class ChannelFixture : public NetworkFixture {
 protected:
  // Starts node `name` with the funded key accounts_[account].
  Node Up(const std::string& name, int account, const std::vector<std::string>& extra = {}) {
    Node n;
    n.name = name;
    n.key = &accounts_[account].key;
    n.id = n.key->public_key();
    // Any free ports; the fixture reads the bound ones from the node's log.
    EXPECT_NE(StartNode(name, n.key, 0, 0, extra), nullptr);
    n.rpc = rpc_ports_.count(name) ? RpcPort(name) : 0;
    auto token = api::ReadTokenFile(NodeDir(name) / "admin.token");
    EXPECT_TRUE(token.ok());
    n.token = token.ok() ? *token : "";
    return n;
  }

  // A ledger sealing every `block_interval_ms` (or as `ledger_flags` say,
  // e.g. {kSealOnDemand, kSealOnSubmit}) and nodes "a" and "b" (accounts 0
  // and 1), connected.
  void TwoConnectedNodes(uint64_t block_interval_ms, Node* a, Node* b,
                         const std::vector<std::string>& ledger_flags = {}) {
    InitLedger(block_interval_ms);
    StartLedger(ledger_flags);
    *a = Up("a", 0);
    *b = Up("b", 1);
    Connect(*a, *b);
  }

  // Starts a stopped node again on the same ports and data dir.
  void Restart(Node& n, const std::vector<std::string>& extra = {}) {
    ASSERT_NE(StartNode(n.name, n.key, n.rpc, 0, extra), nullptr);
  }

  void Kill(const Node& n, int signo) {
    Process* p = nodes_.at(n.name).get();
    p->Signal(signo);
    ASSERT_TRUE(p->Wait(std::chrono::seconds(20)).has_value());
  }

  HttpResult Call(const Node& n, const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return HttpRequest(n.rpc, method, path, n.token, body);
  }
  HttpResult CallAs(const Node& n, const std::string& token, const std::string& method,
                    const std::string& path, const std::string& body = "") {
    return HttpRequest(n.rpc, method, path, token, body);
  }

  // POST /v1/tokens with the admin token.
  std::string Token(const Node& n, const std::string& scopes_json, uint64_t daily_cap = 0) {
    auto r = Call(n, "POST", "/v1/tokens",
                  R"({"scopes":)" + scopes_json + R"(,"daily_spend_cap":")" +
                      std::to_string(daily_cap) + R"("})");
    EXPECT_EQ(r.status, 201) << r.body;
    return FromJson<v1::CreateTokenResponse>(r.body).token();
  }

  // A persistent connection from `from` to `to`, waited for.
  void Connect(const Node& from, const Node& to) {
    auto r = Call(from, "POST", "/v1/peers",
                  R"({"node_id":")" + to.id.Hex() + R"(","address":"127.0.0.1:)" +
                      std::to_string(P2pPort(to.name)) + R"(","persistent":true})");
    ASSERT_EQ(r.status, 202) << r.body;
    ASSERT_TRUE(WaitFor([&] {
      auto peers = Call(from, "GET", "/v1/peers");
      return peers.body.find(to.id.Hex()) != std::string::npos;
    }));
  }

  // With a ledger started with {kSealOnDemand, kSealOnSubmit}: ends `ch`'s
  // settle window by sealing the blocks left in it (as `c` follows them),
  // then seals one block at a time until the channel is settled (a
  // watcher's Settle is sealed as it arrives). False if `ch` is not closing
  // on the ledger or is not settled within `extra_blocks` after the window.
  bool EndWindowAndSettle(TestClient& c, const std::string& ch, int extra_blocks = 10) {
    auto id = HexDecodeFixed<32>(ch);
    if (!id.ok()) return false;
    const ledger::Channel* onchain = c.chain().state().FindChannel(*id);
    if (onchain == nullptr || onchain->phase != ledger::ChannelPhase::kClosing) return false;
    const uint64_t window_end = onchain->WindowEnd();
    if (c.chain().height() < window_end) {
      const uint64_t h = SealBlocks(static_cast<int>(window_end - c.chain().height()));
      if (h < window_end || !c.WaitHeight(h)) return false;
    }
    return SealUntil(
        c,
        [&] {
          const ledger::Channel* p = c.chain().state().FindChannel(*id);
          return p != nullptr && p->phase == ledger::ChannelPhase::kSettled;
        },
        extra_blocks);
  }

  template <typename Pred>
  bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  v1::ChannelApi Channel(const Node& n, const std::string& ch) {
    auto r = Call(n, "GET", "/v1/channels/" + ch);
    EXPECT_EQ(r.status, 200) << r.body;
    return FromJson<v1::GetChannelResponse>(r.body).channel();
  }

  bool WaitState(const Node& n, const std::string& ch, const std::string& state,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return WaitFor([&] { return Channel(n, ch).state() == state; }, timeout);
  }

  static std::string OpenBody(const Node& b, uint64_t da, uint64_t db,
                              uint64_t settle_timeout = 0) {
    return R"({"peer_node_id":")" + b.id.Hex() + R"(","deposit":")" + std::to_string(da) +
           R"(","push_deposit":")" + std::to_string(db) + R"(","settle_timeout":")" +
           std::to_string(settle_timeout) + R"("})";
  }

  // Opens a channel from `a` to `b` and waits until both see it open.
  std::string Open(const Node& a, const Node& b, uint64_t da, uint64_t db,
                   uint64_t settle_timeout = 0) {
    auto r = Call(a, "POST", "/v1/channels", OpenBody(b, da, db, settle_timeout));
    EXPECT_EQ(r.status, 200) << r.body;
    auto ch = FromJson<v1::OpenChannelResponse>(r.body).channel();
    EXPECT_EQ(ch.state(), "open");
    EXPECT_TRUE(WaitState(b, ch.channel_id(), "open"));
    return ch.channel_id();
  }

  static std::string TipBody(const std::string& ch, uint64_t amount, const std::string& msg,
                             const std::string& key,
                             const std::map<std::string, std::string>& meta = {}) {
    std::string body = R"({"channel_id":")" + ch + R"(","amount":")" + std::to_string(amount) +
                       R"(","message":")" + msg + R"(","idempotency_key":")" + key +
                       R"(","metadata":{)";
    bool first = true;
    for (const auto& [k, v] : meta) {
      body += (first ? "" : ",") + ("\"" + k + "\":\"" + v + "\"");
      first = false;
    }
    return body + "}}";
  }

  // POST /v1/tips with the admin token (or `token`); no key: "" (not keyed).
  HttpResult Tip(const Node& n, const std::string& ch, uint64_t amount, const std::string& msg,
                 const std::string& key = "", const std::string& token = "",
                 const std::map<std::string, std::string>& meta = {}) {
    return CallAs(n, token.empty() ? n.token : token, "POST", "/v1/tips",
                  TipBody(ch, amount, msg, key, meta));
  }

  // Every tip of one direction of `ch` as `n` stores it, by index.
  std::map<uint64_t, v1::TipApi> History(const Node& n, const std::string& ch,
                                         const std::string& direction) {
    std::map<uint64_t, v1::TipApi> out;
    std::string cursor;
    do {
      auto r = Call(
          n, "GET",
          "/v1/tips?channel_id=" + ch + "&direction=" + direction + "&limit=500&cursor=" + cursor);
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) break;
      auto page = FromJson<v1::ListTipsResponse>(r.body);
      for (const auto& t : page.tips()) out[t.tip().index()] = t;
      cursor = page.next_cursor();
    } while (!cursor.empty());
    return out;
  }
};

}  // namespace tipd::testing
