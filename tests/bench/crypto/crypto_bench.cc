// Microbenchmarks of the hot crypto paths: signing and verifying balance
// proofs, hashing, the per-connection ECDH, and per-frame transport work.
// Run: build/bench/bench_crypto

#include <benchmark/benchmark.h>

#include "crypto/crypto.h"
#include "crypto/noise.h"

namespace tipd::crypto {
namespace {

KeyPair BenchKey(uint8_t fill) {
  auto sk = SecretKey::FromBytes(Bytes(32, fill));
  return KeyPair::FromSecret(*sk);
}

void BM_SchnorrSign(benchmark::State& state) {
  const KeyPair kp = BenchKey(0x11);
  const Hash32 digest = TaggedHash("tipd/balance-proof/v1", AsSpan("bench"));
  const Key32 aux{};
  for (auto _ : state) benchmark::DoNotOptimize(SchnorrSign(kp, digest, aux));
}
BENCHMARK(BM_SchnorrSign);

void BM_SchnorrVerifyTaggedHash(benchmark::State& state) {
  const KeyPair kp = BenchKey(0x11);
  const Hash32 digest = TaggedHash("tipd/balance-proof/v1", AsSpan("bench"));
  const Signature sig = SchnorrSign(kp, digest, Key32{});
  const XOnlyPubKey pub = kp.XOnly();
  for (auto _ : state) {
    bool ok = SchnorrVerify(pub, digest, sig);
    benchmark::DoNotOptimize(ok);
    if (!ok) state.SkipWithError("signature did not verify");
  }
}
BENCHMARK(BM_SchnorrVerifyTaggedHash);

void BM_Sha256_1KiB(benchmark::State& state) {
  const Bytes data(1024, 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(Sha256(data));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1024);
}
BENCHMARK(BM_Sha256_1KiB);

void BM_Ecdh(benchmark::State& state) {
  const KeyPair a = BenchKey(0x11), b = BenchKey(0x22);
  for (auto _ : state) benchmark::DoNotOptimize(Ecdh(a.secret(), b.public_key()));
}
BENCHMARK(BM_Ecdh);

// One 1 KiB message through Encrypt on one side and DecryptLength +
// DecryptBody on the other (includes the amortized key rotations).
void BM_NoiseEncryptDecrypt_1KiB(benchmark::State& state) {
  const KeyPair peer = BenchKey(0x33);
  const Key32 k1{1}, k2{2}, ck{3};
  NoiseTransport sender = NoiseTransport::FromKeys(k1, k2, ck, peer.public_key());
  NoiseTransport receiver = NoiseTransport::FromKeys(k2, k1, ck, peer.public_key());
  const Bytes msg(1024, 0x42);
  for (auto _ : state) {
    auto frame = sender.Encrypt(msg);
    auto len = receiver.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize));
    auto body = receiver.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
    if (!len.ok() || !body.ok()) state.SkipWithError("frame did not decrypt");
    benchmark::DoNotOptimize(body);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1024);
}
BENCHMARK(BM_NoiseEncryptDecrypt_1KiB);

// A whole handshake, both sides, with fresh ephemeral keys: connection setup.
void BM_NoiseHandshake(benchmark::State& state) {
  const KeyPair a = BenchKey(0x11), b = BenchKey(0x22);
  for (auto _ : state) {
    NoiseHandshake init =
        NoiseHandshake::Initiator(a, b.public_key(), KeyPair::Generate(SystemRng()));
    NoiseHandshake resp = NoiseHandshake::Responder(b, KeyPair::Generate(SystemRng()));
    auto act1 = init.WriteAct1();
    bool ok = act1.ok() && resp.ReadAct1(*act1).ok();
    auto act2 = resp.WriteAct2();
    ok = ok && act2.ok() && init.ReadAct2(*act2).ok();
    auto act3 = init.WriteAct3();
    ok = ok && act3.ok() && resp.ReadAct3(*act3).ok();
    if (!ok) state.SkipWithError("handshake failed");
    benchmark::DoNotOptimize(init.Finish());
    benchmark::DoNotOptimize(resp.Finish());
  }
}
BENCHMARK(BM_NoiseHandshake);

}  // namespace
}  // namespace tipd::crypto

BENCHMARK_MAIN();
