// BOLT 8 transport: the Noise_XK_secp256k1_ChaChaPoly_SHA256 handshake and
// the framed, key-rotating cipher that follows it.
//
// Both classes are pure state machines: they take bytes in and hand bytes
// out, and never touch sockets, clocks or global randomness (the ephemeral key
// is passed in). The caller (p2p/) reads exactly the number of bytes each step
// names and writes what each step returns.
//
// Handshake, initiator side (knows the responder's static key in advance):
//   auto hs = NoiseHandshake::Initiator(my_key, their_key, KeyPair::Generate(SystemRng()));
//   send(hs.WriteAct1())            // 50 bytes
//   hs.ReadAct2(read(kAct2Size))
//   send(hs.WriteAct3())            // 66 bytes
//   NoiseTransport t = hs.Finish()
// Responder side:
//   auto hs = NoiseHandshake::Responder(my_key, KeyPair::Generate(SystemRng()));
//   hs.ReadAct1(read(kAct1Size)); send(hs.WriteAct2()); hs.ReadAct3(read(kAct3Size));
//   NoiseTransport t = hs.Finish()  // t.remote_static() is the initiator's node id
//
// Errors (every step returns Status or Result; nothing aborts on peer input):
//   kInvalidArgument    the peer's act is malformed: wrong length (short
//                       read), unknown version byte, or a public key that is
//                       not a valid compressed point;
//   kCorruption         a MAC (Poly1305 tag) does not verify;
//   kFailedPrecondition a step called out of order, or any step after the
//                       handshake failed (the message repeats the first
//                       failure).
// Any peer-caused failure is final: BOLT 8 requires the connection to be
// dropped without a further message, so the state machine refuses to go on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "crypto/crypto.h"
#include "util/bytes.h"
#include "util/status.h"

namespace tipd::crypto {

// Sizes fixed by BOLT 8.
inline constexpr size_t kAct1Size = 50;  // version || ephemeral key || tag
inline constexpr size_t kAct2Size = 50;  // version || ephemeral key || tag
inline constexpr size_t kAct3Size = 66;  // version || encrypted static key+tag || tag
inline constexpr size_t kNoiseMaxMessageSize = 65535;
// Encrypted 2-byte big-endian length followed by its tag.
inline constexpr size_t kNoiseLengthHeaderSize = 2 + kAeadTagSize;
// A key is rotated when its nonce reaches this value (every 500 messages,
// as each message uses two nonces: one for the length, one for the body).
inline constexpr uint64_t kNoiseKeyRotationNonce = 1000;

// The transport cipher after a completed handshake: one sending and one
// receiving cipher state (key, nonce, chaining key), each rotated on its own.
//
// Sending: Encrypt(msg) -> bytes to write.
// Receiving, per message: read kNoiseLengthHeaderSize bytes, DecryptLength ->
// len; read BodySize(len) bytes, DecryptBody -> msg. DecryptLength and
// DecryptBody must alternate.
//
// A tag failure on the receiving side is final: the nonces of the two sides
// can no longer agree, so every later Decrypt* call fails with
// kFailedPrecondition. Sending is unaffected by receive failures.
//
// Move-only; key material is wiped on destruction. Not thread-safe: use from
// one thread, or one thread per direction only if the caller never touches
// the same half from two threads (Encrypt and Decrypt* share no state).
class NoiseTransport {
 public:
  // Builds a transport from keys derived elsewhere (BOLT 8 test vectors,
  // or interop tests). `chaining_key` seeds both directions' rotation chain,
  // nonces start at 0. REQUIRES: remote_static is a parsed key.
  static NoiseTransport FromKeys(const Key32& send_key, const Key32& recv_key,
                                 const Key32& chaining_key, const PublicKey& remote_static);

  // Moving transfers the session; the moved-from object is wiped and every
  // call on it fails (it must never reuse a key/nonce pair of the session).
  NoiseTransport(NoiseTransport&& other) noexcept;
  NoiseTransport& operator=(NoiseTransport&& other) noexcept;
  NoiseTransport(const NoiseTransport&) = delete;
  NoiseTransport& operator=(const NoiseTransport&) = delete;
  ~NoiseTransport();

  // Returns encrypted length (18 bytes) || encrypted msg || tag (msg + 16
  // bytes). Fails with kInvalidArgument, consuming no nonce, if msg is longer
  // than kNoiseMaxMessageSize.
  Result<Bytes> Encrypt(ByteSpan msg);

  // Decrypts the 18-byte length header of the next message and returns the
  // body length. Errors: kInvalidArgument if header is not 18 bytes (nothing
  // consumed); kFailedPrecondition if a body is expected or after a failure;
  // kCorruption if the tag does not verify (final).
  Result<uint16_t> DecryptLength(ByteSpan header);

  // Decrypts the body announced by the last DecryptLength. `body` must be
  // exactly BodySize(len) bytes (kInvalidArgument otherwise, nothing
  // consumed). kCorruption if the tag does not verify (final).
  Result<Bytes> DecryptBody(ByteSpan body);

  // Bytes to read for a body whose announced length is `len`.
  static constexpr size_t BodySize(uint16_t len) { return size_t{len} + kAeadTagSize; }

  // The peer's static key: its node id.
  const PublicKey& remote_static() const { return remote_static_; }
  // True once a receive-side tag failed; the connection must be dropped.
  bool failed() const { return recv_failed_; }

