#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"

namespace tipd::storage {
namespace {

using tipd::v1::NodeMeta;
using tipd::v1::StoredChannel;
using tipd::v1::StoredDirection;
using tipd::v1::StoredTip;

std::unique_ptr<Database> OpenOrDie(const std::filesystem::path& dir, const Options& o = {}) {
  auto db = Database::Open(dir, o);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

std::string ChannelId(char fill) { return std::string(kChannelIdSize, fill); }

StoredTip MakeTip(uint64_t index) {
  StoredTip t;
  t.mutable_tip()->set_index(index);
  t.mutable_tip()->set_amount(index * 10);
  t.mutable_tip()->set_message("tip " + std::to_string(index));
  t.set_nonce(index);
  return t;
}

Status WriteRaw(Database* db, std::string_view key, std::string_view value) {
  WriteBatch b;
  b.Put(key, value);
  return db->Write(b);
}

TEST(DatabaseTest, ReopenKeepsWrites) {
  tipd::testing::TempDir dir;
  {
    auto db = OpenOrDie(dir.path() / "db");
    ASSERT_NE(db, nullptr);
    WriteBatch b;
    b.Put("a", "1");
    b.Put("b", "2");
    b.Delete("b");
    EXPECT_EQ(b.count(), 3u);
    EXPECT_GT(b.ApproximateBytes(), 0u);
    ASSERT_TRUE(db->Write(b).ok());
  }
  auto db = OpenOrDie(dir.path() / "db");
  ASSERT_NE(db, nullptr);
  auto a = db->Get("a");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ(**a, "1");
  auto b = db->Get("b");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->has_value());
  auto missing = db->Get("never written");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

// The write buffer decides when LevelDB writes its memtable out as a table
// (node option db-write-buffer): 3 MiB of writes make a table with a 1 MiB
// buffer and none with 64 MiB (LevelDB writes a table only when the memtable
// is full, or at open; not at close).
TEST(DatabaseTest, WriteBufferDecidesWhenATableIsWritten) {
  auto tables = [](const std::filesystem::path& dir) {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      n += e.path().extension() == ".ldb" ? 1 : 0;
    }
    return n;
  };
  for (size_t mib : {1, 64}) {
    tipd::testing::TempDir dir;
    Options o;
    o.write_buffer_bytes = mib << 20;
    auto db = Database::Open(dir.path() / "db", o);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ((*db)->write_buffer_bytes(), mib << 20);
    const std::string value(1024, 'v');
    for (int b = 0; b < 12; ++b) {  // 12 synced batches of 256 KiB
      WriteBatch batch;
      for (int i = 0; i < 256; ++i) batch.Put("k" + std::to_string(b * 256 + i), value);
      ASSERT_TRUE((*db)->Write(batch).ok());
    }
    // With 1 MiB the memtable filled at least twice, and LevelDB lets the
    // second one go only once the first is written as a table; nothing is
    // left to wait for. Closing writes no table of its own.
    db->reset();
    if (mib == 1) {
      EXPECT_GT(tables(dir.path() / "db"), 0u);
    } else {
      EXPECT_EQ(tables(dir.path() / "db"), 0u);
    }
  }
}

TEST(DatabaseTest, SecondOpenOfSameDirectoryIsUnavailableNamingThePath) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  auto second = Database::Open(dir.path());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
  EXPECT_NE(second.status().message().find(dir.path().string()), std::string::npos);
}

TEST(DatabaseTest, OpenWithoutCreateFailsNamingThePath) {
  tipd::testing::TempDir dir;
  Options o;
  o.create_if_missing = false;
  auto db = Database::Open(dir.path() / "absent", o);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), StatusCode::kInvalidArgument) << db.status().ToString();
  EXPECT_NE(db.status().message().find((dir.path() / "absent").string()), std::string::npos)
      << db.status().ToString();
}

