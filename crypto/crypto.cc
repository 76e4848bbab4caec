// Implementation of crypto/crypto.h on libsecp256k1 and OpenSSL 3 libcrypto.
//
// Failure policy: inputs from outside (bytes, keys, signatures, ciphertexts)
// are validated and rejected with a Status or `false`. A library call that
// fails on inputs we have already validated (e.g. signing with a checked
// secret key, or OpenSSL failing to allocate a digest context) means the
// process can no longer do cryptography safely; such failures abort through
// Check() with a message instead of returning garbage. Check() is not an
// assert: it stays on in release builds.

#include "crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <secp256k1.h>
#include <secp256k1_ecdh.h>
#include <secp256k1_extrakeys.h>
#include <secp256k1_schnorrsig.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "crypto/internal.h"

namespace tipd::crypto {

namespace internal {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tipd crypto: fatal: %s\n", what);
  std::abort();
}

}  // namespace internal

using internal::Check;

namespace {

// The one libsecp256k1 context of the process. Created on first use
// (function-local static: thread-safe initialization), randomized with CSPRNG
// bytes as blinding against side channels, then only used through const
// pointers, which libsecp256k1 documents as safe to share between threads.
class Secp256k1Context {
 public:
  Secp256k1Context() {
    ctx_ = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    Check(ctx_ != nullptr, "secp256k1_context_create failed");
    unsigned char seed[32];
    SystemRng().Fill(seed);
    Check(secp256k1_context_randomize(ctx_, seed) == 1, "secp256k1_context_randomize failed");
    SecureWipe(seed, sizeof(seed));
  }
  ~Secp256k1Context() { secp256k1_context_destroy(ctx_); }
  Secp256k1Context(const Secp256k1Context&) = delete;
  Secp256k1Context& operator=(const Secp256k1Context&) = delete;
  const secp256k1_context* get() const { return ctx_; }

 private:
  secp256k1_context* ctx_;
};

const secp256k1_context* Ctx() {
  static const Secp256k1Context context;
  return context.get();
}

// Algorithms are fetched once: in OpenSSL 3 the implicit fetch behind
// EVP_sha256() and friends costs a provider lookup on every call.
const EVP_MD* Sha256Md() {
  static EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    Check(m != nullptr, "EVP_MD_fetch(SHA256) failed");
    return m;
  }();
  return md;
}

const EVP_CIPHER* ChaChaPolyCipher() {
  static EVP_CIPHER* cipher = [] {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
    Check(c != nullptr, "EVP_CIPHER_fetch(ChaCha20-Poly1305) failed");
    return c;
  }();
  return cipher;
}

// OpenSSL takes int lengths; our buffers are bounded far below INT_MAX
// (frames are <= 65535 bytes), so a larger input is a caller bug.
int IntLen(size_t n) {
  Check(n <= static_cast<size_t>(INT_MAX), "buffer too large for OpenSSL");
  return static_cast<int>(n);
}

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// Parses 33 bytes as a compressed point; false if they are not one.
bool ParseCompressed(ByteSpan b, secp256k1_pubkey* out) {
  if (b.size() != 33 || (b[0] != 0x02 && b[0] != 0x03)) return false;
  return secp256k1_ec_pubkey_parse(Ctx(), out, b.data(), b.size()) == 1;
}

std::array<uint8_t, 33> SerializeCompressed(const secp256k1_pubkey& pk) {
  std::array<uint8_t, 33> out;
  size_t len = out.size();
  Check(secp256k1_ec_pubkey_serialize(Ctx(), out.data(), &len, &pk, SECP256K1_EC_COMPRESSED) == 1 &&
            len == out.size(),
        "secp256k1_ec_pubkey_serialize failed");
  return out;
}

// Builds a libsecp256k1 keypair from a validated secret. The caller wipes it.
void MakeKeypair(const SecretKey& sk, secp256k1_keypair* out) {
  Check(secp256k1_keypair_create(Ctx(), out, sk.bytes().data()) == 1,
        "secp256k1_keypair_create failed on a validated secret key");
}

}  // namespace

void SecureWipe(void* p, size_t n) {
  if (p != nullptr && n != 0) OPENSSL_cleanse(p, n);
}

