// Fuzz target: Envelope decoding and dispatch in a real p2p::Host.
//
// A Host listens on loopback, driven by its io_context on a thread of its
// own. The fuzz thread is a raw peer built from crypto/noise.h: it runs the
// Noise handshake, exchanges Init, and sends each input as one encrypted
// frame body — as the first message after the handshake (before Init) or on
// an established session — followed by a Ping probe. It then reads what the
// Host answers until the probe's Pong (the Host handled the frame and kept
// the session) or the end of the connection.
//
// What the Host must do, derived here from the frame independently:
//  - bytes that are not an Envelope: Error BAD_ENVELOPE, then disconnect;
//    an unset or unknown message: UNKNOWN_MESSAGE; a frame over the limit:
//    FRAME_TOO_LARGE;
//  - before Init: an Init on our chain with a supported version connects
//    (on_connected); another chain: WRONG_CHAIN; version 0:
//    INCOMPATIBLE_VERSION; anything else but Error: INIT_REQUIRED;
//  - after Init: a second Init: UNEXPECTED_INIT; a Ping within the Pong limit
//    is answered with its nonce and the asked padding, above it ignored; an
//    unsolicited Pong is ignored; the Host never sends a frame over its own
//    max_message_size (a Pong that would be is not sent); an Error without
//    channel id ends the session (kRemoteError), with one it is reported
//    (on_error) and the session stays; every other message reaches on_message exactly once,
//    equal to the frame's own decoding;
//  - every disconnect is reported once through on_disconnected, and nothing
//    is handed to the owner after it.
#include <arpa/inet.h>
#include <google/protobuf/util/message_differencer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "crypto/noise.h"
#include "p2p/p2p.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {
namespace {

namespace asio = boost::asio;
using google::protobuf::util::MessageDifferencer;

constexpr const char* kChain = "tipd-fuzz";
// Small enough that the fuzzer reaches it (libFuzzer's default -max_len is 4096).
constexpr size_t kMaxMessage = 2048;

class SeededRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override {
    for (uint8_t& b : out) b = static_cast<uint8_t>(gen_());
  }

 private:
  std::mt19937_64 gen_{42};
};

// What the Host told its owner, in order.
struct Events {
  std::mutex mu;
  std::condition_variable cv;
  int connected = 0;
  std::vector<p2p::DisconnectEvent> disconnected;
  std::vector<v1::Envelope> messages;
  std::vector<v1::Error> errors;
};

// The victim: a Host on its own io thread. Built once, never destroyed (the
// thread keeps running until the process exits).
struct Victim {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  crypto::KeyPair key = KeyFromByte(0x21);
  SeededRandom rng;
  Events events;
  std::unique_ptr<p2p::Host> host;
  uint16_t port = 0;
  std::thread thread;

  Victim() {
    // The Host logs every disconnect; millions of them say nothing here.
    spdlog::register_logger(
        std::make_shared<spdlog::logger>("p2p", std::make_shared<spdlog::sinks::null_sink_mt>()));
    p2p::HostOptions o;
    o.chain_id = kChain;
    o.handshake_timeout = std::chrono::seconds(60);
    o.ping_interval = std::chrono::hours(1);
    o.ping_timeout = std::chrono::hours(1);
    o.idle_timeout = std::chrono::hours(2);
    o.max_message_size = kMaxMessage;
    o.max_inbound_per_address = 0;
    o.linger_timeout = std::chrono::seconds(5);
    // Pongs of any size as often as asked: the budget is tested elsewhere
    // and would make outcomes depend on timing.
    o.pong_budget_bytes_per_second = size_t{1} << 40;
    o.pong_budget_burst_bytes = size_t{1} << 40;
    p2p::Callbacks cb;
    cb.on_connected = [this](const p2p::PeerInfo&) {
      std::lock_guard lock(events.mu);
      ++events.connected;
      events.cv.notify_all();
    };
    cb.on_disconnected = [this](const p2p::DisconnectEvent& e) {
      std::lock_guard lock(events.mu);
      events.disconnected.push_back(e);
      events.cv.notify_all();
    };
    cb.on_message = [this](p2p::PeerId, const v1::Envelope& env) {
      std::lock_guard lock(events.mu);
      events.messages.push_back(env);
    };
    cb.on_error = [this](p2p::PeerId, const v1::Error& err) {
      std::lock_guard lock(events.mu);
      events.errors.push_back(err);
    };
    host = std::make_unique<p2p::Host>(io, key, rng, o, cb);
    auto listening = host->Listen("127.0.0.1", 0);
    Require(listening.ok(), "the victim listens on loopback");
    port = *listening;
    thread = std::thread([this] { io.run(); });
  }
};

