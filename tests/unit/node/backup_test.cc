// Online backups (node/backup.h) and restoring a stale one under live
// channels, in one process: the file format (round trip, corruption, wrong
// key, refusing to overwrite), then the channel manager over ChannelNet
// (channel_harness.h) restored from a backup taken mid-stream: it refuses
// tips until it has reestablished, never signs a second state under a nonce
// it used, and recovers every unit it was paid.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "node/backup.h"
#include "node/recovery.h"
#include "tests/unit/node/channel_harness.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> AllEntries(const storage::Database& db) {
  std::vector<std::pair<std::string, std::string>> out;
  Status s = db.Scan("", "", SIZE_MAX, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::string TakeBackup(const storage::Database& db, const crypto::KeyPair& key,
                       node::BackupInfo* info = nullptr) {
  auto snap = db.NewSnapshot();
  auto file = node::BuildBackup(db, *snap, key, crypto::SystemRng(), 1234, info);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  return file.ok() ? *file : std::string();
}

v1::StoredChannel ChannelRecord(char fill, v1::StoredChannelPhase phase) {
  v1::StoredChannel c;
  c.set_channel_id(std::string(32, fill));
  c.set_chain_id("test");
  c.set_phase(phase);
  return c;
}

class BackupFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = storage::Database::Open(src_.path() / "db");
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    storage::WriteBatch b;
    storage::RecordStore<v1::StoredChannel> channels(db_.get());
    channels.Put(&b, storage::ChannelKey(std::string(32, 'o')),
                 ChannelRecord('o', v1::STORED_CHANNEL_PHASE_OPEN));
    channels.Put(&b, storage::ChannelKey(std::string(32, 'x')),
                 ChannelRecord('x', v1::STORED_CHANNEL_PHASE_CLOSED));
    for (int i = 0; i < 300; ++i) b.Put("Zkey" + std::to_string(i), std::string(i, 'v'));
    b.Put(std::string("E\0\xff", 3), std::string("binary\0value", 12));
    ASSERT_TRUE(db_->Write(b).ok());
  }

  // Restores `file` into a fresh data dir and expects `code`; on failure the
  // data dir must hold no db/ nor a half-written one.
  void ExpectRefused(const std::string& file, const crypto::KeyPair& key, StatusCode code,
                     const std::string& says) {
    TempDir target("tipd-restore-refused");
    auto r = node::RestoreBackup(target.path(), file, key, /*force=*/false, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().ToString();
    EXPECT_FALSE(fs::exists(target.path() / "db"));
    EXPECT_FALSE(fs::exists(target.path() / "db.restoring"));
  }

  TempDir src_{"tipd-backup-src"};
  std::unique_ptr<storage::Database> db_;
  crypto::KeyPair key_ = crypto::KeyPair::Generate(crypto::SystemRng());
};

TEST_F(BackupFileTest, RoundTripRestoresEveryRecordAndMarksLiveChannels) {
  node::BackupInfo info;
  const std::string file = TakeBackup(*db_, key_, &info);
  EXPECT_EQ(info.records, 303u);
  EXPECT_EQ(info.channels, 2u);
  EXPECT_EQ(info.node_id, key_.public_key().Hex());
  EXPECT_EQ(info.created_at_ms, 1234u);
  // Two backups of the same state differ (fresh nonce) but hold the same.
  EXPECT_NE(file, TakeBackup(*db_, key_));

  TempDir target("tipd-restore-target");
  auto report = node::RestoreBackup(target.path(), file, key_, false, 1);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->channels_marked, 1u);
  auto restored = storage::Database::Open(target.path() / "db");
  ASSERT_TRUE(restored.ok());
  auto want = AllEntries(*db_);
  auto got = AllEntries(**restored);
  ASSERT_EQ(got.size(), want.size());
  storage::RecordStore<v1::StoredChannel> channels(restored->get());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    if (want[i].first[0] == 'C') continue;  // re-encoded with the mark
    EXPECT_EQ(got[i].second, want[i].second);
  }
  auto open = channels.Get(storage::ChannelKey(std::string(32, 'o')));
  ASSERT_TRUE(open.ok() && open->has_value());
  EXPECT_TRUE((*open)->restored_awaiting_peer());
  auto closed = channels.Get(storage::ChannelKey(std::string(32, 'x')));
  ASSERT_TRUE(closed.ok() && closed->has_value());
  EXPECT_FALSE((*closed)->restored_awaiting_peer());
}

