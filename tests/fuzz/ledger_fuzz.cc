// Fuzz target: ledger transaction and block validation (ledger/rules.h,
// ledger/chain.h).
//
// A small state (four funded accounts with fixed keys, fee 10, settle windows
// 2..100 blocks) receives transactions the input describes: every kind, with
// signers, nonces, fees, amounts, channels, proofs and signatures chosen by
// the input (mostly well-formed and correctly signed, so the deep rules are
// reached; sometimes wrong). Invariants:
//  - a rejected transaction leaves the state exactly as it was, and names a
//    rule; an accepted one moves the signer's nonce by one and adds its fee;
//  - supply is conserved after every transaction;
//  - re-executing the accepted transactions on a fresh state gives the same
//    state hash (a follower agrees with the sequencer);
//  - the same transactions through a sequencer Chain (on an in-memory
//    LevelDB) are accepted or refused alike; its sealed block is accepted by
//    a follower, which reaches the same state hash; a block mutated by the
//    input (optionally re-signed by the sequencer key) is either refused —
//    leaving the follower at the previous height — or carries exactly the
//    genuine transactions and reaches the genuine state.
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "channel/codec.h"
#include "ledger/chain.h"
#include "ledger/codec.h"
#include "ledger/rules.h"
#include "storage/storage.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {
namespace {

using ledger::AccountId;
using ledger::ChannelId;
using ledger::LedgerState;

constexpr const char* kChain = "tipd-fuzz";
constexpr uint64_t kFee = 10;
constexpr uint64_t kGenesisTime = 1'700'000'000'000;

std::string S(ByteSpan b) { return std::string(AsStringView(b)); }

struct World {
  std::vector<crypto::KeyPair> keys;  // 0..3 funded, 4 without an account
  crypto::KeyPair sequencer = KeyFromByte(0x09);
  ledger::Params params;

  World() {
    for (uint8_t i = 1; i <= 5; ++i) keys.push_back(KeyFromByte(i));
    v1::GenesisParams g;
    g.set_chain_id(kChain);
    g.set_sequencer_key(S(sequencer.XOnly()));
    for (size_t i = 0; i < 4; ++i) {
      auto* a = g.add_allocations();
      a->set_account(S(keys[i].XOnly()));
      a->set_amount(i == 3 ? 25 : 1'000'000);  // one account can barely pay fees
    }
    g.set_fee_per_tx(kFee);
    g.set_min_settle_timeout(2);
    g.set_max_settle_timeout(100);
    g.set_block_interval_ms(1000);
    g.set_genesis_time_ms(kGenesisTime);
    auto p = ledger::ValidateGenesis(g);
    Require(p.ok(), "fixed genesis is valid");
    params = *p;
  }
};

const World& W() {
  static const World w;
  return w;
}

// Everything the state holds about the ids the run has touched.
struct Fingerprint {
  std::map<AccountId, std::optional<ledger::Account>> accounts;
  std::map<ChannelId, std::optional<ledger::Channel>> channels;
  uint64_t fees = 0;
  size_t account_count = 0, channel_count = 0;
  std::set<AccountId> dirty_accounts;
  std::set<ChannelId> dirty_channels;
  bool operator==(const Fingerprint&) const = default;
};

class Run {
 public:
  explicit Run(FuzzInput& in) : in_(in), state_(W().params) {
    for (const auto& k : W().keys) accounts_.insert(k.XOnly());
  }

  void Go() {
    const uint32_t n = 1 + in_.Below(12);
    for (uint32_t i = 0; i < n && !in_.empty(); ++i) {
      if (in_.U8() % 5 == 0) height_ += 1 + in_.Below(60);
      v1::Transaction tx = MakeTx();
      ApplyOne(tx);
    }
    Replay();
    Blocks();
  }

 private:
  const crypto::KeyPair& Key() { return W().keys[in_.Below(5)]; }

  ChannelId PickChannel() {
    if (!channels_.empty() && in_.U8() % 8 != 0) {
      auto it = channels_.begin();
      std::advance(it, in_.Below(static_cast<uint32_t>(channels_.size())));
      return *it;
    }
    ChannelId id{};
    const std::string s = in_.Fixed(32);
    std::copy(s.begin(), s.end(), id.begin());
    return id;
  }

  uint64_t NonceOf(const AccountId& id) {
    const ledger::Account* a = state_.FindAccount(id);
    return a ? a->nonce : 0;
  }

