// The channel, tip and event API of real `tipd node` processes, as clients
// see it: per-route auth (401/403/OK), idempotent tips under concurrent
// retries, the daily spending cap under concurrent requests, tip batches,
// the SSE event stream (live, resume with Last-Event-ID, channel and peer
// events), deposit top-ups, and tipctl's channel commands end to end.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "api/auth.h"
#include "api/http_client.h"
#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"
#include "tests/support/http_client.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

// One event as a stream delivered it.
struct Seen {
  uint64_t id = 0;
  std::string type;
  v1::Event event;
  std::string data;  // the event's JSON as sent
};

// GET /v1/events on a thread of its own (api::HttpClient::Stream), keeping
// every event it sees until Stop().
class EventStream {
 public:
  EventStream(uint16_t port, const std::string& token, std::string target,
              std::map<std::string, std::string> headers = {})
      : client_(api::HttpUrl{"127.0.0.1", port, ""}, token, 10s) {
    thread_ = std::thread([this, target = std::move(target), headers = std::move(headers)] {
      api::HttpResponse non_ok;
      Status st = client_.Stream(
          target, headers,
          [this](const std::string& id, const std::string& type, const std::string& data) {
            Seen s;
            s.id = std::stoull(id);
            s.type = type;
            s.event = FromJson<v1::Event>(data);
            s.data = data;
            std::lock_guard<std::mutex> lock(mu_);
            seen_.push_back(std::move(s));
            return true;
          },
          &non_ok);
      std::lock_guard<std::mutex> lock(mu_);
      status_ = st;
      ended_ = true;
    });
  }
  ~EventStream() { Stop(); }

  void Stop() {
    if (!thread_.joinable()) return;
    client_.Cancel();
    thread_.join();
  }
  std::vector<Seen> Events() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.size();
  }
  bool Ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  api::HttpClient client_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Seen> seen_;
  Status status_;
  bool ended_ = false;
};

class TipsApiTest : public ChannelFixture {
 protected:
  // A network of two connected nodes with one channel a -> b.
  void TwoNodes(uint64_t da, uint64_t db, Node* a, Node* b, std::string* ch) {
    ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, a, b));
    *ch = Open(*a, *b, da, db);
    ASSERT_FALSE(ch->empty());
  }
};

std::map<std::string, std::string> MetaOf(const v1::Tip& t) {
  std::map<std::string, std::string> m;
  for (const auto& e : t.metadata()) m[e.key()] = e.value();
  return m;
}

// The status of GET /v1/events for `token`: 200 once the stream delivered an
// event (from=0 replays the log, which holds the peer event at least), or
// the error status the server answered.
int EventsStatus(uint16_t port, const std::string& token) {
  api::HttpClient client(api::HttpUrl{"127.0.0.1", port, ""}, token, 10s);
  api::HttpResponse non_ok;
  bool got_event = false;
  Status st = client.Stream(
      "/v1/events?from=0", {},
      [&](const std::string&, const std::string&, const std::string&) {
        got_event = true;
        return false;
      },
      &non_ok);
  if (got_event && st.ok()) return 200;
  return non_ok.status;
}

// ---------------------------------------------------------------------------
// 1. Per-route auth.

