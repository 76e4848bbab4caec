#include "node/logging.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <fstream>
#include <sstream>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "crypto/crypto.h"
#include "p2p/p2p.h"
#include "tests/support/test_support.h"

namespace tipd::node {
namespace {

std::vector<std::string> ReadLines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// True if `line` starts with a UTC timestamp "YYYY-MM-DDTHH:MM:SS.mmmZ ".
bool HasTimestamp(std::string_view line) {
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ ";
  if (line.size() < kShape.size()) return false;
  for (size_t i = 0; i < kShape.size(); ++i) {
    bool ok = kShape[i] == 'd' ? (line[i] >= '0' && line[i] <= '9') : line[i] == kShape[i];
    if (!ok) return false;
  }
  return true;
}

// The whole line must be `TIME LEVEL [COMPONENT] MESSAGE` as documented.
::testing::AssertionResult HasLine(const std::vector<std::string>& lines, std::string_view level,
                                   std::string_view component, std::string_view message) {
  const std::string rest =
      std::string(level) + " [" + std::string(component) + "] " + std::string(message);
  for (const std::string& line : lines) {
    if (HasTimestamp(line) && std::string_view(line).substr(25) == rest) {
      return ::testing::AssertionSuccess();
    }
  }
  std::string all;
  for (const std::string& line : lines) all += "\n  " + line;
  return ::testing::AssertionFailure() << "no line '" << rest << "' among:" << all;
}

// Leaves later tests in this process logging to stderr, not a deleted file.
class LoggingTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(InitLogging(LogLevel::kInfo, "", "test").ok()); }
  testing::TempDir dir_;
};

TEST_F(LoggingTest, LinesCarryTimeLevelAndComponent) {
  std::filesystem::path file = dir_.path() / "logs" / "node.log";
  std::filesystem::create_directories(file.parent_path());
  { std::ofstream(file) << "an older line\n"; }

  auto early = Logger("early");  // created before InitLogging
  auto foreign =
      std::make_shared<spdlog::logger>("foreign", std::make_shared<spdlog::sinks::null_sink_mt>());
  spdlog::register_logger(foreign);  // registered by code that does not use Logger()

  ASSERT_TRUE(InitLogging(LogLevel::kDebug, file, "node").ok());
  auto p2p = Logger("p2p");
  EXPECT_EQ(p2p, Logger("p2p"));
  EXPECT_EQ(p2p, spdlog::get("p2p"));
  p2p->info("connected {}@{}", "02ab", "127.0.0.1:9735");
  p2p->debug("debug shown");
  p2p->trace("trace hidden");
  p2p->warn("a warning");
  p2p->error("an error");
  early->info("from before init");
  foreign->info("foreign logger");
  spdlog::info("default logger");
  auto clone = spdlog::default_logger()->clone("clone");  // the path p2p/ may take
  clone->info("cloned logger");
  FlushLogs();

  auto lines = ReadLines(file);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.front(), "an older line");  // opened in append mode
  EXPECT_TRUE(HasLine(lines, "info ", "p2p", "connected 02ab@127.0.0.1:9735"));
  EXPECT_TRUE(HasLine(lines, "debug", "p2p", "debug shown"));
  EXPECT_TRUE(HasLine(lines, "warn ", "p2p", "a warning"));
  EXPECT_TRUE(HasLine(lines, "error", "p2p", "an error"));
  EXPECT_TRUE(HasLine(lines, "info ", "early", "from before init"));
  EXPECT_TRUE(HasLine(lines, "info ", "foreign", "foreign logger"));
  EXPECT_TRUE(HasLine(lines, "info ", "node", "default logger"));
  EXPECT_TRUE(HasLine(lines, "info ", "clone", "cloned logger"));
  for (const std::string& line : lines) EXPECT_EQ(line.find("trace hidden"), std::string::npos);
  EXPECT_EQ(lines.size(), 9u);
}

