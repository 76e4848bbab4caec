// p2p::Host over real sockets on 127.0.0.1 with real Noise. Nothing sleeps:
// every wait runs the io_context until a condition holds or a generous
// deadline passes, and "nothing happened" is asserted after an explicit later
// event (a message or reconnection that must come after it), never after a
// short silence. Timeouts the Host must not hit on an honest connection are
// seconds long, so a loaded machine or a sanitizer build cannot trip them.
// Misbehaving peers are "raw" peers: blocking sockets driven from the test,
// speaking (or deliberately breaking) BOLT 8 with crypto/noise.h directly.

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "crypto/noise.h"
#include "p2p/p2p.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace tipd::p2p {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr char kChain[] = "tipd-test-chain";

// Deterministic RandomSource (splitmix64 over the test seed): the seam the
// Host takes for ephemeral keys, ping nonces and jitter.
class SeededRandom final : public crypto::RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) {
      if (avail_ == 0) {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        word_ = z ^ (z >> 31);
        avail_ = 8;
      }
      b = static_cast<uint8_t>(word_);
      word_ >>= 8;
      --avail_;
    }
  }

 private:
  uint64_t state_;
  uint64_t word_ = 0;
  int avail_ = 0;
};

// Runs `io` until `pred` holds or `timeout` passes. Returns pred().
bool RunUntil(asio::io_context& io, const std::function<bool()>& pred,
              std::chrono::milliseconds timeout = 30s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    if (io.stopped()) io.restart();
    io.run_one_for(10ms);
  }
  return true;
}

v1::Envelope Numbered(uint64_t n, size_t padding) {
  v1::Envelope env;
  env.mutable_submit_tx_result()->set_request_id(n);
  env.mutable_submit_tx_result()->set_tx_id(std::string(padding, static_cast<char>(n)));
  return env;
}

// A Host plus everything its callbacks reported.
struct TestNode {
  TestNode(asio::io_context& io, uint64_t seed, HostOptions opts = {},
           std::optional<crypto::KeyPair> identity = std::nullopt)
      : rng(seed), key(identity ? *identity : crypto::KeyPair::Generate(rng)) {
    if (opts.chain_id.empty()) opts.chain_id = kChain;
    Callbacks cb;
    cb.on_connected = [this](const PeerInfo& p) { connected.push_back(p); };
    cb.on_disconnected = [this](const DisconnectEvent& e) { disconnected.push_back(e); };
    cb.on_message = [this](PeerId id, const v1::Envelope& e) { messages.emplace_back(id, e); };
    cb.on_error = [this](PeerId, const v1::Error& e) { errors.push_back(e); };
    cb.on_writable = [this](PeerId) { ++writable; };
    host = std::make_unique<Host>(io, key, rng, opts, cb);
  }
  uint16_t Listen() {
    auto port = host->Listen("127.0.0.1", 0);
    EXPECT_TRUE(port.ok()) << port.status().ToString();
    return port.ok() ? *port : 0;
  }
  bool HasDisconnect(DisconnectCode code) const {
    for (const auto& d : disconnected) {
      if (d.reason.code == code) return true;
    }
    return false;
  }

  SeededRandom rng;
  crypto::KeyPair key;
  std::unique_ptr<Host> host;
  std::vector<PeerInfo> connected;
  std::vector<DisconnectEvent> disconnected;
  std::vector<std::pair<PeerId, v1::Envelope>> messages;
  std::vector<v1::Error> errors;
  int writable = 0;
};

// Connects `from` to `to` (listening on `port`) and runs until both report it.
// Returns from's PeerId.
PeerId ConnectPair(asio::io_context& io, TestNode& from, TestNode& to, uint16_t port) {
  size_t from_before = from.connected.size(), to_before = to.connected.size();
  auto id = from.host->Connect("127.0.0.1", port, to.key.public_key());
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_TRUE(RunUntil(
      io, [&] { return from.connected.size() > from_before && to.connected.size() > to_before; }));
  return id.ok() ? *id : 0;
}

// A peer driven by the test with blocking writes and non-blocking reads; the
// host's io_context is pumped while it waits for bytes.
class RawPeer {
 public:
  // `from` is the local address to connect from: any 127.x.y.z is loopback on
  // Linux, so tests can play several distinct remote addresses.
  RawPeer(asio::io_context& host_io, uint16_t port, const char* from = nullptr)
      : host_io_(host_io), sock_(io_) {
    if (from != nullptr) {
      sock_.open(tcp::v4());
      sock_.bind({asio::ip::make_address(from), 0});
    }
    sock_.connect({asio::ip::make_address("127.0.0.1"), port});
    sock_.non_blocking(true);
  }

  void Write(ByteSpan b) {
    sock_.non_blocking(false);
    boost::system::error_code ec;
    asio::write(sock_, asio::buffer(b.data(), b.size()), ec);
    sock_.non_blocking(true);
  }

