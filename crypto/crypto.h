// tipd's only door to libsecp256k1 and OpenSSL libcrypto.
//
// Keys, BIP-340 Schnorr over tagged hashes, ECDH (BOLT 8 flavour), SHA-256,
// HMAC-SHA256, HKDF (BOLT 8 flavour), ChaCha20-Poly1305 (IETF) and the CSPRNG.
// Every libsecp256k1/OpenSSL return value is checked; secrets are wiped when
// they go out of scope. The Noise_XK transport lives in crypto/noise.h.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "util/bytes.h"
#include "util/status.h"

namespace tipd::crypto {

using XOnlyPubKey = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;
using Key32 = std::array<uint8_t, 32>;

// Overwrites memory in a way the optimizer cannot elide.
void SecureWipe(void* p, size_t n);

// ---- Randomness (a seam: logic takes a RandomSource&, tests pass a fake) ----
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual void Fill(std::span<uint8_t> out) = 0;
};
// OpenSSL RAND_bytes; aborts the process if the CSPRNG fails (no safe fallback).
class SystemRandom final : public RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override;
};
// Process-wide system CSPRNG instance (stateless wrapper).
RandomSource& SystemRng();

// ---- Hashes ----
Hash32 Sha256(ByteSpan data);
// Incremental SHA-256.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  Sha256Hasher& Write(ByteSpan data);
  Hash32 Finalize();  // REQUIRES: called once.

 private:
  struct Impl;
  Impl* impl_;
};
// BIP-340 tagged hash: SHA256(SHA256(tag) || SHA256(tag) || msg).
Hash32 TaggedHash(std::string_view tag, ByteSpan msg);
Hash32 HmacSha256(ByteSpan key, ByteSpan data);
// HKDF as used by BOLT 8: HKDF-SHA256 with `salt` and input key material
// `ikm`, empty info, 64 bytes of output split into two 32-byte keys.
std::pair<Key32, Key32> Hkdf2(ByteSpan salt, ByteSpan ikm);
// General RFC 5869 HKDF-SHA256 (OpenSSL EVP_KDF "HKDF", extract and expand).
// Fails with kInvalidArgument unless 1 <= length <= 255 * 32.
Result<Bytes> HkdfSha256(ByteSpan salt, ByteSpan ikm, ByteSpan info, size_t length);

// ---- AEAD: ChaCha20-Poly1305 (RFC 8439) ----
inline constexpr size_t kAeadTagSize = 16;
using AeadNonce = std::array<uint8_t, 12>;
// The RFC 8439 construction with a raw 96-bit nonce. Returns ciphertext ||
// 16-byte tag. Prefer AeadEncrypt/AeadDecrypt below, which fix the nonce
// layout; these exist for callers (and RFC vectors) with other layouts.
Bytes ChaCha20Poly1305Encrypt(const Key32& key, const AeadNonce& nonce, ByteSpan ad,
                              ByteSpan plaintext);
// Fails with kCorruption if `ciphertext` is shorter than the tag or the tag
// does not verify; unauthenticated plaintext is never returned.
Result<Bytes> ChaCha20Poly1305Decrypt(const Key32& key, const AeadNonce& nonce, ByteSpan ad,
                                      ByteSpan ciphertext);
// The BOLT 8 / Noise nonce: 32 zero bits, then `n` as 64-bit little-endian.
AeadNonce BoltNonce(uint64_t n);
// The 96-bit nonce is 32 zero bits followed by `nonce` little-endian (BOLT 8).
// Returns ciphertext || 16-byte tag.
Bytes AeadEncrypt(const Key32& key, uint64_t nonce, ByteSpan ad, ByteSpan plaintext);
// Fails with kCorruption if the tag does not verify.
Result<Bytes> AeadDecrypt(const Key32& key, uint64_t nonce, ByteSpan ad, ByteSpan ciphertext);