TEST_F(TipsApiTest, EveryChannelTipAndEventRouteChecksItsScope) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(100'000, 0, &a, &b, &ch));
  const std::string read = Token(a, R"(["read"])");
  const std::string tip = Token(a, R"(["tip"])");
  const std::string receive = Token(a, R"(["receive"])");
  // Everything but admin.
  const std::string most = Token(a, R"(["read","receive","tip"])");
  // A token of another node (another root key) does not verify here.
  const std::string foreign = Token(b, R"(["admin"])");

  struct Route {
    std::string method, path, body;
    std::string ok_token;              // a token with just the route's scope
    std::vector<std::string> lacking;  // valid tokens without it
    std::vector<int> ok_status;
  };
  const std::string deposit = R"({"amount":"10"})";
  int key = 0;
  auto tip_body = [&] { return TipBody(ch, 1, "auth", "auth-" + std::to_string(key++)); };
  auto batch_body = [&] { return R"({"tips":[)" + tip_body() + "," + tip_body() + "]}"; };
  std::vector<Route> routes = {
      {"GET", "/v1/channels", "", read, {tip, receive}, {200}},
      {"GET", "/v1/channels/" + ch, "", read, {tip, receive}, {200}},
      {"GET", "/v1/tips", "", read, {tip, receive}, {200}},
      {"POST", "/v1/tips", "", tip, {read, receive}, {200}},
      {"POST", "/v1/tips/batch", "", tip, {read, receive}, {200}},
      {"POST",
       "/v1/channels/" + ch + "/deposit",
       deposit,
       a.token,
       {read, tip, receive, most},
       {200}},
      // B has funds of its own: open a second channel a -> b.
      {"POST", "/v1/channels", OpenBody(b, 500, 0), a.token, {read, tip, receive, most}, {200}},
      // Last: the close ends the channel the other routes use.
      {"POST",
       "/v1/channels/" + ch + "/close",
       "{}",
       a.token,
       {read, tip, receive, most},
       {200, 202}},
  };
  for (Route& r : routes) {
    SCOPED_TRACE(r.method + " " + r.path);
    auto body = [&] {
      if (r.path == "/v1/tips" && r.method == "POST") return tip_body();
      if (r.path == "/v1/tips/batch") return batch_body();
      return r.body;
    };
    // No token: 401 with WWW-Authenticate.
    auto none = HttpRequest(a.rpc, r.method, r.path, "", body());
    EXPECT_EQ(none.status, 401) << none.body;
    EXPECT_TRUE(Contains(none.body, "unauthenticated")) << none.body;
    EXPECT_TRUE(Contains(none.headers, "WWW-Authenticate")) << none.headers;
    // A token this node did not issue, and garbage: 401.
    EXPECT_EQ(HttpRequest(a.rpc, r.method, r.path, foreign, body()).status, 401);
    EXPECT_EQ(HttpRequest(a.rpc, r.method, r.path, "tipd1_00", body()).status, 401);
    // Valid tokens without the scope: 403, naming it.
    for (const std::string& t : r.lacking) {
      auto denied = HttpRequest(a.rpc, r.method, r.path, t, body());
      EXPECT_EQ(denied.status, 403) << denied.body;
      EXPECT_TRUE(Contains(denied.body, "permission_denied")) << denied.body;
    }
    // The right scope: the route runs.
    auto ok = HttpRequest(a.rpc, r.method, r.path, r.ok_token, body());
    EXPECT_TRUE(std::find(r.ok_status.begin(), r.ok_status.end(), ok.status) != r.ok_status.end())
        << ok.status << " " << ok.body;
    // Admin passes every scope check.
    if (r.method == "GET") {
      EXPECT_EQ(Call(a, r.method, r.path).status, 200);
    }
  }
  // Tips refused with 401/403 paid nothing: exactly the two allowed requests
  // (one tip, one batch of two) went through.
  EXPECT_EQ(History(a, ch, "sent").size(), 3u);
  EXPECT_EQ(Channel(a, ch).tips_sent(), 3u);
  // The second open happened once, the deposit once (100'000 + 10).
  auto list = FromJson<v1::ListChannelsResponse>(Call(a, "GET", "/v1/channels").body);
  EXPECT_EQ(list.channels_size(), 2);
  EXPECT_EQ(Channel(a, ch).deposit_local(), 100'010u);

  // GET /v1/events: read (or admin) streams; others are refused.
  EXPECT_EQ(EventsStatus(a.rpc, ""), 401);
  EXPECT_EQ(EventsStatus(a.rpc, foreign), 401);
  EXPECT_EQ(EventsStatus(a.rpc, tip), 403);
  EXPECT_EQ(EventsStatus(a.rpc, receive), 403);
  EXPECT_EQ(EventsStatus(a.rpc, read), 200);
  EXPECT_EQ(EventsStatus(a.rpc, a.token), 200);
}

// ---------------------------------------------------------------------------
// 2. Idempotency under concurrent retries.

TEST_F(TipsApiTest, ConcurrentRetriesWithOneIdempotencyKeyPayOnce) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(10'000, 0, &a, &b, &ch));
  ASSERT_EQ(Tip(a, ch, 1, "warm-up", "warm-up").status, 200);
  const v1::ChannelApi before = Channel(a, ch);

  constexpr int kThreads = 8;
  std::vector<HttpResult> answers(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      answers[static_cast<size_t>(t)] = Tip(a, ch, 42, "once only", "same-key");
    });
  }
  for (auto& t : pool) t.join();

  std::set<uint64_t> indexes, nonces;
  int fresh = 0;
  for (const HttpResult& r : answers) {
    ASSERT_EQ(r.status, 200) << r.body;
    auto resp = FromJson<v1::TipResponse>(r.body);
    indexes.insert(resp.tip().tip().index());
    nonces.insert(resp.tip().nonce());
    EXPECT_EQ(resp.tip().tip().amount(), 42u);
    EXPECT_EQ(resp.tip().tip().message(), "once only");
    EXPECT_EQ(resp.tip().idempotency_key(), "same-key");
    EXPECT_TRUE(resp.has_receipt()) << r.body;
    if (!resp.replayed()) ++fresh;
  }
  EXPECT_EQ(indexes.size(), 1u);
  EXPECT_EQ(nonces.size(), 1u);
  EXPECT_EQ(fresh, 1) << "exactly one answer is the original, the others are replays";

  // Paid exactly once, on both sides.
  auto sent = History(a, ch, "sent");
  int with_message = 0;
  for (const auto& [idx, t] : sent) with_message += t.tip().message() == "once only";
  EXPECT_EQ(with_message, 1);
  const v1::ChannelApi after = Channel(a, ch);
  EXPECT_EQ(after.tips_sent(), before.tips_sent() + 1);
  EXPECT_EQ(after.balance_local(), before.balance_local() - 42);
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() == before.tips_sent() + 1; }));
  EXPECT_EQ(Channel(b, ch).balance_local(), 1u + 42u);
  auto received = History(b, ch, "received");
  ASSERT_TRUE(received.count(*indexes.begin()));
  EXPECT_EQ(received.at(*indexes.begin()).tip().message(), "once only");

  // A later retry still replays; the same key for another tip is refused.
  auto late = Tip(a, ch, 42, "once only", "same-key");
  ASSERT_EQ(late.status, 200) << late.body;
  EXPECT_TRUE(FromJson<v1::TipResponse>(late.body).replayed());
  EXPECT_EQ(FromJson<v1::TipResponse>(late.body).tip().tip().index(), *indexes.begin());
  auto reused = Tip(a, ch, 43, "once only", "same-key");
  EXPECT_EQ(reused.status, 409) << reused.body;
  EXPECT_TRUE(Contains(reused.body, "IDEMPOTENCY_KEY_REUSED")) << reused.body;
  auto other_message = Tip(a, ch, 42, "twice?", "same-key");
  EXPECT_EQ(other_message.status, 409) << other_message.body;
  EXPECT_EQ(Channel(a, ch).SerializeAsString(), after.SerializeAsString());

  // The same race with a different amount among the racers: the first one
  // the node takes pays, requests equal to it replay, the others get 409.
  std::vector<HttpResult> mixed(kThreads);
  ready = 0;
  pool.clear();
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      mixed[static_cast<size_t>(t)] = Tip(a, ch, t % 2 ? 5 : 6, "mixed", "mixed-key");
    });
  }
  for (auto& t : pool) t.join();
  int ok5 = 0, ok6 = 0, conflicts = 0;
  for (const HttpResult& r : mixed) {
    if (r.status == 200) {
      (FromJson<v1::TipResponse>(r.body).tip().tip().amount() == 5 ? ok5 : ok6)++;
    } else {
      EXPECT_EQ(r.status, 409) << r.body;
      EXPECT_TRUE(Contains(r.body, "IDEMPOTENCY_KEY_REUSED")) << r.body;
      ++conflicts;
    }
  }
  EXPECT_TRUE((ok5 == 4 && ok6 == 0) || (ok5 == 0 && ok6 == 4)) << ok5 << " / " << ok6;
  EXPECT_EQ(conflicts, 4);
  EXPECT_EQ(Channel(a, ch).tips_sent(), after.tips_sent() + 1);
}

// ---------------------------------------------------------------------------
// 3. Daily spending cap under concurrent requests.

