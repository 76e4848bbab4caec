#include "api/events.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <limits>
#include <optional>
#include <utility>

#include "api/rpc_server.h"
#include "node/logging.h"
#include "storage/storage.h"
#include "tipd/storage.pb.h"
#include "util/bytes.h"

namespace tipd::api {
namespace {

namespace net = boost::asio;
using EventRecords = storage::RecordStore<tipd::v1::StoredEvent>;

constexpr char kFamily = static_cast<char>(storage::KeyFamily::kEvent);

std::string FamilyEnd() { return storage::PrefixEnd(std::string_view(&kFamily, 1)); }

// The id of an 'E' key; kCorruption for a key of the wrong shape.
Result<uint64_t> IdOfKey(std::string_view key) {
  if (key.size() != 9 || key[0] != kFamily) {
    return Status::Corruption("malformed event key " + storage::EscapeKey(key));
  }
  uint64_t id = 0;
  for (size_t i = 1; i < 9; ++i) id = (id << 8) | static_cast<uint8_t>(key[i]);
  return id;
}

// The id of the first 'E' key >= EventKey(from), if any.
Result<std::optional<uint64_t>> FirstIdAtOrAfter(const storage::Database& db, uint64_t from) {
  std::optional<uint64_t> found;
  Status s = db.Scan(EventKey(from), FamilyEnd(), 1,
                     [&](std::string_view key, std::string_view) -> Status {
                       TIPD_ASSIGN_OR_RETURN(uint64_t id, IdOfKey(key));
                       found = id;
                       return Status::Ok();
                     });
  TIPD_RETURN_IF_ERROR(s);
  return found;
}

// tip_sent and tip_received events are stored by reference: their tip body
// is the tip history record written in the same batch.
bool StoredByReference(const tipd::v1::Event& event) {
  return event.has_tip() && event.tip().has_tip() &&
         (event.type() == kEventTipSent || event.type() == kEventTipReceived);
}

// Loads the tip body of an event stored by reference from the tip history.
// If it cannot be read, the event keeps its index-only tip and says why in
// tip.tip_unavailable (never a silently different payload), and the node
// logs it.
void LoadTipBody(storage::Database* db, tipd::v1::Event* event) {
  tipd::v1::TipApi& api = *event->mutable_tip();
  const uint64_t index = api.tip().index();
  std::string why;
  const Result<Bytes> channel = HexDecode(api.channel_id());
  const bool sent = api.direction() == "sent";
  if (!channel.ok() || (!sent && api.direction() != "received")) {
    why = "the event names no valid channel and direction";
  } else {
    storage::TipHistoryStore history(db);
    Result<std::optional<tipd::v1::StoredTip>> stored = history.Get(
        AsStringView(*channel),
        sent ? storage::Direction::kLocalToRemote : storage::Direction::kRemoteToLocal, index);
    if (!stored.ok()) {
      why = "reading the stored tip failed: " + stored.status().ToString();
    } else if (!stored->has_value()) {
      why = "the stored tip is missing";
    } else if ((*stored)->tip().index() != index) {
      why = "the stored tip holds index " + std::to_string((*stored)->tip().index());
    } else {
      *api.mutable_tip() = std::move(*(*stored)->mutable_tip());
      return;
    }
  }
  node::Logger("events")->error("event {} ({} tip {} of channel {}): tip body unavailable: {}",
                                event->id(), event->type(), index, api.channel_id(), why);
  api.set_tip_unavailable(why);
}

}  // namespace

bool IsEventType(std::string_view type) {
  return type == kEventTipReceived || type == kEventTipSent || type == kEventAck ||
         type == kEventChannel || type == kEventPeer || type == kEventWebhookDisabled ||
         type == kEventAnomaly ||
         // Refunds and metered streams (node/refunds.h, node/streams.h).
         type == "tip_refunded" || type == "stream_started" || type == "stream_tip" ||
         type == "stream_stopped";
}

std::string EventKey(uint64_t id) {
  std::string key(1, kFamily);
  storage::AppendBigEndian64(&key, id);
  return key;
}

// ---- EventLog ----

Result<std::unique_ptr<EventLog>> EventLog::Open(net::io_context& io, storage::Database* db,
                                                 storage::GroupCommitter* committer,
                                                 const Clock& clock, EventLogOptions options) {
  if (options.retain < 1) return Status::InvalidArgument("event log retain must be >= 1");
  if (options.prune_every < 1) options.prune_every = 1;
  if (options.max_prune_per_batch < 1) options.max_prune_per_batch = 1;
  // Oldest stored id: one forward step. Newest: no reverse scan, so a
  // search over the id space, each probe a one-entry scan that also jumps
  // to the key it found (at most 64 probes).
  TIPD_ASSIGN_OR_RETURN(std::optional<uint64_t> first, FirstIdAtOrAfter(*db, 0));
  uint64_t first_id = 1, last_id = 0;
  if (first) {
    if (*first == 0)
      return Status::Corruption("malformed event key " + storage::EscapeKey(EventKey(0)));
    uint64_t lo = *first, hi = std::numeric_limits<uint64_t>::max();
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2 + 1;
      TIPD_ASSIGN_OR_RETURN(std::optional<uint64_t> at, FirstIdAtOrAfter(*db, mid));
      if (at) {
        lo = *at;
      } else {
        hi = mid - 1;
      }
    }
    first_id = *first;
    last_id = lo;
  }
  return std::unique_ptr<EventLog>(
      new EventLog(io, db, committer, clock, options, first_id, last_id));
}

