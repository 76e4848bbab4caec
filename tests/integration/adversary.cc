#include "tests/integration/adversary.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "channel/codec.h"

namespace tipd::testing {

namespace {

using Clock = std::chrono::steady_clock;

std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string Describe(const v1::Envelope& env) {
  switch (env.msg_case()) {
    case v1::Envelope::kUpdateRejected:
      return "UpdateRejected " + env.update_rejected().code() + ": " +
             env.update_rejected().message();
    case v1::Envelope::kError:
      return "Error " + env.error().code() + ": " + env.error().message();
    case v1::Envelope::kRejectChannel:
      return "RejectChannel " + env.reject_channel().code() + ": " + env.reject_channel().message();
    default: {
      const auto* field = env.GetDescriptor()->FindFieldByNumber(static_cast<int>(env.msg_case()));
      return field ? std::string(field->name()) : std::string("empty envelope");
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// RawPeer

RawPeer::~RawPeer() {
  if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<RawPeer> RawPeer::Tcp(uint16_t port, std::string* error) {
  std::unique_ptr<RawPeer> p(new RawPeer());
  p->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p->fd_ < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return nullptr;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(p->fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = std::string("connect: ") + std::strerror(errno);
    return nullptr;
  }
  int one = 1;
  ::setsockopt(p->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return p;
}

std::unique_ptr<RawPeer> RawPeer::Dial(uint16_t port, const crypto::KeyPair& me,
                                       const crypto::PublicKey& remote, std::string* error) {
  auto p = Tcp(port, error);
  if (!p) return nullptr;
  auto hs =
      crypto::NoiseHandshake::Initiator(me, remote, crypto::KeyPair::Generate(crypto::SystemRng()));
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  auto act1 = hs.WriteAct1();
  if (!act1.ok() || !p->SendRaw(*act1)) {
    *error = "act 1 not sent";
    return nullptr;
  }
  Bytes act2;
  if (!p->ReadExact(crypto::kAct2Size, &act2, deadline)) {
    *error = "no act 2";
    return nullptr;
  }
  if (Status s = hs.ReadAct2(act2); !s.ok()) {
    *error = "act 2: " + s.ToString();
    return nullptr;
  }
  auto act3 = hs.WriteAct3();
  if (!act3.ok() || !p->SendRaw(*act3)) {
    *error = "act 3 not sent";
    return nullptr;
  }
  auto transport = hs.Finish();
  if (!transport.ok()) {
    *error = "finish: " + transport.status().ToString();
    return nullptr;
  }
  p->transport_.emplace(std::move(*transport));
  return p;
}

bool RawPeer::SendRaw(ByteSpan bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A failed send does not mark the connection closed: what the node sent
    // before closing (its Error) is still to be read.
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool RawPeer::SendFrame(ByteSpan plaintext) {
  auto frame = transport_->Encrypt(plaintext);
  if (!frame.ok()) return false;
  return SendRaw(*frame);
}

bool RawPeer::SendEnvelope(const v1::Envelope& env) {
  std::string bytes;
  if (!env.SerializeToString(&bytes)) return false;
  return SendFrame(AsSpan(bytes));
}

bool RawPeer::SendInit(const std::string& chain_id) {
  v1::Envelope env;
  env.mutable_init()->set_chain_id(chain_id);
  env.mutable_init()->set_software_version("adversary/0");
  env.mutable_init()->set_protocol_version(1);
  return SendEnvelope(env);
}

bool RawPeer::Handshake(const std::string& chain_id, std::chrono::milliseconds timeout) {
  if (!SendInit(chain_id)) return false;
  return Await([](const v1::Envelope& e) { return e.has_init(); }, timeout).has_value();
}

bool RawPeer::ReadExact(size_t n, Bytes* out, Clock::time_point deadline) {
  while (buf_.size() < n) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 || closed_) return false;
    pollfd pfd{fd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    uint8_t tmp[65536];
    ssize_t got = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      closed_ = true;
      return false;
    }
    buf_.insert(buf_.end(), tmp, tmp + got);
  }
  out->assign(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(n));
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(n));
  return true;
}

std::optional<v1::Envelope> RawPeer::Receive(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!header_) {
      Bytes header;
      if (!ReadExact(crypto::kNoiseLengthHeaderSize, &header, deadline)) return std::nullopt;
      auto len = transport_->DecryptLength(header);
      if (!len.ok()) {
        closed_ = true;
        return std::nullopt;
      }
      header_ = *len;
    }
    Bytes body;
    if (!ReadExact(crypto::NoiseTransport::BodySize(*header_), &body, deadline)) {
      return std::nullopt;
    }
    header_.reset();
    auto plain = transport_->DecryptBody(body);
    if (!plain.ok()) {
      closed_ = true;
      return std::nullopt;
    }
    v1::Envelope env;
    if (!env.ParseFromArray(plain->data(), static_cast<int>(plain->size()))) {
      closed_ = true;
      return std::nullopt;
    }
    if (env.has_ping()) {
      v1::Envelope pong;
      pong.mutable_pong()->set_nonce(env.ping().nonce());
      pong.mutable_pong()->set_padding(std::string(env.ping().pong_bytes(), '\0'));
      SendEnvelope(pong);
      continue;
    }
    if (env.has_pong()) {
      last_pong_ = env.pong().nonce();
      if (want_pong_ && last_pong_ == *want_pong_) return std::nullopt;
      continue;
    }
    return env;
  }
}

std::optional<v1::Envelope> RawPeer::Await(const std::function<bool(const v1::Envelope&)>& match,
                                           std::chrono::milliseconds timeout) {
  // What an earlier wait read and set aside counts first.
  for (auto it = skipped_.begin(); it != skipped_.end(); ++it) {
    if (match(*it)) {
      v1::Envelope env = std::move(*it);
      skipped_.erase(it);
      return env;
    }
  }
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto env = Receive(left);
    if (!env) return std::nullopt;
    if (match(*env)) return env;
    skipped_.push_back(std::move(*env));
  }
  return std::nullopt;
}

bool RawPeer::WaitClosed(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (!transport_) {
    Bytes ignored;
    while (!closed_ && Clock::now() < deadline) {
      ReadExact(buf_.size() + 1, &ignored, deadline);
      if (!closed_) buf_.clear();
    }
    return closed_;
  }
  while (!closed_ && Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (auto env = Receive(left)) skipped_.push_back(std::move(*env));
  }
  return closed_;
}

bool RawPeer::Ping(std::chrono::milliseconds timeout, uint32_t pong_bytes) {
  static uint64_t counter = 1000;
  const uint64_t nonce = ++counter;
  v1::Envelope env;
  env.mutable_ping()->set_nonce(nonce);
  env.mutable_ping()->set_pong_bytes(pong_bytes);
  if (!SendEnvelope(env)) return false;
  const auto deadline = Clock::now() + timeout;
  want_pong_ = nonce;
  while (last_pong_ != nonce && !closed_ && Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (auto e = Receive(left)) skipped_.push_back(std::move(*e));
  }
  want_pong_.reset();
  return last_pong_ == nonce;
}

std::optional<v1::Error> RawPeer::FindError(const std::string& code) const {
  for (const v1::Envelope& e : skipped_) {
    if (e.has_error() && e.error().code() == code) return e.error();
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Adversary

Adversary::Adversary(const crypto::KeyPair& key, const crypto::PublicKey& victim,
                     uint16_t victim_port, std::string chain_id)
    : key_(key), victim_(victim), port_(victim_port), chain_id_(std::move(chain_id)) {}

bool Adversary::Connect(std::chrono::milliseconds timeout) {
  peer_.reset();
  std::string error;
  peer_ = RawPeer::Dial(port_, key_, victim_, &error);
  if (!peer_) return false;
  return peer_->Handshake(chain_id_, timeout);
}

bool Adversary::Reconnect(std::string* why) {
  if (!Connect()) {
    *why = "cannot connect to the victim";
    return false;
  }
  return Reestablish(why);
}

void Adversary::AddChannel(const std::string& id, uint64_t deposit_a, uint64_t deposit_b,
                           uint32_t max_in_flight, uint32_t max_tips) {
  channel::ChannelParams p;
  p.chain_id = chain_id_;
  std::copy(id.begin(), id.end(), p.channel_id.begin());
  p.local_key = key_.public_key();
  p.remote_key = victim_;
  p.local_is_a = true;
  p.deposit_local = deposit_a;
  p.deposit_remote = deposit_b;
  p.max_updates_in_flight = max_in_flight;
  p.max_tips_per_update = max_tips;
  auto ch = channel::Channel::Open(p);
  channels_[id] = std::make_unique<AttackerChannel>(AttackerChannel{id, deposit_a, std::move(*ch)});
}

bool Adversary::Reestablish(std::string* why, const std::vector<std::string>& ids) {
  std::set<std::string> want;
  if (ids.empty()) {
    for (const auto& [id, ch] : channels_) want.insert(id);
  } else {
    want.insert(ids.begin(), ids.end());
  }
  for (const std::string& id : want) {
    v1::Envelope env;
    *env.mutable_reestablish() = channels_.at(id)->mirror.MakeReestablish();
    if (!peer_->SendEnvelope(env)) {
      *why = "send failed";
      return false;
    }
  }
  std::set<std::string> pending = want;
  while (!pending.empty()) {
    auto env = peer_->Await(
        [&](const v1::Envelope& e) {
          return e.has_reestablish() && pending.count(e.reestablish().channel_id()) > 0;
        },
        std::chrono::seconds(20));
    if (!env) {
      *why = "no Reestablish from the victim";
      return false;
    }
    pending.erase(env->reestablish().channel_id());
    if (!FollowPlan(*channels_.at(env->reestablish().channel_id()), env->reestablish(), why)) {
      return false;
    }
  }
  return true;
}

bool Adversary::FollowPlan(AttackerChannel& ch, const v1::Reestablish& theirs, std::string* why) {
  auto plan = ch.mirror.OnPeerReestablish(theirs, theirs.received_tip_count());
  if (!plan.ok()) {
    *why = std::string("victim's reestablish: ") + plan.error().ToString();
    return false;
  }
  if (plan->send_ack) {
    if (auto ack = ch.mirror.MakeAck(key_, crypto::SystemRng())) {
      v1::Envelope env;
      *env.mutable_ack() = *ack;
      peer_->SendEnvelope(env);
    }
  }
  for (const v1::TipUpdate& u : plan->resend) {
    v1::Envelope env;
    *env.mutable_tip_update() = u;
    peer_->SendEnvelope(env);
  }
  return true;
}

bool Adversary::PayHonestly(const std::string& id, uint64_t amount, const std::string& message,
                            std::string* why) {
  AttackerChannel& ch = *channels_.at(id);
  channel::TipDraft d;
  d.amount = amount;
  d.message = message;
  d.created_at_ms = NowMs();
  auto q = ch.mirror.QueueTip(d);
  if (!q.ok()) {
    *why = q.error().ToString();
    return false;
  }
  auto out = ch.mirror.TakeNextUpdate(key_, crypto::SystemRng());
  if (!out) {
    *why = "window full";
    return false;
  }
  if (!SendUpdate(out->update)) {
    *why = "send failed";
    return false;
  }
  last_update_[id] = out->update;
  const uint64_t nonce = out->nonce();
  auto env = peer_->Await(
      [&](const v1::Envelope& e) {
        return (e.has_ack() && e.ack().channel_id() == id && e.ack().nonce() >= nonce) ||
               (e.has_update_rejected() && e.update_rejected().channel_id() == id);
      },
      std::chrono::seconds(20));
  if (!env) {
    *why = "no ack for nonce " + std::to_string(nonce);
    return false;
  }
  if (env->has_update_rejected()) {
    *why = Describe(*env);
    return false;
  }
  auto acked = ch.mirror.OnAck(env->ack());
  if (!acked.ok()) {
    *why = acked.error().ToString();
    return false;
  }
  return true;
}

v1::Tip Adversary::NextTip(const std::string& id, uint64_t amount, const std::string& message,
                           uint64_t offset) {
  v1::Tip t;
  t.set_index(channels_.at(id)->mirror.Snapshot().sent_tip_count + 1 + offset);
  t.set_amount(amount);
  t.set_message(message);
  t.set_created_at_ms(NowMs());
  return t;
}

v1::TipUpdate Adversary::ForgeUpdate(const std::string& id, std::vector<v1::Tip> tips,
                                     const std::function<void(v1::BalanceProof*)>& mutate,
                                     const crypto::KeyPair* signer) {
  const channel::ChannelSnapshot s = channels_.at(id)->mirror.Snapshot();
  Hash32 root{};
  if (s.sent_tips_root.size() == 32)
    std::copy(s.sent_tips_root.begin(), s.sent_tips_root.end(), root.begin());
  uint64_t transferred = s.sent_transferred;
  v1::TipUpdate u;
  u.set_channel_id(id);
  for (v1::Tip& t : tips) {
    auto h = channel::TipHash(t);
    root = channel::ChainTipsRoot(root, h.ok() ? *h : Hash32{});
    // Wraps on purpose: the overflow attack sends exactly that.
    transferred += t.amount();
    *u.add_tips() = std::move(t);
  }
  v1::BalanceProof& p = *u.mutable_proof();
  p.set_chain_id(chain_id_);
  p.set_channel_id(id);
  p.set_nonce(s.sent_nonce + 1);
  p.set_transferred(transferred);
  p.set_locked(0);
  p.set_locks_root(std::string(32, '\0'));
  p.set_tips_root(Str(root));
  if (mutate) mutate(&p);
  (void)channel::SignBalanceProof(&p, signer ? *signer : key_, crypto::SystemRng());
  return u;
}

bool Adversary::SendUpdate(const v1::TipUpdate& u) {
  v1::Envelope env;
  *env.mutable_tip_update() = u;
  return peer_->SendEnvelope(env);
}

bool Adversary::AwaitRejection(const std::string& code, std::chrono::milliseconds timeout,
                               std::string* got) {
  auto env = peer_->Await(
      [&](const v1::Envelope& e) {
        return (e.has_update_rejected() && e.update_rejected().code() == code) ||
               (e.has_error() && e.error().code() == code) ||
               (e.has_reject_channel() && e.reject_channel().code() == code);
      },
      timeout);
  if (env) {
    *got = Describe(*env);
    return true;
  }
  *got = "nothing matching " + code + "; seen:";
  for (const v1::Envelope& e : peer_->skipped()) *got += " [" + Describe(e) + "]";
  if (peer_->closed()) *got += " (connection closed)";
  return false;
}

std::optional<v1::TipUpdate> Adversary::ReceiveUpdate(const std::string& id,
                                                      std::chrono::milliseconds timeout,
                                                      std::string* why) {
  auto env = peer_->Await(
      [&](const v1::Envelope& e) {
        return e.has_tip_update() && e.tip_update().channel_id() == id;
      },
      timeout);
  if (!env) {
    *why = "no TipUpdate from the victim";
    return std::nullopt;
  }
  AttackerChannel& ch = *channels_.at(id);
  auto v = ch.mirror.CheckUpdate(env->tip_update());
  if (!v.ok()) {
    *why = "victim's update: " + v.error().ToString();
    return std::nullopt;
  }
  if (auto st = ch.mirror.ApplyUpdate(*v); !st.ok()) {
    *why = st.error().ToString();
    return std::nullopt;
  }
  return env->tip_update();
}

std::optional<v1::Ack> Adversary::HonestAck(const std::string& id) {
  return channels_.at(id)->mirror.MakeAck(key_, crypto::SystemRng());
}

}  // namespace tipd::testing
