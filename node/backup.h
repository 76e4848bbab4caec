// Online backups of a node's database, and restoring one into a data dir.
//
// A backup is every LevelDB entry of the node's `db/` read through one
// storage::Database::Snapshot (a single consistent moment, taken while the
// node keeps writing), encrypted with a key derived from the node key, and
// verified (decrypted, digest and record count checked) before anyone is told
// it exists. The file format (docs/storage.md, "Backups"):
//
//   header, 81 bytes, integers big-endian, all of it authenticated (AEAD ad):
//     magic "TIPDBKUP" | u32 format version (1) | node id [33] |
//     u64 created_at_ms | u64 record count | u64 plaintext length | nonce [12]
//   ChaCha20-Poly1305(key, nonce, ad = header, plaintext) || tag [16]
//   plaintext: per record  u32 key length | key | u32 value length | value,
//              then SHA-256 of every record byte before it [32]
//   key = HKDF-SHA256(salt "tipd/backup/v1", ikm = node secret key,
//                     info "tipd backup encryption key", 32 bytes)
//
// The nonce is 12 fresh CSPRNG bytes per backup; the key is used only for
// backups (its own HKDF label), never for signatures or the transport.
//
// Restoring writes a fresh database next to the data dir's `db/` and renames
// it into place only once it is complete, so a refused or failed restore
// writes nothing the node would read. Every channel that was open or closing
// is marked `restored_awaiting_peer`: the node refuses tips on it until it has
// reestablished with the peer and learned whether the backup was stale
// (docs/channels.md, "Restored channels").
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto/crypto.h"
#include "storage/storage.h"
#include "util/bytes.h"
#include "util/status.h"

namespace tipd::node {

inline constexpr std::string_view kBackupMagic = "TIPDBKUP";
inline constexpr uint32_t kBackupFormatVersion = 1;
inline constexpr size_t kBackupHeaderSize = 8 + 4 + 33 + 8 + 8 + 8 + 12;
// Backups are built and checked in memory; a database larger than this is
// refused with a clear error rather than exhausting memory.
inline constexpr uint64_t kMaxBackupPlaintext = uint64_t{1} << 30;

// What a backup file says about itself (the header, plus what checking it
// found).
struct BackupInfo {
  uint32_t format_version = 0;
  std::string node_id;  // 66 hex
  uint64_t created_at_ms = 0;
  uint64_t records = 0;
  uint64_t plaintext_bytes = 0;
  uint64_t file_bytes = 0;
  Hash32 file_sha256{};
  uint64_t channels = 0;  // 'C' records (set once decrypted)
};

// The backup encryption key of `node_key` (see the top of this file).
crypto::Key32 BackupKey(const crypto::KeyPair& node_key);

// Builds a backup of `db` as seen through `snapshot`, then decrypts it again
// and checks digest and record count before returning the file bytes.
// kResourceExhausted if the database is larger than kMaxBackupPlaintext.
// Safe from any thread while others write (REQUIRES: `db` outlives the call).
Result<std::string> BuildBackup(const storage::Database& db,
                                const storage::Database::Snapshot& snapshot,
                                const crypto::KeyPair& node_key, crypto::RandomSource& rng,
                                uint64_t created_at_ms, BackupInfo* info);

// Parses and checks the header alone (no key needed): magic, version, sizes.
// kCorruption naming what is wrong.
Result<BackupInfo> ReadBackupHeader(std::string_view file);

// Decrypts `file` with `node_key`'s backup key and checks it whole: header,
// authentication tag, digest, record count, strictly increasing keys.
// kPermissionDenied if the backup is of another node; kCorruption if the file
// is damaged or was not encrypted with this node's key. Nothing partial is
// ever returned.
struct OpenedBackup {
  BackupInfo info;
  std::vector<std::pair<std::string, std::string>> records;  // in key order
};
Result<OpenedBackup> OpenBackup(std::string_view file, const crypto::KeyPair& node_key);

struct RestoreReport {
  BackupInfo info;
  uint64_t channels_marked = 0;    // open or closing channels awaiting the peer
  std::filesystem::path replaced;  // where the old db/ went (empty: there was none)
};

// Writes `<datadir>/db` from `file`, checked whole first with OpenBackup.
// Refuses (kFailedPrecondition, nothing written) if `<datadir>/db` holds a
// database and `force` is false; with `force` the old one is kept as
// `<datadir>/db.replaced-<unix ms>`. The caller holds the data dir's PidLock
// (no node runs on it). Channels open or closing are marked
// restored_awaiting_peer.
Result<RestoreReport> RestoreBackup(const std::filesystem::path& datadir, std::string_view file,
                                    const crypto::KeyPair& node_key, bool force, uint64_t now_ms);

// Writes `records` (strictly increasing keys) into a fresh database at `dir`,
// which must not exist, marking open and closing channels as restored. Used by
// RestoreBackup and by the recovery import (node/recovery.h).
Result<uint64_t> WriteFreshDatabase(
    const std::filesystem::path& dir,
    const std::vector<std::pair<std::string, std::string>>& records);

// Installs `fresh` (a complete database directory) as `<datadir>/db`: an
// existing non-empty db/ is refused unless `force`, then kept as
// db.replaced-<now_ms>. Returns where the old one went (empty if none).
Result<std::filesystem::path> InstallDatabase(const std::filesystem::path& datadir,
                                              const std::filesystem::path& fresh, bool force,
                                              uint64_t now_ms);

// True if `<datadir>/db` exists and holds any file.
bool DatabaseDirInUse(const std::filesystem::path& datadir);

}  // namespace tipd::node
