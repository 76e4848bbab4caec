#include "node/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "tests/support/test_support.h"

namespace tipd::node {
namespace {

// secp256k1 generator G and 2G: valid compressed keys.
constexpr char kKeyG[] = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
constexpr char kXOnlyG[] = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
constexpr char kKey2G[] = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string LedgerArg() { return std::string("127.0.0.1:9736@") + kKeyG; }

// Flags for a minimal valid `tipd node` in `dir`, plus `extra`.
RawValues NodeFlags(const std::filesystem::path& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--datadir", dir.string(), "--ledger", LedgerArg()};
  args.insert(args.end(), extra.begin(), extra.end());
  auto flags = ParseFlags(args, NodeOptionSpecs());
  EXPECT_TRUE(flags.ok()) << flags.status().ToString();
  return flags.ok() ? *flags : RawValues{};
}

// The message of a failed Result, or a marker if it unexpectedly succeeded.
template <typename T>
std::string ErrorOf(const Result<T>& r) {
  return r.ok() ? std::string("<unexpectedly ok>") : r.status().message();
}

// ---- value parsers ----

TEST(ParseHostPort, AcceptsIpv4LocalhostIpv6AndNames) {
  auto a = ParseHostPort("127.0.0.1:9735");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9735);
  EXPECT_EQ(a->ToString(), "127.0.0.1:9735");

  auto b = ParseHostPort("localhost:1");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "localhost");
  EXPECT_EQ(b->port, 1);

  auto c = ParseHostPort("[::1]:65535");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 65535);
  EXPECT_EQ(c->ToString(), "[::1]:65535");

  auto d = ParseHostPort("ledger-1.example.org:443");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->host, "ledger-1.example.org");
}

TEST(ParseHostPort, PortZeroOnlyWhenAllowed) {
  EXPECT_FALSE(ParseHostPort("127.0.0.1:0").ok());
  auto z = ParseHostPort("127.0.0.1:0", /*allow_port_zero=*/true);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->port, 0);
}

TEST(ParseHostPort, RejectsMalformedWithReason) {
  struct Case {
    const char* text;
    const char* reason;
  } cases[] = {
      {"127.0.0.1", "missing ':PORT'"},
      {":9735", "missing host"},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:65536", "not a number in 0..65535"},
      {"127.0.0.1:-1", "not a number"},
      {"127.0.0.1:99999999999999999999", "not a number"},
      {"127.0.0.1:12a", "not a number"},
      {"256.0.0.1:80", "invalid IPv4 address"},
      {"1.2.3:80", "invalid IPv4 address"},
      {"::1:9735", "must be written in brackets"},
      {"[::1:9735", "missing ']'"},
      {"[::1]9735", "missing ':PORT' after ']'"},
      {"[zz::1]:9735", "invalid IPv6 address"},
      {"bad_host:80", "invalid host name"},
      {"-bad.example:80", "invalid host name"},
      {"", "missing ':PORT'"},
  };
  for (const Case& c : cases) {
    auto r = ParseHostPort(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.reason), std::string::npos)
        << c.text << " -> " << r.status().message();
    EXPECT_NE(r.status().message().find("expected HOST:PORT"), std::string::npos);
  }
}

TEST(ParseDurationMs, UnitsAndErrors) {
  EXPECT_EQ(ParseDurationMs("500ms").value(), 500u);
  EXPECT_EQ(ParseDurationMs("5s").value(), 5000u);
  EXPECT_EQ(ParseDurationMs("2m").value(), 120000u);
  EXPECT_EQ(ParseDurationMs("1h").value(), 3600000u);
  EXPECT_EQ(ParseDurationMs("0s").value(), 0u);
  for (const char* bad : {"", "5", "s", "5 s", "-5s", "5d", "1.5s", "5S", "99999999999999999999h",
                          "18446744073709551615s"}) {
    auto r = ParseDurationMs(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("expected a duration such as 500ms"), std::string::npos)
        << r.status().message();
  }
  EXPECT_NE(ErrorOf(ParseDurationMs("5")).find("missing unit"), std::string::npos);
  EXPECT_NE(ErrorOf(ParseDurationMs("5d")).find("unknown unit 'd'"), std::string::npos);
}

