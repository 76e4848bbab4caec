// Live channels between real `tipd node` processes on loopback: open on the
// ledger, tips with messages both ways, cooperative and unilateral closes,
// the watcher against a dishonest closer, SIGKILL mid-stream, refusals.
#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <set>
#include <thread>

#include "api/auth.h"
#include "channel/codec.h"
#include "node/channel_db.h"
#include "tests/integration/channel_fixture.h"
#include "tests/support/http_client.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

// One tip request's outcome as the API answered it.
struct Sent {
  int status = 0;
  std::string message;
  uint64_t index = 0;
  uint64_t amount = 0;
  bool replayed = false;             // the 200 belonged to an earlier attempt with the same key
  std::vector<std::string> retries;  // every answer before the last, "<status> <body>"
};

// How the answers of a retrying stream were spent.
struct RetryTally {
  std::atomic<int> pending{0};       // 202: accepted, not yet acked
  std::atomic<int> peer_offline{0};  // 503 PEER_OFFLINE: the peer restarts
  std::atomic<int> no_answer{0};     // status 0: this node restarts
  std::atomic<int> replayed{0};      // 200 with replayed: true
};

std::string Msg(const std::string& prefix, int i) {
  // Non-ASCII on purpose: messages must come back byte-identical.
  return prefix + " #" + std::to_string(i) + " \xc3\xa9pisode \xe2\x9c\x93";
}

class ChannelNetTest : public ChannelFixture {
 protected:
  // `count` tips from `n` on `ch` over `threads` concurrent clients; amounts
  // cycle 1..5. Without `retry` every answer must be 200.
  //
  // With `retry` (a peer or this node restarting), a request is retried with
  // the same idempotency key until it is answered 200, and every answer before
  // that must be one docs/api.md and docs/channels.md name as retryable:
  //   202                  accepted, not acked within 30 s (it stays pending);
  //   503 PEER_OFFLINE     the peer is away (it restarts);
  //   0 (no answer)        only while `node_down` says this node is down.
  // Anything else, or no 200 within a minute, fails the test. A request that
  // an earlier attempt signed into an update (202 with an index) must come
  // back replayed with that index: it is never paid twice.
  std::vector<Sent> Stream(const Node& n, const std::string& ch, int count, int threads,
                           const std::string& prefix, bool retry = false,
                           const std::atomic<bool>* node_down = nullptr,
                           RetryTally* tally = nullptr) {
    std::vector<Sent> out(static_cast<size_t>(count));
    std::atomic<int> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = next++; i < count; i = next++) {
          Sent& s = out[static_cast<size_t>(i)];
          s.message = Msg(prefix, i);
          s.amount = static_cast<uint64_t>(i % 5 + 1);
          const std::string key = prefix + "-" + std::to_string(i);
          const auto deadline = std::chrono::steady_clock::now() + 60s;
          uint64_t signed_index = 0;  // from a 202 that carried the tip
          for (;;) {
            const bool down_before = node_down != nullptr && node_down->load();
            auto r = Tip(n, ch, s.amount, s.message, key, "",
                         {{"app_name", "itest"}, {"sender_name", n.name}});
            s.status = r.status;
            if (r.status == 200) {
              const auto res = FromJson<v1::TipResponse>(r.body);
              s.index = res.tip().tip().index();
              s.replayed = res.replayed();
              if (s.replayed && tally != nullptr) ++tally->replayed;
              if (signed_index != 0) {
                EXPECT_TRUE(s.replayed) << key << " was signed before: " << r.body;
                EXPECT_EQ(s.index, signed_index) << key << ": " << r.body;
              }
              break;
            }
            if (!retry) {
              ADD_FAILURE() << key << ": " << r.status << " " << r.body;
              break;
            }
            const bool down = down_before || (node_down != nullptr && node_down->load());
            if (r.status == 202) {
              if (tally != nullptr) ++tally->pending;
              const auto res = FromJson<v1::TipResponse>(r.body);
              if (res.has_tip() && res.tip().tip().index() != 0) {
                if (signed_index != 0) {
                  EXPECT_EQ(res.tip().tip().index(), signed_index) << key;
                }
                signed_index = res.tip().tip().index();
              }
            } else if (r.status == 503 && r.body.find("PEER_OFFLINE") != std::string::npos) {
              if (tally != nullptr) ++tally->peer_offline;
            } else if (r.status == 0 && down) {
              if (tally != nullptr) ++tally->no_answer;
            } else {
              ADD_FAILURE() << key << ": an answer that is not retryable"
                            << (r.status == 0 ? " (no answer while the node was up)" : "") << ": "
                            << r.status << " " << r.body;
              break;
            }
            s.retries.push_back(std::to_string(r.status) + " " + r.body);
            if (std::chrono::steady_clock::now() > deadline) {
              std::string seen;
              for (const auto& a : s.retries) seen += "\n  " + a;
              ADD_FAILURE() << key << ": no 200 within 60 s; answers:" << seen;
              break;
            }
            std::this_thread::sleep_for(50ms);
          }
        }
      });
    }
    for (auto& t : pool) t.join();
    return out;
  }

  // The ledger's record of `ch`, from an in-test follower.
  std::optional<ledger::Channel> Onchain(TestClient& c, const std::string& ch) {
    auto id = HexDecodeFixed<32>(ch);
    if (!id.ok()) return std::nullopt;
    const ledger::Channel* p = c.chain().state().FindChannel(*id);
    if (p == nullptr) return std::nullopt;
    return *p;
  }

  bool WaitSettled(TestClient& c, const std::string& ch, std::chrono::milliseconds timeout = 60s) {
    return RunUntil(
        c.io(),
        [&] {
          auto oc = Onchain(c, ch);
          return oc && oc->phase == ledger::ChannelPhase::kSettled;
        },
        timeout);
  }
};

