#include "tests/unit/node/channel_harness.h"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>

#include "ledger/codec.h"
#include "ledger/genesis.h"

namespace tipd::testing {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// FakeLedgerLink

FakeLedgerLink::FakeLedgerLink(ChannelNet& net, std::unique_ptr<ledger::Chain> chain)
    : net_(net), chain_(std::move(chain)) {}

void FakeLedgerLink::Submit(const v1::Transaction& tx,
                            std::function<void(const ledger::SubmitOutcome&)> done) {
  submitted.push_back(tx);
  ledger::SubmitOutcome out =
      connected_ ? net_.SubmitToSequencer(tx) : ledger::SubmitOutcome::Unknown("not connected");
  // Answers arrive later, as from the network.
  boost::asio::post(net_.io(), [done = std::move(done), out] { done(out); });
}

ledger::LedgerLink::WaitId FakeLedgerLink::WhenIncluded(const Hash32& tx_id,
                                                        std::function<void(uint64_t)> done) {
  auto loc = chain_->FindTransaction(tx_id);
  if (loc.ok() && loc->has_value()) {
    done((*loc)->height());
    return 0;
  }
  const WaitId id = next_wait_++;
  waits_.emplace(id, std::make_pair(tx_id, std::move(done)));
  return id;
}

void FakeLedgerLink::CancelWait(WaitId id) { waits_.erase(id); }

void FakeLedgerLink::AddBlockObserver(std::function<void(const v1::Block&)> observer) {
  observers_.push_back(std::move(observer));
}

uint64_t FakeLedgerLink::NextNonce(const ledger::AccountId& account) {
  const ledger::Account* a = chain_->state().FindAccount(account);
  uint64_t& next = next_nonce_[account];
  next = std::max(next, a ? a->nonce : uint64_t{0});
  return next++;
}

void FakeLedgerLink::Apply(const v1::Block& block) {
  Status s = chain_->AcceptBlock(block);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t h = block.header().height();
  std::set<Hash32> ids;
  for (const auto& tx : block.transactions()) ids.insert(*ledger::TransactionId(tx));
  std::vector<std::function<void(uint64_t)>> ready;
  for (auto it = waits_.begin(); it != waits_.end();) {
    if (ids.count(it->second.first)) {
      ready.push_back(std::move(it->second.second));
      it = waits_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& d : ready) d(h);
  for (auto& o : observers_) o(block);
}

// ---------------------------------------------------------------------------
// MemoryTransport

Status MemoryTransport::Send(p2p::PeerId peer, const v1::Envelope& env) {
  if (!net_.PeerKey(self_, peer)) return Status::NotFound("no session " + std::to_string(peer));
  if (self_.refuse_sends) return Status::ResourceExhausted("send queue full (test)");
  if (env.has_tip_update()) self_.sent_updates.push_back(env.tip_update());
  self_.sent.push_back(env);
  net_.Deliver(self_, peer, env);
  return Status::Ok();
}

void MemoryTransport::Disconnect(p2p::PeerId peer, const std::string& reason) {
  // Like p2p::Host: the disconnect is reported later, on the event thread.
  boost::asio::post(net_.io(), [net = &net_, self = &self_, peer, reason] {
    net->DisconnectSession(*self, peer, reason);
  });
}

std::optional<crypto::PublicKey> MemoryTransport::PeerKey(p2p::PeerId peer) const {
  return net_.PeerKey(self_, peer);
}

std::optional<p2p::PeerId> MemoryTransport::FindPeer(const crypto::PublicKey& node) const {
  return net_.FindPeer(self_, node);
}

// ---------------------------------------------------------------------------
// TestNode

TestNode::TestNode(ChannelNet& net, std::string n, crypto::KeyPair k)
    : name(std::move(n)), key(std::move(k)), dir("tipd-chnet-" + name), net_(net) {
  db = std::move(storage::Database::Open(dir.path() / "db").value());
  committer = std::make_unique<storage::GroupCommitter>(db.get());
  transport = std::make_unique<MemoryTransport>(net, *this);
  options.ack_wait = 30'000ms;
  options.open.negotiation_timeout = 30'000ms;
  // Tests fund what peers ask unless they test the policy itself.
  options.open.max_accept_deposit = UINT64_MAX;
}

TestNode::~TestNode() {
  manager.reset();
  committer->Stop();
}

void TestNode::StartManager() {
  net_.EnsureGenesis();
  if (!link) {
    auto chain = ledger::Chain::Open(db.get(), net_.params());
    ASSERT_TRUE(chain.ok()) << chain.status().ToString();
    link = std::make_unique<FakeLedgerLink>(net_, std::move(*chain));
    // Catch up with blocks sealed before this node's link existed.
    for (uint64_t h = link->chain().height() + 1; h <= net_.sequencer().height(); ++h) {
      link->Apply(*net_.sequencer().GetBlock(h).value());
    }
  }
  manager =
      std::make_unique<node::ChannelManager>(net_.io(), key, *transport, *link, *db, *committer,
                                             net_.clock(), net_.timers(), net_.rng(), options);
  manager->SetEventSink(&events);
  Status s = manager->Start();
  ASSERT_TRUE(s.ok()) << s.ToString();
}

void TestNode::StopManager() {
  net_.Settle();
  net_.DropSessions(*this);
  manager.reset();
}

// ---------------------------------------------------------------------------
// ChannelNet

ChannelNet::ChannelNet()
    : timers_(clock_),
      seq_dir_("tipd-chnet-seq"),
      sequencer_key_(crypto::KeyPair::Generate(crypto::SystemRng())) {}

ChannelNet::~ChannelNet() {
  for (auto& n : nodes_) n->manager.reset();
  nodes_.clear();
}

TestNode& ChannelNet::AddNode(const std::string& name, uint64_t balance) {
  EXPECT_FALSE(params_.has_value()) << "add nodes before the genesis is written";
  auto key = crypto::KeyPair::Generate(crypto::SystemRng());
  if (balance > 0) allocations_.emplace_back(key.XOnly(), balance);
  nodes_.push_back(std::make_unique<TestNode>(*this, name, std::move(key)));
  return *nodes_.back();
}

void ChannelNet::EnsureGenesis() {
  if (params_) return;
  v1::GenesisParams g =
      ledger::MakeDevnetGenesis("tipd-test", sequencer_key_.XOnly(), allocations_, clock_.NowMs());
  g.set_fee_per_tx(1);
  g.set_min_settle_timeout(3);
  g.set_max_settle_timeout(1000);
  g.set_block_interval_ms(1000);
  params_ = ledger::ValidateGenesis(g).value();
  seq_db_ = std::move(storage::Database::Open(seq_dir_.path() / "db").value());
  chain_ = std::move(ledger::Chain::Open(seq_db_.get(), *params_).value());
  observer_db_ = std::move(storage::Database::Open(observer_dir_.path() / "db").value());
  observer_ = std::move(ledger::Chain::Open(observer_db_.get(), *params_).value());
}

const ledger::Params& ChannelNet::params() const { return *params_; }

ledger::SubmitOutcome ChannelNet::SubmitToSequencer(const v1::Transaction& tx) {
  const Hash32 id = *ledger::TransactionId(tx);
  switch (mode) {
    case LedgerMode::kDrop:
      return ledger::SubmitOutcome::Unknown("the test dropped the answer", id);
    case LedgerMode::kRefuse:
      return ledger::SubmitOutcome::Refused(refuse_rule, "the test refused it", id);
    case LedgerMode::kLose: {
      ledger::SubmitOutcome lost;
      lost.kind = ledger::SubmitOutcome::Kind::kAccepted;
      lost.tx_id = id;
      return lost;
    }
    case LedgerMode::kInclude:
      break;
  }
  if (auto e = chain_->AddToPending(tx)) {
    return ledger::SubmitOutcome::Refused(e->rule, e->reason, id);
  }
  ledger::SubmitOutcome out;
  out.kind = ledger::SubmitOutcome::Kind::kAccepted;
  out.tx_id = id;
  return out;
}

v1::Block ChannelNet::Seal() {
  std::vector<TestNode*> all;
  for (auto& n : nodes_) all.push_back(n.get());
  return SealFor(all);
}

v1::Block ChannelNet::SealFor(const std::vector<TestNode*>& only) {
  EnsureGenesis();
  clock_.AdvanceMs(1);
  auto block =
      chain_->SealBlock(static_cast<uint64_t>(clock_.NowMs()), sequencer_key_, crypto::SystemRng());
  EXPECT_TRUE(block.ok()) << block.status().ToString();
  Status s = observer_->AcceptBlock(*block);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (TestNode* n : only) CatchUp(*n);
  Settle();
  return *block;
}

void ChannelNet::CatchUp(TestNode& n) {
  if (!n.link) return;
  for (uint64_t h = n.link->chain().height() + 1; h <= chain_->height(); ++h) {
    n.link->Apply(*chain_->GetBlock(h).value());
  }
  Settle();
}

void ChannelNet::SealBlocks(int n) {
  for (int i = 0; i < n; ++i) Seal();
}

void ChannelNet::AdvanceMs(int64_t ms) {
  timers_.AdvanceMs(ms);
  Settle();
}

bool ChannelNet::RunUntil(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    io_.restart();
    if (io_.poll() == 0) {
      // Commit completions come from the committer's thread.
      io_.restart();
      io_.run_one_for(2ms);
    }
  }
  return true;
}

void ChannelNet::Settle() {
  // Quiet when no posted work is left and no commit is outstanding (a commit
  // posts its completion to the io_context before it stops counting).
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  auto commits_outstanding = [&] {
    for (auto& n : nodes_) {
      if (n->committer->outstanding() > 0) return true;
    }
    return false;
  };
  while (std::chrono::steady_clock::now() < deadline) {
    io_.restart();
    if (io_.poll() > 0) continue;
    if (!commits_outstanding()) {
      io_.restart();
      if (io_.poll() == 0) return;
      continue;
    }
    io_.restart();
    io_.run_one_for(1ms);
  }
  ADD_FAILURE() << "the network never went quiet";
}

void ChannelNet::Restart(TestNode& n, TestNode& peer) {
  n.StopManager();
  n.StartManager();
  Connect(n, peer);
}

void ChannelNet::Connect(TestNode& a, TestNode& b) {
  Session s{&a, &b, next_peer_id_++, next_peer_id_++};
  sessions_.push_back(s);
  p2p::PeerInfo at_a;
  at_a.id = s.id_at_a;
  at_a.node_id = b.key.public_key();
  at_a.direction = p2p::Direction::kOutbound;
  at_a.address = b.name;
  p2p::PeerInfo at_b;
  at_b.id = s.id_at_b;
  at_b.node_id = a.key.public_key();
  at_b.direction = p2p::Direction::kInbound;
  at_b.address = a.name;
  if (a.manager) a.manager->OnPeerConnected(at_a);
  if (b.manager) b.manager->OnPeerConnected(at_b);
  Settle();
}

const ChannelNet::Session* ChannelNet::FindSession(const TestNode& self, p2p::PeerId peer) const {
  for (const Session& s : sessions_) {
    if ((s.a == &self && s.id_at_a == peer) || (s.b == &self && s.id_at_b == peer)) return &s;
  }
  return nullptr;
}

bool ChannelNet::connected(const TestNode& a, const TestNode& b) const {
  for (const Session& s : sessions_) {
    if ((s.a == &a && s.b == &b) || (s.a == &b && s.b == &a)) return true;
  }
  return false;
}

std::optional<crypto::PublicKey> ChannelNet::PeerKey(const TestNode& self, p2p::PeerId peer) const {
  const Session* s = FindSession(self, peer);
  if (s == nullptr) return std::nullopt;
  return (s->a == &self ? s->b : s->a)->key.public_key();
}

std::optional<p2p::PeerId> ChannelNet::FindPeer(const TestNode& self,
                                                const crypto::PublicKey& key) const {
  for (const Session& s : sessions_) {
    if (s.a == &self && s.b->key.public_key() == key) return s.id_at_a;
    if (s.b == &self && s.a->key.public_key() == key) return s.id_at_b;
  }
  return std::nullopt;
}

void ChannelNet::Deliver(TestNode& from, p2p::PeerId peer, const v1::Envelope& env) {
  const Session* s = FindSession(from, peer);
  if (s == nullptr) return;
  TestNode* to = s->a == &from ? s->b : s->a;
  const p2p::PeerId id_at_to = s->a == &from ? s->id_at_b : s->id_at_a;
  // Through the bytes, as on the wire.
  std::string bytes = env.SerializeAsString();
  if (tamper) {
    v1::Envelope changed = env;
    tamper(from, &changed);
    bytes = changed.SerializeAsString();
  }
  auto deliver = [this, to, id_at_to, bytes, from_ptr = &from] {
    // Dropped if the session ended meanwhile.
    if (!FindPeer(*to, from_ptr->key.public_key()) ||
        *FindPeer(*to, from_ptr->key.public_key()) != id_at_to) {
      return;
    }
    v1::Envelope copy;
    ASSERT_TRUE(copy.ParseFromString(bytes));
    if (!to->manager) return;
    if (copy.has_error()) {
      to->manager->OnPeerError(id_at_to, copy.error());
      return;
    }
    to->manager->OnMessage(id_at_to, copy);
  };
  if (hold_messages || (hold_if && hold_if(from, env))) {
    held_.push_back(std::move(deliver));
  } else {
    boost::asio::post(io_, std::move(deliver));
  }
}

void ChannelNet::FlushMessages() {
  hold_messages = false;
  hold_if = nullptr;
  while (!held_.empty()) {
    auto f = std::move(held_.front());
    held_.pop_front();
    boost::asio::post(io_, std::move(f));
  }
  Settle();
}

void ChannelNet::DisconnectSession(TestNode& self, p2p::PeerId peer, const std::string& why) {
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (!((it->a == &self && it->id_at_a == peer) || (it->b == &self && it->id_at_b == peer))) {
      continue;
    }
    Session s = *it;
    sessions_.erase(it);
    for (auto [node, id, other] :
         {std::tuple{s.a, s.id_at_a, s.b}, std::tuple{s.b, s.id_at_b, s.a}}) {
      if (!node->manager) continue;
      p2p::DisconnectEvent ev;
      ev.id = id;
      ev.node_id = other->key.public_key();
      ev.was_connected = true;
      ev.address = other->name;
      ev.reason = {p2p::DisconnectCode::kLocal, why};
      node->manager->OnPeerDisconnected(ev);
    }
    return;
  }
}

