// The adversarial peer suite (issue 10): a malicious channel peer and ledger
// client (tests/integration/adversary.h) tries attack after attack against a
// REAL `tipd node` (the victim) following a real `tipd ledger`, while an
// honest `tipd node` keeps a channel with the victim.
//
// One ledger, one victim and one honest node serve the whole table. For every
// attack, in order, the test:
//   1. snapshots the victim's state: its API view of every channel the
//      attacker holds with it, and the ledger accounts of both (read by an
//      in-test follower that re-executes every block);
//   2. runs the attack and asserts the documented rejection: the victim's
//      UpdateRejected / Error / RejectChannel code, its log line, the
//      ledger's SubmitOutcome rule, or the closed connection;
//   3. asserts the snapshot is unchanged (attacks whose documented answer is
//      a state change, e.g. closing the channel, assert that change instead);
//   4. pays one tip from the honest node to the victim through the API and
//      waits for the victim to hold it: the victim still serves honest peers.
// Every wait is a deadline on a message, a log line or API/ledger state.
// docs/security.md ("Adversarial peer suite") lists the attacks.
#include <cstdlib>
#include <future>
#include <iostream>
#include <limits>
#include <set>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "tests/integration/adversary.h"
#include "tests/integration/channel_fixture.h"
#include "tipd/api.pb.h"

namespace tipd::testing {
namespace {

constexpr auto kAnswer = std::chrono::seconds(15);

std::string Random32() {
  std::array<uint8_t, 32> b;
  crypto::SystemRng().Fill(b);
  return Str(b);
}

struct Attack {
  std::string name;
  std::string expected;         // the documented rejection, printed as it runs
  std::function<void()> setup;  // optional: brings the victim where the attack starts
  std::function<void()> run;    // the attack and its rejection
  std::function<void()> after;  // optional: recovery once the state was compared
  bool changes_state = false;   // its documented answer changes state; `run` checks it
};

class AdversaryTest : public ChannelFixture {
 protected:
  // ---- set-up ----
  void StartNetwork() {
    InitLedger(/*block_interval_ms=*/100);
    StartLedger();
    // The victim funds nothing a peer opens (the default outside tests).
    v_ = Up("v", 0, {"--max-accept-deposit", "0"});
    h_ = Up("h", 1);
    Connect(h_, v_);
    honest_ch_ = Open(h_, v_, 1'000'000 / 4, 0);
    ASSERT_FALSE(honest_ch_.empty());
    client_ = Client();
    ASSERT_TRUE(client_->WaitConnected());
    adv_ = std::make_unique<Adversary>(accounts_[2].key, v_.id, P2pPort("v"), genesis_.chain_id());
    ASSERT_TRUE(adv_->Connect());
  }

  Process& Victim() { return *nodes_.at("v"); }
  size_t Mark() { return Victim().Output().size(); }
  bool VictimLogs(const std::string& needle, size_t mark,
                  std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
    return Victim().WaitForOutput(needle, timeout, mark).has_value();
  }

  void SyncFollower() {
    auto info = FromJson<v1::InfoResponse>(Call(v_, "GET", "/v1/info").body);
    ASSERT_TRUE(client_->WaitHeight(info.ledger_height()));
  }
  uint64_t AccountNonce(const crypto::KeyPair& key) {
    const ledger::Account* a = client_->chain().state().FindAccount(key.XOnly());
    return a ? a->nonce : 0;
  }
  std::optional<ledger::Channel> Onchain(const std::string& id) {
    ledger::ChannelId cid{};
    std::copy(id.begin(), id.end(), cid.begin());
    const ledger::Channel* p = client_->chain().state().FindChannel(cid);
    if (p == nullptr) return std::nullopt;
    return *p;
  }
  static std::string Hex(const std::string& raw) { return HexEncode(AsSpan(raw)); }

  // A transaction signed by the attacker at its current account nonce.
  template <typename Body>
  v1::Transaction AttackerTx(Body body, const crypto::KeyPair* signer = nullptr) {
    const crypto::KeyPair& key = signer ? *signer : adv_->key();
    v1::Transaction tx;
    tx.set_chain_id(genesis_.chain_id());
    tx.set_signer(Str(key.XOnly()));
    tx.set_nonce(AccountNonce(key));
    tx.set_fee(genesis_.fee_per_tx());
    body(&tx);
    EXPECT_TRUE(ledger::SignTransaction(&tx, key, crypto::SystemRng()).ok());
    return tx;
  }

  // A proof of `signer`'s direction on `id`, signed with the real codec.
  v1::BalanceProof Proof(const crypto::KeyPair& signer, const std::string& id, uint64_t nonce,
                         uint64_t transferred) {
    v1::BalanceProof p;
    p.set_chain_id(genesis_.chain_id());
    p.set_channel_id(id);
    p.set_nonce(nonce);
    p.set_transferred(transferred);
    p.set_locked(0);
    p.set_locks_root(std::string(32, '\0'));
    p.set_tips_root(Random32());
    EXPECT_TRUE(channel::SignBalanceProof(&p, signer, crypto::SystemRng()).ok());
    return p;
  }

  v1::OpenChannel OpenMsg(uint64_t deposit_a, uint64_t settle_timeout, uint64_t nonce_a,
                          uint32_t max_tips = 8) {
    v1::OpenChannel m;
    m.set_temporary_id(Random32());
    m.set_chain_id(genesis_.chain_id());
    m.set_funder_key(Str(adv_->key().XOnly()));
    m.set_deposit_a(deposit_a);
    m.set_deposit_b_requested(0);
    m.set_settle_timeout(settle_timeout);
    m.set_max_updates_in_flight(16);
    m.set_max_tips_per_update(max_tips);
    m.set_nonce_a(nonce_a);
    return m;
  }

  // The attacker opens a channel with the victim the honest way (it is A),
  // submits the open itself and reestablishes it. Returns the raw id.
  std::string OpenAttackerChannel(uint64_t deposit, uint64_t settle_timeout) {
    SyncFollower();
    const uint64_t nonce_a = AccountNonce(adv_->key());
    v1::Envelope env;
    *env.mutable_open_channel() = OpenMsg(deposit, settle_timeout, nonce_a);
    const std::string temp = env.open_channel().temporary_id();
    EXPECT_TRUE(adv_->peer().SendEnvelope(env));
    auto answer = adv_->peer().Await(
        [&](const v1::Envelope& e) {
          return (e.has_accept_channel() && e.accept_channel().temporary_id() == temp) ||
                 (e.has_reject_channel() && e.reject_channel().temporary_id() == temp);
        },
        kAnswer);
    if (!answer || !answer->has_accept_channel()) {
      ADD_FAILURE() << "the victim did not accept the attacker's channel: "
                    << (answer ? answer->reject_channel().message() : "no answer");
      return "";
    }
    const v1::AcceptChannel& acc = answer->accept_channel();
    v1::Transaction tx = AttackerTx([&](v1::Transaction* t) {
      v1::ChannelOpenTx& open = *t->mutable_channel_open();
      open.set_party_a(Str(adv_->key().XOnly()));
      open.set_party_b(acc.acceptor_key());
      open.set_deposit_a(deposit);
      open.set_deposit_b(acc.deposit_b());
      open.set_settle_timeout(settle_timeout);
      open.set_nonce_b(acc.nonce_b());
      open.set_signature_b(acc.signature_b());
    });
    EXPECT_EQ(tx.nonce(), nonce_a);
    if (client_->SubmitAndInclude(tx) == 0) return "";
    const ledger::ChannelId cid = ledger::DeriveChannelId(genesis_.chain_id(), adv_->key().XOnly(),
                                                          AsSpan(acc.acceptor_key()), nonce_a);
    const std::string id = Str(cid);
    adv_->AddChannel(id, deposit, 0, std::min<uint32_t>(16, acc.max_updates_in_flight()),
                     std::min<uint32_t>(8, acc.max_tips_per_update()));
    EXPECT_TRUE(WaitState(v_, Hex(id), "open"));
    std::string why;
    EXPECT_TRUE(adv_->Reestablish(&why, {id})) << why;
    return id;
  }