// p2p/ cannot call Logger(); the logger it makes for itself after the
// daemon's InitLogging must still write to the daemon's log file.
TEST_F(LoggingTest, PeerLayerLinesGoToTheLogFile) {
  std::filesystem::path file = dir_.path() / "node.log";
  ASSERT_TRUE(InitLogging(LogLevel::kInfo, file, "node").ok());
  spdlog::drop("p2p");  // as in a daemon: nothing made a "p2p" logger before the Host
  boost::asio::io_context io;
  crypto::KeyPair key = crypto::KeyPair::Generate(crypto::SystemRng());
  p2p::HostOptions options;
  options.chain_id = "tipd-logtest";
  {
    p2p::Host host(io, key, crypto::SystemRng(), options);
    auto port = host.Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    FlushLogs();
    EXPECT_TRUE(HasLine(
        ReadLines(file), "info ", "p2p",
        "listening on 127.0.0.1:" + std::to_string(*port) + " as " + key.public_key().Hex()));
  }
}

TEST_F(LoggingTest, LevelChangesApplyToExistingLoggers) {
  std::filesystem::path file = dir_.path() / "l.log";
  ASSERT_TRUE(InitLogging(LogLevel::kTrace, file, "node").ok());
  auto rpc = Logger("rpc");
  rpc->trace("t1");
  ASSERT_TRUE(InitLogging(LogLevel::kError, file, "node").ok());
  rpc->warn("w hidden");
  rpc->error("e1");
  FlushLogs();
  auto lines = ReadLines(file);
  EXPECT_TRUE(HasLine(lines, "trace", "rpc", "t1"));
  EXPECT_TRUE(HasLine(lines, "error", "rpc", "e1"));
  EXPECT_EQ(lines.size(), 2u);
}

TEST_F(LoggingTest, ReopenFollowsARotatedFile) {
  std::filesystem::path file = dir_.path() / "n.log";
  ASSERT_TRUE(InitLogging(LogLevel::kInfo, file, "node").ok());
  Logger("ledger")->info("before rotation");
  std::filesystem::rename(file, dir_.path() / "n.log.1");
  ASSERT_TRUE(ReopenLogFile().ok());
  Logger("ledger")->info("after rotation");
  FlushLogs();
  auto old_lines = ReadLines(dir_.path() / "n.log.1");
  auto new_lines = ReadLines(file);
  ASSERT_EQ(old_lines.size(), 1u);
  EXPECT_TRUE(HasLine(old_lines, "info ", "ledger", "before rotation"));
  ASSERT_EQ(new_lines.size(), 1u);
  EXPECT_TRUE(HasLine(new_lines, "info ", "ledger", "after rotation"));
}

TEST_F(LoggingTest, UnopenableFileFailsAndKeepsPreviousSetup) {
  std::filesystem::path good = dir_.path() / "good.log";
  ASSERT_TRUE(InitLogging(LogLevel::kInfo, good, "node").ok());
  std::filesystem::path blocker = dir_.path() / "not-a-dir";
  { std::ofstream(blocker) << "x"; }
  Status st = InitLogging(LogLevel::kInfo, blocker / "x.log", "node");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIOError);
  EXPECT_NE(st.message().find("cannot open log file " + (blocker / "x.log").string()),
            std::string::npos)
      << st.message();
  Logger("p2p")->info("still here");
  FlushLogs();
  EXPECT_TRUE(HasLine(ReadLines(good), "info ", "p2p", "still here"));
}

TEST(LogLevel, ParseAndName) {
  for (LogLevel l :
       {LogLevel::kTrace, LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    auto parsed = ParseLogLevel(LogLevelName(l));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, l);
  }
  EXPECT_EQ(ParseLogLevel("warning").value(), LogLevel::kWarn);
  auto bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("expected trace, debug, info, warn or error"),
            std::string::npos);
}

}  // namespace
}  // namespace tipd::node
