// Host: the listener, per-connection state machines and persistent-peer
// redialling behind p2p/p2p.h.
//
// Tour: every connection is a Peer owned by Impl::peers_ until its socket is
// closed. Asio handlers hold a shared_ptr<Peer> (so the socket outlives the
// operation) and a weak_ptr<Impl> (so a handler that completes after the Host
// is gone does nothing). A Peer walks
//   kConnecting -> kHandshake -> kAwaitInit -> kActive -> kClosing -> kClosed
// and every failure funnels through Impl::Fail, which logs one line, queues an
// Error where the transport still works, tells the owner and lets the queue
// flush for at most linger_timeout before the socket is closed.
//
// Reads are exact-size async_reads: the act sizes during the handshake, then
// an 18-byte encrypted length header and its announced body. Writes go
// through one queue of already-encrypted frames (handshake acts are queued
// unencrypted), gathered into one async_write at a time. Encryption happens
// when a frame is queued, so the Noise nonce order is the queue order; a frame
// refused by the queue bounds is refused before it is encrypted.

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/asio.hpp>
#include <deque>
#include <map>

#include "crypto/noise.h"
#include "p2p/p2p.h"

namespace tipd::p2p {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const char* DirectionName(Direction d) {
  switch (d) {
    case Direction::kInbound:
      return "inbound";
    case Direction::kOutbound:
      return "outbound";
  }
  return "?";
}

const char* DisconnectCodeName(DisconnectCode c) {
  switch (c) {
    case DisconnectCode::kLocal:
      return "LOCAL";
    case DisconnectCode::kConnectFailed:
      return "CONNECT_FAILED";
    case DisconnectCode::kTimeout:
      return "TIMEOUT";
    case DisconnectCode::kHandshakeFailed:
      return "HANDSHAKE_FAILED";
    case DisconnectCode::kWrongChain:
      return "WRONG_CHAIN";
    case DisconnectCode::kIncompatible:
      return "INCOMPATIBLE";
    case DisconnectCode::kProtocolError:
      return "PROTOCOL_ERROR";
    case DisconnectCode::kRemoteError:
      return "REMOTE_ERROR";
    case DisconnectCode::kPingTimeout:
      return "PING_TIMEOUT";
    case DisconnectCode::kSlowPeer:
      return "SLOW_PEER";
    case DisconnectCode::kRemoteClosed:
      return "REMOTE_CLOSED";
    case DisconnectCode::kIOError:
      return "IO_ERROR";
    case DisconnectCode::kDuplicate:
      return "DUPLICATE";
    case DisconnectCode::kRateLimited:
      return "RATE_LIMITED";
    case DisconnectCode::kShutdown:
      return "SHUTDOWN";
  }
  return "?";
}

std::string DisconnectReason::ToString() const {
  return std::string(DisconnectCodeName(code)) + ": " + message;
}

namespace {

// The named logger "p2p", created on first use if the process did not
// configure one: a clone of the default logger, so it writes wherever the
// process's logging was pointed (a daemon's log file), with its format.
std::shared_ptr<spdlog::logger> P2pLogger() {
  if (auto l = spdlog::get("p2p")) return l;
  try {
    auto logger = spdlog::default_logger()->clone("p2p");
    spdlog::register_logger(logger);
    return logger;
  } catch (const spdlog::spdlog_ex&) {
    // Another thread registered it between get() and create.
    return spdlog::get("p2p");
  }
}

// Gathered into one async_write at most.
constexpr size_t kMaxFramesPerWrite = 64;
constexpr size_t kMaxBytesPerWrite = 256 * 1024;

// Bytes on the wire for a message of `len` plaintext bytes.
constexpr size_t FrameSize(size_t len) {
  return crypto::kNoiseLengthHeaderSize + len + crypto::kAeadTagSize;
}

const char* MessageName(v1::Envelope::MsgCase c) {
  if (c == v1::Envelope::MSG_NOT_SET) return "unset";
  const auto* field = v1::Envelope::descriptor()->FindFieldByNumber(static_cast<int>(c));
  return field ? field->name().c_str() : "unknown";
}

// The remote IP address without the port, IPv4-mapped IPv6 unmapped, as the
// key of the per-address inbound limit.
std::string AddressKey(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  }
  return a.to_string();
}

// The serialized size of the Envelope holding Pong{nonce, `padding` bytes}.
size_t PongSize(uint64_t nonce, uint32_t padding) {
  v1::Envelope env;
  env.mutable_pong()->set_nonce(nonce);
  env.mutable_pong()->mutable_padding()->resize(padding);
  return env.ByteSizeLong();
}

bool IsEof(const boost::system::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

}  // namespace

struct Peer {
  enum class State { kConnecting, kHandshake, kAwaitInit, kActive, kClosing, kClosed };

  explicit Peer(asio::io_context& io) : socket(io), deadline(io), keepalive(io) {}

  PeerId id = 0;
  Direction direction = Direction::kInbound;
  std::string address;
  std::string ip;  // inbound: AddressKey of the remote end (per-address limit)
  State state = State::kConnecting;
  tcp::socket socket;
  asio::steady_timer deadline;  // handshake deadline, then linger deadline
  asio::steady_timer keepalive;

  // Outbound: the key we dial. Inbound: learnt in act 3.
  std::optional<crypto::PublicKey> node_id;
  // Set when this attempt was started for a persistent peer.
  std::optional<crypto::PublicKey> persistent_key;
  std::optional<crypto::NoiseHandshake> handshake;
  std::optional<crypto::NoiseTransport> transport;
  v1::Init remote_init;
  bool announced = false;  // on_connected fired

  Bytes read_buf;

  std::deque<Bytes> send_queue;
  size_t queued_bytes = 0;
  size_t in_flight = 0;  // frames from the front of send_queue being written
  bool want_writable = false;

  SteadyClock::time_point last_rx;
  SteadyClock::time_point next_ping_at;
  std::optional<uint64_t> ping_nonce;
  SteadyClock::time_point ping_sent_at;