  // ---- the per-attack frame ----
  std::string VictimState() {
    std::string s;
    for (const std::string& id : watched_) {
      const v1::ChannelApi c = Channel(v_, Hex(id));
      s += Hex(id).substr(0, 12) + " " + c.state() + " local=" + std::to_string(c.balance_local()) +
           " remote=" + std::to_string(c.balance_remote()) +
           " received=" + std::to_string(c.tips_received()) +
           " sent=" + std::to_string(c.tips_sent()) + "\n";
    }
    SyncFollower();
    for (const crypto::KeyPair* k : {v_.key, &adv_->key()}) {
      const ledger::Account* a = client_->chain().state().FindAccount(k->XOnly());
      s += "account " + HexEncode(k->XOnly()).substr(0, 12) +
           " balance=" + std::to_string(a ? a->balance : 0) +
           " nonce=" + std::to_string(a ? a->nonce : 0) + "\n";
    }
    auto list = FromJson<v1::ListChannelsResponse>(Call(v_, "GET", "/v1/channels").body);
    s += "victim channels=" + std::to_string(list.channels_size()) + "\n";
    return s;
  }

  void HonestTipFlows(const std::string& after) {
    const uint64_t before = Channel(v_, honest_ch_).tips_received();
    auto r =
        Tip(h_, honest_ch_, 1, "honest tip after " + after, "honest-" + std::to_string(++honest_));
    EXPECT_EQ(r.status, 200) << "the honest peer's tip after " << after << ": " << r.body;
    EXPECT_TRUE(WaitFor([&] { return Channel(v_, honest_ch_).tips_received() == before + 1; }))
        << "the victim stopped serving the honest peer after " << after;
  }

  // The connection is up and answered (for rules whose consequence is
  // "reject message"): a Ping gets its Pong.
  void StaysConnected() {
    EXPECT_TRUE(adv_->peer().Ping(kAnswer)) << "the victim dropped the connection";
  }
  // The victim closed the connection (consequence "disconnect").
  void Disconnected() {
    EXPECT_TRUE(adv_->peer().WaitClosed(kAnswer)) << "the victim kept the connection";
  }
  // A new session, reestablishing every attacker channel the victim has open.
  void Reconnect() {
    std::vector<std::string> open;
    for (const std::string& id : watched_) {
      if (Channel(v_, Hex(id)).state() == "open") open.push_back(id);
    }
    ReconnectIds(open);
  }
  void ReconnectIds(const std::vector<std::string>& ids) {
    std::string why;
    ASSERT_TRUE(adv_->Connect());
    ASSERT_TRUE(adv_->Reestablish(&why, ids)) << why;
  }

