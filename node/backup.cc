#include "node/backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <system_error>

#include "tipd/storage.pb.h"

namespace tipd::node {
namespace {

constexpr std::string_view kKdfSalt = "tipd/backup/v1";
constexpr std::string_view kKdfInfo = "tipd backup encryption key";
constexpr size_t kDigestSize = 32;
constexpr size_t kNonceOffset = kBackupHeaderSize - 12;

std::string U(uint64_t v) { return std::to_string(v); }

void AppendU32(std::string* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<char>(v >> s));
}
void AppendU64(std::string* out, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out->push_back(static_cast<char>(v >> s));
}
uint64_t ReadU(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in[at + i]);
  return v;
}

crypto::AeadNonce NonceOf(std::string_view header) {
  crypto::AeadNonce n;
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(header[kNonceOffset + i]);
  return n;
}

// Syncs a directory so a rename inside it survives a crash.
Status SyncDir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("cannot open directory " + dir.string() + " to sync it");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("cannot sync directory " + dir.string());
  return Status::Ok();
}

// Marks an open or closing channel record as restored; other records pass.
Result<std::string> MarkRestored(std::string_view key, std::string_view value, bool* marked) {
  *marked = false;
  if (key.size() != 1 + storage::kChannelIdSize ||
      key[0] != static_cast<char>(storage::KeyFamily::kChannel)) {
    return std::string(value);
  }
  TIPD_ASSIGN_OR_RETURN(v1::StoredChannel ch,
                        storage::RecordStore<v1::StoredChannel>::Decode(key, value));
  if (ch.phase() != v1::STORED_CHANNEL_PHASE_OPEN &&
      ch.phase() != v1::STORED_CHANNEL_PHASE_CLOSING) {
    return std::string(value);
  }
  ch.set_restored_awaiting_peer(true);
  *marked = true;
  return storage::RecordStore<v1::StoredChannel>::Encode(std::move(ch));
}

}  // namespace

crypto::Key32 BackupKey(const crypto::KeyPair& node_key) {
  const crypto::Key32& secret = node_key.secret().bytes();
  auto okm = crypto::HkdfSha256(AsSpan(kKdfSalt), secret, AsSpan(kKdfInfo), 32);
  // HKDF only fails for lengths outside 1..8160.
  assert(okm.ok());
  crypto::Key32 key{};
  std::copy(okm->begin(), okm->end(), key.begin());
  crypto::SecureWipe(okm->data(), okm->size());
  return key;
}

Result<std::string> BuildBackup(const storage::Database& db,
                                const storage::Database::Snapshot& snapshot,
                                const crypto::KeyPair& node_key, crypto::RandomSource& rng,
                                uint64_t created_at_ms, BackupInfo* info) {
  std::string plain;
  uint64_t records = 0;
  TIPD_RETURN_IF_ERROR(db.ScanSnapshot(
      snapshot, "", "", SIZE_MAX, [&](std::string_view k, std::string_view v) -> Status {
        if (plain.size() + 8 + k.size() + v.size() + kDigestSize > kMaxBackupPlaintext) {
          return Status::ResourceExhausted("the database is larger than the " +
                                           U(kMaxBackupPlaintext >> 20) +
                                           " MiB an online backup holds; stop the node and copy "
                                           "db/ instead (docs/operator-guide.md)");
        }
        AppendU32(&plain, static_cast<uint32_t>(k.size()));
        plain.append(k);
        AppendU32(&plain, static_cast<uint32_t>(v.size()));
        plain.append(v);
        ++records;
        return Status::Ok();
      }));
  const Hash32 digest = crypto::Sha256(AsSpan(plain));
  plain.append(AsStringView(digest));

  std::string header(kBackupMagic);
  AppendU32(&header, kBackupFormatVersion);
  header.append(AsStringView(node_key.public_key().bytes()));
  AppendU64(&header, created_at_ms);
  AppendU64(&header, records);
  AppendU64(&header, plain.size());
  crypto::AeadNonce nonce;
  rng.Fill(nonce);
  header.append(AsStringView(nonce));
  assert(header.size() == kBackupHeaderSize);

  crypto::Key32 key = BackupKey(node_key);
  Bytes sealed = crypto::ChaCha20Poly1305Encrypt(key, nonce, AsSpan(header), AsSpan(plain));
  crypto::SecureWipe(key.data(), key.size());
  crypto::SecureWipe(plain.data(), plain.size());
  std::string file = header;
  file.append(AsStringView(sealed));

  // Verify what we are about to hand out: it must open with our key and
  // carry exactly what we read.
  auto check = OpenBackup(file, node_key);
  if (!check.ok()) {
    return Status::Internal("the backup just built does not verify: " + check.status().message());
  }
  if (check->info.records != records) {
    return Status::Internal("the backup just built holds " + U(check->info.records) +
                            " records, expected " + U(records));
  }
  if (info != nullptr) *info = check->info;
  return file;
}