  // Exactly n bytes, or nullopt on EOF/deadline.
  std::optional<Bytes> Read(size_t n) {
    RunUntil(host_io_, [&] {
      Pull();
      return buf_.size() >= n || eof_;
    });
    if (buf_.size() < n) return std::nullopt;
    Bytes out(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(n));
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(n));
    return out;
  }

  // True once the host closed the connection (data before it is discarded).
  bool WaitClosed() {
    return RunUntil(host_io_, [&] {
      Pull();
      buf_.clear();
      return eof_;
    });
  }

  // Initiator handshake against `remote`; returns false if the host hung up.
  bool Handshake(const crypto::PublicKey& remote) {
    SeededRandom rng(99);
    auto me = crypto::KeyPair::Generate(rng);
    auto hs = crypto::NoiseHandshake::Initiator(me, remote, crypto::KeyPair::Generate(rng));
    Write(*hs.WriteAct1());
    auto act2 = Read(crypto::kAct2Size);
    if (!act2 || !hs.ReadAct2(*act2).ok()) return false;
    Write(*hs.WriteAct3());
    auto t = hs.Finish();
    if (!t.ok()) return false;
    transport_.emplace(std::move(t).value());
    return true;
  }

  void WriteFrame(ByteSpan plain) { Write(*transport_->Encrypt(plain)); }
  void WriteEnvelope(const v1::Envelope& env) {
    std::string s;
    env.SerializeToString(&s);
    WriteFrame(AsSpan(s));
  }
  void SendInit(const std::string& chain) {
    v1::Envelope env;
    env.mutable_init()->set_chain_id(chain);
    env.mutable_init()->set_protocol_version(kProtocolVersion);
    WriteEnvelope(env);
  }

  std::optional<v1::Envelope> ReadEnvelope() {
    auto header = Read(crypto::kNoiseLengthHeaderSize);
    if (!header) return std::nullopt;
    auto len = transport_->DecryptLength(*header);
    if (!len.ok()) return std::nullopt;
    auto body = Read(crypto::NoiseTransport::BodySize(*len));
    if (!body) return std::nullopt;
    auto plain = transport_->DecryptBody(*body);
    if (!plain.ok()) return std::nullopt;
    v1::Envelope env;
    if (!env.ParseFromArray(plain->data(), static_cast<int>(plain->size()))) return std::nullopt;
    return env;
  }

  void SendPing(uint64_t nonce, uint32_t pong_bytes) {
    v1::Envelope env;
    env.mutable_ping()->set_nonce(nonce);
    env.mutable_ping()->set_pong_bytes(pong_bytes);
    WriteEnvelope(env);
  }

  // Reads envelopes until an Error arrives; returns its code ("" if none).
  std::string ReadErrorCode() {
    for (int i = 0; i < 100; ++i) {
      auto env = ReadEnvelope();
      if (!env) return "";
      if (env->has_error()) return env->error().code();
    }
    return "";
  }

 private:
  void Pull() {
    uint8_t tmp[4096];
    for (;;) {
      boost::system::error_code ec;
      size_t n = sock_.read_some(asio::buffer(tmp), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) return;
      if (ec) {
        eof_ = true;
        return;
      }
      buf_.insert(buf_.end(), tmp, tmp + n);
    }
  }

  asio::io_context& host_io_;
  asio::io_context io_;  // never run: the socket is used synchronously
  tcp::socket sock_;
  Bytes buf_;
  bool eof_ = false;
  std::optional<crypto::NoiseTransport> transport_;
};

class HostTest : public ::testing::Test {
 protected:
  void SetUp() override { seed_ = tipd::testing::TestSeed(); }
  void TearDown() override {
    if (HasFailure()) std::cerr << "TIPD_TEST_SEED=" << seed_ << "\n";
  }
  uint64_t Seed(uint64_t n) { return seed_ * 1000 + n; }

  asio::io_context io_;
  uint64_t seed_ = 0;
};