TEST_F(BackupFileTest, TheSnapshotIsOneMomentWhileWritesContinue) {
  auto snap = db_->NewSnapshot();
  storage::WriteBatch later;
  later.Put("Zlater", "after the snapshot");
  later.Delete("Zkey0");
  ASSERT_TRUE(db_->Write(later).ok());
  node::BackupInfo info;
  auto file = node::BuildBackup(*db_, *snap, key_, crypto::SystemRng(), 1, &info);
  ASSERT_TRUE(file.ok());
  auto opened = node::OpenBackup(*file, key_);
  ASSERT_TRUE(opened.ok());
  std::map<std::string, std::string> m(opened->records.begin(), opened->records.end());
  EXPECT_EQ(m.count("Zlater"), 0u);
  EXPECT_EQ(m.count("Zkey0"), 1u);
  EXPECT_EQ(opened->records.size(), 303u);
}

TEST_F(BackupFileTest, CorruptedTruncatedOrForeignBackupsAreRefusedAndWriteNothing) {
  const std::string file = TakeBackup(*db_, key_);
  // One flipped bit anywhere: in the header (authenticated) or the content.
  for (size_t at : {size_t{50}, node::kBackupHeaderSize + 7, file.size() - 1}) {
    std::string bad = file;
    bad[at] ^= 0x01;
    ExpectRefused(bad, key_, StatusCode::kCorruption, "does not authenticate");
  }
  ExpectRefused(file.substr(0, file.size() - 10), key_, StatusCode::kCorruption, "truncated");
  ExpectRefused(file + "x", key_, StatusCode::kCorruption, "truncated");
  ExpectRefused("TIPDBKUP", key_, StatusCode::kCorruption, "too short");
  std::string not_ours = file;
  not_ours[0] = 'X';
  ExpectRefused(not_ours, key_, StatusCode::kCorruption, "not a tipd backup");
  std::string future = file;
  future[11] = 9;
  ExpectRefused(future, key_, StatusCode::kCorruption, "format version 9");

  // Another node's key: refused by the header's node id...
  const auto other = crypto::KeyPair::Generate(crypto::SystemRng());
  ExpectRefused(file, other, StatusCode::kPermissionDenied, "backup is of node");
  // ...and by the tag if the header is made to name that node.
  std::string relabelled = file;
  relabelled.replace(12, 33, std::string(AsStringView(other.public_key().bytes())));
  ExpectRefused(relabelled, other, StatusCode::kCorruption, "does not authenticate");
}

TEST_F(BackupFileTest, RestoreRefusesANonEmptyDatabaseUnlessForcedAndKeepsTheOldOne) {
  const std::string file = TakeBackup(*db_, key_);
  TempDir target("tipd-restore-force");
  {
    auto existing = storage::Database::Open(target.path() / "db");
    ASSERT_TRUE(existing.ok());
    storage::WriteBatch b;
    b.Put("Mmarker", "the database that was there");
    ASSERT_TRUE((*existing)->Write(b).ok());
  }
  auto refused = node::RestoreBackup(target.path(), file, key_, false, 7);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--force"), std::string::npos);
  {
    auto db = storage::Database::Open(target.path() / "db");
    ASSERT_TRUE(db.ok());
    EXPECT_TRUE((*db)->Get("Mmarker")->has_value());  // untouched
  }
  auto forced = node::RestoreBackup(target.path(), file, key_, true, 7);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_EQ(forced->replaced, target.path() / "db.replaced-7");
  auto db = storage::Database::Open(target.path() / "db");
  ASSERT_TRUE(db.ok());
  EXPECT_FALSE((*db)->Get("Mmarker")->has_value());
  EXPECT_TRUE((*db)->Get("Zkey5")->has_value());
  auto old = storage::Database::Open(target.path() / "db.replaced-7");
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE((*old)->Get("Mmarker")->has_value());
}

// ---------------------------------------------------------------------------
// A stale backup under live channels (ChannelNet).

const ledger::Channel* OnLedger(const ChannelNet& net, const std::string& id) {
  ledger::ChannelId cid{};
  std::copy(id.begin(), id.end(), cid.begin());
  return net.ledger().state().FindChannel(cid);
}

