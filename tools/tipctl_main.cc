// tipctl: the command-line client of a tipd node's HTTP/JSON API
// (docs/tipctl.md, docs/api.md). One subcommand per endpoint.
//
// Where it connects, first match wins:
//   API URL: --rpc URL > $TIPD_RPC > <datadir>/rpc.url > http://127.0.0.1:8080
//   token:   --token T | --token-file F > $TIPD_TOKEN > <datadir>/admin.token
//   datadir: --datadir D > $TIPD_DATADIR > ~/.tipd
//
// Output: the response JSON as the node sent it, re-indented (stable key
// order), or with --human a table (lists) or a short line. Errors go to
// stderr as `tipctl: <message> (<code>, HTTP <status>)`.
//
// Exit codes: 0 success, 1 the API answered with an error, 2 usage or local
// configuration error, 3 the node could not be reached (transport/timeout).
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "api/http_client.h"
#include "crypto/crypto.h"
#include "node/backup.h"
#include "node/config.h"
#include "tipd/api.pb.h"

namespace {

using tipd::Result;
using tipd::Status;
using tipd::api::HttpClient;
using tipd::api::HttpResponse;

constexpr int kExitOk = 0;
constexpr int kExitApiError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr const char* kDefaultRpc = "http://127.0.0.1:8080";

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

// Re-indents compact JSON text (2 spaces, "key": value) without reordering
// or re-encoding anything; text that is not JSON comes out unchanged in
// substance. Empty objects/arrays stay `{}` / `[]`.
std::string PrettyJson(std::string_view in) {
  std::string out;
  int depth = 0;
  auto newline = [&] {
    out.push_back('\n');
    out.append(static_cast<size_t>(depth) * 2, ' ');
  };
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '"') {  // copy a whole string, escapes included
      size_t j = i + 1;
      while (j < in.size() && in[j] != '"') j += in[j] == '\\' ? 2 : 1;
      out.append(in.substr(i, std::min(j, in.size() - 1) - i + 1));
      i = j;
      continue;
    }
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '{' || c == '[') {
      // Look ahead for an empty container.
      size_t j = i + 1;
      while (j < in.size() && std::isspace(static_cast<unsigned char>(in[j]))) ++j;
      if (j < in.size() && (in[j] == '}' || in[j] == ']')) {
        out.push_back(c);
        out.push_back(in[j]);
        i = j;
        continue;
      }
      out.push_back(c);
      ++depth;
      newline();
    } else if (c == '}' || c == ']') {
      --depth;
      newline();
      out.push_back(c);
    } else if (c == ',') {
      out.push_back(c);
      newline();
    } else if (c == ':') {
      out.append(": ");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Parses a response body into `m`, ignoring fields this tipctl does not know.
template <typename M>
bool FromJson(const std::string& json, M* m) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  return google::protobuf::util::JsonStringToMessage(json, m, options).ok();
}

// A request body with the API's conventions (proto field names).
std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

// Percent-encodes a query value or path segment.
std::string UrlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Human output
// ---------------------------------------------------------------------------

std::string Short(const std::string& hex) { return hex.size() > 12 ? hex.substr(0, 12) : hex; }

std::string TimeText(uint64_t ms) {
  if (ms == 0) return "-";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Prints rows as left-aligned columns separated by two spaces.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << s << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  if (rows.empty()) std::cout << "(none)\n";
}

std::vector<std::string> ChannelRow(const tipd::v1::ChannelApi& c) {
  return {Short(c.channel_id()),
          Short(c.peer_node_id()),
          c.state(),
          std::to_string(c.balance_local()),
          std::to_string(c.balance_remote()),
          std::to_string(c.tips_sent()) + "/" + std::to_string(c.tips_received())};
}
const std::vector<std::string> kChannelHeader = {"CHANNEL", "PEER",   "STATE",
                                                 "LOCAL",   "REMOTE", "TIPS SENT/RECV"};

void PrintChannels(const std::vector<const tipd::v1::ChannelApi*>& channels) {
  std::vector<std::vector<std::string>> rows;
  for (const auto* c : channels) rows.push_back(ChannelRow(*c));
  PrintTable(kChannelHeader, rows);
}

std::string ChannelLine(const tipd::v1::ChannelApi& c) {
  return "channel " + c.channel_id() + " with " + Short(c.peer_node_id()) + " " + c.state() +
         ": local " + std::to_string(c.balance_local()) + ", remote " +
         std::to_string(c.balance_remote());
}

void PrintTips(const tipd::v1::ListTipsResponse& list) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : list.tips()) {
    std::string msg = t.tip().message();
    if (msg.size() > 40) msg = msg.substr(0, 37) + "...";
    rows.push_back({TimeText(t.tip().created_at_ms()), t.direction(), Short(t.channel_id()),
                    Short(t.peer_node_id()), std::to_string(t.tip().amount()), msg});
  }
  PrintTable({"TIME", "DIR", "CHANNEL", "PEER", "AMOUNT", "MESSAGE"}, rows);
}

std::string Fixed(double v, int decimals) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(decimals);
  o << v;
  return o.str();
}

// `tipctl stats --human`: the groups, then the fees with the effective fee.
void PrintStats(const tipd::v1::StatsResponse& st) {
  std::cout << "tips from " << TimeText(st.from_ms()) << " to " << TimeText(st.to_ms()) << ", by "
            << st.group_by() << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : st.groups()) {
    std::string key = g.key().empty() ? "(none)" : g.key();
    if (key.size() > 20) key = Short(key);
    rows.push_back({key, std::to_string(g.sent().count()), std::to_string(g.sent().sum()),
                    Fixed(g.sent().mean(), 1), std::to_string(g.sent().median()),
                    std::to_string(g.received().count()), std::to_string(g.received().sum()),
                    Fixed(g.received().mean(), 1), std::to_string(g.received().median()),
                    std::to_string(g.peak_tips_per_second()),
                    std::to_string(g.refunds().count()) + "/" + std::to_string(g.refunds().sum())});
  }
  PrintTable({"GROUP", "SENT", "SUM", "MEAN", "MEDIAN", "RECEIVED", "SUM", "MEAN", "MEDIAN",
              "PEAK/S", "REFUNDS"},
             rows);
  std::cout << "\nledger fees paid (whole history)\n";
  rows.clear();
  auto row = [&](const std::string& name, uint64_t total, uint64_t open, uint64_t deposit,
                 uint64_t close, uint64_t proofs, uint64_t tips, uint64_t amount, double per_tip,
                 double percent) {
    rows.push_back({name, std::to_string(total), std::to_string(open), std::to_string(deposit),
                    std::to_string(close), std::to_string(proofs), std::to_string(tips),
                    std::to_string(amount), Fixed(per_tip, 4), Fixed(percent, 4) + "%"});
  };
  for (const auto& c : st.channels()) {
    row(Short(c.channel_id()), c.total(), c.open(), c.deposit(), c.close(), c.proofs(),
        c.tips_carried(), c.amount_carried(), c.effective_fee_per_tip(), c.effective_fee_percent());
  }
  const auto& f = st.fees();
  row("TOTAL", f.total(), f.open(), f.deposit(), f.close(), f.proofs(), f.tips_carried(),
      f.amount_carried(), f.effective_fee_per_tip(), f.effective_fee_percent());
  PrintTable({"CHANNEL", "FEES", "OPEN", "DEPOSIT", "CLOSE", "PROOFS", "TIPS", "AMOUNT", "FEE/TIP",
              "FEE %"},
             rows);
}