Result<BackupInfo> ReadBackupHeader(std::string_view file) {
  if (file.size() < kBackupHeaderSize + crypto::kAeadTagSize) {
    return Status::Corruption("not a tipd backup: " + U(file.size()) + " bytes is too short");
  }
  if (file.substr(0, kBackupMagic.size()) != kBackupMagic) {
    return Status::Corruption("not a tipd backup: the file does not start with \"TIPDBKUP\"");
  }
  BackupInfo info;
  info.format_version = static_cast<uint32_t>(ReadU(file, 8, 4));
  if (info.format_version != kBackupFormatVersion) {
    return Status::Corruption("backup format version " + U(info.format_version) +
                              "; this build reads version " + U(kBackupFormatVersion));
  }
  auto node = crypto::PublicKey::Parse(AsSpan(file.substr(12, 33)));
  if (!node.ok()) return Status::Corruption("backup header: the node id is not a valid key");
  info.node_id = node->Hex();
  info.created_at_ms = ReadU(file, 45, 8);
  info.records = ReadU(file, 53, 8);
  info.plaintext_bytes = ReadU(file, 61, 8);
  if (info.plaintext_bytes > kMaxBackupPlaintext || info.plaintext_bytes < kDigestSize ||
      file.size() != kBackupHeaderSize + info.plaintext_bytes + crypto::kAeadTagSize) {
    return Status::Corruption("backup is truncated or padded: " + U(file.size()) +
                              " bytes, the header announces " + U(info.plaintext_bytes) +
                              " bytes of content");
  }
  info.file_bytes = file.size();
  info.file_sha256 = crypto::Sha256(AsSpan(file));
  return info;
}

Result<OpenedBackup> OpenBackup(std::string_view file, const crypto::KeyPair& node_key) {
  TIPD_ASSIGN_OR_RETURN(BackupInfo info, ReadBackupHeader(file));
  if (info.node_id != node_key.public_key().Hex()) {
    return Status::PermissionDenied("the backup is of node " + info.node_id +
                                    ", but this key is node " + node_key.public_key().Hex());
  }
  const std::string_view header = file.substr(0, kBackupHeaderSize);
  crypto::Key32 key = BackupKey(node_key);
  auto plain = crypto::ChaCha20Poly1305Decrypt(key, NonceOf(header), AsSpan(header),
                                               AsSpan(file.substr(kBackupHeaderSize)));
  crypto::SecureWipe(key.data(), key.size());
  if (!plain.ok()) {
    return Status::Corruption(
        "the backup does not authenticate: it is damaged, or was not made with this node's key");
  }
  const std::string_view body = AsStringView(*plain);
  const std::string_view records_bytes = body.substr(0, body.size() - kDigestSize);
  const Hash32 digest = crypto::Sha256(AsSpan(records_bytes));
  if (body.substr(records_bytes.size()) != AsStringView(digest)) {
    return Status::Corruption("the backup's content digest does not match");
  }
  OpenedBackup out;
  size_t at = 0;
  auto field = [&](std::string* dst) {
    if (records_bytes.size() - at < 4) return false;
    const uint64_t n = ReadU(records_bytes, at, 4);
    at += 4;
    if (records_bytes.size() - at < n) return false;
    dst->assign(records_bytes.substr(at, n));
    at += n;
    return true;
  };
  while (at < records_bytes.size()) {
    std::string k, v;
    if (!field(&k) || !field(&v)) {
      return Status::Corruption("the backup's record " + U(out.records.size() + 1) +
                                " is cut short");
    }
    if (!out.records.empty() && k <= out.records.back().first) {
      return Status::Corruption("the backup's keys are not in order at record " +
                                U(out.records.size() + 1));
    }
    if (k.size() == 1 + storage::kChannelIdSize &&
        k[0] == static_cast<char>(storage::KeyFamily::kChannel)) {
      ++info.channels;
    }
    out.records.emplace_back(std::move(k), std::move(v));
  }
  crypto::SecureWipe(plain->data(), plain->size());
  if (out.records.size() != info.records) {
    return Status::Corruption("the backup holds " + U(out.records.size()) +
                              " records, its header announces " + U(info.records));
  }
  out.info = info;
  return out;
}