TEST(ParseBool, Spellings) {
  for (const char* t : {"true", "TRUE", "1", "yes", "on"}) EXPECT_TRUE(ParseBool(t).value()) << t;
  for (const char* f : {"false", "0", "No", "off"}) EXPECT_FALSE(ParseBool(f).value()) << f;
  EXPECT_NE(ErrorOf(ParseBool("maybe")).find("expected true or false"), std::string::npos);
}

TEST(ParseLedgerAddress, CompressedAndXOnlyKeys) {
  auto full = ParseLedgerAddress(std::string("127.0.0.1:9736@") + kKeyG);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->address.ToString(), "127.0.0.1:9736");
  ASSERT_TRUE(full->sequencer_pubkey.has_value());
  EXPECT_EQ(full->sequencer_pubkey->Hex(), kKeyG);
  EXPECT_EQ(HexEncode(full->sequencer_xonly), kXOnlyG);

  auto xonly = ParseLedgerAddress(std::string("[::1]:9736@") + kXOnlyG);
  ASSERT_TRUE(xonly.ok()) << xonly.status().ToString();
  EXPECT_FALSE(xonly->sequencer_pubkey.has_value());
  EXPECT_EQ(HexEncode(xonly->sequencer_xonly), kXOnlyG);
  EXPECT_EQ(xonly->address.host, "::1");
}

TEST(ParseLedgerAddress, Rejections) {
  std::string g = kKeyG;
  struct Case {
    std::string text;
    const char* reason;
  } cases[] = {
      {"127.0.0.1:9736", "need exactly one '@'"},
      {"127.0.0.1:9736@" + g + "@x", "need exactly one '@'"},
      {"127.0.0.1@" + g, "missing ':PORT'"},
      {"127.0.0.1:0@" + g, "port 0 is not allowed"},
      {"127.0.0.1:9736@abcd", "key has 4 hex characters"},
      {"127.0.0.1:9736@" + std::string(64, 'z'), "bad hex"},
      {"127.0.0.1:9736@" + std::string(64, 'f'), "not a valid x-only public key"},
      {"127.0.0.1:9736@04" + g.substr(2), "not a valid compressed public key"},
  };
  for (const Case& c : cases) {
    auto r = ParseLedgerAddress(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.reason), std::string::npos)
        << c.text << " -> " << r.status().message();
  }
}

TEST(ParsePeerAddress, ValidAndInvalid) {
  auto p = ParsePeerAddress(std::string("localhost:9735@") + kKey2G);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->node_id.Hex(), kKey2G);
  EXPECT_EQ(p->ToString(), std::string("localhost:9735@") + kKey2G);
  EXPECT_NE(ErrorOf(ParsePeerAddress(std::string("localhost:9735@") + kXOnlyG))
                .find("node id has 64 hex characters"),
            std::string::npos);
  EXPECT_NE(ErrorOf(ParsePeerAddress("localhost:9735")).find("need exactly one '@'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(ParsePeerAddress(std::string("localhost:9735@05") + (kKeyG + 2)))
                .find("not a valid compressed public key"),
            std::string::npos);
}

TEST(ClosestMatch, SuggestsTyposOnly) {
  std::vector<std::string> names = {"listen", "log-level", "peer-timeout"};
  EXPECT_EQ(ClosestMatch("lsiten", names), "listen");
  EXPECT_EQ(ClosestMatch("log_level", names), "log-level");
  EXPECT_EQ(ClosestMatch("LISTEN", names), "listen");
  EXPECT_EQ(ClosestMatch("completely-unrelated", names), "");
}

// ---- config file text ----