TEST_F(TipsApiTest, DailyCapHoldsUnderConcurrentRequests) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(10'000, 0, &a, &b, &ch));
  auto created = Call(a, "POST", "/v1/tokens", R"({"scopes":["tip"],"daily_spend_cap":"100"})");
  ASSERT_EQ(created.status, 201) << created.body;
  auto token = FromJson<v1::CreateTokenResponse>(created.body);
  EXPECT_EQ(token.daily_spend_cap(), 100u);
  const v1::ChannelApi before = Channel(a, ch);

  constexpr int kThreads = 20;
  std::vector<HttpResult> answers(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      answers[static_cast<size_t>(t)] =
          Tip(a, ch, 7, "capped " + std::to_string(t), "cap-" + std::to_string(t), token.token());
    });
  }
  for (auto& t : pool) t.join();
  int ok = 0, capped = 0;
  for (const HttpResult& r : answers) {
    if (r.status == 200) {
      ++ok;
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_TRUE(Contains(r.body, "cap")) << r.body;
      ++capped;
    }
  }
  EXPECT_EQ(ok, 14);
  EXPECT_EQ(capped, 6);
  const v1::ChannelApi after = Channel(a, ch);
  EXPECT_EQ(after.tips_sent(), before.tips_sent() + 14);
  EXPECT_EQ(before.balance_local() - after.balance_local(), 98u);
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).balance_local() == 98u; }));
  // 2 left today: 3 is refused, 2 passes, then nothing.
  EXPECT_EQ(Tip(a, ch, 3, "over", "cap-over", token.token()).status, 429);
  EXPECT_EQ(Tip(a, ch, 2, "exact", "cap-exact", token.token()).status, 200);
  EXPECT_EQ(Tip(a, ch, 1, "after", "cap-after", token.token()).status, 429);
  // A replay of a paid request is not charged again: pick one of the 14 that
  // were paid (which ones won the race varies from run to run).
  int paid = -1;
  for (int t = 0; t < kThreads && paid < 0; ++t) {
    if (answers[static_cast<size_t>(t)].status == 200) paid = t;
  }
  ASSERT_GE(paid, 0);
  const v1::TipResponse first = FromJson<v1::TipResponse>(answers[static_cast<size_t>(paid)].body);
  const v1::ChannelApi before_replay = Channel(a, ch);
  auto replay =
      Tip(a, ch, 7, "capped " + std::to_string(paid), "cap-" + std::to_string(paid), token.token());
  ASSERT_EQ(replay.status, 200) << replay.body;
  const v1::TipResponse replayed = FromJson<v1::TipResponse>(replay.body);
  EXPECT_TRUE(replayed.replayed());
  EXPECT_EQ(replayed.tip().tip().index(), first.tip().tip().index());
  const v1::ChannelApi after_replay = Channel(a, ch);
  EXPECT_EQ(after_replay.tips_sent(), before_replay.tips_sent());
  EXPECT_EQ(after_replay.balance_local(), before_replay.balance_local());
  // The admin token has no cap.
  EXPECT_EQ(Tip(a, ch, 500, "admin", "cap-admin").status, 200);
  EXPECT_EQ(Channel(a, ch).balance_local(), before.balance_local() - 100 - 500);
}

// ---------------------------------------------------------------------------
// 4. Tip batches.

TEST_F(TipsApiTest, BatchOfFiftyInOrderAndAnInvalidBatchPaysNothing) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(100'000, 0, &a, &b, &ch));
  std::string body = R"({"tips":[)";
  uint64_t total = 0;
  for (int i = 0; i < 50; ++i) {
    if (i) body += ",";
    body += TipBody(ch, static_cast<uint64_t>(i + 1), "batch #" + std::to_string(i),
                    "batch-" + std::to_string(i), {{"pos", std::to_string(i)}});
    total += static_cast<uint64_t>(i + 1);
  }
  body += "]}";
  auto r = Call(a, "POST", "/v1/tips/batch", body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto batch = FromJson<v1::TipBatchResponse>(r.body);
  ASSERT_EQ(batch.results_size(), 50);
  const uint64_t first = batch.results(0).tip().tip().index();
  uint64_t last_nonce = 0;
  for (int i = 0; i < 50; ++i) {
    SCOPED_TRACE(i);
    const v1::TipResponse& res = batch.results(i);
    EXPECT_TRUE(res.error_code().empty()) << res.error_message();
    EXPECT_EQ(res.tip().tip().message(), "batch #" + std::to_string(i));
    EXPECT_EQ(res.tip().tip().amount(), static_cast<uint64_t>(i + 1));
    EXPECT_EQ(res.tip().tip().index(), first + static_cast<uint64_t>(i));
    EXPECT_EQ(MetaOf(res.tip().tip()).at("pos"), std::to_string(i));
    EXPECT_EQ(res.tip().idempotency_key(), "batch-" + std::to_string(i));
    EXPECT_GE(res.tip().nonce(), last_nonce);
    last_nonce = res.tip().nonce();
    // A receipt that covers the tip's update.
    ASSERT_TRUE(res.has_receipt());
    EXPECT_EQ(res.receipt().channel_id(), ch);
    EXPECT_GE(res.receipt().nonce(), res.tip().nonce());
    EXPECT_TRUE(res.receipt().has_ack());
  }
  EXPECT_EQ(batch.results(49).receipt().transferred(), total);
  const v1::ChannelApi paid = Channel(a, ch);
  EXPECT_EQ(paid.tips_sent(), 50u);
  EXPECT_EQ(paid.balance_local(), 100'000u - total);
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() == 50u; }));
  auto received = History(b, ch, "received");
  ASSERT_EQ(received.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(received.at(first + static_cast<uint64_t>(i)).tip().message(),
              "batch #" + std::to_string(i));
  }

  // One invalid tip (amount 0, in the middle) refuses the whole batch.
  std::string bad = R"({"tips":[)";
  for (int i = 0; i < 10; ++i) {
    if (i) bad += ",";
    bad +=
        TipBody(ch, i == 5 ? 0 : 3, "bad batch #" + std::to_string(i), "bad-" + std::to_string(i));
  }
  bad += "]}";
  auto refused = Call(a, "POST", "/v1/tips/batch", bad);
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_TRUE(Contains(refused.body, "tips[5]")) << refused.body;
  // Empty batch: 400 too.
  EXPECT_EQ(Call(a, "POST", "/v1/tips/batch", R"({"tips":[]})").status, 400);
  EXPECT_EQ(Channel(a, ch).SerializeAsString(), paid.SerializeAsString());
  EXPECT_EQ(History(a, ch, "sent").size(), 50u);
  // Nothing of it reached the receiver, and its keys are still free.
  EXPECT_EQ(Channel(b, ch).tips_received(), 50u);
  auto fresh = Tip(a, ch, 3, "bad batch #0", "bad-0");
  ASSERT_EQ(fresh.status, 200) << fresh.body;
  EXPECT_FALSE(FromJson<v1::TipResponse>(fresh.body).replayed());
}