uint64_t Sum(const std::vector<Sent>& v) {
  uint64_t s = 0;
  for (const Sent& x : v) {
    if (x.status == 200) s += x.amount;
  }
  return s;
}

TEST_F(ChannelNetTest, TenThousandTipsBothWaysThenCooperativeClose) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, &a, &b));
  constexpr uint64_t kDa = 400'000, kDb = 300'000;
  const std::string ch = Open(a, b, kDa, kDb);
  ASSERT_FALSE(ch.empty());

  const auto start = std::chrono::steady_clock::now();
  std::vector<Sent> ab, ba;
  std::thread t1([&] { ab = Stream(a, ch, 5000, 8, "a2b"); });
  std::thread t2([&] { ba = Stream(b, ch, 5000, 8, "b2a"); });
  t1.join();
  t2.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto* v : {&ab, &ba}) {
    for (const Sent& s : *v) ASSERT_EQ(s.status, 200) << s.message;
  }
  std::cout << "[ figures ] 10000 tips (5000 each way, 16 concurrent API clients) in " << secs
            << " s = " << 10000 / secs << " tips/s\n";
  RecordProperty("tips_per_second", std::to_string(static_cast<int>(10000 / secs)));

  // Every tip arrived with its message, byte-identical, under the index
  // the sender was told.
  auto received_b = History(b, ch, "received");
  auto received_a = History(a, ch, "received");
  ASSERT_EQ(received_b.size(), 5000u);
  ASSERT_EQ(received_a.size(), 5000u);
  for (const Sent& s : ab) {
    ASSERT_EQ(received_b.at(s.index).tip().message(), s.message);
    ASSERT_EQ(received_b.at(s.index).tip().amount(), s.amount);
  }
  for (const Sent& s : ba) ASSERT_EQ(received_a.at(s.index).tip().message(), s.message);
  const uint64_t t_ab = Sum(ab), t_ba = Sum(ba);
  v1::ChannelApi view_a = Channel(a, ch);
  EXPECT_EQ(view_a.balance_local(), kDa - t_ab + t_ba);
  EXPECT_EQ(view_a.tips_sent(), 5000u);
  EXPECT_EQ(view_a.tips_received(), 5000u);

  // Cooperative close: the ledger pays dA - T(A->B) + T(B->A) and the mirror.
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  auto close = Call(a, "POST", "/v1/channels/" + ch + "/close", "{}");
  ASSERT_TRUE(close.status == 200 || close.status == 202) << close.body;
  ASSERT_TRUE(WaitSettled(*client, ch));
  auto oc = Onchain(*client, ch);
  EXPECT_EQ(oc->payout_a, kDa - t_ab + t_ba);
  EXPECT_EQ(oc->payout_b, kDb + t_ab - t_ba);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  EXPECT_TRUE(WaitState(a, ch, "closed"));
  EXPECT_TRUE(WaitState(b, ch, "closed"));
  // A closed channel takes no tips.
  auto late = Tip(a, ch, 1, "too late");
  EXPECT_EQ(late.status, 409) << late.body;
}

