// The webhook dispatcher in one process: a real database, committer and
// event log, a fake HTTP sender (the WebhookSender seam) answered by the
// test, and manual time (ManualClock + ManualTimers), so backoff schedules
// and the 72 h limit run without sleeping. Plus the URL and address policy
// and the signature format against the Standard Webhooks test vector.
#include "api/webhooks.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <deque>
#include <random>

#include "api/events.h"
#include "api/rpc_server.h"
#include "crypto/crypto.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "util/bytes.h"

namespace tipd::api {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;

constexpr int64_t kNow = 1'700'000'000'000;

std::string Base64Decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = val(c);
    if (v < 0) break;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// A seeded, reproducible RandomSource.
class SeededRng final : public crypto::RandomSource {
 public:
  explicit SeededRng(uint64_t seed) : gen_(seed) {}
  void Fill(std::span<uint8_t> out) override {
    for (uint8_t& b : out) b = static_cast<uint8_t>(gen_());
  }

 private:
  std::mt19937_64 gen_;
};

// Requests wait until the test answers them; answers run on the io thread
// (never inside Send), as the real sender's do.
class FakeSender final : public WebhookSender {
 public:
  struct Sent {
    WebhookHttpRequest request;
    std::function<void(WebhookHttpResult)> done;
    int64_t at_ms = 0;
    uint64_t event_id = 0;
  };
  FakeSender(net::io_context& io, const Clock& clock) : io_(io), clock_(clock) {}
  void Send(WebhookHttpRequest request, std::function<void(WebhookHttpResult)> done) override {
    Sent s;
    for (const auto& [k, v] : request.headers) {
      if (k == "webhook-id") s.event_id = std::stoull(v.substr(4));
    }
    s.request = std::move(request);
    s.done = std::move(done);
    s.at_ms = clock_.NowMs();
    pending.push_back(std::move(s));
    ++sent_total;
  }
  // Answers the oldest pending request with `status` (0: a network error).
  Sent Answer(int status) {
    EXPECT_FALSE(pending.empty());
    Sent s = std::move(pending.front());
    pending.pop_front();
    WebhookHttpResult r;
    r.status_code = status;
    if (status == 0) r.error = "connection refused";
    net::post(io_, [done = s.done, r] { done(r); });
    return s;
  }
  std::deque<Sent> pending;
  size_t sent_total = 0;

 private:
  net::io_context& io_;
  const Clock& clock_;
};

std::string Header(const WebhookHttpRequest& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

v1::Event PeerEvent(const std::string& note) {
  v1::Event e;
  e.set_type(std::string(kEventPeer));
  e.mutable_peer()->mutable_peer()->set_node_id(note);
  e.mutable_peer()->set_connected(true);
  return e;
}

v1::Event AckEvent(uint64_t nonce) {
  v1::Event e;
  e.set_type(std::string(kEventAck));
  e.mutable_ack()->set_channel_id("ab01");
  e.mutable_ack()->set_nonce(nonce);
  return e;
}

class WebhookDispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::TestSeed();
    rng_ = std::make_unique<SeededRng>(seed_);
    OpenAll();
  }
  void TearDown() override {
    CloseAll();
    if (HasFailure()) std::cerr << "TIPD_TEST_SEED=" << seed_ << "\n";
  }

