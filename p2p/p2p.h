// tipd's peer layer: authenticated, encrypted connections (BOLT 8 Noise_XK over
// TCP) that carry one `tipd.v1.Envelope` per frame.
//
// A Host listens, dials, runs the handshake and the Init exchange, answers and
// sends keepalive pings, bounds every peer's send queue, redials persistent
// peers with backoff, and hands every other Envelope (channel and ledger
// messages) to its owner. It does not interpret those messages.
//
// Threading contract: a Host is driven by the caller's io_context and is not
// thread-safe. Construct, call and destroy it on the one thread that runs the
// io_context (or while no thread runs it). Every callback runs on that thread,
// from inside io_context::run(); callbacks may call back into the Host (Send,
// Disconnect, Connect...) but must not destroy it. Other threads hand work in
// with boost::asio::post(io, ...). The io_context must outlive the Host.
//
// Lifecycle of a connection (see docs/p2p.md):
//   TCP connect/accept -> Noise acts 1..3 -> both send Init -> on_connected
//   -> messages -> on_disconnected (exactly once, see below).
// Connect() and AddPersistentPeer() are asynchronous: the outcome arrives as
// on_connected or on_disconnected for the returned PeerId.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/crypto.h"
#include "tipd/wire.pb.h"
#include "util/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tipd::p2p {

// Identifies one connection (one TCP session) for the lifetime of a Host.
// Never reused; a reconnect to the same node gets a new PeerId.
using PeerId = uint64_t;

enum class Direction { kInbound, kOutbound };
const char* DirectionName(Direction d);

// The protocol_version this build speaks and the lowest one it accepts.
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kMinProtocolVersion = 1;
// Largest Pong padding a Host will produce; a Ping asking for more, or for a
// Pong larger than the Host's own max_message_size, is not answered (as BOLT 1
// does), so the pinger sees a ping timeout.
inline constexpr uint32_t kMaxPongBytes = 65000;
// What one Pong costs beyond its padding when charged against the Pong budget
// (HostOptions::pong_budget_*): a flood of padding-free Pings is not free.
inline constexpr uint32_t kPongOverheadBytes = 64;

// Why a connection ended. `switch` over it without `default:`.
enum class DisconnectCode {
  kLocal,            // the owner called Disconnect()
  kConnectFailed,    // TCP connect failed (refused, unreachable, bad address)
  kTimeout,          // connect + handshake + Init did not finish in time
  kHandshakeFailed,  // Noise act failed (bad MAC, wrong key, peer hung up mid-handshake)
  kWrongChain,       // Init carried a different chain id (Error WRONG_CHAIN sent)
  kIncompatible,     // Init carried an unsupported protocol_version
  kProtocolError,    // the peer broke the framing or message rules; Error sent
  kRemoteError,      // the peer sent a connection-wide Error
  kPingTimeout,      // no traffic for idle_timeout, or no Pong within ping_timeout
  kSlowPeer,         // the peer stopped reading while we owed it a reply
  kRemoteClosed,     // EOF or reset from the peer
  kIOError,          // any other socket error
  kDuplicate,        // a newer connection to the same node id replaced this one
  kRateLimited,      // the peer exceeded a rate limit (e.g. Pings); Error sent
  kShutdown,         // the Host is shutting down
};
const char* DisconnectCodeName(DisconnectCode c);

struct DisconnectReason {
  DisconnectCode code;
  std::string message;           // human-readable; for kPingTimeout it is "ping timeout"
  std::string ToString() const;  // "CODE: message"
};

// Error codes p2p itself puts in Error.code before disconnecting.
namespace error_code {
inline constexpr char kWrongChain[] = "WRONG_CHAIN";
inline constexpr char kIncompatibleVersion[] = "INCOMPATIBLE_VERSION";
inline constexpr char kInitRequired[] = "INIT_REQUIRED";           // message before Init
inline constexpr char kUnexpectedInit[] = "UNEXPECTED_INIT";       // second Init
inline constexpr char kBadEnvelope[] = "BAD_ENVELOPE";             // frame is not an Envelope
inline constexpr char kUnknownMessage[] = "UNKNOWN_MESSAGE";       // unset or unknown oneof
inline constexpr char kFrameTooLarge[] = "FRAME_TOO_LARGE";        // > max_message_size
inline constexpr char kDecryptFailed[] = "DECRYPT_FAILED";         // frame MAC did not verify
inline constexpr char kBadPong[] = "BAD_PONG";                     // wrong nonce or padding size
inline constexpr char kPingRateExceeded[] = "PING_RATE_EXCEEDED";  // Pong budget spent
}  // namespace error_code

