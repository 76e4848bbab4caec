// Fund-safety attacks against honest, real `tipd node` processes (issue 9).
//
// In every test the attacker is the test itself: it holds party A's key (the
// test made it and gave it to A's node as node.key) and builds its ledger
// transactions and balance proofs with the project's own codecs
// (ledger/codec.h, channel/codec.h), submitting them through the in-test
// ledger follower (TestClient). The honest nodes run unmodified; each test
// asserts from the ledger's own state that the honest receiver B loses
// nothing it was told it received. No assertion depends on a sleep: every
// wait is a deadline on ledger state, API state or a log line. Settle windows
// are protocol time under the test's control: the ledger seals a block for
// each transaction and otherwise only when the test says (kSealOnDemand), so
// a watcher is never raced by a timer on a slow machine.
#include <atomic>
#include <csignal>
#include <limits>
#include <thread>

#include "channel/codec.h"
#include "ledger/chain.h"
#include "tests/integration/channel_fixture.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

struct Sent {
  int status = 0;
  uint64_t amount = 0;
  std::string body;
  bool after_freeze = false;  // the request started once A's API showed the channel closing
};

size_t Count(const std::string& haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

constexpr std::string_view kWatcherSubmits = "submitting its latest proof";

class FundSafetyTest : public ChannelFixture {
 protected:
  // Starts node `name` with `key` (not necessarily funded by the genesis).
  Node UpWithKey(const std::string& name, const crypto::KeyPair* key) {
    Node n;
    n.name = name;
    n.key = key;
    n.id = key->public_key();
    EXPECT_NE(StartNode(name, key), nullptr);  // any free ports
    n.rpc = rpc_ports_.count(name) ? RpcPort(name) : 0;
    auto token = api::ReadTokenFile(NodeDir(name) / "admin.token");
    EXPECT_TRUE(token.ok());
    n.token = token.ok() ? *token : "";
    return n;
  }

  // `count` tips from `n` on `ch`, over `threads` clients, amounts 1..5;
  // every one must be answered 200.
  std::vector<Sent> Pay(const Node& n, const std::string& ch, int count, int threads,
                        const std::string& prefix) {
    std::vector<Sent> out(static_cast<size_t>(count));
    std::atomic<int> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = next++; i < count; i = next++) {
          Sent& s = out[static_cast<size_t>(i)];
          s.amount = static_cast<uint64_t>(i % 5 + 1);
          auto r = Tip(n, ch, s.amount, prefix + " #" + std::to_string(i),
                       prefix + "-" + std::to_string(i));
          s.status = r.status;
          s.body = r.body;
        }
      });
    }
    for (auto& t : pool) t.join();
    for (const Sent& s : out) EXPECT_EQ(s.status, 200) << s.body;
    return out;
  }

  static uint64_t AckedSum(const std::vector<Sent>& v) {
    uint64_t sum = 0;
    for (const Sent& s : v) {
      if (s.status == 200) sum += s.amount;
    }
    return sum;
  }

  // What `n`'s API says it received on `ch`: the sum of
  // GET /v1/tips?direction=received.
  uint64_t ReceivedSum(const Node& n, const std::string& ch) {
    uint64_t sum = 0;
    for (const auto& [index, t] : History(n, ch, "received")) sum += t.tip().amount();
    return sum;
  }

  std::optional<ledger::Channel> Onchain(TestClient& c, const std::string& ch) {
    auto id = HexDecodeFixed<32>(ch);
    if (!id.ok()) return std::nullopt;
    const ledger::Channel* p = c.chain().state().FindChannel(*id);
    if (p == nullptr) return std::nullopt;
    return *p;
  }

  bool WaitPhase(TestClient& c, const std::string& ch, ledger::ChannelPhase phase,
                 std::chrono::milliseconds timeout = 60s) {
    return RunUntil(
        c.io(),
        [&] {
          auto oc = Onchain(c, ch);
          return oc && oc->phase == phase;
        },
        timeout);
  }

  // The follower has caught up with what every given node has followed, so
  // account nonces read from it are current.
  void SyncWith(TestClient& c, std::initializer_list<const Node*> nodes) {
    uint64_t h = 0;
    for (const Node* n : nodes) {
      auto info = FromJson<v1::InfoResponse>(Call(*n, "GET", "/v1/info").body);
      h = std::max(h, info.ledger_height());
    }
    ASSERT_TRUE(c.WaitHeight(h));
  }

  uint64_t AccountNonce(TestClient& c, const crypto::KeyPair& key) {
    const ledger::Account* acct = c.chain().state().FindAccount(key.XOnly());
    return acct ? acct->nonce : 0;
  }
  uint64_t AccountBalance(TestClient& c, const crypto::KeyPair& key) {
    const ledger::Account* acct = c.chain().state().FindAccount(key.XOnly());
    return acct ? acct->balance : 0;
  }

  // A transaction signed by `key` at its current account nonce; `body` sets
  // the body.
  template <typename Body>
  v1::Transaction AttackerTx(TestClient& c, const crypto::KeyPair& key, Body body) {
    v1::Transaction tx;
    tx.set_chain_id(genesis_.chain_id());
    tx.set_signer(Str(key.XOnly()));
    tx.set_nonce(AccountNonce(c, key));
    tx.set_fee(genesis_.fee_per_tx());
    body(&tx);
    EXPECT_TRUE(ledger::SignTransaction(&tx, key, crypto::SystemRng()).ok());
    return tx;
  }

  // A unilateral close of `ch` by `key` carrying no proof (the partner paid
  // the closer nothing) or `proof`.
  v1::Transaction CloseTx(TestClient& c, const crypto::KeyPair& key, const std::string& ch,
                          const std::optional<v1::BalanceProof>& proof = std::nullopt) {
    return AttackerTx(c, key, [&](v1::Transaction* tx) {
      tx->mutable_unilateral_close()->set_channel_id(Str(*HexDecode(ch)));
      if (proof) *tx->mutable_unilateral_close()->mutable_partner_proof() = *proof;
    });
  }

  // A fresh balance proof of `signer`'s direction on `ch`, signed with the
  // project's own codec: the forgery a payer would like the ledger to hold.
  v1::BalanceProof FreshProof(const crypto::KeyPair& signer, const std::string& ch, uint64_t nonce,
                              uint64_t transferred) {
    v1::BalanceProof p;
    p.set_chain_id(genesis_.chain_id());
    p.set_channel_id(Str(*HexDecode(ch)));
    p.set_nonce(nonce);
    p.set_transferred(transferred);
    p.set_locked(0);
    p.set_locks_root(std::string(32, '\0'));
    p.set_tips_root(std::string(32, '\0'));
    EXPECT_TRUE(channel::SignBalanceProof(&p, signer, crypto::SystemRng()).ok());
    return p;
  }
};

