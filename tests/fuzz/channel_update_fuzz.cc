// Fuzz target: a TipUpdate from the peer checked against a real channel
// (channel::Channel::CheckUpdate / ApplyUpdate / MakeAck).
//
// The input builds a channel between two fixed key pairs with an honest
// history (tips both ways, some acked, some in flight), lets A sign its next
// update, then hands B either protobuf bytes from the input or A's update
// mutated field by field — optionally with tips_root, transferred and the
// signature recomputed, so the mutated update reaches every rule behind the
// signature check. Invariants:
//  - CheckUpdate changes nothing; a rejection names a rule whose consequence
//    is ConsequenceOf(rule), and leaves the channel byte-identical (the
//    honest update is still accepted afterwards);
//  - an accepted update satisfies every rule, checked here independently
//    (A's signature, nonce, consecutive indexes, tip content, transferred =
//    previous + sum, tips_root chain, A's spendable); applying it moves
//    exactly the received side of the snapshot; B's ack verifies and, for
//    A's genuine update, A accepts it.
#include <cstdint>

#include "channel/channel.h"
#include "channel/codec.h"
#include "tests/fuzz/channel_pair.h"
#include "tests/fuzz/fuzz_util.h"
#include "util/bytes.h"

namespace tipd::fuzz {
namespace {

using channel::ChannelSnapshot;
using v1::TipUpdate;

void FlipByte(FuzzInput& in, std::string* s) {
  if (s->empty()) {
    s->push_back(static_cast<char>(in.U8()));
    return;
  }
  (*s)[in.Below(static_cast<uint32_t>(s->size()))] ^= static_cast<char>(1 | in.U8());
}

v1::Tip* PickTip(FuzzInput& in, TipUpdate* u) {
  if (u->tips_size() == 0) return u->add_tips();
  return u->mutable_tips(static_cast<int>(in.Below(static_cast<uint32_t>(u->tips_size()))));
}

void Mutate(FuzzInput& in, TipUpdate* u) {
  v1::BalanceProof* p = u->mutable_proof();
  switch (in.U8() % 18) {
    case 0:
      FlipByte(in, u->mutable_channel_id());
      break;
    case 1:
      u->set_channel_id(in.Str(40));
      break;
    case 2:
      p->set_chain_id(in.U8() % 2 ? in.Str(80) : std::string(kFuzzChainId) + "x");
      break;
    case 3:
      FlipByte(in, p->mutable_channel_id());
      break;
    case 4:
      p->set_nonce(in.Bool() ? p->nonce() - 1 - in.U8() % 2 : p->nonce() + in.Amount());
      break;
    case 5:
      p->set_transferred(in.Bool() ? p->transferred() + in.Amount() : in.Amount());
      break;
    case 6:
      p->set_locked(in.Amount());
      break;
    case 7:
      p->set_locks_root(in.Fixed(in.Bool() ? 32 : in.Below(40)));
      break;
    case 8:
      FlipByte(in, p->mutable_tips_root());
      break;
    case 9:
      FlipByte(in, p->mutable_signature());
      break;
    case 10:
      PickTip(in, u)->set_amount(in.Amount());
      break;
    case 11: {
      v1::Tip* t = PickTip(in, u);
      t->set_index(in.Bool() ? t->index() + 1 + in.U8() % 2 : t->index() - 1);
      break;
    }
    case 12: {
      // Up to 1020 bytes, any content: the length and UTF-8 rules.
      std::string m;
      for (uint32_t i = 0, n = 1 + in.Below(4); i < n; ++i) m += in.Str(255);
      PickTip(in, u)->set_message(m);
      break;
    }
    case 13: {
      v1::MetadataEntry* e = PickTip(in, u)->add_metadata();
      e->set_key(in.Str(40));
      e->set_value(in.Bool() ? in.Str(255) : in.Str(255) + in.Str(255));
      break;
    }
    case 14: {
      v1::Tip copy = *PickTip(in, u);
      copy.set_index(copy.index() + 1);
      *u->add_tips() = copy;
      break;
    }
    case 15:
      if (u->tips_size() > 0) u->mutable_tips()->RemoveLast();
      break;
    case 16:
      u->clear_proof();
      break;
    case 17:
      PickTip(in, u)->set_created_at_ms(in.U64());
      break;
  }
}

// Makes the proof consistent with the (mutated) tips on top of what B holds,
// and signs it with A's key: an update A could have sent with this content.
void FixUpAndSign(const channel::Channel& b, TipUpdate* u) {
  v1::BalanceProof* p = u->mutable_proof();
  Hash32 root{};
  const std::string& held = b.received_proof().tips_root();
  if (held.size() == 32) std::copy(held.begin(), held.end(), root.begin());
  uint64_t transferred = b.received_proof().transferred();
  for (const v1::Tip& tip : u->tips()) {
    auto hash = channel::TipHash(tip);
    if (!hash.ok()) return;  // no canonical form: leave it to CheckUpdate
    root = channel::ChainTipsRoot(root, *hash);
    transferred += tip.amount();  // may wrap: CheckUpdate must catch the overflow
  }
  p->set_tips_root(std::string(AsStringView(root)));
  p->set_transferred(transferred);
  ZeroRandom rng;
  (void)channel::SignBalanceProof(p, Keys().a, rng);
}

// The rules, restated: what an accepted update must satisfy.
void CheckAcceptedIndependently(const channel::Channel& b, const ChannelSnapshot& before,
                                const TipUpdate& u) {
  const v1::BalanceProof& p = u.proof();
  Require(channel::VerifyBalanceProof(p, Keys().a.XOnly()).ok(), "accepted: A signed it");
  Require(p.chain_id() == kFuzzChainId, "accepted: chain id");
  const channel::ChannelId id = FuzzChannelId();
  Require(p.channel_id() == AsStringView(id) && u.channel_id() == AsStringView(id),
          "accepted: channel id");
  Require(p.nonce() > before.received_nonce, "accepted: nonce increases");
  Require(
      u.tips_size() >= 1 && static_cast<uint32_t>(u.tips_size()) <= b.params().max_tips_per_update,
      "accepted: tip count");
  Require(p.locked() == 0 && p.locks_root() == std::string(32, '\0'), "accepted: no locks");
  Hash32 root{};
  const std::string& held = b.received_proof().tips_root();
  if (held.size() == 32) std::copy(held.begin(), held.end(), root.begin());
  uint64_t sum = 0;
  uint64_t index = before.received_tip_count;
  for (const v1::Tip& tip : u.tips()) {
    Require(tip.index() == ++index, "accepted: consecutive tip indexes");
    Require(channel::CheckTipContent(tip).ok(), "accepted: tip content");
    Require(CheckedAdd(sum, tip.amount(), &sum), "accepted: no overflow in the sum");
    root = channel::ChainTipsRoot(root, *channel::TipHash(tip));
  }
  uint64_t expected = 0;
  Require(CheckedAdd(before.received_transferred, sum, &expected) && p.transferred() == expected,
          "accepted: transferred grew by exactly the sum");
  Require(p.tips_root() == AsStringView(root), "accepted: tips_root chains the tips");
  const __int128 spendable =
      static_cast<__int128>(b.params().deposit_remote) + before.receipt_transferred;
  Require(static_cast<__int128>(p.transferred()) <= spendable, "accepted: A's spendable");
}

void Run(FuzzInput& in) {
  FuzzPair pair = FuzzPair::FromInput(in);
  // A's next genuine update, if it has something to send and room to send it.
  (void)pair.a.QueueTip(FuzzDraft(in));
  // (Without a connection it may not fit B's state: B missed earlier ones.)
  std::optional<channel::OutgoingUpdate> genuine = pair.a.TakeNextUpdate(Keys().a, pair.rng);

  TipUpdate update;
  const uint8_t mode = in.U8() % 4;
  if (mode == 0 || !genuine) {
    if (!update.ParseFromString(in.Rest())) return;
  } else {
    update = genuine->update;
    for (uint32_t i = 0, n = 1 + in.Below(4); i < n; ++i) Mutate(in, &update);
    if (mode >= 2) FixUpAndSign(pair.b, &update);
  }

  const ChannelSnapshot before = pair.b.Snapshot();
  const std::string held_before = pair.b.received_proof().SerializeAsString();
  auto checked = pair.b.CheckUpdate(update);
  Require(pair.b.Snapshot() == before, "CheckUpdate changed nothing");
  if (!checked.ok()) {
    const channel::ChannelError& e = checked.error();
    Require(e.consequence == channel::ConsequenceOf(e.rule), "a rejection carries its consequence");
    Require(pair.b.received_proof().SerializeAsString() == held_before,
            "a rejected update leaves the held proof byte-identical");
    // The channel is not poisoned: A's genuine update still goes through.
    if (genuine && pair.connected) {
      auto honest = pair.b.CheckUpdate(genuine->update);
      Require(honest.ok(), "after a rejection the genuine update is accepted");
    }
    return;
  }

  CheckAcceptedIndependently(pair.b, before, update);
  Require(pair.b.ApplyUpdate(*checked).ok(), "a validated update applies");
  ChannelSnapshot expect = before;
  expect.received_nonce = update.proof().nonce();
  expect.received_transferred = update.proof().transferred();
  expect.received_tips_root = update.proof().tips_root();
  expect.received_tip_count += static_cast<uint64_t>(update.tips_size());
  const ChannelSnapshot after = pair.b.Snapshot();
  Require(after == expect, "applying moves exactly the received side");
  Require(pair.b.received_proof().SerializeAsString() == update.proof().SerializeAsString(),
          "the applied proof is held");
  Require(!pair.b.ApplyUpdate(*checked).ok(), "a validated update applies only once");

  auto ack = pair.b.MakeAck(Keys().b, pair.rng);
  Require(ack.has_value(), "an ack for the applied update");
  Require(ack->nonce() == update.proof().nonce() && ack->tips_root() == update.proof().tips_root(),
          "the ack names the applied proof");
  Require(channel::VerifyAck(kFuzzChainId, *ack, Keys().b.XOnly()).ok(), "B signed the ack");
  if (genuine && update.SerializeAsString() == genuine->update.SerializeAsString()) {
    Require(pair.a.OnAck(*ack).ok(), "A accepts the receipt for its own update");
  }
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tipd::fuzz::FuzzInput in(data, size);
  tipd::fuzz::Run(in);
  return 0;
}
