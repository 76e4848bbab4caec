// Online backups with real processes (docs/operator-guide.md, "Backups and
// recovery"): `tipctl backup` while tips stream, more tips both ways, then the
// node is stopped, restored from the now stale backup with `tipd restore`,
// and restarted. It must refuse tips until it has reestablished, never sign an
// old state again, and after the close the ledger pays both sides exactly
// what the acknowledged tips say. A corrupted or foreign backup is refused
// and writes nothing. Every wait is a deadline on API, ledger or log state.
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "tests/integration/channel_fixture.h"
#include "tests/integration/tipctl_runner.h"

namespace tipd::testing {
namespace {

namespace fs = std::filesystem;

// Runs the tipd binary with `args`; stdout and stderr together.
CliResult RunTipd(const fs::path& scratch, const std::vector<std::string>& args) {
  static int counter = 0;
  const fs::path out = scratch / ("tipd-" + std::to_string(counter++) + ".out");
  std::string cmd = TIPD_BINARY;
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " > '" + out.string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = ReadAll(out);
  return r;
}

void WriteBytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << bytes;
}

class BackupTest : public ChannelFixture {
 protected:
  std::optional<ledger::Channel> Onchain(TestClient& c, const std::string& ch) {
    auto id = HexDecodeFixed<32>(ch);
    if (!id.ok()) return std::nullopt;
    const ledger::Channel* p = c.chain().state().FindChannel(*id);
    if (p == nullptr) return std::nullopt;
    return *p;
  }
  bool WaitPhase(TestClient& c, const std::string& ch, ledger::ChannelPhase phase) {
    return RunUntil(
        c.io(),
        [&] {
          auto oc = Onchain(c, ch);
          return oc && oc->phase == phase;
        },
        std::chrono::seconds(90));
  }
  std::string Log(const std::string& name) { return ReadAll(dir_.path() / (name + ".log")); }
};

TEST_F(BackupTest, StaleRestoreMidStreamLosesNothingAndSignsNoOldState) {
  Node a, b;
  ASSERT_NO_FATAL_FAILURE(TwoConnectedNodes(/*block_interval_ms=*/100, &a, &b));
  constexpr uint64_t kDa = 500'000, kDb = 1'000;
  const std::string ch = Open(a, b, kDa, kDb, /*settle_timeout=*/10);
  ASSERT_FALSE(ch.empty());
  auto client = Client();
  ASSERT_TRUE(client->WaitConnected());
  const fs::path scratch = dir_.path() / "scratch";
  fs::create_directories(scratch);

  uint64_t a_paid = 0, b_paid = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Tip(a, ch, 3, "before").status, 200);
    a_paid += 3;
  }
  ASSERT_EQ(Tip(b, ch, 2, "b before").status, 200);
  b_paid += 2;

  // A stream of tips from A runs while the backup is taken, and after it.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> streamed{0};
  std::atomic<int> failures{0};
  std::thread streamer([&] {
    while (!stop) {
      auto r = Tip(a, ch, 1, "stream");
      if (r.status == 200) {
        ++streamed;
      } else {
        ++failures;
      }
    }
  });
  ASSERT_TRUE(WaitFor([&] { return streamed >= 10; }, std::chrono::seconds(60)));
  const fs::path backup = scratch / "a.backup";
  CliResult made = RunTipctl(scratch, {"--datadir", NodeDir("a").string(), "backup", backup});
  ASSERT_EQ(made.exit_code, 0) << made;
  EXPECT_TRUE(Contains(made.out, "verified: decrypted with node.key")) << made;
  EXPECT_EQ(fs::status(backup).permissions() & fs::perms::group_all, fs::perms::none);
  // The static recovery export, taken while the stream runs, and what reads it.
  const fs::path recovery = scratch / "a.recovery.json";
  CliResult exported =
      RunTipctl(scratch, {"--datadir", NodeDir("a").string(), "export-recovery", recovery});
  ASSERT_EQ(exported.exit_code, 0) << exported;
  {
    auto ex = FromJson<v1::RecoveryExport>(ReadAll(recovery));
    EXPECT_EQ(ex.node_id(), a.id.Hex());
    ASSERT_EQ(ex.channels_size(), 1);
    EXPECT_EQ(ex.channels(0).channel_id(), ch);
    EXPECT_GT(ex.channels(0).own_latest_proof().nonce(), 0u);
    EXPECT_EQ(ex.node_secret_key(), HexEncode(a.key->secret().bytes()));
    ASSERT_GE(ex.peers_size(), 1);
    EXPECT_EQ(ex.peers(0).node_id(), b.id.Hex());
    const fs::path fresh = scratch / "recovered";
    CliResult r = RunTipd(scratch, {"restore", "--datadir", fresh.string(), "--recovery",
                                    recovery.string(), "--verify-only"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_FALSE(fs::exists(fresh / "db"));
    r = RunTipd(scratch, {"restore", "--datadir", fresh.string(), "--recovery", recovery.string()});
    ASSERT_EQ(r.exit_code, 0) << r;
    auto key = crypto::LoadKeyFile(fresh / "node.key");
    ASSERT_TRUE(key.ok());
    EXPECT_EQ(crypto::KeyPair::FromSecret(*key).public_key(), a.id);
    EXPECT_TRUE(fs::exists(fresh / "db"));
  }
  const uint64_t at_backup = streamed;
  ASSERT_TRUE(WaitFor([&] { return streamed >= at_backup + 20; }, std::chrono::seconds(60)));
  stop = true;
  streamer.join();
  EXPECT_EQ(failures.load(), 0);
  a_paid += streamed.load();
  // After the backup B pays A too: A's restored copy will have lost these.
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Tip(b, ch, 5, "b after").status, 200);
    b_paid += 5;
  }
  const uint64_t a_sent_before_restore = Channel(a, ch).tips_sent();

  // A damaged or foreign backup is refused and writes nothing.
  const std::string good = ReadAll(backup);
  ASSERT_GT(good.size(), 200u);
  {
    std::string bad = good;
    bad[150] ^= 0x01;
    WriteBytes(scratch / "bad.backup", bad);
    const fs::path dir = scratch / "restore-bad";
    fs::create_directories(dir);
    ASSERT_TRUE(crypto::SaveKeyFile(dir / "node.key", a.key->secret()).ok());
    CliResult r = RunTipd(scratch, {"restore", "--datadir", dir.string(), "--backup",
                                    (scratch / "bad.backup").string()});
    EXPECT_NE(r.exit_code, 0) << r;
    EXPECT_TRUE(Contains(r.out, "does not authenticate")) << r;
    EXPECT_FALSE(fs::exists(dir / "db"));
    EXPECT_FALSE(fs::exists(dir / "db.restoring"));
    const fs::path other = scratch / "restore-other-key";
    fs::create_directories(other);
    ASSERT_TRUE(
        crypto::SaveKeyFile(other / "node.key", crypto::SecretKey::Generate(crypto::SystemRng()))
            .ok());
    r = RunTipd(scratch, {"restore", "--datadir", other.string(), "--backup", backup.string()});
    EXPECT_NE(r.exit_code, 0) << r;
    EXPECT_TRUE(Contains(r.out, "the backup is of node")) << r;
    EXPECT_FALSE(fs::exists(other / "db"));
  }

  // Stop both, restore A from the stale backup.
  Kill(a, SIGTERM);
  Kill(b, SIGTERM);
  CliResult refused =
      RunTipd(scratch, {"restore", "--datadir", NodeDir("a").string(), "--backup", backup});
  EXPECT_NE(refused.exit_code, 0) << refused;
  EXPECT_TRUE(Contains(refused.out, "--force")) << refused;
  CliResult restored = RunTipd(
      scratch, {"restore", "--datadir", NodeDir("a").string(), "--backup", backup, "--force"});
  ASSERT_EQ(restored.exit_code, 0) << restored;
  EXPECT_TRUE(Contains(restored.out, "1 open or closing channel(s) wait for their peer"))
      << restored;

  // A alone: the restored channel refuses tips until it met its peer.
  ASSERT_NO_FATAL_FAILURE(Restart(a));
  EXPECT_TRUE(Channel(a, ch).restored_awaiting_peer());
  EXPECT_LT(Channel(a, ch).tips_sent(), a_sent_before_restore);  // it is stale
  auto early = Tip(a, ch, 1, "too early");
  EXPECT_EQ(early.status, 503) << early.body;
  EXPECT_TRUE(Contains(early.body, "CHANNEL_RESTORED_AWAITING_PEER")) << early.body;

  // B comes back: A adopts its own newest proof and keeps B's newest proof;
  // B sees A lost updates it had acknowledged and closes with A's newest.
  ASSERT_NO_FATAL_FAILURE(Restart(b));
  ASSERT_TRUE(WaitFor([&] { return Contains(Log("a"), "adopted the peer's copy of our proof"); },
                      std::chrono::seconds(60)))
      << Log("a");
  EXPECT_TRUE(Contains(Log("a"), "restored behind: the peer holds its proof")) << Log("a");
  ASSERT_TRUE(WaitPhase(*client, ch, ledger::ChannelPhase::kSettled));
  auto oc = Onchain(*client, ch);
  ASSERT_TRUE(oc.has_value());
  std::cout << "[ figures ] " << a_paid << " paid by A (" << streamed.load()
            << " tips streamed during and after the backup), " << b_paid << " by B; payout A "
            << oc->payout_a << ", B " << oc->payout_b << "\n";
  EXPECT_EQ(oc->payout_a, kDa - a_paid + b_paid);
  EXPECT_EQ(oc->payout_b, kDb + a_paid - b_paid);
  EXPECT_TRUE(client->chain().state().CheckSupply().ok());
  // B never saw a second state of A under a used nonce: it would have
  // refused it (a conflicting state or a nonce that does not increase).
  EXPECT_FALSE(Contains(Log("b"), "CONFLICTING_STATE")) << Log("b");
  EXPECT_FALSE(Contains(Log("b"), "NONCE_NOT_INCREASING")) << Log("b");
  EXPECT_TRUE(WaitState(a, ch, "closed"));
  EXPECT_TRUE(WaitState(b, ch, "closed"));
}

}  // namespace
}  // namespace tipd::testing