TEST_F(ChannelNetTest, UnilateralCloseWhilePartnerOfflineWatcherSubmitsItsProof) {
  Node a, b;
  // Blocks only for transactions and when the test seals one: the settle
  // window cannot run out while B is away, however slow the restart.
  ASSERT_NO_FATAL_FAILURE(
      TwoConnectedNodes(/*block_interval_ms=*/100, &a, &b, {kSealOnDemand, kSealOnSubmit}));
  constexpr uint64_t kDa = 10'000, kDb = 10'000;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/40);
  auto ab = Stream(a, ch, 60, 4, "a2b");
  auto ba = Stream(b, ch, 40, 4, "b2a");
  const uint64_t t_ab = Sum(ab), t_ba = Sum(ba);
  ASSERT_EQ(t_ab, 180u);
  ASSERT_EQ(t_ba, 120u);

  // B goes away; A closes on its own with B's latest proof.
  Kill(b, SIGTERM);
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  auto close = Call(a, "POST", "/v1/channels/" + ch + "/close", R"({"force":true})");
  ASSERT_EQ(close.status, 202) << close.body;
  ASSERT_TRUE(RunUntil(
      client->io(),
      [&] {
        auto oc = Onchain(*client, ch);
        return oc && oc->phase == ledger::ChannelPhase::kClosing;
      },
      30s));
  // A submitted what B paid it; the ledger does not yet know what A paid B.
  EXPECT_EQ(Onchain(*client, ch)->proof_b_to_a.transferred, t_ba);
  EXPECT_EQ(Onchain(*client, ch)->proof_a_to_b.nonce, 0u);

  const uint64_t window_end = Onchain(*client, ch)->WindowEnd();

  // B comes back inside the window: its watcher submits A's latest proof.
  Restart(b);
  ASSERT_TRUE(RunUntil(
      client->io(), [&] { return Onchain(*client, ch)->proof_a_to_b.transferred == t_ab; }, 60s))
      << "B's watcher never landed A's latest proof";
  EXPECT_LE(client->chain().height(), window_end);
  // Then the test lets the window run out, and the channel settles.
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  EXPECT_EQ(oc->proof_a_to_b.transferred, t_ab);
  EXPECT_EQ(oc->payout_a, kDa - t_ab + t_ba);
  EXPECT_EQ(oc->payout_b, kDb + t_ab - t_ba);
  EXPECT_TRUE(WaitState(b, ch, "closed"));
  EXPECT_TRUE(WaitState(a, ch, "closed"));
  EXPECT_NE(nodes_.at("b")->Output().find("submitting its latest proof"), std::string::npos);
}