TEST(DatabaseTest, ScanVisitsRangeInOrderWithLimit) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  WriteBatch b;
  for (const char* k : {"a1", "a2", "a3", "b1", "b2", "c"}) b.Put(k, std::string("v") + k);
  ASSERT_TRUE(db->Write(b).ok());

  auto collect = [&](std::string_view start, std::string_view end, size_t limit) {
    std::vector<std::string> keys;
    Status s = db->Scan(start, end, limit, [&](std::string_view k, std::string_view v) {
      EXPECT_EQ(v, "v" + std::string(k));
      keys.emplace_back(k);
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return keys;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(collect("a2", "b2", 100), (V{"a2", "a3", "b1"}));
  EXPECT_EQ(collect("a", "", 100), (V{"a1", "a2", "a3", "b1", "b2", "c"}));
  EXPECT_EQ(collect("a", "", 2), (V{"a1", "a2"}));
  EXPECT_EQ(collect("d", "", 10), V{});

  std::vector<std::string> b_keys;
  ASSERT_TRUE(db->ScanPrefix("b", 10, [&](std::string_view k, std::string_view) {
                  b_keys.emplace_back(k);
                  return Status::Ok();
                }).ok());
  EXPECT_EQ(b_keys, (V{"b1", "b2"}));

  // A visitor error stops the scan and is returned.
  int visits = 0;
  Status s = db->Scan("a", "", 100, [&](std::string_view, std::string_view) {
    return ++visits == 2 ? Status::Internal("stop here") : Status::Ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(visits, 2);
}

TEST(DatabaseTest, SnapshotScanSeesOneMomentWhileOthersWrite) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  WriteBatch before;
  for (const char* k : {"k1", "k2", "k3"}) before.Put(k, "old");
  ASSERT_TRUE(db->Write(before).ok());

  auto snap = db->NewSnapshot();
  // After the snapshot: overwrite one key, delete one, add one.
  WriteBatch after;
  after.Put("k1", "new");
  after.Delete("k2");
  after.Put("k4", "new");
  ASSERT_TRUE(db->Write(after).ok());

  std::vector<std::pair<std::string, std::string>> seen;
  Status s = db->ScanSnapshot(*snap, "", "", SIZE_MAX, [&](std::string_view k, std::string_view v) {
    seen.emplace_back(k, v);
    // A write made during the scan is invisible to it as well.
    if (seen.size() == 1) {
      EXPECT_TRUE(WriteRaw(db.get(), "k0", "during").ok());
    }
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  using P = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(seen, (P{{"k1", "old"}, {"k2", "old"}, {"k3", "old"}}));

  // The live state has every later write.
  std::vector<std::string> live;
  ASSERT_TRUE(db->Scan("", "", SIZE_MAX, [&](std::string_view k, std::string_view) {
                  live.emplace_back(k);
                  return Status::Ok();
                }).ok());
  EXPECT_EQ(live, (std::vector<std::string>{"k0", "k1", "k3", "k4"}));
}

TEST(KeysTest, BigEndianIndexOrdersNumerically) {
  const std::string id = ChannelId('\x07');
  std::vector<uint64_t> indexes = {
      0, 1, 255, 256, 65535, 65536, uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()};
  for (size_t i = 1; i < indexes.size(); ++i) {
    EXPECT_LT(TipKey(id, Direction::kLocalToRemote, indexes[i - 1]),
              TipKey(id, Direction::kLocalToRemote, indexes[i]));
  }
  EXPECT_EQ(TipKey(id, Direction::kRemoteToLocal, 1).size(), 1 + kChannelIdSize + 1 + 8);
  EXPECT_EQ(TipKey(id, Direction::kRemoteToLocal, 1)[0], 'T');
  EXPECT_EQ(ChannelKey(id)[0], 'C');
  EXPECT_EQ(DirectionKey(id, Direction::kLocalToRemote)[0], 'D');
  EXPECT_EQ(MetaKey("node"), "Mnode");
}

TEST(KeysTest, PrefixEndAndEscape) {
  EXPECT_EQ(PrefixEnd("ab"), "ac");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff\xff", 2)), "");
  EXPECT_EQ(EscapeKey(std::string("C\x00\xff\\z", 5)), "C\\x00\\xff\\x5cz");
  EXPECT_TRUE(CheckChannelId(ChannelId('a')).ok());
  EXPECT_EQ(CheckChannelId("short").code(), StatusCode::kInvalidArgument);
}

TEST(RecordStoreTest, PutStampsVersionAndRoundTrips) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  RecordStore<tipd::v1::AccountState> accounts(db.get());
  tipd::v1::AccountState state;
  state.set_version(77);  // ignored: Put stamps the current version
  state.set_balance(1000);
  state.set_nonce(3);
  WriteBatch b;
  accounts.Put(&b, "Aacct", state);
  ASSERT_TRUE(db->Write(b).ok());
  auto got = accounts.Get("Aacct");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->version(), 1u);
  EXPECT_EQ((*got)->balance(), 1000u);
  auto missing = accounts.Get("Anone");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(RecordStoreTest, UnparsableBytesAreCorruptionNamingTheKey) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  const std::string id = ChannelId('\x01');
  ASSERT_TRUE(WriteRaw(db.get(), ChannelKey(id), "\xff\xff\xff garbage").ok());
  ChannelStore channels(db.get());
  auto got = channels.Get(id);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kCorruption);
  EXPECT_NE(got.status().message().find(EscapeKey(ChannelKey(id))), std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find("do not parse"), std::string::npos);
  // List stops at the same record with the same error.
  auto all = channels.List();
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().code(), StatusCode::kCorruption);
}

TEST(RecordStoreTest, UnknownOrMissingVersionIsCorruptionNamingTheKey) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  const std::string id = ChannelId('\x02');
  StoredDirection future;
  future.set_version(2);  // written by a later build
  future.set_acked_nonce(5);
  ASSERT_TRUE(
      WriteRaw(db.get(), DirectionKey(id, Direction::kLocalToRemote), future.SerializeAsString())
          .ok());
  StoredDirection unversioned;
  unversioned.set_acked_nonce(5);
  ASSERT_TRUE(WriteRaw(db.get(), DirectionKey(id, Direction::kRemoteToLocal),
                       unversioned.SerializeAsString())
                  .ok());

  DirectionStore directions(db.get());
  auto got = directions.Get(id, Direction::kLocalToRemote);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kCorruption);
  const std::string& m = got.status().message();
  EXPECT_NE(m.find(EscapeKey(DirectionKey(id, Direction::kLocalToRemote))), std::string::npos) << m;
  EXPECT_NE(m.find("unknown version 2"), std::string::npos) << m;
  EXPECT_NE(m.find("StoredDirection"), std::string::npos) << m;

  auto zero = directions.Get(id, Direction::kRemoteToLocal);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().code(), StatusCode::kCorruption);
  EXPECT_NE(zero.status().message().find("version missing"), std::string::npos);

  // A store that knows version 2 reads it.
  RecordStore<StoredDirection, 2> newer(db.get());
  auto ok = newer.Get(DirectionKey(id, Direction::kLocalToRemote));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->acked_nonce(), 5u);
}