  void OpenAll() {
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    committer_ = std::make_unique<storage::GroupCommitter>(db_.get());
    auto log = EventLog::Open(io_, db_.get(), committer_.get(), clock_, log_options_);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(*log);
    sender_ = std::make_unique<FakeSender>(io_, clock_);
    auto d = WebhookDispatcher::Open(io_, db_.get(), committer_.get(), log_.get(), sender_.get(),
                                     clock_, timers_, *rng_, options_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dispatcher_ = std::move(*d);
    Settle();
  }
  void CloseAll() {
    if (committer_) committer_->Stop();
    io_.restart();
    io_.poll();
    dispatcher_.reset();
    sender_.reset();
    log_.reset();
    committer_.reset();
    db_.reset();
  }
  void Reopen() {
    CloseAll();
    OpenAll();
  }

  // Runs the io_context until nothing is left to do right now (commits
  // handed back included), up to 10 s.
  void Settle() {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    int quiet = 0;
    while (quiet < 3 && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      const size_t ran = io_.poll();
      if (ran == 0 && committer_->outstanding() == 0) {
        ++quiet;
      } else {
        quiet = 0;
        if (ran == 0) std::this_thread::sleep_for(1ms);
      }
    }
  }

  WebhookDispatcher::Created Create(std::vector<std::string> types = {},
                                    const std::string& url = "http://127.0.0.1:9/hook") {
    v1::CreateWebhookRequest req;
    req.set_url(url);
    for (auto& t : types) req.add_event_types(t);
    std::optional<WebhookResult<WebhookDispatcher::Created>> out;
    dispatcher_->Create(req, [&](WebhookResult<WebhookDispatcher::Created> r) { out = r; });
    Settle();
    EXPECT_TRUE(out.has_value());
    EXPECT_TRUE(out && out->ok());
    return out && out->ok() ? **out : WebhookDispatcher::Created{};
  }

  uint64_t Append(v1::Event e) {
    const uint64_t id = log_->Append(std::move(e));
    Settle();
    return id;
  }

  v1::Webhook Get(const std::string& id) {
    auto w = dispatcher_->Get(id);
    EXPECT_TRUE(w.has_value());
    return w.value_or(v1::Webhook());
  }

  // Advances manual time to the next retry and settles.
  void AdvanceToNextAttempt(const std::string& id) {
    const v1::Webhook w = Get(id);
    ASSERT_GT(w.next_attempt_at_ms(), 0u);
    const int64_t wait = static_cast<int64_t>(w.next_attempt_at_ms()) - clock_.NowMs();
    timers_.AdvanceMs(std::max<int64_t>(wait, 0));
    Settle();
  }

  uint64_t seed_ = 0;
  testing::TempDir dir_{"tipd-webhooks"};
  net::io_context io_;
  ManualClock clock_{kNow};
  ManualTimers timers_{clock_};
  std::unique_ptr<SeededRng> rng_;
  EventLogOptions log_options_;
  WebhookOptions options_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<FakeSender> sender_;
  std::unique_ptr<WebhookDispatcher> dispatcher_;
};

TEST(WebhookSignatureTest, MatchesTheStandardWebhooksVector) {
  // From the Standard Webhooks reference libraries' tests.
  const std::string secret = Base64Decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  EXPECT_EQ(SignWebhook(AsSpan(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                        R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_EQ(Base64Encode(AsSpan(std::string("ab"))), "YWI=");
  EXPECT_EQ(Base64Encode(AsSpan(std::string("a"))), "YQ==");
  EXPECT_EQ(Base64Encode(AsSpan(std::string("abc"))), "YWJj");
}

TEST(WebhookUrlTest, RefusesMalformedUrlsWithTheirReason) {
  struct Case {
    std::string url;
    std::string says;
  };
  const std::vector<Case> bad = {
      {"", "required"},
      {"example.com/hook", "https://"},
      {"ftp://example.com/", "scheme 'ftp'"},
      {"file:///etc/passwd", "scheme 'file'"},
      {"javascript://x", "scheme 'javascript'"},
      {"https://user:pw@example.com/", "user name or password"},
      {"https://@example.com/", "user name"},
      {"https://example.com/a#frag", "fragment"},
      {"https://exa mple.com/", "space"},
      {"https://example.com/\n", "control"},
      {"https:///path", "no host"},
      {"https://:443/", "no host"},
      {"https://example.com:0/", "1..65535"},
      {"https://example.com:65536/", "1..65535"},
      {"https://example.com:12ab/", "1..65535"},
      {"https://example.com:/", "empty port"},
      {"https://[::1/", "unclosed"},
      {"https://[zz::1]/", "IPv6"},
      {"https://exa_mple.com/", "character"},
      {"https://.example.com/", "not a valid name"},
      {"https://" + std::string(3000, 'a') + ".com/", "2048"},
  };
  for (const Case& c : bad) {
    auto r = ParseWebhookUrl(c.url);
    ASSERT_FALSE(r.ok()) << c.url;
    EXPECT_EQ(r.error().code, kBadWebhookUrl) << c.url;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos)
        << c.url << " -> " << r.error().message;
  }
  auto ok = ParseWebhookUrl("HTTPS://Example.COM:8443/a/b?x=1");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->https);
  EXPECT_EQ(ok->host, "example.com");
  EXPECT_EQ(ok->port, 8443);
  EXPECT_EQ(ok->target, "/a/b?x=1");
  auto v6 = ParseWebhookUrl("http://[::1]:8080");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->target, "/");
  EXPECT_EQ(ParseWebhookUrl("http://localhost/x")->port, 80);
}

TEST(WebhookUrlTest, ForbidsPrivateLinkLocalAndMetadataAddresses) {
  const std::vector<std::string> forbidden = {
      "10.1.2.3",       "172.16.0.1",      "172.31.255.255",
      "192.168.1.1",    "169.254.169.254", "100.64.0.1",
      "0.0.0.0",        "224.0.0.1",       "255.255.255.255",
      "fd00:ec2::254",  "fe80::1",         "::",
      "ff02::1",        "::ffff:10.0.0.1", "::ffff:169.254.169.254",
      "64:ff9b::a00:1", "64:ff9b::7f00:1"};
  for (const std::string& text : forbidden) {
    const auto address = net::ip::make_address(text);
    EXPECT_TRUE(ForbiddenAddressReason(address, false).has_value()) << text;
  }
  const std::vector<std::string> allowed = {
      "127.0.0.1", "127.8.9.10",           "::1",        "::ffff:127.0.0.1",
      "8.8.8.8",   "2001:4860:4860::8888", "172.32.0.1", "192.169.0.1"};
  for (const std::string& text : allowed) {
    EXPECT_FALSE(ForbiddenAddressReason(net::ip::make_address(text), false).has_value()) << text;
  }
  // webhook-allow-private lets the private ones through.
  EXPECT_FALSE(ForbiddenAddressReason(net::ip::make_address("10.1.2.3"), true).has_value());
  EXPECT_FALSE(ForbiddenAddressReason(net::ip::make_address("169.254.169.254"), true).has_value());
}

TEST_F(WebhookDispatcherTest, DeliversSignedEventsInOrderAndMovesTheCursorOnlyAfterA2xx) {
  const auto created = Create();
  const std::string id = created.webhook.id();
  ASSERT_EQ(created.secret.rfind("whsec_", 0), 0u);
  const std::string secret = Base64Decode(created.secret.substr(6));
  ASSERT_EQ(secret.size(), 32u);

  const uint64_t e1 = Append(PeerEvent("one"));
  const uint64_t e2 = Append(PeerEvent("two"));
  const uint64_t e3 = Append(PeerEvent("three"));
  // One request in flight per endpoint: only the first event has left.
  ASSERT_EQ(sender_->pending.size(), 1u);
  const auto& first = sender_->pending.front().request;
  EXPECT_EQ(Header(first, "webhook-id"), "evt_" + std::to_string(e1));
  const std::string ts = Header(first, "webhook-timestamp");
  EXPECT_EQ(ts, std::to_string(kNow / 1000));
  // The body is the event's JSON exactly as the SSE stream sends it.
  auto stored = log_->ReadAfter(e1 - 1, 1);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(first.body, ToJson(stored->at(0)));
  EXPECT_EQ(Header(first, "webhook-signature"),
            SignWebhook(AsSpan(secret), "evt_" + std::to_string(e1), kNow / 1000, first.body));

  // A 500: the cursor stays, the same event is retried later.
  sender_->Answer(500);
  Settle();
  EXPECT_EQ(Get(id).cursor(), e1 - 1);
  EXPECT_EQ(Get(id).consecutive_failures(), 1u);
  EXPECT_TRUE(sender_->pending.empty());
  AdvanceToNextAttempt(id);
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, e1);
  sender_->Answer(204);
  Settle();
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, e2);
  EXPECT_EQ(Get(id).cursor(), e1);
  sender_->Answer(200);
  Settle();
  EXPECT_EQ(sender_->pending.front().event_id, e3);
  sender_->Answer(299);
  Settle();
  EXPECT_TRUE(sender_->pending.empty());
  EXPECT_EQ(Get(id).cursor(), e3);
  EXPECT_EQ(Get(id).failing_since_ms(), 0u);

  // The attempts are recorded, newest first.
  auto deliveries = dispatcher_->Deliveries(id, 10);
  ASSERT_TRUE(deliveries.ok());
  ASSERT_EQ(deliveries->size(), 4u);
  EXPECT_EQ((*deliveries)[0].event_id(), e3);
  EXPECT_EQ((*deliveries)[3].event_id(), e1);
  EXPECT_EQ((*deliveries)[3].status_code(), 500u);
  EXPECT_EQ((*deliveries)[3].error(), "answered HTTP 500");
  EXPECT_GT((*deliveries)[3].next_attempt_at_ms(), 0u);
  EXPECT_EQ((*deliveries)[2].attempt(), 2u);
  EXPECT_EQ((*deliveries)[2].status_code(), 204u);
}