  // A proof of the direction signed by `signer` on channel `id`.
  v1::BalanceProof Proof(const crypto::KeyPair& signer, const ChannelId& id) {
    v1::BalanceProof p;
    p.set_chain_id(in_.U8() % 16 == 0 ? "other-chain" : kChain);
    p.set_channel_id(S(id));
    p.set_nonce(in_.U8() % 8 == 0 ? in_.U64() : in_.U8());
    p.set_transferred(in_.Amount());
    if (in_.U8() % 16 == 0) p.set_locked(in_.Amount());
    p.set_locks_root(std::string(32, '\0'));
    p.set_tips_root(in_.Fixed(32));
    ZeroRandom rng;
    (void)channel::SignBalanceProof(&p, signer, rng);
    if (in_.U8() % 16 == 0) (*p.mutable_signature())[0] ^= 1;
    return p;
  }

  v1::Transaction MakeTx() {
    const crypto::KeyPair& signer = Key();
    v1::Transaction tx;
    tx.set_chain_id(in_.U8() % 32 == 0 ? "tipd-other" : kChain);
    tx.set_signer(S(signer.XOnly()));
    const uint64_t nonce = NonceOf(signer.XOnly());
    const uint8_t nonce_choice = in_.U8() % 16;
    tx.set_nonce(nonce_choice == 0 ? nonce + 1 : nonce_choice == 1 ? nonce - 1 : nonce);
    const uint8_t fee_choice = in_.U8() % 16;
    tx.set_fee(fee_choice == 0 ? kFee - 1 : fee_choice == 1 ? in_.Amount() : kFee);
    ZeroRandom rng;
    switch (in_.U8() % 7) {
      case 0: {
        auto* t = tx.mutable_transfer();
        if (in_.U8() % 8 == 0) {
          const std::string to = in_.Fixed(32);
          t->set_to(to);
          if (to.size() == 32) {
            AccountId id;
            std::copy(to.begin(), to.end(), id.begin());
            accounts_.insert(id);
          }
        } else {
          t->set_to(S(Key().XOnly()));
        }
        t->set_amount(in_.Amount());
        break;
      }
      case 1: {
        auto* o = tx.mutable_channel_open();
        const crypto::KeyPair& b = Key();
        const bool a_is_signer = in_.U8() % 8 != 0;
        const crypto::KeyPair& a = a_is_signer ? signer : Key();
        o->set_party_a(S(a.XOnly()));
        o->set_party_b(S(b.XOnly()));
        o->set_deposit_a(in_.Amount());
        o->set_deposit_b(in_.Amount());
        o->set_settle_timeout(in_.Below(120));
        o->set_nonce_b(in_.U8() % 16 == 0 ? 1 : 0);
        o->set_signature_b(std::string(64, '\0'));
        auto agreement = ledger::EncodeChannelOpenAgreement(kChain, *o, tx.nonce());
        if (agreement.ok() && in_.U8() % 16 != 0) {
          o->set_signature_b(S(crypto::SignTagged(b, ledger::kChannelOpenTag, *agreement, rng)));
        }
        channels_.insert(ledger::DeriveChannelId(kChain, a.XOnly(), b.XOnly(), tx.nonce()));
        break;
      }
      case 2: {
        auto* d = tx.mutable_deposit();
        d->set_channel_id(S(PickChannel()));
        d->set_amount(in_.Amount());
        break;
      }
      case 3: {
        auto* c = tx.mutable_cooperative_close()->mutable_close();
        const ChannelId id = PickChannel();
        c->set_chain_id(kChain);
        c->set_channel_id(S(id));
        const ledger::Channel* ch = state_.FindChannel(id);
        const uint64_t total = ch ? ch->deposit_a + ch->deposit_b : in_.Amount();
        const uint64_t a_share =
            in_.U8() % 4 == 0 || total == UINT64_MAX ? in_.Amount() : in_.U64() % (total + 1);
        c->set_balance_a(a_share);
        c->set_balance_b(in_.U8() % 8 == 0 ? in_.Amount() : total - a_share);
        const crypto::KeyPair* pa = &Key();
        const crypto::KeyPair* pb = &Key();
        if (ch && in_.U8() % 8 != 0) {
          for (const auto& k : W().keys) {
            if (k.XOnly() == ch->party_a) pa = &k;
            if (k.XOnly() == ch->party_b) pb = &k;
          }
        }
        auto sa = channel::SignCooperativeClose(kChain, AsSpan(c->channel_id()), c->balance_a(),
                                                c->balance_b(), *pa, rng);
        auto sb = channel::SignCooperativeClose(kChain, AsSpan(c->channel_id()), c->balance_a(),
                                                c->balance_b(), *pb, rng);
        c->set_signature_a(sa.ok() ? S(*sa) : std::string(64, '\0'));
        c->set_signature_b(sb.ok() ? S(*sb) : std::string(64, '\0'));
        break;
      }
      case 4: {
        auto* u = tx.mutable_unilateral_close();
        const ChannelId id = PickChannel();
        u->set_channel_id(S(id));
        if (in_.U8() % 4 != 0) *u->mutable_partner_proof() = Proof(Key(), id);
        break;
      }
      case 5: {
        auto* u = tx.mutable_update_proof();
        const ChannelId id = PickChannel();
        u->set_channel_id(S(id));
        *u->mutable_proof() = Proof(Key(), id);
        break;
      }
      case 6:
        tx.mutable_settle()->set_channel_id(S(PickChannel()));
        break;
    }
    if (in_.U8() % 32 == 0) {
      tx.set_signature(std::string(64, '\x01'));
    } else {
      (void)ledger::SignTransaction(&tx, signer, rng);
    }
    return tx;
  }

