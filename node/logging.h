// Process-wide logging for tipd daemons, on spdlog.
//
// Every line is `TIME LEVEL [COMPONENT] message`, time in UTC with
// milliseconds, level padded to five characters, e.g.
//
//   2026-11-25T20:30:01.123Z info  [p2p] connected 02ab..@127.0.0.1:9735
//
// Components are spdlog loggers named after the subsystem ("p2p", "ledger",
// "channel", "rpc", ...). All of them write through one shared sink that
// InitLogging points at stderr or a log file, so a logger's output follows
// the configuration whenever it was created:
//   - Logger(name) (below) returns the registered logger or creates one on the
//     shared sink; this is the way node/ code gets a logger.
//   - Code that cannot depend on node/ (e.g. p2p/) should use
//     `spdlog::get(name)` and, if null, `spdlog::default_logger()->clone(name)`
//     (then `spdlog::register_logger`); the clone shares the sink.
//   - A logger some other way registered before InitLogging (e.g.
//     spdlog::stderr_color_mt) is re-pointed at the shared sink by InitLogging.
//     One created that way after InitLogging gets the level and format (spdlog
//     applies them on registration) but keeps its own sink.
// spdlog's registry is process-global by design; this module is the one place
// that configures it. Nothing here throws.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/logger.h>

#include "util/status.h"

namespace tipd::node {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };

// Accepts "trace", "debug", "info", "warn", "error" (also "warning").
Result<LogLevel> ParseLogLevel(std::string_view text);
// "trace", "debug", "info", "warn", "error".
const char* LogLevelName(LogLevel level);

// Configures logging for the process: minimum `level` for every logger,
// output to `file` (created with its parent directories if missing, opened in
// append mode, mode per umask) or to stderr when `file` is empty. Makes a
// logger named `process_name` (e.g. "node", "ledger") the spdlog default, so
// bare spdlog::info() calls are attributed to it. May be called again to
// change the settings (tests do). Call it before starting threads that log:
// re-pointing loggers registered by other code is not atomic. Fails with
// kIOError if the file cannot be opened; the previous configuration then
// stays in effect.
Status InitLogging(LogLevel level, const std::filesystem::path& file,
                   std::string_view process_name);

// Closes and reopens the log file (for logrotate: call from the SIGHUP
// handler, see ShutdownSignals). No-op when logging to stderr. Fails with
// kIOError if the file cannot be reopened; logging then continues to the old
// file descriptor.
Status ReopenLogFile();

// The logger for `component`, creating and registering it on the shared sink
// if needed. Thread-safe; cheap enough to call per use, but callers usually
// keep the pointer.
std::shared_ptr<spdlog::logger> Logger(std::string_view component);

// Flushes every logger. Call before exiting.
void FlushLogs();

}  // namespace tipd::node
