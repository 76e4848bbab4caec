// LedgerServer's block-serving limits over real p2p Hosts on 127.0.0.1 and
// real LevelDB chains. Nothing sleeps: every wait runs the io_contexts until a
// condition holds or a deadline passes. The server's budget reads a
// ManualClock, so "time passes" only when a test says so.

#include "ledger/server.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <iostream>
#include <memory>

#include <spdlog/spdlog.h>

#include "ledger/client.h"
#include "tests/support/test_support.h"
#include "util/clock.h"

namespace tipd::ledger {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr char kChain[] = "tipd-ledger-server-test";

class CountingRandom final : public crypto::RandomSource {
 public:
  explicit CountingRandom(uint64_t start) : n_(start) {}
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) {
      n_ = n_ * 6364136223846793005ULL + 1442695040888963407ULL;
      b = static_cast<uint8_t>(n_ >> 56);
    }
  }

 private:
  uint64_t n_;
};

crypto::KeyPair Key(uint8_t fill) {
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(Bytes(32, fill)).value());
}

// Runs the given io_contexts until `pred` holds or `timeout` passes.
bool RunUntil(std::vector<asio::io_context*> ios, const std::function<bool()>& pred,
              std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    for (auto* io : ios) {
      io->restart();
      io->poll();
    }
    ios[0]->run_one_for(2ms);
  }
  return true;
}

class LedgerServerTest : public ::testing::Test {
 protected:
  LedgerServerTest() : seed_(tipd::testing::TestSeed()), seq_(Key(9)), rng_(seed_) {
    genesis_.set_chain_id(kChain);
    genesis_.set_sequencer_key(std::string(AsStringView(seq_.XOnly())));
    auto* a = genesis_.add_allocations();
    a->set_account(std::string(AsStringView(Key(1).XOnly())));
    a->set_amount(1000);
    genesis_.set_fee_per_tx(1);
    genesis_.set_min_settle_timeout(1);
    genesis_.set_max_settle_timeout(10);
    genesis_.set_block_interval_ms(100);
    genesis_.set_genesis_time_ms(1000);
  }

  std::unique_ptr<ledger::Chain> OpenChain(const std::string& name) {
    auto db = storage::Database::Open(dir_.path() / name);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    dbs_.push_back(std::move(db).value());
    auto chain = ledger::Chain::Open(dbs_.back().get(), ledger::ValidateGenesis(genesis_).value());
    EXPECT_TRUE(chain.ok()) << chain.status().ToString();
    return std::move(chain).value();
  }