TEST_F(HostTest, InitExchangeAndThousandsOfMessagesBothWaysInOrder) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  uint16_t port = a.Listen();
  PeerId b_to_a = ConnectPair(io_, b, a, port);

  ASSERT_EQ(b.connected.size(), 1u);
  EXPECT_EQ(b.connected[0].id, b_to_a);
  EXPECT_EQ(b.connected[0].node_id, a.key.public_key());
  EXPECT_EQ(b.connected[0].direction, Direction::kOutbound);
  EXPECT_EQ(b.connected[0].init.chain_id(), kChain);
  EXPECT_EQ(b.connected[0].init.protocol_version(), kProtocolVersion);
  ASSERT_EQ(a.connected.size(), 1u);
  EXPECT_EQ(a.connected[0].node_id, b.key.public_key());
  EXPECT_EQ(a.connected[0].direction, Direction::kInbound);
  PeerId a_to_b = a.connected[0].id;
  EXPECT_EQ(a.host->FindPeer(b.key.public_key()), a_to_b);

  // 2500 messages each way: well past the key rotation at nonce 1000 (every
  // 500 messages), sizes varying, one of exactly the 65535-byte limit.
  constexpr uint64_t kCount = 2500;
  for (uint64_t i = 0; i < kCount; ++i) {
    size_t pad = (i * 37) % 1500;
    ASSERT_TRUE(b.host->Send(b_to_a, Numbered(i, pad)).ok()) << i;
    ASSERT_TRUE(a.host->Send(a_to_b, Numbered(i, pad)).ok()) << i;
    if (i % 500 == 0) RunUntil(io_, [] { return true; });
  }
  v1::Envelope max = Numbered(kCount, 0);
  size_t pad = 65535 - max.ByteSizeLong();
  max = Numbered(kCount, pad);
  while (max.ByteSizeLong() > 65535) max = Numbered(kCount, --pad);
  ASSERT_EQ(max.ByteSizeLong(), 65535u);
  ASSERT_TRUE(b.host->Send(b_to_a, max).ok());

  v1::Envelope too_big = Numbered(kCount + 1, pad + 1);
  ASSERT_GT(too_big.ByteSizeLong(), 65535u);
  Status s = b.host->Send(b_to_a, too_big);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();

  ASSERT_TRUE(RunUntil(
      io_, [&] { return a.messages.size() == kCount + 1 && b.messages.size() == kCount; }, 20s));
  for (uint64_t i = 0; i <= kCount; ++i) {
    ASSERT_EQ(a.messages[i].first, a_to_b);
    ASSERT_EQ(a.messages[i].second.submit_tx_result().request_id(), i);
  }
  EXPECT_EQ(a.messages[kCount].second.submit_tx_result().tx_id().size(), pad);
  for (uint64_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(b.messages[i].second.submit_tx_result().request_id(), i);
  }
  // Nothing of the refused message arrived and the session is intact.
  EXPECT_TRUE(a.disconnected.empty());
  EXPECT_TRUE(b.disconnected.empty());

  auto stats = b.host->Stats(b_to_a);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GE(stats->messages_out, kCount + 2);  // + Init
  EXPECT_GT(stats->bytes_out, 65535u);
  auto a_stats = a.host->Stats(a_to_b);
  ASSERT_TRUE(a_stats.has_value());
  EXPECT_GE(a_stats->messages_in, kCount + 2);
  EXPECT_EQ(a_stats->bytes_in, stats->bytes_out);
}

TEST_F(HostTest, SendRejectsWhatP2pOwnsAndUnknownPeers) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  PeerId id = ConnectPair(io_, b, a, a.Listen());
  v1::Envelope empty;
  EXPECT_EQ(b.host->Send(id, empty).code(), StatusCode::kInvalidArgument);
  v1::Envelope ping;
  ping.mutable_ping()->set_nonce(1);
  EXPECT_EQ(b.host->Send(id, ping).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.host->Send(id + 100, Numbered(1, 1)).code(), StatusCode::kNotFound);
  EXPECT_EQ(b.host->Connect("not-an-ip", 1, a.key.public_key()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(b.host->Connect("127.0.0.1", 1, b.key.public_key()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(HostTest, WrongChainDisconnectsBothSidesAndOtherPeersKeepWorking) {
  TestNode a(io_, Seed(1)), c(io_, Seed(3));
  HostOptions other;
  other.chain_id = "some-other-chain";
  TestNode b(io_, Seed(2), other);
  uint16_t port = a.Listen();
  PeerId c_to_a = ConnectPair(io_, c, a, port);

  auto id = b.host->Connect("127.0.0.1", port, a.key.public_key());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return !b.disconnected.empty() && a.disconnected.size() == 1; }));
  EXPECT_EQ(b.disconnected[0].id, *id);
  EXPECT_EQ(b.disconnected[0].reason.code, DisconnectCode::kWrongChain);
  EXPECT_FALSE(b.disconnected[0].was_connected);
  EXPECT_NE(b.disconnected[0].reason.message.find(kChain), std::string::npos);
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kWrongChain);
  EXPECT_EQ(a.disconnected[0].node_id, b.key.public_key());
  EXPECT_EQ(a.connected.size(), 1u);  // only c

  ASSERT_TRUE(c.host->Send(c_to_a, Numbered(7, 10)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1; }));
  EXPECT_EQ(a.messages[0].second.submit_tx_result().request_id(), 7u);
  EXPECT_TRUE(c.disconnected.empty());
}

TEST_F(HostTest, GarbageAndBadAct1AreDroppedAndHostKeepsServing) {
  TestNode a(io_, Seed(1)), c(io_, Seed(3));
  uint16_t port = a.Listen();
  PeerId c_to_a = ConnectPair(io_, c, a, port);

  RawPeer garbage(io_, port);
  Bytes junk(1000);
  SeededRandom(Seed(5)).Fill(junk);
  garbage.Write(junk);
  EXPECT_TRUE(garbage.WaitClosed());

  // A well-formed-length act 1 whose MAC does not verify.
  RawPeer bad_act1(io_, port);
  Bytes act1(crypto::kAct1Size, 0);
  auto eph = crypto::KeyPair::Generate(a.rng).public_key().bytes();
  std::copy(eph.begin(), eph.end(), act1.begin() + 1);
  bad_act1.Write(act1);
  EXPECT_TRUE(bad_act1.WaitClosed());

  // Never reached the end of the handshake: logged only, no callback.
  EXPECT_TRUE(a.disconnected.empty());
  ASSERT_TRUE(c.host->Send(c_to_a, Numbered(1, 1)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1; }));
  TestNode d(io_, Seed(4));
  ConnectPair(io_, d, a, port);
  EXPECT_EQ(a.host->Peers().size(), 2u);
}

