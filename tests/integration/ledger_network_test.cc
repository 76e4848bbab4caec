// Issue 3 acceptance on real processes: a `tipd ledger` and `tipd node`s on
// loopback, driven and checked by an in-test client built from tipd's own
// libraries.
#include <fmt/format.h>
#include <signal.h>

#include <random>

#include "channel/codec.h"
#include "tests/integration/harness.h"

namespace tipd::testing {
namespace {

class LedgerNetworkTest : public NetworkFixture {};

std::string StateAt(ledger::Chain& chain, uint64_t height) {
  auto block = chain.GetBlock(height);
  EXPECT_TRUE(block.ok() && block->has_value()) << "no block " << height;
  if (!block.ok() || !block->has_value()) return "";
  return HexEncode(AsSpan((*block)->header().state_hash()));
}

// Reopens a stopped process's chain store.
std::unique_ptr<ledger::Chain> OpenStoredChain(const std::filesystem::path& datadir,
                                               const v1::GenesisParams& genesis,
                                               std::unique_ptr<storage::Database>* db) {
  auto opened = storage::Database::Open(datadir / "db");
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  *db = std::move(opened).value();
  auto chain = ledger::Chain::Open(db->get(), ledger::ValidateGenesis(genesis).value());
  EXPECT_TRUE(chain.ok()) << chain.status().ToString();
  return std::move(chain).value();
}

TEST_F(LedgerNetworkTest, ThreeNodesFollowTransfersToTheSequencersStateHash) {
  InitLedger(/*block_interval_ms=*/100);
  StartLedger();
  for (const char* n : {"node-a", "node-b", "node-c"}) ASSERT_NE(StartNode(n), nullptr);
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());

  // 40 transfers around a ring of four accounts, submitted without waiting.
  std::vector<Hash32> ids;
  for (int i = 0; i < 40; ++i) {
    auto out = client->SubmitAndWait(Transfer(accounts_[i % 4], accounts_[(i + 1) % 4], 10 + i));
    ASSERT_TRUE(out.accepted()) << out.ToString();
    ids.push_back(out.tx_id);
  }
  uint64_t last = 0;
  size_t included = 0;
  for (const auto& id : ids) {
    client->ledger().WhenIncluded(id, [&](uint64_t h) {
      last = std::max(last, h);
      ++included;
    });
  }
  ASSERT_TRUE(RunUntil(
      client->io(), [&] { return included == ids.size(); }, 30s));
  // Every account's balance moved as the transfers say.
  const auto* a0 = client->chain().state().FindAccount(accounts_[0].key.XOnly());
  ASSERT_NE(a0, nullptr);
  EXPECT_EQ(a0->nonce, 10u);

  // Each node logs the block with the last transfer and the same state hash.
  auto block = client->chain().GetBlock(last);
  ASSERT_TRUE(block.ok() && block->has_value());
  std::string needle = fmt::format("followed block {} ({} transaction(s)) state {}", last,
                                   (*block)->header().tx_count(), StateAt(client->chain(), last));
  for (auto& [name, p] : nodes_) {
    EXPECT_TRUE(p->WaitForOutput(needle, 30s)) << name << " never logged: " << needle;
  }