TEST_F(WebhookDispatcherTest, BacksOffExponentiallyWithFullJitterWithinItsBounds) {
  const std::string id = Create().webhook.id();
  Append(PeerEvent("x"));
  std::vector<int64_t> waits;
  int64_t last_send = clock_.NowMs();
  for (int n = 1; n <= 16; ++n) {
    ASSERT_EQ(sender_->pending.size(), 1u) << "attempt " << n;
    last_send = sender_->pending.front().at_ms;
    sender_->Answer(n % 2 ? 503 : 0);
    Settle();
    const v1::Webhook w = Get(id);
    EXPECT_EQ(w.consecutive_failures(), static_cast<uint32_t>(n));
    const int64_t wait = static_cast<int64_t>(w.next_attempt_at_ms()) - last_send;
    // Retry n waits in [base, min(cap, base * 2^(n-1))].
    const int64_t base = options_.retry_base.count();
    const int64_t ceiling =
        std::min<int64_t>(options_.retry_cap.count(), base << std::min(n - 1, 30));
    EXPECT_GE(wait, base) << "retry " << n;
    EXPECT_LE(wait, ceiling) << "retry " << n;
    waits.push_back(wait);
    AdvanceToNextAttempt(id);
    // Nothing leaves before its time: the attempt came exactly when due.
    ASSERT_EQ(sender_->pending.size(), 1u);
    EXPECT_EQ(sender_->pending.front().at_ms, static_cast<int64_t>(w.next_attempt_at_ms()));
  }
  // Jittered, not a fixed schedule: the capped tail is not all one value.
  std::set<int64_t> tail(waits.begin() + 12, waits.end());
  EXPECT_GT(tail.size(), 1u);
  // And it grows: the late waits are, on the whole, far above the first ones.
  EXPECT_GT(waits[12] + waits[13] + waits[14] + waits[15],
            4 * (waits[0] + waits[1] + waits[2] + waits[3]));
}

