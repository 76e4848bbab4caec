#include "ledger/server.h"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio/post.hpp>
#include <optional>

namespace tipd::ledger {

namespace {
constexpr size_t kFrameBudget = 60'000;
constexpr size_t kMaxBlocksPerReply = 256;
}  // namespace

LedgerServer::LedgerServer(boost::asio::io_context& io, p2p::Host& host, ledger::Chain& chain,
                           const crypto::KeyPair& sequencer, crypto::RandomSource& rng,
                           const Clock& clock, LedgerServerOptions options,
                           std::shared_ptr<spdlog::logger> log)
    : io_(io),
      host_(host),
      chain_(chain),
      sequencer_(sequencer),
      rng_(rng),
      clock_(clock),
      options_(options),
      timer_(io),
      serve_timer_(io),
      log_(std::move(log)) {}

LedgerServer::~LedgerServer() { *alive_ = false; }

void LedgerServer::Start() {
  p2p::Callbacks cb;
  cb.on_message = [this](p2p::PeerId peer, const v1::Envelope& env) { OnMessage(peer, env); };
  cb.on_disconnected = [this](const p2p::DisconnectEvent& ev) {
    subscribers_.erase(ev.id);
    budgets_.erase(ev.id);
  };
  cb.on_connected = [this](const p2p::PeerInfo& info) {
    log_->info("peer {} connected from {}", info.node_id.Hex().substr(0, 16), info.address);
  };
  host_.SetCallbacks(std::move(cb));
  ScheduleTimer();
}

void LedgerServer::Stop() {
  if (stopped_) return;
  if (chain_.pending_count() > 0) SealNow();
  stopped_ = true;
  timer_.cancel();
  serve_timer_.cancel();
}

void LedgerServer::ScheduleTimer() {
  if (stopped_ || options_.seal_on_demand) return;
  // Deadlines advance by whole intervals, so block times do not drift by the
  // time each seal takes.
  auto interval = std::chrono::milliseconds(std::max<uint64_t>(options_.block_interval_ms, 1));
  auto now = std::chrono::steady_clock::now();
  bool first = next_seal_ == std::chrono::steady_clock::time_point{};
  next_seal_ = first || next_seal_ + interval < now ? now + interval : next_seal_ + interval;
  timer_.expires_at(next_seal_);
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!*alive || ec || stopped_) return;
    SealNow();
    ScheduleTimer();
  });
}

void LedgerServer::ScheduleSealSoon() {
  if (seal_scheduled_) return;
  seal_scheduled_ = true;
  // Posted, so every SubmitTx already read in this turn joins the block.
  boost::asio::post(io_, [this, alive = alive_] {
    if (!*alive) return;
    seal_scheduled_ = false;
    if (!stopped_ && chain_.pending_count() > 0) SealNow();
  });
}

void LedgerServer::SealNow() {
  if (!chain_.health().ok()) return;
  auto block = chain_.SealBlock(static_cast<uint64_t>(clock_.NowMs()), sequencer_, rng_);
  pending_bytes_ = 0;
  if (!block.ok()) {
    log_->critical("cannot seal block {}: {} — the ledger halts", chain_.height() + 1,
                   block.status().ToString());
    return;
  }
  const auto& h = block->header();
  if (h.tx_count() > 0) {
    log_->info("sealed block {} with {} transaction(s) state {}", h.height(), h.tx_count(),
               HexEncode(chain_.state_hash()));
  } else {
    log_->debug("sealed empty block {}", h.height());
  }
  Broadcast(*block);
}

void LedgerServer::Broadcast(const v1::Block& block) {
  v1::Envelope env;
  *env.mutable_new_block()->mutable_block() = block;
  for (p2p::PeerId peer : subscribers_) {
    Status s = host_.Send(peer, env);
    if (!s.ok())
      log_->debug("block {} not pushed to peer {}: {}", block.header().height(), peer,
                  s.ToString());
  }
}

void LedgerServer::Reply(p2p::PeerId peer, const v1::Envelope& env) {
  Status s = host_.Send(peer, env);
  if (!s.ok()) log_->warn("reply to peer {} dropped: {}", peer, s.ToString());
}