TEST_F(ChannelNetTest, DishonestCloserWithAnOldProofCannotTakeWhatItPaid) {
  Node a, b;
  // The window stays open until A's watcher has answered (see above).
  ASSERT_NO_FATAL_FAILURE(
      TwoConnectedNodes(/*block_interval_ms=*/100, &a, &b, {kSealOnDemand, kSealOnSubmit}));
  constexpr uint64_t kDa = 10'000, kDb = 10'000;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/30);
  auto ba1 = Stream(b, ch, 10, 2, "b2a-early");
  auto ab1 = Stream(a, ch, 5, 2, "a2b-early");

  // B keeps a copy of its database from now: an old state.
  Kill(b, SIGTERM);
  std::filesystem::copy(NodeDir("b") / "db", dir_.path() / "b-old-db",
                        std::filesystem::copy_options::recursive);
  Restart(b);
  ASSERT_TRUE(WaitFor([&] {
    auto r = Tip(b, ch, 1, "probe");
    return r.status == 200;
  }));
  auto ba2 = Stream(b, ch, 50, 4, "b2a-late");
  auto ab2 = Stream(a, ch, 20, 2, "a2b-late");
  const uint64_t t_ba = Sum(ba1) + Sum(ba2) + 1;  // + the probe
  const uint64_t t_ab = Sum(ab1) + Sum(ab2);
  Kill(b, SIGTERM);

  // The dishonest closer: B's key and B's OLD channel state, read with the
  // project's own ChannelDb, closes on A's old proof. It hopes A misses the
  // window and never submits B's newer proofs (what B paid A).
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  {
    auto db = storage::Database::Open(dir_.path() / "b-old-db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    node::ChannelDb chdb(db->get());
    auto id = HexDecode(ch);
    auto state = chdb.Load(Str(*id));
    ASSERT_TRUE(state.ok()) << state.status().ToString();
    // Old means strictly older than A's latest proof: it covers exactly the
    // early tips A paid before the copy, not the later ones.
    ASSERT_GT(state->received_latest.nonce(), 0u);
    ASSERT_GT(Sum(ab2), 0u);
    ASSERT_EQ(state->received_latest.transferred(), Sum(ab1));
    ASSERT_LT(state->received_latest.transferred(), t_ab);
    auto info = FromJson<v1::InfoResponse>(Call(a, "GET", "/v1/info").body);
    ASSERT_TRUE(client->WaitHeight(info.ledger_height()));
    const ledger::Account* acct = client->chain().state().FindAccount(b.key->XOnly());
    v1::Transaction tx;
    tx.set_chain_id(genesis_.chain_id());
    tx.set_signer(Str(b.key->XOnly()));
    tx.set_nonce(acct ? acct->nonce : 0);
    tx.set_fee(genesis_.fee_per_tx());
    tx.mutable_unilateral_close()->set_channel_id(Str(*id));
    *tx.mutable_unilateral_close()->mutable_partner_proof() = state->received_latest;
    ASSERT_TRUE(ledger::SignTransaction(&tx, *b.key, crypto::SystemRng()).ok());
    ASSERT_GT(client->SubmitAndInclude(tx), 0u);
  }
  // A's watcher answers with B's latest proof inside the window; then the
  // test ends the window and the channel settles.
  ASSERT_TRUE(RunUntil(
      client->io(), [&] { return Onchain(*client, ch)->proof_b_to_a.transferred == t_ba; }, 60s))
      << "A's watcher never landed B's latest proof";
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  EXPECT_EQ(oc->proof_b_to_a.transferred, t_ba);
  // A gets at least everything it was paid (the old proof of its own
  // direction only ever helps A).
  EXPECT_GE(oc->payout_a, kDa - t_ab + t_ba);
  EXPECT_EQ(oc->payout_a + oc->payout_b, kDa + kDb);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
}

TEST_F(ChannelNetTest, KilledReceiverThenSenderLoseNoAckedTip) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, &a, &b));
  const std::string ch = Open(a, b, 500'000, 0);

  // Stream A->B; SIGKILL the receiver mid-stream, restart it, then the same
  // for the sender. Retried requests reuse their idempotency keys.
  // While A itself is down its API cannot answer; that is the only time a
  // request may go unanswered.
  std::vector<Sent> sent;
  std::atomic<bool> a_down{false};
  RetryTally tally;
  std::thread streamer(
      [&] { sent = Stream(a, ch, 1500, 6, "crash", /*retry=*/true, &a_down, &tally); });
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() >= 300; }));
  Kill(b, SIGKILL);
  Restart(b);
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() >= 800; }, 60s));
  a_down = true;
  Kill(a, SIGKILL);
  Restart(a);
  a_down = false;
  streamer.join();
  std::cout << "[ figures ] retried answers: " << tally.pending << " x 202, " << tally.peer_offline
            << " x 503 PEER_OFFLINE, " << tally.no_answer << " unanswered while A restarted; "
            << tally.replayed << " replayed 200s\n";

  auto received = History(b, ch, "received");
  auto history_a = History(a, ch, "sent");
  // Every request ended acknowledged: a legitimate retry is never refused.
  size_t acked = 0;
  std::set<std::string> unique_messages;
  for (const Sent& s : sent) {
    ASSERT_EQ(s.status, 200) << s.message;
    ++acked;
    // Every tip the API acknowledged is at the receiver, byte-identical.
    ASSERT_TRUE(received.count(s.index)) << s.message;
    EXPECT_EQ(received.at(s.index).tip().message(), s.message);
    unique_messages.insert(s.message);
  }
  EXPECT_EQ(acked, 1500u);
  EXPECT_EQ(unique_messages.size(), 1500u);
  EXPECT_EQ(history_a.size(), 1500u);
  EXPECT_EQ(received.size(), 1500u);
  // A retried request never paid twice: each message appears once.
  std::map<std::string, int> seen;
  for (const auto& [idx, t] : history_a) ++seen[t.tip().message()];
  for (const auto& [msg, n] : seen) EXPECT_EQ(n, 1) << msg;
  // The receiver holds every tip the sender stored, in the same order.
  for (const auto& [idx, t] : received) {
    ASSERT_TRUE(history_a.count(idx));
    EXPECT_EQ(history_a.at(idx).tip().message(), t.tip().message());
  }
  // And the stream continues.
  auto after = Tip(a, ch, 3, "after both crashes", "after-1");
  EXPECT_EQ(after.status, 200) << after.body;
}

