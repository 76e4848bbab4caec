// Refunds (docs/api.md "Refunds", docs/protocol.md "Refund links"): the
// running total refunded per original tip, on both sides of a channel.
//
// A refund is an ordinary tip in the refunder's direction whose metadata
// carries `refund_of` = "<channel_id hex>:<index>", the index of the
// original tip in the opposite direction. The metadata is part of the signed
// canonical tip, so the link is covered by the refunder's signature.
//
// Records: 'F' channel_id[32] direction[1] index[8 BE] -> StoredRefund, the
// direction and index of the ORIGINAL tip as this node sees it (the refunder
// keeps its received originals under direction 1, the payer its sent ones
// under direction 0). A record is written in the same batch as the update
// that carries the refund (sent: the refund's signed update; received: the
// peer's update and our ack), so the total never disagrees with the history.
//
// The book keeps what is staged (possibly not yet durable: a window of
// updates may be in the committer) and what is reserved (refunds queued but
// not yet signed) in memory, so two refund requests can never together pass
// the original amount. Event thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "node/seams.h"
#include "storage/storage.h"
#include "tipd/storage.pb.h"
#include "util/status.h"

namespace tipd::node {

inline constexpr char kRefundOfKey[] = "refund_of";
inline constexpr char kRefundKeyFamily = 'F';
// At most this many refunds of one tip (each is a tip of its own).
inline constexpr size_t kMaxRefundsPerTip = 100;

std::string RefundKey(std::string_view channel_id, storage::Direction direction, uint64_t index);
// "<64 hex>:<decimal index>" -> (channel id hex, index); nullopt if malformed.
std::optional<std::pair<std::string, uint64_t>> ParseRefundOf(std::string_view value);
// The tip's refund_of metadata value, if any.
const std::string* RefundOfMetadata(const v1::Tip& tip);

class RefundBook {
 public:
  explicit RefundBook(storage::Database& db) : db_(db) {}
  RefundBook(const RefundBook&) = delete;
  RefundBook& operator=(const RefundBook&) = delete;

  // The refunds of the original tip (staged, so possibly ahead of the disk).
  Result<v1::StoredRefund> Get(const std::string& channel_id, storage::Direction direction,
                               uint64_t index);
  uint64_t Reserved(const std::string& channel_id, storage::Direction direction,
                    uint64_t index) const;
  void Reserve(const std::string& channel_id, storage::Direction direction, uint64_t index,
               uint64_t amount);
  void Release(const std::string& channel_id, storage::Direction direction, uint64_t index,
               uint64_t amount);
  // Adds a refund of `amount` to the original's total (moving it out of the
  // reservation if `reserved`), records `refund_index` (0: not known) and
  // puts the record in `batch`. Returns the new total.
  Result<uint64_t> Stage(const std::string& channel_id, storage::Direction direction,
                         uint64_t index, uint64_t amount, uint64_t refund_index, bool reserved,
                         storage::WriteBatch* batch);
  // The records of one direction with from <= index < to, for history pages.
  Result<std::map<uint64_t, v1::StoredRefund>> Range(const std::string& channel_id,
                                                     storage::Direction direction, uint64_t from,
                                                     uint64_t to);

 private:
  using Key = std::tuple<std::string, int, uint64_t>;
  struct Entry {
    v1::StoredRefund staged;
    uint64_t reserved = 0;
  };
  Result<Entry*> Load(const std::string& channel_id, storage::Direction direction, uint64_t index);

  storage::Database& db_;
  std::map<Key, Entry> entries_;
};

// The charge of a refund request: reserves the amount in the book (and in the
// token's cap, `inner`), and stages the new total in the batch that signs
// the refund. Dropped unused, it gives the reservation back.
class RefundCharge final : public TipCharge {
 public:
  RefundCharge(std::shared_ptr<RefundBook> book, std::string channel_id, uint64_t index,
               std::shared_ptr<TipCharge> inner)
      : book_(std::move(book)),
        channel_id_(std::move(channel_id)),
        index_(index),
        inner_(std::move(inner)) {}
  ~RefundCharge() override;
  Status Reserve(uint64_t amount) override;
  void CommitToBatch(storage::WriteBatch* batch) override;
  // The requester's own admission (a token record's restrictions, rate and
  // cap) first, then the refund's reservation against the original.
  std::optional<ChargeRefusal> Admit(const std::string& channel_id, const crypto::PublicKey& peer,
                                     uint64_t amount) override;
  // The total after this refund, once committed.
  uint64_t total_after() const { return total_after_; }

 private:
  std::shared_ptr<RefundBook> book_;
  std::string channel_id_;
  uint64_t index_;
  std::shared_ptr<TipCharge> inner_;
  uint64_t amount_ = 0;
  bool reserved_ = false;
  uint64_t total_after_ = 0;
};

}  // namespace tipd::node
