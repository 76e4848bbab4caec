#include "node/refunds.h"

#include <charconv>

#include "util/bytes.h"

namespace tipd::node {

namespace {
using RefundRecords = storage::RecordStore<v1::StoredRefund>;
}  // namespace

std::string RefundKey(std::string_view channel_id, storage::Direction direction, uint64_t index) {
  std::string key(1, kRefundKeyFamily);
  key.append(channel_id);
  key.push_back(static_cast<char>(direction));
  storage::AppendBigEndian64(&key, index);
  return key;
}

std::optional<std::pair<std::string, uint64_t>> ParseRefundOf(std::string_view value) {
  const size_t colon = value.find(':');
  if (colon != 64 || value.size() < 66 || value.size() > 66 + 19) return std::nullopt;
  const std::string hex(value.substr(0, 64));
  auto bytes = HexDecode(hex);
  if (!bytes.ok() || bytes->size() != 32) return std::nullopt;
  uint64_t index = 0;
  const std::string_view digits = value.substr(65);
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || index == 0) return std::nullopt;
  return std::make_pair(HexEncode(*bytes), index);
}

const std::string* RefundOfMetadata(const v1::Tip& tip) {
  for (const auto& m : tip.metadata()) {
    if (m.key() == kRefundOfKey) return &m.value();
  }
  return nullptr;
}

Result<RefundBook::Entry*> RefundBook::Load(const std::string& channel_id,
                                            storage::Direction direction, uint64_t index) {
  const Key key{channel_id, static_cast<int>(direction), index};
  auto it = entries_.find(key);
  if (it != entries_.end()) return &it->second;
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredRefund> rec,
                        RefundRecords(&db_).Get(RefundKey(channel_id, direction, index)));
  Entry& e = entries_[key];
  if (rec) e.staged = std::move(*rec);
  return &e;
}

Result<v1::StoredRefund> RefundBook::Get(const std::string& channel_id,
                                         storage::Direction direction, uint64_t index) {
  TIPD_ASSIGN_OR_RETURN(Entry * e, Load(channel_id, direction, index));
  return e->staged;
}

uint64_t RefundBook::Reserved(const std::string& channel_id, storage::Direction direction,
                              uint64_t index) const {
  auto it = entries_.find(Key{channel_id, static_cast<int>(direction), index});
  return it == entries_.end() ? 0 : it->second.reserved;
}

void RefundBook::Reserve(const std::string& channel_id, storage::Direction direction,
                         uint64_t index, uint64_t amount) {
  entries_[Key{channel_id, static_cast<int>(direction), index}].reserved += amount;
}

void RefundBook::Release(const std::string& channel_id, storage::Direction direction,
                         uint64_t index, uint64_t amount) {
  auto it = entries_.find(Key{channel_id, static_cast<int>(direction), index});
  if (it == entries_.end()) return;
  it->second.reserved -= std::min(it->second.reserved, amount);
}

Result<uint64_t> RefundBook::Stage(const std::string& channel_id, storage::Direction direction,
                                   uint64_t index, uint64_t amount, uint64_t refund_index,
                                   bool reserved, storage::WriteBatch* batch) {
  TIPD_ASSIGN_OR_RETURN(Entry * e, Load(channel_id, direction, index));
  if (reserved) e->reserved -= std::min(e->reserved, amount);
  e->staged.set_total(e->staged.total() + amount);
  e->staged.set_count(e->staged.count() + 1);
  if (refund_index != 0) e->staged.add_refund_indexes(refund_index);
  RefundRecords(&db_).Put(batch, RefundKey(channel_id, direction, index), e->staged);
  return e->staged.total();
}

Result<std::map<uint64_t, v1::StoredRefund>> RefundBook::Range(const std::string& channel_id,
                                                               storage::Direction direction,
                                                               uint64_t from, uint64_t to) {
  std::map<uint64_t, v1::StoredRefund> out;
  if (from >= to) return out;
  TIPD_RETURN_IF_ERROR(RefundRecords(&db_).Scan(
      RefundKey(channel_id, direction, from), RefundKey(channel_id, direction, to), to - from,
      [&](std::string_view key, v1::StoredRefund rec) {
        uint64_t index = 0;
        for (size_t i = key.size() - 8; i < key.size(); ++i) {
          index = (index << 8) | static_cast<uint8_t>(key[i]);
        }
        out.emplace(index, std::move(rec));
        return Status::Ok();
      }));
  // Staged records not yet durable are newer than the disk.
  for (auto it = entries_.lower_bound(Key{channel_id, static_cast<int>(direction), from});
       it != entries_.end() && std::get<0>(it->first) == channel_id &&
       std::get<1>(it->first) == static_cast<int>(direction) && std::get<2>(it->first) < to;
       ++it) {
    if (it->second.staged.total() > 0) out[std::get<2>(it->first)] = it->second.staged;
  }
  return out;
}

RefundCharge::~RefundCharge() {
  if (reserved_) {
    book_->Release(channel_id_, storage::Direction::kRemoteToLocal, index_, amount_);
  }
}

Status RefundCharge::Reserve(uint64_t amount) {
  if (inner_) TIPD_RETURN_IF_ERROR(inner_->Reserve(amount));
  book_->Reserve(channel_id_, storage::Direction::kRemoteToLocal, index_, amount);
  amount_ = amount;
  reserved_ = true;
  return Status::Ok();
}

std::optional<ChargeRefusal> RefundCharge::Admit(const std::string& channel_id,
                                                 const crypto::PublicKey& peer, uint64_t amount) {
  if (inner_) {
    if (auto refused = inner_->Admit(channel_id, peer, amount)) return refused;
  }
  book_->Reserve(channel_id_, storage::Direction::kRemoteToLocal, index_, amount);
  amount_ = amount;
  reserved_ = true;
  return std::nullopt;
}

void RefundCharge::CommitToBatch(storage::WriteBatch* batch) {
  if (inner_) inner_->CommitToBatch(batch);
  if (!reserved_) return;
  reserved_ = false;
  auto total = book_->Stage(channel_id_, storage::Direction::kRemoteToLocal, index_, amount_, 0,
                            /*reserved=*/true, batch);
  total_after_ = total.ok() ? *total : 0;
}

}  // namespace tipd::node