TEST_F(HostTest, SilentClientIsDroppedAtHandshakeDeadline) {
  HostOptions opts;
  opts.handshake_timeout = 100ms;
  TestNode a(io_, Seed(1), opts);
  RawPeer silent(io_, a.Listen());
  EXPECT_TRUE(silent.WaitClosed());
}

struct BadFrameCase {
  const char* name;
  std::function<void(RawPeer&)> send;
  const char* error_code;
};

TEST_F(HostTest, ProtocolViolationsGetErrorAndDisconnect) {
  std::vector<BadFrameCase> cases = {
      {"undecodable envelope",
       [](RawPeer& r) {
         r.SendInit(kChain);
         Bytes bad = {0x0a, 0xff, 0x01};  // field 1, length 255, 1 byte present
         r.WriteFrame(bad);
       },
       error_code::kBadEnvelope},
      {"unset oneof",
       [](RawPeer& r) {
         r.SendInit(kChain);
         r.WriteEnvelope(v1::Envelope());
       },
       error_code::kUnknownMessage},
      {"unknown oneof field",
       [](RawPeer& r) {
         r.SendInit(kChain);
         Bytes unknown = {0xa0, 0x06, 0x01};  // field 100, varint 1
         r.WriteFrame(unknown);
       },
       error_code::kUnknownMessage},
      {"message before Init", [](RawPeer& r) { r.WriteEnvelope(Numbered(1, 1)); },
       error_code::kInitRequired},
      {"second Init",
       [](RawPeer& r) {
         r.SendInit(kChain);
         r.SendInit(kChain);
       },
       error_code::kUnexpectedInit},
      {"frame over max_message_size",
       [](RawPeer& r) {
         r.SendInit(kChain);
         r.WriteEnvelope(Numbered(1, 5000));
       },
       error_code::kFrameTooLarge},
      {"frame MAC failure",
       [](RawPeer& r) {
         r.SendInit(kChain);
         Bytes junk(crypto::kNoiseLengthHeaderSize, 0x5a);
         r.Write(junk);
       },
       error_code::kDecryptFailed},
      {"bad pong nonce",
       [](RawPeer& r) {
         r.SendInit(kChain);
         // Wait for the host's Ping (ping_interval is short below).
         for (int i = 0; i < 10; ++i) {
           auto env = r.ReadEnvelope();
           if (!env) return;
           if (env->has_ping()) {
             v1::Envelope pong;
             pong.mutable_pong()->set_nonce(env->ping().nonce() + 1);
             r.WriteEnvelope(pong);
             return;
           }
         }
       },
       error_code::kBadPong},
  };
  HostOptions opts;
  opts.max_message_size = 4096;
  opts.ping_interval = 50ms;
  TestNode a(io_, Seed(1), opts);
  uint16_t port = a.Listen();
  TestNode c(io_, Seed(3));
  PeerId c_to_a = ConnectPair(io_, c, a, port);

  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    size_t before = a.disconnected.size();
    RawPeer raw(io_, port);
    ASSERT_TRUE(raw.Handshake(a.key.public_key()));
    tc.send(raw);
    EXPECT_EQ(raw.ReadErrorCode(), tc.error_code);
    EXPECT_TRUE(raw.WaitClosed());
    ASSERT_TRUE(RunUntil(io_, [&] { return a.disconnected.size() == before + 1; }));
    EXPECT_EQ(a.disconnected.back().reason.code, DisconnectCode::kProtocolError)
        << a.disconnected.back().reason.ToString();
  }
  // The honest peer saw none of it.
  EXPECT_TRUE(c.disconnected.empty());
  ASSERT_TRUE(c.host->Send(c_to_a, Numbered(3, 3)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1; }));
}

// Found by fuzz_envelope: a Ping asking for a Pong larger than the Host's own
// max_message_size was answered with a frame its peer (with the same limit)
// refuses as FRAME_TOO_LARGE. Such a Ping is not answered, like one over
// kMaxPongBytes; the session stays up.
TEST_F(HostTest, PongOverOwnMaxMessageSizeIsNotSent) {
  HostOptions opts;
  opts.max_message_size = 4096;
  TestNode a(io_, Seed(1), opts);
  uint16_t port = a.Listen();
  RawPeer raw(io_, port);
  ASSERT_TRUE(raw.Handshake(a.key.public_key()));
  raw.SendInit(kChain);
  raw.SendPing(1, 5000);  // the Pong would be over 4096 bytes
  raw.SendPing(2, 100);
  std::vector<uint64_t> pongs;
  for (int i = 0; i < 10 && pongs.size() < 1; ++i) {
    auto env = raw.ReadEnvelope();
    ASSERT_TRUE(env.has_value());
    ASSERT_FALSE(env->has_error()) << env->error().code();
    if (env->has_pong()) pongs.push_back(env->pong().nonce());
  }
  EXPECT_EQ(pongs, std::vector<uint64_t>{2});
  EXPECT_TRUE(a.disconnected.empty());
}