  // Pong budget (token bucket in bytes), see HostOptions::pong_budget_*.
  double pong_tokens = 0;
  SteadyClock::time_point pong_refilled_at;

  PeerStats stats;

  bool open() const { return state != State::kClosing && state != State::kClosed; }
  bool handshaking() const { return state == State::kConnecting || state == State::kHandshake; }

  // "peer#3 02ab12cd34ef5678@127.0.0.1:4242 (inbound)" for log lines.
  std::string Label() const {
    std::string node = node_id ? node_id->Hex().substr(0, 16) : std::string("?");
    return "peer#" + std::to_string(id) + " " + node + "@" + address + " (" +
           DirectionName(direction) + ")";
  }
};

struct PersistentPeer {
  explicit PersistentPeer(asio::io_context& io) : timer(io) {}
  std::string host;
  uint16_t port = 0;
  crypto::PublicKey key;
  milliseconds backoff{0};
  std::optional<PeerId> attempt;  // the dial in progress
  bool redial_scheduled = false;
  asio::steady_timer timer;
};

class Host::Impl : public std::enable_shared_from_this<Host::Impl> {
 public:
  Impl(asio::io_context& io, const crypto::KeyPair& identity, crypto::RandomSource& rng,
       HostOptions options, Callbacks callbacks)
      : io_(io),
        identity_(identity),
        rng_(rng),
        opts_(std::move(options)),
        cb_(std::move(callbacks)),
        log_(P2pLogger()) {
    assert(!opts_.chain_id.empty());
    opts_.max_message_size = std::min(opts_.max_message_size, crypto::kNoiseMaxMessageSize);
    opts_.ping_pong_bytes = std::min(opts_.ping_pong_bytes, kMaxPongBytes);
    // A peer pinging like we do (one Ping per ping_interval, each asking for
    // ping_pong_bytes) must never run out: at least twice that rate and four
    // such Pongs of burst.
    const double own_pong = double(opts_.ping_pong_bytes) + kPongOverheadBytes;
    const double interval_s = std::max<double>(double(opts_.ping_interval.count()), 1.0) / 1000.0;
    pong_rate_ = std::max(double(opts_.pong_budget_bytes_per_second), 2 * own_pong / interval_s);
    pong_burst_ = std::max(double(opts_.pong_budget_burst_bytes), 4 * own_pong);
  }

  void SetCallbacks(Callbacks cb) { cb_ = std::move(cb); }
  const crypto::PublicKey& node_id() const { return identity_.public_key(); }

  Result<uint16_t> Listen(const std::string& host, uint16_t port);
  Result<PeerId> Connect(const std::string& host, uint16_t port, const crypto::PublicKey& remote,
                         const ConnectOptions& options,
                         std::optional<crypto::PublicKey> persistent_key);
  Status Disconnect(PeerId id, const std::string& reason);
  Status Send(PeerId id, const v1::Envelope& msg);
  Status AddPersistentPeer(const std::string& host, uint16_t port, const crypto::PublicKey& remote);
  Status RemovePersistentPeer(const crypto::PublicKey& remote);
  std::optional<PeerId> FindPeer(const crypto::PublicKey& node) const;
  std::optional<PeerInfo> GetPeer(PeerId id) const;
  std::vector<PeerInfo> Peers() const;
  std::optional<PeerStats> Stats(PeerId id) const;
  void Shutdown();
  // Closes everything without callbacks; the Impl is inert afterwards.
  void Destroy();

 private:
  using PeerPtr = std::shared_ptr<Peer>;
  using Step = void (Impl::*)(const PeerPtr&);

  PeerPtr NewPeer(Direction direction, std::string address, milliseconds timeout);
  void StartAccept(const std::shared_ptr<tcp::acceptor>& acceptor);
  void OnAccept(const std::shared_ptr<tcp::acceptor>& acceptor, tcp::socket socket);

  // Handshake steps.
  void OnConnected(const PeerPtr& p);
  void OnAct1(const PeerPtr& p);
  void OnAct2(const PeerPtr& p);
  void OnAct3(const PeerPtr& p);
  void OnHandshakeDone(const PeerPtr& p);
  // Frame loop.
  void ReadHeader(const PeerPtr& p);
  void OnHeader(const PeerPtr& p);
  void OnBody(const PeerPtr& p);
  void HandleEnvelope(const PeerPtr& p, const v1::Envelope& env);
  void HandleInit(const PeerPtr& p, const v1::Init& init);
  void Activate(const PeerPtr& p);
  // Keepalive.
  void ArmKeepalive(const PeerPtr& p);
  void OnKeepalive(const PeerPtr& p);

  // Reads exactly n bytes into p->read_buf, then calls `next`.
  void ReadExact(const PeerPtr& p, size_t n, Step next);
  void OnReadError(const PeerPtr& p, const boost::system::error_code& ec);

  // Queue bounds check for a message of `len` plaintext bytes.
  bool QueueHasRoom(const Peer& p, size_t len) const;
  // Serializes, encrypts and queues; the caller checked size and room.
  void QueueEnvelope(const PeerPtr& p, const v1::Envelope& env);
  void QueueRaw(const PeerPtr& p, Bytes bytes);
  void StartWrite(const PeerPtr& p);
  void OnWrite(const PeerPtr& p, const boost::system::error_code& ec, size_t n);

  // Ends the connection: logs, sends Error{error_code, reason} when
  // `error_code` is non-null and the transport can still send, reports to
  // the owner, schedules the persistent redial, flushes then closes.
  void Fail(const PeerPtr& p, DisconnectReason reason, const char* error_code = nullptr);
  void CloseSocket(const PeerPtr& p);

  void OnSessionEnded(const Peer& p);
  void ScheduleRedial(PersistentPeer& pp);
  void Dial(PersistentPeer& pp);
  PeerInfo InfoOf(const Peer& p) const;
  // The peer if it is known and open.
  PeerPtr Find(PeerId id) const;

  asio::io_context& io_;
  crypto::KeyPair identity_;
  crypto::RandomSource& rng_;
  HostOptions opts_;
  double pong_rate_ = 0;   // effective Pong budget, bytes per second
  double pong_burst_ = 0;  // effective Pong budget, bytes
  Callbacks cb_;
  std::shared_ptr<spdlog::logger> log_;

