#include "node/streams.h"

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "channel/codec.h"
#include "node/logging.h"
#include "util/bytes.h"

namespace tipd::node {
namespace {

using StreamRecords = storage::RecordStore<v1::StoredStream>;

std::string StreamKey(std::string_view id) {
  std::string k(1, kStreamKeyFamily);
  k.append(id);
  return k;
}

std::string IdBytes(const std::string& hex) {
  auto b = HexDecode(hex);
  return b.ok() ? std::string(AsStringView(*b)) : std::string();
}

StreamError Err(int http, std::string code, std::string message) {
  return StreamError{http, std::move(code), std::move(message)};
}

bool Terminal(const std::string& state) {
  return state == "stopped" || state == "finished" || state == "failed";
}

// Per-second rate of a stream, rounded up.
uint64_t RateOf(const v1::Stream& s) {
  if (s.interval_ms() == 0) return UINT64_MAX;
  const unsigned __int128 r =
      (static_cast<unsigned __int128>(s.amount()) * 1000 + s.interval_ms() - 1) / s.interval_ms();
  return r > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(r);
}

}  // namespace

// The charge of one interval's tip: the token's cap, and the stream record
// staged in the batch that pays the tip.
class StreamScheduler::Charge final : public TipCharge {
 public:
  Charge(StreamScheduler* s, std::shared_ptr<bool> alive, std::string id, uint64_t start_at,
         uint64_t k_now, uint64_t paid, uint64_t skipped, std::shared_ptr<TipCharge> inner)
      : s_(s),
        alive_(std::move(alive)),
        id_(std::move(id)),
        start_at_(start_at),
        k_now_(k_now),
        paid_(paid),
        skipped_(skipped),
        inner_(std::move(inner)) {}
  Status Reserve(uint64_t amount) override {
    amount_ = amount;
    return inner_ ? inner_->Reserve(amount) : Status::Ok();
  }
  // The token's own admission (its record's restrictions, rate and cap).
  std::optional<ChargeRefusal> Admit(const std::string& channel_id, const crypto::PublicKey& peer,
                                     uint64_t amount) override {
    amount_ = amount;
    return inner_ ? inner_->Admit(channel_id, peer, amount) : std::nullopt;
  }
  void CommitToBatch(storage::WriteBatch* batch) override {
    if (inner_) inner_->CommitToBatch(batch);
    if (*alive_) s_->StagePaid(id_, start_at_, k_now_, paid_, skipped_, amount_, batch);
  }