bool DatabaseDirInUse(const std::filesystem::path& datadir) {
  std::error_code ec;
  const auto db = datadir / "db";
  if (!std::filesystem::exists(db, ec)) return false;
  return !std::filesystem::is_empty(db, ec) || ec;
}

Result<uint64_t> WriteFreshDatabase(
    const std::filesystem::path& dir,
    const std::vector<std::pair<std::string, std::string>>& records) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return Status::FailedPrecondition(dir.string() + " already exists");
  }
  storage::Options options;
  TIPD_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db,
                        storage::Database::Open(dir, options));
  uint64_t marked = 0;
  storage::WriteBatch batch;
  for (const auto& [k, v] : records) {
    bool m = false;
    TIPD_ASSIGN_OR_RETURN(std::string value, MarkRestored(k, v, &m));
    marked += m;
    batch.Put(k, value);
    if (batch.count() >= 4096 || batch.ApproximateBytes() >= (4u << 20)) {
      TIPD_RETURN_IF_ERROR(db->Write(batch));
      batch.Clear();
    }
  }
  if (!batch.empty()) TIPD_RETURN_IF_ERROR(db->Write(batch));
  return marked;
}

Result<std::filesystem::path> InstallDatabase(const std::filesystem::path& datadir,
                                              const std::filesystem::path& fresh, bool force,
                                              uint64_t now_ms) {
  const auto db = datadir / "db";
  std::error_code ec;
  std::filesystem::path replaced;
  if (DatabaseDirInUse(datadir)) {
    if (!force) {
      return Status::FailedPrecondition(db.string() +
                                        " holds a database; pass --force to replace it (it is "
                                        "kept as db.replaced-<time>)");
    }
    replaced = datadir / ("db.replaced-" + U(now_ms));
    std::filesystem::rename(db, replaced, ec);
    if (ec) return Status::IOError("cannot move " + db.string() + " aside: " + ec.message());
  } else if (std::filesystem::exists(db, ec)) {
    std::filesystem::remove(db, ec);  // an empty directory
  }
  std::filesystem::rename(fresh, db, ec);
  if (ec) {
    return Status::IOError("cannot rename " + fresh.string() + " to " + db.string() + ": " +
                           ec.message());
  }
  TIPD_RETURN_IF_ERROR(SyncDir(datadir));
  return replaced;
}

Result<RestoreReport> RestoreBackup(const std::filesystem::path& datadir, std::string_view file,
                                    const crypto::KeyPair& node_key, bool force, uint64_t now_ms) {
  // Check everything before touching the data dir.
  TIPD_ASSIGN_OR_RETURN(OpenedBackup opened, OpenBackup(file, node_key));
  if (!force && DatabaseDirInUse(datadir)) {
    return Status::FailedPrecondition((datadir / "db").string() +
                                      " holds a database; pass --force to replace it (it is "
                                      "kept as db.replaced-<time>)");
  }
  const auto fresh = datadir / "db.restoring";
  std::error_code ec;
  std::filesystem::remove_all(fresh, ec);  // a restore that died half-way
  RestoreReport report;
  report.info = opened.info;
  auto marked = WriteFreshDatabase(fresh, opened.records);
  if (!marked.ok()) {
    std::filesystem::remove_all(fresh, ec);
    return marked.status();
  }
  report.channels_marked = *marked;
  auto replaced = InstallDatabase(datadir, fresh, force, now_ms);
  if (!replaced.ok()) {
    std::filesystem::remove_all(fresh, ec);
    return replaced.status();
  }
  report.replaced = *replaced;
  return report;
}

}  // namespace tipd::node
