// Metered streams (docs/api.md "Streams"): a tip of `amount` every
// `interval_ms` to a channel or a peer, sent through the channel manager's
// normal path (coalesced like any tip) and charged to the creating token's
// daily cap.
//
// Schedule: interval k is due at start_at_ms + k * interval_ms (wall clock,
// from the Clock seam; timers from the Timers seam, so in-process tests
// drive time by hand). Interval 0 is due at creation (and at a resume, which
// starts a new schedule: paused time is neither paid nor skipped).
//
// Exactly once: a stream's record ('Q' stream_id[16], StoredStream) is
// rewritten by the tip's charge (StreamCharge) in the very batch of the
// update that signs the tip, so "interval paid" and the payment are one
// write: after a crash either both are on disk or neither (and the interval
// is then still due). At most one tip per stream is in progress at a time.
//
// Missed intervals (the node was down, the peer offline, the previous tip
// still waiting for its ack): when a tick finds d > 1 intervals due, policy
// "skip" (the default) pays the newest one and records d - 1 as
// intervals_skipped; "pay" pays min(d, kMaxCatchUp) of them in one tip of
// amount x n and records the rest as skipped. Nothing is skipped silently.
//
// A tip refused for a passing reason (peer offline, queue full, read-only)
// leaves its interval due; the stream tries again after min(interval,
// retry_ms), so a node that restarts pays once its peer is back.
//
// End: once max_total is paid (the last tip is cut to what is left), or the
// next interval would be due at or after end_at_ms, the stream is
// "finished". A refusal by the token's cap pauses it ("paused", with the
// reason); a channel that is gone or closing fails it ("failed"). Event
// thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "node/channel_manager.h"
#include "node/seams.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tipd/storage.pb.h"
#include "util/clock.h"
#include "util/status.h"

namespace boost::asio {
class io_context;
}

namespace tipd::node {

inline constexpr char kStreamKeyFamily = 'Q';

struct StreamOptions {
  uint64_t min_interval_ms = 1000;
  uint64_t max_interval_ms = 30ull * 86'400'000;
  // The most all active streams together may pay per second.
  uint64_t max_per_second = 100'000;
  size_t max_active = 1000;
  // The most intervals one catch-up tip pays under the "pay" policy.
  uint64_t max_catch_up = 10;
  // A tip refused for a passing reason (peer offline, queue full) is tried
  // again after min(interval, retry_ms).
  uint64_t retry_ms = 5'000;
};

// Who creates a stream: the token whose cap each interval is charged to.
struct StreamOwner {
  std::string token_id;  // 16 bytes ("" for none)
  uint32_t scopes = 0;
  uint64_t expires_at_ms = 0;
  uint64_t daily_cap = 0;
  bool admin = false;  // sees and controls every stream
};

// Why a stream call failed: an HTTP status and code (api/stream_api.cc).
struct StreamError {
  int http = 400;
  std::string code;
  std::string message;
};
using StreamResult = std::function<void(const v1::Stream*, const StreamError*)>;

class StreamScheduler {
 public:
  // The budget an interval's tip is charged to (the token's daily cap), or
  // null for none.
  using ChargeFor = std::function<std::shared_ptr<TipCharge>(const v1::StoredStream&)>;

  StreamScheduler(boost::asio::io_context& io, storage::Database& db,
                  storage::GroupCommitter& committer, const Clock& clock, Timers& timers,
                  ChannelManager& channels, crypto::RandomSource& rng, StreamOptions options = {});
  ~StreamScheduler();
  StreamScheduler(const StreamScheduler&) = delete;
  StreamScheduler& operator=(const StreamScheduler&) = delete;

  void SetEventSink(EventSink* sink) { events_ = sink; }
  void SetChargeFor(ChargeFor charge_for) { charge_for_ = std::move(charge_for); }
  // Loads every stream and schedules the active ones. After the channel
  // manager started.
  Status Start();

  // Checks, persists (synced) and starts a stream; answers once durable.
  void Create(const v1::CreateStreamRequest& request, const StreamOwner& owner, StreamResult done);
  std::vector<v1::Stream> List(const StreamOwner& owner) const;
  void Get(const std::string& id_hex, const StreamOwner& owner, StreamResult done) const;
  // "pause", "resume" or "stop".
  void Control(const std::string& id_hex, const std::string& action, const StreamOwner& owner,
               StreamResult done);

  // For tests.
  size_t active() const;
  const v1::StoredStream* Find(const std::string& id_hex) const;

 private:
  struct Live {
    v1::StoredStream rec;  // as staged (possibly ahead of the disk)
    bool in_flight = false;
    Timers::Id timer = 0;
  };
  class Charge;
  friend class Charge;

  Live* FindLive(const std::string& id_hex, const StreamOwner& owner, StreamError* error);
  void Arm(Live& s);
  void Tick(const std::string& id);
  // The charge of an interval's tip made it part of the paying batch.
  void StagePaid(const std::string& id, uint64_t start_at, uint64_t k_now, uint64_t paid,
                 uint64_t skipped, uint64_t amount, storage::WriteBatch* batch);
  void OnAnswer(const std::string& id, const TipOutcome& outcome);
  // Ends (or pauses) a stream by itself, persisting it and emitting
  // stream_stopped.
  void Halt(Live& s, const std::string& state, const std::string& reason);
  void Persist(Live& s, std::function<void(Status)> then);
  void Emit(const std::string& type, const v1::Stream& stream);
  uint64_t DueAt(const v1::StoredStream& r, uint64_t k) const;
  uint64_t ActiveRate() const;

  boost::asio::io_context& io_;
  storage::Database& db_;
  storage::GroupCommitter& committer_;
  const Clock& clock_;
  Timers& timers_;
  ChannelManager& channels_;
  crypto::RandomSource& rng_;
  StreamOptions options_;
  EventSink* events_ = nullptr;
  ChargeFor charge_for_;
  std::map<std::string, Live> streams_;  // by id hex
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::node
