// Token records and health endpoints on real `tipd node` processes (issue
// 12): a capped and restricted token minted, listed, asked what it has left,
// refused above its limits, revoked (401 on the next request, its open event
// stream ended with a final error event, still revoked after a restart); a
// rate limit hit by concurrent requests and by a batch; idempotency keys
// that belong to their token; /healthz and /readyz without a token, readyz
// going 503 while the ledger is gone and 200 once it is back.
#include <atomic>
#include <mutex>
#include <thread>

#include "api/auth.h"
#include "api/http_client.h"
#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"
#include "tests/support/http_client.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

// GET /v1/events on a thread of its own, keeping every (type, data) seen.
class RawStream {
 public:
  RawStream(uint16_t port, const std::string& token)
      : client_(api::HttpUrl{"127.0.0.1", port, ""}, token, 10s) {
    thread_ = std::thread([this] {
      api::HttpResponse non_ok;
      Status st = client_.Stream(
          "/v1/events?from=0", {},
          [this](const std::string&, const std::string& type, const std::string& data) {
            std::lock_guard<std::mutex> lock(mu_);
            seen_.emplace_back(type, data);
            return true;
          },
          &non_ok);
      std::lock_guard<std::mutex> lock(mu_);
      status_ = st;
      ended_ = true;
    });
  }
  ~RawStream() {
    client_.Cancel();
    thread_.join();
  }
  bool Ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.size();
  }
  std::vector<std::pair<std::string, std::string>> Seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  api::HttpClient client_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> seen_;
  Status status_;
  bool ended_ = false;
};

std::string ErrorCodeOf(const HttpResult& r) { return FromJson<v1::ApiError>(r.body).code(); }

class TokensApiTest : public ChannelFixture {
 protected:
  void TwoNodes(Node* a, Node* b, std::string* ch, uint64_t deposit = 100'000) {
    ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, a, b));
    *ch = Open(*a, *b, deposit, 0);
    ASSERT_FALSE(ch->empty());
  }
  v1::CreateTokenResponse Mint(const Node& n, const std::string& body) {
    auto r = Call(n, "POST", "/v1/tokens", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return FromJson<v1::CreateTokenResponse>(r.body);
  }
};