  // Sends `u` and asserts the victim answers UpdateRejected{code}; with
  // `disconnect`, the victim also drops the connection and logs the rule.
  void ExpectUpdateRefused(const v1::TipUpdate& u, const std::string& code, bool disconnect) {
    const size_t mark = Mark();
    ASSERT_TRUE(adv_->SendUpdate(u));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection(code, kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    EXPECT_TRUE(VictimLogs("peer broke " + code, mark)) << "no log line naming " << code;
    if (disconnect) {
      Disconnected();
    } else {
      StaysConnected();
    }
  }

  // Sends a raw frame (after handshake and Init) and expects Error{code}
  // and a closed connection.
  void ExpectFrameRefused(ByteSpan frame, const std::string& code) {
    const size_t mark = Mark();
    ASSERT_TRUE(adv_->peer().SendFrame(frame));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection(code, kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    Disconnected();
    // p2p logs the disconnect with its reason (the Error code is on the wire).
    EXPECT_TRUE(VictimLogs("disconnected: PROTOCOL_ERROR", mark)) << "no log line";
  }

  // The victim pays the attacker one tip on `id` through its API, in the
  // background; the attacker receives and applies it but does not ack yet.
  void VictimTipsAttacker(const std::string& id) {
    pending_tip_ = std::async(std::launch::async, [this, id] {
      return Tip(v_, Hex(id), 1, "victim to attacker", "v2a-" + std::to_string(++v2a_));
    });
    std::string why;
    ASSERT_TRUE(adv_->ReceiveUpdate(id, kAnswer, &why).has_value()) << why;
  }
  // After a refused ack: reconnect; reestablish sends the honest ack, and
  // the victim's API answers 200 for its tip.
  void RecoverVictimTip(const std::vector<std::string>& ids) {
    ReconnectIds(ids);
    ASSERT_TRUE(pending_tip_.valid());
    auto r = pending_tip_.get();
    EXPECT_EQ(r.status, 200) << r.body;
  }

  v1::Ack SignedAck(const std::string& id, uint64_t nonce, const std::string& root,
                    const crypto::KeyPair& key) {
    v1::Ack a;
    a.set_channel_id(id);
    a.set_nonce(nonce);
    a.set_tips_root(root);
    EXPECT_TRUE(channel::SignAck(genesis_.chain_id(), &a, key, crypto::SystemRng()).ok());
    return a;
  }
  void SendAck(const v1::Ack& a) {
    v1::Envelope env;
    *env.mutable_ack() = a;
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
  }
  void ExpectAckRefused(const v1::Ack& a, const std::string& code) {
    const size_t mark = Mark();
    SendAck(a);
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection(code, kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    EXPECT_TRUE(VictimLogs("peer broke " + code, mark));
    Disconnected();
  }

  // Sends an OpenChannel and expects RejectChannel{code}; nothing stored.
  void ExpectOpenRefused(const v1::OpenChannel& m, const std::string& code) {
    const size_t mark = Mark();
    v1::Envelope env;
    *env.mutable_open_channel() = m;
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection(code, kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    EXPECT_TRUE(VictimLogs("refusing channel from", mark));
    StaysConnected();
  }

  void ExpectLedgerRefuses(const v1::Transaction& tx, ledger::TxRule rule) {
    auto out = client_->SubmitAndWait(tx);
    std::cout << "[ answer   ] " << out.ToString() << "\n";
    EXPECT_TRUE(out.refused(rule)) << out.ToString();
  }

  Node v_, h_;
  std::string honest_ch_;  // hex
  std::unique_ptr<TestClient> client_;
  std::unique_ptr<Adversary> adv_;
  std::vector<std::string> watched_;  // raw ids of the attacker's channels
  std::string main_;                  // raw id: the channel most attacks use
  std::future<HttpResult> pending_tip_;
  int honest_ = 0;
  int v2a_ = 0;
};

// Every attack of the table against one victim, with the honest peer served
// after each.
TEST_F(AdversaryTest, EveryAttackIsRejectedAndTheHonestPeerIsServed) {
  ASSERT_NO_FATAL_FAILURE(StartNetwork());
  // A connection that never starts its handshake, held while the table runs.
  std::string error;
  auto stalled = RawPeer::Tcp(P2pPort("v"), &error);
  ASSERT_TRUE(stalled) << error;
  const auto stalled_since = std::chrono::steady_clock::now();

  constexpr uint64_t kDeposit = 100'000;
  main_ = OpenAttackerChannel(kDeposit, 40);
  ASSERT_FALSE(main_.empty());
  watched_.push_back(main_);
  std::string why;
  ASSERT_TRUE(adv_->PayHonestly(main_, 10, "an honest first tip", &why)) << why;
  ASSERT_TRUE(adv_->PayHonestly(main_, 500, "an honest second tip", &why)) << why;
  const crypto::KeyPair& stranger = accounts_[3].key;
  const std::string& M = main_;
  auto tip = [&](uint64_t amount, const std::string& msg = "attack", uint64_t offset = 0) {
    return adv_->NextTip(M, amount, msg, offset);
  };

  std::vector<Attack> table;
  auto add = [&](std::string name, std::string expected, std::function<void()> run) {
    table.push_back({std::move(name), std::move(expected), {}, std::move(run), {}, false});
  };

  // ---- updates: one rule broken each, everything else valid ----
  add("update/bad-signature", "UpdateRejected BAD_SIGNATURE, disconnect", [&] {
    auto u = adv_->ForgeUpdate(M, {tip(5)});
    std::string sig = u.proof().signature();
    sig[7] ^= 0x01;
    u.mutable_proof()->set_signature(sig);
    ExpectUpdateRefused(u, "BAD_SIGNATURE", true);
    Reconnect();
  });
  add("update/signed-by-another-key", "UpdateRejected BAD_SIGNATURE, disconnect", [&] {
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(5)}, {}, &stranger), "BAD_SIGNATURE", true);
    Reconnect();
  });
  add("update/replayed-nonce", "UpdateRejected NONCE_NOT_INCREASING", [&] {
    // The honest second update again, byte for byte.
    ExpectUpdateRefused(adv_->LastUpdate(M), "NONCE_NOT_INCREASING", false);
  });
  add("update/decreasing-nonce", "UpdateRejected NONCE_NOT_INCREASING", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)}, [](v1::BalanceProof* p) { p->set_nonce(p->nonce() - 2); }),
        "NONCE_NOT_INCREASING", false);
  });
  add("update/transferred-above-the-tips", "UpdateRejected TRANSFERRED_MISMATCH, disconnect", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)},
                          [](v1::BalanceProof* p) { p->set_transferred(p->transferred() + 1000); }),
        "TRANSFERRED_MISMATCH", true);
    Reconnect();
  });
  add("update/transferred-below-the-tips", "UpdateRejected TRANSFERRED_MISMATCH, disconnect", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)},
                          [](v1::BalanceProof* p) { p->set_transferred(p->transferred() - 5); }),
        "TRANSFERRED_MISMATCH", true);
    Reconnect();
  });
  add("update/tips-root-mismatch", "UpdateRejected TIPS_ROOT_MISMATCH, disconnect", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)}, [](v1::BalanceProof* p) { p->set_tips_root(Random32()); }),
        "TIPS_ROOT_MISMATCH", true);
    Reconnect();
  });
  add("update/overspend", "UpdateRejected INSUFFICIENT_SPENDABLE", [&] {
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(kDeposit)}), "INSUFFICIENT_SPENDABLE", false);
  });
  add("update/amounts-overflow", "UpdateRejected OVERFLOW", [&] {
    const uint64_t half = (uint64_t{1} << 63) + 1;
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(half), tip(half, "b", 1)}), "OVERFLOW", false);
  });
  add("update/amount-zero", "UpdateRejected AMOUNT_ZERO",
      [&] { ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(0)}), "AMOUNT_ZERO", false); });
  add("update/wrong-chain-id", "UpdateRejected WRONG_CHAIN_ID, disconnect", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)},
                          [](v1::BalanceProof* p) { p->set_chain_id("another-chain"); }),
        "WRONG_CHAIN_ID", true);
    Reconnect();
  });
  add("update/proof-of-another-channel", "UpdateRejected WRONG_CHANNEL_ID, disconnect", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)}, [](v1::BalanceProof* p) { p->set_channel_id(Random32()); }),
        "WRONG_CHANNEL_ID", true);
    Reconnect();
  });
  add("update/unknown-channel", "Error UNKNOWN_CHANNEL", [&] {
    auto u = adv_->ForgeUpdate(M, {tip(5)});
    u.set_channel_id(Random32());
    ASSERT_TRUE(adv_->SendUpdate(u));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("UNKNOWN_CHANNEL", kAnswer, &got)) << got;
    StaysConnected();
  });
  add("update/message-too-long", "UpdateRejected MESSAGE_TOO_LONG", [&] {
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(5, std::string(1001, 'a'))}), "MESSAGE_TOO_LONG",
                        false);
  });
  add("update/message-not-utf8", "Error BAD_ENVELOPE (protobuf refuses the string), disconnect",
      [&] {
        // proto3 string fields must be UTF-8: the Envelope itself does not
        // parse, so p2p refuses it before the channel rules see it.
        auto u = adv_->ForgeUpdate(M, {tip(5, "bad \xff\xfe utf-8")});
        v1::Envelope env;
        *env.mutable_tip_update() = u;
        std::string bytes = env.SerializePartialAsString();
        ExpectFrameRefused(AsSpan(bytes), "BAD_ENVELOPE");
        Reconnect();
      });
  add("update/too-much-metadata", "UpdateRejected METADATA_TOO_MANY", [&] {
    v1::Tip t = tip(5);
    for (char c = 'a'; c <= 'i'; ++c) {
      auto* e = t.add_metadata();
      e->set_key(std::string(1, c));
      e->set_value("v");
    }
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {t}), "METADATA_TOO_MANY", false);
  });
  add("update/metadata-key-invalid", "UpdateRejected METADATA_KEY_INVALID", [&] {
    v1::Tip t = tip(5);
    auto* e = t.add_metadata();
    e->set_key("App Name");
    e->set_value("v");
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {t}), "METADATA_KEY_INVALID", false);
  });
  add("update/metadata-value-too-long", "UpdateRejected METADATA_VALUE_INVALID", [&] {
    v1::Tip t = tip(5);
    auto* e = t.add_metadata();
    e->set_key("feed");
    e->set_value(std::string(257, 'v'));
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {t}), "METADATA_VALUE_INVALID", false);
  });
  add("update/metadata-not-sorted", "UpdateRejected METADATA_NOT_SORTED", [&] {
    v1::Tip t = tip(5);
    for (const char* k : {"sender_name", "app_name"}) {
      auto* e = t.add_metadata();
      e->set_key(k);
      e->set_value("v");
    }
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {t}), "METADATA_NOT_SORTED", false);
  });
  add("update/tip-index-gap", "UpdateRejected TIP_INDEX_GAP, disconnect", [&] {
    ExpectUpdateRefused(adv_->ForgeUpdate(M, {tip(5, "skips one", 1)}), "TIP_INDEX_GAP", true);
    Reconnect();
  });
  add("update/empty", "UpdateRejected EMPTY_UPDATE",
      [&] { ExpectUpdateRefused(adv_->ForgeUpdate(M, {}), "EMPTY_UPDATE", false); });
  add("update/too-many-tips", "UpdateRejected TOO_MANY_TIPS (the channel's limit is 8)", [&] {
    std::vector<v1::Tip> tips;
    for (uint64_t i = 0; i < 9; ++i) tips.push_back(tip(1, "many", i));
    ExpectUpdateRefused(adv_->ForgeUpdate(M, tips), "TOO_MANY_TIPS", false);
  });
  add("update/locked-amount", "UpdateRejected LOCKED_NOT_SUPPORTED", [&] {
    ExpectUpdateRefused(
        adv_->ForgeUpdate(M, {tip(5)}, [](v1::BalanceProof* p) { p->set_locked(5); }),
        "LOCKED_NOT_SUPPORTED", false);
  });
  add("update/malformed-proof", "UpdateRejected MALFORMED, disconnect", [&] {
    auto u = adv_->ForgeUpdate(M, {tip(5)});
    u.mutable_proof()->set_signature("short");
    ExpectUpdateRefused(u, "MALFORMED", true);
    Reconnect();
  });
  add("update/before-reestablish", "Error REESTABLISH_REQUIRED, disconnect", [&] {
    ASSERT_TRUE(adv_->Connect());  // a new session; no Reestablish sent
    ASSERT_TRUE(adv_->SendUpdate(adv_->ForgeUpdate(M, {tip(5)})));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("REESTABLISH_REQUIRED", kAnswer, &got)) << got;
    Disconnected();
    Reconnect();
  });

  // ---- acks for the victim's own updates ----
  auto ack_attack = [&](std::string name, std::string code, std::function<v1::Ack()> make) {
    Attack a;
    a.name = std::move(name);
    a.expected = "UpdateRejected " + code + ", disconnect";
    a.setup = [&] { VictimTipsAttacker(M); };
    a.run = [&, code, make] { ExpectAckRefused(make(), code); };
    a.after = [&] { RecoverVictimTip({M}); };
    table.push_back(std::move(a));
  };
  ack_attack("ack/unknown-nonce", "UNKNOWN_ACK_NONCE", [&] {
    auto honest = adv_->HonestAck(M);
    return SignedAck(M, honest->nonce() + 5, honest->tips_root(), adv_->key());
  });
  ack_attack("ack/signed-by-another-key", "BAD_SIGNATURE", [&] {
    auto honest = adv_->HonestAck(M);
    return SignedAck(M, honest->nonce(), honest->tips_root(), stranger);
  });
  ack_attack("ack/root-mismatch", "ACK_ROOT_MISMATCH", [&] {
    auto honest = adv_->HonestAck(M);
    return SignedAck(M, honest->nonce(), Random32(), adv_->key());
  });

  // ---- transport and p2p ----
  add("p2p/malformed-protobuf", "Error BAD_ENVELOPE, disconnect", [&] {
    const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    ExpectFrameRefused(garbage, "BAD_ENVELOPE");
    Reconnect();
  });
  add("p2p/unknown-message-type", "Error UNKNOWN_MESSAGE, disconnect", [&] {
    const uint8_t field_99[] = {0x98, 0x06, 0x01};  // varint field 99 = 1
    ExpectFrameRefused(field_99, "UNKNOWN_MESSAGE");
    Reconnect();
  });
  add("p2p/largest-frame-of-garbage", "Error BAD_ENVELOPE, disconnect", [&] {
    Bytes big(crypto::kNoiseMaxMessageSize, 0xff);
    ExpectFrameRefused(big, "BAD_ENVELOPE");
    Reconnect();
  });
  add("p2p/frame-over-the-maximum",
      "local Encrypt refuses 65536 bytes; a forged length header is DECRYPT_FAILED, disconnect",
      [&] {
        Bytes over(crypto::kNoiseMaxMessageSize + 1, 0x00);
        EXPECT_FALSE(adv_->peer().SendFrame(over)) << "the transport framed 65536 bytes";
        // The 2-byte length cannot say more than 65535: the only way to claim
        // a bigger frame is a header that does not authenticate.
        Bytes header(crypto::kNoiseLengthHeaderSize, 0xff);
        const size_t mark = Mark();
        ASSERT_TRUE(adv_->peer().SendRaw(header));
        std::string got;
        EXPECT_TRUE(adv_->AwaitRejection("DECRYPT_FAILED", kAnswer, &got)) << got;
        Disconnected();
        EXPECT_TRUE(VictimLogs("disconnected: PROTOCOL_ERROR: frame length", mark));
        Reconnect();
      });
  add("p2p/message-before-init", "Error INIT_REQUIRED, disconnect", [&] {
    std::string err;
    auto raw = RawPeer::Dial(P2pPort("v"), stranger, v_.id, &err);
    ASSERT_TRUE(raw) << err;
    v1::Envelope env;
    *env.mutable_tip_update() = adv_->ForgeUpdate(M, {tip(5)});
    ASSERT_TRUE(raw->SendEnvelope(env));
    EXPECT_TRUE(raw->WaitClosed(kAnswer));
    EXPECT_TRUE(raw->FindError("INIT_REQUIRED").has_value());
    StaysConnected();
  });
  add("p2p/wrong-chain", "Error WRONG_CHAIN, disconnect", [&] {
    std::string err;
    auto raw = RawPeer::Dial(P2pPort("v"), stranger, v_.id, &err);
    ASSERT_TRUE(raw) << err;
    ASSERT_TRUE(raw->SendInit("another-chain"));
    EXPECT_TRUE(raw->WaitClosed(kAnswer));
    EXPECT_TRUE(raw->FindError("WRONG_CHAIN").has_value());
  });
  add("p2p/second-init", "Error UNEXPECTED_INIT, disconnect", [&] {
    const size_t mark = Mark();
    ASSERT_TRUE(adv_->peer().SendInit(genesis_.chain_id()));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("UNEXPECTED_INIT", kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    Disconnected();
    EXPECT_TRUE(VictimLogs("disconnected: PROTOCOL_ERROR: second Init", mark));
    Reconnect();
  });
  add("p2p/incompatible-protocol-version", "Error INCOMPATIBLE_VERSION, disconnect", [&] {
    std::string err;
    auto raw = RawPeer::Dial(P2pPort("v"), stranger, v_.id, &err);
    ASSERT_TRUE(raw) << err;
    v1::Envelope env;
    env.mutable_init()->set_chain_id(genesis_.chain_id());
    env.mutable_init()->set_protocol_version(p2p::kMinProtocolVersion - 1);
    ASSERT_TRUE(raw->SendEnvelope(env));
    EXPECT_TRUE(raw->WaitClosed(kAnswer));
    EXPECT_TRUE(raw->FindError("INCOMPATIBLE_VERSION").has_value());
  });
  add("p2p/handshake-garbage", "connection closed (handshake failed)", [&] {
    std::string err;
    auto raw = RawPeer::Tcp(P2pPort("v"), &err);
    ASSERT_TRUE(raw) << err;
    Bytes act1(crypto::kAct1Size, 0x5a);
    ASSERT_TRUE(raw->SendRaw(act1));
    EXPECT_TRUE(raw->WaitClosed(kAnswer));
  });
  add("p2p/handshake-to-the-wrong-key", "connection closed (act 1 does not decrypt)", [&] {
    std::string err;
    auto raw = RawPeer::Dial(P2pPort("v"), stranger, h_.id, &err);
    EXPECT_TRUE(raw == nullptr) << "the victim finished a handshake meant for another key";
  });
  add("p2p/ping-flood", "Error PING_RATE_EXCEEDED, disconnect", [&] {
    const size_t mark = Mark();
    // One at a time, each Pong read before the next Ping, until the budget
    // is spent (the burst is about four maximal Pongs).
    int answered = 0;
    while (answered < 64 && adv_->peer().Ping(kAnswer, p2p::kMaxPongBytes)) ++answered;
    std::cout << "[ answer   ] " << answered << " maximal Pongs before the refusal\n";
    EXPECT_LT(answered, 64);
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("PING_RATE_EXCEEDED", kAnswer, &got)) << got;
    Disconnected();
    EXPECT_TRUE(VictimLogs("disconnected: RATE_LIMITED", mark));
    Reconnect();
  });
  {
    Attack a;
    a.name = "p2p/connection-flood";
    a.expected = "inbound beyond max-inbound-per-address (8) closed at once, logged";
    a.run = [&] {
      const size_t mark = Mark();
      std::vector<std::unique_ptr<RawPeer>> flood;
      for (int i = 0; i < 24; ++i) {
        std::string err;
        if (auto p = RawPeer::Tcp(P2pPort("v"), &err)) flood.push_back(std::move(p));
      }
      EXPECT_TRUE(VictimLogs("refusing inbound connection from 127.0.0.1", mark));
      size_t closed = 0;
      for (auto& p : flood) closed += p->WaitClosed(std::chrono::milliseconds(200)) ? 1 : 0;
      std::cout << "[ answer   ] " << closed << " of " << flood.size()
                << " flood connections closed at once\n";
      EXPECT_GE(closed, flood.size() - 8);
      // The honest peer is served while the flood holds its slots.
      HonestTipFlows("the flood (held)");
      StaysConnected();
    };
    table.push_back(std::move(a));
  }

  // ---- opens ----
  add("open/wrong-chain", "RejectChannel WRONG_CHAIN_ID", [&] {
    auto m = OpenMsg(1000, 40, AccountNonce(adv_->key()));
    m.set_chain_id("another-chain");
    ExpectOpenRefused(m, "WRONG_CHAIN_ID");
  });
  add("open/someone-elses-funds", "RejectChannel WRONG_FUNDER", [&] {
    auto m = OpenMsg(1000, 40, AccountNonce(adv_->key()));
    m.set_funder_key(Str(accounts_[3].key.XOnly()));
    ExpectOpenRefused(m, "WRONG_FUNDER");
  });
  add("open/deposits-overflow", "RejectChannel OVERFLOW", [&] {
    auto m = OpenMsg(std::numeric_limits<uint64_t>::max(), 40, AccountNonce(adv_->key()));
    m.set_deposit_b_requested(1);
    ExpectOpenRefused(m, "OVERFLOW");
  });
  add("open/more-than-the-opener-has", "RejectChannel OPENER_CANNOT_FUND", [&] {
    ExpectOpenRefused(OpenMsg(1'000'000'000, 40, AccountNonce(adv_->key())), "OPENER_CANNOT_FUND");
  });
  add("open/asks-the-victim-to-fund", "RejectChannel DEPOSIT_REFUSED", [&] {
    auto m = OpenMsg(1000, 40, AccountNonce(adv_->key()));
    m.set_deposit_b_requested(500);
    ExpectOpenRefused(m, "DEPOSIT_REFUSED");
  });
  add("open/settle-window-too-short", "RejectChannel SETTLE_TIMEOUT_TOO_SHORT", [&] {
    ExpectOpenRefused(OpenMsg(1000, 3, AccountNonce(adv_->key())), "SETTLE_TIMEOUT_TOO_SHORT");
  });

  // ---- reestablish lies: each breaks a channel of its own, which the
  // victim closes on the ledger with the attacker's latest proof ----
  std::map<std::string, std::string> lie_channels;  // name -> raw id
  auto lie = [&](std::string name, std::string code, std::string consequence,
                 std::function<v1::Reestablish(const std::string&)> make,
                 bool victim_pays = false) {
    Attack a;
    a.name = name;
    a.expected = "UpdateRejected " + code + ", " + consequence;
    a.changes_state = consequence != "disconnect";
    a.setup = [&, name, victim_pays] {
      // The victim's minimum window (1 s = 10 blocks): the close settles
      // before the next attack, so later snapshots hold still.
      std::string id = OpenAttackerChannel(10'000, 10);
      ASSERT_FALSE(id.empty());
      std::string w;
      ASSERT_TRUE(adv_->PayHonestly(id, 7, "before the lie", &w)) << w;
      if (victim_pays) {
        // The victim pays 1 back and the attacker acknowledges it.
        VictimTipsAttacker(id);
        SendAck(*adv_->HonestAck(id));
        EXPECT_EQ(pending_tip_.get().status, 200);
      }
      lie_channels[name] = id;
      watched_.push_back(id);
    };
    a.run = [&, name, code, consequence, make] {
      const std::string id = lie_channels.at(name);
      adv_->Drop();
      ASSERT_TRUE(adv_->Connect());
      const size_t mark = Mark();
      // Honest reestablish for the other channels; the lie for this one.
      std::vector<std::string> others;
      for (const std::string& w : watched_) {
        if (w != id && Channel(v_, Hex(w)).state() == "open") others.push_back(w);
      }
      v1::Envelope env;
      *env.mutable_reestablish() = make(id);
      ASSERT_TRUE(adv_->peer().SendEnvelope(env));
      std::string got;
      EXPECT_TRUE(adv_->AwaitRejection(code, kAnswer, &got)) << got;
      std::cout << "[ answer   ] " << got << "\n";
      EXPECT_TRUE(VictimLogs("peer broke " + code, mark));
      Disconnected();
      if (consequence != "disconnect") {
        // The victim closes with the attacker's latest proof: the 7 it was paid.
        EXPECT_TRUE(WaitState(v_, Hex(id), "closing"));
        EXPECT_TRUE(Contains(Channel(v_, Hex(id)).close_reason(),
                             "peer showed irreconcilable state: " + code))
            << Channel(v_, Hex(id)).close_reason();
        EXPECT_TRUE(VictimLogs("unilateral close submitted", mark));
        EXPECT_TRUE(RunUntil(
            client_->io(),
            [&] {
              auto oc = Onchain(id);
              return oc && oc->phase != ledger::ChannelPhase::kOpen;
            },
            std::chrono::seconds(30)));
        auto oc = Onchain(id);
        ASSERT_TRUE(oc.has_value());
        EXPECT_EQ(oc->proof_a_to_b.transferred, 7u);
        EXPECT_EQ(oc->proof_a_to_b.nonce, 1u);
        // Every other channel is as it was.
        for (const std::string& w : others) EXPECT_EQ(Channel(v_, Hex(w)).state(), "open");
        // The window passes and the channel settles: the victim keeps the 7.
        EXPECT_TRUE(WaitState(v_, Hex(id), "closed", std::chrono::seconds(60)));
        ASSERT_TRUE(RunUntil(
            client_->io(), [&] { return Onchain(id)->phase == ledger::ChannelPhase::kSettled; },
            std::chrono::seconds(30)));
        EXPECT_EQ(Onchain(id)->payout_b, 7u);
      }
      ReconnectIds({M});
    };
    table.push_back(std::move(a));
  };
  lie("reestablish/acked-more-than-received", "MALFORMED", "disconnect",
      [&](const std::string& id) {
        v1::Reestablish r = adv_->channel(id).mirror.MakeReestablish();
        r.set_acked_received_nonce(r.received_nonce() + 3);
        return r;
      });
  lie("reestablish/higher-nonce-than-ever-sent", "FORGED_PROOF", "close the channel",
      [&](const std::string& id) {
        v1::Reestablish r = adv_->channel(id).mirror.MakeReestablish();
        r.set_received_nonce(9);
        r.set_received_tips_root(Random32());
        r.clear_received_proof();
        r.set_received_tip_count(9);
        return r;
      });
  lie("reestablish/forged-copy-of-the-victims-proof", "FORGED_PROOF", "close the channel",
      [&](const std::string& id) {
        v1::Reestablish r = adv_->channel(id).mirror.MakeReestablish();
        // "You sent me 5000 at nonce 4": a proof of the victim's direction
        // signed by the attacker.
        v1::BalanceProof forged = Proof(adv_->key(), id, 4, 5000);
        r.set_received_nonce(4);
        r.set_received_tips_root(forged.tips_root());
        *r.mutable_received_proof() = forged;
        r.set_received_tip_count(4);
        return r;
      });
  lie(
      "reestablish/denies-updates-it-acknowledged", "PEER_LOST_ACKED_UPDATES", "close the channel",
      [&](const std::string& id) {
        // "I never received anything from you", after acknowledging nonce 1.
        v1::Reestablish r = adv_->channel(id).mirror.MakeReestablish();
        r.set_received_nonce(0);
        r.set_received_tips_root(std::string(32, '\0'));
        r.clear_received_proof();
        r.set_acked_received_nonce(0);
        r.set_received_tip_count(0);
        return r;
      },
      /*victim_pays=*/true);
  lie("reestablish/conflicting-root", "CONFLICTING_STATE", "close the channel",
      [&](const std::string& id) {
        v1::Reestablish r = adv_->channel(id).mirror.MakeReestablish();
        r.set_sent_tips_root(Random32());  // same nonce as the victim holds, another root
        return r;
      });
  // ---- the honest peer's channel, addressed by the attacker ----
  // The victim finds a channel by id AND the peer of the session, so the
  // attacker cannot touch a channel it is not a party of.
  const std::string honest_raw = Str(*HexDecode(honest_ch_));
  auto honest_untouched = [&] {
    // Messages are handled in order: once the Pong is back, the victim has
    // handled what came before it.
    StaysConnected();
    const v1::ChannelApi c = Channel(v_, honest_ch_);
    EXPECT_EQ(c.state(), "open");
    EXPECT_TRUE(c.close_reason().empty()) << c.close_reason();
  };
  add("cross/update-on-the-honest-peers-channel", "Error UNKNOWN_CHANNEL", [&] {
    auto u =
        adv_->ForgeUpdate(M, {tip(5)}, [&](v1::BalanceProof* p) { p->set_channel_id(honest_raw); });
    u.set_channel_id(honest_raw);
    ASSERT_TRUE(adv_->SendUpdate(u));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("UNKNOWN_CHANNEL", kAnswer, &got)) << got;
    honest_untouched();
  });
  add("cross/reestablish-on-the-honest-peers-channel", "Error UNKNOWN_CHANNEL", [&] {
    v1::Envelope env;
    *env.mutable_reestablish() = adv_->channel(M).mirror.MakeReestablish();
    env.mutable_reestablish()->set_channel_id(honest_raw);
    env.mutable_reestablish()->set_received_nonce(1000);  // a lie that would close it
    env.mutable_reestablish()->set_received_tips_root(Random32());
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("UNKNOWN_CHANNEL", kAnswer, &got)) << got;
    honest_untouched();
  });
  add("cross/shutdown-of-the-honest-peers-channel", "ignored (not the attacker's channel)", [&] {
    v1::Envelope env;
    env.mutable_close_request()->set_channel_id(honest_raw);
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
    honest_untouched();
  });
  add("cross/ack-on-the-honest-peers-channel", "ignored (not the attacker's channel)", [&] {
    SendAck(SignedAck(honest_raw, 1, Random32(), adv_->key()));
    honest_untouched();
  });
  add("cross/unilateral-close-of-the-honest-peers-channel", "ledger NOT_A_PARTY", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          tx->mutable_unilateral_close()->set_channel_id(honest_raw);
                        }),
                        ledger::TxRule::kNotAParty);
  });
  add("cross/cooperative-close-of-the-honest-peers-channel", "ledger NOT_A_PARTY", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          auto* c = tx->mutable_cooperative_close()->mutable_close();
                          c->set_chain_id(genesis_.chain_id());
                          c->set_channel_id(honest_raw);
                          c->set_balance_a(1);
                          c->set_balance_b(1'000'000 / 4 - 1);
                          c->set_signature_a(std::string(64, '\1'));
                          c->set_signature_b(std::string(64, '\1'));
                        }),
                        ledger::TxRule::kNotAParty);
  });
  add("reestablish/unknown-channel", "Error UNKNOWN_CHANNEL", [&] {
    v1::Envelope env;
    *env.mutable_reestablish() = adv_->channel(M).mirror.MakeReestablish();
    env.mutable_reestablish()->set_channel_id(Random32());
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("UNKNOWN_CHANNEL", kAnswer, &got)) << got;
    StaysConnected();
  });

  const size_t first_one_shot = table.size();
  // ---- the cooperative close (channel K): A proposes, the victim (B) signs ----
  std::string K;
  auto send_close_request = [&](uint64_t balance_a, uint64_t balance_b, bool sign) {
    v1::Envelope env;
    v1::CloseRequest& r = *env.mutable_close_request();
    r.set_channel_id(K);
    if (sign) {
      r.set_balance_a(balance_a);
      r.set_balance_b(balance_b);
      auto sig = channel::SignCooperativeClose(genesis_.chain_id(), AsSpan(K), balance_a, balance_b,
                                               adv_->key(), crypto::SystemRng());
      r.set_signature(Str(*sig));
    }
    ASSERT_TRUE(adv_->peer().SendEnvelope(env));
  };
  v1::CloseSigned k_signed;
  {
    Attack a;
    a.name = "close/cooperative-proposal-paying-the-attacker-more";
    a.expected = "not signed; logged close proposal refused: CLOSE_BALANCE_MISMATCH";
    a.setup = [&] {
      K = OpenAttackerChannel(10'000, 40);
      ASSERT_FALSE(K.empty());
      watched_.push_back(K);
      std::string w;
      ASSERT_TRUE(adv_->PayHonestly(K, 7, "before the cooperative close", &w)) << w;
      // Shutdown both ways: the victim stores CLOSING and answers with its own.
      send_close_request(0, 0, false);
      auto shutdown = adv_->peer().Await(
          [&](const v1::Envelope& e) {
            return e.has_close_request() && e.close_request().channel_id() == K &&
                   e.close_request().signature().empty();
          },
          kAnswer);
      ASSERT_TRUE(shutdown.has_value()) << "the victim did not answer the shutdown";
      ASSERT_TRUE(WaitState(v_, Hex(K), "closing"));
    };
    a.run = [&] {
      const size_t mark = Mark();
      send_close_request(10'000, 7, true);  // the 7 the attacker paid, back to itself too
      EXPECT_TRUE(VictimLogs("close proposal refused: CLOSE_BALANCE_MISMATCH", mark));
      StaysConnected();
    };
    table.push_back(std::move(a));
  }
  {
    Attack a;
    a.name = "close/updates-after-the-victim-signed-the-close";
    a.expected = "UpdateRejected CHANNEL_CLOSING";
    a.setup = [&] {
      send_close_request(10'000 - 7, 7, true);
      auto env = adv_->peer().Await(
          [&](const v1::Envelope& e) {
            return e.has_close_signed() && e.close_signed().channel_id() == K;
          },
          kAnswer);
      ASSERT_TRUE(env.has_value()) << "the victim did not sign the honest proposal";
      k_signed = env->close_signed();
    };
    a.run = [&] {
      ASSERT_TRUE(adv_->SendUpdate(adv_->ForgeUpdate(K, {adv_->NextTip(K, 1, "after signing")})));
      std::string got;
      EXPECT_TRUE(adv_->AwaitRejection("CHANNEL_CLOSING", kAnswer, &got)) << got;
      std::cout << "[ answer   ] " << got << "\n";
      StaysConnected();
    };
    a.after = [&] {
      // The signed balances settle: the victim gets the 7 it was paid.
      auto ours = channel::SignCooperativeClose(genesis_.chain_id(), AsSpan(K), 10'000 - 7, 7,
                                                adv_->key(), crypto::SystemRng());
      ASSERT_GT(client_->SubmitAndInclude(AttackerTx([&](v1::Transaction* tx) {
        auto* c = tx->mutable_cooperative_close()->mutable_close();
        c->set_chain_id(genesis_.chain_id());
        c->set_channel_id(K);
        c->set_balance_a(10'000 - 7);
        c->set_balance_b(7);
        c->set_signature_a(Str(*ours));
        c->set_signature_b(k_signed.signature());
      })),
                0u);
      EXPECT_TRUE(WaitState(v_, Hex(K), "closed"));
      EXPECT_EQ(Onchain(K)->payout_b, 7u);
    };
    table.push_back(std::move(a));
  }

  add("close/updates-after-the-settlement", "UpdateRejected CHANNEL_CLOSING", [&] {
    ASSERT_EQ(Channel(v_, Hex(K)).state(), "closed");
    ASSERT_TRUE(adv_->SendUpdate(adv_->ForgeUpdate(K, {adv_->NextTip(K, 1, "after settling")})));
    std::string got;
    EXPECT_TRUE(adv_->AwaitRejection("CHANNEL_CLOSING", kAnswer, &got)) << got;
    std::cout << "[ answer   ] " << got << "\n";
    StaysConnected();
  });
  add("ledger/replayed-transaction", "ledger BAD_NONCE", [&] {
    v1::Transaction tx = AttackerTx([&](v1::Transaction* t) {
      t->mutable_transfer()->set_to(Str(v_.key->XOnly()));
      t->mutable_transfer()->set_amount(1);
    });
    tx.set_nonce(0);
    ASSERT_TRUE(ledger::SignTransaction(&tx, adv_->key(), crypto::SystemRng()).ok());
    ExpectLedgerRefuses(tx, ledger::TxRule::kBadNonce);
  });
  {
    Attack a;
    a.name = "p2p/handshake-stall";
    a.expected = "connection closed after the 10 s handshake timeout";
    a.run = [&] {
      EXPECT_TRUE(stalled->WaitClosed(std::chrono::seconds(30)));
      const auto held = std::chrono::steady_clock::now() - stalled_since;
      std::cout << "[ answer   ] closed; held "
                << std::chrono::duration_cast<std::chrono::seconds>(held).count() << " s\n";
    };
    table.push_back(std::move(a));
  }
  // ---- closes on the ledger (channel C): its window (200 blocks of 100 ms)
  // outlasts the attacks made inside it ----
  constexpr uint64_t kCloseWindow = 200;
  std::string C;
  uint64_t c_received = 0;
  std::optional<v1::BalanceProof> stale_victim_proof;
  {
    Attack a;
    a.name = "close/cooperative-close-paying-more-than-the-deposits";
    a.expected = "ledger BALANCES_MISMATCH";
    a.setup = [&] {
      C = OpenAttackerChannel(10'000, kCloseWindow);
      ASSERT_FALSE(C.empty());
      watched_.push_back(C);
      std::string w;
      for (uint64_t amount : {3, 4, 5}) {
        ASSERT_TRUE(adv_->PayHonestly(C, amount, "paid before the close", &w)) << w;
        c_received += amount;
      }
      // The victim pays the attacker twice: the first proof becomes stale.
      for (int i = 0; i < 2; ++i) {
        pending_tip_ = std::async(std::launch::async, [this, &C] {
          return Tip(v_, Hex(C), 1, "victim to attacker", "v2a-" + std::to_string(++v2a_));
        });
        auto u = adv_->ReceiveUpdate(C, kAnswer, &w);
        ASSERT_TRUE(u.has_value()) << w;
        if (!stale_victim_proof) stale_victim_proof = u->proof();
        SendAck(*adv_->HonestAck(C));
        EXPECT_EQ(pending_tip_.get().status, 200);
      }
    };
    a.run = [&] {
      ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                            auto* c = tx->mutable_cooperative_close()->mutable_close();
                            c->set_chain_id(genesis_.chain_id());
                            c->set_channel_id(C);
                            c->set_balance_a(10'000);
                            c->set_balance_b(10'000);
                            auto sig = channel::SignCooperativeClose(genesis_.chain_id(), AsSpan(C),
                                                                     10'000, 10'000, adv_->key(),
                                                                     crypto::SystemRng());
                            c->set_signature_a(Str(*sig));
                            c->set_signature_b(Str(*sig));
                          }),
                          ledger::TxRule::kBalancesMismatch);
    };
    table.push_back(std::move(a));
  }
  add("close/unilateral-close-carrying-the-closers-own-proof", "ledger BAD_PROOF", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          tx->mutable_unilateral_close()->set_channel_id(C);
                          *tx->mutable_unilateral_close()->mutable_partner_proof() =
                              Proof(adv_->key(), C, uint64_t{1} << 62, 0);
                        }),
                        ledger::TxRule::kBadProof);
  });
  add("close/settle-an-open-channel", "ledger CHANNEL_NOT_CLOSING", [&] {
    ExpectLedgerRefuses(
        AttackerTx([&](v1::Transaction* tx) { tx->mutable_settle()->set_channel_id(C); }),
        ledger::TxRule::kChannelNotClosing);
  });
  // The open flood leaves the records the limit allows (C is open already).
  {
    Attack a;
    a.name = "open/flood";
    a.expected =
        "4 accepted (opening, nothing on the ledger), then RejectChannel "
        "TOO_MANY_PENDING_OPENS";
    a.changes_state = true;
    a.run = [&] {
      const auto before = FromJson<v1::ListChannelsResponse>(Call(v_, "GET", "/v1/channels").body);
      const uint64_t far = AccountNonce(adv_->key()) + 1000;
      int accepted = 0, refused = 0;
      for (uint64_t i = 0; i < 12; ++i) {
        v1::Envelope env;
        *env.mutable_open_channel() = OpenMsg(1000, 40, far + i);
        const std::string temp = env.open_channel().temporary_id();
        ASSERT_TRUE(adv_->peer().SendEnvelope(env));
        auto ans = adv_->peer().Await(
            [&](const v1::Envelope& e) {
              return (e.has_accept_channel() && e.accept_channel().temporary_id() == temp) ||
                     (e.has_reject_channel() && e.reject_channel().temporary_id() == temp);
            },
            kAnswer);
        ASSERT_TRUE(ans.has_value());
        if (ans->has_accept_channel()) {
          ++accepted;
        } else {
          EXPECT_EQ(ans->reject_channel().code(), "TOO_MANY_PENDING_OPENS");
          ++refused;
        }
      }
      std::cout << "[ answer   ] " << accepted << " accepted, " << refused
                << " refused TOO_MANY_PENDING_OPENS\n";
      EXPECT_EQ(accepted, 4);
      EXPECT_EQ(refused, 8);
      const auto after = FromJson<v1::ListChannelsResponse>(Call(v_, "GET", "/v1/channels").body);
      EXPECT_EQ(after.channels_size(), before.channels_size() + 4);
      StaysConnected();
    };
    table.push_back(std::move(a));
  }
  {
    // The per-peer limit is 4, the global one 64: 16 cheap identities (each
    // funded with one fee and one unit by the attacker) that never submit
    // their opens would hold every slot for ever, and no honest peer could
    // open a channel with the victim again. The victim abandons an open it
    // does not fund once it is not on the ledger within its deadline
    // (docs/channels.md, "Abandoned opens").
    Attack a;
    a.name = "open/every-pending-slot-from-16-identities";
    a.expected =
        "64 unfunded opens held until their deadline, then abandoned; an honest open "
        "succeeds";
    a.changes_state = true;
    a.run = [&] {
      SyncFollower();
      const uint64_t fee = genesis_.fee_per_tx();
      std::vector<crypto::KeyPair> ids;
      uint64_t nonce = AccountNonce(adv_->key());
      uint64_t last_height = 0;
      for (int i = 0; i < 15; ++i) {
        ids.push_back(crypto::KeyPair::Generate(crypto::SystemRng()));
        v1::Transaction tx;
        tx.set_chain_id(genesis_.chain_id());
        tx.set_signer(Str(adv_->key().XOnly()));
        tx.set_nonce(nonce++);
        tx.set_fee(fee);
        tx.mutable_transfer()->set_to(Str(ids.back().XOnly()));
        tx.mutable_transfer()->set_amount(fee + 1);
        ASSERT_TRUE(ledger::SignTransaction(&tx, adv_->key(), crypto::SystemRng()).ok());
        if (i + 1 < 15) {
          ASSERT_TRUE(client_->SubmitAndWait(tx).accepted());
        } else {
          last_height = client_->SubmitAndInclude(tx);
        }
      }
      ASSERT_GT(last_height, 0u);
      // The victim must see the funded accounts before they open.
      ASSERT_TRUE(WaitFor([&] {
        return FromJson<v1::InfoResponse>(Call(v_, "GET", "/v1/info").body).ledger_height() >=
               last_height;
      }));
      const size_t mark = Mark();
      int accepted = 0, refused = 0;
      for (const crypto::KeyPair& k : ids) {
        std::string err;
        auto raw = RawPeer::Dial(P2pPort("v"), k, v_.id, &err);
        ASSERT_TRUE(raw) << err;
        ASSERT_TRUE(raw->Handshake(genesis_.chain_id(), kAnswer));
        for (uint64_t j = 0; j < 5; ++j) {
          v1::Envelope env;
          *env.mutable_open_channel() = OpenMsg(1, 40, 0);
          env.mutable_open_channel()->set_funder_key(Str(k.XOnly()));
          env.mutable_open_channel()->set_nonce_a(j);
          const std::string temp = env.open_channel().temporary_id();
          ASSERT_TRUE(raw->SendEnvelope(env));
          auto ans = raw->Await(
              [&](const v1::Envelope& e) {
                return (e.has_accept_channel() && e.accept_channel().temporary_id() == temp) ||
                       (e.has_reject_channel() && e.reject_channel().temporary_id() == temp);
              },
              kAnswer);
          ASSERT_TRUE(ans.has_value());
          if (ans->has_accept_channel()) {
            ++accepted;
          } else {
            EXPECT_EQ(ans->reject_channel().code(), "TOO_MANY_PENDING_OPENS");
            ++refused;
          }
        }
        // Hang up: the records outlive the session (and one address may
        // hold only 8 connections).
      }
      std::cout << "[ answer   ] " << accepted << " accepted, " << refused
                << " refused TOO_MANY_PENDING_OPENS\n";
      EXPECT_EQ(accepted, 60);  // 64 in all, the flood holds 4
      // Every slot is taken: an honest open is refused now...
      auto r = Call(h_, "POST", "/v1/channels", OpenBody(v_, 1000, 0));
      std::cout << "[ answer   ] honest open while the slots are held: " << r.status << " "
                << r.body << "\n";
      EXPECT_EQ(r.status, 409);
      EXPECT_TRUE(Contains(r.body, "TOO_MANY_PENDING_OPENS")) << r.body;
      // ... until the deadline passes and the victim abandons the opens it
      // does not fund.
      EXPECT_TRUE(
          VictimLogs("the open was abandoned: not on the ledger", mark, std::chrono::seconds(60)));
      EXPECT_TRUE(WaitFor(
          [&] {
            r = Call(h_, "POST", "/v1/channels", OpenBody(v_, 1000, 0));
            return r.status == 200 || r.status == 202;
          },
          std::chrono::seconds(60)))
          << r.status << " " << r.body;
    };
    table.push_back(std::move(a));
  }
  {
    Attack a;
    a.name = "close/unilateral-close-with-a-stale-proof";
    a.expected =
        "accepted (it only harms the closer); the victim's watcher submits the "
        "attacker's latest proof";
    a.changes_state = true;
    a.run = [&] {
      const size_t mark = Mark();
      ASSERT_TRUE(stale_victim_proof.has_value());
      ASSERT_GT(client_->SubmitAndInclude(AttackerTx([&](v1::Transaction* tx) {
        tx->mutable_unilateral_close()->set_channel_id(C);
        *tx->mutable_unilateral_close()->mutable_partner_proof() = *stale_victim_proof;
      })),
                0u);
      EXPECT_TRUE(WaitState(v_, Hex(C), "closing"));
      EXPECT_TRUE(VictimLogs("submitting its latest proof", mark, std::chrono::seconds(30)));
      EXPECT_TRUE(RunUntil(
          client_->io(), [&] { return Onchain(C)->proof_a_to_b.nonce == 3; },
          std::chrono::seconds(30)))
          << "the victim's watcher did not land the attacker's latest proof";
    };
    table.push_back(std::move(a));
  }
  {
    Attack a;
    a.name = "close/updates-after-the-close";
    a.expected = "UpdateRejected CHANNEL_CLOSING";
    a.run = [&] {
      auto u = adv_->ForgeUpdate(C, {adv_->NextTip(C, 1, "after the close")});
      ASSERT_TRUE(adv_->SendUpdate(u));
      std::string got;
      EXPECT_TRUE(adv_->AwaitRejection("CHANNEL_CLOSING", kAnswer, &got)) << got;
      std::cout << "[ answer   ] " << got << "\n";
      StaysConnected();
    };
    table.push_back(std::move(a));
  }
  add("close/own-direction-proof-during-the-window", "ledger NOT_BENEFICIARY", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          tx->mutable_update_proof()->set_channel_id(C);
                          *tx->mutable_update_proof()->mutable_proof() =
                              Proof(adv_->key(), C, uint64_t{1} << 63, 0);
                        }),
                        ledger::TxRule::kNotBeneficiary);
  });
  add("close/forged-proof-of-the-victims-direction", "ledger BAD_PROOF", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          tx->mutable_update_proof()->set_channel_id(C);
                          *tx->mutable_update_proof()->mutable_proof() =
                              Proof(stranger, C, 50, 9'000);
                        }),
                        ledger::TxRule::kBadProof);
  });
  add("close/the-victims-stale-proof-again", "ledger STALE_PROOF", [&] {
    ExpectLedgerRefuses(AttackerTx([&](v1::Transaction* tx) {
                          tx->mutable_update_proof()->set_channel_id(C);
                          *tx->mutable_update_proof()->mutable_proof() = *stale_victim_proof;
                        }),
                        ledger::TxRule::kStaleProof);
  });
  add("close/settle-before-the-window", "ledger WINDOW_OPEN", [&] {
    ExpectLedgerRefuses(
        AttackerTx([&](v1::Transaction* tx) { tx->mutable_settle()->set_channel_id(C); }),
        ledger::TxRule::kWindowOpen);
  });

  // ---- run the table ----
  // Everything before the cooperative-close section can run again on the
  // same victim; the long mode (TIPD_ADVERSARY_ROUNDS=N) runs that part N
  // times, then the one-shot rest once.
  const size_t repeatable = first_one_shot;
  int rounds = 1;
  if (const char* env = std::getenv("TIPD_ADVERSARY_ROUNDS")) rounds = std::max(1, std::atoi(env));
  std::vector<const Attack*> order;
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < repeatable; ++i) order.push_back(&table[i]);
  }
  for (size_t i = repeatable; i < table.size(); ++i) order.push_back(&table[i]);
  std::set<std::string> names;
  for (const Attack& a : table) {
    ASSERT_TRUE(names.insert(a.name).second) << "duplicate attack " << a.name;
  }
  size_t n = 0;
  for (const Attack* ap : order) {
    const Attack& a = *ap;
    ++n;
    std::cout << "[ attack " << n << "/" << order.size() << " ] " << a.name
              << "  (expect: " << a.expected << ")\n"
              << std::flush;
    SCOPED_TRACE("attack " + a.name);
    if (a.setup) {
      ASSERT_NO_FATAL_FAILURE(a.setup());
    }
    const std::string before = VictimState();
    ASSERT_NO_FATAL_FAILURE(a.run());
    if (!a.changes_state) {
      EXPECT_EQ(VictimState(), before) << "the victim's state changed";
    }
    if (a.after) {
      ASSERT_NO_FATAL_FAILURE(a.after());
    }
    ASSERT_NO_FATAL_FAILURE(HonestTipFlows(a.name));
    ASSERT_FALSE(HasFailure()) << "stopping after " << a.name;
  }
  std::cout << "[ figures ] " << table.size() << " distinct attacks, " << order.size() << " run ("
            << rounds << " round(s) of the repeatable " << repeatable
            << "), all rejected; the honest peer was served " << honest_ << " tips between them\n";
  EXPECT_GE(table.size(), 30u);
  // The closed channel settles as the ledger's rules say: the victim keeps
  // what the attacker paid it.
  ASSERT_TRUE(RunUntil(
      client_->io(), [&] { return Onchain(C)->phase == ledger::ChannelPhase::kSettled; },
      std::chrono::seconds(60)));
  auto oc = Onchain(C);
  EXPECT_GE(oc->payout_b + 2, c_received);  // it received 12 and paid 2 back
  EXPECT_TRUE(client_->chain().state().CheckSupply().ok());
}

}  // namespace
}  // namespace tipd::testing