 private:
  StreamScheduler* s_;
  std::shared_ptr<bool> alive_;
  std::string id_;
  uint64_t start_at_, k_now_, paid_, skipped_;
  uint64_t amount_ = 0;
  std::shared_ptr<TipCharge> inner_;
};

StreamScheduler::StreamScheduler(boost::asio::io_context& io, storage::Database& db,
                                 storage::GroupCommitter& committer, const Clock& clock,
                                 Timers& timers, ChannelManager& channels,
                                 crypto::RandomSource& rng, StreamOptions options)
    : io_(io),
      db_(db),
      committer_(committer),
      clock_(clock),
      timers_(timers),
      channels_(channels),
      rng_(rng),
      options_(options),
      alive_(std::make_shared<bool>(true)) {}

StreamScheduler::~StreamScheduler() {
  *alive_ = false;
  for (auto& [id, s] : streams_) timers_.Cancel(s.timer);
}

Status StreamScheduler::Start() {
  const std::string prefix(1, kStreamKeyFamily);
  TIPD_RETURN_IF_ERROR(StreamRecords(&db_).Scan(prefix, storage::PrefixEnd(prefix), SIZE_MAX,
                                                [&](std::string_view, v1::StoredStream rec) {
                                                  const std::string id = rec.stream().id();
                                                  streams_[id].rec = std::move(rec);
                                                  return Status::Ok();
                                                }));
  size_t active = 0;
  for (auto& [id, s] : streams_) {
    if (s.rec.stream().state() != "active") continue;
    ++active;
    Arm(s);
  }
  Logger("streams")->info("{} stream(s) restored, {} active", streams_.size(), active);
  return Status::Ok();
}

uint64_t StreamScheduler::DueAt(const v1::StoredStream& r, uint64_t k) const {
  const unsigned __int128 t = static_cast<unsigned __int128>(r.start_at_ms()) +
                              static_cast<unsigned __int128>(k) * r.stream().interval_ms();
  return t > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(t);
}

uint64_t StreamScheduler::ActiveRate() const {
  uint64_t total = 0;
  for (const auto& [id, s] : streams_) {
    if (s.rec.stream().state() != "active") continue;
    if (!CheckedAdd(total, RateOf(s.rec.stream()), &total)) return UINT64_MAX;
  }
  return total;
}

size_t StreamScheduler::active() const {
  size_t n = 0;
  for (const auto& [id, s] : streams_) n += s.rec.stream().state() == "active";
  return n;
}

const v1::StoredStream* StreamScheduler::Find(const std::string& id_hex) const {
  auto it = streams_.find(id_hex);
  return it == streams_.end() ? nullptr : &it->second.rec;
}

void StreamScheduler::Emit(const std::string& type, const v1::Stream& stream) {
  if (events_ == nullptr) return;
  v1::Event e;
  e.set_type(type);
  e.set_time_ms(static_cast<uint64_t>(clock_.NowMs()));
  *e.mutable_stream() = stream;
  events_->Append(std::move(e));
}

void StreamScheduler::Persist(Live& s, std::function<void(Status)> then) {
  storage::WriteBatch batch;
  StreamRecords(&db_).Put(&batch, StreamKey(IdBytes(s.rec.stream().id())), s.rec);
  committer_.Submit(std::move(batch), [this, alive = alive_, then = std::move(then)](Status st) {
    boost::asio::post(io_, [alive, then, st] {
      if (*alive) then(st);
    });
  });
}

void StreamScheduler::Create(const v1::CreateStreamRequest& in, const StreamOwner& owner,
                             StreamResult done) {
  auto fail = [&](StreamError e) { done(nullptr, &e); };
  if (in.channel_id().empty() == in.peer_node_id().empty()) {
    return fail(Err(400, "INVALID_ARGUMENT", "give exactly one of channel_id and peer_node_id"));
  }
  if (in.amount() == 0) return fail(Err(400, "BAD_STREAM_RATE", "amount must be at least 1"));
  if (in.interval_ms() < options_.min_interval_ms || in.interval_ms() > options_.max_interval_ms) {
    return fail(Err(400, "BAD_STREAM_RATE",
                    "interval_ms must be between " + std::to_string(options_.min_interval_ms) +
                        " and " + std::to_string(options_.max_interval_ms)));
  }
  v1::Stream probe;
  probe.set_amount(in.amount());
  probe.set_interval_ms(in.interval_ms());
  const uint64_t rate = RateOf(probe);
  const uint64_t others = ActiveRate();
  if (rate > options_.max_per_second || others > options_.max_per_second - rate) {
    return fail(Err(400, "BAD_STREAM_RATE",
                    "this stream pays " + std::to_string(rate) + " per second; with the " +
                        std::to_string(others) + " per second of the active streams that is " +
                        "above stream-max-per-second (" + std::to_string(options_.max_per_second) +
                        ")"));
  }
  if (active() >= options_.max_active) {
    return fail(Err(429, "TOO_MANY_STREAMS",
                    "at most " + std::to_string(options_.max_active) + " streams may be active"));
  }
  const std::string missed = in.missed().empty() ? "skip" : in.missed();
  if (missed != "skip" && missed != "pay") {
    return fail(Err(400, "INVALID_ARGUMENT", "missed must be \"skip\" or \"pay\""));
  }
  const uint64_t now = static_cast<uint64_t>(clock_.NowMs());
  if (in.end_at_ms() != 0 && in.end_at_ms() <= now) {
    return fail(Err(400, "INVALID_ARGUMENT", "end_at_ms is not in the future"));
  }
  if (in.metadata_size() > static_cast<int>(channel::kMaxMetadataEntries) - 2) {
    return fail(Err(400, "INVALID_ARGUMENT",
                    "a stream's metadata holds at most " +
                        std::to_string(channel::kMaxMetadataEntries - 2) +
                        " entries (action and stream_id are added)"));
  }
  for (const auto& [k, v] : in.metadata()) {
    if (k == "action" || k == "stream_id" || k == "intervals" || k == "refund_of") {
      return fail(Err(400, "INVALID_ARGUMENT", "metadata key '" + k + "' is set by the stream"));
    }
    if (!channel::IsValidMetadataKey(k) || v.size() > channel::kMaxMetadataValueBytes) {
      return fail(Err(400, "INVALID_ARGUMENT", "metadata entry '" + k + "' is not valid"));
    }
  }
  if (in.message().size() > channel::kMaxMessageBytes) {
    return fail(Err(400, "INVALID_ARGUMENT", "message is longer than 1000 bytes"));
  }
  std::string channel_hex;
  if (!in.channel_id().empty()) {
    auto id = HexDecode(in.channel_id());
    if (!id.ok() || id->size() != 32) {
      return fail(Err(400, "INVALID_ARGUMENT", "channel_id must be 64 hex characters"));
    }
    auto ch = channels_.GetChannel(std::string(AsStringView(*id)));
    if (!ch.ok()) return fail(Err(404, "NOT_FOUND", "no channel " + in.channel_id()));
    if (ch->state() != "open") {
      return fail(
          Err(409, "CHANNEL_NOT_OPEN", "channel " + in.channel_id() + " is " + ch->state()));
    }
    channel_hex = HexEncode(*id);
  } else {
    auto peer = crypto::PublicKey::FromHex(in.peer_node_id());
    if (!peer.ok()) {
      return fail(Err(400, "INVALID_ARGUMENT", "peer_node_id must be a 66-hex compressed key"));
    }
  }
  std::array<uint8_t, 16> raw{};
  rng_.Fill(raw);
  v1::StoredStream rec;
  v1::Stream& s = *rec.mutable_stream();
  s.set_id(HexEncode(raw));
  s.set_channel_id(channel_hex);
  s.set_peer_node_id(in.peer_node_id());
  s.set_amount(in.amount());
  s.set_interval_ms(in.interval_ms());
  s.set_message(in.message());
  *s.mutable_metadata() = in.metadata();
  s.set_max_total(in.max_total());
  s.set_end_at_ms(in.end_at_ms());
  s.set_state("active");
  s.set_next_at_ms(now);
  s.set_created_at_ms(now);
  s.set_token_id(HexEncode(AsSpan(owner.token_id)));
  s.set_missed(missed);
  rec.set_start_at_ms(now);
  rec.set_next_interval(0);
  rec.set_token_id(owner.token_id);
  rec.set_token_scopes(owner.scopes);
  rec.set_token_expires_at_ms(owner.expires_at_ms);
  rec.set_token_daily_cap(owner.daily_cap);
  const std::string id = s.id();
  Live& live = streams_[id];
  live.rec = rec;
  Persist(live, [this, id, done](Status st) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    if (!st.ok()) {
      streams_.erase(it);
      StreamError e =
          Err(503, "NODE_READ_ONLY", "the stream could not be written: " + st.message());
      return done(nullptr, &e);
    }
    Emit("stream_started", it->second.rec.stream());
    done(&it->second.rec.stream(), nullptr);
    Tick(id);
  });
}