  // Cipher state, for test vectors only. Secret material: never log it.
  const Key32& send_key() const { return send_.key; }
  const Key32& recv_key() const { return recv_.key; }
  const Key32& send_chaining_key() const { return send_.chaining_key; }
  const Key32& recv_chaining_key() const { return recv_.chaining_key; }
  uint64_t send_nonce() const { return send_.nonce; }
  uint64_t recv_nonce() const { return recv_.nonce; }

 private:
  // One direction: key k, nonce n, chaining key ck (BOLT 8 "Lightning
  // Message Key Rotation").
  struct CipherState {
    Key32 key{};
    Key32 chaining_key{};
    uint64_t nonce = 0;
    // n += 1; at kNoiseKeyRotationNonce: ck, k = HKDF(ck, k) and n = 0.
    void Advance();
    void Wipe();
  };

  NoiseTransport(const Key32& send_key, const Key32& recv_key, const Key32& chaining_key,
                 const PublicKey& remote_static);

  CipherState send_;
  CipherState recv_;
  PublicKey remote_static_;
  std::optional<uint16_t> pending_body_len_;  // set between DecryptLength and DecryptBody
  bool recv_failed_ = false;
  bool moved_from_ = false;
};

// The three-act BOLT 8 handshake for one connection attempt. Each instance
// runs one handshake in one role; steps of the other role, or repeated steps,
// fail with kFailedPrecondition and leave the state unchanged.
//
// Move-only; the handshake secrets (chaining key, temporary keys, copies of
// the static and ephemeral secrets) are wiped on destruction and by Finish().
class NoiseHandshake {
 public:
  enum class Role { kInitiator, kResponder };

  // `ephemeral` MUST be fresh for every handshake (KeyPair::Generate with the
  // system CSPRNG); fixed ephemeral keys are only for the BOLT 8 test
  // vectors. If `remote_static` is not a valid point (a default-constructed
  // PublicKey), the handshake starts failed and every step reports why.
  static NoiseHandshake Initiator(const KeyPair& local_static, const PublicKey& remote_static,
                                  const KeyPair& ephemeral);
  static NoiseHandshake Responder(const KeyPair& local_static, const KeyPair& ephemeral);

  // The moved-from handshake is wiped and fails every later call.
  NoiseHandshake(NoiseHandshake&& other) noexcept;
  NoiseHandshake& operator=(NoiseHandshake&& other) noexcept;
  NoiseHandshake(const NoiseHandshake&) = delete;
  NoiseHandshake& operator=(const NoiseHandshake&) = delete;
  ~NoiseHandshake();

  // Initiator steps, in this order.
  Result<Bytes> WriteAct1();       // -> kAct1Size bytes: e, es
  Status ReadAct2(ByteSpan act2);  // <- kAct2Size bytes: e, ee
  Result<Bytes> WriteAct3();       // -> kAct3Size bytes: s, se
  // Responder steps, in this order.
  Status ReadAct1(ByteSpan act1);  // <- kAct1Size bytes
  Result<Bytes> WriteAct2();       // -> kAct2Size bytes
  Status ReadAct3(ByteSpan act3);  // <- kAct3Size bytes; learns the initiator's key

  // After the last act (WriteAct3 / ReadAct3): the transport, whose
  // remote_static() is the authenticated peer key. Callable once.
  Result<NoiseTransport> Finish();

  Role role() const { return role_; }
  // True after the last act succeeded (and until Finish).
  bool complete() const { return step_ == Step::kComplete; }
  bool failed() const { return step_ == Step::kFailed; }
  // The handshake digest h so far (not secret; BOLT 8 Appendix A lists it).
  const Hash32& handshake_hash() const { return h_; }

 private:
  enum class Step {
    kWriteAct1,
    kReadAct2,
    kWriteAct3,
    kReadAct1,
    kWriteAct2,
    kReadAct3,
    kComplete,
    kFinished,
    kFailed,
  };

  NoiseHandshake(Role role, const KeyPair& local_static, const KeyPair& ephemeral,
                 const PublicKey& responder_static);

  // kFailedPrecondition unless the next step is `step`.
  Status Expect(Step step, const char* operation) const;
  // Records the first failure, wipes the secrets, and returns `s`.
  Status Fail(Status s);
  // h = SHA256(h || data)
  void MixHash(ByteSpan data);
  // ck, temp_k = HKDF(ck, ikm)
  void MixKey(const Key32& ikm);
  // Shared by ReadAct1 and ReadAct2: version, ephemeral key, ECDH with
  // `local_secret`, MAC. `act` names the act in error messages.
  Status ReadEphemeralAct(ByteSpan m, size_t size, const char* act, const SecretKey& local_secret);
  // Shared by WriteAct1 and WriteAct2: e, then ECDH(e, remote) and a MAC.
  Bytes WriteEphemeralAct(const PublicKey& remote);
  void Wipe();
  void MarkMovedFrom();

  Role role_;
  Step step_;
  KeyPair local_static_;
  KeyPair ephemeral_;
  std::optional<PublicKey> remote_static_;     // initiator: from the start; responder: act 3
  std::optional<PublicKey> remote_ephemeral_;  // after the peer's first act
  Hash32 h_{};
  Key32 ck_{};
  Key32 temp_k_{};  // the latest temp_k1/2/3
  Key32 send_key_{};
  Key32 recv_key_{};
  std::string failure_;  // the first failure, repeated by later calls
};

}  // namespace tipd::crypto