EventLog::EventLog(net::io_context& io, storage::Database* db, storage::GroupCommitter* committer,
                   const Clock& clock, EventLogOptions options, uint64_t first_id, uint64_t last_id)
    : io_(io),
      db_(db),
      committer_(committer),
      clock_(clock),
      options_(options),
      first_id_(first_id),
      next_id_(last_id + 1),
      published_id_(last_id),
      alive_(std::make_shared<bool>(true)) {}

EventLog::~EventLog() = default;

uint64_t EventLog::Stage(storage::WriteBatch* batch, tipd::v1::Event* event) {
  const uint64_t id = next_id_++;
  event->set_id(id);
  event->set_time_ms(static_cast<uint64_t>(std::max<int64_t>(0, clock_.NowMs())));
  tipd::v1::StoredEvent record;
  if (StoredByReference(*event)) {
    // Copy everything but the tip body (the tip history holds it): take the
    // body out for the copy and put it back.
    tipd::v1::TipApi& api = *event->mutable_tip();
    std::unique_ptr<tipd::v1::Tip> body(api.release_tip());
    *record.mutable_event() = *event;
    if (body) {
      record.mutable_event()->mutable_tip()->mutable_tip()->set_index(body->index());
      record.set_tip_elided(true);
      api.set_allocated_tip(body.release());
    }
  } else {
    *record.mutable_event() = *event;
  }
  batch->Put(EventKey(id), EventRecords::Encode(std::move(record)));
  pending_.emplace(id, Pending{});
  MaybePrune(batch);
  return id;
}

void EventLog::MaybePrune(storage::WriteBatch* batch) {
  ++staged_since_prune_;
  const uint64_t last = last_id();
  if (last <= options_.retain) return;
  uint64_t target = last - options_.retain + 1;  // the new oldest id
  if (hold_) {
    // Keep what a reader still needs, up to retain + max_held ids.
    const uint64_t kept = options_.retain + std::min(options_.max_held, last);
    const uint64_t hard = last >= kept ? last - kept + 1 : 1;
    target = std::max(hard, std::min(target, hold_()));
  }
  if (first_id_ >= target) return;
  if (pruned_once_ && staged_since_prune_ < options_.prune_every) return;
  const uint64_t n = std::min(target - first_id_, options_.max_prune_per_batch);
  for (uint64_t id = first_id_; id < first_id_ + n; ++id) batch->Delete(EventKey(id));
  first_id_ += n;
  staged_since_prune_ = 0;
  pruned_once_ = true;
}