  // The sequencer: a chain of `blocks` empty blocks, its Host listening and
  // the LedgerServer started with `opts`.
  void StartSequencer(int blocks, LedgerServerOptions opts) {
    chain_ = OpenChain("seq");
    for (int b = 0; b < blocks; ++b) {
      auto block = chain_->SealBlock(2000 + b, seq_, rng_);
      ASSERT_TRUE(block.ok()) << block.status().ToString();
    }
    p2p::HostOptions ho;
    ho.chain_id = kChain;
    host_ = std::make_unique<p2p::Host>(io_, seq_, rng_, ho);
    auto port = host_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok());
    port_ = *port;
    opts.block_interval_ms = 3'600'000;  // no sealing during the test
    server_ = std::make_unique<LedgerServer>(io_, *host_, *chain_, seq_, rng_, clock_, opts,
                                             spdlog::default_logger());
    server_->Start();
  }

  // A peer driven by the test: a Host on its own io_context that records
  // what the sequencer sends.
  struct Client {
    Client(asio::io_context& io, uint64_t seed) : rng(seed), key(crypto::KeyPair::Generate(rng)) {
      p2p::HostOptions ho;
      ho.chain_id = kChain;
      p2p::Callbacks cb;
      cb.on_connected = [this](const p2p::PeerInfo& p) { peer = p.id; };
      cb.on_disconnected = [this](const p2p::DisconnectEvent& e) { disconnects.push_back(e); };
      cb.on_message = [this](p2p::PeerId, const v1::Envelope& e) {
        if (e.has_blocks()) {
          ++replies;
          blocks += static_cast<size_t>(e.blocks().blocks_size());
          bytes += e.ByteSizeLong();
        }
      };
      cb.on_error = [this](p2p::PeerId, const v1::Error& e) { errors.push_back(e.code()); };
      host = std::make_unique<p2p::Host>(io, key, rng, ho, cb);
    }
    void GetBlocks(uint64_t from, uint64_t request_id) {
      v1::Envelope env;
      env.mutable_get_blocks()->set_request_id(request_id);
      env.mutable_get_blocks()->set_from_height(from);
      Status s = host->Send(*peer, env);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    CountingRandom rng;
    crypto::KeyPair key;
    std::unique_ptr<p2p::Host> host;
    std::optional<p2p::PeerId> peer;
    std::vector<p2p::DisconnectEvent> disconnects;
    std::vector<std::string> errors;
    size_t replies = 0, blocks = 0, bytes = 0;
  };

  std::unique_ptr<Client> Connect(asio::io_context& io, uint64_t seed) {
    auto c = std::make_unique<Client>(io, seed);
    EXPECT_TRUE(c->host->Connect("127.0.0.1", port_, seq_.public_key()).ok());
    EXPECT_TRUE(RunUntil({&io_, &io}, [&] { return c->peer.has_value(); }));
    return c;
  }

  // The sequencer's view of its single inbound peer.
  std::optional<p2p::PeerStats> ServerSideStats() {
    auto peers = host_->Peers();
    if (peers.size() != 1) return std::nullopt;
    return host_->Stats(peers[0].id);
  }

  // Replays with TIPD_TEST_SEED; printed when a test fails.
  void TearDown() override {
    if (HasFailure()) std::cerr << "TIPD_TEST_SEED=" << seed_ << "\n";
  }

  const uint64_t seed_;
  tipd::testing::TempDir dir_;
  crypto::KeyPair seq_;
  CountingRandom rng_;
  v1::GenesisParams genesis_;
  std::vector<std::unique_ptr<storage::Database>> dbs_;
  std::unique_ptr<ledger::Chain> chain_;
  asio::io_context io_;
  ManualClock clock_;
  std::unique_ptr<p2p::Host> host_;
  uint16_t port_ = 0;
  std::unique_ptr<LedgerServer> server_;
};

TEST_F(LedgerServerTest, FollowerCatchesUpFromZeroThroughTheBudget) {
  // A budget far below the chain: the catch-up must wait for refills, and
  // must still complete once time passes.
  LedgerServerOptions opts;
  opts.serve_burst_bytes = 20'000;
  opts.serve_bytes_per_second = 100'000;
  StartSequencer(600, opts);
  ASSERT_GT(chain_->height(), 0u);

  auto follower_chain = OpenChain("follower");
  CountingRandom frng(seed_ + 1);
  p2p::HostOptions ho;
  ho.chain_id = kChain;
  p2p::Host fhost(io_, Key(3), frng, ho);
  LedgerClient client(fhost, *follower_chain, seq_.public_key(), "127.0.0.1", port_,
                      spdlog::default_logger());
  std::vector<p2p::DisconnectEvent> drops;
  p2p::Callbacks cb;
  cb.on_connected = [&](const p2p::PeerInfo& p) { client.OnConnected(p); };
  cb.on_disconnected = [&](const p2p::DisconnectEvent& e) {
    drops.push_back(e);
    client.OnDisconnected(e);
  };
  cb.on_message = [&](p2p::PeerId id, const v1::Envelope& e) { client.OnMessage(id, e); };
  fhost.SetCallbacks(cb);
  ASSERT_TRUE(client.Start().ok());

  // With the clock frozen the follower gets the burst and then waits.
  ASSERT_TRUE(RunUntil({&io_}, [&] { return server_->waiting_requests() > 0; }));
  uint64_t stalled_at = client.height();
  EXPECT_GT(stalled_at, 0u);
  EXPECT_LT(stalled_at, chain_->height());

  // Time passes (10 ms per turn of the loop): it catches up to the tip.
  ASSERT_TRUE(RunUntil(
      {&io_},
      [&] {
        clock_.AdvanceMs(10);
        return client.height() == chain_->height();
      },
      30s))
      << client.height() << " of " << chain_->height();
  EXPECT_TRUE(client.health().ok());
  EXPECT_EQ(follower_chain->state_hash(), chain_->state_hash());
  EXPECT_TRUE(drops.empty()) << drops[0].reason.ToString();
}