  PeerId next_id_ = 1;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors_;
  std::map<PeerId, PeerPtr> peers_;              // every peer whose socket is open
  std::map<crypto::PublicKey, PeerId> by_node_;  // kActive peers only
  std::map<crypto::PublicKey, std::unique_ptr<PersistentPeer>> persistent_;
  bool destroyed_ = false;
};

// ---- Listening and dialling ----

Result<uint16_t> Host::Impl::Listen(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("listen: bad address '" + host + "': " + ec.message());
  tcp::endpoint ep(addr, port);
  auto acceptor = std::make_shared<tcp::acceptor>(io_);
  std::string where = host + ":" + std::to_string(port);
  if (acceptor->open(ep.protocol(), ec)) {
    return Status::IOError("listen " + where + ": open: " + ec.message());
  }
  if (acceptor->set_option(asio::socket_base::reuse_address(true), ec)) {
    return Status::IOError("listen " + where + ": SO_REUSEADDR: " + ec.message());
  }
  if (acceptor->bind(ep, ec)) return Status::IOError("listen " + where + ": bind: " + ec.message());
  if (acceptor->listen(asio::socket_base::max_listen_connections, ec)) {
    return Status::IOError("listen " + where + ": listen: " + ec.message());
  }
  uint16_t bound = acceptor->local_endpoint(ec).port();
  if (ec) return Status::IOError("listen " + where + ": local_endpoint: " + ec.message());
  acceptors_.push_back(acceptor);
  log_->info("listening on {}:{} as {}", host, bound, node_id().Hex());
  StartAccept(acceptor);
  return bound;
}

void Host::Impl::StartAccept(const std::shared_ptr<tcp::acceptor>& acceptor) {
  std::weak_ptr<Impl> weak = weak_from_this();
  acceptor->async_accept([weak, acceptor](const boost::system::error_code& ec, tcp::socket socket) {
    auto self = weak.lock();
    if (!self || self->destroyed_ || !acceptor->is_open()) return;
    if (ec) {
      // Transient accept errors (EMFILE, ECONNABORTED) must not stop the
      // listener; the next accept is started regardless.
      self->log_->warn("accept failed: {}", ec.message());
    } else {
      self->OnAccept(acceptor, std::move(socket));
    }
    self->StartAccept(acceptor);
  });
}

void Host::Impl::OnAccept(const std::shared_ptr<tcp::acceptor>&, tcp::socket socket) {
  boost::system::error_code ec;
  auto remote = socket.remote_endpoint(ec);
  std::string address =
      ec ? std::string("?") : remote.address().to_string() + ":" + std::to_string(remote.port());
  std::string ip = ec ? std::string("?") : AddressKey(remote.address());
  size_t inbound = 0, from_ip = 0;
  for (const auto& [id, p] : peers_) {
    if (p->direction == Direction::kInbound && p->open()) {
      ++inbound;
      if (p->ip == ip) ++from_ip;
    }
  }
  if (inbound >= opts_.max_inbound_peers) {
    log_->warn("refusing inbound connection from {}: {} inbound peers (limit)", address, inbound);
    socket.close(ec);
    return;
  }
  if (opts_.max_inbound_per_address > 0 && from_ip >= opts_.max_inbound_per_address) {
    log_->warn("refusing inbound connection from {}: {} connections from {} already (limit {})",
               address, from_ip, ip, opts_.max_inbound_per_address);
    socket.close(ec);
    return;
  }
  auto p = NewPeer(Direction::kInbound, address, opts_.handshake_timeout);
  p->ip = std::move(ip);
  p->socket = std::move(socket);
  p->socket.set_option(tcp::no_delay(true), ec);
  p->state = Peer::State::kHandshake;
  p->handshake.emplace(
      crypto::NoiseHandshake::Responder(identity_, crypto::KeyPair::Generate(rng_)));
  log_->debug("{} accepted", p->Label());
  ReadExact(p, crypto::kAct1Size, &Impl::OnAct1);
}

Host::Impl::PeerPtr Host::Impl::NewPeer(Direction direction, std::string address,
                                        milliseconds timeout) {
  auto p = std::make_shared<Peer>(io_);
  p->id = next_id_++;
  p->direction = direction;
  p->address = std::move(address);
  p->last_rx = SteadyClock::now();
  peers_[p->id] = p;
  std::weak_ptr<Impl> weak = weak_from_this();
  p->deadline.expires_after(timeout);
  p->deadline.async_wait([weak, p, timeout](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self || ec == asio::error::operation_aborted) return;
    if (p->state == Peer::State::kClosing) {
      self->CloseSocket(p);  // linger deadline (re-armed by Fail)
    } else if (p->open() && p->state != Peer::State::kActive) {
      self->Fail(p, {DisconnectCode::kTimeout, "connect, handshake and Init not done within " +
                                                   std::to_string(timeout.count()) + " ms"});
    }
  });
  return p;
}

Result<PeerId> Host::Impl::Connect(const std::string& host, uint16_t port,
                                   const crypto::PublicKey& remote, const ConnectOptions& options,
                                   std::optional<crypto::PublicKey> persistent_key) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("connect: bad address '" + host + "': " + ec.message());
  if (remote == identity_.public_key()) {
    return Status::InvalidArgument("connect: refusing to connect to our own node id");
  }
  tcp::endpoint ep(addr, port);
  auto p = NewPeer(Direction::kOutbound, addr.to_string() + ":" + std::to_string(port),
                   options.timeout.value_or(opts_.handshake_timeout));
  p->node_id = remote;
  p->persistent_key = std::move(persistent_key);
  log_->debug("{} dialling", p->Label());
  std::weak_ptr<Impl> weak = weak_from_this();
  p->socket.async_connect(ep, [weak, p](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self || !p->open()) return;
    if (ec) {
      self->Fail(
          p, {DisconnectCode::kConnectFailed, "connect to " + p->address + ": " + ec.message()});
      return;
    }
    self->OnConnected(p);
  });
  return p->id;
}