void EventLog::Publish(tipd::v1::Event event) {
  auto it = pending_.find(event.id());
  if (it == pending_.end() || it->second.settled) return;
  it->second.settled = true;
  it->second.event = std::move(event);
  Drain();
}

void EventLog::Abandon(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second.settled) return;
  it->second.settled = true;
  it->second.abandoned = true;
  Drain();
}

void EventLog::Drain() {
  // A subscriber that publishes from its callback lands here again; the
  // outer loop picks its event up, keeping delivery in id order.
  if (draining_) return;
  draining_ = true;
  while (!pending_.empty() && pending_.begin()->second.settled) {
    auto node = pending_.extract(pending_.begin());
    published_id_ = node.key();
    if (!node.mapped().abandoned) Deliver(node.mapped().event);
  }
  draining_ = false;
}

void EventLog::Deliver(const tipd::v1::Event& event) {
  std::vector<std::shared_ptr<Subscriber>> targets;
  targets.reserve(subscribers_.size());
  for (auto& [id, sub] : subscribers_) {
    if (sub->types.empty() || sub->types.count(event.type())) targets.push_back(sub);
  }
  for (auto& sub : targets) {
    if (sub->active) sub->callback(event);  // an earlier callback may have unsubscribed it
  }
}

uint64_t EventLog::Append(tipd::v1::Event event, std::function<void(Status)> done) {
  storage::WriteBatch batch;
  const uint64_t id = Stage(&batch, &event);
  std::weak_ptr<bool> alive = alive_;
  net::io_context& io = io_;
  committer_->Submit(std::move(batch), [this, alive, &io, event = std::move(event),
                                        done = std::move(done)](Status status) mutable {
    // On the committer's thread: hand the outcome back to the io thread.
    net::post(io, [this, alive, event = std::move(event), done = std::move(done),
                   status = std::move(status)]() mutable {
      if (alive.expired()) return;
      if (status.ok()) {
        Publish(std::move(event));
      } else {
        Abandon(event.id());
      }
      if (done) done(status);
    });
  });
  return id;
}

Result<std::vector<tipd::v1::Event>> EventLog::ReadAfter(uint64_t after_id, size_t limit) const {
  std::vector<tipd::v1::Event> out;
  if (after_id == std::numeric_limits<uint64_t>::max() || limit == 0) return out;
  // Rows below first_id_ may linger until the batch deleting them commits:
  // they are pruned already as far as readers are concerned.
  const uint64_t start = std::max(after_id + 1, first_id_);
  EventRecords records(db_);
  Status s = records.Scan(EventKey(start), FamilyEnd(), limit,
                          [&](std::string_view key, tipd::v1::StoredEvent record) -> Status {
                            TIPD_ASSIGN_OR_RETURN(uint64_t id, IdOfKey(key));
                            if (record.event().id() != id) {
                              return Status::Corruption("event record " + storage::EscapeKey(key) +
                                                        " holds id " +
                                                        std::to_string(record.event().id()));
                            }
                            if (record.tip_elided() && record.event().has_tip()) {
                              LoadTipBody(db_, record.mutable_event());
                            }
                            out.push_back(std::move(*record.mutable_event()));
                            return Status::Ok();
                          });
  TIPD_RETURN_IF_ERROR(s);
  return out;
}

EventLog::SubscriptionId EventLog::Subscribe(std::set<std::string> types, Callback callback) {
  const SubscriptionId id = next_subscription_++;
  auto sub = std::make_shared<Subscriber>();
  sub->types = std::move(types);
  sub->callback = std::move(callback);
  subscribers_.emplace(id, std::move(sub));
  return id;
}

void EventLog::Unsubscribe(SubscriptionId id) {
  auto it = subscribers_.find(id);
  if (it == subscribers_.end()) return;
  it->second->active = false;
  subscribers_.erase(it);
}

// ---- GET /v1/events ----

