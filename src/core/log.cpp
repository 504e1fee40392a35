#include "ferry/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace ferry {
namespace {

thread_local LogCapture* t_capture = nullptr;

LogLevel initial_level() {
  const char* env = std::getenv("FERRY_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kWarning;
  std::string_view v(env);
  if (v == "debug") return LogLevel::kDebug;
  if (v == "info") return LogLevel::kInfo;
  if (v == "error") return LogLevel::kError;
  return LogLevel::kWarning;
}

std::atomic<LogLevel>& level_ref() {
  static std::atomic<LogLevel> level{initial_level()};
  return level;
}

spdlog::logger& logger() {
  // stderr, so that `--json` output on stdout stays machine-readable.
  static std::shared_ptr<spdlog::logger> l = [] {
    auto made = spdlog::stderr_color_mt("ferry");
    made->set_pattern("[ferry %^%l%$] %v");
    made->set_level(spdlog::level::trace);
    return made;
  }();
  return *l;
}

}  // namespace

void set_log_level(LogLevel level) { level_ref().store(level); }

LogLevel log_level() { return level_ref().load(std::memory_order_relaxed); }

bool log_enabled(LogLevel level) { return t_capture != nullptr || level >= log_level(); }

void log_message(LogLevel level, std::string_view message) {
  if (t_capture != nullptr) {
    t_capture->entries_.push_back({level, std::string(message)});
    return;
  }
  if (level < log_level()) return;
  switch (level) {
    case LogLevel::kDebug: logger().debug(message); break;
    case LogLevel::kInfo: logger().info(message); break;
    case LogLevel::kWarning: logger().warn(message); break;
    case LogLevel::kError: logger().error(message); break;
  }
}

LogCapture::LogCapture() : previous_(t_capture) { t_capture = this; }

LogCapture::~LogCapture() { t_capture = previous_; }

bool LogCapture::contains(LogLevel level, std::string_view needle) const {
  for (const Entry& e : entries_) {
    if (e.level == level && e.message.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace ferry