void ChannelNet::DropSessions(TestNode& n) {
  for (;;) {
    auto it = std::find_if(sessions_.begin(), sessions_.end(),
                           [&](const Session& s) { return s.a == &n || s.b == &n; });
    if (it == sessions_.end()) break;
    DisconnectSession(n, it->a == &n ? it->id_at_a : it->id_at_b, "process stopped");
  }
  Settle();
}

void ChannelNet::Disconnect(TestNode& a, TestNode& b, const std::string& why) {
  auto id = FindPeer(a, b.key.public_key());
  if (id) DisconnectSession(a, *id, why);
  Settle();
}

std::string ChannelNet::OpenChannel(TestNode& a, TestNode& b, uint64_t deposit, uint64_t push,
                                    uint64_t settle_timeout) {
  std::optional<Result<v1::ChannelApi>> answer;
  a.manager->Open(b.key.public_key(), deposit, push, settle_timeout, 60'000ms,
                  [&](Result<v1::ChannelApi> ch, std::string) { answer = std::move(ch); });
  // Negotiate, persist, submit; then the block opens it.
  Settle();
  Seal();
  EXPECT_TRUE(RunUntil([&] { return answer.has_value(); })) << "open never answered";
  if (!answer || !answer->ok()) {
    ADD_FAILURE() << "open failed: " << (answer ? answer->status().ToString() : "no answer");
    return "";
  }
  EXPECT_EQ((*answer)->state(), "open");
  std::string id = std::string(AsStringView(*HexDecode((*answer)->channel_id())));
  // Both sides reestablish once open.
  Settle();
  return id;
}