// 1. A payer cannot erase what it paid. A pays B through A's API; then the
// attacker, holding A's key, closes the channel on the ledger and tries to
// replace the ledger's A->B proof with a fresh one it signs itself (nonce
// 2^63, transferred 0), first inside the close, then as an UpdateProof, then
// through a third party's account. Every route is refused, B's watcher
// submits A's real latest proof, and the settle pays B everything its API
// says it received.
TEST_F(FundSafetyTest, PayerCannotEraseWhatItPaidWithAFreshHighNonceProof) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(
      TwoConnectedNodes(/*block_interval_ms=*/100, &a, &b, {kSealOnDemand, kSealOnSubmit}));
  constexpr uint64_t kDa = 10'000, kDb = 0;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/30);
  ASSERT_FALSE(ch.empty());
  const uint64_t paid = AckedSum(Pay(a, ch, 60, 4, "a2b"));
  ASSERT_EQ(paid, 180u);
  const uint64_t received = ReceivedSum(b, ch);
  ASSERT_EQ(received, paid);

  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  ASSERT_NO_FATAL_FAILURE(SyncWith(*client, {&a, &b}));
  const crypto::KeyPair& attacker = *a.key;
  const v1::BalanceProof forged = FreshProof(attacker, ch, uint64_t{1} << 63, /*transferred=*/0);

  // Closing with its own forged proof: a close carries only the partner's.
  auto with_own = client->SubmitAndWait(CloseTx(*client, attacker, ch, forged));
  EXPECT_TRUE(with_own.refused(ledger::TxRule::kBadProof)) << with_own.ToString();

  // The close (B paid A nothing: no proof to carry).
  const uint64_t close_height = client->SubmitAndInclude(CloseTx(*client, attacker, ch));
  ASSERT_GT(close_height, 0u);
  ASSERT_EQ(Onchain(*client, ch)->phase, ledger::ChannelPhase::kClosing);

  // The forged proof as an UpdateProof from A itself: A is the payer.
  auto update = client->SubmitAndWait(AttackerTx(*client, attacker, [&](v1::Transaction* tx) {
    tx->mutable_update_proof()->set_channel_id(Str(*HexDecode(ch)));
    *tx->mutable_update_proof()->mutable_proof() = forged;
  }));
  EXPECT_TRUE(update.refused(ledger::TxRule::kNotBeneficiary)) << update.ToString();
  // Nor through an accomplice's funded account.
  const crypto::KeyPair& accomplice = accounts_[2].key;
  auto proxy = client->SubmitAndWait(AttackerTx(*client, accomplice, [&](v1::Transaction* tx) {
    tx->mutable_update_proof()->set_channel_id(Str(*HexDecode(ch)));
    *tx->mutable_update_proof()->mutable_proof() = forged;
  }));
  EXPECT_TRUE(proxy.refused(ledger::TxRule::kNotBeneficiary)) << proxy.ToString();

  // B's watcher holds A's real latest proof and submits it; after the window
  // (ended by the test once the proof landed) the channel settles.
  ASSERT_TRUE(nodes_.at("b")->WaitForOutput(kWatcherSubmits, 30s));
  ASSERT_TRUE(RunUntil(
      client->io(), [&] { return Onchain(*client, ch)->proof_a_to_b.transferred == received; },
      60s));
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  EXPECT_EQ(oc->proof_a_to_b.transferred, received);
  EXPECT_LT(oc->proof_a_to_b.nonce, uint64_t{1} << 63);
  EXPECT_GE(oc->payout_b - kDb, received);
  EXPECT_EQ(oc->payout_a + oc->payout_b, kDa + kDb - oc->fee_debt_a - oc->fee_debt_b);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  EXPECT_TRUE(WaitState(b, ch, "closed"));
}