  // Stop everything gracefully and compare the stored states.
  std::map<std::string, uint64_t> node_heights;
  for (auto& [name, p] : nodes_) {
    p->Signal(SIGTERM);
    EXPECT_EQ(p->Wait(20s), 0) << p->Output();
  }
  StopLedger();
  std::unique_ptr<storage::Database> ledger_db;
  auto seq_chain = OpenStoredChain(ledger_dir_, genesis_, &ledger_db);
  ASSERT_TRUE(seq_chain->health().ok());
  for (auto& [name, p] : nodes_) {
    std::unique_ptr<storage::Database> db;
    auto chain = OpenStoredChain(NodeDir(name), genesis_, &db);
    ASSERT_GE(chain->height(), last) << name;
    EXPECT_EQ(HexEncode(chain->state_hash()), StateAt(*seq_chain, chain->height())) << name;
    EXPECT_EQ(chain->tip_hash(),
              *ledger::BlockHash((*seq_chain->GetBlock(chain->height()))->header()));
  }
  nodes_.clear();
}

TEST_F(LedgerNetworkTest, SequencerKilledWhileSealingContinuesWithoutForkOrLoss) {
  InitLedger(/*block_interval_ms=*/50);
  StartLedger({"--seal-on-submit"});
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::map<Hash32, uint64_t> told_included;  // what the client was told
  std::map<uint64_t, Hash32> seen_block_hash;

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // Resynchronise nonces with the chain (accepted-but-unsealed transfers
    // may have died with the sequencer).
    for (auto& a : accounts_) a.nonce = client->chain().state().FindAccount(a.key.XOnly())->nonce;
    // Waiters outlive the round (a transfer may be included after it), so
    // they count into shared state; amounts differ per round so no
    // transfer repeats an earlier one's id.
    size_t want = 5 + rng() % 25;
    auto included_now = std::make_shared<size_t>(0);
    auto first_rejection = std::make_shared<std::string>();
    for (int i = 0; i < 60; ++i) {
      auto tx = Transfer(accounts_[i % 4], accounts_[(i + 2) % 4], 1 + i + 100 * round);
      client->ledger().Submit(
          tx, [&, included_now, first_rejection](const ledger::SubmitOutcome& out) {
            if (!out.accepted()) {
              if (first_rejection->empty()) *first_rejection = out.ToString();
              return;
            }
            Hash32 id = out.tx_id;
            client->ledger().WhenIncluded(id, [&, id, included_now](uint64_t h) {
              told_included[id] = h;
              ++*included_now;
            });
          });
    }
    ASSERT_TRUE(RunUntil(
        client->io(), [&] { return *included_now >= want; }, 30s))
        << *included_now << " of " << want << " included; first rejection: " << *first_rejection;
    StopLedger(SIGKILL);  // mid-stream: more transfers are pending or being sealed
    ASSERT_TRUE(RunUntil(
        client->io(), [&] { return !client->ledger().connected(); }, 30s));
    for (uint64_t h = 1; h <= client->chain().height(); ++h) {
      seen_block_hash[h] = *ledger::BlockHash((*client->chain().GetBlock(h))->header());
    }
    StartLedger({"--seal-on-submit"});
    // The restarted ledger resumes at its persisted tip; the client catches up.
    auto pos = ledger_->WaitForOutput("at height ", 10s);
    ASSERT_TRUE(pos);
    uint64_t restarted_height = std::stoull(ledger_->Output().substr(*pos));
    ASSERT_TRUE(RunUntil(
        client->io(),
        [&] {
          return client->ledger().connected() && client->chain().height() >= restarted_height;
        },
        30s));
    ASSERT_TRUE(client->ledger().health().ok()) << client->ledger().health().ToString();
  }
  ASSERT_GT(told_included.size(), 10u);
  StopLedger();
  std::unique_ptr<storage::Database> db;
  auto seq_chain = OpenStoredChain(ledger_dir_, genesis_, &db);
  // No fork: every block the client saw before a crash is still there.
  for (const auto& [h, hash] : seen_block_hash) {
    auto block = seq_chain->GetBlock(h);
    ASSERT_TRUE(block.ok() && block->has_value()) << "block " << h << " lost";
    EXPECT_EQ(*ledger::BlockHash((*block)->header()), hash) << "block " << h << " was replaced";
  }
  // Nothing the client was told was included is lost.
  for (const auto& [id, h] : told_included) {
    auto loc = seq_chain->FindTransaction(id);
    ASSERT_TRUE(loc.ok() && loc->has_value()) << HexEncode(id) << " lost";
    EXPECT_EQ((*loc)->height(), h);
  }
}

// Serves one good block and then a tampered one to a real node.
class TamperedBlockTest : public NetworkFixture,
                          public ::testing::WithParamInterface<std::string> {};