TEST_F(TokensApiTest, CappedTokenListedRefusedAboveItsLimitsAndRevokedAtOnce) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  const auto tok = Mint(a, R"({"scopes":["tip","read"],"daily_spend_cap":"100","label":"shop",)"
                           R"("max_per_tip":"50","channels":[")" +
                               ch + R"("]})");
  EXPECT_EQ(tok.label(), "shop");
  EXPECT_EQ(tok.max_per_tip(), 50u);
  EXPECT_EQ(tok.created_by(), "admin.token");
  ASSERT_EQ(tok.channels_size(), 1);

  // Listed (with the admin token's own record), never with the token text.
  auto list = Call(a, "GET", "/v1/tokens");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_FALSE(Contains(list.body, tok.token()));
  EXPECT_FALSE(Contains(list.body, a.token));
  const auto records = FromJson<v1::ListTokensResponse>(list.body);
  bool listed = false, admin_listed = false;
  for (const auto& r : records.tokens()) {
    if (r.token_id() == tok.token_id()) {
      listed = true;
      EXPECT_EQ(r.daily_spend_cap(), 100u);
      EXPECT_EQ(r.revoked_at_ms(), 0u);
    }
    admin_listed |= r.label() == "admin.token";
  }
  EXPECT_TRUE(listed) << list.body;
  EXPECT_TRUE(admin_listed) << list.body;
  // Only admin lists.
  EXPECT_EQ(CallAs(a, tok.token(), "GET", "/v1/tokens").status, 403);

  // Over its maximum per tip: refused, nothing paid.
  auto big = Tip(a, ch, 51, "too big", "big-1", tok.token());
  EXPECT_EQ(big.status, 403) << big.body;
  EXPECT_EQ(ErrorCodeOf(big), "TIP_ABOVE_TOKEN_MAX");
  ASSERT_EQ(Tip(a, ch, 30, "fine", "ok-1", tok.token()).status, 200);
  auto self = CallAs(a, tok.token(), "GET", "/v1/tokens/self");
  ASSERT_EQ(self.status, 200) << self.body;
  const auto me = FromJson<v1::TokenSelfResponse>(self.body);
  EXPECT_EQ(me.token().token_id(), tok.token_id());
  EXPECT_TRUE(me.has_daily_cap());
  EXPECT_EQ(me.spent_today(), 30u);
  EXPECT_EQ(me.remaining_today(), 70u);
  EXPECT_GT(me.token().last_used_ms(), 0u);

  // An open event stream of the token, then revocation.
  RawStream stream(a.rpc, tok.token());
  ASSERT_TRUE(WaitFor([&] { return stream.Count() > 0; }));  // the replay arrived
  auto revoked = Call(a, "DELETE", "/v1/tokens/" + tok.token_id());
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_GT(FromJson<v1::RevokeTokenResponse>(revoked.body).token().revoked_at_ms(), 0u);
  auto after = Tip(a, ch, 1, "after", "after-1", tok.token());
  EXPECT_EQ(after.status, 401) << after.body;
  EXPECT_EQ(ErrorCodeOf(after), "TOKEN_REVOKED");
  EXPECT_EQ(CallAs(a, tok.token(), "GET", "/v1/tokens/self").status, 401);
  ASSERT_TRUE(WaitFor([&] { return stream.Ended(); }));
  const auto seen = stream.Seen();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().first, "error");
  EXPECT_EQ(FromJson<v1::ApiError>(seen.back().second).code(), "TOKEN_REVOKED");
  // A new stream is refused.
  EXPECT_EQ(HttpRequest(a.rpc, "GET", "/v1/events", tok.token()).status, 401);
  // Unknown id: 404; a malformed one: 400.
  EXPECT_EQ(Call(a, "DELETE", "/v1/tokens/" + std::string(32, '0')).status, 404);
  EXPECT_EQ(Call(a, "DELETE", "/v1/tokens/xyz").status, 400);

  // Durable: still revoked after a restart.
  Kill(a, SIGTERM);
  Restart(a);
  auto later = CallAs(a, tok.token(), "GET", "/v1/tokens/self");
  EXPECT_EQ(later.status, 401) << later.body;
  EXPECT_EQ(ErrorCodeOf(later), "TOKEN_REVOKED");
  EXPECT_EQ(Call(a, "GET", "/v1/tokens").status, 200);  // admin.token unaffected
}

TEST_F(TokensApiTest, ExpiredForeignAndWrongChannelTokensAreRefused) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  // b's admin token is foreign to a.
  auto foreign = CallAs(a, b.token, "GET", "/v1/info");
  EXPECT_EQ(foreign.status, 401);
  EXPECT_EQ(ErrorCodeOf(foreign), "unauthenticated");
  const auto brief = Mint(a, R"({"scopes":["read"],"ttl_ms":"300"})");
  ASSERT_TRUE(WaitFor([&] {
    auto r = CallAs(a, brief.token(), "GET", "/v1/info");
    return r.status == 401 && ErrorCodeOf(r) == "TOKEN_EXPIRED";
  }));
  // Allowed elsewhere only.
  const auto elsewhere =
      Mint(a, R"({"scopes":["tip"],"channels":[")" + std::string(64, 'a') + R"("]})");
  auto refused = Tip(a, ch, 5, "no", "no-1", elsewhere.token());
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(ErrorCodeOf(refused), "CHANNEL_NOT_ALLOWED");
  // Allowed by peer: a tip by peer_node_id passes.
  const auto to_b = Mint(a, R"({"scopes":["tip"],"peers":[")" + b.id.Hex() + R"("]})");
  auto by_peer = CallAs(a, to_b.token(), "POST", "/v1/tips",
                        R"({"peer_node_id":")" + b.id.Hex() + R"(","amount":"4"})");
  EXPECT_EQ(by_peer.status, 200) << by_peer.body;
  // Bad restrictions at mint time: 400 naming the field.
  auto bad = Call(a, "POST", "/v1/tokens", R"({"scopes":["tip"],"peers":["nope"]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_TRUE(Contains(bad.body, "peers")) << bad.body;
}

