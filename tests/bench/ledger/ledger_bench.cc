// Ledger throughput: the sequencer validating transfers into sealed, synced
// blocks, and a follower syncing from genesis by re-executing a chain of
// 100,000 transactions. Real LevelDB under $TMPDIR (default /tmp).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "ledger/chain.h"
#include "ledger/codec.h"
#include "tests/support/test_support.h"

namespace tipd::ledger {
namespace {

constexpr int kSenders = 64;

struct Fixture {
  crypto::KeyPair sequencer = crypto::KeyPair::Generate(crypto::SystemRng());
  std::vector<crypto::KeyPair> senders;
  std::vector<uint64_t> nonces;
  v1::GenesisParams genesis;

  Fixture() {
    genesis.set_chain_id("tipd-bench");
    genesis.set_sequencer_key(std::string(AsStringView(sequencer.XOnly())));
    for (int i = 0; i < kSenders; ++i) {
      senders.push_back(crypto::KeyPair::Generate(crypto::SystemRng()));
      auto* a = genesis.add_allocations();
      a->set_account(std::string(AsStringView(senders.back().XOnly())));
      a->set_amount(1'000'000'000);
    }
    nonces.assign(kSenders, 0);
    genesis.set_fee_per_tx(1);
    genesis.set_min_settle_timeout(1);
    genesis.set_max_settle_timeout(100);
  }
  // `n` signed transfers, round-robin over the senders.
  std::vector<v1::Transaction> Transfers(size_t n) {
    std::vector<v1::Transaction> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      size_t s = i % kSenders;
      v1::Transaction tx;
      tx.set_chain_id("tipd-bench");
      tx.set_signer(std::string(AsStringView(senders[s].XOnly())));
      tx.set_nonce(nonces[s]++);
      tx.set_fee(1);
      tx.mutable_transfer()->set_to(std::string(AsStringView(senders[(s + 1) % kSenders].XOnly())));
      tx.mutable_transfer()->set_amount(1 + i % 100);
      (void)SignTransaction(&tx, senders[s], crypto::SystemRng());
      out.push_back(std::move(tx));
    }
    return out;
  }
};

// Transactions per second through AddToPending (full validation incl. the
// Schnorr check) and SealBlock (state hash, signature, one synced write).
void BM_SequencerTransfers(benchmark::State& state) {
  const size_t per_block = static_cast<size_t>(state.range(0));
  Fixture fx;
  testing::TempDir dir("tipd-bench-seq");
  auto db = storage::Database::Open(dir.path() / "db").value();
  auto chain = Chain::Open(db.get(), ValidateGenesis(fx.genesis).value()).value();
  uint64_t t = 1;
  for (auto _ : state) {
    state.PauseTiming();
    auto txs = fx.Transfers(per_block);
    state.ResumeTiming();
    for (const auto& tx : txs) {
      if (auto e = chain->AddToPending(tx)) state.SkipWithError(e->ToString().c_str());
    }
    auto block = chain->SealBlock(t++, fx.sequencer, crypto::SystemRng());
    if (!block.ok()) state.SkipWithError(block.status().ToString().c_str());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * per_block));
  state.counters["blocks"] = static_cast<double>(chain->height());
}
BENCHMARK(BM_SequencerTransfers)
    ->Arg(1)
    ->Arg(100)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A follower re-executing a 100,000-transaction chain (100 blocks of 1000)
// from genesis: header + signature checks, Merkle root, every transaction's
// rules and signature, state hash comparison, one synced write per block.
void BM_FollowerSync100k(benchmark::State& state) {
  constexpr size_t kTotal = 100'000, kPerBlock = 1000;
  Fixture fx;
  testing::TempDir dir("tipd-bench-follow");
  auto seq_db = storage::Database::Open(dir.path() / "seq").value();
  auto seq = Chain::Open(seq_db.get(), ValidateGenesis(fx.genesis).value()).value();
  for (size_t b = 0; b < kTotal / kPerBlock; ++b) {
    for (const auto& tx : fx.Transfers(kPerBlock)) (void)seq->AddToPending(tx);
    (void)seq->SealBlock(b + 1, fx.sequencer, crypto::SystemRng());
  }
  std::vector<v1::Block> blocks;
  for (uint64_t h = 1; h <= seq->height(); ++h) blocks.push_back(**seq->GetBlock(h));
  int round = 0;
  for (auto _ : state) {
    auto db = storage::Database::Open(dir.path() / ("follower" + std::to_string(round++))).value();
    auto follower = Chain::Open(db.get(), ValidateGenesis(fx.genesis).value()).value();
    for (const auto& block : blocks) {
      Status s = follower->AcceptBlock(block);
      if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    }
    if (follower->state_hash() != seq->state_hash()) state.SkipWithError("state hash differs");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kTotal));
}
BENCHMARK(BM_FollowerSync100k)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tipd::ledger

BENCHMARK_MAIN();