std::vector<v1::Stream> StreamScheduler::List(const StreamOwner& owner) const {
  std::vector<v1::Stream> out;
  const std::string token_hex = HexEncode(AsSpan(owner.token_id));
  for (const auto& [id, s] : streams_) {
    if (owner.admin || s.rec.stream().token_id() == token_hex) out.push_back(s.rec.stream());
  }
  std::sort(out.begin(), out.end(), [](const v1::Stream& a, const v1::Stream& b) {
    return a.created_at_ms() != b.created_at_ms() ? a.created_at_ms() < b.created_at_ms()
                                                  : a.id() < b.id();
  });
  return out;
}

StreamScheduler::Live* StreamScheduler::FindLive(const std::string& id_hex,
                                                 const StreamOwner& owner, StreamError* error) {
  auto it = streams_.find(id_hex);
  if (it == streams_.end() ||
      (!owner.admin && it->second.rec.stream().token_id() != HexEncode(AsSpan(owner.token_id)))) {
    *error = Err(404, "STREAM_NOT_FOUND", "no stream " + id_hex.substr(0, 64));
    return nullptr;
  }
  return &it->second;
}

void StreamScheduler::Get(const std::string& id_hex, const StreamOwner& owner,
                          StreamResult done) const {
  StreamError e;
  Live* s = const_cast<StreamScheduler*>(this)->FindLive(id_hex, owner, &e);
  if (s == nullptr) return done(nullptr, &e);
  done(&s->rec.stream(), nullptr);
}