// ---- Keys ----
class SecretKey {
 public:
  // Fails unless 0 < key < curve order.
  static Result<SecretKey> FromBytes(ByteSpan b);
  static SecretKey Generate(RandomSource& rng);
  SecretKey(const SecretKey& o);
  SecretKey& operator=(const SecretKey& o);
  ~SecretKey();
  const Key32& bytes() const { return k_; }

 private:
  SecretKey() = default;
  Key32 k_{};
};

// A compressed secp256k1 point (33 bytes). The node id is its hex.
class PublicKey {
 public:
  // Fails unless `b` is a valid 33-byte compressed point.
  static Result<PublicKey> Parse(ByteSpan b);
  static Result<PublicKey> FromHex(std::string_view hex);
  const std::array<uint8_t, 33>& bytes() const { return p_; }
  // The BIP-340 x-only key (drops the parity byte).
  XOnlyPubKey XOnly() const;
  std::string Hex() const { return HexEncode(p_); }
  bool operator==(const PublicKey&) const = default;
  auto operator<=>(const PublicKey&) const = default;

 private:
  std::array<uint8_t, 33> p_{};
};

class KeyPair {
 public:
  static KeyPair FromSecret(const SecretKey& sk);
  static KeyPair Generate(RandomSource& rng) { return FromSecret(SecretKey::Generate(rng)); }
  const SecretKey& secret() const { return sk_; }
  const PublicKey& public_key() const { return pk_; }
  XOnlyPubKey XOnly() const { return pk_.XOnly(); }
  // libsecp256k1's precomputed keypair (secret and public point), made once:
  // signing does not derive the public point again each time. Wiped with
  // the KeyPair, like the secret.
  const std::array<uint8_t, 96>& secp_keypair() const { return keypair_.bytes; }

 private:
  struct WipedBlob {
    std::array<uint8_t, 96> bytes{};
    WipedBlob() = default;
    WipedBlob(const WipedBlob&) = default;
    WipedBlob& operator=(const WipedBlob&) = default;
    ~WipedBlob();
  };
  KeyPair(SecretKey sk, PublicKey pk) : sk_(std::move(sk)), pk_(pk) {}
  SecretKey sk_;
  PublicKey pk_;
  WipedBlob keypair_;
};

// ---- BIP-340 Schnorr ----
// Signs an arbitrary-length message exactly as BIP-340 specifies (the test
// vectors sign 0-, 1-, 17-, 32- and 100-byte messages). `aux` is the auxiliary
// randomness; pass fresh CSPRNG bytes outside of tests.
Signature SchnorrSign(const KeyPair& kp, ByteSpan msg, const Key32& aux);
// False for an invalid public key or signature; never throws or aborts.
bool SchnorrVerify(const XOnlyPubKey& pub, ByteSpan msg, const Signature& sig);
// Parses a 32-byte x-only key; fails if it is not on the curve.
Result<XOnlyPubKey> ParseXOnly(ByteSpan b);

// tipd signatures: BIP-340 over TaggedHash(tag, bytes). `tag` names the message
// kind, e.g. "tipd/balance-proof/v1".
Signature SignTagged(const KeyPair& kp, std::string_view tag, ByteSpan bytes, RandomSource& rng);
bool VerifyTagged(const XOnlyPubKey& pub, std::string_view tag, ByteSpan bytes,
                  const Signature& sig);

// ---- ECDH (BOLT 8): SHA256 of the compressed shared point ----
Key32 Ecdh(const SecretKey& local, const PublicKey& remote);

// ---- Key files ----
// Writes the secret as 64 hex characters + newline with mode 0600, atomically
// (temp file + fsync + rename). Fails if the file exists.
Status SaveKeyFile(const std::filesystem::path& path, const SecretKey& sk);
// Refuses a file that group or others can read or write (kPermissionDenied,
// naming the path and the mode), a malformed file (kCorruption) or a missing
// one (kNotFound).
Result<SecretKey> LoadKeyFile(const std::filesystem::path& path);
// Loads the key at `path`, or generates and saves one if there is none.
Result<KeyPair> LoadOrCreateKeyFile(const std::filesystem::path& path, RandomSource& rng);

}  // namespace tipd::crypto
