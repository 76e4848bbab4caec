#include "node/logging.h"

#include <mutex>
#include <utility>
#include <vector>

#include <spdlog/details/registry.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace tipd::node {
namespace {

// "%*": the level as five characters ("info ", "warn ", "error"), instead of
// spdlog's compiled-in names ("warning", "critical").
class ShortLevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view name = Name(msg.level);
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<ShortLevelFlag>();
  }

 private:
  static std::string_view Name(spdlog::level::level_enum level) {
    switch (level) {
      case spdlog::level::trace:
        return "trace";
      case spdlog::level::debug:
        return "debug";
      case spdlog::level::info:
        return "info ";
      case spdlog::level::warn:
        return "warn ";
      case spdlog::level::err:
        return "error";
      case spdlog::level::critical:
        return "crit ";
      case spdlog::level::off:
      case spdlog::level::n_levels:
        break;
    }
    return "?    ";
  }
};

std::unique_ptr<spdlog::formatter> MakeFormatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  f->add_flag<ShortLevelFlag>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %* [%n] %v");
  return f;
}

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// The one sink every tipd logger writes to. Its single child is stderr or the
// log file; InitLogging/ReopenLogFile swap the child under dist_sink's lock,
// so loggers keep their sink pointer across reconfiguration.
struct LogState {
  std::mutex mu;  // serialises configuration changes and logger creation
  std::shared_ptr<spdlog::sinks::dist_sink_mt> sink;
  std::filesystem::path file;
  spdlog::level::level_enum level = spdlog::level::info;

  LogState() : sink(std::make_shared<spdlog::sinks::dist_sink_mt>()) {
    auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    err->set_formatter(MakeFormatter());
    sink->set_sinks({err});
  }
};

// Leaked on purpose: loggers may log from static destructors.
LogState& State() {
  static LogState* state = new LogState();
  return *state;
}

Result<spdlog::sink_ptr> OpenSink(const std::filesystem::path& file) {
  spdlog::sink_ptr out;
  try {
    if (file.empty()) {
      out = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    } else {
      out = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string(), /*truncate=*/false);
    }
    out->set_formatter(MakeFormatter());
  } catch (const std::exception& e) {
    return Status::IOError("cannot open log file " + file.string() + ": " + e.what());
  }
  return out;
}

// REQUIRES: state.mu held.
std::shared_ptr<spdlog::logger> GetOrCreateLocked(LogState& state, const std::string& name) {
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, state.sink);
  logger->set_level(state.level);
  logger->flush_on(spdlog::level::trace);
  try {
    spdlog::register_logger(logger);
  } catch (const spdlog::spdlog_ex&) {
    // Registered concurrently by code outside this module; use theirs.
    if (auto existing = spdlog::get(name)) return existing;
  }
  return logger;
}

}  // namespace

Result<LogLevel> ParseLogLevel(std::string_view text) {
  if (text == "trace") return LogLevel::kTrace;
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warn" || text == "warning") return LogLevel::kWarn;
  if (text == "error") return LogLevel::kError;
  return Status::InvalidArgument("unknown log level '" + std::string(text) +
                                 "'; expected trace, debug, info, warn or error");
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return "trace";
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

Status InitLogging(LogLevel level, const std::filesystem::path& file,
                   std::string_view process_name) {
  LogState& state = State();
  std::lock_guard<std::mutex> lock(state.mu);
  TIPD_ASSIGN_OR_RETURN(spdlog::sink_ptr child, OpenSink(file));
  try {
    state.sink->set_sinks({child});
    state.file = file;
    state.level = ToSpdlog(level);
    // Loggers registered by other code (before now) move onto the shared sink.
    spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& logger) {
      std::vector<spdlog::sink_ptr>& sinks = logger->sinks();
      if (sinks.size() != 1 || sinks.front() != state.sink) {
        sinks.assign(1, state.sink);
      }
    });
    // Registry-wide: existing loggers now, and loggers registered later via
    // spdlog's own factories (spdlog::initialize_logger).
    spdlog::set_formatter(MakeFormatter());
    spdlog::set_level(state.level);
    spdlog::flush_on(spdlog::level::trace);
    spdlog::set_default_logger(GetOrCreateLocked(state, std::string(process_name)));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("logging setup failed: ") + e.what());
  }
  return Status::Ok();
}

Status ReopenLogFile() {
  LogState& state = State();
  std::lock_guard<std::mutex> lock(state.mu);
  if (state.file.empty()) return Status::Ok();
  TIPD_ASSIGN_OR_RETURN(spdlog::sink_ptr child, OpenSink(state.file));
  state.sink->set_sinks({child});
  return Status::Ok();
}

std::shared_ptr<spdlog::logger> Logger(std::string_view component) {
  LogState& state = State();
  std::lock_guard<std::mutex> lock(state.mu);
  return GetOrCreateLocked(state, std::string(component));
}

void FlushLogs() {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& logger) { logger->flush(); });
}

}  // namespace tipd::node
