// Shared fixtures of the channel tests: fixed keys, deterministic randomness
// and a pair of Channel objects (A and B) facing each other.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <span>
#include <string>

#include "channel/channel.h"
#include "crypto/crypto.h"

namespace tipd::channel::testing {

// BIP-340 aux bytes of all zeros: signatures become reproducible (golden
// vectors). Never used outside tests.
class ZeroRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override { std::fill(out.begin(), out.end(), 0); }
};

// Deterministic pseudo-random aux bytes for randomized tests.
class SeededRandom final : public crypto::RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : gen_(seed) {}
  void Fill(std::span<uint8_t> out) override {
    for (uint8_t& b : out) b = static_cast<uint8_t>(gen_());
  }

 private:
  std::mt19937_64 gen_;
};

inline crypto::KeyPair KeyFromByte(uint8_t b) {
  Bytes secret(32, b);
  auto sk = crypto::SecretKey::FromBytes(secret);
  EXPECT_TRUE(sk.ok());
  return crypto::KeyPair::FromSecret(*sk);
}

inline ChannelId TestChannelId() {
  ChannelId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i);
  return id;
}

inline constexpr const char* kTestChainId = "tipd-test";

inline ChannelParams ParamsFor(const crypto::KeyPair& local, const crypto::KeyPair& remote,
                               bool local_is_a, uint64_t deposit_local, uint64_t deposit_remote) {
  ChannelParams p;
  p.chain_id = kTestChainId;
  p.channel_id = TestChannelId();
  p.local_key = local.public_key();
  p.remote_key = remote.public_key();
  p.local_is_a = local_is_a;
  p.deposit_local = deposit_local;
  p.deposit_remote = deposit_remote;
  return p;
}

inline TipDraft Draft(uint64_t amount, std::string message = "thanks") {
  TipDraft d;
  d.amount = amount;
  d.message = std::move(message);
  d.created_at_ms = 1700000000000;
  return d;
}

// Two parties of one channel, each with its own Channel object.
struct ChannelPair {
  crypto::KeyPair key_a = KeyFromByte(0x01);
  crypto::KeyPair key_b = KeyFromByte(0x02);
  ZeroRandom rng;
  Channel a;
  Channel b;

  ChannelPair(uint64_t deposit_a, uint64_t deposit_b, uint32_t window = 8, uint32_t max_tips = 256)
      : a(Make(key_a, key_b, true, deposit_a, deposit_b, window, max_tips)),
        b(Make(key_b, key_a, false, deposit_b, deposit_a, window, max_tips)) {}

  static Channel Make(const crypto::KeyPair& local, const crypto::KeyPair& remote, bool is_a,
                      uint64_t dl, uint64_t dr, uint32_t window, uint32_t max_tips) {
    ChannelParams p = ParamsFor(local, remote, is_a, dl, dr);
    p.max_updates_in_flight = window;
    p.max_tips_per_update = max_tips;
    auto ch = Channel::Open(p);
    EXPECT_TRUE(ch.ok()) << ch.status().ToString();
    return std::move(ch).value();
  }

  // A sends one tip to B, B applies and acks, A takes the ack.
  void TipAtoB(uint64_t amount) {
    ASSERT_TRUE(a.QueueTip(Draft(amount)).ok());
    auto out = a.TakeNextUpdate(key_a, rng);
    ASSERT_TRUE(out.has_value());
    auto v = b.CheckUpdate(out->update);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_TRUE(b.ApplyUpdate(*v).ok());
    auto ack = b.MakeAck(key_b, rng);
    ASSERT_TRUE(ack.has_value());
    ASSERT_TRUE(a.OnAck(*ack).ok());
  }
  void TipBtoA(uint64_t amount) {
    ASSERT_TRUE(b.QueueTip(Draft(amount)).ok());
    auto out = b.TakeNextUpdate(key_b, rng);
    ASSERT_TRUE(out.has_value());
    auto v = a.CheckUpdate(out->update);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_TRUE(a.ApplyUpdate(*v).ok());
    auto ack = a.MakeAck(key_a, rng);
    ASSERT_TRUE(ack.has_value());
    ASSERT_TRUE(b.OnAck(*ack).ok());
  }
};

}  // namespace tipd::channel::testing