namespace {

// Decimal uint64, nothing else.
std::optional<uint64_t> ParseId(std::string_view text) {
  uint64_t v = 0;
  if (text.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return v;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

Result<std::set<std::string>> ParseTypes(std::string_view list) {
  std::set<std::string> types;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = Trim(list.substr(0, comma));
    list = comma == list.npos ? std::string_view() : list.substr(comma + 1);
    if (item.empty()) continue;
    if (!IsEventType(item)) {
      return Status::InvalidArgument("unknown event type '" + std::string(item) +
                                     "' in types (valid: tip_received, tip_sent, ack, channel, "
                                     "peer, webhook_disabled, anomaly, tip_refunded, "
                                     "stream_started, stream_tip, stream_stopped)");
    }
    types.emplace(item);
  }
  return types;
}

// One SSE client: replays stored events after `cursor_` page by page, then
// switches to live delivery. Everything runs on the io thread. Kept alive by
// the stream's close callback, the log subscription and pending timers
// until Finish.
class EventsSession : public std::enable_shared_from_this<EventsSession> {
 public:
  EventsSession(EventLog& log, std::shared_ptr<EventStream> stream, std::set<std::string> types,
                const EventRouteOptions& options)
      : log_(log),
        stream_(std::move(stream)),
        types_(std::move(types)),
        options_(options),
        heartbeat_(log.io()),
        poll_(log.io()) {}

  // `after`: resume after this id (nullopt: live only). `reset_first`: the
  // client's id is unknown to this log; tell it and replay all retained.
  void Start(std::optional<uint64_t> after, bool reset_first) {
    auto self = shared_from_this();
    stream_->OnClose([self] { self->Finish(); });
    if (finished_) return;
    // Subscribe before anything is read, so nothing published from here on
    // can be missed. While replaying, the callback drops live events: they
    // are durable, so the next page reads them (published_id() has moved).
    subscription_ = log_.Subscribe(types_, [self](const tipd::v1::Event& e) { self->OnLive(e); });
    ArmHeartbeat();
    if (!after) {
      cursor_ = log_.published_id();
      live_ = true;
      return;
    }
    cursor_ = *after;
    if (reset_first) SendReset();
    if (!finished_) Pump();
  }

 private:
  void OnLive(const tipd::v1::Event& event) {
    if (!live_ || finished_ || event.id() <= cursor_) return;
    cursor_ = event.id();
    SendEvent(event);
  }

  // One replay page; then either the next page (posted, so other io work
  // runs in between), a wait for the stream buffer to drain, or live mode.
  void Pump() {
    if (finished_) return;
    if (stream_->closed()) return Finish();
    if (stream_->buffered_bytes() > options_.replay_high_water_bytes) {
      poll_.expires_after(options_.replay_poll);
      poll_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) self->Pump();
      });
      return;
    }
    if (cursor_ + 1 < log_.first_id()) SendReset();  // pruned past the cursor
    if (finished_) return;
    const uint64_t end = log_.published_id();
    if (cursor_ >= end) {
      live_ = true;
      return;
    }
    Result<std::vector<tipd::v1::Event>> page = log_.ReadAfter(cursor_, options_.replay_page);
    if (!page.ok()) {
      // The client reconnects with its Last-Event-ID and retries.
      node::Logger("events")->error("event replay after id {} failed: {}", cursor_,
                                    page.status().ToString());
      stream_->Close();
      return Finish();
    }
    bool reached_end = page->size() < options_.replay_page;
    for (const tipd::v1::Event& event : *page) {
      if (event.id() > end) {  // durable but not yet published: live brings it
        reached_end = true;
        break;
      }
      if (stream_->buffered_bytes() > options_.replay_high_water_bytes) {
        // Stop mid-page; the next Pump waits and reads on from the cursor.
        reached_end = false;
        break;
      }
      cursor_ = event.id();
      if (Matches(event)) SendEvent(event);
      if (finished_) return;
    }
    if (reached_end) {
      // Every stored id <= end has been read, and this runs in one io task
      // with the read: whatever is published next has an id > end.
      cursor_ = std::max(cursor_, end);
      live_ = true;
      return;
    }
    net::post(log_.io(), [self = shared_from_this()] { self->Pump(); });
  }

  bool Matches(const tipd::v1::Event& event) const {
    return types_.empty() || types_.count(event.type()) != 0;
  }

  void SendEvent(const tipd::v1::Event& event) {
    if (!stream_->Send(std::to_string(event.id()), event.type(), ToJson(event))) Finish();
  }

  // Events after the cursor were pruned (or the client's id is not from this
  // log): say so, and continue from the oldest retained event.
  void SendReset() {
    const uint64_t resume_after = log_.first_id() - 1;
    tipd::v1::Event reset;
    reset.set_id(resume_after);
    reset.set_type(std::string(kEventReset));
    reset.set_time_ms(static_cast<uint64_t>(std::max<int64_t>(0, log_.clock().NowMs())));
    cursor_ = resume_after;
    if (!stream_->Send(std::to_string(resume_after), kEventReset, ToJson(reset))) Finish();
  }

  void ArmHeartbeat() {
    if (options_.heartbeat.count() <= 0) return;
    heartbeat_.expires_after(options_.heartbeat);
    heartbeat_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->finished_) return;
      if (!self->stream_->SendComment("heartbeat")) return self->Finish();
      self->ArmHeartbeat();
    });
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    if (subscription_) log_.Unsubscribe(subscription_);
    subscription_ = 0;
    heartbeat_.cancel();
    poll_.cancel();
    if (!stream_->closed()) stream_->Close();
  }

  EventLog& log_;
  std::shared_ptr<EventStream> stream_;
  const std::set<std::string> types_;
  const EventRouteOptions options_;
  net::steady_timer heartbeat_;
  net::steady_timer poll_;
  EventLog::SubscriptionId subscription_ = 0;
  uint64_t cursor_ = 0;  // every id <= cursor_ was sent, filtered out or missed
  bool live_ = false;
  bool finished_ = false;
};

}  // namespace

