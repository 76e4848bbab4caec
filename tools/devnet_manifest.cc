// DIR/devnet.json for `tipd devnet`: ManifestToJson writes it by hand (keys
// in a readable order), ParseManifest reads it back and names the field that
// is missing or malformed. The devnet itself is in tools/devnet.cc.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "tools/devnet.h"

namespace tipd::tools {

namespace pb = google::protobuf;

// ---------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------

std::string DevnetLedger::LedgerArg() const {
  return "127.0.0.1:" + std::to_string(port) + "@" + sequencer_id;
}
std::string DevnetNode::P2pAddress() const { return "127.0.0.1:" + std::to_string(p2p_port); }
std::string DevnetNode::RpcUrl() const { return "http://127.0.0.1:" + std::to_string(rpc_port); }

namespace {

std::string JsonQuote(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

Result<const pb::Value*> Field(const pb::Struct& s, const std::string& key,
                               const std::string& where, pb::Value::KindCase kind) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || it->second.kind_case() != kind) {
    return Status::Corruption("devnet.json: " + where + key + " is missing or has the wrong type");
  }
  return &it->second;
}
Result<std::string> GetStr(const pb::Struct& s, const std::string& key, const std::string& where) {
  TIPD_ASSIGN_OR_RETURN(const pb::Value* v, Field(s, key, where, pb::Value::kStringValue));
  return v->string_value();
}
Result<uint64_t> GetNum(const pb::Struct& s, const std::string& key, const std::string& where,
                        uint64_t max) {
  TIPD_ASSIGN_OR_RETURN(const pb::Value* v, Field(s, key, where, pb::Value::kNumberValue));
  double d = v->number_value();
  if (!(d >= 0) || d != std::floor(d) || d > static_cast<double>(max)) {
    return Status::Corruption("devnet.json: " + where + key + " is not an integer in 0.." +
                              std::to_string(max));
  }
  return static_cast<uint64_t>(d);
}

}  // namespace

std::string ManifestToJson(const DevnetManifest& m) {
  // Written by hand (ParseManifest reads it with protobuf's JSON parser) so
  // the keys keep a readable order: one key per line, objects in lists on one.
  using Fields = std::vector<std::string>;
  auto str = [](const std::string& key, const std::string& value) {
    return JsonQuote(key) + ": " + JsonQuote(value);
  };
  auto num = [](const std::string& key, uint64_t value) {
    return JsonQuote(key) + ": " + std::to_string(value);
  };
  auto object = [](const Fields& fields, const std::string& indent) {
    std::string out = "{";
    for (size_t i = 0; i < fields.size(); ++i) {
      out += "\n" + indent + "  " + fields[i] + (i + 1 < fields.size() ? "," : "");
    }
    return out + "\n" + indent + "}";
  };
  std::vector<std::string> nodes, channels;
  for (const DevnetNode& n : m.nodes) {
    nodes.push_back(object(
        {str("name", n.name), str("node_id", n.node_id), str("datadir", n.datadir.string()),
         num("p2p_port", n.p2p_port), str("p2p_address", n.P2pAddress()),
         num("rpc_port", n.rpc_port), str("rpc_url", n.RpcUrl()),
         str("token_file", n.TokenFile().string()), str("log", (n.datadir / "tipd.log").string()),
         num("pid", static_cast<uint64_t>(n.pid))},
        "    "));
  }
  for (const DevnetChannel& c : m.channels) {
    channels.push_back(
        object({str("channel_id", c.channel_id), num("opener", c.opener), num("peer", c.peer),
                num("deposit", c.deposit), num("push_deposit", c.push_deposit)},
               "    "));
  }
  auto list = [](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) {
      out += "\n    " + items[i] + (i + 1 < items.size() ? "," : "");
    }
    return out + (items.empty() ? "]" : "\n  ]");
  };
  std::string ledger = object(
      {str("datadir", m.ledger.datadir.string()), str("sequencer_id", m.ledger.sequencer_id),
       num("port", m.ledger.port), str("address", "127.0.0.1:" + std::to_string(m.ledger.port)),
       str("ledger_arg", m.ledger.LedgerArg()),
       str("log", (m.ledger.datadir / "tipd.log").string()),
       num("pid", static_cast<uint64_t>(m.ledger.pid))},
      "  ");
  return object({num("version", 1), str("chain_id", m.chain_id),
                 num("devnet_pid", static_cast<uint64_t>(m.devnet_pid)),
                 JsonQuote("ledger") + ": " + ledger, JsonQuote("nodes") + ": " + list(nodes),
                 JsonQuote("channels") + ": " + list(channels)},
                "") +
         "\n";
}