TEST_F(HostTest, PingPongKeepsIdleConnectionOpen) {
  // The keepalive timer sends the next Ping no sooner than ping_timeout
  // after the previous one, so b receiving kPongs Pongs proves that
  // (kPongs - 1) * ping_timeout >= 3 idle timeouts passed without an owner
  // message: an event to wait for, not a stretch of silence. The timeouts
  // are long enough that a stalled process cannot trip them.
  HostOptions opts;
  opts.ping_interval = 30ms;
  opts.ping_timeout = 750ms;
  opts.idle_timeout = 1500ms;
  opts.ping_pong_bytes = 1000;
  constexpr uint64_t kPongs = 7;  // (7 - 1) * 750 ms = 3 * 1500 ms
  TestNode a(io_, Seed(1), opts), b(io_, Seed(2), opts);
  const auto start = std::chrono::steady_clock::now();
  PeerId id = ConnectPair(io_, b, a, a.Listen());
  ASSERT_TRUE(RunUntil(
      io_,
      [&] {
        auto st = b.host->Stats(id);
        // Pongs carry 1000 padding bytes; Pings none.
        return !st || st->bytes_in >= kPongs * 1000u || !a.disconnected.empty() ||
               !b.disconnected.empty();
      },
      60s));
  EXPECT_TRUE(a.disconnected.empty()) << a.disconnected[0].reason.ToString();
  EXPECT_TRUE(b.disconnected.empty()) << b.disconnected[0].reason.ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 3 * opts.idle_timeout);
  auto stats = b.host->Stats(id);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GE(stats->messages_in, kPongs);  // pings and pongs
  EXPECT_TRUE(a.messages.empty());        // Ping/Pong never reach the owner
}

TEST_F(HostTest, PeerThatNeverAnswersPingsIsDisconnected) {
  HostOptions opts;
  opts.ping_interval = 30ms;
  opts.ping_timeout = 100ms;
  opts.idle_timeout = 10s;
  TestNode a(io_, Seed(1), opts);
  RawPeer mute(io_, a.Listen());
  ASSERT_TRUE(mute.Handshake(a.key.public_key()));
  mute.SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return a.connected.size() == 1; }));
  // Reads (the kernel buffers the pings) but never answers.
  ASSERT_TRUE(RunUntil(io_, [&] { return !a.disconnected.empty(); }));
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kPingTimeout);
  EXPECT_EQ(a.disconnected[0].reason.message, "ping timeout");
  EXPECT_TRUE(a.disconnected[0].was_connected);
  EXPECT_TRUE(mute.WaitClosed());
}

TEST_F(HostTest, SilentPeerHitsIdleTimeout) {
  HostOptions opts;
  opts.ping_interval = 10s;
  opts.idle_timeout = 100ms;
  TestNode a(io_, Seed(1), opts);
  RawPeer mute(io_, a.Listen());
  ASSERT_TRUE(mute.Handshake(a.key.public_key()));
  mute.SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return !a.disconnected.empty(); }));
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kPingTimeout);
  EXPECT_EQ(a.disconnected[0].reason.message, "ping timeout");
}