// The batch route's own body limit (1 MiB): 1000 tips with 200-byte messages
// are accepted and every one lands; the compact answer is one line per tip
// and one receipt per update; protobuf in and out; over the limit is 413,
// and every other route keeps 64 KiB.
TEST_F(TipsApiTest, BatchOfThousandLongTipsCompactProtobufAndLimits) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(500'000, 0, &a, &b, &ch));
  const uint64_t tips_before = Channel(a, ch).tips_sent();
  std::string body = R"({"tips":[)";
  uint64_t total = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string msg = "#" + std::to_string(i) + " ";
    msg += std::string(200 - msg.size(), 'm');
    body += (i ? "," : "") + TipBody(ch, static_cast<uint64_t>(1 + i % 7), msg,
                                     "big-" + std::to_string(i), {{"app_name", "perf"}});
    total += static_cast<uint64_t>(1 + i % 7);
  }
  body += "]}";
  ASSERT_GT(body.size(), 64u * 1024);
  auto r = Call(a, "POST", "/v1/tips/batch?answer=compact", body);
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 500);
  // Compact: far smaller than the echo of 1000 tips.
  EXPECT_LT(r.body.size(), body.size() / 2);
  auto compact = FromJson<v1::TipBatchCompactResponse>(r.body);
  ASSERT_EQ(compact.results_size(), 1000);
  std::set<uint64_t> nonces;
  uint64_t last_nonce = 0;
  for (int i = 0; i < 1000; ++i) {
    SCOPED_TRACE(i);
    const v1::TipBatchCompactResult& line = compact.results(i);
    EXPECT_EQ(line.index(), static_cast<uint32_t>(i));
    EXPECT_EQ(line.status(), "acked") << line.error_message();
    EXPECT_TRUE(line.error_code().empty());
    EXPECT_EQ(line.channel_id(), ch);
    EXPECT_EQ(line.tip_index(), tips_before + 1 + static_cast<uint64_t>(i));
    EXPECT_GE(line.nonce(), last_nonce);
    EXPECT_GT(line.nonce(), 0u);
    last_nonce = line.nonce();
    nonces.insert(line.nonce());
  }
  // One receipt per distinct acknowledgement, none repeated, and every tip's
  // update is covered by a receipt at or after its nonce.
  ASSERT_GE(compact.receipts_size(), 1);
  EXPECT_LE(static_cast<size_t>(compact.receipts_size()), nonces.size());
  std::set<uint64_t> receipt_nonces;
  for (const v1::TipReceiptApi& rc : compact.receipts()) {
    EXPECT_EQ(rc.channel_id(), ch);
    EXPECT_TRUE(rc.has_ack());
    EXPECT_TRUE(receipt_nonces.insert(rc.nonce()).second) << "receipt repeated: " << rc.nonce();
  }
  for (uint64_t n : nonces) {
    EXPECT_NE(receipt_nonces.lower_bound(n), receipt_nonces.end()) << "no receipt covers " << n;
  }
  EXPECT_EQ(compact.receipts(compact.receipts_size() - 1).transferred(), total);
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() == tips_before + 1000; }));
  auto received = History(b, ch, "received");
  ASSERT_EQ(received.size(), tips_before + 1000);
  const std::string& msg999 = received.at(tips_before + 1000).tip().message();
  EXPECT_EQ(msg999.substr(0, 5), "#999 ");
  EXPECT_EQ(msg999.size(), 200u);

  // The body field asks for the same; answer=full (the default) echoes.
  auto small = Call(a, "POST", "/v1/tips/batch",
                    R"({"compact":true,"tips":[)" + TipBody(ch, 2, "c", "cf-1") + "]}");
  ASSERT_EQ(small.status, 200) << small.body;
  EXPECT_EQ(FromJson<v1::TipBatchCompactResponse>(small.body).results(0).status(), "acked");
  auto full = Call(a, "POST", "/v1/tips/batch?answer=full",
                   R"({"tips":[)" + TipBody(ch, 2, "f", "cf-2") + "]}");
  ASSERT_EQ(full.status, 200) << full.body;
  EXPECT_EQ(FromJson<v1::TipBatchResponse>(full.body).results(0).tip().tip().message(), "f");
  EXPECT_EQ(Call(a, "POST", "/v1/tips/batch?answer=tiny",
                 R"({"tips":[)" + TipBody(ch, 2, "t", "cf-3") + "]}")
                .status,
            400);

  // Protobuf body and answer; a refused tip (the same key, another amount)
  // is a "refused" line with its code, and the good one is paid.
  v1::TipBatchRequest pb;
  pb.set_compact(true);
  v1::TipRequest* t = pb.add_tips();
  t->set_channel_id(ch);
  t->set_amount(3);
  t->set_message("protobuf tip");
  t->set_idempotency_key("pb-1");
  v1::TipRequest* reused = pb.add_tips();
  *reused = *t;
  reused->set_idempotency_key("cf-1");  // used above with amount 2
  auto pr = HttpRequest(a.rpc, "POST", "/v1/tips/batch", a.token, pb.SerializeAsString(),
                        {{"Content-Type", "application/x-protobuf"},
                         {"Accept", "application/x-protobuf, application/json"}});
  ASSERT_EQ(pr.status, 200) << pr.body;
  EXPECT_TRUE(Contains(pr.headers, "application/x-protobuf")) << pr.headers;
  v1::TipBatchCompactResponse pb_out;
  ASSERT_TRUE(pb_out.ParseFromString(pr.body));
  ASSERT_EQ(pb_out.results_size(), 2);
  EXPECT_EQ(pb_out.results(0).status(), "acked");
  EXPECT_EQ(pb_out.results(1).status(), "refused");
  EXPECT_FALSE(pb_out.results(1).error_code().empty());
  EXPECT_EQ(pb_out.results(1).nonce(), 0u);
  EXPECT_EQ(pb_out.receipts_size(), 1);
  // A protobuf body that does not parse: 400, nothing paid.
  auto garbage = HttpRequest(a.rpc, "POST", "/v1/tips/batch", a.token, std::string("\xff\xff\xff"),
                             {{"Content-Type", "application/x-protobuf"}});
  EXPECT_EQ(garbage.status, 400) << garbage.body;
  const uint64_t paid = Channel(a, ch).tips_sent();
  EXPECT_EQ(paid, tips_before + 1000 + 3);

  // Over the batch route's 1 MiB: 413. The tips route keeps 64 KiB.
  std::string huge = body.substr(0, body.size() - 2);
  while (huge.size() <= (1u << 20)) huge += "," + TipBody(ch, 1, std::string(900, 'h'), "");
  huge += "]}";
  auto too_big = Call(a, "POST", "/v1/tips/batch", huge);
  EXPECT_EQ(too_big.status, 413) << too_big.body;
  EXPECT_TRUE(Contains(too_big.body, "payload_too_large")) << too_big.body;
  auto single = Call(a, "POST", "/v1/tips", TipBody(ch, 1, std::string(70'000, 's'), ""));
  EXPECT_EQ(single.status, 413) << single.body;
  EXPECT_EQ(Channel(a, ch).tips_sent(), paid);
}

// ---------------------------------------------------------------------------
// 5. Server-Sent Events.

TEST_F(TipsApiTest, EventStreamLiveThenResumeWithLastEventId) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Node a = Up("a", 0);
  Node b = Up("b", 1);
  const std::string reader_b = Token(b, R"(["read"])");
  // Channel and peer events on A, from the start of its log (from=0 replays
  // what is there, then live).
  EventStream a_events(a.rpc, a.token, "/v1/events?types=channel,peer&from=0");
  Connect(a, b);
  const std::string ch = Open(a, b, 100'000, 0);
  ASSERT_FALSE(ch.empty());

  auto tip = [&](int i, const std::string& prefix) {
    auto r = Call(a, "POST", "/v1/tips",
                  TipBody(ch, 1 + static_cast<uint64_t>(i % 3), prefix + " " + std::to_string(i),
                          prefix + "-" + std::to_string(i), {{"n", std::to_string(i)}}));
    EXPECT_EQ(r.status, 200) << r.body;
  };
  auto tip_messages = [](const std::vector<Seen>& events) {
    std::vector<std::string> out;
    for (const Seen& s : events) {
      if (s.event.tip().tip().message().rfind("probe", 0) == 0) continue;
      out.push_back(s.event.tip().tip().message());
    }
    return out;
  };

  std::vector<Seen> first_run;
  {
    // Live only (no Last-Event-ID): subscribed once a probe tip shows up.
    EventStream live(b.rpc, reader_b, "/v1/events?types=tip_received");
    int probe = 0;
    ASSERT_TRUE(WaitFor([&] {
      const size_t n = live.Count();
      auto r = Call(
          a, "POST", "/v1/tips",
          TipBody(ch, 1, "probe " + std::to_string(probe), "probe-" + std::to_string(probe), {}));
      ++probe;
      EXPECT_EQ(r.status, 200) << r.body;
      return WaitFor([&] { return live.Count() > n; }, 500ms);
    }));
    for (int i = 0; i < 20; ++i) tip(i, "live");
    ASSERT_TRUE(WaitFor([&] { return tip_messages(live.Events()).size() >= 20; }))
        << tip_messages(live.Events()).size();
    live.Stop();
    first_run = live.Events();
    EXPECT_TRUE(live.status().ok()) << live.status().ToString();
  }
  // Exactly the 20, in order, with their metadata; ids increase.
  std::vector<Seen> tips20;
  for (const Seen& s : first_run) {
    EXPECT_EQ(s.type, "tip_received");
    EXPECT_EQ(s.event.type(), "tip_received");
    EXPECT_EQ(s.event.id(), s.id);
    if (s.event.tip().tip().message().rfind("probe", 0) != 0) tips20.push_back(s);
  }
  ASSERT_EQ(tips20.size(), 20u);
  for (size_t i = 1; i < first_run.size(); ++i) EXPECT_GT(first_run[i].id, first_run[i - 1].id);
  for (int i = 0; i < 20; ++i) {
    const v1::TipApi& t = tips20[static_cast<size_t>(i)].event.tip();
    EXPECT_EQ(t.tip().message(), "live " + std::to_string(i));
    EXPECT_EQ(t.tip().amount(), 1 + static_cast<uint64_t>(i % 3));
    EXPECT_EQ(MetaOf(t.tip()), (std::map<std::string, std::string>{{"n", std::to_string(i)}}));
    EXPECT_EQ(t.direction(), "received");
    EXPECT_EQ(t.channel_id(), ch);
    EXPECT_EQ(t.peer_node_id(), a.id.Hex());
  }
  const uint64_t last_id = first_run.back().id;
  ASSERT_EQ(first_run.back().event.tip().tip().message(), "live 19");

  // Disconnected: 10 more.
  for (int i = 0; i < 10; ++i) tip(i, "missed");
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() >= 20u + 10u + 1u; }));
  // Resume: exactly the 10 missed ones, then live ones.
  EventStream resumed(b.rpc, reader_b, "/v1/events?types=tip_received",
                      {{"Last-Event-ID", std::to_string(last_id)}});
  ASSERT_TRUE(WaitFor([&] { return resumed.Count() >= 10; })) << resumed.Count();
  for (int i = 0; i < 5; ++i) tip(i, "after");
  ASSERT_TRUE(WaitFor([&] { return resumed.Count() >= 15; })) << resumed.Count();
  resumed.Stop();
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) expected.push_back("missed " + std::to_string(i));
  for (int i = 0; i < 5; ++i) expected.push_back("after " + std::to_string(i));
  auto events = resumed.Events();
  EXPECT_EQ(tip_messages(events), expected);
  EXPECT_EQ(events.size(), 15u) << "no probe and no duplicate";
  EXPECT_GT(events.front().id, last_id);
  for (size_t i = 1; i < events.size(); ++i) EXPECT_GT(events[i].id, events[i - 1].id);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(MetaOf(events[static_cast<size_t>(i)].event.tip().tip()).at("n"), std::to_string(i));
  }
  // ?last_event_id= does the same for clients that cannot set headers.
  EventStream by_query(
      b.rpc, reader_b,
      "/v1/events?types=tip_received&last_event_id=" + std::to_string(events[9].id));
  ASSERT_TRUE(WaitFor([&] { return by_query.Count() >= 5; }));
  by_query.Stop();
  EXPECT_EQ(tip_messages(by_query.Events()),
            std::vector<std::string>(expected.begin() + 10, expected.end()));
  EXPECT_EQ(by_query.Count(), 5u);

  // Channel and peer events on A: the peer connected, the channel opened,
  // then (after a cooperative close) closing/closed.
  auto close = Call(a, "POST", "/v1/channels/" + ch + "/close", "{}");
  ASSERT_TRUE(close.status == 200 || close.status == 202) << close.body;
  auto channel_states = [&] {
    std::vector<std::string> states;
    for (const Seen& s : a_events.Events()) {
      if (s.type == "channel" && s.event.channel().channel().channel_id() == ch) {
        states.push_back(s.event.channel().channel().state());
      }
    }
    return states;
  };
  ASSERT_TRUE(WaitFor([&] {
    auto st = channel_states();
    return !st.empty() && st.back() == "closed";
  })) << ::testing::PrintToString(channel_states());
  a_events.Stop();
  const auto states = channel_states();
  EXPECT_NE(std::find(states.begin(), states.end(), "open"), states.end())
      << ::testing::PrintToString(states);
  bool peer_connected = false;
  for (const Seen& s : a_events.Events()) {
    EXPECT_TRUE(s.type == "channel" || s.type == "peer") << s.type;
    if (s.type == "peer" && s.event.peer().connected() &&
        s.event.peer().peer().node_id() == b.id.Hex()) {
      peer_connected = true;
    }
  }
  EXPECT_TRUE(peer_connected);
  // The transitions chain: each event's previous_state is the state before.
  std::string prev;
  for (const Seen& s : a_events.Events()) {
    if (s.type != "channel" || s.event.channel().channel().channel_id() != ch) continue;
    if (!prev.empty()) {
      EXPECT_EQ(s.event.channel().previous_state(), prev);
    }
    prev = s.event.channel().channel().state();
  }
}

