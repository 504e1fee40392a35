#pragma once
// Logging. Library code reports decisions ("layer 3 assigned to device 0") and the spec's
// warnings through here; the CLI chooses the level. A scoped capture lets tests assert warnings.

#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Emits one message. Thread-safe.
void log_message(LogLevel level, std::string_view message);
// Messages below `level` are dropped (default kWarning; FERRY_LOG_LEVEL=debug|info|warning|error).
void set_log_level(LogLevel level);
LogLevel log_level();
// True if a message at `level` would be kept (printed or captured); lets callers skip formatting.
bool log_enabled(LogLevel level);

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_enabled(LogLevel::kDebug)) {
    log_message(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
  }
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_enabled(LogLevel::kInfo)) {
    log_message(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
  }
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  log_message(LogLevel::kWarning, fmt::format(f, std::forward<Args>(args)...));
}

// While alive, every message of this thread at any level is recorded here (and not printed).
class LogCapture {
 public:
  struct Entry {
    LogLevel level;
    std::string message;
  };
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  const std::vector<Entry>& entries() const { return entries_; }
  // True if some message at `level` contains `needle`.
  bool contains(LogLevel level, std::string_view needle) const;

 private:
  friend void log_message(LogLevel, std::string_view);
  std::vector<Entry> entries_;
  LogCapture* previous_;
};

}  // namespace ferry