  Fingerprint Print() const {
    Fingerprint f;
    for (const AccountId& id : accounts_) {
      const ledger::Account* a = state_.FindAccount(id);
      f.accounts[id] = a ? std::optional(*a) : std::nullopt;
    }
    for (const ChannelId& id : channels_) {
      const ledger::Channel* c = state_.FindChannel(id);
      f.channels[id] = c ? std::optional(*c) : std::nullopt;
    }
    f.fees = state_.fees_collected();
    f.account_count = state_.account_count();
    f.channel_count = state_.channel_count();
    f.dirty_accounts = state_.dirty_accounts();
    f.dirty_channels = state_.dirty_channels();
    return f;
  }

  void ApplyOne(const v1::Transaction& tx) {
    const Fingerprint before = Print();
    AccountId signer{};
    if (tx.signer().size() == 32) std::copy(tx.signer().begin(), tx.signer().end(), signer.begin());
    const uint64_t nonce_before = NonceOf(signer);
    auto err = state_.Apply(tx, height_);
    if (err) {
      Require(Print() == before, "a rejected transaction changes nothing");
      Require(ledger::TxRuleCode(err->rule) != nullptr, "a rejection names its rule");
    } else {
      Require(NonceOf(signer) == nonce_before + 1, "an accepted transaction moves the nonce");
      Require(state_.fees_collected() == before.fees + tx.fee(), "an accepted fee is collected");
      accepted_.push_back(tx);
      heights_.push_back(height_);
    }
    results_.push_back(!err.has_value());
    Require(state_.CheckSupply().ok(), "supply is conserved");
  }

  // A follower re-executing the accepted transactions agrees on the state.
  void Replay() {
    LedgerState again(W().params);
    for (size_t i = 0; i < accepted_.size(); ++i) {
      Require(!again.Apply(accepted_[i], heights_[i]).has_value(),
              "an accepted transaction is accepted on replay");
    }
    const Hash32 zero{};
    Require(again.CommitStateHash(zero) == state_.CommitStateHash(zero),
            "re-execution gives the same state hash");
  }

  static std::unique_ptr<storage::Database> OpenDb(leveldb::Env* env, const char* path) {
    storage::Options o;
    o.env = env;
    o.block_cache_bytes = 1 << 16;
    o.write_buffer_bytes = 1 << 16;
    auto db = storage::Database::Open(path, o);
    Require(db.ok(), "in-memory database opens");
    return std::move(*db);
  }