TEST_F(WebhookDispatcherTest, DisablesAnEndpointFailingForThreeDaysAndSaysSo) {
  const std::string id = Create().webhook.id();
  // A second endpoint that only wants webhook_disabled events hears of it.
  const std::string watcher = Create({std::string(kEventWebhookDisabled)}).webhook.id();
  const int64_t start = clock_.NowMs();
  Append(PeerEvent("x"));
  int attempts = 0;
  while (Get(id).enabled()) {
    ASSERT_LT(attempts, 1000);
    ASSERT_FALSE(sender_->pending.empty());
    ASSERT_EQ(sender_->pending.front().event_id, 1u);
    sender_->Answer(502);
    ++attempts;
    Settle();
    if (Get(id).enabled()) AdvanceToNextAttempt(id);
  }
  const v1::Webhook w = Get(id);
  const int64_t failed_for = clock_.NowMs() - start;
  EXPECT_GE(failed_for, 72LL * 3600 * 1000);
  // Not much later than that: the cap is one hour.
  EXPECT_LE(failed_for, 73LL * 3600 * 1000);
  EXPECT_GT(attempts, 70);
  EXPECT_NE(w.disabled_reason().find("failed for"), std::string::npos) << w.disabled_reason();
  EXPECT_EQ(w.next_attempt_at_ms(), 0u);
  // The event: stored in the log, and delivered to the watcher.
  auto events = log_->ReadAfter(1, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ(events->at(0).type(), kEventWebhookDisabled);
  EXPECT_EQ(events->at(0).webhook().webhook().id(), id);
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, events->at(0).id());
  EXPECT_NE(sender_->pending.front().request.body.find(id), std::string::npos);
  sender_->Answer(200);
  Settle();
  EXPECT_EQ(Get(watcher).cursor(), events->at(0).id());
  // Disabled: no more attempts, whatever time passes.
  const size_t sent = sender_->sent_total;
  timers_.AdvanceMs(24LL * 3600 * 1000);
  Append(PeerEvent("y"));
  EXPECT_EQ(sender_->sent_total, sent);
  // Redeliver turns it back on, from the event asked for.
  std::optional<WebhookResult<v1::Webhook>> r;
  dispatcher_->Redeliver(id, 1, [&](WebhookResult<v1::Webhook> x) { r = x; });
  Settle();
  ASSERT_TRUE(r && r->ok());
  EXPECT_TRUE((*r)->enabled());
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, 1u);
}