TEST(ParseConfigText, KeysCommentsBlanksAndRepetition) {
  std::string text =
      "# a comment\n"
      "\n"
      "   listen = 0.0.0.0:9000   # trailing comment\n"
      "connect=localhost:1@" +
      std::string(kKeyG) +
      "\n"
      "\t connect = localhost:2@" +
      std::string(kKey2G) + "\r\n" + "log-file = /tmp/with#hash.log\n";
  auto r = ParseConfigText(text, "t.conf", NodeOptionSpecs());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->values.at("listen").size(), 1u);
  EXPECT_EQ(r->values.at("listen")[0].text, "0.0.0.0:9000");
  EXPECT_EQ(r->values.at("listen")[0].origin, "t.conf line 3");
  ASSERT_EQ(r->values.at("connect").size(), 2u);
  EXPECT_EQ(r->values.at("connect")[1].text, std::string("localhost:2@") + kKey2G);
  EXPECT_EQ(r->values.at("connect")[1].origin, "t.conf line 5");
  EXPECT_EQ(r->values.at("log-file")[0].text, "/tmp/with#hash.log");
}

TEST(ParseConfigText, ErrorsNameFileAndLine) {
  struct Case {
    std::string text;
    std::string expected;
  } cases[] = {
      {"listen = 1.2.3.4:5\njunk line\n", "t.conf line 2: malformed line 'junk line'"},
      {"\n\n= 5\n", "t.conf line 3: malformed line '= 5'; missing key"},
      {"lsiten = 1.2.3.4:5\n", "t.conf line 1: unknown key 'lsiten' (did you mean 'listen'?)"},
      {"# x\nlog_level = debug\n",
       "t.conf line 2: unknown key 'log_level' (did you mean "
       "'log-level'?)"},
      {"frobnicate = 1\n", "t.conf line 1: unknown key 'frobnicate'"},
      {"listen = 1.2.3.4:5\nlisten = 1.2.3.4:6\n",
       "t.conf line 2: duplicate key 'listen' (first set at t.conf line 1)"},
      {"config = other.conf\n", "t.conf line 1: 'config' can only be given on the command line"},
      {"listen =\n", "t.conf line 1: missing value for 'listen'; expected HOST:PORT"},
      {"[main]\n", "t.conf line 1: malformed line '[main]'"},
  };
  for (const Case& c : cases) {
    auto r = ParseConfigText(c.text, "t.conf", NodeOptionSpecs());
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos)
        << "got: " << r.status().message();
  }
  EXPECT_EQ(ErrorOf(ParseConfigText("frobnicate = 1\n", "t.conf", NodeOptionSpecs()))
                .find("did you mean"),
            std::string::npos);
}

// ---- flags ----

TEST(ParseFlags, SpaceAndEqualsFormsAndBareBool) {
  auto r = ParseFlags({"--datadir=/d", "--listen", "1.2.3.4:5", "--seal-on-submit"},
                      LedgerOptionSpecs());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->values.at("datadir")[0].text, "/d");
  EXPECT_EQ(r->values.at("listen")[0].text, "1.2.3.4:5");
  EXPECT_EQ(r->values.at("listen")[0].origin, "--listen");
  EXPECT_EQ(r->values.at("seal-on-submit")[0].text, "true");

  auto off = ParseFlags({"--seal-on-submit=false"}, LedgerOptionSpecs());
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->values.at("seal-on-submit")[0].text, "false");
  auto spaced = ParseFlags({"--seal-on-submit", "no", "--listen=1.2.3.4:5"}, LedgerOptionSpecs());
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(spaced->values.at("seal-on-submit")[0].text, "no");

  auto repeated = ParseFlags({"--connect", "a", "--connect=b", "--listen", "c"}, NodeOptionSpecs());
  ASSERT_TRUE(repeated.ok()) << repeated.status().ToString();
  ASSERT_EQ(repeated->values.at("connect").size(), 2u);
  EXPECT_EQ(repeated->values.at("connect")[1].text, "b");
  EXPECT_EQ(repeated->values.at("listen")[0].text, "c");
}