  // The same transactions as one block through a sequencer and followers.
  void Blocks() {
    if (in_.U8() % 2 != 0) return;  // half the inputs stop at the rules
    std::unique_ptr<leveldb::Env> env(leveldb::NewMemEnv(leveldb::Env::Default()));
    auto seq_db = OpenDb(env.get(), "/seq");
    auto seq = ledger::Chain::Open(seq_db.get(), W().params);
    Require(seq.ok(), "sequencer chain opens");
    // One block at height 1: the heights the rules saw do not matter for
    // the comparison, only that sequencer and followers agree.
    LedgerState mirror(W().params);
    for (const v1::Transaction& tx : accepted_) {
      const bool mirror_ok = !mirror.Apply(tx, 1).has_value();
      const bool chain_ok = !(*seq)->AddToPending(tx).has_value();
      Require(mirror_ok == chain_ok, "the sequencer applies the rules");
    }
    ZeroRandom rng;
    auto block = (*seq)->SealBlock(kGenesisTime + 1000 + in_.U16(), W().sequencer, rng);
    Require(block.ok(), "the sequencer seals");

    auto fol_db = OpenDb(env.get(), "/follower");
    auto fol = ledger::Chain::Open(fol_db.get(), W().params);
    Require(fol.ok(), "follower chain opens");
    Status st = (*fol)->AcceptBlock(*block);
    Require(st.ok(), "a follower accepts the sequencer's block");
    Require((*fol)->state_hash() == (*seq)->state_hash() && (*fol)->height() == 1,
            "the follower reaches the sequencer's state");

    // A mutated block on a fresh follower.
    v1::Block bad = *block;
    for (uint32_t i = 0, n = 1 + in_.Below(3); i < n; ++i) MutateBlock(&bad);
    if (in_.Bool()) {
      auto bytes = ledger::EncodeBlockHeader(bad.header());
      if (bytes.ok()) {
        bad.mutable_header()->set_signature(
            S(crypto::SignTagged(W().sequencer, ledger::kBlockTag, *bytes, rng)));
      }
    }
    auto bad_db = OpenDb(env.get(), "/victim");
    auto victim = ledger::Chain::Open(bad_db.get(), W().params);
    Require(victim.ok(), "victim chain opens");
    Status bst = (*victim)->AcceptBlock(bad);
    if (!bst.ok()) {
      Require((*victim)->height() == 0, "a refused block is not persisted");
      // Reopened from disk, the victim is still at genesis.
      victim->reset();
      auto reopened = ledger::Chain::Open(bad_db.get(), W().params);
      Require(reopened.ok() && (*reopened)->height() == 0, "no half block on disk");
      return;
    }
    Require(bad.transactions_size() == block->transactions_size(), "accepted: same tx count");
    for (int i = 0; i < bad.transactions_size(); ++i) {
      Require(*ledger::TransactionId(bad.transactions(i)) ==
                  *ledger::TransactionId(block->transactions(i)),
              "accepted: the genuine transactions");
    }
    Require((*victim)->state_hash() == (*seq)->state_hash(), "accepted: the genuine state");
  }

  void MutateBlock(v1::Block* b) {
    v1::BlockHeader* h = b->mutable_header();
    switch (in_.U8() % 10) {
      case 0:
        h->set_height(h->height() + 1 - 2 * in_.Below(2));
        break;
      case 1:
        if (!h->prev_hash().empty()) (*h->mutable_prev_hash())[in_.Below(32)] ^= 1;
        break;
      case 2:
        h->set_time_ms(in_.Bool() ? kGenesisTime - 1 : h->time_ms() + in_.U16());
        break;
      case 3:
        if (!h->tx_root().empty()) (*h->mutable_tx_root())[in_.Below(32)] ^= 1;
        break;
      case 4:
        if (!h->state_hash().empty()) (*h->mutable_state_hash())[in_.Below(32)] ^= 1;
        break;
      case 5:
        h->set_tx_count(h->tx_count() + 1 - 2 * in_.Below(2));
        break;
      case 6:
        if (b->transactions_size() > 0) b->mutable_transactions()->RemoveLast();
        break;
      case 7:
        if (b->transactions_size() > 0) *b->add_transactions() = b->transactions(0);
        break;
      case 8:
        if (b->transactions_size() > 1) {
          b->mutable_transactions()->SwapElements(0, b->transactions_size() - 1);
        }
        break;
      case 9:
        if (b->transactions_size() > 0) {
          v1::Transaction* tx = b->mutable_transactions(
              static_cast<int>(in_.Below(static_cast<uint32_t>(b->transactions_size()))));
          (*tx->mutable_signature())[0] ^= 1;
        }
        break;
    }
  }

  FuzzInput& in_;
  LedgerState state_;
  uint64_t height_ = 1;
  std::set<AccountId> accounts_;
  std::set<ChannelId> channels_;
  std::vector<v1::Transaction> accepted_;
  std::vector<uint64_t> heights_;
  std::vector<bool> results_;
};

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tipd::fuzz::FuzzInput in(data, size);
  tipd::fuzz::Run run(in);
  run.Go();
  return 0;
}