// ---- Randomness ----

void SystemRandom::Fill(std::span<uint8_t> out) {
  // RAND_bytes takes an int length; fill in bounded chunks.
  constexpr size_t kChunk = 1 << 20;
  for (size_t off = 0; off < out.size(); off += kChunk) {
    size_t n = std::min(kChunk, out.size() - off);
    Check(RAND_bytes(out.data() + off, static_cast<int>(n)) == 1, "RAND_bytes failed");
  }
}

RandomSource& SystemRng() {
  static SystemRandom rng;
  return rng;
}

// ---- Hashes ----

// EVP_Digest allocates and frees a context per call; on the tip path (two
// hashes per tip on each side) that was measurable, so each thread keeps one
// context and reinitialises it per hash.
Hash32 Sha256(ByteSpan data) {
  struct CtxFree {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  Check(ctx != nullptr, "EVP_MD_CTX_new failed");
  Hash32 out;
  unsigned int len = 0;
  Check(EVP_DigestInit_ex2(ctx.get(), Sha256Md(), nullptr) == 1 &&
            EVP_DigestUpdate(ctx.get(), data.data(), data.size()) == 1 &&
            EVP_DigestFinal_ex(ctx.get(), out.data(), &len) == 1 && len == out.size(),
        "SHA-256 failed");
  return out;
}

struct Sha256Hasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
  bool finalized = false;
};

Sha256Hasher::Sha256Hasher() : impl_(new Impl) {
  impl_->ctx = EVP_MD_CTX_new();
  Check(impl_->ctx != nullptr, "EVP_MD_CTX_new failed");
  Check(EVP_DigestInit_ex2(impl_->ctx, Sha256Md(), nullptr) == 1, "EVP_DigestInit_ex2 failed");
}

Sha256Hasher::~Sha256Hasher() {
  EVP_MD_CTX_free(impl_->ctx);  // Also cleanses the digest state.
  delete impl_;
}

Sha256Hasher& Sha256Hasher::Write(ByteSpan data) {
  Check(!impl_->finalized, "Sha256Hasher::Write after Finalize");
  Check(EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) == 1, "EVP_DigestUpdate failed");
  return *this;
}

Hash32 Sha256Hasher::Finalize() {
  Check(!impl_->finalized, "Sha256Hasher::Finalize called twice");
  impl_->finalized = true;
  Hash32 out;
  unsigned int len = 0;
  Check(EVP_DigestFinal_ex(impl_->ctx, out.data(), &len) == 1 && len == out.size(),
        "EVP_DigestFinal_ex failed");
  return out;
}

Hash32 TaggedHash(std::string_view tag, ByteSpan msg) {
  const Hash32 tag_hash = Sha256(AsSpan(tag));
  Sha256Hasher h;
  h.Write(tag_hash).Write(tag_hash).Write(msg);
  return h.Finalize();
}

Hash32 HmacSha256(ByteSpan key, ByteSpan data) {
  Hash32 out;
  unsigned int len = 0;
  // The one-shot HMAC() is not deprecated in OpenSSL 3 (only HMAC_CTX is).
  // OpenSSL rejects a null key pointer even for an empty key.
  static const unsigned char kEmpty = 0;
  const unsigned char* key_ptr = key.empty() ? &kEmpty : key.data();
  Check(HMAC(Sha256Md(), key_ptr, IntLen(key.size()), data.data(), data.size(), out.data(), &len) !=
                nullptr &&
            len == out.size(),
        "HMAC-SHA256 failed");
  return out;
}

std::pair<Key32, Key32> Hkdf2(ByteSpan salt, ByteSpan ikm) {
  // RFC 5869 with L = 64 and empty info, written out on HMAC: two expand
  // blocks. Faster than an EVP_KDF round trip on the per-message rotation path,
  // and cross-checked against HkdfSha256 (EVP_KDF) in the tests.
  Hash32 prk = HmacSha256(salt, ikm);
  uint8_t block[33];
  block[0] = 0x01;
  Hash32 t1 = HmacSha256(prk, ByteSpan(block, 1));
  std::memcpy(block, t1.data(), 32);
  block[32] = 0x02;
  Hash32 t2 = HmacSha256(prk, ByteSpan(block, 33));
  std::pair<Key32, Key32> out{t1, t2};
  SecureWipe(prk.data(), prk.size());
  SecureWipe(block, sizeof(block));
  SecureWipe(t1.data(), t1.size());
  SecureWipe(t2.data(), t2.size());
  return out;
}