TEST(ParseFlags, UnknownFlagAndMissingValueFail) {
  EXPECT_FALSE(ParseFlags({"--lsiten", "1.2.3.4:5"}, NodeOptionSpecs()).ok());
  EXPECT_FALSE(ParseFlags({"--listen"}, NodeOptionSpecs()).ok());
  EXPECT_FALSE(ParseFlags({"--listen", "a:1", "stray"}, NodeOptionSpecs()).ok());
}

TEST(AddFlags, WorksOnASubcommandAndReportsClashes) {
  CLI::App app("tipd");
  CLI::App* node_cmd = app.add_subcommand("node");
  CLI::App* ledger_cmd = app.add_subcommand("ledger");
  RawValues node_flags, ledger_flags;
  ASSERT_TRUE(AddFlags(node_cmd, NodeOptionSpecs(), &node_flags).ok());
  ASSERT_TRUE(AddFlags(ledger_cmd, LedgerOptionSpecs(), &ledger_flags).ok());
  std::vector<std::string> args = {"tipd", "node", "--datadir", "/x", "--ping-interval=5s"};
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  ASSERT_NO_THROW(app.parse(static_cast<int>(argv.size()), argv.data()));
  EXPECT_TRUE(node_cmd->parsed());
  EXPECT_EQ(node_flags.values.at("ping-interval")[0].text, "5s");
  EXPECT_TRUE(ledger_flags.values.empty());

  Status clash = AddFlags(node_cmd, NodeOptionSpecs(), &node_flags);
  EXPECT_FALSE(clash.ok());
  EXPECT_NE(clash.message().find("cannot register flags"), std::string::npos);
}

// ---- resolution ----

TEST(ResolveNodeConfig, DefaultsFromFlagsOnly) {
  testing::TempDir dir;
  auto c = ResolveNodeConfig(NodeFlags(dir.path()));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->datadir, dir.path());
  EXPECT_TRUE(c->config_file.empty());
  EXPECT_EQ(c->listen.ToString(), "127.0.0.1:9735");
  EXPECT_EQ(c->rpc_listen.ToString(), "127.0.0.1:8080");
  EXPECT_EQ(c->ledger.address.ToString(), "127.0.0.1:9736");
  EXPECT_TRUE(c->connect.empty());
  EXPECT_EQ(c->chain_id, "");
  EXPECT_EQ(c->log_level, LogLevel::kInfo);
  EXPECT_TRUE(c->log_file.empty());
  EXPECT_EQ(c->ping_interval_ms, 30'000u);
  EXPECT_EQ(c->peer_timeout_ms, 90'000u);
  EXPECT_EQ(c->db_write_buffer_mib, 64u);
}

TEST(ResolveNodeConfig, PrecedenceDefaultFileFlag) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf",
            "listen = 127.0.0.1:7000\n"
            "rpc-listen = 127.0.0.1:7001\n"
            "log-level = debug\n"
            "connect = localhost:1@" +
                std::string(kKeyG) + "\nconnect = localhost:2@" + kKey2G + "\n");
  auto c = ResolveNodeConfig(
      NodeFlags(dir.path(), {"--rpc-listen", "[::1]:0", "--connect", "h:3@" + std::string(kKeyG)}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->config_file, dir.path() / "tipd.conf");
  EXPECT_EQ(c->ping_interval_ms, 30'000u);            // default
  EXPECT_EQ(c->listen.ToString(), "127.0.0.1:7000");  // file beats default
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->rpc_listen.ToString(), "[::1]:0");  // flag beats file
  ASSERT_EQ(c->connect.size(), 1u);                // flag list replaces the file list
  EXPECT_EQ(c->connect[0].address.ToString(), "h:3");

  auto from_file = ResolveNodeConfig(NodeFlags(dir.path()));
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  ASSERT_EQ(from_file->connect.size(), 2u);
  EXPECT_EQ(from_file->connect[0].ToString(), std::string("localhost:1@") + kKeyG);
  EXPECT_EQ(from_file->connect[1].ToString(), std::string("localhost:2@") + kKey2G);
}

