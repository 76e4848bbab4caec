// In-process channel managers: several nodes in one test process, connected
// by an in-memory transport, following a ledger the test seals by hand, with
// time that moves only when the test moves it (LDK's functional test utils
// play this part). Everything else is real: LevelDB with synced writes and
// the group committer, signatures, the ledger rules (every node re-executes
// every block into its own chain, as a follower does), the channel state
// machine and the manager with all its parts.
//
//   ChannelNet net;
//   TestNode& a = net.AddNode("a", 1'000'000);
//   TestNode& b = net.AddNode("b", 0);
//   net.Connect(a, b);
//   std::string id = net.OpenChannel(a, b, 10'000);
//   auto r = net.Tip(a, id, 5, "hi");     // runs until answered
//   net.Seal();                           // one block; observers run
//   net.AdvanceMs(30'000);                // timers fire in order
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "ledger/chain.h"
#include "ledger/link.h"
#include "node/channel_manager.h"
#include "node/seams.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "util/clock.h"

namespace tipd::testing {

class ChannelNet;
class TestNode;

// What the fake sequencer does with the next submissions.
enum class LedgerMode {
  kInclude,  // accept into the pending block (Seal includes it)
  kDrop,     // no answer reaches the node: outcome unknown, nothing included
  kRefuse,   // refuse with `refuse_rule` (nothing included)
  kLose,     // answer "accepted", then lose it, as a sequencer killed before
             // it sealed its pending block does (nothing included)
};

// One node's follower view of the fake ledger: its own Chain in the node's
// database, fed every sealed block.
class FakeLedgerLink final : public ledger::LedgerLink {
 public:
  FakeLedgerLink(ChannelNet& net, std::unique_ptr<ledger::Chain> chain);
  const ledger::Chain& chain() const override { return *chain_; }
  bool connected() const override { return connected_; }
  void Submit(const v1::Transaction& tx,
              std::function<void(const ledger::SubmitOutcome&)> done) override;
  WaitId WhenIncluded(const Hash32& tx_id, std::function<void(uint64_t)> done) override;
  void CancelWait(WaitId id) override;
  void AddBlockObserver(std::function<void(const v1::Block&)> observer) override;
  uint64_t NextNonce(const ledger::AccountId& account) override;
  void ResetNonces() override { next_nonce_.clear(); }

  void Apply(const v1::Block& block);
  size_t waits() const { return waits_.size(); }
  bool connected_ = true;
  std::vector<v1::Transaction> submitted;  // everything this node sent

 private:
  ChannelNet& net_;
  std::unique_ptr<ledger::Chain> chain_;
  WaitId next_wait_ = 1;
  std::map<WaitId, std::pair<Hash32, std::function<void(uint64_t)>>> waits_;
  std::vector<std::function<void(const v1::Block&)>> observers_;
  std::map<ledger::AccountId, uint64_t> next_nonce_;
};

// A node's end of the in-memory transport.
class MemoryTransport final : public node::PeerTransport {
 public:
  MemoryTransport(ChannelNet& net, TestNode& self) : net_(net), self_(self) {}
  Status Send(p2p::PeerId peer, const v1::Envelope& env) override;
  void Disconnect(p2p::PeerId peer, const std::string& reason) override;
  std::optional<crypto::PublicKey> PeerKey(p2p::PeerId peer) const override;
  std::optional<p2p::PeerId> FindPeer(const crypto::PublicKey& node) const override;
  size_t SendRoom(p2p::PeerId) const override { return send_room; }
  size_t send_room = 1 << 20;  // tests lower it to make the manager pace

 private:
  ChannelNet& net_;
  TestNode& self_;
};

// Records every event the manager publishes.
class RecordingSink final : public node::EventSink {
 public:
  uint64_t Stage(storage::WriteBatch*, v1::Event* event) override {
    event->set_id(++next_id_);
    return next_id_;
  }
  void Publish(const v1::Event& event) override { published.push_back(event); }
  void Append(v1::Event event) override {
    event.set_id(++next_id_);
    published.push_back(std::move(event));
  }
  void Abandon(uint64_t id) override { abandoned.push_back(id); }
  std::vector<v1::Event> published;
  std::vector<uint64_t> abandoned;

 private:
  uint64_t next_id_ = 0;
};

class TestNode {
 public:
  TestNode(ChannelNet& net, std::string name, crypto::KeyPair key);
  ~TestNode();
  // (Re)creates the manager over the node's database, as a restart does.
  void StartManager();
  void StopManager();

  const std::string name;
  crypto::KeyPair key;
  TempDir dir;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<storage::GroupCommitter> committer;
  std::unique_ptr<FakeLedgerLink> link;
  std::unique_ptr<MemoryTransport> transport;
  RecordingSink events;
  node::ChannelManagerOptions options;
  std::unique_ptr<node::ChannelManager> manager;
  // Every TipUpdate this node ever put on the wire, for audits.
  std::vector<v1::TipUpdate> sent_updates;
  // Every message this node put on the wire, in order (before any tamper).
  std::vector<v1::Envelope> sent;
  // While set, Send refuses as a full p2p queue does (kResourceExhausted).
  bool refuse_sends = false;