Result<Bytes> HkdfSha256(ByteSpan salt, ByteSpan ikm, ByteSpan info, size_t length) {
  if (length == 0 || length > 255 * 32) {
    return Status::InvalidArgument("HKDF-SHA256 output length must be in [1, 8160], got " +
                                   std::to_string(length));
  }
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  Check(kdf != nullptr, "EVP_KDF_fetch(HKDF) failed");
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  Check(kctx != nullptr, "EVP_KDF_CTX_new failed");
  // OSSL_PARAM takes non-const pointers but does not write through them.
  static const unsigned char kEmpty = 0;
  auto octets = [](const char* name, ByteSpan b) {
    void* p = const_cast<unsigned char*>(b.empty() ? &kEmpty : b.data());
    return OSSL_PARAM_construct_octet_string(name, p, b.size());
  };
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      octets(OSSL_KDF_PARAM_SALT, salt),
      octets(OSSL_KDF_PARAM_KEY, ikm),
      octets(OSSL_KDF_PARAM_INFO, info),
      OSSL_PARAM_construct_end(),
  };
  Bytes out(length);
  int rc = EVP_KDF_derive(kctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(kctx);
  Check(rc == 1, "EVP_KDF_derive(HKDF) failed");
  return out;
}

// ---- AEAD ----

AeadNonce BoltNonce(uint64_t n) {
  AeadNonce iv{};  // 32 zero bits, then n little-endian.
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<uint8_t>(n >> (8 * i));
  return iv;
}

Bytes ChaCha20Poly1305Encrypt(const Key32& key, const AeadNonce& nonce, ByteSpan ad,
                              ByteSpan plaintext) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  Check(ctx != nullptr, "EVP_CIPHER_CTX_new failed");
  Check(EVP_EncryptInit_ex2(ctx.get(), ChaChaPolyCipher(), key.data(), nonce.data(), nullptr) == 1,
        "EVP_EncryptInit_ex2(ChaCha20-Poly1305) failed");
  int len = 0;
  if (!ad.empty()) {
    Check(EVP_EncryptUpdate(ctx.get(), nullptr, &len, ad.data(), IntLen(ad.size())) == 1,
          "EVP_EncryptUpdate(AD) failed");
  }
  Bytes out(plaintext.size() + kAeadTagSize);
  size_t written = 0;
  if (!plaintext.empty()) {
    Check(EVP_EncryptUpdate(ctx.get(), out.data(), &len, plaintext.data(),
                            IntLen(plaintext.size())) == 1,
          "EVP_EncryptUpdate failed");
    written = static_cast<size_t>(len);
  }
  Check(EVP_EncryptFinal_ex(ctx.get(), out.data() + written, &len) == 1,
        "EVP_EncryptFinal_ex failed");
  written += static_cast<size_t>(len);
  Check(written == plaintext.size(), "ChaCha20-Poly1305 produced an unexpected length");
  Check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kAeadTagSize),
                            out.data() + written) == 1,
        "EVP_CTRL_AEAD_GET_TAG failed");
  return out;
}

