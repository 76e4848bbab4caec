// BoxedOptional<T>: an optional whose value lives on the heap.
//
// std::optional<T> is as large as T even while empty. A node keeps two
// optional acks per channel (the peer's receipt and our latest ack) and most
// channels are idle (issue 11: <= 2 KiB per idle channel, docs/
// performance.md): this one is a single pointer while empty. The value is
// allocated when first set and reused by later assignments, so a busy channel
// pays one allocation, not one per ack. Only the operations the channel state
// machine uses.
#pragma once

#include <memory>
#include <optional>
#include <utility>

namespace tipd {

template <typename T>
class BoxedOptional {
 public:
  BoxedOptional() = default;
  BoxedOptional(const BoxedOptional& other)
      : p_(other.p_ == nullptr ? nullptr : std::make_unique<T>(*other.p_)) {}
  BoxedOptional& operator=(const BoxedOptional& other) {
    if (this == &other) return *this;
    if (other.p_ == nullptr) {
      p_.reset();
    } else {
      *this = *other.p_;
    }
    return *this;
  }
  BoxedOptional(BoxedOptional&&) noexcept = default;
  BoxedOptional& operator=(BoxedOptional&&) noexcept = default;

  BoxedOptional& operator=(const T& value) {
    if (p_ == nullptr) {
      p_ = std::make_unique<T>(value);
    } else {
      *p_ = value;
    }
    return *this;
  }
  BoxedOptional& operator=(std::optional<T>&& value) {
    if (!value) {
      p_.reset();
    } else if (p_ == nullptr) {
      p_ = std::make_unique<T>(std::move(*value));
    } else {
      *p_ = std::move(*value);
    }
    return *this;
  }

  bool has_value() const { return p_ != nullptr; }
  explicit operator bool() const { return p_ != nullptr; }
  // REQUIRES: has_value().
  const T& operator*() const { return *p_; }
  const T* operator->() const { return p_.get(); }
  void reset() { p_.reset(); }
  // The value as a std::optional (a copy).
  std::optional<T> ToOptional() const {
    return p_ == nullptr ? std::nullopt : std::optional<T>(*p_);
  }

 private:
  std::unique_ptr<T> p_;
};

}  // namespace tipd