TEST_F(WebhookDispatcherTest, TheCursorSurvivesAReopenAndTheEventInFlightIsSentAgain) {
  const std::string id = Create().webhook.id();
  for (int i = 0; i < 4; ++i) Append(PeerEvent("e" + std::to_string(i)));
  sender_->Answer(200);
  Settle();
  sender_->Answer(200);
  Settle();
  // Event 3 is in flight when the node goes down.
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, 3u);
  Reopen();
  EXPECT_EQ(Get(id).cursor(), 2u);
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, 3u);  // at least once
  sender_->Answer(200);
  Settle();
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, 4u);
  sender_->Answer(200);
  Settle();
  EXPECT_EQ(Get(id).cursor(), 4u);
  // A pending retry keeps its time across a reopen (and the 3-day clock).
  Append(PeerEvent("e5"));
  sender_->Answer(500);
  Settle();
  const v1::Webhook before = Get(id);
  ASSERT_GT(before.next_attempt_at_ms(), 0u);
  Reopen();
  EXPECT_TRUE(sender_->pending.empty());
  EXPECT_EQ(Get(id).failing_since_ms(), before.failing_since_ms());
  AdvanceToNextAttempt(id);
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, 5u);
}

TEST_F(WebhookDispatcherTest, SkipsUnwantedTypesWithoutSendingThem) {
  const std::string id = Create({std::string(kEventAck)}).webhook.id();
  Append(PeerEvent("a"));
  const uint64_t ack = Append(AckEvent(1));
  Append(PeerEvent("b"));
  ASSERT_EQ(sender_->pending.size(), 1u);
  EXPECT_EQ(sender_->pending.front().event_id, ack);
  sender_->Answer(200);
  Settle();
  EXPECT_TRUE(sender_->pending.empty());
  EXPECT_EQ(Get(id).cursor(), 3u);
}

