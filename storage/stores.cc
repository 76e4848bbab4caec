#include <algorithm>
#include <limits>

#include "storage/storage.h"
#include "util/bytes.h"

namespace tipd::storage {

using tipd::v1::NodeMeta;
using tipd::v1::StoredChannel;
using tipd::v1::StoredDirection;
using tipd::v1::StoredTip;

namespace {
constexpr std::string_view kNodeMetaName = "node";
}  // namespace

void MetaStore::Put(WriteBatch* batch, const NodeMeta& meta) const {
  records_.Put(batch, MetaKey(kNodeMetaName), meta);
}

Result<std::optional<NodeMeta>> MetaStore::Get() const {
  return records_.Get(MetaKey(kNodeMetaName));
}

Status ChannelStore::Put(WriteBatch* batch, const StoredChannel& channel) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel.channel_id()));
  records_.Put(batch, ChannelKey(channel.channel_id()), channel);
  return Status::Ok();
}

Result<std::optional<StoredChannel>> ChannelStore::Get(std::string_view channel_id) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  return records_.Get(ChannelKey(channel_id));
}

Result<std::vector<StoredChannel>> ChannelStore::List() const {
  const std::string prefix(1, static_cast<char>(KeyFamily::kChannel));
  std::vector<StoredChannel> channels;
  TIPD_RETURN_IF_ERROR(records_.Scan(prefix, PrefixEnd(prefix), std::numeric_limits<size_t>::max(),
                                     [&](std::string_view key, StoredChannel channel) -> Status {
                                       if (key.substr(1) != channel.channel_id()) {
                                         return Status::Corruption(
                                             "StoredChannel record at key \"" + EscapeKey(key) +
                                             "\" holds a different channel id");
                                       }
                                       channels.push_back(std::move(channel));
                                       return Status::Ok();
                                     }));
  return channels;
}

Status DirectionStore::Put(WriteBatch* batch, std::string_view channel_id, Direction direction,
                           const StoredDirection& state) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  records_.Put(batch, DirectionKey(channel_id, direction), state);
  return Status::Ok();
}

Result<std::optional<StoredDirection>> DirectionStore::Get(std::string_view channel_id,
                                                           Direction direction) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  return records_.Get(DirectionKey(channel_id, direction));
}

Status TipHistoryStore::Append(WriteBatch* batch, std::string_view channel_id, Direction direction,
                               const std::vector<StoredTip>& tips) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  for (const StoredTip& tip : tips) {
    records_.Put(batch, TipKey(channel_id, direction, tip.tip().index()), tip);
  }
  return Status::Ok();
}

Result<std::optional<StoredTip>> TipHistoryStore::Get(std::string_view channel_id,
                                                      Direction direction, uint64_t index) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  return records_.Get(TipKey(channel_id, direction, index));
}

Result<std::optional<TipPosition>> TipHistoryStore::FirstAtOrAfterKey(
    const std::string& start) const {
  const std::string family(1, static_cast<char>(KeyFamily::kTip));
  std::optional<TipPosition> found;
  const size_t expected = 1 + kChannelIdSize + 1 + 8;
  TIPD_RETURN_IF_ERROR(
      db_->Scan(start, PrefixEnd(family), 1, [&](std::string_view key, std::string_view) -> Status {
        if (key.size() != expected || static_cast<uint8_t>(key[1 + kChannelIdSize]) > 1) {
          return Status::Corruption("tip history key \"" + EscapeKey(key) +
                                    "\" is not channel id + direction + index");
        }
        TipPosition p;
        p.channel_id = std::string(key.substr(1, kChannelIdSize));
        p.direction = static_cast<Direction>(key[1 + kChannelIdSize]);
        for (char c : key.substr(key.size() - 8)) {
          p.index = (p.index << 8) | static_cast<unsigned char>(c);
        }
        found = std::move(p);
        return Status::Ok();
      }));
  return found;
}

Result<std::optional<TipPosition>> TipHistoryStore::FirstFrom(std::string_view channel_id,
                                                              Direction direction,
                                                              uint64_t from_index) const {
  if (channel_id.empty())
    return FirstAtOrAfterKey(std::string(1, static_cast<char>(KeyFamily::kTip)));
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  return FirstAtOrAfterKey(TipKey(channel_id, direction, from_index));
}

Result<std::optional<TipPosition>> TipHistoryStore::FirstAfterChannel(
    std::string_view channel_id) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  std::string prefix(1, static_cast<char>(KeyFamily::kTip));
  prefix.append(channel_id);
  return FirstAtOrAfterKey(PrefixEnd(prefix));
}

Result<std::vector<StoredTip>> TipHistoryStore::ReadRange(std::string_view channel_id,
                                                          Direction direction, uint64_t from_index,
                                                          size_t limit) const {
  TIPD_RETURN_IF_ERROR(CheckChannelId(channel_id));
  std::vector<StoredTip> tips;
  if (limit == 0) return tips;
  const std::string start = TipKey(channel_id, direction, from_index);
  // from_index + limit may pass the largest index: then read to the end of
  // this direction's tips.
  uint64_t end_index = 0;
  const std::string end = CheckedAdd(from_index, limit, &end_index)
                              ? TipKey(channel_id, direction, end_index)
                              : PrefixEnd(TipPrefix(channel_id, direction));
  tips.reserve(std::min<size_t>(limit, 1024));
  TIPD_RETURN_IF_ERROR(
      records_.Scan(start, end, limit, [&](std::string_view key, StoredTip tip) -> Status {
        if (key.size() != start.size()) {
          return Status::Corruption("tip history key \"" + EscapeKey(key) + "\" has length " +
                                    std::to_string(key.size()) + ", expected " +
                                    std::to_string(start.size()));
        }
        uint64_t key_index = 0;
        for (char c : key.substr(key.size() - 8)) {
          key_index = (key_index << 8) | static_cast<unsigned char>(c);
        }
        if (tip.tip().index() != key_index) {
          return Status::Corruption("StoredTip record at key \"" + EscapeKey(key) +
                                    "\" holds tip index " + std::to_string(tip.tip().index()));
        }
        tips.push_back(std::move(tip));
        return Status::Ok();
      }));
  return tips;
}

}  // namespace tipd::storage
