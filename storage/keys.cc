#include <cstdio>

#include "storage/storage.h"

namespace tipd::storage {

void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

std::string EscapeKey(std::string_view key) {
  std::string out;
  out.reserve(key.size() * 2);
  for (char c : key) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7f && b != '\\') {
      out.push_back(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", b);
      out.append(buf);
    }
  }
  return out;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last != 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return end;
}

Status CheckChannelId(std::string_view channel_id) {
  if (channel_id.size() != kChannelIdSize) {
    return Status::InvalidArgument("channel id must be " + std::to_string(kChannelIdSize) +
                                   " bytes, got " + std::to_string(channel_id.size()));
  }
  return Status::Ok();
}

std::string MetaKey(std::string_view name) {
  std::string key(1, static_cast<char>(KeyFamily::kMeta));
  key.append(name);
  return key;
}

std::string ChannelKey(std::string_view channel_id) {
  assert(channel_id.size() == kChannelIdSize);
  std::string key(1, static_cast<char>(KeyFamily::kChannel));
  key.append(channel_id);
  return key;
}

std::string DirectionKey(std::string_view channel_id, Direction direction) {
  assert(channel_id.size() == kChannelIdSize);
  std::string key(1, static_cast<char>(KeyFamily::kDirection));
  key.append(channel_id);
  key.push_back(static_cast<char>(direction));
  return key;
}

std::string TipPrefix(std::string_view channel_id, Direction direction) {
  assert(channel_id.size() == kChannelIdSize);
  std::string key(1, static_cast<char>(KeyFamily::kTip));
  key.append(channel_id);
  key.push_back(static_cast<char>(direction));
  return key;
}

std::string TipKey(std::string_view channel_id, Direction direction, uint64_t index) {
  std::string key = TipPrefix(channel_id, direction);
  AppendBigEndian64(&key, index);
  return key;
}

namespace internal {

Status CheckRecordVersion(std::string_view key, std::string_view type_name, uint32_t version,
                          uint32_t current_version) {
  if (version >= 1 && version <= current_version) return Status::Ok();
  std::string reason = version == 0 ? std::string("version missing (0)")
                                    : "unknown version " + std::to_string(version);
  return Status::Corruption(std::string(type_name) + " record at key \"" + EscapeKey(key) +
                            "\": " + reason + "; this build reads versions 1.." +
                            std::to_string(current_version));
}

Status UnparsableRecord(std::string_view key, std::string_view type_name, size_t size) {
  return Status::Corruption(std::string(type_name) + " record at key \"" + EscapeKey(key) +
                            "\": " + std::to_string(size) + " bytes do not parse as " +
                            std::string(type_name));
}

}  // namespace internal
}  // namespace tipd::storage