void StreamScheduler::Control(const std::string& id_hex, const std::string& action,
                              const StreamOwner& owner, StreamResult done) {
  StreamError e;
  Live* s = FindLive(id_hex, owner, &e);
  if (s == nullptr) return done(nullptr, &e);
  v1::Stream& st = *s->rec.mutable_stream();
  if (Terminal(st.state())) {
    e = Err(409, "STREAM_STOPPED",
            "stream " + id_hex + " is " + st.state() +
                (st.stopped_reason().empty() ? "" : ": " + st.stopped_reason()));
    return done(nullptr, &e);
  }
  std::string event;
  if (action == "pause") {
    if (st.state() == "paused") return done(&st, nullptr);
    st.set_state("paused");
    st.set_stopped_reason("paused by request");
    event = "stream_stopped";
  } else if (action == "resume") {
    if (st.state() == "active") return done(&st, nullptr);
    const uint64_t rate = RateOf(st);
    const uint64_t others = ActiveRate();
    if (others > options_.max_per_second - std::min(rate, options_.max_per_second)) {
      e = Err(400, "BAD_STREAM_RATE", "resuming would pass stream-max-per-second");
      return done(nullptr, &e);
    }
    // A new schedule from now: paused time is neither paid nor skipped.
    const uint64_t now = static_cast<uint64_t>(clock_.NowMs());
    st.set_state("active");
    st.set_stopped_reason("");
    s->rec.set_start_at_ms(now);
    s->rec.set_next_interval(0);
    st.set_next_at_ms(now);
    event = "stream_started";
  } else {
    st.set_state("stopped");
    st.set_stopped_reason("stopped by request");
    st.set_next_at_ms(0);
    event = "stream_stopped";
  }
  timers_.Cancel(s->timer);
  s->timer = 0;
  Persist(*s, [this, id = id_hex, event, done](Status status) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    if (!status.ok()) {
      StreamError err =
          Err(503, "NODE_READ_ONLY", "the change could not be written: " + status.message());
      return done(nullptr, &err);
    }
    Emit(event, it->second.rec.stream());
    done(&it->second.rec.stream(), nullptr);
    if (it->second.rec.stream().state() == "active") Tick(id);
  });
}

void StreamScheduler::Arm(Live& s) {
  timers_.Cancel(s.timer);
  const int64_t now = clock_.NowMs();
  const uint64_t due = DueAt(s.rec, s.rec.next_interval());
  const int64_t delay = due > static_cast<uint64_t>(now)
                            ? static_cast<int64_t>(std::min<uint64_t>(due - now, 86'400'000))
                            : 0;
  const std::string id = s.rec.stream().id();
  s.timer = timers_.After(std::chrono::milliseconds(delay), [this, alive = alive_, id] {
    if (*alive) Tick(id);
  });
}

void StreamScheduler::Halt(Live& s, const std::string& state, const std::string& reason) {
  v1::Stream& st = *s.rec.mutable_stream();
  st.set_state(state);
  st.set_stopped_reason(reason);
  if (state != "paused") st.set_next_at_ms(0);
  timers_.Cancel(s.timer);
  s.timer = 0;
  Logger("streams")->info("stream {} {}: {}", st.id(), state, reason);
  Persist(s, [this, id = st.id()](Status status) {
    auto it = streams_.find(id);
    if (it == streams_.end() || !status.ok()) return;
    Emit("stream_stopped", it->second.rec.stream());
  });
}

void StreamScheduler::Tick(const std::string& id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  Live& s = it->second;
  s.timer = 0;
  v1::StoredStream& r = s.rec;
  const v1::Stream& st = r.stream();
  if (st.state() != "active" || s.in_flight) return;
  const uint64_t now = static_cast<uint64_t>(std::max<int64_t>(0, clock_.NowMs()));
  if (r.token_expires_at_ms() != 0 && r.token_expires_at_ms() <= now) {
    return Halt(s, "failed", "the token that created the stream expired");
  }
  // The last interval before end_at_ms, if there is an end.
  uint64_t k_last = UINT64_MAX;
  if (st.end_at_ms() != 0) {
    k_last = st.end_at_ms() <= r.start_at_ms()
                 ? 0
                 : (st.end_at_ms() - 1 - r.start_at_ms()) / st.interval_ms();
  }
  const bool ended_by_time = st.end_at_ms() != 0 && DueAt(r, r.next_interval()) >= st.end_at_ms();
  if (ended_by_time) return Halt(s, "finished", "end_at_ms reached");
  if (st.max_total() != 0 && st.paid_total() >= st.max_total()) {
    return Halt(s, "finished", "max_total paid");
  }
  if (now < DueAt(r, r.next_interval())) return Arm(s);
  uint64_t k_now = (now - r.start_at_ms()) / st.interval_ms();
  k_now = std::min(k_now, k_last);
  const uint64_t due = k_now - r.next_interval() + 1;
  uint64_t pay = st.missed() == "pay" ? std::min(due, options_.max_catch_up) : 1;
  const uint64_t skipped = due - pay;
  unsigned __int128 amount = static_cast<unsigned __int128>(st.amount()) * pay;
  if (st.max_total() != 0) {
    // The last tip pays what is left (and counts only the intervals it needs).
    const uint64_t left = st.max_total() - st.paid_total();
    if (amount > left) {
      amount = left;
      pay = (left + st.amount() - 1) / st.amount();
    }
  }
  if (amount > UINT64_MAX) amount = UINT64_MAX;

  TipRequestIn req;
  if (!st.channel_id().empty()) {
    req.channel_id = IdBytes(st.channel_id());
  } else {
    auto peer = crypto::PublicKey::FromHex(st.peer_node_id());
    if (!peer.ok()) return Halt(s, "failed", "the stored peer_node_id does not parse");
    req.peer = *peer;
  }
  req.draft.amount = static_cast<uint64_t>(amount);
  req.draft.message = st.message();
  for (const auto& [k, v] : st.metadata()) req.draft.metadata[k] = v;
  req.draft.metadata["action"] = "stream";
  req.draft.metadata["stream_id"] = st.id();
  if (pay > 1) req.draft.metadata["intervals"] = std::to_string(pay);
  req.key_owner = "stream";
  std::shared_ptr<TipCharge> inner = charge_for_ ? charge_for_(r) : nullptr;
  req.charge = std::make_shared<Charge>(this, alive_, id, r.start_at_ms(), k_now, pay, skipped,
                                        std::move(inner));
  s.in_flight = true;
  channels_.SendTip(std::move(req), [this, alive = alive_, id](TipOutcome outcome) {
    if (*alive) OnAnswer(id, outcome);
  });
}