// ---- Handshake ----

void Host::Impl::OnConnected(const PeerPtr& p) {
  boost::system::error_code ec;
  p->socket.set_option(tcp::no_delay(true), ec);
  p->state = Peer::State::kHandshake;
  p->handshake.emplace(
      crypto::NoiseHandshake::Initiator(identity_, *p->node_id, crypto::KeyPair::Generate(rng_)));
  auto act1 = p->handshake->WriteAct1();
  if (!act1.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "act 1: " + act1.status().ToString()});
    return;
  }
  QueueRaw(p, std::move(act1).value());
  ReadExact(p, crypto::kAct2Size, &Impl::OnAct2);
}

void Host::Impl::OnAct1(const PeerPtr& p) {
  if (auto s = p->handshake->ReadAct1(p->read_buf); !s.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "bad act 1: " + s.ToString()});
    return;
  }
  auto act2 = p->handshake->WriteAct2();
  if (!act2.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "act 2: " + act2.status().ToString()});
    return;
  }
  QueueRaw(p, std::move(act2).value());
  ReadExact(p, crypto::kAct3Size, &Impl::OnAct3);
}

void Host::Impl::OnAct2(const PeerPtr& p) {
  if (auto s = p->handshake->ReadAct2(p->read_buf); !s.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "bad act 2: " + s.ToString()});
    return;
  }
  auto act3 = p->handshake->WriteAct3();
  if (!act3.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "act 3: " + act3.status().ToString()});
    return;
  }
  QueueRaw(p, std::move(act3).value());
  OnHandshakeDone(p);
}

void Host::Impl::OnAct3(const PeerPtr& p) {
  if (auto s = p->handshake->ReadAct3(p->read_buf); !s.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "bad act 3: " + s.ToString()});
    return;
  }
  OnHandshakeDone(p);
}

void Host::Impl::OnHandshakeDone(const PeerPtr& p) {
  auto t = p->handshake->Finish();
  p->handshake.reset();
  if (!t.ok()) {
    Fail(p, {DisconnectCode::kHandshakeFailed, "finish: " + t.status().ToString()});
    return;
  }
  p->transport.emplace(std::move(t).value());
  p->node_id = p->transport->remote_static();
  p->state = Peer::State::kAwaitInit;
  log_->debug("{} handshake done", p->Label());

  v1::Envelope env;
  v1::Init* init = env.mutable_init();
  init->set_chain_id(opts_.chain_id);
  init->set_software_version(opts_.software_version);
  for (const auto& f : opts_.features) init->add_features(f);
  init->set_protocol_version(kProtocolVersion);
  QueueEnvelope(p, env);
  ReadHeader(p);
}

// ---- Frames and messages ----

void Host::Impl::ReadExact(const PeerPtr& p, size_t n, Step next) {
  p->read_buf.resize(n);
  std::weak_ptr<Impl> weak = weak_from_this();
  asio::async_read(p->socket, asio::buffer(p->read_buf),
                   [weak, p, next](const boost::system::error_code& ec, size_t got) {
                     auto self = weak.lock();
                     if (!self || !p->open()) return;
                     if (ec) {
                       self->OnReadError(p, ec);
                       return;
                     }
                     p->stats.bytes_in += got;
                     p->last_rx = SteadyClock::now();
                     ((*self).*next)(p);
                   });
}

void Host::Impl::OnReadError(const PeerPtr& p, const boost::system::error_code& ec) {
  if (p->state == Peer::State::kHandshake) {
    // BOLT 8: a responder that cannot decrypt act 1 (e.g. we dialled the
    // wrong key) hangs up without a word, so a hang-up here is reported as a
    // handshake failure.
    std::string act = p->direction == Direction::kOutbound ? "act 2" : "act 1 or 3";
    std::string hint = p->direction == Direction::kOutbound && IsEof(ec)
                           ? " (peer hung up: wrong remote static key, or not a tipd node?)"
                           : "";
    Fail(p, {DisconnectCode::kHandshakeFailed,
             "connection lost while reading " + act + ": " + ec.message() + hint});
  } else if (IsEof(ec)) {
    Fail(p, {DisconnectCode::kRemoteClosed, "peer closed the connection: " + ec.message()});
  } else {
    Fail(p, {DisconnectCode::kIOError, "read: " + ec.message()});
  }
}

void Host::Impl::ReadHeader(const PeerPtr& p) {
  ReadExact(p, crypto::kNoiseLengthHeaderSize, &Impl::OnHeader);
}

void Host::Impl::OnHeader(const PeerPtr& p) {
  auto len = p->transport->DecryptLength(p->read_buf);
  if (!len.ok()) {
    Fail(p, {DisconnectCode::kProtocolError, "frame length: " + len.status().ToString()},
         error_code::kDecryptFailed);
    return;
  }
  if (*len > opts_.max_message_size) {
    Fail(p,
         {DisconnectCode::kProtocolError, "frame of " + std::to_string(*len) +
                                              " bytes exceeds the limit of " +
                                              std::to_string(opts_.max_message_size)},
         error_code::kFrameTooLarge);
    return;
  }
  ReadExact(p, crypto::NoiseTransport::BodySize(*len), &Impl::OnBody);
}

void Host::Impl::OnBody(const PeerPtr& p) {
  auto body = p->transport->DecryptBody(p->read_buf);
  if (!body.ok()) {
    Fail(p, {DisconnectCode::kProtocolError, "frame body: " + body.status().ToString()},
         error_code::kDecryptFailed);
    return;
  }
  v1::Envelope env;
  if (!env.ParseFromArray(body->data(), static_cast<int>(body->size()))) {
    Fail(p,
         {DisconnectCode::kProtocolError,
          "frame of " + std::to_string(body->size()) + " bytes is not a valid Envelope"},
         error_code::kBadEnvelope);
    return;
  }
  ++p->stats.messages_in;
  HandleEnvelope(p, env);
  if (p->open()) ReadHeader(p);
}