void PrintAnomalies(const tipd::v1::ListAnomaliesResponse& list) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : list.anomalies()) {
    std::string state = !a.held() ? "flag" : a.released_at_ms() ? "released" : "HELD";
    std::string subject = a.subject().size() > 20 ? Short(a.subject()) : a.subject();
    rows.push_back({a.id(), TimeText(a.at_ms()), a.rule(), a.direction(),
                    a.subject_kind() + " " + subject, state, a.detail()});
  }
  PrintTable({"ID", "TIME", "RULE", "DIR", "SUBJECT", "STATE", "DETAIL"}, rows);
}

// ---------------------------------------------------------------------------
// Connection settings
// ---------------------------------------------------------------------------

struct Globals {
  std::string datadir;
  std::string rpc;
  std::string token;
  std::string token_file;
  std::string timeout = "60s";
  bool human = false;
  bool token_optional = false;  // the command's route needs no token (status)
};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

Result<std::string> ReadSmallFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return Status::NotFound(path.string() + " does not exist");
    }
    return Status::IOError("cannot read " + path.string());
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return Trim(ss.str());
}

std::filesystem::path DataDir(const Globals& g) {
  if (!g.datadir.empty()) return g.datadir;
  if (std::string env = Env("TIPD_DATADIR"); !env.empty()) return env;
  std::string home = Env("HOME");
  return std::filesystem::path(home.empty() ? "." : home) / ".tipd";
}

// The client for the resolved URL and token, or a usage/config error.
Result<std::unique_ptr<HttpClient>> MakeClient(const Globals& g) {
  const std::filesystem::path datadir = DataDir(g);
  std::string url_text = g.rpc;
  if (url_text.empty()) url_text = Env("TIPD_RPC");
  if (url_text.empty()) {
    auto file = ReadSmallFile(datadir / "rpc.url");
    url_text = file.ok() && !file->empty() ? *file : kDefaultRpc;
  }
  auto url = tipd::api::ParseHttpUrl(url_text);
  if (!url.ok()) return url.status();

  std::string token = g.token;
  if (token.empty() && !g.token_file.empty()) {
    auto file = ReadSmallFile(g.token_file);
    if (!file.ok()) return Status::InvalidArgument("--token-file: " + file.status().message());
    token = *file;
  }
  if (token.empty()) token = Env("TIPD_TOKEN");
  if (token.empty()) {
    auto file = ReadSmallFile(datadir / "admin.token");
    if (!file.ok() && g.token_optional) file = std::string();
    if (!file.ok()) {
      return Status::InvalidArgument(
          "no API token: pass --token or --token-file, set TIPD_TOKEN, or point --datadir (or "
          "TIPD_DATADIR) at the node's data dir, which holds admin.token (" +
          file.status().message() + ")");
    }
    token = *file;
  }
  auto timeout_ms = tipd::node::ParseDurationMs(g.timeout);
  if (!timeout_ms.ok())
    return Status::InvalidArgument("--timeout: " + timeout_ms.status().message());
  return std::make_unique<HttpClient>(*url, token, std::chrono::milliseconds(*timeout_ms));
}

// ---------------------------------------------------------------------------
// Running a command
// ---------------------------------------------------------------------------

int UsageError(const std::string& message) {
  std::cerr << "tipctl: " << message << "\n";
  return kExitUsage;
}

// Prints a failed call and returns its exit code.
int ReportFailure(const Status& transport) {
  std::cerr << "tipctl: " << transport.message() << "\n";
  return kExitUnreachable;
}
int ReportApiError(const HttpResponse& res) {
  std::cerr << "tipctl: " << HttpClient::ApiErrorStatus(res).message() << "\n";
  return kExitApiError;
}

bool Is2xx(int status) { return status >= 200 && status < 300; }

class Runner {
 public:
  explicit Runner(const Globals& g) : g_(g) {}

  // Sends one request. On success, prints the body (pretty JSON) unless
  // --human, in which case `human(body)` prints; returns the exit code.
  int Call(std::string_view method, const std::string& target, const std::string& body,
           const std::function<void(const std::string&)>& human) {
    HttpResponse res;
    if (int rc = Do(method, target, body, &res); rc != kExitOk) return rc;
    if (g_.human && human) {
      human(res.body);
    } else {
      std::cout << PrettyJson(res.body) << "\n";
    }
    return kExitOk;
  }

  // Sends one request; fills `*res` with a 2xx answer or reports the error.
  int Do(std::string_view method, const std::string& target, const std::string& body,
         HttpResponse* res) {
    if (int rc = Connect(); rc != kExitOk) return rc;
    auto r = client_->Request(method, target, body);
    if (!r.ok()) return ReportFailure(r.status());
    if (!Is2xx(r->status)) return ReportApiError(*r);
    *res = std::move(*r);
    return kExitOk;
  }

  int Connect() {
    if (client_) return kExitOk;
    auto c = MakeClient(g_);
    if (!c.ok()) return UsageError(c.status().message());
    client_ = std::move(*c);
    return kExitOk;
  }
  HttpClient& client() { return *client_; }
  bool human() const { return g_.human; }

 private:
  const Globals& g_;
  std::unique_ptr<HttpClient> client_;
};

// Pretty JSON when parsing into M fails (a newer node, a bug): never lose
// the answer.
template <typename M>
std::function<void(const std::string&)> Human(std::function<void(const M&)> print) {
  return [print](const std::string& body) {
    M m;
    if (!FromJson(body, &m)) {
      std::cout << PrettyJson(body) << "\n";
      return;
    }
    print(m);
  };
}

std::string RandomKey() {
  std::random_device rd;
  std::string out = "tipctl-";
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    unsigned v = rd();
    for (int j = 0; j < 4; ++j) {
      out.push_back(kHex[(v >> (j * 8)) & 15]);
    }
  }
  return out;
}