std::shared_ptr<TipAnswer> ChannelNet::TipAsync(TestNode& from, const std::string& channel_id,
                                                uint64_t amount, const std::string& message,
                                                const std::string& key, const std::string& owner) {
  auto slot = std::make_shared<TipAnswer>();
  node::TipRequestIn req;
  req.channel_id = channel_id;
  req.draft.amount = amount;
  req.draft.message = message;
  req.idempotency_key = key;
  req.key_owner = owner;
  from.manager->SendTip(std::move(req), [slot](node::TipOutcome r) {
    slot->answered = true;
    slot->outcome = std::move(r);
  });
  return slot;
}

TipAnswer ChannelNet::Tip(TestNode& from, const std::string& channel_id, uint64_t amount,
                          const std::string& message, const std::string& key,
                          const std::string& owner) {
  auto slot = TipAsync(from, channel_id, amount, message, key, owner);
  EXPECT_TRUE(RunUntil([&] { return slot->answered; })) << "tip never answered";
  return *slot;
}

Result<v1::ChannelApi> ChannelNet::Await(const std::function<void(node::ChannelCallback)>& call) {
  std::optional<Result<v1::ChannelApi>> answer;
  call([&answer](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  if (!RunUntil([&] { return answer.has_value(); })) {
    ADD_FAILURE() << "the channel call was never answered";
    return Status::Unavailable("never answered");
  }
  return std::move(*answer);
}

v1::ChannelApi ChannelNet::Channel(TestNode& n, const std::string& channel_id) {
  auto ch = n.manager->GetChannel(channel_id);
  EXPECT_TRUE(ch.ok()) << ch.status().ToString();
  return ch.ok() ? *ch : v1::ChannelApi{};
}

}  // namespace tipd::testing