void Host::Impl::HandleEnvelope(const PeerPtr& p, const v1::Envelope& env) {
  const auto kind = env.msg_case();
  if (kind == v1::Envelope::MSG_NOT_SET) {
    // An unknown field number parses as an unknown field, leaving the oneof
    // unset: both are "a message we do not understand".
    Fail(p, {DisconnectCode::kProtocolError, "unset or unknown Envelope message"},
         error_code::kUnknownMessage);
    return;
  }
  if (kind == v1::Envelope::kError) {
    const v1::Error& err = env.error();
    std::string text = err.code() + ": " + err.message();
    if (p->announced && cb_.on_error) cb_.on_error(p->id, err);
    if (!p->open()) return;
    if (err.channel_id().empty() || !p->announced) {
      Fail(p, {DisconnectCode::kRemoteError, "peer sent Error " + text});
    } else {
      log_->info("{} sent Error for channel {}: {}", p->Label(),
                 HexEncode(AsSpan(err.channel_id())), text);
    }
    return;
  }
  if (p->state == Peer::State::kAwaitInit) {
    if (kind == v1::Envelope::kInit) {
      HandleInit(p, env.init());
    } else {
      Fail(p,
           {DisconnectCode::kProtocolError,
            std::string("received ") + MessageName(kind) + " before Init"},
           error_code::kInitRequired);
    }
    return;
  }
  switch (kind) {
    case v1::Envelope::kInit:
      Fail(p, {DisconnectCode::kProtocolError, "second Init"}, error_code::kUnexpectedInit);
      return;
    case v1::Envelope::kPing: {
      const v1::Ping& ping = env.ping();
      // A Pong we may not send (over kMaxPongBytes, or over our own
      // max_message_size, which bounds what we send too) is not answered.
      if (ping.pong_bytes() > kMaxPongBytes ||
          PongSize(ping.nonce(), ping.pong_bytes()) > opts_.max_message_size) {
        log_->debug("{} ping asks for {} pong bytes; not answered", p->Label(), ping.pong_bytes());
        return;
      }
      // Pong budget: refill for the time since the last Ping, then charge.
      const auto now = SteadyClock::now();
      const double elapsed_s = std::chrono::duration<double>(now - p->pong_refilled_at).count();
      p->pong_tokens = std::min(pong_burst_, p->pong_tokens + elapsed_s * pong_rate_);
      p->pong_refilled_at = now;
      const double cost = double(ping.pong_bytes()) + kPongOverheadBytes;
      if (p->pong_tokens < cost) {
        Fail(p,
             {DisconnectCode::kRateLimited,
              "Pings too frequent: a Pong of " + std::to_string(ping.pong_bytes()) +
                  " padding bytes exceeds the budget of " +
                  std::to_string(static_cast<uint64_t>(pong_rate_)) + " bytes/s (burst " +
                  std::to_string(static_cast<uint64_t>(pong_burst_)) + ")"},
             error_code::kPingRateExceeded);
        return;
      }
      p->pong_tokens -= cost;
      if (!QueueHasRoom(*p, FrameSize(ping.pong_bytes() + 16))) {
        Fail(p, {DisconnectCode::kSlowPeer, "send queue full while a Pong is owed"});
        return;
      }
      v1::Envelope reply;
      reply.mutable_pong()->set_nonce(ping.nonce());
      reply.mutable_pong()->set_padding(std::string(ping.pong_bytes(), '\0'));
      QueueEnvelope(p, reply);
      return;
    }
    case v1::Envelope::kPong: {
      const v1::Pong& pong = env.pong();
      if (!p->ping_nonce) return;  // late or unsolicited: harmless
      if (pong.nonce() != *p->ping_nonce || pong.padding().size() != opts_.ping_pong_bytes) {
        Fail(p,
             {DisconnectCode::kProtocolError,
              "Pong with nonce " + std::to_string(pong.nonce()) + " and " +
                  std::to_string(pong.padding().size()) + " padding bytes; expected nonce " +
                  std::to_string(*p->ping_nonce) + " and " + std::to_string(opts_.ping_pong_bytes) +
                  " padding bytes"},
             error_code::kBadPong);
        return;
      }
      p->ping_nonce.reset();
      p->next_ping_at = SteadyClock::now() + opts_.ping_interval;
      return;
    }
    default:
      if (cb_.on_message) cb_.on_message(p->id, env);
      return;
  }
}

void Host::Impl::HandleInit(const PeerPtr& p, const v1::Init& init) {
  if (init.chain_id() != opts_.chain_id) {
    Fail(p,
         {DisconnectCode::kWrongChain,
          "peer is on chain '" + init.chain_id() + "', we are on '" + opts_.chain_id + "'"},
         error_code::kWrongChain);
    return;
  }
  if (init.protocol_version() < kMinProtocolVersion) {
    Fail(p,
         {DisconnectCode::kIncompatible,
          "peer speaks protocol_version " + std::to_string(init.protocol_version()) +
              ", we need at least " + std::to_string(kMinProtocolVersion)},
         error_code::kIncompatibleVersion);
    return;
  }
  p->remote_init = init;
  Activate(p);
}

void Host::Impl::Activate(const PeerPtr& p) {
  p->state = Peer::State::kActive;
  p->deadline.cancel();
  auto now = SteadyClock::now();
  p->stats.connected_since = now;
  p->next_ping_at = now + opts_.ping_interval;
  p->pong_tokens = pong_burst_;
  p->pong_refilled_at = now;
  p->announced = true;

  // Duplicate rule: the newest session wins. The owner hears the older one's
  // on_disconnected (kDuplicate) before the newer one's on_connected.
  std::optional<PeerId> older;
  if (auto it = by_node_.find(*p->node_id); it != by_node_.end()) older = it->second;
  by_node_[*p->node_id] = p->id;
  if (auto it = persistent_.find(*p->node_id); it != persistent_.end()) {
    it->second->backoff = opts_.reconnect_initial;
    it->second->redial_scheduled = false;
    it->second->timer.cancel();
  }
  log_->info("{} connected ({}, protocol {})", p->Label(), p->remote_init.software_version(),
             p->remote_init.protocol_version());
  if (older) {
    if (auto old = Find(*older)) {
      Fail(old, {DisconnectCode::kDuplicate,
                 "replaced by a newer connection peer#" + std::to_string(p->id)});
    }
  }
  if (!p->open()) return;
  ArmKeepalive(p);
  if (cb_.on_connected) cb_.on_connected(InfoOf(*p));
}

