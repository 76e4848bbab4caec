// LazyDeque<T>: a std::deque that holds no memory while it is empty.
//
// libstdc++'s std::deque allocates its map and a 512-byte block when it is
// constructed, so a default one costs about 600 bytes of heap before anything
// is queued. A node keeps two queues per channel and most channels are idle
// (issue 11: <= 2 KiB per idle channel): this one is a single pointer while
// empty, creates the deque on the first push and frees it again when the last
// element leaves. Only the operations the channel state machine uses.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <utility>

namespace tipd {

template <typename T>
class LazyDeque {
 public:
  using Deque = std::deque<T>;
  using iterator = typename Deque::iterator;
  using const_iterator = typename Deque::const_iterator;

  LazyDeque() = default;
  LazyDeque(const LazyDeque& other)
      : d_(other.empty() ? nullptr : std::make_unique<Deque>(*other.d_)) {}
  LazyDeque& operator=(const LazyDeque& other) {
    if (this != &other) d_ = other.empty() ? nullptr : std::make_unique<Deque>(*other.d_);
    return *this;
  }
  LazyDeque(LazyDeque&&) noexcept = default;
  LazyDeque& operator=(LazyDeque&&) noexcept = default;

  bool empty() const { return d_ == nullptr || d_->empty(); }
  // Whether it holds a deque (and so its memory): exactly when !empty().
  bool allocated() const { return d_ != nullptr; }
  size_t size() const { return d_ == nullptr ? 0 : d_->size(); }

  void push_back(T value) {
    if (d_ == nullptr) d_ = std::make_unique<Deque>();
    d_->push_back(std::move(value));
  }
  // REQUIRES: !empty() (front, back, pop_back), i < size() (operator[]).
  T& front() { return d_->front(); }
  const T& front() const { return d_->front(); }
  T& back() { return d_->back(); }
  const T& back() const { return d_->back(); }
  T& operator[](size_t i) { return (*d_)[i]; }
  const T& operator[](size_t i) const { return (*d_)[i]; }
  void pop_back() {
    d_->pop_back();
    ReleaseIfEmpty();
  }
  // Erases [first, last); frees the deque if nothing is left. Invalidates
  // every iterator.
  void erase(const_iterator first, const_iterator last) {
    if (first == last) return;
    d_->erase(first, last);
    ReleaseIfEmpty();
  }
  void clear() { d_.reset(); }

  // An empty LazyDeque iterates an empty range of a shared empty deque.
  iterator begin() { return d_ == nullptr ? Empty().begin() : d_->begin(); }
  iterator end() { return d_ == nullptr ? Empty().end() : d_->end(); }
  const_iterator begin() const { return d_ == nullptr ? Empty().cbegin() : d_->cbegin(); }
  const_iterator end() const { return d_ == nullptr ? Empty().cend() : d_->cend(); }

 private:
  void ReleaseIfEmpty() {
    if (d_ != nullptr && d_->empty()) d_.reset();
  }
  // Never modified: begin() == end() on it, so nothing is ever written
  // through the iterators it hands out. One per type and process.
  static Deque& Empty() {
    static Deque* const empty = new Deque();
    return *empty;
  }

  std::unique_ptr<Deque> d_;
};

}  // namespace tipd
