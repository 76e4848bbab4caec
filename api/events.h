// The node's event log and the `GET /v1/events` Server-Sent Events route
// (docs/api.md, "Live events").
//
// Tour: an `EventLog` numbers events (ids 1, 2, 3, ... that survive
// restarts), persists them in the node database under the key family 'E'
// (`'E' id[8 BE] -> StoredEvent`, docs/storage.md), publishes them to live
// subscribers strictly in id order, keeps the newest `retain` ids and prunes
// older ones as it goes. `RegisterEventRoutes` serves the log over SSE:
// replay from `Last-Event-ID` in pages, then live events, with no gap and no
// duplicate at the seam.
//
// Persist before emit. An event is published only after the write that
// stored it is durable:
//   - Events that belong to another write (a received tip and the proof that
//     carried it): `Stage(&batch, &event)` assigns the id and time and adds
//     the record to the caller's batch; the caller commits the batch (through
//     its GroupCommitter) and then, on the io thread, calls `Publish(event)`
//     if the commit succeeded or `Abandon(id)` if it failed.
//   - Events with no other write (peer connected, channel state changed):
//     `Append(event)` stages into a batch of its own, submits it to the
//     GroupCommitter given at construction, and publishes (or abandons) once
//     the commit completes, back on the io thread.
// Publication is in id order: a Publish of id n is held back until every
// id below n has been published or abandoned. So every staged id MUST end
// in exactly one Publish or Abandon, or the stream stalls behind it.
//
// Threading contract: like RpcServer and p2p::Host, an EventLog is driven by
// the node's io_context and is not thread-safe. Construct, call every method
// and destroy it on the thread that runs the io_context (or while no thread
// runs it). Subscriber callbacks run on that thread. Append's commit
// completion runs on the committer's thread and is handed back to the io
// thread with boost::asio::post; it does nothing if the log is gone by then.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "node/lifecycle.h"
#include "tipd/api.pb.h"
#include "util/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tipd::storage {
class Database;
class GroupCommitter;
class WriteBatch;
}  // namespace tipd::storage

namespace tipd::api {

class RpcServer;

// The event types of tipd.v1.Event.type, and "reset" (SSE only: events were
// missed, see docs/api.md).
inline constexpr std::string_view kEventTipReceived = "tip_received";
inline constexpr std::string_view kEventTipSent = "tip_sent";
inline constexpr std::string_view kEventAck = "ack";
inline constexpr std::string_view kEventChannel = "channel";
inline constexpr std::string_view kEventPeer = "peer";
inline constexpr std::string_view kEventAnomaly = "anomaly";  // node/anomaly.h
inline constexpr std::string_view kEventReset = "reset";
inline constexpr std::string_view kEventWebhookDisabled = "webhook_disabled";

// True for the stored event types (not "reset").
bool IsEventType(std::string_view type);

// The LevelDB key of event `id`: 'E' id[8 BE].
std::string EventKey(uint64_t id);

struct EventLogOptions {
  // Keep the newest `retain` ids: once id n is staged, ids <= n - retain are
  // pruned. (Abandoned ids count, so at most `retain` events are kept.)
  // Must be >= 1.
  uint64_t retain = 100'000;
  // Pruning rides along in the batch of every `prune_every`-th staged event
  // (or the first one staged after open), as one Delete per pruned id, at
  // most `max_prune_per_batch` of them; the rest follow in later batches.
  uint64_t prune_every = 256;
  uint64_t max_prune_per_batch = 4096;
  // With a retention hold (SetRetentionHold): events a reader still needs
  // are kept beyond `retain`, but never more than `retain + max_held` ids in
  // all; past that the oldest are pruned anyway.
  uint64_t max_held = 1'000'000;
};

class EventLog {
 public:
  // Opens the log in `db`: finds the oldest and newest stored ids with a few
  // point scans (never reading the log into memory), so ids continue after
  // the newest stored one. `committer` carries Append's writes; `clock`
  // stamps time_ms. All must outlive the log; `committer` must write to `db`.
  // kCorruption if an 'E' key is malformed.
  static Result<std::unique_ptr<EventLog>> Open(boost::asio::io_context& io, storage::Database* db,
                                                storage::GroupCommitter* committer,
                                                const Clock& clock, EventLogOptions options = {});
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Assigns the next id and time_ms (Clock::NowMs) to `event` and adds its
  // record (plus, now and then, prune deletes) to `batch`. Returns the id.
  // The caller commits `batch`, then calls Publish(*event) or Abandon(id).
  // REQUIRES: IsEventType(event->type()).
  uint64_t Stage(storage::WriteBatch* batch, tipd::v1::Event* event);

  // Publishes a staged event whose batch is durable: delivered to matching
  // subscribers at once if every lower id is settled, else held until they
  // are. An id that was not staged, or was already published or abandoned,
  // is ignored.
  // Takes the event by value: callers done with it move it in.
  void Publish(tipd::v1::Event event);

  // Gives up a staged id whose batch failed: later ids are no longer held
  // back by it. Unknown or settled ids are ignored.
  void Abandon(uint64_t id);