TEST_F(ChannelNetTest, SeveralChannelsWithOnePeerAndChannelsWithManyPeers) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger();
  Node a = Up("a", 0);
  Node b = Up("b", 1);
  Node c = Up("c", 2);
  Connect(a, b);
  Connect(a, c);
  const std::string ab1 = Open(a, b, 1000, 0);
  const std::string ab2 = Open(a, b, 2000, 500);
  const std::string ac = Open(a, c, 3000, 0);
  ASSERT_NE(ab1, ab2);
  EXPECT_EQ(Stream(a, ab1, 30, 3, "ab1")[29].status, 200);
  EXPECT_EQ(Stream(a, ab2, 30, 3, "ab2")[29].status, 200);
  EXPECT_EQ(Stream(a, ac, 30, 3, "ac")[29].status, 200);
  EXPECT_EQ(Stream(b, ab2, 10, 2, "ba2")[9].status, 200);
  // Each channel keeps its own chain of tips.
  EXPECT_EQ(History(b, ab1, "received").size(), 30u);
  EXPECT_EQ(History(b, ab2, "received").size(), 30u);
  EXPECT_EQ(History(c, ac, "received").size(), 30u);
  EXPECT_EQ(History(a, ab2, "received").size(), 10u);
  // By peer: the channel with the most to spend pays.
  auto by_peer =
      Call(a, "POST", "/v1/tips",
           R"({"peer_node_id":")" + b.id.Hex() + R"(","amount":"1500","message":"big"})");
  ASSERT_EQ(by_peer.status, 200) << by_peer.body;
  EXPECT_EQ(FromJson<v1::TipResponse>(by_peer.body).tip().channel_id(), ab2);
  auto list = FromJson<v1::ListChannelsResponse>(Call(a, "GET", "/v1/channels").body);
  EXPECT_EQ(list.channels_size(), 3);
  // Restart A: every channel comes back and reestablishes with its peer.
  Kill(a, SIGTERM);
  Restart(a);
  auto again = Tip(a, ac, 1, "after restart");
  ASSERT_TRUE(WaitFor([&] { return Tip(a, ab1, 1, "after restart").status == 200; }));
  EXPECT_TRUE(again.status == 200 || again.status == 503) << again.body;
  ASSERT_TRUE(WaitFor([&] { return Tip(a, ac, 1, "after restart 2").status == 200; }));
}