TEST(ChannelStoreTest, PutGetListAndRejectMalformedIds) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  ChannelStore channels(db.get());
  WriteBatch b;
  for (char c : {'\x03', '\x01', '\x02'}) {
    StoredChannel ch;
    ch.set_channel_id(ChannelId(c));
    ch.set_deposit_local(100 * c);
    ch.set_phase(tipd::v1::STORED_CHANNEL_PHASE_OPEN);
    ASSERT_TRUE(channels.Put(&b, ch).ok());
  }
  StoredChannel bad;
  bad.set_channel_id("too short");
  EXPECT_EQ(channels.Put(&b, bad).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.count(), 3u);
  ASSERT_TRUE(db->Write(b).ok());

  auto one = channels.Get(ChannelId('\x02'));
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ((*one)->deposit_local(), 200u);
  EXPECT_EQ((*one)->version(), 1u);
  EXPECT_EQ(channels.Get("x").status().code(), StatusCode::kInvalidArgument);

  auto all = channels.List();
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].channel_id(), ChannelId('\x01'));
  EXPECT_EQ((*all)[2].channel_id(), ChannelId('\x03'));
}

TEST(DirectionStoreTest, DirectionsAreSeparate) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  DirectionStore directions(db.get());
  const std::string id = ChannelId('\x09');
  StoredDirection out;
  out.mutable_latest()->set_nonce(7);
  out.set_acked_nonce(6);
  WriteBatch b;
  ASSERT_TRUE(directions.Put(&b, id, Direction::kLocalToRemote, out).ok());
  ASSERT_TRUE(db->Write(b).ok());
  auto got = directions.Get(id, Direction::kLocalToRemote);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->latest().nonce(), 7u);
  EXPECT_EQ((*got)->acked_nonce(), 6u);
  auto other = directions.Get(id, Direction::kRemoteToLocal);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
}