// Tip events and the answers of keyed tips are stored without the tip body
// (the tip history holds it) and rebuilt on every read: after a restart, a
// replay of the event log renders each tip event byte for byte as the live
// stream did, and a retry with the key gets the first answer byte for byte.
TEST_F(TipsApiTest, TipEventsAndKeyedAnswersReplayByteIdenticalAfterRestart) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(100'000, 0, &a, &b, &ch));
  EventStream live_a(a.rpc, a.token, "/v1/events?types=tip_sent");
  EventStream live_b(b.rpc, b.token, "/v1/events?types=tip_received");
  // Both live streams are subscribed once a probe tip reached both.
  int probe = 0;
  ASSERT_TRUE(WaitFor([&] {
    const size_t na = live_a.Count(), nb = live_b.Count();
    auto r = Tip(a, ch, 1, "probe " + std::to_string(probe), "probe-" + std::to_string(probe));
    ++probe;
    EXPECT_EQ(r.status, 200) << r.body;
    return WaitFor([&] { return live_a.Count() > na && live_b.Count() > nb; }, 500ms);
  }));
  const size_t probes_a = live_a.Count(), probes_b = live_b.Count();
  constexpr int kTips = 6;
  std::vector<std::string> answers;
  for (int i = 0; i < kTips; ++i) {
    auto r =
        Tip(a, ch, 10 + static_cast<uint64_t>(i), "Thanks \\u00e9 #" + std::to_string(i),
            "key-" + std::to_string(i), "", {{"app_name", "podverse"}, {"n", std::to_string(i)}});
    ASSERT_EQ(r.status, 200) << r.body;
    answers.push_back(r.body);
  }
  ASSERT_TRUE(WaitFor(
      [&] { return live_a.Count() >= probes_a + kTips && live_b.Count() >= probes_b + kTips; }));
  live_a.Stop();
  live_b.Stop();
  auto by_id = [](const std::vector<Seen>& seen) {
    std::map<uint64_t, std::string> out;
    for (const Seen& s : seen) out[s.id] = s.data;
    return out;
  };
  const std::map<uint64_t, std::string> first_a = by_id(live_a.Events());
  const std::map<uint64_t, std::string> first_b = by_id(live_b.Events());
  ASSERT_EQ(first_a.size(), probes_a + kTips);
  EXPECT_NE(first_a.rbegin()->second.find("Thanks \u00e9 #5"), std::string::npos)
      << first_a.rbegin()->second;
  EXPECT_NE(first_b.rbegin()->second.find(R"({"key":"n","value":"5"})"), std::string::npos)
      << first_b.rbegin()->second;

  // The answer a retry gets: the first one, replayed.
  auto replayed_of = [](std::string body) {
    const std::string flag = R"("replayed":false)";
    const size_t at = body.find(flag);
    EXPECT_NE(at, std::string::npos) << body;
    if (at != std::string::npos) body.replace(at, flag.size(), R"("replayed":true)");
    return body;
  };
  auto tip_json = [](const std::string& body) {
    return FromJson<v1::TipResponse>(body).tip().SerializeAsString();
  };
  auto check_retries = [&] {
    for (int i = 0; i < kTips; ++i) {
      auto r =
          Tip(a, ch, 10 + static_cast<uint64_t>(i), "Thanks \\u00e9 #" + std::to_string(i),
              "key-" + std::to_string(i), "", {{"app_name", "podverse"}, {"n", std::to_string(i)}});
      ASSERT_EQ(r.status, 200) << r.body;
      const size_t k = static_cast<size_t>(i);
      // Older tips show the newest receipt; the tip itself is unchanged.
      EXPECT_EQ(tip_json(r.body), tip_json(answers[k])) << i;
      if (i + 1 == kTips) {
        EXPECT_EQ(r.body, replayed_of(answers[k]));
      }
    }
  };
  ASSERT_NO_FATAL_FAILURE(check_retries());

  Kill(a, SIGTERM);
  Kill(b, SIGTERM);
  ASSERT_NO_FATAL_FAILURE(Restart(a));
  ASSERT_NO_FATAL_FAILURE(Restart(b));
  ASSERT_NO_FATAL_FAILURE(check_retries());
  EXPECT_EQ(Channel(a, ch).tips_sent(), static_cast<uint64_t>(probe + kTips)) << "paid once";

  // Replayed from the log after the restart: byte-identical to live.
  EventStream replay_a(a.rpc, a.token,
                       "/v1/events?types=tip_sent&from=" + std::to_string(first_a.begin()->first));
  EventStream replay_b(
      b.rpc, b.token,
      "/v1/events?types=tip_received&from=" + std::to_string(first_b.begin()->first));
  ASSERT_TRUE(WaitFor([&] {
    return replay_a.Count() >= first_a.size() && replay_b.Count() >= first_b.size();
  })) << replay_a.Count()
      << " " << replay_b.Count();
  replay_a.Stop();
  replay_b.Stop();
  const auto again_a = by_id(replay_a.Events());
  const auto again_b = by_id(replay_b.Events());
  for (const auto& [id, data] : first_a) EXPECT_EQ(again_a.count(id) ? again_a.at(id) : "", data);
  for (const auto& [id, data] : first_b) EXPECT_EQ(again_b.count(id) ? again_b.at(id) : "", data);
}