void LedgerServer::OnMessage(p2p::PeerId peer, const v1::Envelope& env) {
  switch (env.msg_case()) {
    case v1::Envelope::kSubmitTx:
      return HandleSubmit(peer, env.submit_tx());
    case v1::Envelope::kGetBlocks:
      return HandleGetBlocks(peer, env.get_blocks());
    case v1::Envelope::kSubscribeBlocks: {
      subscribers_.insert(peer);
      // Always answered with a Blocks reply (empty when up to date) carrying
      // what the subscriber lacks and the tip height.
      v1::GetBlocks catch_up;
      catch_up.set_from_height(env.subscribe_blocks().from_height());
      HandleGetBlocks(peer, catch_up);
      return;
    }
    case v1::Envelope::kGetAccount:
      return HandleGetAccount(peer, env.get_account());
    case v1::Envelope::kGetChannel:
      return HandleGetChannel(peer, env.get_channel());
    default: {
      // Only the ledger protocol is spoken here.
      Status st = host_.Disconnect(
          peer, std::string("unsupported message on the ledger protocol (") +
                    env.GetDescriptor()->FindFieldByNumber(env.msg_case())->name() + ")");
      (void)st;
      return;
    }
  }
}

void LedgerServer::HandleSubmit(p2p::PeerId peer, const v1::SubmitTx& req) {
  v1::Envelope out;
  v1::SubmitTxResult* res = out.mutable_submit_tx_result();
  res->set_request_id(req.request_id());
  size_t size = req.tx().ByteSizeLong();
  if (size > options_.max_block_tx_bytes) {
    res->set_accepted(false);
    res->set_code("TOO_LARGE");
    res->set_message("transaction of " + std::to_string(size) + " bytes exceeds the block limit");
    return Reply(peer, out);
  }
  if (pending_bytes_ + size > options_.max_block_tx_bytes) SealNow();
  if (auto e = chain_.AddToPending(req.tx())) {
    res->set_accepted(false);
    res->set_code(ledger::TxRuleCode(e->rule));
    res->set_message(e->reason);
    log_->debug("rejected transaction from peer {}: {}", peer, e->ToString());
    return Reply(peer, out);
  }
  pending_bytes_ += size;
  res->set_accepted(true);
  auto id = ledger::TransactionId(req.tx());
  res->set_tx_id(std::string(AsStringView(*id)));
  Reply(peer, out);
  if (options_.seal_on_submit) ScheduleSealSoon();
}

Status CollectBlocks(const ledger::Chain& chain, uint64_t from, size_t max_blocks, size_t max_bytes,
                     v1::Blocks* out) {
  size_t bytes = 0;
  for (uint64_t h = std::max<uint64_t>(from, 1); h <= chain.height(); ++h) {
    if (static_cast<size_t>(out->blocks_size()) >= max_blocks) break;
    TIPD_ASSIGN_OR_RETURN(std::optional<v1::Block> block, chain.GetBlock(h));
    if (!block) return Status::Corruption("block " + std::to_string(h) + " missing from the store");
    size_t size = block->ByteSizeLong() + 8;
    if (out->blocks_size() > 0 && bytes + size > max_bytes) break;
    bytes += size;
    *out->add_blocks() = std::move(*block);
  }
  out->set_tip_height(chain.height());
  return Status::Ok();
}

bool LedgerServer::CanServe(p2p::PeerId peer, ServeBudget& b) {
  auto now = clock_.SteadyNow();
  double elapsed = std::chrono::duration<double>(now - b.refilled_at).count();
  if (elapsed > 0) {
    b.tokens = std::min(double(options_.serve_burst_bytes),
                        b.tokens + elapsed * double(options_.serve_bytes_per_second));
    b.refilled_at = now;
  }
  if (b.tokens <= 0) return false;
  auto stats = host_.Stats(peer);
  return stats && stats->send_queue_bytes <= options_.serve_max_queued_bytes;
}

void LedgerServer::HandleGetBlocks(p2p::PeerId peer, const v1::GetBlocks& req) {
  auto [it, fresh] = budgets_.try_emplace(peer);
  ServeBudget& b = it->second;
  if (fresh) {
    b.tokens = double(options_.serve_burst_bytes);
    b.refilled_at = clock_.SteadyNow();
  }
  if (b.waiting.empty() && CanServe(peer, b)) return ServeBlocks(peer, req);
  if (b.waiting.size() >= options_.serve_max_waiting) {
    std::string why = "more than " + std::to_string(options_.serve_max_waiting) +
                      " block requests waiting for the serving budget of " +
                      std::to_string(options_.serve_bytes_per_second) +
                      " bytes/s; send one GetBlocks at a time";
    log_->warn("peer {}: {}; disconnecting", peer, why);
    v1::Envelope err;
    err.mutable_error()->set_code(kRateLimitedCode);
    err.mutable_error()->set_message(why);
    Status s = host_.Send(peer, err);
    (void)s;  // a full queue: the disconnect alone tells it
    s = host_.Disconnect(peer, "rate limited: " + why);
    (void)s;
    return;
  }
  b.waiting.push_back(req);
  ArmServeTimer();
}

