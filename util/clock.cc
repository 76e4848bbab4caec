#include "util/clock.h"

#include <cassert>

namespace tipd {

int64_t SystemClock::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::steady_clock::time_point SystemClock::SteadyNow() const {
  return std::chrono::steady_clock::now();
}

ManualClock::ManualClock(int64_t now_ms) : now_ms_(now_ms), steady_ms_(3'600'000) {}

std::chrono::steady_clock::time_point ManualClock::SteadyNow() const {
  return std::chrono::steady_clock::time_point(std::chrono::milliseconds(steady_ms_.load()));
}

void ManualClock::AdvanceMs(int64_t ms) {
  assert(ms >= 0);
  now_ms_.fetch_add(ms);
  steady_ms_.fetch_add(ms);
}

namespace {
int64_t SteadyMs(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.SteadyNow().time_since_epoch())
      .count();
}
}  // namespace

Timers::Id ManualTimers::After(std::chrono::milliseconds delay, std::function<void()> fn) {
  const Id id = next_id_++;
  const int64_t due = SteadyMs(clock_) + std::max<int64_t>(0, delay.count());
  timers_.emplace(std::make_pair(due, id), std::move(fn));
  due_of_.emplace(id, due);
  return id;
}

void ManualTimers::Cancel(Id id) {
  auto it = due_of_.find(id);
  if (it == due_of_.end()) return;
  timers_.erase({it->second, id});
  due_of_.erase(it);
}

void ManualTimers::AdvanceMs(int64_t ms) {
  assert(ms >= 0);
  const int64_t end = SteadyMs(clock_) + ms;
  while (!timers_.empty() && timers_.begin()->first.first <= end) {
    auto it = timers_.begin();
    const int64_t due = it->first.first;
    std::function<void()> fn = std::move(it->second);
    due_of_.erase(it->first.second);
    timers_.erase(it);
    const int64_t now = SteadyMs(clock_);
    if (due > now) clock_.AdvanceMs(due - now);
    fn();
  }
  const int64_t now = SteadyMs(clock_);
  if (end > now) clock_.AdvanceMs(end - now);
}

}  // namespace tipd
