// Fuzz target: Reestablish handling (channel::Channel::OnPeerReestablish).
//
// The input builds a channel with an honest history in which updates and
// acks were lost, and a copy of A taken at an earlier step (A restored from an
// old backup). Then either
//  - both sides reestablish honestly (A or its stale copy facing B): both
//    plans must succeed, and after delivering them (acks first, then resends)
//    both sides hold the same state in each direction and a new tip flows; or
//  - the victim (A or its stale copy) receives B's Reestablish mutated field
//    by field, its copy of the victim's proof optionally re-signed with the
//    victim's own key (a proof it really signed in a past life), or a
//    Reestablish parsed from raw bytes.
// Invariants for the hostile case: a refusal changes nothing and carries
// ConsequenceOf(rule); an accepted plan resends only the victim's own signed
// in-flight updates, in nonce order, above what the peer holds; the victim's
// own direction changes only by adopting a proof it signed, never moving
// backwards.
#include <cstdint>
#include <optional>

#include "channel/channel.h"
#include "channel/codec.h"
#include "tests/fuzz/channel_pair.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {
namespace {

using channel::Channel;
using channel::ChannelSnapshot;

std::optional<uint64_t> TipCount(const v1::Reestablish& r) { return r.received_tip_count(); }

// Delivers `plan` (made by `from`) to `to`: the ack first, then the resends.
void Deliver(Channel& from, const crypto::KeyPair& from_key, Channel& to,
             const channel::ReestablishPlan& plan, ZeroRandom& rng) {
  if (plan.send_ack) {
    auto ack = from.MakeAck(from_key, rng);
    Require(ack.has_value(), "send_ack with something received");
    Require(to.OnAck(*ack).ok(), "the reestablish ack is accepted");
  }
  for (const v1::TipUpdate& u : plan.resend) {
    auto checked = to.CheckUpdate(u);
    Require(checked.ok(), "a resent update is accepted");
    Require(to.ApplyUpdate(*checked).ok(), "a resent update applies");
  }
}

// Both sides honest: reestablish must resynchronise them. `stale`: x is A
// restored from an old backup; B then refuses (kPeerLostAckedUpdates) when x
// lost tips B already holds receipts for — those are gone with the backup.
void Honest(Channel& x, Channel& y, bool stale, ZeroRandom& rng) {
  const crypto::KeyPair& kx = Keys().a;
  const crypto::KeyPair& ky = Keys().b;
  const v1::Reestablish rx = x.MakeReestablish();
  const v1::Reestablish ry = y.MakeReestablish();
  auto px = x.OnPeerReestablish(ry, TipCount(ry));
  Require(px.ok(), "an honest peer's Reestablish is accepted (A side)");
  const ChannelSnapshot y_before = y.Snapshot();
  auto py = y.OnPeerReestablish(rx, TipCount(rx));
  if (!py.ok()) {
    Require(stale && py.error().rule == channel::ChannelRule::kPeerLostAckedUpdates,
            "an honest peer's Reestablish is accepted (B side)");
    Require(y.Snapshot() == y_before, "the refusal changes nothing");
    return;
  }
  Deliver(x, kx, y, *px, rng);
  Deliver(y, ky, x, *py, rng);
  // Receipts for what the resends carried.
  if (auto ack = y.MakeAck(ky, rng)) Require(x.OnAck(*ack).ok(), "final ack to A");
  if (auto ack = x.MakeAck(kx, rng)) Require(y.OnAck(*ack).ok(), "final ack to B");
  const ChannelSnapshot sx = x.Snapshot(), sy = y.Snapshot();
  Require(sx.sent_nonce == sy.received_nonce && sx.sent_tips_root == sy.received_tips_root &&
              sx.sent_tip_count == sy.received_tip_count &&
              sx.sent_transferred == sy.received_transferred,
          "A->B in sync after reestablish");
  Require(sy.sent_nonce == sx.received_nonce && sy.sent_tips_root == sx.received_tips_root &&
              sy.sent_tip_count == sx.received_tip_count &&
              sy.sent_transferred == sx.received_transferred,
          "B->A in sync after reestablish");
  Require(sx.in_flight_nonces.empty() && sy.in_flight_nonces.empty(), "everything acked");
  // A new tip flows (whatever was queued goes first).
  if (x.SpendableLocal() >= 1) {
    channel::TipDraft d;
    d.amount = 1;
    d.message = "after reestablish";
    Require(x.QueueTip(d).ok(), "a tip within the spendable is queued");
  }
  while (auto out = x.TakeNextUpdate(kx, rng)) {
    auto checked = y.CheckUpdate(out->update);
    Require(checked.ok(), "a new update after reestablish is accepted");
    Require(y.ApplyUpdate(*checked).ok(), "and applies");
    Require(x.OnAck(*y.MakeAck(ky, rng)).ok(), "and is acknowledged");
  }
}

void FlipByte(FuzzInput& in, std::string* s) {
  if (s->empty()) {
    s->push_back(static_cast<char>(in.U8()));
    return;
  }
  (*s)[in.Below(static_cast<uint32_t>(s->size()))] ^= static_cast<char>(1 | in.U8());
}

uint64_t Nudge(FuzzInput& in, uint64_t v) {
  switch (in.U8() % 4) {
    case 0:
      return v + 1 + in.U8() % 3;
    case 1:
      return v - 1 - in.U8() % 2;
    case 2:
      return in.Amount();
    default:
      return 0;
  }
}

void Mutate(FuzzInput& in, v1::Reestablish* r) {
  v1::BalanceProof* p = r->mutable_received_proof();
  switch (in.U8() % 16) {
    case 0:
      FlipByte(in, r->mutable_channel_id());
      break;
    case 1:
      r->set_sent_nonce(Nudge(in, r->sent_nonce()));
      break;
    case 2:
      FlipByte(in, r->mutable_sent_tips_root());
      break;
    case 3:
      r->set_received_nonce(Nudge(in, r->received_nonce()));
      break;
    case 4:
      FlipByte(in, r->mutable_received_tips_root());
      break;
    case 5:
      r->set_acked_received_nonce(Nudge(in, r->acked_received_nonce()));
      break;
    case 6:
      r->set_received_tip_count(Nudge(in, r->received_tip_count()));
      break;
    case 7:
      r->clear_received_proof();
      break;
    case 8:
      p->set_nonce(Nudge(in, p->nonce()));
      break;
    case 9:
      p->set_transferred(Nudge(in, p->transferred()));
      break;
    case 10:
      FlipByte(in, p->mutable_tips_root());
      break;
    case 11:
      p->set_locked(in.Amount());
      break;
    case 12:
      p->set_chain_id(in.Str(70));
      break;
    case 13:
      FlipByte(in, p->mutable_signature());
      break;
    case 14:
      // Keep the claim consistent with the proof shown: the deeper checks.
      r->set_received_nonce(p->nonce());
      r->set_received_tips_root(p->tips_root());
      break;
    case 15:
      r->set_sent_tips_root(in.Fixed(in.Bool() ? 32 : in.Below(40)));
      break;
  }
}

void Hostile(FuzzInput& in, Channel& victim, const Channel& peer) {
  v1::Reestablish r;
  const uint8_t mode = in.U8() % 4;
  if (mode == 0) {
    if (!r.ParseFromString(in.Rest())) return;
  } else {
    r = peer.MakeReestablish();
    for (uint32_t i = 0, n = 1 + in.Below(4); i < n; ++i) Mutate(in, &r);
    if (mode >= 2 && r.has_received_proof()) {
      ZeroRandom rng;
      (void)channel::SignBalanceProof(r.mutable_received_proof(), Keys().a, rng);
    }
  }
  std::optional<uint64_t> count;
  if (in.U8() % 4 != 0) count = r.received_tip_count();

  const ChannelSnapshot before = victim.Snapshot();
  auto plan = victim.OnPeerReestablish(r, count);
  const ChannelSnapshot after = victim.Snapshot();
  if (!plan.ok()) {
    Require(after == before, "a refused Reestablish changes nothing");
    Require(plan.error().consequence == channel::ConsequenceOf(plan.error().rule),
            "a refusal carries its consequence");
    return;
  }
  uint64_t last = r.received_nonce();
  for (const v1::TipUpdate& u : plan->resend) {
    Require(u.proof().nonce() > last, "resends above what the peer holds, in order");
    last = u.proof().nonce();
    Require(!u.tips().empty(), "a resend carries its tips");
    Require(channel::VerifyBalanceProof(u.proof(), Keys().a.XOnly()).ok(),
            "a resend is our own signed update");
  }
  if (!plan->resend.empty()) {
    Require(plan->resend.back().proof().nonce() == before.sent_nonce,
            "resends end at our latest nonce");
  }
  // Receiving side and deposits never move on a Reestablish.
  Require(after.received_nonce == before.received_nonce &&
              after.received_tips_root == before.received_tips_root &&
              after.received_transferred == before.received_transferred &&
              after.received_tip_count == before.received_tip_count &&
              after.acked_received_nonce == before.acked_received_nonce &&
              after.deposit_local == before.deposit_local &&
              after.deposit_remote == before.deposit_remote,
          "reestablish leaves the received direction alone");
  if (!plan->adopted_own_proof) {
    Require(after == before, "without adoption nothing changes");
    return;
  }
  Require(r.has_received_proof() &&
              channel::VerifyBalanceProof(r.received_proof(), Keys().a.XOnly()).ok(),
          "only a proof we signed is adopted");
  Require(after.sent_nonce == r.received_nonce() && after.sent_nonce > before.sent_nonce,
          "adoption moves our nonce forward to the copy's");
  Require(after.sent_transferred >= before.sent_transferred &&
              after.sent_tip_count >= before.sent_tip_count,
          "adoption never moves our direction backwards");
  Require(after.in_flight_nonces.size() == 1 && after.in_flight_nonces[0] == after.sent_nonce,
          "the adopted proof awaits its ack");
  Require(
      victim.SpendableLocal() <= victim.params().deposit_local + after.acked_received_transferred,
      "spendable stays within what we hold");
}

void Run(FuzzInput& in) {
  FuzzPair pair = FuzzPair::FromInput(in);
  const uint8_t choice = in.U8();
  Channel& victim = (choice & 1) ? *pair.a_backup : pair.a;
  if ((choice & 6) == 0) {
    Honest(victim, pair.b, (choice & 1) != 0, pair.rng);
  } else {
    Hostile(in, victim, pair.b);
  }
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tipd::fuzz::FuzzInput in(data, size);
  tipd::fuzz::Run(in);
  return 0;
}