TEST_F(WebhookDispatcherTest, ARotatedSecretSignsBesideTheOldOneUntilTheOverlapEnds) {
  const auto created = Create();
  const std::string id = created.webhook.id();
  const std::string old_secret = Base64Decode(created.secret.substr(6));
  std::optional<WebhookResult<v1::RotateWebhookSecretResponse>> rotated;
  dispatcher_->RotateSecret(id, 60'000,
                            [&](WebhookResult<v1::RotateWebhookSecretResponse> r) { rotated = r; });
  Settle();
  ASSERT_TRUE(rotated && rotated->ok());
  const std::string new_secret = Base64Decode((*rotated)->secret().substr(6));
  ASSERT_NE(new_secret, old_secret);
  Append(PeerEvent("a"));
  ASSERT_EQ(sender_->pending.size(), 1u);
  const auto& r1 = sender_->pending.front().request;
  const int64_t ts = std::stoll(Header(r1, "webhook-timestamp"));
  EXPECT_EQ(Header(r1, "webhook-signature"),
            SignWebhook(AsSpan(new_secret), "evt_1", ts, r1.body) + " " +
                SignWebhook(AsSpan(old_secret), "evt_1", ts, r1.body));
  sender_->Answer(200);
  Settle();
  timers_.AdvanceMs(60'000);
  Append(PeerEvent("b"));
  ASSERT_EQ(sender_->pending.size(), 1u);
  const auto& r2 = sender_->pending.front().request;
  EXPECT_EQ(Header(r2, "webhook-signature"),
            SignWebhook(AsSpan(new_secret), "evt_2", std::stoll(Header(r2, "webhook-timestamp")),
                        r2.body));
  // Too long an overlap is refused.
  std::optional<WebhookResult<v1::RotateWebhookSecretResponse>> bad;
  dispatcher_->RotateSecret(id, 8ULL * 24 * 3600 * 1000,
                            [&](WebhookResult<v1::RotateWebhookSecretResponse> r) { bad = r; });
  ASSERT_TRUE(bad && !bad->ok());
  EXPECT_EQ(bad->error().code, "BAD_OVERLAP");
}

TEST_F(WebhookDispatcherTest, ASlowEndpointDoesNotHoldAnotherBack) {
  const std::string slow = Create({}, "http://127.0.0.1:9/slow").webhook.id();
  const std::string fast = Create({}, "http://127.0.0.1:9/fast").webhook.id();
  for (int i = 0; i < 5; ++i) Append(PeerEvent("e" + std::to_string(i)));
  // Both got event 1; the slow one never answers, the fast one goes on.
  ASSERT_EQ(sender_->pending.size(), 2u);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(sender_->pending.size(), 2u);
    auto it =
        std::find_if(sender_->pending.begin(), sender_->pending.end(),
                     [&](const FakeSender::Sent& s) { return s.request.url.target == "/fast"; });
    ASSERT_NE(it, sender_->pending.end());
    FakeSender::Sent s = std::move(*it);
    sender_->pending.erase(it);
    WebhookHttpResult ok;
    ok.status_code = 200;
    net::post(io_, [done = s.done, ok] { done(ok); });
    Settle();
  }
  EXPECT_EQ(Get(fast).cursor(), 5u);
  EXPECT_EQ(Get(slow).cursor(), 0u);
  EXPECT_EQ(dispatcher_->in_flight(), 1u);
}

TEST_F(WebhookDispatcherTest, BoundsRequestsInFlightAcrossEndpoints) {
  CloseAll();
  options_.max_concurrent = 2;
  OpenAll();
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Create().webhook.id());
  Append(PeerEvent("x"));
  EXPECT_EQ(sender_->pending.size(), 2u);
  EXPECT_EQ(dispatcher_->in_flight(), 2u);
  sender_->Answer(200);
  Settle();
  EXPECT_EQ(sender_->pending.size(), 2u);  // a waiting endpoint took the slot
  sender_->Answer(200);
  sender_->Answer(200);
  Settle();
  sender_->Answer(200);
  Settle();
  EXPECT_TRUE(sender_->pending.empty());
  for (const std::string& id : ids) EXPECT_EQ(Get(id).cursor(), 1u);
}