TEST(ResolveOptions, OriginsAndGetters) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf", "# c\nlog-level = warn\n");
  auto o = ResolveOptions(NodeOptionSpecs(), NodeFlags(dir.path(), {"--peer-timeout=2m"}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->Origin("ping-interval"), "default");
  EXPECT_EQ(o->Origin("log-level"), (dir.path() / "tipd.conf").string() + " line 2");
  EXPECT_EQ(o->Origin("peer-timeout"), "--peer-timeout");
  EXPECT_EQ(o->GetDurationMs("peer-timeout"), 120'000u);
  EXPECT_EQ(o->GetString("log-level"), "warn");
  EXPECT_FALSE(o->Has("chain-id"));
  EXPECT_TRUE(o->GetList("connect").empty());
  EXPECT_EQ(o->GetHostPort("listen").port, 9735);

  OptionSpec count;
  count.name = "count";
  count.type = OptionType::kUint64;
  count.default_value = "7";
  count.help = "a count";
  std::vector<OptionSpec> specs = {count};
  auto u = ResolveOptions(specs, ParseFlags({}, specs).value());
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->GetUint("count"), 7u);
  auto bad = ResolveOptions(specs, ParseFlags({"--count", "-1"}, specs).value());
  EXPECT_NE(ErrorOf(bad).find("--count: invalid value '-1' for 'count': expected a non-negative"),
            std::string::npos)
      << ErrorOf(bad);
}

TEST(ResolveNodeConfig, BadValueInFileNamesLineAndExpectation) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf", "\n# comment\nping-interval = 30\n");
  auto c = ResolveNodeConfig(NodeFlags(dir.path()));
  std::string want = (dir.path() / "tipd.conf").string() +
                     " line 3: invalid value '30' for 'ping-interval': missing unit";
  EXPECT_NE(ErrorOf(c).find(want), std::string::npos) << ErrorOf(c);
  EXPECT_NE(ErrorOf(c).find("expected a duration"), std::string::npos);

  WriteFile(dir.path() / "tipd.conf", "log-level = loud\n");
  EXPECT_NE(ErrorOf(ResolveNodeConfig(NodeFlags(dir.path())))
                .find("line 1: invalid value 'loud' for 'log-level': expected one of trace, "
                      "debug, info, warn or error"),
            std::string::npos);

  WriteFile(dir.path() / "tipd.conf", "listen = 1.2.3.4:5\nlsten = 1.2.3.4:6\n");
  EXPECT_NE(ErrorOf(ResolveNodeConfig(NodeFlags(dir.path())))
                .find("line 2: unknown key 'lsten' (did you mean 'listen'?)"),
            std::string::npos);
}

TEST(ResolveNodeConfig, BadFlagValueNamesFlag) {
  testing::TempDir dir;
  auto c = ResolveNodeConfig(NodeFlags(dir.path(), {"--listen", "localhost"}));
  EXPECT_NE(ErrorOf(c).find("--listen: invalid value 'localhost' for 'listen': missing ':PORT'"),
            std::string::npos)
      << ErrorOf(c);
  auto zero = ResolveNodeConfig(NodeFlags(dir.path(), {"--ping-interval", "0s"}));
  EXPECT_NE(ErrorOf(zero).find("--ping-interval: ping-interval must be greater than zero"),
            std::string::npos)
      << ErrorOf(zero);
  for (const char* bad : {"3", "1025"}) {
    auto buffer = ResolveNodeConfig(NodeFlags(dir.path(), {"--db-write-buffer", bad}));
    EXPECT_NE(
        ErrorOf(buffer).find("db-write-buffer must be 4..1024 (MiB), got " + std::string(bad)),
        std::string::npos)
        << ErrorOf(buffer);
  }
  auto buffer = ResolveNodeConfig(NodeFlags(dir.path(), {"--db-write-buffer", "16"}));
  ASSERT_TRUE(buffer.ok()) << buffer.status().ToString();
  EXPECT_EQ(buffer->db_write_buffer_mib, 16u);
  auto twice = ResolveNodeConfig(NodeFlags(dir.path(), {"--listen", "a:1", "--listen", "a:2"}));
  EXPECT_NE(ErrorOf(twice).find("--listen given 2 times"), std::string::npos) << ErrorOf(twice);
}