Result<DevnetManifest> ParseManifest(const std::string& json) {
  pb::Struct root;
  auto st = pb::util::JsonStringToMessage(json, &root);
  if (!st.ok()) {
    return Status::Corruption("devnet.json is not valid JSON: " + std::string(st.message()));
  }
  DevnetManifest m;
  TIPD_ASSIGN_OR_RETURN(uint64_t version, GetNum(root, "version", "", 1000));
  if (version != 1) {
    return Status::Corruption("devnet.json: version " + std::to_string(version) +
                              " is not known to this tipd (expected 1)");
  }
  TIPD_ASSIGN_OR_RETURN(m.chain_id, GetStr(root, "chain_id", ""));
  TIPD_ASSIGN_OR_RETURN(uint64_t devnet_pid, GetNum(root, "devnet_pid", "", INT32_MAX));
  m.devnet_pid = static_cast<pid_t>(devnet_pid);
  TIPD_ASSIGN_OR_RETURN(const pb::Value* ledger_v,
                        Field(root, "ledger", "", pb::Value::kStructValue));
  const pb::Struct& ledger = ledger_v->struct_value();
  TIPD_ASSIGN_OR_RETURN(std::string ledger_dir, GetStr(ledger, "datadir", "ledger."));
  m.ledger.datadir = ledger_dir;
  TIPD_ASSIGN_OR_RETURN(m.ledger.sequencer_id, GetStr(ledger, "sequencer_id", "ledger."));
  TIPD_ASSIGN_OR_RETURN(uint64_t ledger_port, GetNum(ledger, "port", "ledger.", 65535));
  m.ledger.port = static_cast<uint16_t>(ledger_port);
  TIPD_ASSIGN_OR_RETURN(uint64_t ledger_pid, GetNum(ledger, "pid", "ledger.", INT32_MAX));
  m.ledger.pid = static_cast<pid_t>(ledger_pid);

  TIPD_ASSIGN_OR_RETURN(const pb::Value* nodes_v, Field(root, "nodes", "", pb::Value::kListValue));
  for (int i = 0; i < nodes_v->list_value().values_size(); ++i) {
    const pb::Value& v = nodes_v->list_value().values(i);
    std::string where = "nodes[" + std::to_string(i) + "].";
    if (v.kind_case() != pb::Value::kStructValue) {
      return Status::Corruption("devnet.json: " + where + " is not an object");
    }
    const pb::Struct& o = v.struct_value();
    DevnetNode n;
    TIPD_ASSIGN_OR_RETURN(n.name, GetStr(o, "name", where));
    TIPD_ASSIGN_OR_RETURN(n.node_id, GetStr(o, "node_id", where));
    TIPD_ASSIGN_OR_RETURN(std::string datadir, GetStr(o, "datadir", where));
    n.datadir = datadir;
    TIPD_ASSIGN_OR_RETURN(uint64_t p2p, GetNum(o, "p2p_port", where, 65535));
    TIPD_ASSIGN_OR_RETURN(uint64_t rpc, GetNum(o, "rpc_port", where, 65535));
    TIPD_ASSIGN_OR_RETURN(uint64_t pid, GetNum(o, "pid", where, INT32_MAX));
    n.p2p_port = static_cast<uint16_t>(p2p);
    n.rpc_port = static_cast<uint16_t>(rpc);
    n.pid = static_cast<pid_t>(pid);
    m.nodes.push_back(std::move(n));
  }
  TIPD_ASSIGN_OR_RETURN(const pb::Value* channels_v,
                        Field(root, "channels", "", pb::Value::kListValue));
  for (int i = 0; i < channels_v->list_value().values_size(); ++i) {
    const pb::Value& v = channels_v->list_value().values(i);
    std::string where = "channels[" + std::to_string(i) + "].";
    if (v.kind_case() != pb::Value::kStructValue) {
      return Status::Corruption("devnet.json: " + where + " is not an object");
    }
    const pb::Struct& o = v.struct_value();
    DevnetChannel c;
    TIPD_ASSIGN_OR_RETURN(c.channel_id, GetStr(o, "channel_id", where));
    TIPD_ASSIGN_OR_RETURN(uint64_t opener, GetNum(o, "opener", where, m.nodes.size()));
    TIPD_ASSIGN_OR_RETURN(uint64_t peer, GetNum(o, "peer", where, m.nodes.size()));
    if (opener >= m.nodes.size() || peer >= m.nodes.size() || opener == peer) {
      return Status::Corruption("devnet.json: " + where + "opener/peer name no two nodes");
    }
    c.opener = static_cast<uint32_t>(opener);
    c.peer = static_cast<uint32_t>(peer);
    TIPD_ASSIGN_OR_RETURN(c.deposit, GetNum(o, "deposit", where, uint64_t{1} << 53));
    TIPD_ASSIGN_OR_RETURN(c.push_deposit, GetNum(o, "push_deposit", where, uint64_t{1} << 53));
    m.channels.push_back(c);
  }
  return m;
}

}  // namespace tipd::tools