TEST_P(TamperedBlockTest, FollowerRefusesTheBlockAndStopsFollowing) {
  const std::string mode = GetParam();
  // The test is the sequencer: its own genesis, key and chain.
  crypto::KeyPair seq = crypto::KeyPair::Generate(crypto::SystemRng());
  while (seq.public_key().bytes()[0] != 0x02) seq = crypto::KeyPair::Generate(crypto::SystemRng());
  genesis_ = ledger::MakeDevnetGenesis("tipd-itest", seq.XOnly(),
                                       {{accounts_[0].key.XOnly(), 1000000}}, 1);
  sequencer_ = seq.public_key();
  std::filesystem::create_directories(ledger_dir_);
  ASSERT_TRUE(ledger::WriteGenesisFile(ledger_dir_ / "genesis.json", genesis_).ok());
  auto db = storage::Database::Open(dir_.path() / "fake-seq").value();
  auto chain = ledger::Chain::Open(db.get(), ledger::ValidateGenesis(genesis_).value()).value();
  ASSERT_FALSE(chain->AddToPending(Transfer(accounts_[0], accounts_[1], 50)));
  v1::Block good = chain->SealBlock(10, seq, crypto::SystemRng()).value();
  ASSERT_FALSE(chain->AddToPending(Transfer(accounts_[0], accounts_[1], 60)));
  v1::Block bad = chain->SealBlock(20, seq, crypto::SystemRng()).value();
  auto resign = [&](v1::Block* b) {
    auto hash = ledger::BlockHash(b->header());
    crypto::Key32 aux{};
    b->mutable_header()->set_signature(Str(crypto::SchnorrSign(seq, *hash, aux)));
  };
  std::string expect;
  if (mode == "signature") {
    std::string sig = bad.header().signature();
    sig[0] ^= 1;
    bad.mutable_header()->set_signature(sig);
    expect = "not signed by the sequencer";
  } else if (mode == "link") {
    bad.mutable_header()->set_prev_hash(std::string(32, '\x07'));
    resign(&bad);
    expect = "does not link";
  } else {
    bad.mutable_header()->set_state_hash(std::string(32, '\x07'));
    resign(&bad);
    expect = "state hash";
  }

  boost::asio::io_context io;
  p2p::HostOptions options;
  options.chain_id = genesis_.chain_id();
  p2p::Host host(io, seq, crypto::SystemRng(), options);
  ledger_port_ = host.Listen("127.0.0.1", 0).value();
  p2p::Callbacks cb;
  cb.on_message = [&](p2p::PeerId peer, const v1::Envelope& env) {
    if (!env.has_subscribe_blocks()) return;
    v1::Envelope reply;
    *reply.mutable_blocks()->add_blocks() = good;
    *reply.mutable_blocks()->add_blocks() = bad;
    reply.mutable_blocks()->set_tip_height(2);
    EXPECT_TRUE(host.Send(peer, reply).ok());
  };
  host.SetCallbacks(cb);
  Process* node = StartNode("node");
  ASSERT_NE(node, nullptr);
  ASSERT_TRUE(RunUntil(
      io,
      [&] {
        return node->Output().find("STOPPED FOLLOWING THE LEDGER at height 1") != std::string::npos;
      },
      30s))
      << node->Output();
  EXPECT_NE(node->Output().find(expect), std::string::npos) << node->Output();
  node->Signal(SIGTERM);
  EXPECT_EQ(node->Wait(20s), 0);
  nodes_.clear();
  host.Shutdown();
  std::unique_ptr<storage::Database> node_db;
  auto node_chain = OpenStoredChain(NodeDir("node"), genesis_, &node_db);
  EXPECT_EQ(node_chain->height(), 1u) << "the tampered block must not be persisted";
}

INSTANTIATE_TEST_SUITE_P(Modes, TamperedBlockTest,
                         ::testing::Values("signature", "link", "state_hash"));