Victim& V() {
  static Victim* v = new Victim();  // never destroyed: its thread runs to exit
  return *v;
}

// The attacker's end of one connection.
class RawPeer {
 public:
  ~RawPeer() { Close(); }

  // TCP connect, Noise handshake, and the victim's Init read. False if the
  // victim is unreachable (a broken invariant for the caller).
  bool Connect(uint16_t port, const crypto::PublicKey& victim) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    timeval tv{30, 0};  // generous: a loaded machine, sanitizers
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // Hundreds of connections a second: close with a reset (no TIME_WAIT)
    // and spread them over 127.0.0.2-255, or the loopback's ephemeral ports
    // run out within minutes.
    linger no_linger{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
    static uint32_t source = 0;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (source++ % 254));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return false;
    static const crypto::KeyPair me = KeyFromByte(0x31);
    static const crypto::KeyPair ephemeral = KeyFromByte(0x32);
    auto hs = crypto::NoiseHandshake::Initiator(me, victim, ephemeral);
    auto act1 = hs.WriteAct1();
    if (!act1.ok() || !WriteAll(*act1)) return false;
    Bytes act2(crypto::kAct2Size);
    if (!ReadAll(act2) || !hs.ReadAct2(act2).ok()) return false;
    auto act3 = hs.WriteAct3();
    if (!act3.ok() || !WriteAll(*act3)) return false;
    auto t = hs.Finish();
    if (!t.ok()) return false;
    transport_.emplace(std::move(*t));
    auto init = ReadEnvelope();
    return init.has_value() && init->has_init() && init->init().chain_id() == kChain;
  }

  bool SendInit() {
    v1::Envelope env;
    env.mutable_init()->set_chain_id(kChain);
    env.mutable_init()->set_protocol_version(p2p::kProtocolVersion);
    return SendBody(env.SerializeAsString());
  }

  bool SendBody(const std::string& body) {
    auto frame = transport_->Encrypt(AsSpan(body));
    return frame.ok() && WriteAll(*frame);
  }

  // The next frame from the victim, parsed; nullopt on EOF, timeout or a
  // frame that is not an Envelope.
  std::optional<v1::Envelope> ReadEnvelope() {
    Bytes header(crypto::kNoiseLengthHeaderSize);
    if (!ReadAll(header)) return std::nullopt;
    auto len = transport_->DecryptLength(header);
    Require(len.ok(), "the victim's frame header decrypts");
    Require(*len <= kMaxMessage, "the victim never sends a frame over its own limit");
    Bytes body(crypto::NoiseTransport::BodySize(*len));
    Require(ReadAll(body), "the victim's frame body arrives");
    auto plain = transport_->DecryptBody(body);
    Require(plain.ok(), "the victim's frame body decrypts");
    v1::Envelope env;
    Require(env.ParseFromArray(plain->data(), static_cast<int>(plain->size())),
            "the victim sends Envelopes");
    return env;
  }

  // True once the victim closed the connection (EOF), false on a timeout.
  bool timed_out() const { return timed_out_; }
  // The connection ended with a reset: TCP may then drop data not yet read.
  bool reset() const { return reset_; }
  bool open() const { return fd_ >= 0; }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  bool WriteAll(ByteSpan data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool ReadAll(Bytes& out) {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::recv(fd_, out.data() + done, out.size() - done, 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) timed_out_ = true;
      if (n < 0 && errno == ECONNRESET) reset_ = true;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  int fd_ = -1;
  bool timed_out_ = false;
  bool reset_ = false;
  std::optional<crypto::NoiseTransport> transport_;
};

struct Session {
  std::unique_ptr<RawPeer> peer;
  bool active = false;  // Init exchanged
};

Session& S() {
  static Session* s = new Session();
  return *s;
}

// Waits until the victim reported `n` disconnects in all.
void AwaitDisconnects(size_t n) {
  Events& ev = V().events;
  std::unique_lock lock(ev.mu);
  const bool ok =
      ev.cv.wait_for(lock, std::chrono::seconds(60), [&] { return ev.disconnected.size() >= n; });
  Require(ok, "the victim reports every disconnect");
  Require(ev.disconnected.size() == n, "one disconnect reported per connection");
}

void AwaitConnected(int n) {
  Events& ev = V().events;
  std::unique_lock lock(ev.mu);
  Require(ev.cv.wait_for(lock, std::chrono::seconds(60), [&] { return ev.connected >= n; }),
          "the victim reports the connection");
}

size_t Disconnects() {
  std::lock_guard lock(V().events.mu);
  return V().events.disconnected.size();
}

// Ends the current session (if any) and opens a fresh one, Init sent or not.
void Fresh(bool send_init) {
  Session& s = S();
  if (s.peer && s.peer->open()) {
    const size_t before = Disconnects();
    s.peer->Close();
    // Every connection past the handshake is reported when it ends.
    AwaitDisconnects(before + 1);
  }
  s.peer = std::make_unique<RawPeer>();
  s.active = false;
  Require(s.peer->Connect(V().port, V().key.public_key()), "the victim accepts a connection");
  if (send_init) {
    int connected;
    {
      std::lock_guard lock(V().events.mu);
      connected = V().events.connected;
    }
    Require(s.peer->SendInit(), "Init is sent");
    AwaitConnected(connected + 1);
    s.active = true;
  }
}

// The outcome the Host must produce for `body` in the session's state.
struct Expect {
  bool disconnect = false;
  std::string error_code;        // Error the victim sends before closing ("" if none)
  bool to_owner = false;         // on_message with this envelope
  bool to_on_error = false;      // on_error
  bool connects = false;         // pre-Init: the Init is accepted
  std::optional<v1::Pong> pong;  // the Pong owed for a Ping
};

Expect Refused(const char* code) {
  Expect e;
  e.disconnect = true;
  e.error_code = code;
  return e;
}

Expect Predict(const std::string& body, bool active, v1::Envelope* env) {
  Expect e;
  if (body.size() > kMaxMessage) return Refused(p2p::error_code::kFrameTooLarge);
  if (!env->ParseFromString(body)) return Refused(p2p::error_code::kBadEnvelope);
  const auto kind = env->msg_case();
  if (kind == v1::Envelope::MSG_NOT_SET) return Refused(p2p::error_code::kUnknownMessage);
  if (kind == v1::Envelope::kError) {
    e.to_on_error = active;
    e.disconnect = env->error().channel_id().empty() || !active;
    return e;
  }
  if (!active) {
    if (kind != v1::Envelope::kInit) return Refused(p2p::error_code::kInitRequired);
    if (env->init().chain_id() != kChain) return Refused(p2p::error_code::kWrongChain);
    if (env->init().protocol_version() < p2p::kMinProtocolVersion) {
      return Refused(p2p::error_code::kIncompatibleVersion);
    }
    e.connects = true;
    return e;
  }
  switch (kind) {
    case v1::Envelope::kInit:
      return Refused(p2p::error_code::kUnexpectedInit);
    case v1::Envelope::kPing:
      if (env->ping().pong_bytes() <= p2p::kMaxPongBytes) {
        v1::Envelope reply;
        reply.mutable_pong()->set_nonce(env->ping().nonce());
        reply.mutable_pong()->set_padding(std::string(env->ping().pong_bytes(), '\0'));
        // A Pong over the Host's own frame limit is not sent (not answered).
        if (reply.ByteSizeLong() <= kMaxMessage) e.pong = reply.pong();
      }
      return e;
    case v1::Envelope::kPong:
      return e;
    default:
      e.to_owner = true;
      return e;
  }
}

void Run(const uint8_t* data, size_t size) {
  if (size == 0 || size - 1 > crypto::kNoiseMaxMessageSize) return;
  Victim& v = V();
  Session& s = S();
  const bool before_init = data[0] % 8 == 0;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  if (before_init || !s.peer || !s.peer->open() || !s.active) Fresh(!before_init);

  v1::Envelope env;
  const Expect expect = Predict(body, s.active, &env);
  size_t messages_before, errors_before, disconnects_before;
  int connected_before;
  {
    std::lock_guard lock(v.events.mu);
    messages_before = v.events.messages.size();
    errors_before = v.events.errors.size();
    disconnects_before = v.events.disconnected.size();
    connected_before = v.events.connected;
  }

  Require(s.peer->SendBody(body), "the frame is sent");
  // The probe: its Pong proves every earlier frame was handled.
  static uint64_t probe_counter = 0;
  const uint64_t probe = 0xF0F0F0F000000000ull + ++probe_counter;
  v1::Envelope ping;
  ping.mutable_ping()->set_nonce(probe);
  if (!expect.disconnect && (s.active || expect.connects)) {
    Require(s.peer->SendBody(ping.SerializeAsString()), "the probe is sent");
  }

  // Read until the probe's Pong or the end of the connection.
  std::vector<v1::Envelope> received;
  bool probe_answered = false;
  while (true) {
    auto got = s.peer->ReadEnvelope();
    if (!got) {
      Require(!s.peer->timed_out(), "the victim answers or disconnects in time");
      break;
    }
    if (got->has_pong() && got->pong().nonce() == probe) {
      probe_answered = true;
      break;
    }
    received.push_back(*got);
  }

  if (expect.disconnect) {
    Require(!probe_answered, "the session ends");
    // A reset may drop the Error in flight (past the size limit the victim
    // does not read the body, so closing resets; rarely, under load, it
    // happens otherwise too): a clean close must carry the Error.
    if (!expect.error_code.empty() && !s.peer->reset()) {
      bool found = false;
      for (const auto& m : received) {
        if (m.has_error() && m.error().code() == expect.error_code) found = true;
      }
      Require(found, "the victim names the rule in an Error before closing");
    }
    s.peer->Close();
    s.active = false;
    AwaitDisconnects(disconnects_before + 1);
  } else {
    Require(probe_answered, "the session stays up and the probe is answered");
    if (expect.connects) {
      AwaitConnected(connected_before + 1);
      s.active = true;
    }
    if (expect.pong) {
      bool found = false;
      for (const auto& m : received) {
        if (m.has_pong() && MessageDifferencer::Equals(m.pong(), *expect.pong)) found = true;
      }
      Require(found, "a Ping is answered with its nonce and padding");
    } else {
      for (const auto& m : received) Require(!m.has_pong(), "no Pong for what is not answered");
    }
  }

  std::lock_guard lock(v.events.mu);
  const size_t new_messages = v.events.messages.size() - messages_before;
  Require(new_messages == (expect.to_owner ? 1u : 0u), "on_message exactly for owner messages");
  if (expect.to_owner) {
    Require(MessageDifferencer::Equals(v.events.messages.back(), env),
            "the owner gets the frame's own decoding");
  }
  Require(v.events.errors.size() - errors_before == (expect.to_on_error ? 1u : 0u),
          "on_error exactly for Errors on a connected session");
  if (expect.disconnect) {
    const auto& d = v.events.disconnected.back();
    const bool protocol = !expect.error_code.empty();
    if (protocol && expect.error_code != p2p::error_code::kWrongChain &&
        expect.error_code != p2p::error_code::kIncompatibleVersion) {
      Require(d.reason.code == p2p::DisconnectCode::kProtocolError, "a protocol error is named");
    }
    if (!protocol) {
      Require(d.reason.code == p2p::DisconnectCode::kRemoteError, "a peer's Error is named");
    }
  }
  // Keep the event log small.
  if (v.events.messages.size() > 1024) v.events.messages.clear();
  if (v.events.errors.size() > 1024) v.events.errors.clear();
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tipd::fuzz::Run(data, size);
  return 0;
}