// No two different proofs under one nonce among everything `n` ever sent.
void ExpectNoNonceSignedTwice(const TestNode& n) {
  std::map<std::pair<std::string, uint64_t>, v1::BalanceProof> seen;
  for (const v1::TipUpdate& u : n.sent_updates) {
    const v1::BalanceProof& p = u.proof();
    auto [it, fresh] = seen.emplace(std::make_pair(p.channel_id(), p.nonce()), p);
    if (fresh) continue;
    EXPECT_EQ(it->second.tips_root(), p.tips_root())
        << n.name << " signed nonce " << p.nonce() << " twice with different tips";
    EXPECT_EQ(it->second.transferred(), p.transferred())
        << n.name << " signed nonce " << p.nonce() << " twice with different amounts";
  }
}

class StaleRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = &net_.AddNode("a", 1'000'000);
    b_ = &net_.AddNode("b", 1'000'000);
    a_->StartManager();
    b_->StartManager();
    net_.Connect(*a_, *b_);
    id_ = net_.OpenChannel(*a_, *b_, 10'000, 10'000, 6);
    ASSERT_FALSE(id_.empty());
  }

  // Stops `n`, replaces its database with `file` (as `tipd restore --force`
  // does) and starts its manager again, not connected.
  void RestoreStopped(TestNode& n, const std::string& file) {
    n.StopManager();
    n.committer->Stop();
    n.committer.reset();
    n.link.reset();
    n.db.reset();
    auto report = node::RestoreBackup(n.dir.path(), file, n.key, /*force=*/true, 99);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->channels_marked, 1u);
    n.db = std::move(storage::Database::Open(n.dir.path() / "db").value());
    n.committer = std::make_unique<storage::GroupCommitter>(n.db.get());
    n.StartManager();
  }

  // Runs the ledger past the settle window of a closing channel.
  void SettleOnLedger() {
    for (int i = 0; i < 12; ++i) {
      net_.Settle();
      net_.Seal();
      const ledger::Channel* c = OnLedger(net_, id_);
      if (c != nullptr && c->phase == ledger::ChannelPhase::kSettled) return;
    }
  }

  ChannelNet net_;
  TestNode* a_ = nullptr;
  TestNode* b_ = nullptr;
  std::string id_;
};