TEST(ResolveNodeConfig, RequiredOptions) {
  auto no_datadir =
      ResolveNodeConfig(ParseFlags({"--ledger", LedgerArg()}, NodeOptionSpecs()).value());
  EXPECT_NE(ErrorOf(no_datadir).find("missing required option --datadir"), std::string::npos);
  testing::TempDir dir;
  auto no_ledger =
      ResolveNodeConfig(ParseFlags({"--datadir", dir.path().string()}, NodeOptionSpecs()).value());
  EXPECT_NE(ErrorOf(no_ledger).find("missing required option --ledger"), std::string::npos);
}

TEST(ResolveNodeConfig, ExplicitConfigFileMaySetDatadir) {
  testing::TempDir dir;
  std::filesystem::path conf = dir.path() / "elsewhere.conf";
  WriteFile(conf, "datadir = " + (dir.path() / "data").string() + "\nledger = " + LedgerArg() +
                      "\nchain-id = tipd-devnet\n");
  auto c = ResolveNodeConfig(ParseFlags({"--config", conf.string()}, NodeOptionSpecs()).value());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->datadir, dir.path() / "data");
  EXPECT_EQ(c->config_file, conf);
  EXPECT_EQ(c->chain_id, "tipd-devnet");

  // --config wins over <datadir>/tipd.conf, which is then not read.
  WriteFile(dir.path() / "tipd.conf", "this is not a config file\n");
  auto d = ResolveNodeConfig(NodeFlags(dir.path(), {"--config", conf.string()}));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->datadir, dir.path());  // flag beats the file's datadir

  auto missing = ResolveNodeConfig(
      ParseFlags({"--config", (dir.path() / "nope.conf").string()}, NodeOptionSpecs()).value());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(ErrorOf(missing).find("--config: config file"), std::string::npos);
}

TEST(ResolveNodeConfig, AutoDiscoveredFileMayNotSetDatadir) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf", "datadir = /elsewhere\n");
  auto c = ResolveNodeConfig(NodeFlags(dir.path()));
  EXPECT_NE(ErrorOf(c).find("line 1: 'datadir' has no effect"), std::string::npos) << ErrorOf(c);
}