// 2. A node with no ledger balance can still defend itself. B has no
// genesis allocation (the open creates its account with balance 0). A pays
// B, then the attacker (A's key) closes carrying no proof, so the ledger
// holds nothing of what A paid. B cannot pay a fee from its account: its
// watcher's UpdateProof (and its Settle, if B settles) is paid from B's share
// of the escrow, and B ends with what it received less at most two fees.
TEST_F(FundSafetyTest, ReceiverWithoutLedgerBalanceDefendsWithEscrowPaidFees) {
  InitLedger(/*block_interval_ms=*/100);
  StartLedger({kSealOnDemand, kSealOnSubmit});
  const crypto::KeyPair b_key = crypto::KeyPair::Generate(crypto::SystemRng());
  Node a = Up("a", 0);
  Node b = UpWithKey("b", &b_key);
  Connect(a, b);
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  ASSERT_NO_FATAL_FAILURE(SyncWith(*client, {&a, &b}));
  ASSERT_EQ(client->chain().state().FindAccount(b_key.XOnly()), nullptr)
      << "B must start without a ledger account";

  constexpr uint64_t kDa = 10'000;
  const std::string ch = Open(a, b, kDa, /*push=*/0, /*settle_timeout=*/30);
  ASSERT_FALSE(ch.empty());
  const uint64_t paid = AckedSum(Pay(a, ch, 40, 4, "a2b"));
  ASSERT_EQ(paid, 120u);
  const uint64_t received = ReceivedSum(b, ch);
  ASSERT_EQ(received, paid);
  ASSERT_NO_FATAL_FAILURE(SyncWith(*client, {&a, &b}));
  ASSERT_EQ(AccountBalance(*client, b_key), 0u) << "B holds nothing on the ledger";

  const uint64_t close_height = client->SubmitAndInclude(CloseTx(*client, *a.key, ch));
  ASSERT_GT(close_height, 0u);
  EXPECT_EQ(Onchain(*client, ch)->proof_a_to_b.nonce, 0u);

  ASSERT_TRUE(nodes_.at("b")->WaitForOutput(kWatcherSubmits, 30s));
  ASSERT_TRUE(RunUntil(
      client->io(), [&] { return Onchain(*client, ch)->proof_a_to_b.transferred == received; },
      60s));
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  const uint64_t fee = genesis_.fee_per_tx();
  // B's UpdateProof landed and the escrow paid its fee.
  EXPECT_EQ(oc->proof_a_to_b.transferred, received);
  EXPECT_GE(oc->fee_debt_b, fee);
  EXPECT_LE(oc->fee_debt_b, 2 * fee);
  const uint64_t b_balance = AccountBalance(*client, b_key);
  EXPECT_EQ(b_balance, oc->payout_b);
  EXPECT_GE(b_balance + 2 * fee, received);
  EXPECT_GT(b_balance, 0u);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  EXPECT_TRUE(WaitState(b, ch, "closed"));
  std::cout << "[ figures ] B received " << received << ", escrow-paid fees " << oc->fee_debt_b
            << ", B's ledger balance after settle " << b_balance << "\n";
}