TEST_F(LedgerNetworkTest, BadTransactionsAreRejectedWithTheirReason) {
  InitLedger(/*block_interval_ms=*/50, /*min_settle_timeout=*/3);
  // Transactions are sealed as they arrive; no other block is produced
  // unless the test seals it, so the 3-block settle window below is open
  // until the test closes it, however slow the machine.
  StartLedger({kSealOnDemand, kSealOnSubmit});
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  Account& alice = accounts_[0];
  Account& bob = accounts_[1];
  auto expect_code = [&](const v1::Transaction& tx, const std::string& code) {
    auto out = client->SubmitAndWait(tx);
    EXPECT_FALSE(out.accepted()) << code;
    EXPECT_EQ(out.code(), code) << out.message;
    EXPECT_FALSE(out.message.empty());
  };

  auto tampered = Transfer(alice, bob, 5);
  tampered.mutable_transfer()->set_amount(6);
  alice.nonce--;
  expect_code(tampered, "BAD_SIGNATURE");

  auto good = Transfer(alice, bob, 5);
  ASSERT_GT(client->SubmitAndInclude(good), 0u);
  expect_code(good, "BAD_NONCE");

  auto other_chain = Transfer(alice, bob, 5);
  alice.nonce--;
  other_chain.set_chain_id("another-chain");
  ASSERT_TRUE(ledger::SignTransaction(&other_chain, alice.key, crypto::SystemRng()).ok());
  expect_code(other_chain, "WRONG_CHAIN_ID");

  expect_code(Transfer(alice, bob, 2'000'000), "INSUFFICIENT_FUNDS");
  alice.nonce--;
  expect_code(Transfer(alice, bob, UINT64_MAX), "OVERFLOW");
  alice.nonce--;

  // A channel alice(A)-bob(B), closed unilaterally by alice.
  v1::Transaction open;
  open.set_chain_id(genesis_.chain_id());
  open.set_signer(Str(alice.key.XOnly()));
  open.set_nonce(alice.nonce);
  open.set_fee(1);
  auto* o = open.mutable_channel_open();
  o->set_party_a(Str(alice.key.XOnly()));
  o->set_party_b(Str(bob.key.XOnly()));
  o->set_deposit_a(1000);
  o->set_deposit_b(1000);
  o->set_settle_timeout(3);
  o->set_nonce_b(0);
  auto agreement = ledger::EncodeChannelOpenAgreement(genesis_.chain_id(), *o, alice.nonce);
  o->set_signature_b(
      Str(crypto::SignTagged(bob.key, ledger::kChannelOpenTag, *agreement, crypto::SystemRng())));
  ASSERT_TRUE(ledger::SignTransaction(&open, alice.key, crypto::SystemRng()).ok());
  ledger::ChannelId id =
      ledger::DeriveChannelId(genesis_.chain_id(), alice.key.XOnly(), bob.key.XOnly(), alice.nonce);
  alice.nonce++;  // the open uses only the opener's nonce
  ASSERT_GT(client->SubmitAndInclude(open), 0u);

  auto proof = [&](const crypto::KeyPair& k, uint64_t nonce, uint64_t transferred) {
    v1::BalanceProof p;
    p.set_chain_id(genesis_.chain_id());
    p.set_channel_id(Str(id));
    p.set_nonce(nonce);
    p.set_transferred(transferred);
    p.set_locks_root(std::string(32, '\0'));
    p.set_tips_root(std::string(32, '\x01'));
    EXPECT_TRUE(channel::SignBalanceProof(&p, k, crypto::SystemRng()).ok());
    return p;
  };
  auto signed_tx = [&](Account& signer, auto fill) {
    v1::Transaction tx;
    tx.set_chain_id(genesis_.chain_id());
    tx.set_signer(Str(signer.key.XOnly()));
    tx.set_nonce(signer.nonce++);
    tx.set_fee(1);
    fill(tx);
    EXPECT_TRUE(ledger::SignTransaction(&tx, signer.key, crypto::SystemRng()).ok());
    return tx;
  };
  auto close = signed_tx(alice, [&](v1::Transaction& tx) {
    tx.mutable_unilateral_close()->set_channel_id(Str(id));
    *tx.mutable_unilateral_close()->mutable_partner_proof() = proof(bob.key, 2, 100);
  });
  uint64_t close_height = client->SubmitAndInclude(close);
  ASSERT_GT(close_height, 0u);

  // Inside the window (held open: no block is sealed until the test says).
  auto settle_early =
      signed_tx(bob, [&](v1::Transaction& tx) { tx.mutable_settle()->set_channel_id(Str(id)); });
  bob.nonce--;
  expect_code(settle_early, "SETTLE_WINDOW_OPEN");
  // One block before the window ends it is still open.
  ASSERT_EQ(client->chain().height(), close_height);
  const uint64_t almost = SealBlocks(2);
  ASSERT_EQ(almost, close_height + 2);
  ASSERT_TRUE(client->WaitHeight(almost));
  expect_code(settle_early, "SETTLE_WINDOW_OPEN");

  // After the window (3 blocks) an update is too late, and settle works.
  ASSERT_EQ(SealBlocks(1), close_height + 3);
  ASSERT_TRUE(client->WaitHeight(close_height + 3));
  auto late_update = signed_tx(bob, [&](v1::Transaction& tx) {
    tx.mutable_update_proof()->set_channel_id(Str(id));
    *tx.mutable_update_proof()->mutable_proof() = proof(alice.key, 5, 300);
  });
  bob.nonce--;
  expect_code(late_update, "SETTLE_WINDOW_CLOSED");
  auto settle =
      signed_tx(bob, [&](v1::Transaction& tx) { tx.mutable_settle()->set_channel_id(Str(id)); });
  ASSERT_GT(client->SubmitAndInclude(settle), 0u);
  const ledger::Channel* ch = client->chain().state().FindChannel(id);
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(ch->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(ch->payout_a, 1100u);  // bob's proof paid alice 100
  EXPECT_EQ(ch->payout_b, 900u);
}

}  // namespace
}  // namespace tipd::testing