Result<Bytes> ChaCha20Poly1305Decrypt(const Key32& key, const AeadNonce& nonce, ByteSpan ad,
                                      ByteSpan ciphertext) {
  if (ciphertext.size() < kAeadTagSize) {
    return Status::Corruption("AEAD ciphertext of " + std::to_string(ciphertext.size()) +
                              " bytes is shorter than its 16-byte tag");
  }
  const size_t body = ciphertext.size() - kAeadTagSize;
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  Check(ctx != nullptr, "EVP_CIPHER_CTX_new failed");
  Check(EVP_DecryptInit_ex2(ctx.get(), ChaChaPolyCipher(), key.data(), nonce.data(), nullptr) == 1,
        "EVP_DecryptInit_ex2(ChaCha20-Poly1305) failed");
  int len = 0;
  if (!ad.empty()) {
    Check(EVP_DecryptUpdate(ctx.get(), nullptr, &len, ad.data(), IntLen(ad.size())) == 1,
          "EVP_DecryptUpdate(AD) failed");
  }
  Bytes out(body);
  size_t written = 0;
  if (body != 0) {
    Check(EVP_DecryptUpdate(ctx.get(), out.data(), &len, ciphertext.data(), IntLen(body)) == 1,
          "EVP_DecryptUpdate failed");
    written = static_cast<size_t>(len);
  }
  // SET_TAG copies the tag; the pointer is not written through.
  Check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kAeadTagSize),
                            const_cast<uint8_t*>(ciphertext.data() + body)) == 1,
        "EVP_CTRL_AEAD_SET_TAG failed");
  // Final returns <= 0 exactly when the tag does not verify. Unauthenticated
  // plaintext is wiped, never returned.
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + written, &len) <= 0) {
    SecureWipe(out.data(), out.size());
    return Status::Corruption("AEAD tag does not verify (ciphertext or key mismatch)");
  }
  return out;
}

Bytes AeadEncrypt(const Key32& key, uint64_t nonce, ByteSpan ad, ByteSpan plaintext) {
  return ChaCha20Poly1305Encrypt(key, BoltNonce(nonce), ad, plaintext);
}

Result<Bytes> AeadDecrypt(const Key32& key, uint64_t nonce, ByteSpan ad, ByteSpan ciphertext) {
  return ChaCha20Poly1305Decrypt(key, BoltNonce(nonce), ad, ciphertext);
}

// ---- Keys ----

Result<SecretKey> SecretKey::FromBytes(ByteSpan b) {
  if (b.size() != 32) {
    return Status::InvalidArgument("secret key must be 32 bytes, got " + std::to_string(b.size()));
  }
  if (secp256k1_ec_seckey_verify(Ctx(), b.data()) != 1) {
    return Status::InvalidArgument("secret key is zero or not below the curve order");
  }
  SecretKey sk;
  std::memcpy(sk.k_.data(), b.data(), 32);
  return sk;
}

SecretKey SecretKey::Generate(RandomSource& rng) {
  SecretKey sk;
  // A uniformly random 32-byte string is out of range with probability
  // ~2^-128; retrying keeps the result uniform over valid keys.
  do {
    rng.Fill(sk.k_);
  } while (secp256k1_ec_seckey_verify(Ctx(), sk.k_.data()) != 1);
  return sk;
}

SecretKey::SecretKey(const SecretKey& o) : k_(o.k_) {}

SecretKey& SecretKey::operator=(const SecretKey& o) {
  k_ = o.k_;
  return *this;
}

SecretKey::~SecretKey() { SecureWipe(k_.data(), k_.size()); }

Result<PublicKey> PublicKey::Parse(ByteSpan b) {
  secp256k1_pubkey pk;
  if (b.size() != 33) {
    return Status::InvalidArgument("public key must be 33 bytes (compressed), got " +
                                   std::to_string(b.size()));
  }
  if (!ParseCompressed(b, &pk)) {
    return Status::InvalidArgument("bytes are not a compressed secp256k1 point: " + HexEncode(b));
  }
  PublicKey out;
  out.p_ = SerializeCompressed(pk);
  return out;
}

Result<PublicKey> PublicKey::FromHex(std::string_view hex) {
  TIPD_ASSIGN_OR_RETURN(Bytes b, HexDecode(hex));
  return Parse(b);
}

XOnlyPubKey PublicKey::XOnly() const {
  XOnlyPubKey out;
  std::memcpy(out.data(), p_.data() + 1, 32);
  return out;
}