bool IsNodeIdHex(std::string_view s) {
  if (s.size() != 66) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Writes `bytes` to `path` (mode 0600) through `<path>.tmp`: written,
// fsynced, read back and handed to `check`, then renamed into place and the
// directory synced. On any failure the temporary file is removed and `path`
// is left as it was.
Status WriteFileChecked(const std::filesystem::path& path, std::string_view bytes,
                        const std::function<Status(const std::string& read_back)>& check) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  std::error_code ec;
  auto fail = [&](Status s) {
    std::filesystem::remove(tmp, ec);
    return s;
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("cannot create " + tmp.string());
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      ::close(fd);
      return fail(Status::IOError("cannot write " + tmp.string()));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail(Status::IOError("cannot sync " + tmp.string()));
  }
  ::close(fd);
  std::ifstream in(tmp, std::ios::binary);
  std::stringstream back;
  back << in.rdbuf();
  if (Status s = check(back.str()); !s.ok()) return fail(s);
  std::filesystem::rename(tmp, path, ec);
  if (ec) return fail(Status::IOError("cannot rename " + tmp.string() + ": " + ec.message()));
  const std::filesystem::path dir =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

// The node key in the data dir, if this process can read it.
std::optional<tipd::crypto::KeyPair> LocalNodeKey(const Globals& g) {
  auto secret = tipd::crypto::LoadKeyFile(DataDir(g) / "node.key");
  if (!secret.ok()) return std::nullopt;
  return tipd::crypto::KeyPair::FromSecret(*secret);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tipctl: control a tipd node through its HTTP API.\n"
      "Connects to --rpc, else $TIPD_RPC, else <datadir>/rpc.url, else " +
          std::string(kDefaultRpc) +
          ";\n"
          "authenticates with --token/--token-file, else $TIPD_TOKEN, else <datadir>/admin.token;\n"
          "datadir is --datadir, else $TIPD_DATADIR, else ~/.tipd. See docs/tipctl.md.\n"
          "Exit codes: 0 ok, 1 API error, 2 usage/configuration, 3 node unreachable.",
      "tipctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tipctl 0.1.0");
  app.fallthrough();  // global options may follow the subcommand

  Globals g;
  app.add_option("--datadir", g.datadir, "node data dir holding rpc.url and admin.token")
      ->type_name("DIR");
  app.add_option("--rpc", g.rpc, "API URL, e.g. http://127.0.0.1:8080")->type_name("URL");
  auto* token_opt = app.add_option("--token", g.token, "bearer token (tipd1_...)");
  auto* token_file_opt =
      app.add_option("--token-file", g.token_file, "file holding the bearer token")
          ->type_name("FILE");
  token_opt->excludes(token_file_opt);
  app.add_option("--timeout", g.timeout, "per-request timeout (e.g. 500ms, 30s, 2m)")
      ->capture_default_str();
  app.add_flag("--human", g.human, "tables and short lines instead of JSON");

  Runner run(g);
  std::function<int()> action;

  // ---- node ----
  app.add_subcommand("getinfo",
                     "node id, chain, ledger height, peer and channel counts (GET /v1/info)")
      ->callback([&] {
        action = [&] {
          return run.Call("GET", "/v1/info", "",
                          Human<tipd::v1::InfoResponse>([](const tipd::v1::InfoResponse& i) {
                            std::cout << "node " << i.node_id() << " on " << i.chain_id()
                                      << " at height " << i.ledger_height() << ", "
                                      << i.peers_count() << " peer(s), " << i.channels_count()
                                      << " channel(s), " << i.version() << "\n";
                          }));
        };
      });
  app.add_subcommand("balance", "ledger and channel balances (GET /v1/balance)")->callback([&] {
    action = [&] {
      return run.Call("GET", "/v1/balance", "",
                      Human<tipd::v1::BalanceResponse>([](const tipd::v1::BalanceResponse& b) {
                        std::cout << "onchain " << b.onchain() << ", channels local "
                                  << b.channels_local() << " remote " << b.channels_remote()
                                  << ", pending close " << b.pending_close() << "\n";
                      }));
    };
  });

  // ---- peers ----
  app.add_subcommand("peers", "connected peers (GET /v1/peers)")->callback([&] {
    action = [&] {
      return run.Call(
          "GET", "/v1/peers", "",
          Human<tipd::v1::ListPeersResponse>([](const tipd::v1::ListPeersResponse& l) {
            std::vector<std::vector<std::string>> rows;
            for (const auto& p : l.peers()) {
              rows.push_back({Short(p.node_id()), p.address(), p.inbound() ? "in" : "out",
                              p.persistent() ? "yes" : "no", TimeText(p.connected_at_ms())});
            }
            PrintTable({"PEER", "ADDRESS", "DIR", "PERSISTENT", "CONNECTED"}, rows);
          }));
    };
  });
  std::string connect_target;
  bool connect_persistent = false;
  auto* connect_cmd = app.add_subcommand(
      "connect", "connect to a peer (POST /v1/peers); asynchronous: check `tipctl peers`");
  connect_cmd->add_option("peer", connect_target, "NODEID@HOST:PORT (node id: 66 hex)")->required();
  connect_cmd->add_flag("--persistent", connect_persistent, "redial after a disconnect");
  connect_cmd->callback([&] {
    action = [&] {
      size_t at = connect_target.find('@');
      if (at == std::string::npos) {
        return UsageError("connect expects NODEID@HOST:PORT, got '" + connect_target + "'");
      }
      std::string id = connect_target.substr(0, at), address = connect_target.substr(at + 1);
      if (!IsNodeIdHex(id) && IsNodeIdHex(address)) std::swap(id, address);  // HOST:PORT@NODEID
      if (!IsNodeIdHex(id)) {
        return UsageError("connect: the node id must be 66 hex characters, got '" + id + "'");
      }
      tipd::v1::ConnectPeerRequest req;
      req.set_node_id(id);
      req.set_address(address);
      req.set_persistent(connect_persistent);
      return run.Call(
          "POST", "/v1/peers", ToJson(req),
          Human<tipd::v1::ConnectPeerResponse>([&](const tipd::v1::ConnectPeerResponse& r) {
            std::cout << "connecting to " << r.peer().node_id() << "@" << r.peer().address()
                      << (r.peer().persistent() ? " (persistent)" : "") << "\n";
          }));
    };
  });

  // ---- channels ----
  std::string open_peer;
  uint64_t open_deposit = 0, open_push = 0, open_settle = 0;
  auto* open_cmd =
      app.add_subcommand("open", "open a channel with a connected peer (POST /v1/channels)");
  open_cmd->add_option("peer", open_peer, "the peer's node id (66 hex)")->required();
  open_cmd->add_option("--deposit", open_deposit, "our deposit, smallest unit")->required();
  open_cmd->add_option("--push", open_push, "the peer's deposit, if it agrees to fund");
  open_cmd->add_option("--settle-timeout", open_settle, "blocks (default: the node's)");
  open_cmd->callback([&] {
    action = [&] {
      tipd::v1::OpenChannelRequest req;
      req.set_peer_node_id(open_peer);
      req.set_deposit(open_deposit);
      req.set_push_deposit(open_push);
      req.set_settle_timeout(open_settle);
      return run.Call(
          "POST", "/v1/channels", ToJson(req),
          Human<tipd::v1::OpenChannelResponse>([](const tipd::v1::OpenChannelResponse& r) {
            std::cout << ChannelLine(r.channel()) << "\n";
          }));
    };
  });
  app.add_subcommand("channels", "every channel (GET /v1/channels)")->callback([&] {
    action = [&] {
      return run.Call(
          "GET", "/v1/channels", "",
          Human<tipd::v1::ListChannelsResponse>([](const tipd::v1::ListChannelsResponse& l) {
            std::vector<const tipd::v1::ChannelApi*> list;
            for (const auto& c : l.channels()) list.push_back(&c);
            PrintChannels(list);
          }));
    };
  });
  std::string channel_id;
  auto* channel_cmd = app.add_subcommand("channel", "one channel (GET /v1/channels/{id})");
  channel_cmd->add_option("id", channel_id, "channel id (hex)")->required();
  channel_cmd->callback([&] {
    action = [&] {
      return run.Call(
          "GET", "/v1/channels/" + UrlEncode(channel_id), "",
          Human<tipd::v1::GetChannelResponse>(
              [](const tipd::v1::GetChannelResponse& r) { PrintChannels({&r.channel()}); }));
    };
  });
  uint64_t deposit_amount = 0;
  auto* deposit_cmd =
      app.add_subcommand("deposit", "add funds to a channel (POST /v1/channels/{id}/deposit)");
  deposit_cmd->add_option("id", channel_id, "channel id (hex)")->required();
  deposit_cmd->add_option("amount", deposit_amount, "smallest unit")->required();
  deposit_cmd->callback([&] {
    action = [&] {
      tipd::v1::DepositRequest req;
      req.set_amount(deposit_amount);
      return run.Call("POST", "/v1/channels/" + UrlEncode(channel_id) + "/deposit", ToJson(req),
                      Human<tipd::v1::DepositResponse>([](const tipd::v1::DepositResponse& r) {
                        std::cout << ChannelLine(r.channel()) << "; deposit tx " << r.tx_id()
                                  << "\n";
                      }));
    };
  });
  bool close_force = false;
  auto* close_cmd = app.add_subcommand(
      "close", "close a channel, cooperatively unless --force (POST /v1/channels/{id}/close)");
  close_cmd->add_option("id", channel_id, "channel id (hex)")->required();
  close_cmd->add_flag("--force", close_force, "unilateral close when the peer does not cooperate");
  close_cmd->callback([&] {
    action = [&] {
      tipd::v1::CloseChannelRequest req;
      req.set_force(close_force);
      return run.Call(
          "POST", "/v1/channels/" + UrlEncode(channel_id) + "/close", ToJson(req),
          Human<tipd::v1::CloseChannelResponse>([](const tipd::v1::CloseChannelResponse& r) {
            std::cout << ChannelLine(r.channel()) << "; close tx " << r.tx_id() << "\n";
          }));
    };
  });

  // ---- tips ----
  std::string tip_channel, tip_peer, tip_message, tip_key;
  uint64_t tip_amount = 0;
  std::vector<std::string> tip_meta;
  auto* tip_cmd = app.add_subcommand(
      "tip", "send a tip with a message (POST /v1/tips); answers once the peer acked it");
  auto* tip_channel_opt = tip_cmd->add_option("--channel", tip_channel, "channel id (hex)");
  auto* tip_peer_opt =
      tip_cmd->add_option("--peer", tip_peer, "peer node id (hex): its open channel");
  tip_channel_opt->excludes(tip_peer_opt);
  tip_cmd->add_option("amount", tip_amount, "smallest unit, >= 1")->required();
  tip_cmd->add_option("message", tip_message, "UTF-8 text, <= 1000 bytes");
  tip_cmd->add_option("--meta", tip_meta, "metadata KEY=VALUE (repeatable, <= 8)")
      ->type_name("K=V");
  tip_cmd->add_option("--idempotency-key", tip_key,
                      "retry key; a repeat returns the first result and never pays twice "
                      "(default: random, printed with --human)");
  tip_cmd->callback([&] {
    action = [&] {
      if (tip_channel.empty() == tip_peer.empty()) {
        return UsageError("tip needs exactly one of --channel ID and --peer NODEID");
      }
      tipd::v1::TipRequest req;
      req.set_channel_id(tip_channel);
      req.set_peer_node_id(tip_peer);
      req.set_amount(tip_amount);
      req.set_message(tip_message);
      for (const std::string& kv : tip_meta) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
          return UsageError("--meta expects KEY=VALUE, got '" + kv + "'");
        }
        (*req.mutable_metadata())[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      if (tip_key.empty()) {
        tip_key = RandomKey();
        if (run.human()) {
          std::cerr << "idempotency key " << tip_key << " (to retry safely: --idempotency-key "
                    << tip_key << ")\n";
        }
      }
      req.set_idempotency_key(tip_key);
      return run.Call("POST", "/v1/tips", ToJson(req),
                      Human<tipd::v1::TipResponse>([](const tipd::v1::TipResponse& r) {
                        std::cout << "tipped " << r.tip().tip().amount() << " on channel "
                                  << Short(r.tip().channel_id()) << " (nonce " << r.tip().nonce()
                                  << (r.has_receipt() ? ", acked" : ", ack pending")
                                  << (r.replayed() ? ", replayed" : "") << ")\n";
                      }));
    };
  });
  std::string tips_direction, tips_channel, tips_cursor;
  uint32_t tips_limit = 0;
  bool tips_all = false;
  auto* tips_cmd =
      app.add_subcommand("tips", "tip history, oldest first, paged by cursor (GET /v1/tips)");
  tips_cmd->add_option("--direction", tips_direction, "sent or received (default: both)")
      ->check(CLI::IsMember({"sent", "received"}));
  tips_cmd->add_option("--channel", tips_channel, "only this channel (hex)");
  tips_cmd->add_option("--limit", tips_limit, "page size (default: the node's)");
  tips_cmd->add_option("--cursor", tips_cursor, "next_cursor of the previous page");
  tips_cmd->add_flag("--all", tips_all, "follow next_cursor to the last page; prints one list");
  tips_cmd->callback([&] {
    action = [&] {
      std::string cursor = tips_cursor;
      tipd::v1::ListTipsResponse all;
      for (int page = 0;; ++page) {
        std::string query;
        auto param = [&](const char* name, const std::string& value) {
          if (value.empty()) return;
          query += (query.empty() ? "?" : "&") + std::string(name) + "=" + UrlEncode(value);
        };
        param("direction", tips_direction);
        param("channel_id", tips_channel);
        param("limit", tips_limit == 0 ? "" : std::to_string(tips_limit));
        param("cursor", cursor);
        if (!tips_all) {
          return run.Call(
              "GET", "/v1/tips" + query, "",
              Human<tipd::v1::ListTipsResponse>([](const tipd::v1::ListTipsResponse& l) {
                PrintTips(l);
                if (!l.next_cursor().empty()) {
                  std::cout << "more: --cursor " << l.next_cursor() << "\n";
                }
              }));
        }
        HttpResponse res;
        if (int rc = run.Do("GET", "/v1/tips" + query, "", &res); rc != kExitOk) return rc;
        tipd::v1::ListTipsResponse list;
        if (!FromJson(res.body, &list)) {
          std::cerr << "tipctl: unexpected answer to GET /v1/tips: " << res.body << "\n";
          return kExitApiError;
        }
        for (auto& t : *list.mutable_tips()) *all.add_tips() = std::move(t);
        if (list.next_cursor().empty() || list.next_cursor() == cursor) break;
        cursor = list.next_cursor();
      }
      if (run.human()) {
        PrintTips(all);
      } else {
        std::cout << PrettyJson(ToJson(all)) << "\n";
      }
      return kExitOk;
    };
  });

  // ---- stats and anomalies ----
  std::string stats_group = "none";
  uint64_t stats_from = 0, stats_to = 0;
  auto* stats_cmd = app.add_subcommand(
      "stats", "tip counts, amounts and the ledger fees per tip (GET /v1/stats)");
  stats_cmd->add_option("--group-by", stats_group, "none, peer, channel, app_name or day")
      ->check(CLI::IsMember({"none", "peer", "channel", "app_name", "day"}))
      ->capture_default_str();
  stats_cmd->add_option("--from-ms", stats_from, "range start, Unix ms (default: 30 days ago)");
  stats_cmd->add_option("--to-ms", stats_to, "range end, Unix ms (default: now)");
  stats_cmd->callback([&] {
    action = [&] {
      std::string query = "?group_by=" + stats_group;
      if (stats_from) query += "&from_ms=" + std::to_string(stats_from);
      if (stats_to) query += "&to_ms=" + std::to_string(stats_to);
      return run.Call("GET", "/v1/stats" + query, "", Human<tipd::v1::StatsResponse>(PrintStats));
    };
  });
  app.add_subcommand("anomalies", "anomalies the rules flagged, newest first (GET /v1/anomalies)")
      ->callback([&] {
        action = [&] {
          return run.Call("GET", "/v1/anomalies", "",
                          Human<tipd::v1::ListAnomaliesResponse>(PrintAnomalies));
        };
      });
  std::string anomaly_id;
  auto* release_cmd = app.add_subcommand(
      "release-anomaly", "release the token an anomaly holds (POST /v1/anomalies/{id}/release)");
  release_cmd->add_option("id", anomaly_id, "anomaly id")->required();
  release_cmd->callback([&] {
    action = [&] {
      return run.Call(
          "POST", "/v1/anomalies/" + UrlEncode(anomaly_id) + "/release", "",
          Human<tipd::v1::ReleaseAnomalyResponse>([](const tipd::v1::ReleaseAnomalyResponse& r) {
            std::cout << "anomaly " << r.anomaly().id() << " released: token "
                      << r.anomaly().token_id() << " may send again\n";
          }));
    };
  });

  // ---- ledger ----
  std::string transfer_to, transfer_key;
  uint64_t transfer_amount = 0;
  auto* transfer_cmd = app.add_subcommand(
      "transfer", "pay a ledger account from the node's account (POST /v1/ledger/transfer)");
  transfer_cmd->add_option("to", transfer_to, "account: 32-byte x-only key (64 hex)")->required();
  transfer_cmd->add_option("amount", transfer_amount, "smallest unit")->required();
  transfer_cmd->add_option("--idempotency-key", transfer_key,
                           "retry key: a repeat returns the first answer and never pays twice");
  transfer_cmd->callback([&] {
    action = [&] {
      tipd::v1::TransferRequest req;
      req.set_to(transfer_to);
      req.set_amount(transfer_amount);
      req.set_idempotency_key(transfer_key);
      return run.Call("POST", "/v1/ledger/transfer", ToJson(req),
                      Human<tipd::v1::TransferResponse>([](const tipd::v1::TransferResponse& r) {
                        std::cout << "transfer " << r.tx_id() << " nonce " << r.nonce() << " fee "
                                  << r.fee()
                                  << (r.height() == 0 ? std::string(" pending")
                                                      : " in block " + std::to_string(r.height()))
                                  << "\n";
                      }));
    };
  });
  uint64_t block_height = 0;
  auto* block_cmd = app.add_subcommand("block", "a ledger block (GET /v1/ledger/blocks/{height})");
  block_cmd->add_option("height", block_height, "block height")->required();
  block_cmd->callback([&] {
    action = [&] {
      return run.Call("GET", "/v1/ledger/blocks/" + std::to_string(block_height), "",
                      Human<tipd::v1::BlockResponse>([](const tipd::v1::BlockResponse& b) {
                        std::cout << "block " << b.block().header().height() << " "
                                  << b.block_hash() << " at "
                                  << TimeText(b.block().header().time_ms()) << ", "
                                  << b.block().transactions_size() << " transaction(s)\n";
                      }));
    };
  });

  // ---- events ----
  std::string event_types, last_event_id;
  auto* events_cmd = app.add_subcommand(
      "events", "follow live events (GET /v1/events), one JSON per line until interrupted");
  events_cmd->add_option("--types", event_types,
                         "comma-separated: tip_received,tip_sent,ack,channel,peer (default: all)");
  events_cmd->add_option("--last-event-id", last_event_id,
                         "resume after this event id (replays what followed)");
  events_cmd->callback([&] {
    action = [&] {
      if (int rc = run.Connect(); rc != kExitOk) return rc;
      std::string target = "/v1/events";
      if (!event_types.empty()) target += "?types=" + UrlEncode(event_types);
      std::map<std::string, std::string> headers;
      if (!last_event_id.empty()) headers["Last-Event-ID"] = last_event_id;
      HttpResponse error;
      Status s = run.client().Stream(
          target, headers,
          [&](const std::string& id, const std::string& type, const std::string& data) {
            if (!run.human()) {
              std::cout << data << std::endl;  // one line per event, flushed
              return true;
            }
            tipd::v1::Event e;
            std::string what;
            if (FromJson(data, &e)) {
              if (e.has_tip()) {
                what = e.tip().direction() + " " + std::to_string(e.tip().tip().amount()) + " on " +
                       Short(e.tip().channel_id()) + " " + e.tip().tip().message();
              } else if (e.has_ack()) {
                what = "channel " + Short(e.ack().channel_id()) + " nonce " +
                       std::to_string(e.ack().nonce()) + " in " +
                       std::to_string(e.ack().latency_ms()) + "ms";
              } else if (e.has_channel()) {
                what = Short(e.channel().channel().channel_id()) + " " +
                       e.channel().previous_state() + " -> " + e.channel().channel().state();
              } else if (e.has_peer()) {
                what = Short(e.peer().peer().node_id()) +
                       (e.peer().connected() ? " connected" : " disconnected");
              }
            } else {
              what = data;
            }
            std::cout << TimeText(e.time_ms()) << " #" << id << " " << type << " " << what
                      << std::endl;
            return true;
          },
          &error);
      if (s.ok()) return kExitOk;
      if (error.status != 0) return ReportApiError(error);
      return ReportFailure(s);
    };
  });

  // ---- refunds and streams ----
  std::string refund_channel, refund_message, refund_key;
  uint64_t refund_index = 0, refund_amount = 0;
  auto* refund_cmd = app.add_subcommand(
      "refund",
      "send a received tip back, wholly or in part (POST /v1/tips/{channel}/{index}/refund)");
  refund_cmd->add_option("channel", refund_channel, "channel id (hex)")->required();
  refund_cmd->add_option("index", refund_index, "index of the received tip")->required();
  refund_cmd->add_option("--amount", refund_amount, "default: what is left of the tip");
  refund_cmd->add_option("--message", refund_message, "UTF-8 text sent with the refund");
  refund_cmd->add_option("--idempotency-key", refund_key,
                         "retry key; a repeat returns the first result (default: random)");
  refund_cmd->callback([&] {
    action = [&] {
      tipd::v1::RefundRequest req;
      req.set_amount(refund_amount);
      req.set_message(refund_message);
      if (refund_key.empty()) {
        refund_key = RandomKey();
        if (run.human()) {
          std::cerr << "idempotency key " << refund_key << " (to retry safely: --idempotency-key "
                    << refund_key << ")\n";
        }
      }
      req.set_idempotency_key(refund_key);
      return run.Call(
          "POST",
          "/v1/tips/" + UrlEncode(refund_channel) + "/" + std::to_string(refund_index) + "/refund",
          ToJson(req), Human<tipd::v1::TipResponse>([](const tipd::v1::TipResponse& r) {
            std::cout << "refunded " << r.tip().tip().amount() << " of tip " << r.tip().refund_of()
                      << " as tip " << r.tip().tip().index()
                      << (r.has_receipt() ? " (acked" : " (ack pending")
                      << (r.replayed() ? ", replayed)" : ")") << "\n";
          }));
    };
  });
  auto stream_line = [](const tipd::v1::Stream& s) {
    std::cout << s.id() << " " << s.state() << ": " << s.amount() << " every "
              << s.interval_ms() / 1000.0 << " s to "
              << (s.channel_id().empty() ? "peer " + Short(s.peer_node_id())
                                         : "channel " + Short(s.channel_id()))
              << ", paid " << s.paid_total() << " in " << s.tips_paid() << " tip(s), skipped "
              << s.intervals_skipped()
              << (s.stopped_reason().empty() ? "" : " (" + s.stopped_reason() + ")") << "\n";
  };
  auto* stream_cmd = app.add_subcommand("stream", "metered streams: a tip every interval");
  stream_cmd->require_subcommand(1);
  std::string stream_channel, stream_peer, stream_message, stream_interval, stream_missed = "skip";
  std::string stream_id;
  uint64_t stream_amount = 0, stream_max = 0, stream_end = 0;
  std::vector<std::string> stream_meta;
  auto* stream_create = stream_cmd->add_subcommand("create", "start a stream (POST /v1/streams)");
  auto* stream_channel_opt =
      stream_create->add_option("--channel", stream_channel, "channel id (hex)");
  stream_channel_opt->excludes(
      stream_create->add_option("--peer", stream_peer, "peer node id (hex): its open channel"));
  stream_create->add_option("amount", stream_amount, "per interval, >= 1")->required();
  stream_create->add_option("--every", stream_interval, "interval, e.g. 60s, 1m (>= 1s)")
      ->required();
  stream_create->add_option("--message", stream_message, "sent with every tip");
  stream_create->add_option("--meta", stream_meta, "metadata KEY=VALUE (repeatable, <= 6)")
      ->type_name("K=V");
  stream_create->add_option("--max-total", stream_max, "stop once this much is paid");
  stream_create->add_option("--end-at", stream_end, "stop at this time, Unix milliseconds")
      ->type_name("MS");
  stream_create
      ->add_option("--missed", stream_missed,
                   "intervals missed while down: skip (record them) or pay (at once)")
      ->check(CLI::IsMember({"skip", "pay"}));
  stream_create->callback([&] {
    action = [&] {
      if (stream_channel.empty() == stream_peer.empty()) {
        return UsageError("stream create needs exactly one of --channel ID and --peer NODEID");
      }
      auto ms = tipd::node::ParseDurationMs(stream_interval);
      if (!ms.ok()) return UsageError("--every: " + ms.status().message());
      tipd::v1::CreateStreamRequest req;
      req.set_channel_id(stream_channel);
      req.set_peer_node_id(stream_peer);
      req.set_amount(stream_amount);
      req.set_interval_ms(*ms);
      req.set_message(stream_message);
      req.set_max_total(stream_max);
      req.set_end_at_ms(stream_end);
      req.set_missed(stream_missed);
      for (const std::string& kv : stream_meta) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
          return UsageError("--meta expects KEY=VALUE, got '" + kv + "'");
        }
        (*req.mutable_metadata())[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      return run.Call("POST", "/v1/streams", ToJson(req), Human<tipd::v1::Stream>(stream_line));
    };
  });
  stream_cmd->add_subcommand("list", "every stream of the token (GET /v1/streams)")->callback([&] {
    action = [&] {
      return run.Call(
          "GET", "/v1/streams", "",
          Human<tipd::v1::ListStreamsResponse>([&](const tipd::v1::ListStreamsResponse& r) {
            if (r.streams().empty()) std::cout << "no streams\n";
            for (const auto& s : r.streams()) stream_line(s);
          }));
    };
  });
  for (const char* verb : {"get", "pause", "resume", "stop"}) {
    const std::string v = verb;
    auto* sub = stream_cmd->add_subcommand(
        v, v == "get" ? "one stream (GET /v1/streams/{id})"
                      : v + " a stream (POST /v1/streams/{id}/" + v + ")");
    sub->add_option("id", stream_id, "stream id (hex)")->required();
    sub->callback([&, v] {
      action = [&, v] {
        const std::string path = "/v1/streams/" + UrlEncode(stream_id);
        if (v == "get") return run.Call("GET", path, "", Human<tipd::v1::Stream>(stream_line));
        return run.Call("POST", path + "/" + v, "{}", Human<tipd::v1::Stream>(stream_line));
      };
    });
  }

  // ---- tokens ----
  auto* token_cmd = app.add_subcommand("token", "API tokens");
  token_cmd->require_subcommand(1);
  std::vector<std::string> token_scopes;
  std::string token_ttl;
  uint64_t token_expires = 0, token_cap = 0;
  auto* token_create = token_cmd->add_subcommand("create", "issue a token (POST /v1/tokens)");
  token_create->add_option("--scope", token_scopes, "read, receive, tip, admin (comma-separated)")
      ->delimiter(',')
      ->required()
      ->check(CLI::IsMember({"read", "receive", "tip", "admin"}));
  auto* ttl_opt = token_create->add_option("--ttl", token_ttl,
                                           "lifetime, e.g. 30m, 24h (default: never expires)");
  auto* exp_opt =
      token_create->add_option("--expires-at", token_expires, "expiry, Unix milliseconds")
          ->type_name("MS");
  ttl_opt->excludes(exp_opt);
  token_create->add_option("--daily-cap", token_cap, "spending cap per UTC day (default: none)");
  std::string token_label;
  uint64_t token_max_per_tip = 0;
  uint32_t token_rate = 0;
  std::vector<std::string> token_channels, token_peers;
  token_create->add_option("--label", token_label, "a name for people (shown by token list)");
  token_create->add_option("--max-per-tip", token_max_per_tip,
                           "largest single tip (default: no limit)");
  token_create->add_option("--rate", token_rate, "tips per minute (default: no limit)");
  token_create->add_option("--channel", token_channels, "channel ids tips may use (repeatable)")
      ->delimiter(',');
  token_create->add_option("--peer", token_peers, "peer node ids tips may go to (repeatable)")
      ->delimiter(',');
  token_create->callback([&] {
    action = [&] {
      tipd::v1::CreateTokenRequest req;
      for (const auto& s : token_scopes) req.add_scopes(s);
      if (!token_ttl.empty()) {
        auto ms = tipd::node::ParseDurationMs(token_ttl);
        if (!ms.ok()) return UsageError("--ttl: " + ms.status().message());
        req.set_ttl_ms(*ms);
      }
      req.set_expires_at_ms(token_expires);
      req.set_daily_spend_cap(token_cap);
      req.set_label(token_label);
      req.set_max_per_tip(token_max_per_tip);
      req.set_rate_per_minute(token_rate);
      for (const auto& c : token_channels) req.add_channels(c);
      for (const auto& p : token_peers) req.add_peers(p);
      return run.Call(
          "POST", "/v1/tokens", ToJson(req),
          Human<tipd::v1::CreateTokenResponse>([](const tipd::v1::CreateTokenResponse& r) {
            std::string scopes;
            for (const auto& s : r.scopes()) scopes += (scopes.empty() ? "" : ",") + s;
            std::cout << r.token() << "\n"
                      << "scopes " << scopes << ", expires "
                      << (r.expires_at_ms() == 0 ? "never" : TimeText(r.expires_at_ms()))
                      << ", daily cap "
                      << (r.daily_spend_cap() == 0 ? "none" : std::to_string(r.daily_spend_cap()))
                      << "\n";
          }));
    };
  });

  auto* token_list = token_cmd->add_subcommand(
      "list", "every token's record: label, scopes, limits, last use (GET /v1/tokens)");
  token_list->callback([&] {
    action = [&] {
      return run.Call(
          "GET", "/v1/tokens", "",
          Human<tipd::v1::ListTokensResponse>([](const tipd::v1::ListTokensResponse& l) {
            std::vector<std::vector<std::string>> rows;
            for (const auto& t : l.tokens()) {
              std::string scopes;
              for (const auto& sc : t.scopes()) scopes += (scopes.empty() ? "" : ",") + sc;
              std::string limits;
              auto add = [&](const std::string& part) {
                limits += (limits.empty() ? "" : " ") + part;
              };
              if (t.daily_spend_cap() != 0) add("cap=" + std::to_string(t.daily_spend_cap()));
              if (t.max_per_tip() != 0) add("max=" + std::to_string(t.max_per_tip()));
              if (t.rate_per_minute() != 0) {
                add("rate=" + std::to_string(t.rate_per_minute()) + "/min");
              }
              if (t.channels_size() != 0) add("channels=" + std::to_string(t.channels_size()));
              if (t.peers_size() != 0) add("peers=" + std::to_string(t.peers_size()));
              rows.push_back({t.token_id(), t.label().empty() ? "-" : t.label(), scopes,
                              limits.empty() ? "-" : limits,
                              t.expires_at_ms() == 0 ? "never" : TimeText(t.expires_at_ms()),
                              t.last_used_ms() == 0 ? "never" : TimeText(t.last_used_ms()),
                              t.revoked_at_ms() != 0 ? "revoked " + TimeText(t.revoked_at_ms())
                              : t.legacy()           ? "legacy"
                                                     : "active"});
            }
            PrintTable({"TOKEN ID", "LABEL", "SCOPES", "LIMITS", "EXPIRES", "LAST USED", "STATE"},
                       rows);
          }));
    };
  });
  std::string revoke_id;
  bool revoke_force = false;
  auto* token_revoke = token_cmd->add_subcommand(
      "revoke", "revoke one token at once, durably (DELETE /v1/tokens/{id})");
  token_revoke->add_option("token_id", revoke_id, "the token's id (32 hex, from token list)")
      ->required();
  token_revoke->add_flag("--force", revoke_force,
                         "record an id the node has never seen as revoked (a token minted "
                         "before token records existed and not used since)");
  token_revoke->callback([&] {
    action = [&] {
      return run.Call(
          "DELETE", "/v1/tokens/" + UrlEncode(revoke_id) + (revoke_force ? "?force=true" : ""), "",
          Human<tipd::v1::RevokeTokenResponse>([](const tipd::v1::RevokeTokenResponse& r) {
            std::cout << "revoked " << r.token().token_id() << " at "
                      << TimeText(r.token().revoked_at_ms()) << "\n";
          }));
    };
  });

  // ---- status ----
  app.add_subcommand("status",
                     "is the node ready: storage writable, ledger followed, API serving "
                     "(GET /readyz, no token needed); exit 0 ready, 1 not ready")
      ->callback([&] {
        action = [&] {
          g.token_optional = true;
          if (int rc = run.Connect(); rc != kExitOk) return rc;
          auto r = run.client().Request("GET", "/readyz", "");
          if (!r.ok()) return ReportFailure(r.status());
          tipd::v1::ReadinessResponse ready;
          const bool parsed = FromJson(r->body, &ready);
          if (!run.human() || !parsed) {
            std::cout << PrettyJson(r->body) << "\n";
          } else {
            std::cout << (ready.ready() ? "ready" : "NOT READY") << "\n";
            for (const auto& c : ready.checks()) {
              std::cout << "  " << c.name() << ": " << (c.ok() ? "ok" : "FAILING") << " ("
                        << c.detail() << ")\n";
            }
          }
          if (r->status == 200 && parsed && ready.ready()) return kExitOk;
          if (r->status != 200 && r->status != 503) return ReportApiError(*r);
          return kExitApiError;
        };
      });

  // ---- metrics ----
  app.add_subcommand("metrics", "Prometheus metrics, raw text (GET /metrics)")->callback([&] {
    action = [&] {
      HttpResponse res;
      if (int rc = run.Do("GET", "/metrics", "", &res); rc != kExitOk) return rc;
      std::cout << res.body;
      return kExitOk;
    };
  });

  // ---- backups ----
  std::string backup_file;
  auto* backup_cmd = app.add_subcommand(
      "backup", "an encrypted online backup of the node's database (POST /v1/backup)");
  backup_cmd->add_option("file", backup_file, "where to write it (mode 0600)")->required();
  backup_cmd->callback([&] {
    action = [&] {
      if (int rc = run.Connect(); rc != kExitOk) return rc;
      run.client().set_max_body_bytes(tipd::node::kMaxBackupPlaintext +
                                      tipd::node::kBackupHeaderSize + 64);
      HttpResponse res;
      if (int rc = run.Do("POST", "/v1/backup", "{}", &res); rc != kExitOk) return rc;
      const std::string announced = res.headers["x-tipd-backup-sha256"];
      const std::string records = res.headers["x-tipd-backup-records"];
      const std::optional<tipd::crypto::KeyPair> key = LocalNodeKey(g);
      std::string verified_with;
      Status s = WriteFileChecked(backup_file, res.body, [&](const std::string& back) -> Status {
        TIPD_ASSIGN_OR_RETURN(tipd::node::BackupInfo info, tipd::node::ReadBackupHeader(back));
        if (tipd::HexEncode(info.file_sha256) != announced ||
            std::to_string(info.records) != records) {
          return Status::Corruption(
              "the file written does not match what the node sent (sha256 or record count)");
        }
        if (!key) {
          verified_with =
              "sha256 and header (node.key not readable here: check it with `tipd "
              "restore --verify-only`)";
          return Status::Ok();
        }
        TIPD_ASSIGN_OR_RETURN(tipd::node::OpenedBackup opened, tipd::node::OpenBackup(back, *key));
        verified_with = "decrypted with node.key: digest and " +
                        std::to_string(opened.records.size()) + " records checked";
        return Status::Ok();
      });
      if (!s.ok()) {
        std::cerr << "tipctl: backup not written: " << s.message() << "\n";
        return kExitApiError;
      }
      std::cout << "backup of node " << res.headers["x-tipd-backup-node"] << " written to "
                << backup_file << ": " << res.body.size() << " bytes, " << records << " records, "
                << res.headers["x-tipd-backup-channels"] << " channel(s), sha256 " << announced
                << "\nverified: " << verified_with << "\n";
      return kExitOk;
    };
  });
  std::string recovery_file;
  auto* recovery_cmd = app.add_subcommand(
      "export-recovery",
      "a small static export (key, channels, newest proofs, peers) for a lost database "
      "(GET /v1/recovery)");
  recovery_cmd->add_option("file", recovery_file, "where to write it (mode 0600)")->required();
  recovery_cmd->callback([&] {
    action = [&] {
      HttpResponse res;
      if (int rc = run.Do("GET", "/v1/recovery", "", &res); rc != kExitOk) return rc;
      tipd::v1::RecoveryExport ex;
      if (!FromJson(res.body, &ex)) {
        std::cerr << "tipctl: the node's recovery export is not valid JSON\n";
        return kExitApiError;
      }
      const std::optional<tipd::crypto::KeyPair> key = LocalNodeKey(g);
      const bool with_key = key && key->public_key().Hex() == ex.node_id();
      if (with_key) ex.set_node_secret_key(tipd::HexEncode(key->secret().bytes()));
      const std::string json = ToJson(ex);
      Status s = WriteFileChecked(recovery_file, json, [&](const std::string& back) -> Status {
        return back == json
                   ? Status::Ok()
                   : Status::Corruption("the file read back differs from what was written");
      });
      if (!s.ok()) {
        std::cerr << "tipctl: export not written: " << s.message() << "\n";
        return kExitApiError;
      }
      std::cout << "recovery export of node " << ex.node_id() << " written to " << recovery_file
                << ": " << ex.channels_size() << " channel(s), " << ex.peers_size() << " peer(s)\n";
      if (with_key) {
        std::cout << "it holds the node's secret key: keep it as secret as node.key\n";
      } else {
        std::cerr << "tipctl: node.key is not readable here, so the export holds no key: keep "
                     "node.key with it\n";
      }
      return kExitOk;
    };
  });

  // An unknown command: CLI11 would only say "A subcommand is required".
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--datadir" || a == "--rpc" || a == "--token" || a == "--token-file" ||
        a == "--timeout") {
      ++i;  // skip the value
      continue;
    }
    if (a.empty() || a.front() == '-') continue;
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
      names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), a) != names.end()) break;
    std::string hint = tipd::node::ClosestMatch(a, names);
    return UsageError("unknown command '" + std::string(a) + "'" +
                      (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                      "; see tipctl --help");
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (!action) return UsageError("no command given (see tipctl --help)");
  return action();
}
