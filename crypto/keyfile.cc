// Node key files: one secp256k1 secret as 64 lower-case hex characters and a
// newline, readable and writable by the owner only (mode 0600).
//
// Writes are atomic and never replace an existing key: the secret goes to a
// fresh temporary file in the same directory (O_CREAT|O_EXCL, 0600), is
// fsync'ed, and is then renamed into place with RENAME_NOREPLACE; finally the
// directory is fsync'ed so the new name survives a crash. Losing or silently
// replacing a node key loses the identity and the channels bound to it, hence
// the refusal to overwrite.

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc >= 2.28)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "crypto/crypto.h"

namespace tipd::crypto {

namespace {

constexpr size_t kHexLen = 64;

std::string Errno(int err) { return std::strerror(err); }

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

int HexNibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports the error (close can report deferred write errors).
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

Status WriteAll(int fd, const char* data, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("write " + what + ": " + Errno(errno));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status FsyncDir(const std::filesystem::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::IOError("open directory " + dir.string() + ": " + Errno(errno));
  if (::fsync(fd.get()) != 0) {
    return Status::IOError("fsync directory " + dir.string() + ": " + Errno(errno));
  }
  return Status::Ok();
}

// Moves `from` to `to` unless `to` exists. RENAME_NOREPLACE makes the check
// and the rename one atomic step; on file systems without it we fall back to
// check-then-rename, which only races with another writer of the same key.
Status RenameNoReplace(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::Ok();
  }
  const int err = errno;
  if (err == EEXIST) return Status::AlreadyExists("key file " + to.string() + " already exists");
  if (err != EINVAL && err != ENOSYS && err != ENOTSUP) {
    return Status::IOError("rename " + from.string() + " to " + to.string() + ": " + Errno(err));
  }
  struct stat st;
  if (::lstat(to.c_str(), &st) == 0) {
    return Status::AlreadyExists("key file " + to.string() + " already exists");
  }
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Status::IOError("rename " + from.string() + " to " + to.string() + ": " + Errno(errno));
  }
  return Status::Ok();
}

// Writes the key into the already-created temporary file `fd`.
Status WriteKey(int fd, const SecretKey& sk, const std::string& tmp_name) {
  // fchmod guards against an unusual umask that would strip owner bits; the
  // open mode already keeps group and others out.
  if (::fchmod(fd, 0600) != 0) return Status::IOError("chmod " + tmp_name + ": " + Errno(errno));
  std::string text = HexEncode(sk.bytes());
  text.push_back('\n');
  Status s = WriteAll(fd, text.data(), text.size(), tmp_name);
  SecureWipe(text.data(), text.size());
  TIPD_RETURN_IF_ERROR(s);
  if (::fsync(fd) != 0) return Status::IOError("fsync " + tmp_name + ": " + Errno(errno));
  return Status::Ok();
}

}  // namespace

Status SaveKeyFile(const std::filesystem::path& path, const SecretKey& sk) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    return Status::AlreadyExists("key file " + path.string() + " already exists");
  }
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  // A per-attempt random suffix: a stale temporary file left by a crash never
  // blocks a later save.
  std::array<uint8_t, 8> suffix;
  SystemRng().Fill(suffix);
  const std::filesystem::path tmp =
      dir / ("." + path.filename().string() + ".tmp-" + HexEncode(suffix));
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return Status::IOError("create " + tmp.string() + ": " + Errno(errno));

  Status s = WriteKey(fd.get(), sk, tmp.string());
  if (s.ok() && fd.Close() != 0) s = Status::IOError("close " + tmp.string() + ": " + Errno(errno));
  if (s.ok()) s = RenameNoReplace(tmp, path);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(dir);
}

Result<SecretKey> LoadKeyFile(const std::filesystem::path& path) {
  // O_NOFOLLOW: the permission check below must be about the key itself, not
  // about a symlink pointing somewhere else. O_NONBLOCK: a FIFO planted at
  // the path must not hang the node; it is then refused as not regular.
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound("key file " + path.string() + " does not exist");
    if (err == EACCES) {
      return Status::PermissionDenied("cannot read key file " + path.string() + ": " + Errno(err));
    }
    if (err == ELOOP) {
      return Status::InvalidArgument("key file " + path.string() +
                                     " is a symbolic link; point the config at the file itself");
    }
    return Status::IOError("open key file " + path.string() + ": " + Errno(err));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return Status::IOError("stat key file " + path.string() + ": " + Errno(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("key file " + path.string() + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    return Status::PermissionDenied("key file " + path.string() + " has mode " + Octal(st.st_mode) +
                                    "; group and others must have no access (run: chmod 600 " +
                                    path.string() + ")");
  }

  // The longest valid content is 64 hex digits and a newline; read one byte
  // more so an over-long file is detected without reading all of it.
  char buf[kHexLen + 2];
  size_t got = 0;
  while (got < sizeof(buf)) {
    ssize_t r = ::read(fd.get(), buf + got, sizeof(buf) - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      SecureWipe(buf, sizeof(buf));
      return Status::IOError("read key file " + path.string() + ": " + Errno(errno));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  const bool shape_ok =
      got == kHexLen || (got == kHexLen + 1 && buf[kHexLen] == '\n');  // newline optional
  Key32 raw{};
  bool hex_ok = shape_ok;
  for (size_t i = 0; hex_ok && i < 32; ++i) {
    const int hi = HexNibble(buf[2 * i]), lo = HexNibble(buf[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      hex_ok = false;
    } else {
      raw[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
  }
  SecureWipe(buf, sizeof(buf));
  if (!hex_ok) {
    SecureWipe(raw.data(), raw.size());
    return Status::Corruption("key file " + path.string() +
                              " is malformed: expected 64 hex characters and a newline");
  }
  Result<SecretKey> sk = SecretKey::FromBytes(raw);
  SecureWipe(raw.data(), raw.size());
  if (!sk.ok()) {
    return Status::Corruption("key file " + path.string() +
                              " does not hold a valid secp256k1 secret: " + sk.status().message());
  }
  return sk;
}

Result<KeyPair> LoadOrCreateKeyFile(const std::filesystem::path& path, RandomSource& rng) {
  Result<SecretKey> loaded = LoadKeyFile(path);
  if (loaded.ok()) return KeyPair::FromSecret(*loaded);
  if (loaded.status().code() != StatusCode::kNotFound) return loaded.status();
  const SecretKey fresh = SecretKey::Generate(rng);
  Status saved = SaveKeyFile(path, fresh);
  if (saved.code() == StatusCode::kAlreadyExists) {
    // Another process created the key between our load and save: use theirs,
    // so both agree on one identity.
    TIPD_ASSIGN_OR_RETURN(SecretKey theirs, LoadKeyFile(path));
    return KeyPair::FromSecret(theirs);
  }
  TIPD_RETURN_IF_ERROR(saved);
  return KeyPair::FromSecret(fresh);
}

}  // namespace tipd::crypto