TEST_F(HostTest, SendQueueIsBoundedWhenPeerDoesNotRead) {
  // The receiver runs on its own io_context, which the test stops running
  // after the handshake: it never reads again.
  asio::io_context receiver_io;
  HostOptions opts;
  opts.max_send_queue_bytes = 1 << 20;
  opts.max_send_queue_messages = 64;
  TestNode sender(io_, Seed(1), opts), receiver(receiver_io, Seed(2));
  uint16_t port = receiver.Listen();
  auto id = sender.host->Connect("127.0.0.1", port, receiver.key.public_key());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(RunUntil(io_, [&] {
    receiver_io.restart();
    receiver_io.poll();
    return sender.connected.size() == 1 && receiver.connected.size() == 1;
  }));

  // Fill the kernel buffers and then the queue; 4000 x 60 KB would be 240 MB.
  uint64_t accepted = 0;
  Status refused;
  for (uint64_t i = 0; i < 4000; ++i) {
    Status s = sender.host->Send(*id, Numbered(i, 60'000));
    if (!s.ok()) {
      refused = s;
      break;
    }
    ++accepted;
    io_.restart();
    io_.poll();
    auto st = sender.host->Stats(*id);
    ASSERT_TRUE(st.has_value());
    ASSERT_LE(st->send_queue_bytes, opts.max_send_queue_bytes);
    ASSERT_LE(st->send_queue_messages, opts.max_send_queue_messages);
  }
  ASSERT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused.ToString();
  EXPECT_LT(accepted, 4000u);
  auto st = sender.host->Stats(*id);
  ASSERT_TRUE(st.has_value());
  EXPECT_GT(st->send_queue_bytes, opts.max_send_queue_bytes / 2);
  EXPECT_EQ(sender.writable, 0);

  // Once the receiver reads again the queue drains, on_writable fires and
  // every accepted message arrives in order.
  ASSERT_TRUE(RunUntil(
      io_,
      [&] {
        receiver_io.restart();
        receiver_io.poll();
        return sender.writable == 1 && receiver.messages.size() == accepted;
      },
      20s));
  for (uint64_t i = 0; i < accepted; ++i) {
    ASSERT_EQ(receiver.messages[i].second.submit_tx_result().request_id(), i);
  }
  EXPECT_TRUE(sender.host->Send(*id, Numbered(accepted, 10)).ok());
}

TEST_F(HostTest, PersistentPeerReconnectsAfterRemoteRestarts) {
  HostOptions opts;
  opts.reconnect_initial = 20ms;
  opts.reconnect_max = 200ms;
  TestNode b(io_, Seed(2), opts);
  auto a = std::make_unique<TestNode>(io_, Seed(1));
  crypto::KeyPair a_key = a->key;
  uint16_t port = a->Listen();

  ASSERT_TRUE(b.host->AddPersistentPeer("127.0.0.1", port, a_key.public_key()).ok());
  EXPECT_EQ(b.host->AddPersistentPeer("127.0.0.1", port, a_key.public_key()).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(RunUntil(io_, [&] { return b.connected.size() == 1; }));

  a.reset();  // the remote goes away
  ASSERT_TRUE(RunUntil(io_, [&] { return !b.disconnected.empty(); }));
  EXPECT_TRUE(b.disconnected[0].was_connected);
  // Redials fail while nobody listens, spaced by the growing backoff.
  ASSERT_TRUE(RunUntil(io_, [&] { return b.disconnected.size() >= 4; }));
  for (size_t i = 1; i < b.disconnected.size(); ++i) {
    EXPECT_EQ(b.disconnected[i].reason.code, DisconnectCode::kConnectFailed)
        << b.disconnected[i].reason.ToString();
    EXPECT_FALSE(b.disconnected[i].was_connected);
  }

  TestNode a2(io_, Seed(3), {}, a_key);  // restart: same key, same port
  auto relisten = a2.host->Listen("127.0.0.1", port);
  ASSERT_TRUE(relisten.ok()) << relisten.status().ToString();
  ASSERT_TRUE(RunUntil(io_, [&] { return b.connected.size() == 2 && a2.connected.size() == 1; }));
  EXPECT_EQ(b.connected[1].node_id, a_key.public_key());
  EXPECT_EQ(b.host->FindPeer(a_key.public_key()), b.connected[1].id);

  // After removal a dropped session is not redialled. The witness is a
  // second persistent peer c dropped right after a2: b redials c with the
  // same backoff, so once b is back with c (and a message went through), a
  // redial of a2 would have happened too.
  TestNode c(io_, Seed(4));
  const uint16_t c_port = c.Listen();
  ASSERT_TRUE(b.host->AddPersistentPeer("127.0.0.1", c_port, c.key.public_key()).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return b.connected.size() == 3 && c.connected.size() == 1; }));
  ASSERT_TRUE(b.host->RemovePersistentPeer(a_key.public_key()).ok());
  size_t disconnects = b.disconnected.size();
  ASSERT_TRUE(a2.host->Disconnect(a2.connected[0].id, "test").ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return b.disconnected.size() == disconnects + 1; }));
  ASSERT_TRUE(c.host->Disconnect(c.connected[0].id, "test").ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return c.connected.size() == 2; }));
  ASSERT_TRUE(c.host->Send(c.connected[1].id, Numbered(7, 7)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return b.messages.size() == 1; }));
  ASSERT_EQ(b.connected.size(), 4u);  // only c came back
  EXPECT_EQ(b.connected[3].node_id, c.key.public_key());
  EXPECT_FALSE(b.host->FindPeer(a_key.public_key()).has_value());
  EXPECT_EQ(a2.connected.size(), 1u);
}

TEST_F(HostTest, WrongRemoteStaticKeyFailsTheHandshake) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  uint16_t port = a.Listen();
  SeededRandom rng(Seed(9));
  auto wrong = crypto::KeyPair::Generate(rng).public_key();
  auto id = b.host->Connect("127.0.0.1", port, wrong);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return !b.disconnected.empty(); }));
  const auto& ev = b.disconnected[0];
  EXPECT_EQ(ev.id, *id);
  EXPECT_EQ(ev.reason.code, DisconnectCode::kHandshakeFailed);
  EXPECT_NE(ev.reason.message.find("wrong remote static key"), std::string::npos)
      << ev.reason.message;
  EXPECT_FALSE(ev.was_connected);
  EXPECT_TRUE(a.connected.empty());
  EXPECT_TRUE(b.connected.empty());
}

TEST_F(HostTest, ConnectToClosedPortAndTimeoutAreReported) {
  TestNode b(io_, Seed(2));
  // Nobody listens there, and no parallel test can take the port meanwhile.
  const tipd::testing::ClosedLoopbackPort closed;
  auto id =
      b.host->Connect("127.0.0.1", closed.port(), crypto::KeyPair::Generate(b.rng).public_key());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return !b.disconnected.empty(); }));
  EXPECT_EQ(b.disconnected[0].reason.code, DisconnectCode::kConnectFailed);

  // A listener that never speaks: the connect+handshake deadline fires.
  tcp::acceptor mute(io_, {asio::ip::make_address("127.0.0.1"), 0});
  ConnectOptions quick;
  quick.timeout = 100ms;
  auto id2 = b.host->Connect("127.0.0.1", mute.local_endpoint().port(),
                             crypto::KeyPair::Generate(b.rng).public_key(), quick);
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return b.disconnected.size() == 2; }));
  EXPECT_EQ(b.disconnected[1].id, *id2);
  EXPECT_EQ(b.disconnected[1].reason.code, DisconnectCode::kTimeout);
}