void RegisterEventRoutes(RpcServer& server, EventLog& log, EventRouteOptions options) {
  server.HandleAsync(
      HttpMethod::kGet, "/v1/events", RouteAuth::Needs(Scope::kRead),
      [&log, options](ApiRequest request, Responder responder) {
        std::set<std::string> types;
        if (auto it = request.query.find("types"); it != request.query.end()) {
          Result<std::set<std::string>> parsed = ParseTypes(it->second);
          if (!parsed.ok()) return responder.Send(ApiResponse::FromStatus(parsed.status()));
          types = std::move(*parsed);
        }
        // Resume point: Last-Event-ID header, else ?last_event_id=, else
        // ?from= (first id wanted; 0 = everything retained).
        std::optional<uint64_t> after;
        bool reset_first = false;
        std::string source;
        std::string text = request.Header("last-event-id");
        if (!text.empty()) {
          source = "Last-Event-ID";
        } else if (auto it = request.query.find("last_event_id"); it != request.query.end()) {
          source = "last_event_id";
          text = it->second;
        }
        if (!source.empty()) {
          std::optional<uint64_t> id = ParseId(Trim(text));
          if (!id) {
            return responder.Send(
                ApiResponse::Error(400, "invalid_argument",
                                   source + " must be a decimal event id, got '" + text + "'"));
          }
          after = *id;
          // An id this log never published comes from another log (the
          // node's database was replaced): reset and replay all retained.
          if (*id > log.published_id()) {
            reset_first = true;
            after = log.first_id() - 1;
          }
        } else if (auto it = request.query.find("from"); it != request.query.end()) {
          std::optional<uint64_t> from = ParseId(it->second);
          if (!from) {
            return responder.Send(
                ApiResponse::Error(400, "invalid_argument",
                                   "from must be a decimal event id, got '" + it->second + "'"));
          }
          after = *from == 0 ? log.first_id() - 1 : *from - 1;
        }
        std::shared_ptr<EventStream> stream = responder.StartEventStream();
        if (!stream) return;
        auto session =
            std::make_shared<EventsSession>(log, std::move(stream), std::move(types), options);
        session->Start(after, reset_first);
      });
}

}  // namespace tipd::api