// ---- Keepalive ----

void Host::Impl::ArmKeepalive(const PeerPtr& p) {
  auto wake = p->last_rx + opts_.idle_timeout;
  if (p->ping_nonce) {
    wake = std::min(wake, p->ping_sent_at + opts_.ping_timeout);
  } else {
    wake = std::min(wake, p->next_ping_at);
  }
  p->keepalive.expires_at(wake);
  std::weak_ptr<Impl> weak = weak_from_this();
  p->keepalive.async_wait([weak, p](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self || ec == asio::error::operation_aborted) return;
    self->OnKeepalive(p);
  });
}

void Host::Impl::OnKeepalive(const PeerPtr& p) {
  if (p->state != Peer::State::kActive) return;
  auto now = SteadyClock::now();
  if (now - p->last_rx >= opts_.idle_timeout) {
    Fail(p, {DisconnectCode::kPingTimeout, "ping timeout"});
    return;
  }
  if (p->ping_nonce && now - p->ping_sent_at >= opts_.ping_timeout) {
    Fail(p, {DisconnectCode::kPingTimeout, "ping timeout"});
    return;
  }
  if (!p->ping_nonce && now >= p->next_ping_at) {
    if (QueueHasRoom(*p, FrameSize(16))) {
      uint64_t nonce = 0;
      rng_.Fill({reinterpret_cast<uint8_t*>(&nonce), sizeof(nonce)});
      v1::Envelope env;
      env.mutable_ping()->set_nonce(nonce);
      env.mutable_ping()->set_pong_bytes(opts_.ping_pong_bytes);
      QueueEnvelope(p, env);
      p->ping_nonce = nonce;
      p->ping_sent_at = now;
    } else {
      // Our queue is full: the peer is not reading. Skip this ping; the idle
      // and send-queue bounds still apply.
      p->next_ping_at = now + opts_.ping_interval;
    }
  }
  ArmKeepalive(p);
}

// ---- Sending ----

bool Host::Impl::QueueHasRoom(const Peer& p, size_t frame_bytes) const {
  return p.send_queue.size() + 1 <= opts_.max_send_queue_messages &&
         p.queued_bytes + frame_bytes <= opts_.max_send_queue_bytes;
}

void Host::Impl::QueueEnvelope(const PeerPtr& p, const v1::Envelope& env) {
  std::string plain;
  env.SerializeToString(&plain);
  auto frame = p->transport->Encrypt(AsSpan(plain));
  // Callers checked the size against max_message_size (<= the Noise limit).
  assert(frame.ok());
  if (!frame.ok()) return;
  ++p->stats.messages_out;
  QueueRaw(p, std::move(frame).value());
}

void Host::Impl::QueueRaw(const PeerPtr& p, Bytes bytes) {
  p->queued_bytes += bytes.size();
  p->send_queue.push_back(std::move(bytes));
  StartWrite(p);
}

void Host::Impl::StartWrite(const PeerPtr& p) {
  if (p->in_flight > 0 || p->send_queue.empty() || p->state == Peer::State::kClosed) return;
  std::vector<asio::const_buffer> buffers;
  size_t bytes = 0;
  for (const Bytes& frame : p->send_queue) {
    if (buffers.size() == kMaxFramesPerWrite ||
        (bytes > 0 && bytes + frame.size() > kMaxBytesPerWrite)) {
      break;
    }
    buffers.push_back(asio::buffer(frame));
    bytes += frame.size();
  }
  p->in_flight = buffers.size();
  std::weak_ptr<Impl> weak = weak_from_this();
  asio::async_write(p->socket, buffers, [weak, p](const boost::system::error_code& ec, size_t n) {
    auto self = weak.lock();
    if (!self) return;
    self->OnWrite(p, ec, n);
  });
}

void Host::Impl::OnWrite(const PeerPtr& p, const boost::system::error_code& ec, size_t n) {
  p->stats.bytes_out += n;
  for (size_t i = 0; i < p->in_flight && !p->send_queue.empty(); ++i) {
    p->queued_bytes -= p->send_queue.front().size();
    p->send_queue.pop_front();
  }
  p->in_flight = 0;
  if (p->state == Peer::State::kClosed) return;
  if (ec) {
    if (p->state == Peer::State::kClosing) {
      CloseSocket(p);
    } else if (IsEof(ec)) {
      Fail(p, {DisconnectCode::kRemoteClosed, "write: " + ec.message()});
    } else {
      Fail(p, {DisconnectCode::kIOError, "write: " + ec.message()});
    }
    return;
  }
  if (p->state == Peer::State::kClosing && p->send_queue.empty()) {
    CloseSocket(p);
    return;
  }
  StartWrite(p);
  if (p->want_writable && p->state == Peer::State::kActive &&
      p->queued_bytes <= opts_.max_send_queue_bytes / 2 &&
      p->send_queue.size() <= opts_.max_send_queue_messages / 2) {
    p->want_writable = false;
    if (cb_.on_writable) cb_.on_writable(p->id);
  }
}

Status Host::Impl::Send(PeerId id, const v1::Envelope& msg) {
  PeerPtr p = Find(id);
  if (!p) return Status::NotFound("send: no open peer#" + std::to_string(id));
  if (p->state != Peer::State::kActive) {
    return Status::FailedPrecondition("send: peer#" + std::to_string(id) +
                                      " has not finished the Init exchange");
  }
  switch (msg.msg_case()) {
    case v1::Envelope::MSG_NOT_SET:
      return Status::InvalidArgument("send: Envelope has no message set");
    case v1::Envelope::kInit:
    case v1::Envelope::kPing:
    case v1::Envelope::kPong:
      return Status::InvalidArgument(std::string("send: ") + MessageName(msg.msg_case()) +
                                     " is sent by p2p itself");
    default:
      break;
  }
  size_t size = msg.ByteSizeLong();
  if (size > opts_.max_message_size) {
    return Status::InvalidArgument("send: " + std::string(MessageName(msg.msg_case())) + " of " +
                                   std::to_string(size) + " bytes exceeds the limit of " +
                                   std::to_string(opts_.max_message_size));
  }
  if (!QueueHasRoom(*p, FrameSize(size))) {
    p->want_writable = true;
    return Status::ResourceExhausted("send: queue to peer#" + std::to_string(id) + " is full (" +
                                     std::to_string(p->send_queue.size()) + " frames, " +
                                     std::to_string(p->queued_bytes) + " bytes)");
  }
  QueueEnvelope(p, msg);
  return Status::Ok();
}