TEST_F(StaleRestoreTest, OwnDirectionIsAdoptedAndNoNonceIsSignedTwice) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(net_.Tip(*a_, id_, 10, "before the backup").ok());
  const std::string backup = TakeBackup(*a_->db, a_->key);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net_.Tip(*a_, id_, 100, "after the backup").ok());
  const uint64_t paid = 3 * 10 + 5 * 100;

  RestoreStopped(*a_, backup);
  // Restored and not yet reestablished: tips are refused, nothing is signed.
  const size_t updates_before = a_->sent_updates.size();
  EXPECT_TRUE(net_.Channel(*a_, id_).restored_awaiting_peer());
  TipAnswer early = net_.Tip(*a_, id_, 1, "too early");
  ASSERT_TRUE(early.outcome.refusal);
  EXPECT_EQ(early.outcome.refusal->code(), "CHANNEL_RESTORED_AWAITING_PEER");
  EXPECT_EQ(a_->sent_updates.size(), updates_before);

  net_.Connect(*a_, *b_);
  ASSERT_TRUE(net_.RunUntil([&] { return !net_.Channel(*a_, id_).restored_awaiting_peer(); }));
  // A adopted its own newest proof from B, so it continues after it.
  EXPECT_EQ(net_.Channel(*a_, id_).balance_remote(), 10'000u + paid);
  ASSERT_TRUE(net_.Tip(*a_, id_, 7, "after the restore").ok());
  EXPECT_EQ(net_.Channel(*b_, id_).balance_local(), 10'000u + paid + 7);
  ExpectNoNonceSignedTwice(*a_);
  EXPECT_EQ(net_.Channel(*b_, id_).state(), "open");
  // The mark is cleared durably: a restart does not bring it back.
  net_.Restart(*a_, *b_);
  EXPECT_FALSE(net_.Channel(*a_, id_).restored_awaiting_peer());

  // Closing pays what the latest acked proofs say.
  std::optional<Result<v1::ChannelApi>> closed;
  a_->manager->Close(id_, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net_.Settle();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return closed.has_value(); }));
  ASSERT_TRUE(closed->ok()) << closed->status().ToString();
  const ledger::Channel* onchain = OnLedger(net_, id_);
  ASSERT_NE(onchain, nullptr);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(onchain->payout_a, 10'000u - paid - 7);
  EXPECT_EQ(onchain->payout_b, 10'000u + paid + 7);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
}

TEST_F(StaleRestoreTest, LostReceivedUpdatesAreRecoveredFromThePeersNewestProof) {
  // Both directions move on after the backup.
  ASSERT_TRUE(net_.Tip(*b_, id_, 50, "b before").ok());
  ASSERT_TRUE(net_.Tip(*a_, id_, 20, "a before").ok());
  const std::string backup = TakeBackup(*a_->db, a_->key);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(net_.Tip(*b_, id_, 300, "b after").ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(net_.Tip(*a_, id_, 40, "a after").ok());
  const uint64_t b_paid = 50 + 4 * 300;
  const uint64_t a_paid = 20 + 2 * 40;

  RestoreStopped(*a_, backup);
  net_.Connect(*a_, *b_);
  net_.Settle();
  // B sees that A lost updates it had acknowledged and closes with A's
  // newest proof; A kept B's newest proof from B's Reestablish.
  net_.Seal();
  net_.Settle();
  const ledger::Channel* onchain = OnLedger(net_, id_);
  ASSERT_NE(onchain, nullptr);
  EXPECT_NE(onchain->phase, ledger::ChannelPhase::kOpen);
  SettleOnLedger();
  onchain = OnLedger(net_, id_);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  // No unit lost: A gets everything B paid it, including after the backup.
  EXPECT_EQ(onchain->payout_a, 10'000u - a_paid + b_paid);
  EXPECT_EQ(onchain->payout_b, 10'000u - b_paid + a_paid);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
  ExpectNoNonceSignedTwice(*a_);
  EXPECT_EQ(net_.Channel(*a_, id_).state(), "closed");
}

TEST_F(StaleRestoreTest, ARecoveryExportAloneRecoversTheFunds) {
  ASSERT_TRUE(net_.Tip(*b_, id_, 70, "b paid").ok());
  ASSERT_TRUE(net_.Tip(*a_, id_, 30, "a paid").ok());
  v1::RecoveryExport ex;
  ex.set_format_version(1);
  ex.set_node_id(a_->key.public_key().Hex());
  ex.set_chain_id(net_.params().chain_id);
  for (auto& c : a_->manager->RecoveryChannels()) *ex.add_channels() = c;
  ASSERT_EQ(ex.channels_size(), 1);
  // More after the export: the peer shows it at reestablish.
  ASSERT_TRUE(net_.Tip(*b_, id_, 200, "b paid later").ok());
  ASSERT_TRUE(net_.Tip(*a_, id_, 5, "a paid later").ok());

  // A forged export (B's proof claiming more) is refused.
  v1::RecoveryExport forged = ex;
  forged.mutable_channels(0)->mutable_peer_latest_proof()->set_transferred(9'999);
  EXPECT_EQ(node::RecoveryRecords(forged, a_->key).status().code(), StatusCode::kInvalidArgument);
  // Another node's key is refused.
  EXPECT_EQ(node::RecoveryRecords(ex, b_->key).status().code(), StatusCode::kPermissionDenied);

  // The database is lost: rebuild it from the export alone.
  auto records = node::RecoveryRecords(ex, a_->key);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  a_->StopManager();
  a_->committer->Stop();
  a_->committer.reset();
  a_->link.reset();
  a_->db.reset();
  fs::remove_all(a_->dir.path() / "db");
  auto marked = node::WriteFreshDatabase(a_->dir.path() / "db", *records);
  ASSERT_TRUE(marked.ok()) << marked.status().ToString();
  EXPECT_EQ(*marked, 1u);
  a_->db = std::move(storage::Database::Open(a_->dir.path() / "db").value());
  a_->committer = std::make_unique<storage::GroupCommitter>(a_->db.get());
  a_->StartManager();
  EXPECT_TRUE(net_.Channel(*a_, id_).restored_awaiting_peer());
  net_.Connect(*a_, *b_);
  net_.Settle();
  SettleOnLedger();
  const ledger::Channel* onchain = OnLedger(net_, id_);
  ASSERT_NE(onchain, nullptr);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(onchain->payout_a, 10'000u - 35 + 270);
  EXPECT_EQ(onchain->payout_b, 10'000u - 270 + 35);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
  ExpectNoNonceSignedTwice(*a_);
}

}  // namespace
}  // namespace tipd::testing