TEST_F(TokensApiTest, RateLimitPassesExactlyTheAllowedNumberUnderConcurrencyAndInBatches) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  const auto tok = Mint(a, R"({"scopes":["tip"],"rate_per_minute":7})");
  constexpr int kThreads = 24;
  std::vector<HttpResult> answers(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      answers[static_cast<size_t>(t)] =
          Tip(a, ch, 1, "rate " + std::to_string(t), "rate-" + std::to_string(t), tok.token());
    });
  }
  for (auto& t : pool) t.join();
  int ok = 0, limited = 0;
  for (const HttpResult& r : answers) {
    if (r.status == 200 || r.status == 202) {  // 202: paid, the ack still on its way
      ++ok;
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_EQ(ErrorCodeOf(r), "TOKEN_RATE_LIMITED");
      EXPECT_TRUE(Contains(r.headers, "Retry-After: ")) << r.headers;
      ++limited;
    }
  }
  // The test takes well under a minute even on a loaded machine, so the
  // window holds every admission.
  EXPECT_EQ(ok, 7);
  EXPECT_EQ(limited, kThreads - 7);
  // A replay of a paid tip is answered, and takes no slot.
  int paid = -1;
  for (int t = 0; t < kThreads && paid < 0; ++t) {
    if (answers[static_cast<size_t>(t)].status == 200) paid = t;
  }
  if (paid >= 0) {
    auto replay =
        Tip(a, ch, 1, "rate " + std::to_string(paid), "rate-" + std::to_string(paid), tok.token());
    EXPECT_EQ(replay.status, 200) << replay.body;
    EXPECT_TRUE(FromJson<v1::TipResponse>(replay.body).replayed());
  }

  // A batch counts each tip.
  const auto batcher = Mint(a, R"({"scopes":["tip"],"rate_per_minute":3})");
  std::string body = R"({"tips":[)";
  for (int i = 0; i < 5; ++i) {
    body += std::string(i ? "," : "") + R"({"channel_id":")" + ch + R"(","amount":"1"})";
  }
  body += "]}";
  auto batch = CallAs(a, batcher.token(), "POST", "/v1/tips/batch", body);
  ASSERT_EQ(batch.status, 200) << batch.body;
  const auto results = FromJson<v1::TipBatchResponse>(batch.body);
  int batch_ok = 0, batch_limited = 0;
  for (const auto& r : results.results()) {
    if (r.error_code().empty()) ++batch_ok;
    if (r.error_code() == "TOKEN_RATE_LIMITED") ++batch_limited;
  }
  EXPECT_EQ(batch_ok, 3) << batch.body;
  EXPECT_EQ(batch_limited, 2) << batch.body;
}

TEST_F(TokensApiTest, IdempotencyKeysBelongToTheirToken) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  const auto x = Mint(a, R"({"scopes":["tip"]})");
  const auto y = Mint(a, R"({"scopes":["tip"]})");
  auto first = Tip(a, ch, 9, "same", "shared-key", x.token());
  ASSERT_EQ(first.status, 200) << first.body;
  auto again = Tip(a, ch, 9, "same", "shared-key", x.token());
  ASSERT_EQ(again.status, 200);
  EXPECT_TRUE(FromJson<v1::TipResponse>(again.body).replayed());
  // The same key and body under another token: a tip of its own.
  auto other = Tip(a, ch, 9, "same", "shared-key", y.token());
  ASSERT_EQ(other.status, 200) << other.body;
  const auto o = FromJson<v1::TipResponse>(other.body);
  EXPECT_FALSE(o.replayed());
  EXPECT_NE(o.tip().tip().index(), FromJson<v1::TipResponse>(first.body).tip().tip().index());
  EXPECT_EQ(Channel(a, ch).tips_sent(), 2u);
}

