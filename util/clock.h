// The time seams: logic takes a Clock& to read the time and a Timers& to be
// called back later; it never reads the system clock or arms a real timer
// itself, so a test can drive time by hand (ManualClock + ManualTimers).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <utility>

namespace tipd {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, milliseconds since the Unix epoch. May jump; use for
  // timestamps shown to people or written in records, not for timeouts.
  virtual int64_t NowMs() const = 0;
  // Monotonic time for timeouts and intervals.
  virtual std::chrono::steady_clock::time_point SteadyNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
  std::chrono::steady_clock::time_point SteadyNow() const override;
};

// A clock that moves only when told. Thread-safe.
class ManualClock final : public Clock {
 public:
  // Starts at `now_ms` wall time and at steady_clock's epoch + 1h.
  explicit ManualClock(int64_t now_ms = 1'700'000'000'000);
  int64_t NowMs() const override { return now_ms_.load(); }
  std::chrono::steady_clock::time_point SteadyNow() const override;
  // Moves both clocks forward by `ms`. REQUIRES: ms >= 0.
  void AdvanceMs(int64_t ms);
  // Sets the wall clock only (it may go backwards, as a real one can).
  void SetNowMs(int64_t now_ms) { now_ms_.store(now_ms); }

 private:
  std::atomic<int64_t> now_ms_;
  std::atomic<int64_t> steady_ms_;
};

// One-shot callbacks after a delay. Callbacks run on the owner's event
// thread (the io_context thread for AsioTimers, the caller of AdvanceMs for
// ManualTimers), never inside After() itself.
class Timers {
 public:
  using Id = uint64_t;
  virtual ~Timers() = default;
  // Schedules `fn` to run once `delay` has passed. Returns an id for Cancel.
  virtual Id After(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  // The callback will not run. Unknown or already fired ids are ignored.
  virtual void Cancel(Id id) = 0;
};

// Timers that fire only when a test moves a ManualClock with AdvanceMs (due
// callbacks run in deadline order, each at its own time). Single-threaded:
// call from the thread that runs the code under test.
class ManualTimers final : public Timers {
 public:
  explicit ManualTimers(ManualClock& clock) : clock_(clock) {}
  Id After(std::chrono::milliseconds delay, std::function<void()> fn) override;
  void Cancel(Id id) override;
  // Moves the clock forward by `ms`, running every callback that falls due on
  // the way (including ones those callbacks schedule within the span).
  void AdvanceMs(int64_t ms);
  size_t pending() const { return timers_.size(); }

 private:
  ManualClock& clock_;
  Id next_id_ = 1;
  // (due steady ms, id) -> callback.
  std::map<std::pair<int64_t, Id>, std::function<void()>> timers_;
  std::map<Id, int64_t> due_of_;
};

}  // namespace tipd