// 3. Tips acknowledged around a close are settled, and none is acknowledged
// after it. A's honest node streams tips from several API clients while the
// attacker (A's key) closes the channel on the ledger. Every tip A's API
// answered 200 must be in B's payout; every request made once A's node shows
// the channel closing (it follows the block holding the close) is refused
// 409 CHANNEL_NOT_OPEN or answered 202 pending, never 200.
TEST_F(FundSafetyTest, TipsAckedAroundAnAttackersCloseAreSettledAndNoneAfterIt) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(
      TwoConnectedNodes(/*block_interval_ms=*/100, &a, &b, {kSealOnDemand, kSealOnSubmit}));
  constexpr uint64_t kDa = 500'000, kDb = 1'000;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/40);
  ASSERT_FALSE(ch.empty());
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());

  constexpr int kThreads = 6;
  constexpr int kAfterFreezePerThread = 5;
  std::atomic<bool> frozen_seen{false};
  std::vector<std::vector<Sent>> per_thread(kThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      int after = 0;
      for (int i = 0; after < kAfterFreezePerThread && i < 100'000; ++i) {
        Sent s;
        s.after_freeze = frozen_seen.load();
        s.amount = static_cast<uint64_t>(i % 3 + 1);
        auto r = Tip(a, ch, s.amount, "stream", "t" + std::to_string(t) + "-" + std::to_string(i));
        s.status = r.status;
        s.body = r.body;
        if (s.after_freeze) ++after;
        per_thread[static_cast<size_t>(t)].push_back(std::move(s));
      }
    });
  }
  // Let the stream run, then close under it.
  ASSERT_TRUE(WaitFor([&] { return Channel(b, ch).tips_received() >= 200; }, 60s));
  ASSERT_NO_FATAL_FAILURE(SyncWith(*client, {&a, &b}));
  const uint64_t close_height = client->SubmitAndInclude(CloseTx(*client, *a.key, ch));
  ASSERT_GT(close_height, 0u);
  // A's node has followed the close: it is frozen from here on.
  ASSERT_TRUE(WaitState(a, ch, "closing"));
  frozen_seen = true;
  for (auto& th : pool) th.join();

  // B's watcher lands a proof covering every acknowledged tip inside the
  // window (held open until then); then the test ends the window.
  uint64_t acked_so_far = 0;
  for (const auto& v : per_thread) {
    for (const Sent& s : v) acked_so_far += s.status == 200 ? s.amount : 0;
  }
  EXPECT_TRUE(RunUntil(
      client->io(), [&] { return Onchain(*client, ch)->proof_a_to_b.transferred >= acked_so_far; },
      60s))
      << "no proof covering the " << acked_so_far << " acknowledged reached the ledger";
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  uint64_t acked = 0;
  size_t n_acked = 0, n_after = 0, n_refused = 0, n_pending = 0, n_other = 0;
  for (const auto& v : per_thread) {
    for (const Sent& s : v) {
      if (s.status == 200) {
        acked += s.amount;
        ++n_acked;
      } else if (s.status == 409) {
        ++n_refused;
      } else if (s.status == 202) {
        ++n_pending;
      } else {
        ++n_other;
      }
      if (!s.after_freeze) continue;
      ++n_after;
      EXPECT_NE(s.status, 200) << "acknowledged after the close was followed: " << s.body;
      EXPECT_TRUE(s.status == 409 || s.status == 202) << s.status << " " << s.body;
      if (s.status == 409) {
        EXPECT_TRUE(Contains(s.body, "CHANNEL_NOT_OPEN")) << s.body;
      }
    }
  }
  std::cout << "[ figures ] " << n_acked << " tips acked (" << acked << "), " << n_refused
            << " refused 409, " << n_pending << " pending 202, " << n_other << " other; " << n_after
            << " requests after the freeze; payout B " << oc->payout_b << "\n";
  EXPECT_GT(n_acked, 200u);
  EXPECT_EQ(n_after, static_cast<size_t>(kThreads * kAfterFreezePerThread));
  EXPECT_EQ(n_other, 0u);
  // Every acknowledged tip is paid by the ledger.
  EXPECT_GE(oc->payout_b - kDb, acked);
  EXPECT_GE(oc->proof_a_to_b.transferred, acked);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  EXPECT_TRUE(WaitState(b, ch, "closed"));
}