size_t LedgerServer::waiting_requests() const {
  size_t n = 0;
  for (const auto& [peer, b] : budgets_) n += b.waiting.size();
  return n;
}

void LedgerServer::ServeWaiting() {
  for (auto it = budgets_.begin(); it != budgets_.end();) {
    p2p::PeerId peer = it->first;
    ServeBudget& b = it->second;
    if (!host_.Stats(peer)) {  // gone (on_disconnected erases it too)
      it = budgets_.erase(it);
      continue;
    }
    while (!b.waiting.empty() && CanServe(peer, b)) {
      v1::GetBlocks req = std::move(b.waiting.front());
      b.waiting.pop_front();
      ServeBlocks(peer, req);
    }
    ++it;
  }
  ArmServeTimer();
}

void LedgerServer::ArmServeTimer() {
  if (serve_timer_armed_ || stopped_) return;
  // The soonest a waiting request can be served: when its bucket is back
  // above zero; a peer blocked by its send queue is polled.
  std::optional<std::chrono::steady_clock::duration> wait;
  auto now = clock_.SteadyNow();
  for (const auto& [peer, b] : budgets_) {
    if (b.waiting.empty()) continue;
    double debt = -(b.tokens + std::chrono::duration<double>(now - b.refilled_at).count() *
                                   double(options_.serve_bytes_per_second));
    auto d = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(
            std::max(debt, 0.0) / double(std::max<size_t>(options_.serve_bytes_per_second, 1))));
    d = std::clamp<std::chrono::steady_clock::duration>(d, std::chrono::milliseconds(5),
                                                        std::chrono::seconds(1));
    if (!wait || d < *wait) wait = d;
  }
  if (!wait) return;
  serve_timer_armed_ = true;
  serve_timer_.expires_after(*wait);
  serve_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!*alive) return;
    serve_timer_armed_ = false;
    if (ec || stopped_) return;
    ServeWaiting();
  });
}

void LedgerServer::ServeBlocks(p2p::PeerId peer, const v1::GetBlocks& req) {
  v1::Envelope out;
  v1::Blocks* res = out.mutable_blocks();
  res->set_request_id(req.request_id());
  size_t max_blocks = req.max_blocks() == 0
                          ? kMaxBlocksPerReply
                          : std::min<size_t>(req.max_blocks(), kMaxBlocksPerReply);
  Status s = CollectBlocks(chain_, req.from_height(), max_blocks, kFrameBudget, res);
  if (!s.ok()) {
    log_->error("serving blocks from {}: {}", req.from_height(), s.ToString());
    res->clear_blocks();
  }
  if (auto it = budgets_.find(peer); it != budgets_.end()) {
    it->second.tokens -= double(out.ByteSizeLong());
  }
  Reply(peer, out);
}

void LedgerServer::HandleGetAccount(p2p::PeerId peer, const v1::GetAccount& req) {
  v1::Envelope out;
  v1::AccountInfo* res = out.mutable_account_info();
  res->set_request_id(req.request_id());
  res->set_height(chain_.height());
  ledger::AccountId id{};
  if (req.account().size() == id.size()) {
    std::copy(req.account().begin(), req.account().end(), id.begin());
    auto rec = chain_.GetStoredAccount(id);
    if (rec.ok() && rec->has_value()) {
      res->set_found(true);
      *res->mutable_state() = **rec;
    }
  }
  Reply(peer, out);
}

void LedgerServer::HandleGetChannel(p2p::PeerId peer, const v1::GetChannel& req) {
  v1::Envelope out;
  v1::ChannelInfo* res = out.mutable_channel_info();
  res->set_request_id(req.request_id());
  res->set_height(chain_.height());
  ledger::ChannelId id{};
  if (req.channel_id().size() == id.size()) {
    std::copy(req.channel_id().begin(), req.channel_id().end(), id.begin());
    auto rec = chain_.GetStoredChannel(id);
    if (rec.ok() && rec->has_value()) {
      res->set_found(true);
      *res->mutable_state() = **rec;
    }
  }
  Reply(peer, out);
}

}  // namespace tipd::ledger