// ---------------------------------------------------------------------------
// 6. Deposit top-up.

TEST_F(TipsApiTest, DepositTopUpGrowsBothSidesAndLetsBiggerTipsPass) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(1'000, 0, &a, &b, &ch));
  ASSERT_EQ(Tip(a, ch, 600, "first", "dep-1").status, 200);
  auto over = Tip(a, ch, 500, "too big", "dep-2");
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_TRUE(Contains(over.body, "INSUFFICIENT_SPENDABLE")) << over.body;
  const uint64_t onchain_before =
      FromJson<v1::BalanceResponse>(Call(a, "GET", "/v1/balance").body).onchain();

  auto dep = Call(a, "POST", "/v1/channels/" + ch + "/deposit", R"({"amount":"2000"})");
  ASSERT_EQ(dep.status, 200) << dep.body;
  auto deposited = FromJson<v1::DepositResponse>(dep.body);
  EXPECT_EQ(deposited.tx_id().size(), 64u);
  EXPECT_EQ(deposited.channel().deposit_local(), 3'000u);
  EXPECT_EQ(deposited.channel().balance_local(), 2'400u);
  EXPECT_EQ(Channel(a, ch).deposit_local(), 3'000u);
  // Right after the answer, as a client would: the bigger tip passes (the
  // receiver may see the block a little later; the node resolves that).
  auto bigger = Tip(a, ch, 500, "bigger", "dep-3");
  EXPECT_EQ(bigger.status, 200) << bigger.body;
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).deposit_remote() == 3'000u; }));
  EXPECT_EQ(Channel(b, ch).deposit_local(), 0u);
  // The whole new spendable, and not one more.
  EXPECT_EQ(Tip(a, ch, 1'900, "rest", "dep-4").status, 200);
  auto none_left = Tip(a, ch, 1, "nothing left", "dep-5");
  EXPECT_EQ(none_left.status, 400) << none_left.body;
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).balance_local() == 3'000u; }));
  // The ledger account paid the deposit and its fee.
  const uint64_t fee = genesis_.fee_per_tx();
  EXPECT_EQ(FromJson<v1::BalanceResponse>(Call(a, "GET", "/v1/balance").body).onchain(),
            onchain_before - 2'000 - fee);
  // Refusals: zero, more than the account holds, an unknown channel.
  EXPECT_EQ(Call(a, "POST", "/v1/channels/" + ch + "/deposit", R"({"amount":"0"})").status, 400);
  auto too_much = Call(a, "POST", "/v1/channels/" + ch + "/deposit", R"({"amount":"99000000"})");
  EXPECT_EQ(too_much.status, 409) << too_much.body;
  EXPECT_EQ(
      Call(a, "POST", "/v1/channels/" + std::string(64, 'a') + "/deposit", R"({"amount":"1"})")
          .status,
      404);
  EXPECT_EQ(Channel(a, ch).deposit_local(), 3'000u);
}

// ---------------------------------------------------------------------------
// 7. tipctl's channel commands end to end.

TEST_F(TipsApiTest, TipctlChannelCommandsEndToEnd) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, &a, &b));
  const std::filesystem::path scratch = dir_.path();
  auto ctl = [&](const Node& n, std::vector<std::string> args) {
    args.insert(args.begin(), {"--datadir", NodeDir(n.name).string()});
    return RunTipctl(scratch, args);
  };

  // open
  auto open = ctl(a, {"open", b.id.Hex(), "--deposit", "1000"});
  ASSERT_EQ(open.exit_code, 0) << open;
  EXPECT_TRUE(open.err.empty()) << open;
  auto opened = FromJson<v1::OpenChannelResponse>(open.out).channel();
  const std::string ch = opened.channel_id();
  ASSERT_EQ(ch.size(), 64u) << open;
  EXPECT_EQ(opened.state(), "open");
  EXPECT_EQ(opened.peer_node_id(), b.id.Hex());
  EXPECT_EQ(opened.deposit_local(), 1000u);
  EXPECT_EQ(opened.deposit_remote(), 0u);
  ASSERT_TRUE(WaitState(b, ch, "open"));

  // channels / channel
  auto channels = ctl(a, {"channels"});
  ASSERT_EQ(channels.exit_code, 0) << channels;
  auto list = FromJson<v1::ListChannelsResponse>(channels.out);
  ASSERT_EQ(list.channels_size(), 1) << channels;
  EXPECT_EQ(list.channels(0).channel_id(), ch);
  auto one = ctl(a, {"channel", ch});
  ASSERT_EQ(one.exit_code, 0) << one;
  EXPECT_EQ(FromJson<v1::GetChannelResponse>(one.out).channel().balance_local(), 1000u);
  auto unknown = ctl(a, {"channel", std::string(64, 'b')});
  EXPECT_EQ(unknown.exit_code, 1) << unknown;
  EXPECT_TRUE(Contains(unknown.err, "HTTP 404)")) << unknown;

  // tip
  auto tip = ctl(a, {"tip", "--channel", ch, "5", "hello", "--meta", "app=cli"});
  ASSERT_EQ(tip.exit_code, 0) << tip;
  auto tipped = FromJson<v1::TipResponse>(tip.out);
  EXPECT_EQ(tipped.tip().tip().amount(), 5u);
  EXPECT_EQ(tipped.tip().tip().message(), "hello");
  EXPECT_EQ(MetaOf(tipped.tip().tip()).at("app"), "cli");
  EXPECT_TRUE(tipped.has_receipt()) << tip;
  EXPECT_FALSE(tipped.tip().idempotency_key().empty()) << "tipctl sends a random key";
  // With a key: a repeat replays.
  auto keyed = ctl(a, {"tip", "--channel", ch, "7", "keyed", "--idempotency-key", "cli-k"});
  ASSERT_EQ(keyed.exit_code, 0) << keyed;
  auto keyed_again = ctl(a, {"tip", "--channel", ch, "7", "keyed", "--idempotency-key", "cli-k"});
  ASSERT_EQ(keyed_again.exit_code, 0) << keyed_again;
  EXPECT_TRUE(FromJson<v1::TipResponse>(keyed_again.out).replayed()) << keyed_again;
  // By peer.
  auto by_peer = ctl(a, {"tip", "--peer", b.id.Hex(), "3", "via peer"});
  ASSERT_EQ(by_peer.exit_code, 0) << by_peer;
  EXPECT_EQ(FromJson<v1::TipResponse>(by_peer.out).tip().channel_id(), ch);
  // More than spendable: exit 1 with the API's message, nothing on stdout.
  auto over = ctl(a, {"tip", "--channel", ch, "986", "too much"});
  EXPECT_EQ(over.exit_code, 1) << over;
  EXPECT_TRUE(over.out.empty()) << over;
  EXPECT_TRUE(Contains(over.err, "INSUFFICIENT_SPENDABLE")) << over;
  EXPECT_TRUE(Contains(over.err, "HTTP 400)")) << over;
  EXPECT_EQ(Channel(a, ch).balance_local(), 1000u - 15u);

  // tips --direction sent, received on B. (The order is checked by
  // TipctlTipsListsOldestFirst below.)
  auto sent = ctl(a, {"tips", "--direction", "sent"});
  ASSERT_EQ(sent.exit_code, 0) << sent;
  auto sent_list = FromJson<v1::ListTipsResponse>(sent.out);
  ASSERT_EQ(sent_list.tips_size(), 3) << sent;
  std::set<std::string> sent_messages;
  for (const auto& t : sent_list.tips()) {
    EXPECT_EQ(t.direction(), "sent");
    EXPECT_EQ(t.channel_id(), ch);
    sent_messages.insert(t.tip().message());
  }
  EXPECT_EQ(sent_messages, (std::set<std::string>{"hello", "keyed", "via peer"})) << sent;
  EXPECT_TRUE(sent_list.next_cursor().empty()) << sent;
  auto received = ctl(a, {"tips", "--direction", "received"});
  ASSERT_EQ(received.exit_code, 0) << received;
  EXPECT_EQ(FromJson<v1::ListTipsResponse>(received.out).tips_size(), 0) << received;
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() == 3u; }));
  auto at_b = ctl(b, {"tips", "--direction", "received", "--channel", ch});
  ASSERT_EQ(at_b.exit_code, 0) << at_b;
  EXPECT_EQ(FromJson<v1::ListTipsResponse>(at_b.out).tips_size(), 3) << at_b;
  auto bad_direction = ctl(a, {"tips", "--direction", "sideways"});
  EXPECT_EQ(bad_direction.exit_code, 2) << bad_direction;

  // close (cooperative)
  auto close = ctl(a, {"close", ch});
  ASSERT_EQ(close.exit_code, 0) << close;
  auto closed = FromJson<v1::CloseChannelResponse>(close.out);
  EXPECT_EQ(closed.channel().channel_id(), ch);
  EXPECT_TRUE(closed.channel().state() == "closing" || closed.channel().state() == "closed")
      << close;
  ASSERT_TRUE(WaitState(a, ch, "closed"));
  ASSERT_TRUE(WaitState(b, ch, "closed"));
  auto late = ctl(a, {"tip", "--channel", ch, "1", "late"});
  EXPECT_EQ(late.exit_code, 1) << late;
  EXPECT_TRUE(Contains(late.err, "HTTP 409)")) << late;
  auto again = ctl(a, {"close", ch});
  EXPECT_EQ(again.exit_code, 1) << again;
}