// 4. The watcher retries. The attacker closes; the moment B's watcher has
// submitted its UpdateProof, the sequencer is SIGKILLed. The sequencer seals
// only when the test says (kSealOnDemand, not on submit, from the close on),
// so the pending block that would hold B's proof dies with the process
// (checked on the ledger's own store before the restart): B's first defence
// is lost whether it was accepted, unanswered or refused. The sequencer
// restarts; B's watcher must submit again, land inside the window, and the
// settle pays B.
TEST_F(FundSafetyTest, WatcherRetriesWhenItsFirstProofUpdateIsLostWithTheSequencer) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(
      TwoConnectedNodes(/*block_interval_ms=*/1000, &a, &b, {kSealOnDemand, kSealOnSubmit}));
  constexpr uint64_t kDa = 10'000, kDb = 0;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/20);
  ASSERT_FALSE(ch.empty());
  const uint64_t paid = AckedSum(Pay(a, ch, 30, 3, "a2b"));
  ASSERT_EQ(paid, 90u);
  const uint64_t received = ReceivedSum(b, ch);
  ASSERT_EQ(received, paid);

  // From here on a block is sealed only when the test says.
  ASSERT_NO_FATAL_FAILURE(StopLedger());
  ASSERT_NO_FATAL_FAILURE(StartLedger({kSealOnDemand}));
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  ASSERT_NO_FATAL_FAILURE(SyncWith(*client, {&a, &b}));
  Process* pb = nodes_.at("b").get();
  const size_t log_mark = pb->Output().size();
  auto closed = client->SubmitAndWait(CloseTx(*client, *a.key, ch));
  ASSERT_TRUE(closed.accepted()) << closed.ToString();
  const uint64_t close_height = SealBlocks(1);
  ASSERT_GT(close_height, 0u);
  ASSERT_TRUE(client->WaitHeight(close_height));
  ASSERT_EQ(Onchain(*client, ch)->phase, ledger::ChannelPhase::kClosing);
  // B's first defence leaves; the sequencer dies before the next block.
  ASSERT_TRUE(pb->WaitForOutput(kWatcherSubmits, 30s, log_mark));
  ASSERT_NO_FATAL_FAILURE(StopLedger(SIGKILL));
  {
    // What the sequencer had sealed: the close, without B's proof.
    auto db = storage::Database::Open(ledger_dir_ / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto chain = ledger::Chain::Open(db->get(), ledger::ValidateGenesis(genesis_).value());
    ASSERT_TRUE(chain.ok()) << chain.status().ToString();
    const ledger::Channel* sealed = (*chain)->state().FindChannel(HexDecodeFixed<32>(ch).value());
    ASSERT_NE(sealed, nullptr);
    ASSERT_EQ(sealed->phase, ledger::ChannelPhase::kClosing);
    ASSERT_EQ(sealed->proof_a_to_b.nonce, 0u)
        << "B's first UpdateProof was sealed before the kill: the test did not make it fail";
    std::cout << "[ figures ] sequencer killed at height " << (*chain)->height() << " (close at "
              << close_height << ", window ends at " << sealed->WindowEnd() << ")\n";
  }
  ASSERT_NO_FATAL_FAILURE(StartLedger({kSealOnDemand, kSealOnSubmit}));

  // B submits again (its watcher retries on a later block: the test seals
  // them one at a time) and the proof lands inside the window: Settle then
  // pays B what A paid it (an UpdateProof after the window is refused, so
  // the held proof proves it landed in time).
  const uint64_t window_end = close_height + 20;
  ASSERT_TRUE(SealUntil(
      *client, [&] { return Onchain(*client, ch)->proof_a_to_b.transferred == received; },
      /*max_blocks=*/static_cast<int>(window_end - close_height) - 1, /*per_block=*/5s))
      << "B's watcher did not land its proof again inside the window";
  EXPECT_LE(client->chain().height(), window_end);
  ASSERT_TRUE(EndWindowAndSettle(*client, ch));
  auto oc = Onchain(*client, ch);
  EXPECT_EQ(oc->proof_a_to_b.transferred, received);
  EXPECT_GE(oc->payout_b - kDb, received);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  const std::string out_b = pb->Output().substr(log_mark);
  EXPECT_GE(Count(out_b, kWatcherSubmits), 2u) << "B's watcher never submitted again";
  // What B's watcher did, for the record.
  for (size_t pos = 0, end; (end = out_b.find('\n', pos)) != std::string::npos; pos = end + 1) {
    const std::string line = out_b.substr(pos, end - pos);
    if (Contains(line, "proof update") || Contains(line, kWatcherSubmits)) {
      std::cout << "[ b        ] " << line << "\n";
    }
  }
  EXPECT_TRUE(WaitState(b, ch, "closed"));
}

}  // namespace
}  // namespace tipd::testing