// ---- Ending connections ----

void Host::Impl::Fail(const PeerPtr& p, DisconnectReason reason, const char* error_code) {
  if (!p->open()) return;
  const bool can_send = p->transport.has_value() &&
                        (p->state == Peer::State::kAwaitInit || p->state == Peer::State::kActive);
  if (error_code != nullptr && can_send) {
    v1::Envelope env;
    env.mutable_error()->set_code(error_code);
    std::string text = reason.message;
    if (text.size() > 1000) text.resize(1000);
    env.mutable_error()->set_message(text);
    QueueEnvelope(p, env);
  }
  p->state = Peer::State::kClosing;
  p->keepalive.cancel();
  if (auto it = p->node_id ? by_node_.find(*p->node_id) : by_node_.end();
      it != by_node_.end() && it->second == p->id) {
    by_node_.erase(it);
  }

  switch (reason.code) {
    case DisconnectCode::kLocal:
    case DisconnectCode::kRemoteClosed:
    case DisconnectCode::kDuplicate:
    case DisconnectCode::kShutdown:
      log_->info("{} disconnected: {}", p->Label(), reason.ToString());
      break;
    case DisconnectCode::kConnectFailed:
    case DisconnectCode::kTimeout:
    case DisconnectCode::kHandshakeFailed:
    case DisconnectCode::kWrongChain:
    case DisconnectCode::kIncompatible:
    case DisconnectCode::kProtocolError:
    case DisconnectCode::kRemoteError:
    case DisconnectCode::kPingTimeout:
    case DisconnectCode::kSlowPeer:
    case DisconnectCode::kRateLimited:
    case DisconnectCode::kIOError:
      log_->warn("{} disconnected: {}", p->Label(), reason.ToString());
      break;
  }

  if (p->send_queue.empty() || reason.code == DisconnectCode::kIOError) {
    CloseSocket(p);
  } else {
    // Give queued frames (an Error, the owner's last messages) a bounded
    // chance to leave; the deadline handler closes the socket.
    p->deadline.expires_after(opts_.linger_timeout);
    std::weak_ptr<Impl> weak = weak_from_this();
    p->deadline.async_wait([weak, p](const boost::system::error_code& ec) {
      auto self = weak.lock();
      if (!self || ec == asio::error::operation_aborted) return;
      self->CloseSocket(p);
    });
  }

  // Outbound attempts are always reported (the owner holds their PeerId);
  // inbound ones once the handshake told us who they are.
  const bool report = p->direction == Direction::kOutbound || p->transport.has_value();
  if (report && cb_.on_disconnected) {
    DisconnectEvent ev;
    ev.id = p->id;
    ev.node_id = p->node_id;
    ev.direction = p->direction;
    ev.address = p->address;
    ev.was_connected = p->announced;
    ev.reason = std::move(reason);
    cb_.on_disconnected(ev);
  }
  OnSessionEnded(*p);
}

void Host::Impl::CloseSocket(const PeerPtr& p) {
  if (p->state == Peer::State::kClosed) return;
  p->state = Peer::State::kClosed;
  boost::system::error_code ec;
  p->socket.shutdown(tcp::socket::shutdown_both, ec);
  p->socket.close(ec);
  p->deadline.cancel();
  p->keepalive.cancel();
  peers_.erase(p->id);
}

// ---- Persistent peers ----

void Host::Impl::OnSessionEnded(const Peer& p) {
  if (destroyed_) return;
  std::optional<crypto::PublicKey> key = p.persistent_key ? p.persistent_key : p.node_id;
  if (!key) return;
  auto it = persistent_.find(*key);
  if (it == persistent_.end()) return;
  PersistentPeer& pp = *it->second;
  if (pp.attempt == p.id) pp.attempt.reset();
  if (pp.attempt || by_node_.count(pp.key) > 0) return;  // still covered
  ScheduleRedial(pp);
}

void Host::Impl::ScheduleRedial(PersistentPeer& pp) {
  if (pp.redial_scheduled) return;
  pp.redial_scheduled = true;
  // Jitter: a uniform delay in [backoff/2, backoff], so peers that lost each
  // other at the same moment do not redial in lockstep.
  uint64_t r = 0;
  rng_.Fill({reinterpret_cast<uint8_t*>(&r), sizeof(r)});
  const auto base = static_cast<uint64_t>(pp.backoff.count());
  const milliseconds delay{base / 2 + (base > 0 ? r % (base - base / 2 + 1) : 0)};
  pp.backoff = std::min(pp.backoff * 2, opts_.reconnect_max);
  log_->debug("redialling {}@{}:{} in {} ms", pp.key.Hex().substr(0, 16), pp.host, pp.port,
              delay.count());
  pp.timer.expires_after(delay);
  std::weak_ptr<Impl> weak = weak_from_this();
  crypto::PublicKey key = pp.key;
  pp.timer.async_wait([weak, key](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self || ec == asio::error::operation_aborted || self->destroyed_) return;
    auto it = self->persistent_.find(key);
    if (it == self->persistent_.end()) return;
    PersistentPeer& entry = *it->second;
    if (!entry.redial_scheduled) return;
    entry.redial_scheduled = false;
    if (entry.attempt || self->by_node_.count(key) > 0) return;
    self->Dial(entry);
  });
}