  // Stages `event` into a batch of its own and commits it through the
  // committer; publishes once durable, or abandons the id if the commit
  // fails. `done` (optional) runs on the io thread after that, with the
  // commit's outcome (not at all if the log is destroyed first). Returns the
  // assigned id. REQUIRES: the io_context outlives the commit's completion
  // (stop the committer before destroying the io_context).
  uint64_t Append(tipd::v1::Event event, std::function<void(Status)> done = {});

  // Up to `limit` stored events with id > after_id, in id order, by a range
  // scan. May include events that are durable but not yet published (a
  // staged batch committed before its Publish); compare with
  // published_id(). kCorruption naming the key for a bad record.
  Result<std::vector<tipd::v1::Event>> ReadAfter(uint64_t after_id, size_t limit) const;

  // The oldest retained id: every id below it has been pruned (or was never
  // stored); 1 until something is pruned. Readers (ReadAfter) never see
  // ids below it, even if a record lingers there (a staged batch committed
  // after the batch pruning its id); the next open prunes such leftovers.
  uint64_t first_id() const { return first_id_; }
  // The newest id assigned (staged or appended); 0 if none yet.
  uint64_t last_id() const { return next_id_ - 1; }
  // Every id <= published_id() has been published (or abandoned); the
  // newest stored id at open counts as published.
  uint64_t published_id() const { return published_id_; }

  // Live subscribers. `types` empty = every type. The callback runs on the
  // io thread, in id order, for every event published after Subscribe
  // returns. It may call Unsubscribe (its own or another's), Stage, Publish
  // or Append.
  using SubscriptionId = uint64_t;
  using Callback = std::function<void(const tipd::v1::Event&)>;
  SubscriptionId Subscribe(std::set<std::string> types, Callback callback);
  // No further calls after it returns. Unknown ids are ignored.
  void Unsubscribe(SubscriptionId id);
  size_t subscriber_count() const { return subscribers_.size(); }

  // A reader that must not lose events it has not processed yet (webhook
  // endpoints, api/webhooks.h): `oldest_needed()` returns the oldest id it
  // still needs (UINT64_MAX: none). Pruning then stops below that id,
  // within EventLogOptions::max_held; a reader further behind finds its
  // cursor below first_id() and must say so. Called on the io thread
  // whenever a prune is due. Replaces an earlier hold; {} removes it.
  void SetRetentionHold(std::function<uint64_t()> oldest_needed) {
    hold_ = std::move(oldest_needed);
  }

  boost::asio::io_context& io() const { return io_; }
  const Clock& clock() const { return clock_; }

 private:
  EventLog(boost::asio::io_context& io, storage::Database* db, storage::GroupCommitter* committer,
           const Clock& clock, EventLogOptions options, uint64_t first_id, uint64_t last_id);
  // Adds prune deletes to `batch` if it is time to.
  void MaybePrune(storage::WriteBatch* batch);
  // Publishes the settled prefix of pending_.
  void Drain();
  void Deliver(const tipd::v1::Event& event);

  struct Pending {
    bool settled = false;  // published or abandoned
    bool abandoned = false;
    tipd::v1::Event event;  // set when published
  };
  struct Subscriber {
    std::set<std::string> types;
    Callback callback;
    bool active = true;  // false once unsubscribed (mid-delivery)
  };

  boost::asio::io_context& io_;
  storage::Database* const db_;
  storage::GroupCommitter* const committer_;
  const Clock& clock_;
  const EventLogOptions options_;

  uint64_t first_id_;      // oldest retained id
  uint64_t next_id_;       // next id to assign
  uint64_t published_id_;  // settled prefix
  uint64_t staged_since_prune_ = 0;
  bool pruned_once_ = false;
  std::map<uint64_t, Pending> pending_;  // staged ids above published_id_
  bool draining_ = false;
  std::function<uint64_t()> hold_;

  std::map<SubscriptionId, std::shared_ptr<Subscriber>> subscribers_;
  SubscriptionId next_subscription_ = 1;

  // Checked by Append's completion handler (on the io thread) so it does
  // nothing once the log is destroyed.
  std::shared_ptr<bool> alive_;
};

struct EventRouteOptions {
  // A `: heartbeat` comment this often keeps proxies from closing idle
  // streams.
  std::chrono::milliseconds heartbeat{15'000};
  // Replay reads and sends this many stored events per io task.
  size_t replay_page = 256;
  // Replay pauses (polling every `replay_poll`) while the stream has more
  // than this many unsent bytes, so a slow reader is not closed for
  // overflowing the stream buffer during replay. Keep it below
  // RpcLimits::max_stream_buffer_bytes by at least one event.
  size_t replay_high_water_bytes = 256 * 1024;
  std::chrono::milliseconds replay_poll{20};
};

// Registers `GET /v1/events` (scope read) on `server`: docs/api.md, "Live
// events". Query: `types=a,b` (filter), `last_event_id=N` (like the
// Last-Event-ID header, which wins), `from=N` (replay from id N; 0 = all
// retained). Without either, the stream carries live events from now on.
// REQUIRES: `log` outlives the server's streams (Stop the server first).
void RegisterEventRoutes(RpcServer& server, EventLog& log, EventRouteOptions options = {});

}  // namespace tipd::api
