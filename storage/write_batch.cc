#include <leveldb/write_batch.h>

#include "storage/storage.h"

namespace tipd::storage {

WriteBatch::WriteBatch() : rep_(std::make_unique<leveldb::WriteBatch>()) {}
WriteBatch::~WriteBatch() = default;

// A moved-from batch is left empty and usable, like a moved-from container.
WriteBatch::WriteBatch(WriteBatch&& other) noexcept
    : rep_(std::exchange(other.rep_, std::make_unique<leveldb::WriteBatch>())),
      count_(std::exchange(other.count_, 0)) {}

WriteBatch& WriteBatch::operator=(WriteBatch&& other) noexcept {
  if (this != &other) {
    rep_ = std::exchange(other.rep_, std::make_unique<leveldb::WriteBatch>());
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void WriteBatch::Put(std::string_view key, std::string_view value) {
  rep_->Put(leveldb::Slice(key.data(), key.size()), leveldb::Slice(value.data(), value.size()));
  ++count_;
}

void WriteBatch::Delete(std::string_view key) {
  rep_->Delete(leveldb::Slice(key.data(), key.size()));
  ++count_;
}

void WriteBatch::Append(const WriteBatch& other) {
  rep_->Append(*other.rep_);
  count_ += other.count_;
}

void WriteBatch::Clear() {
  rep_->Clear();
  count_ = 0;
}

size_t WriteBatch::ApproximateBytes() const { return rep_->ApproximateSize(); }

}  // namespace tipd::storage