TEST_F(WebhookDispatcherTest, HoldsPruningForAnEnabledEndpointAndDisablesOneTooFarBehind) {
  CloseAll();
  log_options_.retain = 10;
  log_options_.prune_every = 1;
  log_options_.max_held = 20;
  OpenAll();
  const std::string id = Create().webhook.id();
  Append(PeerEvent("first"));
  sender_->Answer(500);  // event 1 stays undelivered
  Settle();
  for (int i = 0; i < 25; ++i) Append(PeerEvent("n" + std::to_string(i)));
  // 26 events, retain 10: without the hold, 1..16 would be gone.
  EXPECT_EQ(log_->first_id(), 1u);
  EXPECT_TRUE(Get(id).enabled());
  // Past retain + max_held the log prunes anyway; the endpoint says so.
  for (int i = 0; i < 10; ++i) Append(PeerEvent("m" + std::to_string(i)));
  EXPECT_GT(log_->first_id(), 1u);
  AdvanceToNextAttempt(id);
  const v1::Webhook w = Get(id);
  EXPECT_FALSE(w.enabled());
  EXPECT_NE(w.disabled_reason().find("fell behind the event log"), std::string::npos)
      << w.disabled_reason();
  // A delivered endpoint releases the hold: the log prunes to its retain.
  std::optional<WebhookResult<v1::Webhook>> r;
  dispatcher_->Redeliver(id, log_->first_id(), [&](WebhookResult<v1::Webhook> x) { r = x; });
  Settle();
  ASSERT_TRUE(r && r->ok());
  while (!sender_->pending.empty()) {
    sender_->Answer(200);
    Settle();
  }
  Append(PeerEvent("last"));
  while (!sender_->pending.empty()) {
    sender_->Answer(200);
    Settle();
  }
  Append(PeerEvent("after"));
  EXPECT_GE(log_->first_id(), log_->last_id() - 10);
}

TEST_F(WebhookDispatcherTest, RefusesBadRequestsWithCodes) {
  auto create = [&](v1::CreateWebhookRequest req) {
    std::optional<WebhookResult<WebhookDispatcher::Created>> out;
    dispatcher_->Create(req, [&](WebhookResult<WebhookDispatcher::Created> r) { out = r; });
    Settle();
    EXPECT_TRUE(out.has_value());
    return out ? (out->ok() ? std::string("OK") : out->error().code) : std::string("none");
  };
  v1::CreateWebhookRequest req;
  req.set_url("gopher://x/");
  EXPECT_EQ(create(req), "BAD_WEBHOOK_URL");
  req.set_url("http://127.0.0.1/");
  req.add_event_types("tip_recieved");
  EXPECT_EQ(create(req), "UNKNOWN_EVENT_TYPE");
  req.clear_event_types();
  req.set_allow_insecure_http(true);  // the node's config does not allow it
  EXPECT_EQ(create(req), "INSECURE_WEBHOOK_URL");
  req.set_allow_insecure_http(false);
  std::optional<WebhookResult<v1::Webhook>> r;
  dispatcher_->Delete("00", [&](WebhookResult<v1::Webhook> x) { r = x; });
  ASSERT_TRUE(r && !r->ok());
  EXPECT_EQ(r->error().code, "WEBHOOK_NOT_FOUND");
  EXPECT_EQ(r->error().http_status, 404);
  const std::string id = Create().webhook.id();
  r.reset();
  dispatcher_->Redeliver(id, 99, [&](WebhookResult<v1::Webhook> x) { r = x; });
  ASSERT_TRUE(r && !r->ok());
  EXPECT_EQ(r->error().code, "EVENT_NOT_RETAINED");
  // Deleted: gone from the list, its records too, nothing more is sent.
  r.reset();
  dispatcher_->Delete(id, [&](WebhookResult<v1::Webhook> x) { r = x; });
  Settle();
  ASSERT_TRUE(r && r->ok());
  EXPECT_FALSE(dispatcher_->Get(id).has_value());
  Append(PeerEvent("x"));
  EXPECT_TRUE(sender_->pending.empty());
  size_t left = 0;
  ASSERT_TRUE(db_->ScanPrefix("W", 100,
                              [&](std::string_view, std::string_view) {
                                ++left;
                                return Status::Ok();
                              })
                  .ok());
  EXPECT_EQ(left, 0u);
  Reopen();
  EXPECT_TRUE(dispatcher_->List().empty());
}

}  // namespace
}  // namespace tipd::api
