// Fuzz target for the BOLT 8 state machines in crypto/noise.h: arbitrary peer
// bytes at every receiving step (act 1, act 2, act 3, frame headers and
// bodies) must be rejected with a Status, never crash or be accepted by
// mistake; and any message we encrypt must decrypt to itself.
//
// The first input byte picks the step, the rest is what the peer sends.
// Build with clang: -fsanitize=fuzzer,address,undefined (tests/fuzz/CMakeLists.txt).

#include <algorithm>
#include <cstdlib>

#include "crypto/crypto.h"
#include "crypto/noise.h"

namespace tipd::crypto {
namespace {

KeyPair Key(uint8_t fill) { return KeyPair::FromSecret(*SecretKey::FromBytes(Bytes(32, fill))); }

// Fixed keys (the BOLT 8 Appendix A ones): deterministic runs, replayable crashes.
struct Keys {
  KeyPair initiator_static = Key(0x11);
  KeyPair initiator_ephemeral = Key(0x12);
  KeyPair responder_static = Key(0x21);
  KeyPair responder_ephemeral = Key(0x22);
};

const Keys& K() {
  static const Keys keys;
  return keys;
}

void Require(bool condition) {
  if (!condition) std::abort();
}

NoiseHandshake Initiator() {
  return NoiseHandshake::Initiator(K().initiator_static, K().responder_static.public_key(),
                                   K().initiator_ephemeral);
}
NoiseHandshake Responder() {
  return NoiseHandshake::Responder(K().responder_static, K().responder_ephemeral);
}

void FuzzAct1(ByteSpan in) {
  NoiseHandshake resp = Responder();
  Status s = resp.ReadAct1(in);
  // Only the genuine act (fixed by the keys) can pass: anything else would
  // be a forged MAC.
  NoiseHandshake init = Initiator();
  Bytes genuine = *init.WriteAct1();
  Require(s.ok() == (Bytes(in.begin(), in.end()) == genuine));
  Require(resp.WriteAct2().ok() == s.ok());
}

void FuzzAct2(ByteSpan in) {
  NoiseHandshake init = Initiator();
  NoiseHandshake resp = Responder();
  Require(resp.ReadAct1(*init.WriteAct1()).ok());
  Bytes genuine = *resp.WriteAct2();
  Status s = init.ReadAct2(in);
  Require(s.ok() == (Bytes(in.begin(), in.end()) == genuine));
  Require(init.WriteAct3().ok() == s.ok());
}

void FuzzAct3(ByteSpan in) {
  NoiseHandshake init = Initiator();
  NoiseHandshake resp = Responder();
  Require(resp.ReadAct1(*init.WriteAct1()).ok());
  Require(init.ReadAct2(*resp.WriteAct2()).ok());
  Bytes genuine = *init.WriteAct3();
  Status s = resp.ReadAct3(in);
  Require(s.ok() == (Bytes(in.begin(), in.end()) == genuine));
  Result<NoiseTransport> t = resp.Finish();
  Require(t.ok() == s.ok());
  if (t.ok()) Require(t->remote_static() == K().initiator_static.public_key());
}

void FuzzTransport(ByteSpan in) {
  const Key32 k1{1}, k2{2}, ck{3};
  const PublicKey& peer = K().initiator_static.public_key();
  NoiseTransport sender = NoiseTransport::FromKeys(k1, k2, ck, peer);
  NoiseTransport receiver = NoiseTransport::FromKeys(k2, k1, ck, peer);
  // Our own message round-trips exactly.
  Result<Bytes> frame = sender.Encrypt(in);
  Require(frame.ok() == (in.size() <= kNoiseMaxMessageSize));
  if (frame.ok()) {
    Result<uint16_t> len = receiver.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize));
    Require(len.ok() && *len == in.size());
    Result<Bytes> body = receiver.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
    Require(body.ok() && *body == Bytes(in.begin(), in.end()));
  }
  // Peer bytes as a frame on a fresh receiver: rejected, never trusted.
  NoiseTransport victim = NoiseTransport::FromKeys(k2, k1, ck, peer);
  Result<uint16_t> len =
      victim.DecryptLength(in.first(std::min(in.size(), kNoiseLengthHeaderSize)));
  if (len.ok()) {
    // Only possible if the input starts with a genuine header (e.g. the
    // fuzzer found our own frame); then the body must be exactly as long.
    Result<Bytes> body = victim.DecryptBody(in.subspan(kNoiseLengthHeaderSize));
    if (body.ok()) Require(body->size() == *len);
  }
}

}  // namespace
}  // namespace tipd::crypto

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tipd::crypto;
  if (size == 0) return 0;
  const tipd::ByteSpan in(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      FuzzAct1(in);
      break;
    case 1:
      FuzzAct2(in);
      break;
    case 2:
      FuzzAct3(in);
      break;
    case 3:
      FuzzTransport(in);
      break;
  }
  return 0;
}
