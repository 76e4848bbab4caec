// A channel between two fixed key pairs (A = 0x01.., B = 0x02..) with a
// history the fuzz input chooses, for the channel fuzz targets. Everything is
// deterministic (fixed keys, zero aux randomness), so a crash replays exactly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "channel/channel.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {

inline constexpr const char* kFuzzChainId = "tipd-fuzz";

inline channel::ChannelId FuzzChannelId() {
  channel::ChannelId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(0xc0 + i);
  return id;
}

struct FuzzKeys {
  crypto::KeyPair a = KeyFromByte(0x01);
  crypto::KeyPair b = KeyFromByte(0x02);
};

inline const FuzzKeys& Keys() {
  static const FuzzKeys keys;
  return keys;
}

inline channel::Channel MakeChannel(bool local_is_a, uint64_t deposit_a, uint64_t deposit_b,
                                    uint32_t window, uint32_t max_tips) {
  const FuzzKeys& k = Keys();
  channel::ChannelParams p;
  p.chain_id = kFuzzChainId;
  p.channel_id = FuzzChannelId();
  p.local_key = local_is_a ? k.a.public_key() : k.b.public_key();
  p.remote_key = local_is_a ? k.b.public_key() : k.a.public_key();
  p.local_is_a = local_is_a;
  p.deposit_local = local_is_a ? deposit_a : deposit_b;
  p.deposit_remote = local_is_a ? deposit_b : deposit_a;
  p.max_updates_in_flight = window;
  p.max_tips_per_update = max_tips;
  auto ch = channel::Channel::Open(p);
  Require(ch.ok(), "Channel::Open with fixed parameters");
  return std::move(ch).value();
}

// A tip the input describes: mostly valid, sometimes breaking a content rule.
inline channel::TipDraft FuzzDraft(FuzzInput& in) {
  channel::TipDraft d;
  d.amount = 1 + in.U8() % 16;
  if (in.U8() % 8 == 0) d.amount = in.Amount();
  d.message = in.Str(64);
  const uint32_t entries = in.U8() % 4 == 0 ? in.Below(3) : 0;
  for (uint32_t i = 0; i < entries; ++i) d.metadata[in.Str(12)] = in.Str(24);
  d.created_at_ms = in.U64();
  return d;
}

// Both sides of one channel. `Sync*` deliver a whole exchange honestly.
struct FuzzPair {
  ZeroRandom rng;
  channel::Channel a;
  channel::Channel b;
  // False once anything was lost: one connection carries updates and acks
  // in order, so nothing after a loss is delivered (reestablish would
  // resynchronise; the reestablish target does that).
  bool connected = true;
  // A as it was after an earlier step: a node restored from an old backup.
  std::optional<channel::Channel> a_backup;

  FuzzPair(uint64_t deposit_a, uint64_t deposit_b, uint32_t window, uint32_t max_tips)
      : a(MakeChannel(true, deposit_a, deposit_b, window, max_tips)),
        b(MakeChannel(false, deposit_a, deposit_b, window, max_tips)) {}

  // Builds from the input: deposits, limits, and a history of honest tips
  // both ways, some acknowledged and some still in flight.
  static FuzzPair FromInput(FuzzInput& in) {
    const uint64_t deposit_a = in.U8() % 4 == 0 ? in.Amount() : 100 + in.U8();
    uint64_t deposit_b = in.U8() % 4 == 0 ? in.Amount() : in.U8();
    deposit_b = std::min(deposit_b, UINT64_MAX - deposit_a);  // the ledger's bound
    const uint32_t window = 1 + in.Below(4);
    const uint32_t max_tips = 1 + in.Below(4);
    FuzzPair pair(deposit_a, deposit_b, window, max_tips);
    const uint32_t steps = in.Below(8);
    const uint32_t backup_at = in.Below(8);
    for (uint32_t i = 0; i < steps; ++i) {
      if (i == backup_at) pair.a_backup = pair.a;
      pair.Step(in);
    }
    if (!pair.a_backup) pair.a_backup = pair.a;
    return pair;
  }

  // One honest step: a side queues a tip; updates go out and are applied;
  // acks go back — each delivery only if the input says so (and nothing was
  // lost before), so the history ends with updates in flight and acks
  // missing.
  void Step(FuzzInput& in) {
    const uint8_t op = in.U8();
    channel::Channel& from = (op & 1) ? b : a;
    channel::Channel& to = (op & 1) ? a : b;
    const crypto::KeyPair& from_key = (op & 1) ? Keys().b : Keys().a;
    const crypto::KeyPair& to_key = (op & 1) ? Keys().a : Keys().b;
    (void)from.QueueTip(FuzzDraft(in));
    while (auto out = from.TakeNextUpdate(from_key, rng)) {
      if (!connected || (op & 2) == 0) {  // lost in transit (reestablish resends it)
        connected = false;
        continue;
      }
      auto checked = to.CheckUpdate(out->update);
      Require(checked.ok(), "an honest update in order is accepted");
      Require(to.ApplyUpdate(*checked).ok(), "an honest validated update applies");
      if ((op & 4) == 0) {  // the ack is lost
        connected = false;
        continue;
      }
      auto ack = to.MakeAck(to_key, rng);
      Require(ack.has_value(), "an ack after an applied update");
      auto outcome = from.OnAck(*ack);
      Require(outcome.ok(), "an honest ack is accepted");
    }
  }
};

}  // namespace tipd::fuzz
