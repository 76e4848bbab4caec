// Per-tip cost of the channel's hot path at 1, 16 and 256 tips per update:
// the sender queues the tips and folds them into one signed update; the
// receiver validates every rule and verifies the signature. Messages are ~40
// bytes, so 256 tips fit one transport frame.
#include <benchmark/benchmark.h>

#include <string>

#include "channel/channel.h"
#include "crypto/crypto.h"

namespace tipd::channel {
namespace {

crypto::KeyPair Key(uint8_t b) {
  Bytes secret(32, b);
  return crypto::KeyPair::FromSecret(*crypto::SecretKey::FromBytes(secret));
}

Channel MakeChannel(const crypto::KeyPair& local, const crypto::KeyPair& remote, bool is_a) {
  ChannelParams p;
  p.chain_id = "tipd-bench";
  p.channel_id.fill(0x42);
  p.local_key = local.public_key();
  p.remote_key = remote.public_key();
  p.local_is_a = is_a;
  p.deposit_local = 1ULL << 40;
  p.deposit_remote = 1ULL << 40;
  p.max_tips_per_update = 256;
  return std::move(Channel::Open(p)).value();
}

TipDraft BenchDraft(int i) {
  TipDraft d;
  d.amount = 1000 + static_cast<uint64_t>(i);
  d.message = "Great episode, thanks for the tip jar " + std::to_string(i % 10);  // ~40 bytes
  d.created_at_ms = 1700000000000 + static_cast<uint64_t>(i);
  return d;
}

void BM_BuildAndSignUpdate(benchmark::State& state) {
  const int tips = static_cast<int>(state.range(0));
  const crypto::KeyPair ka = Key(1), kb = Key(2);
  const Channel fresh = MakeChannel(ka, kb, true);
  for (auto _ : state) {
    state.PauseTiming();
    Channel sender = fresh;
    state.ResumeTiming();
    for (int i = 0; i < tips; ++i) {
      if (!sender.QueueTip(BenchDraft(i)).ok()) state.SkipWithError("QueueTip refused");
    }
    auto out = sender.TakeNextUpdate(ka, crypto::SystemRng());
    if (!out || out->update.tips_size() != tips) state.SkipWithError("tips did not fold into one");
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations() * tips);
  state.counters["tips_per_update"] = tips;
}

void BM_ValidateAndVerifyUpdate(benchmark::State& state) {
  const int tips = static_cast<int>(state.range(0));
  const crypto::KeyPair ka = Key(1), kb = Key(2);
  Channel sender = MakeChannel(ka, kb, true);
  const Channel receiver = MakeChannel(kb, ka, false);
  for (int i = 0; i < tips; ++i) {
    if (!sender.QueueTip(BenchDraft(i)).ok()) state.SkipWithError("QueueTip refused");
  }
  const v1::TipUpdate update = sender.TakeNextUpdate(ka, crypto::SystemRng())->update;
  state.counters["update_bytes"] = static_cast<double>(update.ByteSizeLong());
  for (auto _ : state) {
    auto v = receiver.CheckUpdate(update);
    if (!v.ok()) state.SkipWithError(v.error().ToString().c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations() * tips);
  state.counters["tips_per_update"] = tips;
}

BENCHMARK(BM_BuildAndSignUpdate)->Arg(1)->Arg(16)->Arg(256);
BENCHMARK(BM_ValidateAndVerifyUpdate)->Arg(1)->Arg(16)->Arg(256);

}  // namespace
}  // namespace tipd::channel

BENCHMARK_MAIN();