KeyPair KeyPair::FromSecret(const SecretKey& sk) {
  secp256k1_pubkey pk;
  Check(secp256k1_ec_pubkey_create(Ctx(), &pk, sk.bytes().data()) == 1,
        "secp256k1_ec_pubkey_create failed on a validated secret key");
  Result<PublicKey> pub = PublicKey::Parse(SerializeCompressed(pk));
  Check(pub.ok(), "derived public key does not parse");
  KeyPair kp(sk, *pub);
  secp256k1_keypair keypair;
  static_assert(sizeof(keypair) == sizeof(kp.keypair_.bytes));
  MakeKeypair(sk, &keypair);
  std::memcpy(kp.keypair_.bytes.data(), &keypair, sizeof(keypair));
  SecureWipe(&keypair, sizeof(keypair));
  return kp;
}

KeyPair::WipedBlob::~WipedBlob() { SecureWipe(bytes.data(), bytes.size()); }

// ---- BIP-340 Schnorr ----

Signature SchnorrSign(const KeyPair& kp, ByteSpan msg, const Key32& aux) {
  secp256k1_keypair keypair;
  std::memcpy(&keypair, kp.secp_keypair().data(), sizeof(keypair));
  secp256k1_schnorrsig_extraparams extra = SECP256K1_SCHNORRSIG_EXTRAPARAMS_INIT;
  // libsecp256k1 only reads ndata (as the 32 bytes of aux randomness).
  extra.ndata = const_cast<uint8_t*>(aux.data());
  Signature sig;
  const int rc =
      secp256k1_schnorrsig_sign_custom(Ctx(), sig.data(), msg.data(), msg.size(), &keypair, &extra);
  SecureWipe(&keypair, sizeof(keypair));
  Check(rc == 1, "secp256k1_schnorrsig_sign_custom failed");
  // Verify before release, as Bitcoin Core does: a fault during signing
  // (hardware glitch, memory corruption) could otherwise leak the key.
  Check(SchnorrVerify(kp.XOnly(), msg, sig), "fresh Schnorr signature does not verify");
  return sig;
}

bool SchnorrVerify(const XOnlyPubKey& pub, ByteSpan msg, const Signature& sig) {
  secp256k1_xonly_pubkey xonly;
  if (secp256k1_xonly_pubkey_parse(Ctx(), &xonly, pub.data()) != 1) return false;
  return secp256k1_schnorrsig_verify(Ctx(), sig.data(), msg.data(), msg.size(), &xonly) == 1;
}

Result<XOnlyPubKey> ParseXOnly(ByteSpan b) {
  if (b.size() != 32) {
    return Status::InvalidArgument("x-only public key must be 32 bytes, got " +
                                   std::to_string(b.size()));
  }
  secp256k1_xonly_pubkey xonly;
  if (secp256k1_xonly_pubkey_parse(Ctx(), &xonly, b.data()) != 1) {
    return Status::InvalidArgument("bytes are not the x coordinate of a curve point: " +
                                   HexEncode(b));
  }
  XOnlyPubKey out;
  std::memcpy(out.data(), b.data(), 32);
  return out;
}

Signature SignTagged(const KeyPair& kp, std::string_view tag, ByteSpan bytes, RandomSource& rng) {
  Key32 aux;
  rng.Fill(aux);
  const Hash32 digest = TaggedHash(tag, bytes);
  Signature sig = SchnorrSign(kp, digest, aux);
  SecureWipe(aux.data(), aux.size());
  return sig;
}

bool VerifyTagged(const XOnlyPubKey& pub, std::string_view tag, ByteSpan bytes,
                  const Signature& sig) {
  const Hash32 digest = TaggedHash(tag, bytes);
  return SchnorrVerify(pub, digest, sig);
}

// ---- ECDH ----

Key32 Ecdh(const SecretKey& local, const PublicKey& remote) {
  secp256k1_pubkey pk;
  // Only a default-constructed PublicKey (all zeros) fails here: every other
  // PublicKey came through Parse().
  Check(ParseCompressed(remote.bytes(), &pk), "Ecdh with an invalid (default) PublicKey");
  Key32 out;
  // A null hash function selects libsecp256k1's default, which is
  // SHA256(0x02|0x03 parity byte || x): SHA-256 of the compressed point, as
  // BOLT 8 requires.
  Check(secp256k1_ecdh(Ctx(), out.data(), &pk, local.bytes().data(), nullptr, nullptr) == 1,
        "secp256k1_ecdh failed on validated keys");
  return out;
}

}  // namespace tipd::crypto