TEST(ResolveLedgerConfig, DefaultsUnderDatadirAndOverrides) {
  testing::TempDir dir;
  auto c = ResolveLedgerConfig(
      ParseFlags({"--datadir", dir.path().string()}, LedgerOptionSpecs()).value());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->genesis, dir.path() / "genesis.json");
  EXPECT_EQ(c->sequencer_key, dir.path() / "sequencer.key");
  EXPECT_EQ(c->listen.ToString(), "127.0.0.1:9736");
  EXPECT_FALSE(c->block_interval_ms.has_value());
  EXPECT_FALSE(c->seal_on_submit);
  EXPECT_EQ(c->log_level, LogLevel::kInfo);

  WriteFile(dir.path() / "tipd.conf",
            "genesis = /g.json\nblock-interval = 250ms\nseal-on-submit = yes\nlog-file = l.log\n");
  auto d = ResolveLedgerConfig(ParseFlags({"--datadir", dir.path().string(), "--sequencer-key",
                                           "/k.key", "--listen", "127.0.0.1:0"},
                                          LedgerOptionSpecs())
                                   .value());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->genesis, "/g.json");
  EXPECT_EQ(d->sequencer_key, "/k.key");
  EXPECT_EQ(d->block_interval_ms, 250u);
  EXPECT_TRUE(d->seal_on_submit);
  EXPECT_EQ(d->log_file, "l.log");
  EXPECT_EQ(d->listen.port, 0);

  // Sealing on demand (tests only) is a flag, never a config file key: a
  // ledger that seals only on SIGUSR1 must not come from a copied tipd.conf.
  EXPECT_FALSE(d->seal_on_demand);
  auto demand = ResolveLedgerConfig(
      ParseFlags({"--datadir", dir.path().string(), "--seal-on-demand"}, LedgerOptionSpecs())
          .value());
  ASSERT_TRUE(demand.ok()) << demand.status().ToString();
  EXPECT_TRUE(demand->seal_on_demand);
  WriteFile(dir.path() / "tipd.conf", "seal-on-demand = true\n");
  EXPECT_NE(
      ErrorOf(ResolveLedgerConfig(
                  ParseFlags({"--datadir", dir.path().string()}, LedgerOptionSpecs()).value()))
          .find("line 1: 'seal-on-demand' can only be given on the command line"),
      std::string::npos);

  WriteFile(dir.path() / "tipd.conf", "ping-interval = 5s\n");  // a node-only key
  EXPECT_NE(
      ErrorOf(ResolveLedgerConfig(
                  ParseFlags({"--datadir", dir.path().string()}, LedgerOptionSpecs()).value()))
          .find("line 1: unknown key 'ping-interval'"),
      std::string::npos);
}

TEST(ResolveOptions, UnknownNameInRawFlags) {
  RawValues flags;
  flags.values["lissten"].push_back({"1.2.3.4:5", "--lissten"});
  auto r = ResolveOptions(NodeOptionSpecs(), flags);
  EXPECT_NE(ErrorOf(r).find("unknown option --lissten (did you mean --listen?)"), std::string::npos)
      << ErrorOf(r);
}

// ---- docs stay in sync with the tables ----

// One row of an option table in docs/configuration.md, split into cells.
struct DocRow {
  std::string flag, config_key, type, default_value;
  int line = 0;
};

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(' ');
  const size_t e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// The option tables of docs/configuration.md by section heading ("## `tipd
// node`"), each keyed by its flag cell ("`--listen`").
std::map<std::string, std::map<std::string, DocRow>> DocTables(std::istream& in) {
  std::map<std::string, std::map<std::string, DocRow>> tables;
  std::string heading, line;
  bool in_option_table = false;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.rfind("## ", 0) == 0) {
      heading = line.substr(3);
      in_option_table = false;
      continue;
    }
    if (line.rfind("|", 0) != 0) {
      in_option_table = false;
      continue;
    }
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(Trim(cell));
    if (cells.size() >= 5 && cells[0] == "flag" && cells[3] == "default") {
      in_option_table = true;
      continue;
    }
    if (!in_option_table || cells.size() < 5 || cells[0].rfind("`--", 0) != 0) continue;
    DocRow r{cells[0], cells[1], cells[2], cells[3], n};
    EXPECT_TRUE(tables[heading].emplace(r.flag, r).second)
        << "line " << n << ": " << r.flag << " documented twice under " << heading;
  }
  return tables;
}

std::string DocTypeName(OptionType t) {
  switch (t) {
    case OptionType::kString:
      return "string";
    case OptionType::kPath:
      return "path";
    case OptionType::kUint64:
      return "uint64";
    case OptionType::kBool:
      return "bool";
    case OptionType::kDurationMs:
      return "duration";
    case OptionType::kHostPort:
      return "HOST:PORT";
    case OptionType::kLedgerAddress:
      return "HOST:PORT@PUBKEY";
    case OptionType::kPeerAddress:
      return "HOST:PORT@NODEID";
  }
  return "?";
}