void StreamScheduler::StagePaid(const std::string& id, uint64_t start_at, uint64_t k_now,
                                uint64_t paid, uint64_t skipped, uint64_t amount,
                                storage::WriteBatch* batch) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  v1::StoredStream& r = it->second.rec;
  v1::Stream& st = *r.mutable_stream();
  st.set_intervals_paid(st.intervals_paid() + paid);
  st.set_intervals_skipped(st.intervals_skipped() + skipped);
  st.set_tips_paid(st.tips_paid() + 1);
  st.set_paid_total(st.paid_total() + amount);
  // A resume while this tip waited started a new schedule: leave it alone.
  if (r.start_at_ms() == start_at) {
    r.set_next_interval(k_now + 1);
    st.set_next_at_ms(DueAt(r, k_now + 1));
  }
  if (st.max_total() != 0 && st.paid_total() >= st.max_total()) {
    st.set_state("finished");
    st.set_stopped_reason("max_total paid");
    st.set_next_at_ms(0);
  } else if (st.end_at_ms() != 0 && st.next_at_ms() >= st.end_at_ms()) {
    st.set_state("finished");
    st.set_stopped_reason("end_at_ms reached");
    st.set_next_at_ms(0);
  }
  StreamRecords(&db_).Put(batch, StreamKey(IdBytes(id)), r);
}

void StreamScheduler::OnAnswer(const std::string& id, const TipOutcome& outcome) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  Live& s = it->second;
  s.in_flight = false;
  const v1::Stream& st = s.rec.stream();
  if (!outcome.refusal) {
    // Paid (acknowledged, or signed and pending): the record was written
    // with the tip.
    Emit("stream_tip", st);
    if (st.state() == "finished") {
      Emit("stream_stopped", st);
    } else if (st.state() == "active") {
      Arm(s);
    }
    return;
  }
  const TipRefusal& why = *outcome.refusal;
  switch (why.error) {
    case TipError::kSpendCapExceeded:
      if (st.state() == "active")
        return Halt(s, "paused", "refused by the token's cap: " + why.message);
      return;
    case TipError::kAnomalyHold:
      // Held until an admin releases the token; the payer resumes after.
      if (st.state() == "active") return Halt(s, "paused", why.code() + ": " + why.message);
      return;
    case TipError::kNotAllowed:  // the token was revoked or may not pay this channel
    case TipError::kNotFound:
    case TipError::kChannelNotOpen:
    case TipError::kInvalidArgument:
    case TipError::kRefundRefused:
      if (!Terminal(st.state())) return Halt(s, "failed", why.code() + ": " + why.message);
      return;
    case TipError::kPeerOffline:
    case TipError::kQueueFull:
    case TipError::kNodeReadOnly:
    case TipError::kChannelRule:
    case TipError::kIdempotencyKeyReused:
    case TipError::kInternal:
    case TipError::kRateLimited:
      // Not paid: the interval stays due; a retry soon (the peer may be
      // reconnecting after a restart) settles it by the missed policy.
      Logger("streams")->warn("stream {}: interval not paid ({}): {}", id, why.code(), why.message);
      if (st.state() == "active") {
        timers_.Cancel(s.timer);
        const uint64_t delay = std::min(st.interval_ms(), options_.retry_ms);
        s.timer = timers_.After(std::chrono::milliseconds(delay), [this, alive = alive_, id] {
          if (*alive) Tick(id);
        });
      }
      return;
  }
}

}  // namespace tipd::node
