// Fuzz target: the API's request parsing (api/rpc_server.h ParseJson into
// every request body the routes take, the checks the routes then apply to
// the fields, and bearer token verification, api/auth.h).
//
// The first input byte picks what to parse, the rest is the request body (or
// the token text). Invariants:
//  - whatever the fast JSON reader accepts, protobuf's parser reads to an
//    equal message;
//  - ParseJson never crashes; it fails only with kInvalidArgument naming the
//    message type;
//  - a parsed request renders (ToJson) and parses back to an equal message:
//    the API never answers "{}" for something it accepted;
//  - the route-level checks of the fields (hex ids, node keys, host:port,
//    scopes, tip content) never crash, and what they accept round-trips
//    (a node id through its hex, a scope through its name);
//  - a token verifies only if it is what the authority issues for its
//    claims (up to the case of its hex), and never once expired.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cctype>
#include <cstdint>
#include <memory>
#include <string>

#include "api/auth.h"
#include "api/json_fast.h"
#include "api/rpc_server.h"
#include "channel/codec.h"
#include "node/config.h"
#include "tests/fuzz/fuzz_util.h"
#include "tipd/api.pb.h"

namespace tipd::fuzz {
namespace {

using google::protobuf::Message;
using google::protobuf::util::MessageDifferencer;

void CheckNodeId(const std::string& hex) {
  auto key = crypto::PublicKey::FromHex(hex);
  if (!key.ok()) return;
  auto again = crypto::PublicKey::FromHex(key->Hex());
  Require(again.ok() && *again == *key, "an accepted node id round-trips through its hex");
}

void CheckHex32(const std::string& hex) {
  auto bytes = HexDecode(hex);
  if (bytes.ok() && bytes->size() == 32) {
    Require(HexEncode(*bytes).size() == 64, "a 32-byte id renders as 64 hex");
  }
}

void CheckTip(const v1::TipRequest& t) {
  CheckNodeId(t.peer_node_id());
  CheckHex32(t.channel_id());
  // The draft the route builds, checked by the channel's content rules.
  v1::Tip tip;
  tip.set_index(1);
  tip.set_amount(t.amount());
  tip.set_message(t.message());
  for (const auto& [k, v] : t.metadata()) {
    auto* e = tip.add_metadata();
    e->set_key(k);
    e->set_value(v);
  }
  // std::map order (what the channel sorts into) is the protobuf map's
  // sorted order only after sorting; the rules must not crash either way.
  (void)channel::CheckTipContent(tip);
  if (channel::CheckTipContent(tip).ok()) {
    Require(IsValidUtf8(tip.message()), "an accepted message is UTF-8");
  }
}

void CheckFields(const Message& m) {
  if (auto* t = dynamic_cast<const v1::TipRequest*>(&m)) {
    CheckTip(*t);
  } else if (auto* b = dynamic_cast<const v1::TipBatchRequest*>(&m)) {
    for (const auto& t : b->tips()) CheckTip(t);
  } else if (auto* o = dynamic_cast<const v1::OpenChannelRequest*>(&m)) {
    CheckNodeId(o->peer_node_id());
  } else if (auto* c = dynamic_cast<const v1::ConnectPeerRequest*>(&m)) {
    CheckNodeId(c->node_id());
    auto hp = node::ParseHostPort(c->address());
    if (hp.ok()) {
      auto again = node::ParseHostPort(hp->ToString());
      Require(again.ok() && *again == *hp, "an accepted address round-trips");
    }
  } else if (auto* x = dynamic_cast<const v1::TransferRequest*>(&m)) {
    CheckHex32(x->to());
  } else if (auto* k = dynamic_cast<const v1::CreateTokenRequest*>(&m)) {
    for (const auto& name : k->scopes()) {
      auto scope = api::ParseScope(name);
      if (!scope.ok()) continue;
      auto again = api::ParseScope(api::ScopeName(*scope));
      Require(again.ok() && *again == *scope, "a scope round-trips through its name");
    }
  } else if (auto* l = dynamic_cast<const v1::ListTipsRequest*>(&m)) {
    CheckHex32(l->channel_id());
  }
}

std::unique_ptr<Message> NewRequest(uint8_t which) {
  switch (which % 9) {
    case 0:
      return std::make_unique<v1::TipRequest>();
    case 1:
      return std::make_unique<v1::TipBatchRequest>();
    case 2:
      return std::make_unique<v1::OpenChannelRequest>();
    case 3:
      return std::make_unique<v1::DepositRequest>();
    case 4:
      return std::make_unique<v1::CloseChannelRequest>();
    case 5:
      return std::make_unique<v1::TransferRequest>();
    case 6:
      return std::make_unique<v1::ConnectPeerRequest>();
    case 7:
      return std::make_unique<v1::CreateTokenRequest>();
    default:
      return std::make_unique<v1::ListTipsRequest>();
  }
}

void Json(uint8_t which, const std::string& body) {
  std::unique_ptr<Message> m = NewRequest(which);
  // The fast reader (api/json_fast.h) against protobuf's own parser.
  std::unique_ptr<Message> fast = NewRequest(which);
  if (api::FastFromJson(body, fast.get())) {
    google::protobuf::util::JsonParseOptions opts;
    std::unique_ptr<Message> slow = NewRequest(which);
    Require(google::protobuf::util::JsonStringToMessage(body, slow.get(), opts).ok(),
            "what the fast reader accepts, protobuf's parser accepts");
    Require(MessageDifferencer::Equals(*fast, *slow), "the fast reader reads as protobuf does");
  }
  Status st = api::ParseJson(body, m.get());
  if (!st.ok()) {
    Require(st.code() == StatusCode::kInvalidArgument, "a bad body is kInvalidArgument");
    Require(st.message().find(m->GetDescriptor()->full_name()) != std::string::npos,
            "the error names the request type");
    return;
  }
  const std::string rendered = api::ToJson(*m);
  std::unique_ptr<Message> back = NewRequest(which);
  Status again = api::ParseJson(rendered, back.get());
  Require(again.ok(), "a rendered request parses");
  Require(MessageDifferencer::Equals(*m, *back), "ParseJson -> ToJson -> ParseJson is equal");
  CheckFields(*m);
}

void Token(const std::string& text, uint64_t now_ms) {
  static const api::TokenAuthority authority(crypto::Key32{7, 7, 7});
  auto claims = authority.Verify(text, static_cast<int64_t>(now_ms >> 1));
  if (!claims.ok()) {
    Require(claims.status().code() == StatusCode::kInvalidArgument ||
                claims.status().code() == StatusCode::kPermissionDenied,
            "a bad token is kInvalidArgument or kPermissionDenied");
    return;
  }
  // The hex is read case-insensitively (docs/api.md issues lower case), so
  // the only other texts of a token are its case variants.
  std::string lower = text;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  Require(authority.Issue(*claims) == lower, "a token verifies only in its issued form");
  Require(claims->expires_at_ms == 0 || claims->expires_at_ms > (now_ms >> 1),
          "an expired token never verifies");
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tipd::fuzz;
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 10 == 9) {
    FuzzInput in(data + 1, size - 1);
    const uint64_t now = in.U64();
    Token(in.Rest(), now);
  } else {
    Json(data[0], rest);
  }
  return 0;
}