TEST_F(HostTest, DuplicateConnectionKeepsTheNewest) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  uint16_t port = a.Listen();
  PeerId first = ConnectPair(io_, b, a, port);
  PeerId a_first = a.connected[0].id;
  PeerId second = ConnectPair(io_, b, a, port);
  ASSERT_TRUE(RunUntil(io_, [&] {
    return !a.disconnected.empty() && !b.disconnected.empty() && a.host->Peers().size() == 1 &&
           b.host->Peers().size() == 1;
  }));
  EXPECT_EQ(a.disconnected[0].id, a_first);
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kDuplicate);
  EXPECT_EQ(b.disconnected[0].id, first);
  EXPECT_EQ(b.host->FindPeer(a.key.public_key()), second);
  ASSERT_TRUE(b.host->Send(second, Numbered(5, 5)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1; }));
  EXPECT_EQ(a.messages[0].first, a.connected[1].id);
  EXPECT_EQ(b.host->Send(first, Numbered(6, 6)).code(), StatusCode::kNotFound);
}

TEST_F(HostTest, ErrorsFromPeerReachTheOwner) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  PeerId id = ConnectPair(io_, b, a, a.Listen());

  // A channel-scoped Error is reported; the connection stays.
  v1::Envelope channel_err;
  channel_err.mutable_error()->set_channel_id(std::string(32, '\x01'));
  channel_err.mutable_error()->set_code("NONCE_NOT_INCREASING");
  ASSERT_TRUE(b.host->Send(id, channel_err).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.errors.size() == 1; }));
  EXPECT_EQ(a.errors[0].code(), "NONCE_NOT_INCREASING");
  // A message sent after the Error arrives over the same connection: the
  // Error did not end it.
  ASSERT_TRUE(b.host->Send(id, Numbered(8, 8)).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1 || !a.disconnected.empty(); }));
  EXPECT_TRUE(a.disconnected.empty());
  EXPECT_EQ(a.messages.size(), 1u);

  // A connection-wide Error is reported, then the peer is disconnected.
  v1::Envelope conn_err;
  conn_err.mutable_error()->set_code("GOING_AWAY");
  conn_err.mutable_error()->set_message("bye");
  ASSERT_TRUE(b.host->Send(id, conn_err).ok());
  ASSERT_TRUE(RunUntil(io_, [&] { return !a.disconnected.empty() && !b.disconnected.empty(); }));
  EXPECT_EQ(a.errors.size(), 2u);
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kRemoteError);
  EXPECT_NE(a.disconnected[0].reason.message.find("GOING_AWAY"), std::string::npos);
  EXPECT_EQ(b.disconnected[0].reason.code, DisconnectCode::kRemoteClosed);
}

TEST_F(HostTest, LocalDisconnectFlushesAndReportsOnce) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2));
  PeerId id = ConnectPair(io_, b, a, a.Listen());
  ASSERT_TRUE(b.host->Send(id, Numbered(1, 100)).ok());
  ASSERT_TRUE(b.host->Disconnect(id, "done").ok());
  ASSERT_EQ(b.disconnected.size(), 1u);  // synchronously
  EXPECT_EQ(b.disconnected[0].reason.code, DisconnectCode::kLocal);
  EXPECT_EQ(b.disconnected[0].reason.message, "done");
  EXPECT_EQ(b.host->Disconnect(id, "again").code(), StatusCode::kNotFound);
  EXPECT_FALSE(b.host->Stats(id).has_value());
  // The message queued before Disconnect still arrives.
  ASSERT_TRUE(RunUntil(io_, [&] { return a.messages.size() == 1 && !a.disconnected.empty(); }));
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kRemoteClosed);
  EXPECT_EQ(b.disconnected.size(), 1u);
}

TEST_F(HostTest, ShutdownReportsEveryPeerAndDestructionIsQuiet) {
  TestNode a(io_, Seed(1)), b(io_, Seed(2)), c(io_, Seed(3));
  uint16_t port = a.Listen();
  ConnectPair(io_, b, a, port);
  ConnectPair(io_, c, a, port);
  a.host->Shutdown();
  EXPECT_EQ(a.disconnected.size(), 2u);
  for (const auto& d : a.disconnected) EXPECT_EQ(d.reason.code, DisconnectCode::kShutdown);
  ASSERT_TRUE(
      RunUntil(io_, [&] { return b.disconnected.size() == 1 && c.disconnected.size() == 1; }));
  // Destroying a Host with live sessions fires no callbacks on it.
  ConnectPair(io_, b, c, c.Listen());
  b.host.reset();
  ASSERT_TRUE(RunUntil(io_, [&] { return c.disconnected.size() == 2; }));
}