TEST_F(TokensApiTest, HealthWithoutATokenAndReadinessFollowsTheLedger) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Node a = Up("a", 0, {"--ready-max-ledger-lag", "4"});
  auto health = HttpRequest(a.rpc, "GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(FromJson<v1::HealthResponse>(health.body).status(), "ok");
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(a.rpc, "GET", "/readyz").status == 200; }));
  auto ready = HttpRequest(a.rpc, "GET", "/readyz");
  const auto r = FromJson<v1::ReadinessResponse>(ready.body);
  EXPECT_TRUE(r.ready());
  ASSERT_EQ(r.checks_size(), 3);
  EXPECT_EQ(r.checks(0).name(), "storage");
  EXPECT_EQ(r.checks(1).name(), "ledger");
  EXPECT_EQ(r.checks(2).name(), "api");
  // Nothing secret: no token, no key.
  EXPECT_FALSE(Contains(ready.body, "tipd1_"));
  EXPECT_FALSE(Contains(ready.body, a.key->public_key().Hex()));

  // The ledger goes away: after more than 4 block intervals, not ready.
  StopLedger();
  HttpResult down;
  ASSERT_TRUE(WaitFor([&] {
    down = HttpRequest(a.rpc, "GET", "/readyz");
    return down.status == 503;
  }));
  const auto d = FromJson<v1::ReadinessResponse>(down.body);
  EXPECT_FALSE(d.ready());
  ASSERT_EQ(d.checks_size(), 3);
  EXPECT_TRUE(d.checks(0).ok());
  EXPECT_FALSE(d.checks(1).ok());
  EXPECT_TRUE(Contains(d.checks(1).detail(), "not connected")) << down.body;
  EXPECT_EQ(HttpRequest(a.rpc, "GET", "/healthz").status, 200);  // alive all along
  // Back: ready again once the follower has caught up.
  StartLedger();
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(a.rpc, "GET", "/readyz").status == 200; },
                      std::chrono::seconds(60)));
}

TEST_F(TokensApiTest, TipctlListsAndRevokesTokensAndReportsStatus) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Node a = Up("a", 0);
  const auto tok = Mint(a, R"({"scopes":["read"],"label":"reader"})");
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--datadir", NodeDir("a").string()});
    return RunTipctl(dir_.path(), args);
  };
  auto list = ctl({"token", "list", "--human"});
  ASSERT_EQ(list.exit_code, 0) << list;
  EXPECT_TRUE(Contains(list.out, tok.token_id())) << list;
  EXPECT_TRUE(Contains(list.out, "reader")) << list;
  auto revoke = ctl({"token", "revoke", tok.token_id()});
  ASSERT_EQ(revoke.exit_code, 0) << revoke;
  EXPECT_EQ(CallAs(a, tok.token(), "GET", "/v1/info").status, 401);
  auto json = ctl({"token", "list"});
  ASSERT_EQ(json.exit_code, 0) << json;
  bool revoked = false;
  const auto listed = FromJson<v1::ListTokensResponse>(json.out);
  for (const auto& r : listed.tokens()) {
    if (r.token_id() == tok.token_id()) revoked = r.revoked_at_ms() != 0;
  }
  EXPECT_TRUE(revoked) << json;
  ASSERT_TRUE(WaitFor([&] { return ctl({"status"}).exit_code == 0; }));
  auto status = ctl({"status", "--human"});
  EXPECT_EQ(status.exit_code, 0) << status;
  EXPECT_TRUE(Contains(status.out, "ready")) << status;
  StopLedger();
  // Not ready: exit code 1 (an API answer that is not 2xx), the reason shown.
  CliResult down;
  ASSERT_TRUE(WaitFor([&] {
    down = ctl({"status", "--human"});
    return down.exit_code == 1;
  }));
  EXPECT_TRUE(Contains(down.out, "ledger")) << down;
}

}  // namespace
}  // namespace tipd::testing