 private:
  ChannelNet& net_;
};

struct TipAnswer {
  bool answered = false;
  node::TipOutcome outcome;
  bool ok() const { return answered && !outcome.refusal && outcome.acked; }
};

class ChannelNet {
 public:
  ChannelNet();
  ~ChannelNet();

  // A node funded with `balance` in the genesis. Nodes must be added before
  // the first Seal/OpenChannel (the genesis is written on first use).
  TestNode& AddNode(const std::string& name, uint64_t balance);
  void Connect(TestNode& a, TestNode& b);
  // Restarts `n`'s manager over its database (its sessions end, as when the
  // process stops) and connects it to `peer` again.
  void Restart(TestNode& n, TestNode& peer);
  void Disconnect(TestNode& a, TestNode& b, const std::string& why = "test disconnect");
  bool connected(const TestNode& a, const TestNode& b) const;

  // Runs posted work and commit completions until `done()`; false if it did
  // not happen within a generous real-time bound (a hang, not a timing test).
  bool RunUntil(const std::function<bool()>& done);
  // Runs until nothing is left to do right now.
  void Settle();
  // Seals the sequencer's pending block and feeds it to every node (or only
  // to `only`: the others lag until CatchUp).
  v1::Block Seal();
  v1::Block SealFor(const std::vector<TestNode*>& only);
  void CatchUp(TestNode& n);
  void SealBlocks(int n);
  void AdvanceMs(int64_t ms);

  // Opens a channel a -> b and runs until both see it open (seals for it).
  std::string OpenChannel(TestNode& a, TestNode& b, uint64_t deposit, uint64_t push = 0,
                          uint64_t settle_timeout = 10);
  // Sends one tip and runs until it is answered (or the run bound ends).
  TipAnswer Tip(TestNode& from, const std::string& channel_id, uint64_t amount,
                const std::string& message, const std::string& key = "",
                const std::string& owner = "owner");
  // Sends without waiting; the answer lands in the returned slot.
  std::shared_ptr<TipAnswer> TipAsync(TestNode& from, const std::string& channel_id,
                                      uint64_t amount, const std::string& message,
                                      const std::string& key = "",
                                      const std::string& owner = "owner");
  v1::ChannelApi Channel(TestNode& n, const std::string& channel_id);
  // Starts a channel call (Open, Close, Deposit) with the callback given to
  // `call` and runs until it answers; an unanswered call is a test failure.
  Result<v1::ChannelApi> Await(const std::function<void(node::ChannelCallback)>& call);

  // The sequencer's chain: its state includes the pending block.
  const ledger::Chain& sequencer() const { return *chain_; }
  // A follower of every sealed block: the ledger as nodes see it.
  const ledger::Chain& ledger() const { return *observer_; }
  const ledger::Params& params() const;
  boost::asio::io_context& io() { return io_; }
  ManualClock& clock() { return clock_; }
  ManualTimers& timers() { return timers_; }
  crypto::RandomSource& rng() { return crypto::SystemRng(); }

  LedgerMode mode = LedgerMode::kInclude;
  ledger::TxRule refuse_rule = ledger::TxRule::kFeeTooLow;
  // Peer messages are held (not delivered) while true, or while `hold_if`
  // says so for a message; FlushMessages delivers what was held (and clears
  // both).
  bool hold_messages = false;
  std::function<bool(const TestNode& from, const v1::Envelope& env)> hold_if;
  // While set, rewrites every message in transit (a dishonest peer's node):
  // called for each message before it is held or delivered.
  std::function<void(const TestNode& from, v1::Envelope* env)> tamper;
  void FlushMessages();

  // Internal: used by the seams.
  void Deliver(TestNode& from, p2p::PeerId peer, const v1::Envelope& env);
  void DisconnectSession(TestNode& self, p2p::PeerId peer, const std::string& why);
  // Ends every session of `n` (its process stopped).
  void DropSessions(TestNode& n);
  std::optional<crypto::PublicKey> PeerKey(const TestNode& self, p2p::PeerId peer) const;
  std::optional<p2p::PeerId> FindPeer(const TestNode& self, const crypto::PublicKey& key) const;
  ledger::SubmitOutcome SubmitToSequencer(const v1::Transaction& tx);
  void EnsureGenesis();

 private:
  struct Session {
    TestNode* a;
    TestNode* b;
    p2p::PeerId id_at_a;  // how a names b
    p2p::PeerId id_at_b;
  };
  const Session* FindSession(const TestNode& self, p2p::PeerId peer) const;

  boost::asio::io_context io_;
  ManualClock clock_;
  ManualTimers timers_;
  TempDir seq_dir_;
  crypto::KeyPair sequencer_key_;
  std::vector<std::pair<ledger::AccountId, uint64_t>> allocations_;
  std::optional<ledger::Params> params_;
  std::unique_ptr<storage::Database> seq_db_;
  std::unique_ptr<ledger::Chain> chain_;
  TempDir observer_dir_{"tipd-chnet-observer"};
  std::unique_ptr<storage::Database> observer_db_;
  std::unique_ptr<ledger::Chain> observer_;
  std::vector<std::unique_ptr<TestNode>> nodes_;
  std::vector<Session> sessions_;
  p2p::PeerId next_peer_id_ = 1;
  std::deque<std::function<void()>> held_;
};

}  // namespace tipd::testing