TEST_F(HostTest, OneAddressCannotTakeEveryInboundSlot) {
  // Connections still in the handshake count: an attacker need not finish it.
  HostOptions opts;
  opts.max_inbound_per_address = 4;
  TestNode a(io_, Seed(1), opts);
  uint16_t port = a.Listen();
  std::vector<std::unique_ptr<RawPeer>> held;
  for (int i = 0; i < 4; ++i) held.push_back(std::make_unique<RawPeer>(io_, port));
  // The 5th from the same address is closed right after accept...
  RawPeer excess(io_, port);
  EXPECT_TRUE(excess.WaitClosed());
  // ...while the ones it holds stay usable, and another address gets in and
  // reaches on_connected.
  ASSERT_TRUE(held[0]->Handshake(a.key.public_key()));
  held[0]->SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return a.connected.size() == 1; }));
  RawPeer other(io_, port, "127.0.0.2");
  ASSERT_TRUE(other.Handshake(a.key.public_key()));
  other.SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return a.connected.size() == 2; }));
  EXPECT_EQ(a.connected[1].address.rfind("127.0.0.2:", 0), 0u) << a.connected[1].address;

  // Closing one frees its slot for the same address.
  held.pop_back();
  RawPeer again(io_, port);
  ASSERT_TRUE(again.Handshake(a.key.public_key()));
  again.SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return a.connected.size() == 3; }));
  // (Raw peers share one static key, so each newer session replaced the
  // older one as a duplicate; nothing else ended.)
  for (const auto& d : a.disconnected) {
    EXPECT_EQ(d.reason.code, DisconnectCode::kDuplicate) << d.reason.ToString();
  }
}

TEST_F(HostTest, DefaultPerAddressLimitAppliesToLoopback) {
  TestNode a(io_, Seed(1));
  uint16_t port = a.Listen();
  std::vector<std::unique_ptr<RawPeer>> held;
  for (size_t i = 0; i < HostOptions{}.max_inbound_per_address; ++i) {
    held.push_back(std::make_unique<RawPeer>(io_, port));
  }
  RawPeer excess(io_, port);
  EXPECT_TRUE(excess.WaitClosed());
}

TEST_F(HostTest, PingFloodWithPaddingIsCutOff) {
  TestNode a(io_, Seed(1));  // default options: 30 s ping interval, no padding
  RawPeer flood(io_, a.Listen());
  ASSERT_TRUE(flood.Handshake(a.key.public_key()));
  flood.SendInit(kChain);
  ASSERT_TRUE(RunUntil(io_, [&] { return a.connected.size() == 1; }));
  // One Ping at a time, each Pong read before the next: the peer reads
  // everything, so the send-queue bound (kSlowPeer) never helps.
  int pongs = 0;
  std::string error;
  for (uint64_t i = 0; i < 200 && error.empty(); ++i) {
    flood.SendPing(i, kMaxPongBytes);
    for (;;) {
      auto env = flood.ReadEnvelope();
      if (!env) break;
      if (env->has_error()) {
        error = env->error().code();
        break;
      }
      if (env->has_pong()) {
        ++pongs;
        break;
      }
    }
  }
  EXPECT_EQ(error, error_code::kPingRateExceeded);
  // The burst allowance: a few full-size Pongs, not 200 x 65000 bytes.
  EXPECT_LE(pongs, 8) << pongs;
  EXPECT_TRUE(flood.WaitClosed());
  ASSERT_TRUE(RunUntil(io_, [&] { return a.disconnected.size() == 1; }));
  EXPECT_EQ(a.disconnected[0].reason.code, DisconnectCode::kRateLimited)
      << a.disconnected[0].reason.ToString();
}

TEST_F(HostTest, HonestKeepaliveWithFullPaddingNeverTripsThePingLimit) {
  // Both sides ping often and with full-size padding: far above the default
  // budget (a burst of 4 full Pongs, then ~1 per second), so only the floor
  // derived from our own ping_interval/ping_pong_bytes keeps this up. (The
  // next Ping goes out when the keepalive timer next wakes, which is
  // ping_timeout after the previous Ping.)
  // ping_timeout 400 ms: about 2.5 Pings per second, still far above the
  // default budget (24 Pongs in ~10 s against 4 + 10), and long enough that
  // a stalled process does not miss a Pong.
  HostOptions opts;
  opts.ping_interval = 10ms;
  opts.ping_timeout = 400ms;
  opts.ping_pong_bytes = kMaxPongBytes;
  TestNode a(io_, Seed(1), opts), b(io_, Seed(2), opts);
  PeerId id = ConnectPair(io_, b, a, a.Listen());
  // 12 full Pongs (and 12 Pings of its own answered) each way.
  ASSERT_TRUE(RunUntil(
      io_,
      [&] {
        auto st = b.host->Stats(id);
        return !st || st->bytes_in > 24u * kMaxPongBytes || !a.disconnected.empty() ||
               !b.disconnected.empty();
      },
      60s));
  EXPECT_TRUE(a.disconnected.empty()) << a.disconnected[0].reason.ToString();
  EXPECT_TRUE(b.disconnected.empty()) << b.disconnected[0].reason.ToString();
}

}  // namespace
}  // namespace tipd::p2p