void Host::Impl::Dial(PersistentPeer& pp) {
  auto id = Connect(pp.host, pp.port, pp.key, {}, pp.key);
  if (id.ok()) {
    pp.attempt = *id;
  } else {
    // Address and key were validated when the peer was added.
    log_->error("persistent dial {}:{} failed: {}", pp.host, pp.port, id.status().ToString());
  }
}

Status Host::Impl::AddPersistentPeer(const std::string& host, uint16_t port,
                                     const crypto::PublicKey& remote) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("persistent peer: bad address '" + host + "'");
  if (remote == identity_.public_key()) {
    return Status::InvalidArgument("persistent peer: that is our own node id");
  }
  if (persistent_.count(remote) > 0) {
    return Status::AlreadyExists("persistent peer " + remote.Hex() + " already added");
  }
  auto pp = std::make_unique<PersistentPeer>(io_);
  pp->host = host;
  pp->port = port;
  pp->key = remote;
  pp->backoff = opts_.reconnect_initial;
  PersistentPeer& ref = *pp;
  persistent_[remote] = std::move(pp);
  if (by_node_.count(remote) == 0) Dial(ref);
  return Status::Ok();
}

Status Host::Impl::RemovePersistentPeer(const crypto::PublicKey& remote) {
  auto it = persistent_.find(remote);
  if (it == persistent_.end()) return Status::NotFound("not a persistent peer: " + remote.Hex());
  it->second->timer.cancel();
  persistent_.erase(it);
  return Status::Ok();
}

// ---- Queries and shutdown ----

Host::Impl::PeerPtr Host::Impl::Find(PeerId id) const {
  auto it = peers_.find(id);
  if (it == peers_.end() || !it->second->open()) return nullptr;
  return it->second;
}

Status Host::Impl::Disconnect(PeerId id, const std::string& reason) {
  PeerPtr p = Find(id);
  if (!p) return Status::NotFound("disconnect: no open peer#" + std::to_string(id));
  Fail(p, {DisconnectCode::kLocal, reason});
  return Status::Ok();
}

PeerInfo Host::Impl::InfoOf(const Peer& p) const {
  PeerInfo info;
  info.id = p.id;
  info.node_id = *p.node_id;
  info.direction = p.direction;
  info.address = p.address;
  info.init = p.remote_init;
  return info;
}

std::optional<PeerId> Host::Impl::FindPeer(const crypto::PublicKey& node) const {
  auto it = by_node_.find(node);
  if (it == by_node_.end()) return std::nullopt;
  return it->second;
}

std::optional<PeerInfo> Host::Impl::GetPeer(PeerId id) const {
  PeerPtr p = Find(id);
  if (!p || p->state != Peer::State::kActive) return std::nullopt;
  return InfoOf(*p);
}

std::vector<PeerInfo> Host::Impl::Peers() const {
  std::vector<PeerInfo> out;
  for (const auto& [node, id] : by_node_) {
    if (auto info = GetPeer(id)) out.push_back(std::move(*info));
  }
  return out;
}

std::optional<PeerStats> Host::Impl::Stats(PeerId id) const {
  PeerPtr p = Find(id);
  if (!p) return std::nullopt;
  PeerStats s = p->stats;
  s.send_queue_bytes = p->queued_bytes;
  s.send_queue_messages = p->send_queue.size();
  return s;
}

void Host::Impl::Shutdown() {
  boost::system::error_code ec;
  for (auto& a : acceptors_) a->close(ec);
  acceptors_.clear();
  for (auto& [key, pp] : persistent_) pp->timer.cancel();
  persistent_.clear();
  std::vector<PeerPtr> open;
  for (const auto& [id, p] : peers_) open.push_back(p);
  for (const auto& p : open) Fail(p, {DisconnectCode::kShutdown, "host shutting down"});
}

void Host::Impl::Destroy() {
  destroyed_ = true;
  cb_ = {};
  boost::system::error_code ec;
  for (auto& a : acceptors_) a->close(ec);
  acceptors_.clear();
  persistent_.clear();
  std::vector<PeerPtr> all;
  for (const auto& [id, p] : peers_) all.push_back(p);
  for (const auto& p : all) CloseSocket(p);
}

// ---- Host ----

Host::Host(asio::io_context& io, const crypto::KeyPair& identity, crypto::RandomSource& rng,
           HostOptions options, Callbacks callbacks)
    : impl_(std::make_shared<Impl>(io, identity, rng, std::move(options), std::move(callbacks))) {}

Host::~Host() { impl_->Destroy(); }

void Host::SetCallbacks(Callbacks callbacks) { impl_->SetCallbacks(std::move(callbacks)); }

Result<uint16_t> Host::Listen(const std::string& host, uint16_t port) {
  return impl_->Listen(host, port);
}

Result<PeerId> Host::Connect(const std::string& host, uint16_t port,
                             const crypto::PublicKey& remote, ConnectOptions options) {
  return impl_->Connect(host, port, remote, options, std::nullopt);
}

Status Host::Disconnect(PeerId peer, const std::string& reason) {
  return impl_->Disconnect(peer, reason);
}

Status Host::Send(PeerId peer, const v1::Envelope& msg) { return impl_->Send(peer, msg); }

Status Host::AddPersistentPeer(const std::string& host, uint16_t port,
                               const crypto::PublicKey& remote) {
  return impl_->AddPersistentPeer(host, port, remote);
}

Status Host::RemovePersistentPeer(const crypto::PublicKey& remote) {
  return impl_->RemovePersistentPeer(remote);
}

std::optional<PeerId> Host::FindPeer(const crypto::PublicKey& node_id) const {
  return impl_->FindPeer(node_id);
}

std::optional<PeerInfo> Host::GetPeer(PeerId peer) const { return impl_->GetPeer(peer); }

std::vector<PeerInfo> Host::Peers() const { return impl_->Peers(); }

std::optional<PeerStats> Host::Stats(PeerId peer) const { return impl_->Stats(peer); }

const crypto::PublicKey& Host::node_id() const { return impl_->node_id(); }

void Host::Shutdown() { impl_->Shutdown(); }

}  // namespace tipd::p2p