// History pages run from the oldest tip forward (index order).
TEST_F(TipsApiTest, TipctlTipsListsOldestFirst) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(1'000, 0, &a, &b, &ch));
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(Tip(a, ch, 1, "t" + std::to_string(i), "order-" + std::to_string(i)).status, 200);
  }
  auto sent =
      RunTipctl(dir_.path(), {"--datadir", NodeDir("a").string(), "tips", "--direction", "sent"});
  ASSERT_EQ(sent.exit_code, 0) << sent;
  auto list = FromJson<v1::ListTipsResponse>(sent.out);
  ASSERT_EQ(list.tips_size(), 3) << sent;
  EXPECT_EQ(list.tips(0).tip().message(), "t1") << sent;
  EXPECT_EQ(list.tips(2).tip().message(), "t3") << sent;
}

// The history keeps the key a sent tip was paid with.
TEST_F(TipsApiTest, HistoryOfSentTipsCarriesTheIdempotencyKey) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(1'000, 0, &a, &b, &ch));
  auto r = Tip(a, ch, 1, "keyed", "history-key");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(FromJson<v1::TipResponse>(r.body).tip().idempotency_key(), "history-key");
  auto sent = History(a, ch, "sent");
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent.begin()->second.idempotency_key(), "history-key");
}

}  // namespace
}  // namespace tipd::testing