TEST(MetaStoreTest, RoundTrip) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  MetaStore meta(db.get());
  auto none = meta.Get();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  NodeMeta m;
  m.set_chain_id("tipd-devnet");
  m.set_created_at_ms(1234);
  WriteBatch b;
  meta.Put(&b, m);
  ASSERT_TRUE(db->Write(b).ok());
  auto got = meta.Get();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->chain_id(), "tipd-devnet");
}

TEST(TipHistoryStoreTest, RangeReadsAreInNumericOrderAcrossHundredsOfTips) {
  tipd::testing::TempDir dir;
  const std::string id = ChannelId('\x05');
  const std::string other_id = ChannelId('\x06');
  constexpr uint64_t kTips = 700;  // crosses the 255/256 byte boundary twice
  {
    auto db = OpenOrDie(dir.path());
    ASSERT_NE(db, nullptr);
    TipHistoryStore tips(db.get());
    // Appended in several batches, out of order, with neighbours on both sides
    // (other direction, other channel) that must not leak into the range.
    for (uint64_t start = 1; start <= kTips; start += 100) {
      std::vector<StoredTip> chunk;
      for (uint64_t i = std::min(start + 99, kTips); i >= start; --i) chunk.push_back(MakeTip(i));
      WriteBatch b;
      ASSERT_TRUE(tips.Append(&b, id, Direction::kRemoteToLocal, chunk).ok());
      ASSERT_TRUE(tips.Append(&b, id, Direction::kLocalToRemote, {MakeTip(start)}).ok());
      ASSERT_TRUE(tips.Append(&b, other_id, Direction::kRemoteToLocal, {MakeTip(start)}).ok());
      ASSERT_TRUE(db->Write(b).ok());
    }
  }
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  TipHistoryStore tips(db.get());

  auto all = tips.ReadRange(id, Direction::kRemoteToLocal, 0, 10000);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), kTips);
  for (uint64_t i = 0; i < kTips; ++i) {
    ASSERT_EQ((*all)[i].tip().index(), i + 1);
    ASSERT_EQ((*all)[i].tip().amount(), (i + 1) * 10);
    ASSERT_EQ((*all)[i].version(), 1u);
  }

  auto page = tips.ReadRange(id, Direction::kRemoteToLocal, 250, 20);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 20u);
  EXPECT_EQ(page->front().tip().index(), 250u);
  EXPECT_EQ(page->back().tip().index(), 269u);

  auto tail = tips.ReadRange(id, Direction::kRemoteToLocal, 690, 100);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 11u);
  EXPECT_EQ(tail->back().tip().index(), kTips);

  auto near_max =
      tips.ReadRange(id, Direction::kRemoteToLocal, std::numeric_limits<uint64_t>::max() - 1, 10);
  ASSERT_TRUE(near_max.ok());
  EXPECT_TRUE(near_max->empty());
  auto none = tips.ReadRange(id, Direction::kRemoteToLocal, 1, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  auto one = tips.Get(id, Direction::kRemoteToLocal, 300);
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ((*one)->tip().message(), "tip 300");

  auto local = tips.ReadRange(id, Direction::kLocalToRemote, 0, 10000);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->size(), 7u);
}

TEST(TipHistoryStoreTest, RecordWhoseIndexDisagreesWithItsKeyIsCorruption) {
  tipd::testing::TempDir dir;
  auto db = OpenOrDie(dir.path());
  ASSERT_NE(db, nullptr);
  const std::string id = ChannelId('\x0a');
  RecordStore<StoredTip> raw(db.get());
  WriteBatch b;
  raw.Put(&b, TipKey(id, Direction::kRemoteToLocal, 5), MakeTip(6));
  ASSERT_TRUE(db->Write(b).ok());
  TipHistoryStore tips(db.get());
  auto range = tips.ReadRange(id, Direction::kRemoteToLocal, 1, 10);
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.status().code(), StatusCode::kCorruption);
  EXPECT_NE(range.status().message().find("holds tip index 6"), std::string::npos);
}

}  // namespace
}  // namespace tipd::storage