TEST_F(LedgerServerTest, GetBlocksSpamIsThrottledThenRefused) {
  LedgerServerOptions opts;
  opts.serve_burst_bytes = 100'000;
  opts.serve_bytes_per_second = 10'000;
  opts.serve_max_waiting = 4;
  StartSequencer(600, opts);
  asio::io_context spam_io;
  auto spam = Connect(spam_io, 7);

  // The clock never moves: only the burst is ever served.
  for (uint64_t i = 0; i < 50; ++i) spam->GetBlocks(1, i);
  ASSERT_TRUE(RunUntil({&io_, &spam_io}, [&] { return !spam->disconnects.empty(); }));
  ASSERT_EQ(spam->errors.size(), 1u);
  EXPECT_EQ(spam->errors[0], kRateLimitedCode);
  EXPECT_EQ(spam->disconnects[0].reason.code, p2p::DisconnectCode::kRemoteError)
      << spam->disconnects[0].reason.ToString();
  // At most the burst plus the one reply that overdraws it.
  EXPECT_LE(spam->bytes, opts.serve_burst_bytes + 65'535) << spam->replies << " replies";
  EXPECT_LT(spam->replies, 50u);

  // An honest peer connecting afterwards is served at once.
  asio::io_context ok_io;
  auto ok = Connect(ok_io, 8);
  ok->GetBlocks(1, 1);
  ASSERT_TRUE(RunUntil({&io_, &ok_io}, [&] { return ok->replies == 1; }));
  EXPECT_GT(ok->blocks, 0u);
}

TEST_F(LedgerServerTest, PeerThatDoesNotReadCannotGrowTheSendQueue) {
  // Budget and waiting room large: only the send-queue gate is tested.
  LedgerServerOptions opts;
  opts.serve_burst_bytes = 1 << 30;
  opts.serve_bytes_per_second = 1 << 30;
  opts.serve_max_waiting = 1000;
  opts.serve_max_queued_bytes = 256 << 10;
  StartSequencer(600, opts);
  asio::io_context spam_io;
  auto spam = Connect(spam_io, 7);

  // 300 requests for ~60 KB each (18 MB: more than the kernel buffers and
  // the p2p queue hold). Pump the spammer until its requests are written,
  // then it stops reading.
  constexpr size_t kRequests = 300;
  for (uint64_t i = 0; i < kRequests; ++i) spam->GetBlocks(1, i);
  ASSERT_TRUE(RunUntil({&io_, &spam_io}, [&] {
    auto st = spam->host->Stats(*spam->peer);
    return st && st->send_queue_messages == 0;
  }));
  size_t max_queued = 0;
  ASSERT_TRUE(RunUntil(
      {&io_},
      [&] {
        if (auto st = ServerSideStats()) {
          max_queued = std::max(max_queued, st->send_queue_bytes);
        }
        // Every request read (Init + kRequests) and the
        // gate holding some of them back.
        auto st = ServerSideStats();
        return st && st->messages_in >= kRequests + 1 && server_->waiting_requests() > 0;
      },
      20s))
      << "max queued " << max_queued;
  // The queue stays within the gate plus the one reply that crossed it.
  EXPECT_LE(max_queued, opts.serve_max_queued_bytes + 65'535 + 64);

  // Once it reads again every request is answered, in order, nothing lost.
  ASSERT_TRUE(RunUntil(
      {&io_, &spam_io}, [&] { return spam->replies == kRequests; }, 30s))
      << spam->replies;
  EXPECT_TRUE(spam->disconnects.empty());
}

}  // namespace
}  // namespace tipd::ledger