// More channels with one peer than its p2p send queue holds
// (p2p-max-send-queue 64 here; 4,096 by default): on every connect each side
// has a reestablish to send per channel. They go out as the queue has
// room; sent all at once they overflowed it, the session was dropped, and
// every reconnect did the same, so the nodes could never talk again.
TEST_F(ChannelNetTest, MoreChannelsThanTheSendQueueHoldsReconnectAfterARestart) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger({kSealOnSubmit});
  const std::vector<std::string> small_queue = {"--p2p-max-send-queue", "64"};
  Node a = Up("a", 0, small_queue);
  Node b = Up("b", 1, small_queue);
  Connect(a, b);
  constexpr int kChannels = 150;
  std::vector<std::string> ids;
  for (int i = 0; i < kChannels; ++i) {
    ids.push_back(Open(a, b, 100, 0));
    ASSERT_FALSE(ids.back().empty()) << "open " << i;
  }
  Kill(b, SIGTERM);
  Restart(b, small_queue);
  // Every channel reestablishes: a tip on the first and on the last one is
  // acknowledged, and the session that carried them stays up.
  ASSERT_TRUE(WaitFor([&] { return Tip(a, ids.back(), 1, "after restart").status == 200; }, 60s))
      << nodes_.at("a")->Output();
  EXPECT_TRUE(WaitFor([&] { return Tip(a, ids.front(), 1, "first").status == 200; }));
  for (const char* n : {"a", "b"}) {
    EXPECT_EQ(nodes_.at(n)->Output().find("dropping the session so reestablish resends"),
              std::string::npos)
        << n << " dropped a session for a send that did not leave";
  }
}

TEST_F(ChannelNetTest, RefusalsChangeNothing) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/50, &a, &b));

  // Opening with more than the ledger balance: refused before signing.
  auto too_much = Call(a, "POST", "/v1/channels",
                       R"({"peer_node_id":")" + b.id.Hex() + R"(","deposit":"2000000"})");
  EXPECT_EQ(too_much.status, 409) << too_much.body;
  EXPECT_NE(too_much.body.find("INSUFFICIENT_FUNDS"), std::string::npos) << too_much.body;
  // Asking the peer to fund more than it has: the peer refuses.
  auto push =
      Call(a, "POST", "/v1/channels",
           R"({"peer_node_id":")" + b.id.Hex() + R"(","deposit":"1","push_deposit":"5000000"})");
  EXPECT_EQ(push.status, 409) << push.body;
  EXPECT_NE(push.body.find("INSUFFICIENT_FUNDS"), std::string::npos) << push.body;
  EXPECT_EQ(Call(a, "GET", "/v1/channels").body, R"({"channels":[],"next_cursor":""})");

  const std::string ch = Open(a, b, 1000, 0);
  auto fits = Tip(a, ch, 600, "fits");
  ASSERT_EQ(fits.status, 200) << fits.body;
  const v1::ChannelApi before = Channel(a, ch);
  // More than spendable.
  auto over = Tip(a, ch, 401, "does not fit");
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_NE(over.body.find("INSUFFICIENT_SPENDABLE"), std::string::npos) << over.body;
  // B has nothing to spend in this channel yet (A's tips are its only funds).
  auto b_over = Tip(b, ch, 601, "more than received");
  EXPECT_EQ(b_over.status, 400) << b_over.body;
  // Bad content.
  EXPECT_EQ(Tip(a, ch, 0, "zero").status, 400);
  EXPECT_EQ(Tip(a, ch, 1, std::string(1001, 'x')).status, 400);
  v1::ChannelApi after = Channel(a, ch);
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());

  // A closing channel refuses tips.
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  Kill(b, SIGTERM);
  auto close = Call(a, "POST", "/v1/channels/" + ch + "/close", R"({"force":true})");
  ASSERT_EQ(close.status, 202) << close.body;
  auto closing = Tip(a, ch, 1, "on a closing channel");
  EXPECT_EQ(closing.status, 409) << closing.body;
  EXPECT_NE(closing.body.find("CHANNEL_NOT_OPEN"), std::string::npos) << closing.body;
  // A cooperative close needs the peer: refused while it is away.
  Node c = Up("c", 2);
  Connect(a, c);
  const std::string other = Open(a, c, 100, 0);
  Kill(c, SIGTERM);
  ASSERT_TRUE(WaitFor(
      [&] { return Call(a, "GET", "/v1/peers").body.find(c.id.Hex()) == std::string::npos; }));
  auto coop = Call(a, "POST", "/v1/channels/" + other + "/close", "{}");
  EXPECT_EQ(coop.status, 503) << coop.body;
  EXPECT_EQ(Channel(a, other).state(), "open");
}

}  // namespace
}  // namespace tipd::testing
