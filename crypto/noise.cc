// BOLT 8 Noise_XK handshake and transport. Step numbers in comments refer to
// the "Sender Actions" / "Receiver Actions" lists of BOLT 8.

#include "crypto/noise.h"

#include <string_view>
#include <tuple>
#include <utility>

namespace tipd::crypto {

namespace {

constexpr std::string_view kProtocolName = "Noise_XK_secp256k1_ChaChaPoly_SHA256";
constexpr std::string_view kPrologue = "lightning";
constexpr uint8_t kHandshakeVersion = 0;
constexpr size_t kPubKeySize = 33;

Hash32 HashConcat(ByteSpan a, ByteSpan b) {
  Sha256Hasher h;
  h.Write(a).Write(b);
  return h.Finalize();
}

void WipeKey(Key32& k) { SecureWipe(k.data(), k.size()); }

std::string SizeError(const char* act, size_t want, size_t got) {
  return std::string(act) + " must be exactly " + std::to_string(want) + " bytes, got " +
         std::to_string(got);
}

std::string VersionError(const char* act, uint8_t v) {
  return std::string(act) + ": unsupported handshake version " + std::to_string(v) + " (expected " +
         std::to_string(kHandshakeVersion) + ")";
}

}  // namespace

// ---- NoiseTransport ----

void NoiseTransport::CipherState::Advance() {
  ++nonce;
  if (nonce == kNoiseKeyRotationNonce) {
    auto [new_ck, new_k] = Hkdf2(chaining_key, key);
    chaining_key = new_ck;
    key = new_k;
    nonce = 0;
    WipeKey(new_ck);
    WipeKey(new_k);
  }
}

void NoiseTransport::CipherState::Wipe() {
  WipeKey(key);
  WipeKey(chaining_key);
  nonce = 0;
}

NoiseTransport::NoiseTransport(const Key32& send_key, const Key32& recv_key,
                               const Key32& chaining_key, const PublicKey& remote_static)
    : remote_static_(remote_static) {
  send_.key = send_key;
  send_.chaining_key = chaining_key;
  recv_.key = recv_key;
  recv_.chaining_key = chaining_key;
}

NoiseTransport NoiseTransport::FromKeys(const Key32& send_key, const Key32& recv_key,
                                        const Key32& chaining_key, const PublicKey& remote_static) {
  return NoiseTransport(send_key, recv_key, chaining_key, remote_static);
}

NoiseTransport::NoiseTransport(NoiseTransport&& other) noexcept
    : send_(other.send_),
      recv_(other.recv_),
      remote_static_(other.remote_static_),
      pending_body_len_(other.pending_body_len_),
      recv_failed_(other.recv_failed_),
      moved_from_(other.moved_from_) {
  other.send_.Wipe();
  other.recv_.Wipe();
  other.moved_from_ = true;
}

NoiseTransport& NoiseTransport::operator=(NoiseTransport&& other) noexcept {
  if (this != &other) {
    send_ = other.send_;
    recv_ = other.recv_;
    remote_static_ = other.remote_static_;
    pending_body_len_ = other.pending_body_len_;
    recv_failed_ = other.recv_failed_;
    moved_from_ = other.moved_from_;
    other.send_.Wipe();
    other.recv_.Wipe();
    other.moved_from_ = true;
  }
  return *this;
}

NoiseTransport::~NoiseTransport() {
  send_.Wipe();
  recv_.Wipe();
}

Result<Bytes> NoiseTransport::Encrypt(ByteSpan msg) {
  if (moved_from_) return Status::FailedPrecondition("transport was moved from");
  if (msg.size() > kNoiseMaxMessageSize) {
    return Status::InvalidArgument("message of " + std::to_string(msg.size()) +
                                   " bytes exceeds the transport maximum of " +
                                   std::to_string(kNoiseMaxMessageSize));
  }
  const uint8_t len[2] = {static_cast<uint8_t>(msg.size() >> 8), static_cast<uint8_t>(msg.size())};
  Bytes out = AeadEncrypt(send_.key, send_.nonce, {}, len);
  send_.Advance();
  Bytes body = AeadEncrypt(send_.key, send_.nonce, {}, msg);
  send_.Advance();
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Result<uint16_t> NoiseTransport::DecryptLength(ByteSpan header) {
  if (moved_from_) return Status::FailedPrecondition("transport was moved from");
  if (recv_failed_) {
    return Status::FailedPrecondition("transport already failed to authenticate a frame");
  }
  if (pending_body_len_.has_value()) {
    return Status::FailedPrecondition("DecryptLength called while a " +
                                      std::to_string(*pending_body_len_) +
                                      "-byte body is still expected");
  }
  if (header.size() != kNoiseLengthHeaderSize) {
    return Status::InvalidArgument(
        SizeError("encrypted length header", kNoiseLengthHeaderSize, header.size()));
  }
  Result<Bytes> len = AeadDecrypt(recv_.key, recv_.nonce, {}, header);
  if (!len.ok()) {
    recv_failed_ = true;
    return Status::Corruption("bad MAC on the encrypted length header");
  }
  recv_.Advance();
  const uint16_t n = static_cast<uint16_t>((*len)[0] << 8 | (*len)[1]);
  pending_body_len_ = n;
  return n;
}

Result<Bytes> NoiseTransport::DecryptBody(ByteSpan body) {
  if (moved_from_) return Status::FailedPrecondition("transport was moved from");
  if (recv_failed_) {
    return Status::FailedPrecondition("transport already failed to authenticate a frame");
  }
  if (!pending_body_len_.has_value()) {
    return Status::FailedPrecondition("DecryptBody called before DecryptLength");
  }
  const size_t want = BodySize(*pending_body_len_);
  if (body.size() != want) {
    return Status::InvalidArgument(SizeError("encrypted body", want, body.size()));
  }
  Result<Bytes> msg = AeadDecrypt(recv_.key, recv_.nonce, {}, body);
  if (!msg.ok()) {
    recv_failed_ = true;
    return Status::Corruption("bad MAC on the encrypted message body");
  }
  recv_.Advance();
  pending_body_len_.reset();
  return msg;
}

// ---- NoiseHandshake ----

NoiseHandshake::NoiseHandshake(Role role, const KeyPair& local_static, const KeyPair& ephemeral,
                               const PublicKey& responder_static)
    : role_(role),
      step_(role == Role::kInitiator ? Step::kWriteAct1 : Step::kReadAct1),
      local_static_(local_static),
      ephemeral_(ephemeral) {
  // Handshake State Initialization, both sides.
  h_ = Sha256(AsSpan(kProtocolName));
  ck_ = h_;
  h_ = HashConcat(h_, AsSpan(kPrologue));
  h_ = HashConcat(h_, responder_static.bytes());
}

NoiseHandshake NoiseHandshake::Initiator(const KeyPair& local_static,
                                         const PublicKey& remote_static, const KeyPair& ephemeral) {
  NoiseHandshake hs(Role::kInitiator, local_static, ephemeral, remote_static);
  if (!PublicKey::Parse(remote_static.bytes()).ok()) {
    (void)hs.Fail(Status::InvalidArgument("remote static key is not a valid public key"));
  } else {
    hs.remote_static_ = remote_static;
  }
  return hs;
}

NoiseHandshake NoiseHandshake::Responder(const KeyPair& local_static, const KeyPair& ephemeral) {
  return NoiseHandshake(Role::kResponder, local_static, ephemeral, local_static.public_key());
}

NoiseHandshake::NoiseHandshake(NoiseHandshake&& other) noexcept
    : role_(other.role_),
      step_(other.step_),
      local_static_(other.local_static_),
      ephemeral_(other.ephemeral_),
      remote_static_(other.remote_static_),
      remote_ephemeral_(other.remote_ephemeral_),
      h_(other.h_),
      ck_(other.ck_),
      temp_k_(other.temp_k_),
      send_key_(other.send_key_),
      recv_key_(other.recv_key_),
      failure_(std::move(other.failure_)) {
  other.MarkMovedFrom();
}

NoiseHandshake& NoiseHandshake::operator=(NoiseHandshake&& other) noexcept {
  if (this != &other) {
    role_ = other.role_;
    step_ = other.step_;
    local_static_ = other.local_static_;
    ephemeral_ = other.ephemeral_;
    remote_static_ = other.remote_static_;
    remote_ephemeral_ = other.remote_ephemeral_;
    h_ = other.h_;
    ck_ = other.ck_;
    temp_k_ = other.temp_k_;
    send_key_ = other.send_key_;
    recv_key_ = other.recv_key_;
    failure_ = std::move(other.failure_);
    other.MarkMovedFrom();
  }
  return *this;
}

void NoiseHandshake::MarkMovedFrom() {
  // The KeyPair copies keep their secrets until destruction (KeyPair has no
  // way to clear them), but a failed handshake never uses them again.
  step_ = Step::kFailed;
  failure_ = "handshake object was moved from";
  Wipe();
}

NoiseHandshake::~NoiseHandshake() { Wipe(); }

void NoiseHandshake::Wipe() {
  WipeKey(ck_);
  WipeKey(temp_k_);
  WipeKey(send_key_);
  WipeKey(recv_key_);
  // The KeyPair copies wipe their secrets in their own destructors.
}

Status NoiseHandshake::Expect(Step step, const char* operation) const {
  if (step_ == step) return Status::Ok();
  if (step_ == Step::kFailed) {
    return Status::FailedPrecondition(std::string(operation) +
                                      ": handshake already failed: " + failure_);
  }
  if (step_ == Step::kFinished) {
    return Status::FailedPrecondition(std::string(operation) + ": handshake already finished");
  }
  const char* next = "";
  switch (step_) {
    case Step::kWriteAct1:
      next = "WriteAct1";
      break;
    case Step::kReadAct2:
      next = "ReadAct2";
      break;
    case Step::kWriteAct3:
      next = "WriteAct3";
      break;
    case Step::kReadAct1:
      next = "ReadAct1";
      break;
    case Step::kWriteAct2:
      next = "WriteAct2";
      break;
    case Step::kReadAct3:
      next = "ReadAct3";
      break;
    case Step::kComplete:
      next = "Finish";
      break;
    case Step::kFinished:
    case Step::kFailed:
      break;  // handled above
  }
  return Status::FailedPrecondition(std::string(operation) + " called out of order on the " +
                                    (role_ == Role::kInitiator ? "initiator" : "responder") +
                                    "; the next step is " + next);
}

Status NoiseHandshake::Fail(Status s) {
  if (failure_.empty()) failure_ = s.ToString();
  step_ = Step::kFailed;
  Wipe();
  return s;
}

void NoiseHandshake::MixHash(ByteSpan data) { h_ = HashConcat(h_, data); }

void NoiseHandshake::MixKey(const Key32& ikm) {
  auto [new_ck, new_temp] = Hkdf2(ck_, ikm);
  ck_ = new_ck;
  temp_k_ = new_temp;
  WipeKey(new_ck);
  WipeKey(new_temp);
}

Bytes NoiseHandshake::WriteEphemeralAct(const PublicKey& remote) {
  // Sender actions 2-7 of acts one and two (step 1, generateKey, is the
  // ephemeral key the caller passed in).
  MixHash(ephemeral_.public_key().bytes());
  Key32 ss = Ecdh(ephemeral_.secret(), remote);
  MixKey(ss);
  WipeKey(ss);
  const Bytes c = AeadEncrypt(temp_k_, 0, h_, {});
  MixHash(c);
  ByteWriter m;
  m.U8(kHandshakeVersion);
  m.Raw(ephemeral_.public_key().bytes());
  m.Raw(c);
  return m.Take();
}

Status NoiseHandshake::ReadEphemeralAct(ByteSpan m, size_t size, const char* act,
                                        const SecretKey& local_secret) {
  // Receiver actions 1-8 of acts one and two.
  if (m.size() != size) return Fail(Status::InvalidArgument(SizeError(act, size, m.size())));
  if (m[0] != kHandshakeVersion) return Fail(Status::InvalidArgument(VersionError(act, m[0])));
  const ByteSpan re_bytes = m.subspan(1, kPubKeySize);
  const ByteSpan c = m.subspan(1 + kPubKeySize);
  Result<PublicKey> re = PublicKey::Parse(re_bytes);
  if (!re.ok()) {
    return Fail(Status::InvalidArgument(std::string(act) +
                                        ": bad ephemeral public key: " + re.status().message()));
  }
  MixHash(re->bytes());
  Key32 ss = Ecdh(local_secret, *re);
  MixKey(ss);
  WipeKey(ss);
  if (!AeadDecrypt(temp_k_, 0, h_, c).ok()) {
    return Fail(Status::Corruption(std::string(act) + ": bad MAC"));
  }
  MixHash(c);
  remote_ephemeral_ = *re;
  return Status::Ok();
}

Result<Bytes> NoiseHandshake::WriteAct1() {
  TIPD_RETURN_IF_ERROR(Expect(Step::kWriteAct1, "WriteAct1"));
  // -> e, es
  Bytes m = WriteEphemeralAct(*remote_static_);
  step_ = Step::kReadAct2;
  return m;
}

Status NoiseHandshake::ReadAct1(ByteSpan act1) {
  TIPD_RETURN_IF_ERROR(Expect(Step::kReadAct1, "ReadAct1"));
  // es = ECDH(s.priv, re); a bad MAC means the initiator does not know our
  // static key.
  TIPD_RETURN_IF_ERROR(ReadEphemeralAct(act1, kAct1Size, "act 1", local_static_.secret()));
  step_ = Step::kWriteAct2;
  return Status::Ok();
}

Result<Bytes> NoiseHandshake::WriteAct2() {
  TIPD_RETURN_IF_ERROR(Expect(Step::kWriteAct2, "WriteAct2"));
  // <- e, ee
  Bytes m = WriteEphemeralAct(*remote_ephemeral_);
  step_ = Step::kReadAct3;
  return m;
}

Status NoiseHandshake::ReadAct2(ByteSpan act2) {
  TIPD_RETURN_IF_ERROR(Expect(Step::kReadAct2, "ReadAct2"));
  // ee = ECDH(e.priv, re)
  TIPD_RETURN_IF_ERROR(ReadEphemeralAct(act2, kAct2Size, "act 2", ephemeral_.secret()));
  step_ = Step::kWriteAct3;
  return Status::Ok();
}

Result<Bytes> NoiseHandshake::WriteAct3() {
  TIPD_RETURN_IF_ERROR(Expect(Step::kWriteAct3, "WriteAct3"));
  // -> s, se
  // 1-2: c = encryptWithAD(temp_k2, 1, h, s.pub); h = SHA256(h || c)
  const Bytes c = AeadEncrypt(temp_k_, 1, h_, local_static_.public_key().bytes());
  MixHash(c);
  // 3-4: se = ECDH(s.priv, re); ck, temp_k3 = HKDF(ck, se)
  Key32 ss = Ecdh(local_static_.secret(), *remote_ephemeral_);
  MixKey(ss);
  WipeKey(ss);
  // 5: t = encryptWithAD(temp_k3, 0, h, zero)
  const Bytes t = AeadEncrypt(temp_k_, 0, h_, {});
  // 6: sk, rk = HKDF(ck, zero)
  std::tie(send_key_, recv_key_) = Hkdf2(ck_, {});
  ByteWriter m;
  m.U8(kHandshakeVersion);
  m.Raw(c);
  m.Raw(t);
  step_ = Step::kComplete;
  return m.Take();
}

Status NoiseHandshake::ReadAct3(ByteSpan act3) {
  TIPD_RETURN_IF_ERROR(Expect(Step::kReadAct3, "ReadAct3"));
  const char* act = "act 3";
  if (act3.size() != kAct3Size) {
    return Fail(Status::InvalidArgument(SizeError(act, kAct3Size, act3.size())));
  }
  if (act3[0] != kHandshakeVersion) {
    return Fail(Status::InvalidArgument(VersionError(act, act3[0])));
  }
  const ByteSpan c = act3.subspan(1, kPubKeySize + kAeadTagSize);
  const ByteSpan t = act3.subspan(1 + kPubKeySize + kAeadTagSize);
  // 4: rs = decryptWithAD(temp_k2, 1, h, c)
  Result<Bytes> rs_bytes = AeadDecrypt(temp_k_, 1, h_, c);
  if (!rs_bytes.ok()) {
    return Fail(Status::Corruption("act 3: bad MAC on the encrypted static key"));
  }
  Result<PublicKey> rs = PublicKey::Parse(*rs_bytes);
  if (!rs.ok()) {
    return Fail(Status::InvalidArgument("act 3: bad static public key: " + rs.status().message()));
  }
  // 5-7: h = SHA256(h || c); se = ECDH(e.priv, rs); ck, temp_k3 = HKDF(ck, se)
  MixHash(c);
  Key32 ss = Ecdh(ephemeral_.secret(), *rs);
  MixKey(ss);
  WipeKey(ss);
  // 8: p = decryptWithAD(temp_k3, 0, h, t)
  if (!AeadDecrypt(temp_k_, 0, h_, t).ok()) {
    return Fail(Status::Corruption("act 3: bad final MAC"));
  }
  // 9: rk, sk = HKDF(ck, zero)
  std::tie(recv_key_, send_key_) = Hkdf2(ck_, {});
  remote_static_ = *rs;
  step_ = Step::kComplete;
  return Status::Ok();
}

Result<NoiseTransport> NoiseHandshake::Finish() {
  TIPD_RETURN_IF_ERROR(Expect(Step::kComplete, "Finish"));
  NoiseTransport t = NoiseTransport::FromKeys(send_key_, recv_key_, ck_, *remote_static_);
  step_ = Step::kFinished;
  Wipe();
  return t;
}

}  // namespace tipd::crypto
