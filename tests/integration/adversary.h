// A malicious channel peer built from the project's own libraries: a raw
// TCP socket driven by the Noise handshake and transport of crypto/noise.h
// (so it can send any byte, frame or Envelope, which p2p::Host refuses to),
// a channel::Channel mirror of its side of every channel it holds with the
// victim (so it can build valid updates and then break exactly one rule),
// and the codecs of channel/ and ledger/ to sign what it likes.
//
// Everything is blocking with deadlines: the test drives one step at a time
// and waits on what the victim answers, never on a sleep.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/channel.h"
#include "crypto/crypto.h"
#include "crypto/noise.h"
#include "tipd/wire.pb.h"
#include "util/bytes.h"

namespace tipd::testing {

// One TCP connection to a node with the Noise handshake done by hand.
class RawPeer {
 public:
  ~RawPeer();
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // A bare TCP connection to 127.0.0.1:port (no handshake); nullptr on failure.
  static std::unique_ptr<RawPeer> Tcp(uint16_t port, std::string* error);
  // TCP + Noise acts 1..3 as initiator; nullptr (and *error) on failure.
  static std::unique_ptr<RawPeer> Dial(uint16_t port, const crypto::KeyPair& me,
                                       const crypto::PublicKey& remote, std::string* error);

  // Raw bytes on the socket.
  bool SendRaw(ByteSpan bytes);
  // One encrypted frame carrying `plaintext` (any bytes).
  bool SendFrame(ByteSpan plaintext);
  bool SendEnvelope(const v1::Envelope& env);
  bool SendInit(const std::string& chain_id);
  // Sends Init and waits for the node's Init.
  bool Handshake(const std::string& chain_id, std::chrono::milliseconds timeout);

  // The next Envelope (Pings are answered and skipped); nullopt on timeout,
  // EOF or a frame that does not decrypt (closed() tells which).
  std::optional<v1::Envelope> Receive(std::chrono::milliseconds timeout);
  // Receives until `match` accepts an Envelope; others are kept in skipped().
  std::optional<v1::Envelope> Await(const std::function<bool(const v1::Envelope&)>& match,
                                    std::chrono::milliseconds timeout);
  // True once the node closed the connection (EOF or reset) within `timeout`;
  // every Envelope read meanwhile is kept in skipped().
  bool WaitClosed(std::chrono::milliseconds timeout);
  bool closed() const { return closed_; }
  // Envelopes read by Await/WaitClosed that did not match, oldest first.
  std::vector<v1::Envelope>& skipped() { return skipped_; }
  // Sends a Ping and waits for its Pong: the connection is up and served.
  bool Ping(std::chrono::milliseconds timeout, uint32_t pong_bytes = 0);
  // The first connection-wide or channel Error seen with `code`, if any.
  std::optional<v1::Error> FindError(const std::string& code) const;

 private:
  RawPeer() = default;
  // Reads exactly n bytes before the deadline; false on EOF/timeout.
  bool ReadExact(size_t n, Bytes* out, std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  bool closed_ = false;
  std::optional<crypto::NoiseTransport> transport_;
  std::vector<v1::Envelope> skipped_;
  uint64_t last_pong_ = 0;
  std::optional<uint64_t> want_pong_;
  Bytes buf_;                       // read but not consumed
  std::optional<uint16_t> header_;  // a decrypted length whose body is not read yet
};

// The attacker's view of one channel it holds with the victim.
struct AttackerChannel {
  std::string id;  // 32 bytes
  uint64_t deposit = 0;
  channel::Channel mirror;
};

// A malicious channel peer: party A of every channel it opens with the
// victim. `Connect` + `Reestablish` bring a session up the way an honest
// node would; the attack helpers then send what an honest node never does.
class Adversary {
 public:
  Adversary(const crypto::KeyPair& key, const crypto::PublicKey& victim, uint16_t victim_port,
            std::string chain_id);

  const crypto::KeyPair& key() const { return key_; }
  RawPeer& peer() { return *peer_; }
  bool connected() const { return peer_ != nullptr && !peer_->closed(); }

  // A fresh session: Noise handshake and Init exchange.
  bool Connect(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Answers the victim's Reestablish of every channel in `ids` (default:
  // every channel held) and follows the plans: acks and resends. Returns
  // false (with *why) if the victim's messages did not come or broke a rule.
  bool Reestablish(std::string* why, const std::vector<std::string>& ids = {});
  // Connect + Reestablish.
  bool Reconnect(std::string* why);
  void Drop() { peer_.reset(); }

  // Registers a channel the ledger opened (the attacker is A).
  void AddChannel(const std::string& id, uint64_t deposit_a, uint64_t deposit_b,
                  uint32_t max_in_flight, uint32_t max_tips);
  AttackerChannel& channel(const std::string& id) { return *channels_.at(id); }

  // An honest tip: queued on the mirror, sent, and its ack awaited.
  bool PayHonestly(const std::string& id, uint64_t amount, const std::string& message,
                   std::string* why);
  // The latest update PayHonestly sent on `id` (acked by the victim).
  const v1::TipUpdate& LastUpdate(const std::string& id) { return last_update_.at(id); }
  // The next update the mirror would send for `tips` (drafts with index 0
  // get the next indexes), with `mutate` applied to the proof before it is
  // signed and `resign` false to keep the signature of the honest proof.
  // The mirror is NOT advanced: the update exists only on the wire.
  v1::TipUpdate ForgeUpdate(const std::string& id, std::vector<v1::Tip> tips,
                            const std::function<void(v1::BalanceProof*)>& mutate = {},
                            const crypto::KeyPair* signer = nullptr);
  // A tip with the next index of `id` (plus `offset`).
  v1::Tip NextTip(const std::string& id, uint64_t amount, const std::string& message,
                  uint64_t offset = 0);
  bool SendUpdate(const v1::TipUpdate& u);
  // Waits for the victim's UpdateRejected (or channel Error) naming `code`.
  bool AwaitRejection(const std::string& code, std::chrono::milliseconds timeout, std::string* got);

  // Receives the victim's next TipUpdate on `id` (skipping others), checks and
  // applies it to the mirror; the ack is NOT sent. Returns the update.
  std::optional<v1::TipUpdate> ReceiveUpdate(const std::string& id,
                                             std::chrono::milliseconds timeout, std::string* why);
  // The honest ack for the mirror's latest received update.
  std::optional<v1::Ack> HonestAck(const std::string& id);

 private:
  bool FollowPlan(AttackerChannel& ch, const v1::Reestablish& theirs, std::string* why);

  crypto::KeyPair key_;
  crypto::PublicKey victim_;
  uint16_t port_;
  std::string chain_id_;
  std::unique_ptr<RawPeer> peer_;
  std::map<std::string, std::unique_ptr<AttackerChannel>> channels_;
  std::map<std::string, v1::TipUpdate> last_update_;
};

}  // namespace tipd::testing