struct HostOptions {
  // Init contents. Peers on another chain_id are refused.
  std::string chain_id;
  std::string software_version = "tipd/0.1.0";
  std::vector<std::string> features;

  // TCP connect + Noise handshake + Init exchange must finish within this.
  std::chrono::milliseconds handshake_timeout{10'000};
  // A Ping is sent after this long without one outstanding.
  std::chrono::milliseconds ping_interval{30'000};
  // The matching Pong must arrive within this long of the Ping.
  std::chrono::milliseconds ping_timeout{20'000};
  // Disconnect when nothing at all was received for this long.
  std::chrono::milliseconds idle_timeout{90'000};
  // Padding requested in our Pings (<= kMaxPongBytes).
  uint32_t ping_pong_bytes = 0;

  // Largest serialized Envelope sent or accepted (<= 65535, the Noise limit).
  size_t max_message_size = 65535;
  // Per-peer send queue bounds (encrypted bytes / frames not yet written to
  // the socket). Send() refuses a message that would exceed either; after a
  // refusal, on_writable fires once the queue drains to half of both bounds.
  size_t max_send_queue_bytes = 4 << 20;
  size_t max_send_queue_messages = 4096;

  // After Disconnect or a protocol error, queued frames (e.g. the Error) get
  // this long to reach the socket before it is closed.
  std::chrono::milliseconds linger_timeout{1'000};

  // Inbound connections beyond this (counting those still handshaking) are
  // closed right after accept.
  size_t max_inbound_peers = 125;
  // Inbound connections from one IP address (counting those still
  // handshaking) beyond this are closed right after accept, with one log line
  // naming the address; 0 = no per-address limit. Loopback is not exempt: a
  // process that runs many nodes on 127.0.0.1 (a devnet's sequencer) must
  // raise it explicitly.
  size_t max_inbound_per_address = 8;

  // Answering Pings costs us the Pong padding the peer asks for (up to
  // kMaxPongBytes). Each Pong is charged its padding + kPongOverheadBytes
  // against a per-peer token bucket of this many bytes per second with this
  // burst; a Ping that finds the bucket empty gets Error PING_RATE_EXCEEDED
  // and kRateLimited. The effective rate and burst are never below what a
  // peer with our own ping_interval and ping_pong_bytes needs (twice the
  // rate, four Pongs of burst), so honest keepalive never trips it.
  size_t pong_budget_bytes_per_second = 64 * 1024;
  size_t pong_budget_burst_bytes = 4 * (kMaxPongBytes + kPongOverheadBytes);

  // Persistent-peer redial backoff: starts at reconnect_initial, doubles per
  // failed attempt up to reconnect_max; each delay is jittered down by up to
  // half from the RandomSource. Reset after a session that reached Init.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{30'000};
};

struct ConnectOptions {
  // Overrides HostOptions::handshake_timeout for this attempt when set.
  std::optional<std::chrono::milliseconds> timeout;
};

// A connection whose Init exchange succeeded.
struct PeerInfo {
  PeerId id = 0;
  crypto::PublicKey node_id;  // authenticated by the Noise handshake
  Direction direction = Direction::kInbound;
  std::string address;  // "ip:port" of the remote end
  v1::Init init;        // what the peer announced
};

struct DisconnectEvent {
  PeerId id = 0;
  // Set once the Noise handshake authenticated the peer (always for outbound:
  // the key we dialled).
  std::optional<crypto::PublicKey> node_id;
  Direction direction = Direction::kInbound;
  std::string address;
  // True if on_connected fired for this PeerId.
  bool was_connected = false;
  DisconnectReason reason;
};

struct PeerStats {
  uint64_t bytes_in = 0;  // bytes read from the socket, handshake included
  uint64_t bytes_out = 0;
  uint64_t messages_in = 0;  // Envelopes decoded (Init, Ping... included)
  uint64_t messages_out = 0;
  std::chrono::steady_clock::time_point connected_since;  // Init exchange done
  size_t send_queue_bytes = 0;
  size_t send_queue_messages = 0;
};

// Owner callbacks; any may be empty. All run on the io_context thread.
struct Callbacks {
  // The Init exchange succeeded: the peer is usable for Send().
  std::function<void(const PeerInfo&)> on_connected;
  // Fires exactly once for: every PeerId returned by Connect() or used by a
  // persistent peer; every inbound connection that finished the Noise
  // handshake. Inbound connections dropped before that are only logged.
  // After it, the PeerId is unknown to every Host method.
  std::function<void(const DisconnectEvent&)> on_disconnected;
  // Every Envelope except Init, Ping, Pong and Error, in arrival order.
  std::function<void(PeerId, const v1::Envelope&)> on_message;
  // An Error from the peer. If its channel_id is empty it concerns the whole
  // connection and on_disconnected (kRemoteError) follows; otherwise it is
  // only reported and the connection stays up.
  std::function<void(PeerId, const v1::Error&)> on_error;
  // The send queue drained to half its bounds after Send() refused a message.
  std::function<void(PeerId)> on_writable;
};

class Host {
 public:
  // `identity` is this node's static key (its node id); `rng` supplies the
  // handshake ephemeral keys, ping nonces and backoff jitter. Both must
  // outlive the Host. REQUIRES: options.chain_id is not empty.
  Host(boost::asio::io_context& io, const crypto::KeyPair& identity, crypto::RandomSource& rng,
       HostOptions options, Callbacks callbacks = {});
  // Closes every socket and timer without invoking callbacks.
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // Replaces the callbacks (e.g. when the owner is built after the Host).
  void SetCallbacks(Callbacks callbacks);

  // Binds and listens on host:port (port 0 picks an ephemeral port) and
  // returns the bound port. May be called again for further addresses.
  // Errors: kInvalidArgument (unparsable address), kIOError (bind/listen).
  Result<uint16_t> Listen(const std::string& host, uint16_t port);

  // Starts dialling `remote` at host:port. `host` is a numeric IPv4/IPv6
  // address (no DNS here). The outcome arrives through the callbacks with
  // the returned PeerId. Errors: kInvalidArgument (bad address, our own key).
  Result<PeerId> Connect(const std::string& host, uint16_t port, const crypto::PublicKey& remote,
                         ConnectOptions options = {});

  // Closes the connection after its queued frames are flushed (bounded by
  // linger_timeout). on_disconnected fires (kLocal, `reason`) before this
  // returns. Errors: kNotFound.
  Status Disconnect(PeerId peer, const std::string& reason);

  // Encrypts and queues one Envelope. Errors: kNotFound (unknown or already
  // disconnected peer), kFailedPrecondition (Init exchange not done yet),
  // kInvalidArgument (unset oneof, Init/Ping/Pong which p2p owns, or larger
  // than max_message_size; nothing is sent), kResourceExhausted (queue full:
  // nothing is queued, on_writable follows once it drains).
  Status Send(PeerId peer, const v1::Envelope& msg);

  // Keeps a connection to `remote` at host:port: dials now and redials with
  // backoff whenever no session with that node id exists. An inbound session
  // from the same node id satisfies it. Errors: kInvalidArgument (bad
  // address, our own key), kAlreadyExists (already persistent).
  Status AddPersistentPeer(const std::string& host, uint16_t port, const crypto::PublicKey& remote);
  // Stops redialling; an open session is left up. Errors: kNotFound.
  Status RemovePersistentPeer(const crypto::PublicKey& remote);

  // The connected (Init done) session with this node id, if any.
  std::optional<PeerId> FindPeer(const crypto::PublicKey& node_id) const;
  std::optional<PeerInfo> GetPeer(PeerId peer) const;
  // Every connected (Init done) session.
  std::vector<PeerInfo> Peers() const;
  std::optional<PeerStats> Stats(PeerId peer) const;

  const crypto::PublicKey& node_id() const;

  // Stops listening, disconnects every peer (on_disconnected with kShutdown)
  // and stops redialling. The Host stays usable for Listen/Connect after.
  void Shutdown();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tipd::p2p