// Each option has its own row in its command's table, and that row shows
// the option's own default, type and config key (a default is not "somewhere
// on the page": `false` or `0` would match anything); the tables document no
// option that does not exist.
TEST(ConfigDocs, EveryOptionIsDocumentedInItsOwnRow) {
  std::ifstream in(TIPD_CONFIG_DOC_PATH);
  ASSERT_TRUE(in.good()) << "cannot read " << TIPD_CONFIG_DOC_PATH;
  const auto tables = DocTables(in);
  const std::vector<std::pair<std::string, const std::vector<OptionSpec>*>> commands = {
      {"`tipd node`", &NodeOptionSpecs()}, {"`tipd ledger`", &LedgerOptionSpecs()}};
  for (const auto& [heading, specs] : commands) {
    SCOPED_TRACE("## " + heading);
    ASSERT_TRUE(tables.count(heading))
        << "docs/configuration.md has no option table under " << heading;
    const auto& rows = tables.at(heading);
    std::set<std::string> flags;
    for (const OptionSpec& spec : *specs) {
      const std::string flag = "`--" + spec.name + "`";
      flags.insert(flag);
      auto it = rows.find(flag);
      if (it == rows.end()) {
        ADD_FAILURE() << "docs/configuration.md does not document --" << spec.name;
        continue;
      }
      const DocRow& row = it->second;
      SCOPED_TRACE("line " + std::to_string(row.line) + ": --" + spec.name);
      if (!spec.default_value.empty()) {
        EXPECT_EQ(row.default_value, "`" + spec.default_value + "`") << "wrong default";
      } else if (spec.required) {
        EXPECT_EQ(row.default_value, "required");
      } else {
        EXPECT_NE(row.default_value, "required");
      }
      EXPECT_EQ(row.type, DocTypeName(spec.type)) << "wrong type";
      if (spec.in_config_file) {
        EXPECT_EQ(row.config_key.rfind("`" + spec.name + "`", 0), 0u) << row.config_key;
      } else {
        EXPECT_EQ(row.config_key, "(flag only)");
      }
      EXPECT_EQ(spec.repeatable, row.config_key.find("(repeat)") != std::string::npos)
          << row.config_key;
    }
    for (const auto& [flag, row] : rows) {
      EXPECT_TRUE(flags.count(flag)) << "line " << row.line << " documents " << flag
                                     << ", which is not an option of " << heading;
    }
  }
}

}  // namespace
}  // namespace tipd::node

namespace tipd::node {
namespace {

TEST(ResolveNodeConfig, AnomalyRulesAreParsedInOrder) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf",
            "anomaly-rule = rate per=token max=600/min hold=true\n"
            "anomaly-rule = amount   per=app_name factor=10 window=1000\n");
  auto c = ResolveNodeConfig(NodeFlags(dir.path()));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->anomaly_rules.size(), 2u);
  EXPECT_EQ(c->anomaly_rules[0].text, "rate per=token max=600/min hold=true");
  EXPECT_TRUE(c->anomaly_rules[0].hold);
  EXPECT_EQ(c->anomaly_rules[1].text, "amount per=app_name factor=10 window=1000");
}

TEST(ResolveNodeConfig, AMalformedAnomalyRuleNamesTheFileAndLine) {
  testing::TempDir dir;
  WriteFile(dir.path() / "tipd.conf",
            "# rules\n"
            "anomaly-rule = rate per=token max=600/min\n"
            "anomaly-rule = rate per=token max=600/week\n");
  auto c = ResolveNodeConfig(NodeFlags(dir.path()));
  ASSERT_FALSE(c.ok());
  const std::string want = (dir.path() / "tipd.conf").string() + " line 3";
  EXPECT_NE(ErrorOf(c).find(want), std::string::npos) << ErrorOf(c);
  EXPECT_NE(ErrorOf(c).find("unit 'week' is not s, min or h"), std::string::npos) << ErrorOf(c);
}

}  // namespace
}  // namespace tipd::node
