#include "ferry/io/temp_files.h"

#include <cerrno>
#include <charconv>
#include <csignal>
#include <string>
#include <string_view>
#include <system_error>

#include "ferry/core/log.h"

namespace ferry::io {
namespace {

// The pid of a name "<base>.tmp-<pid>-<n>" (AtomicFile's temp_name), or 0 for any other name.
pid_t temp_file_pid(std::string_view name) {
  const std::size_t at = name.rfind(".tmp-");
  if (at == std::string_view::npos || at == 0) return 0;
  const std::string_view rest = name.substr(at + 5);
  const std::size_t dash = rest.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == rest.size()) return 0;
  pid_t pid = 0;
  const auto [end, err] = std::from_chars(rest.data(), rest.data() + dash, pid);
  if (err != std::errc() || end != rest.data() + dash || pid <= 0) return 0;
  const std::string_view counter = rest.substr(dash + 1);
  unsigned long n = 0;
  const auto [end2, err2] = std::from_chars(counter.data(), counter.data() + counter.size(), n);
  if (err2 != std::errc() || end2 != counter.data() + counter.size()) return 0;
  return pid;
}

}  // namespace

std::size_t remove_stale_temp_files(const std::filesystem::path& folder) {
  std::size_t removed = 0;
  std::error_code ec;
  std::filesystem::directory_iterator it(folder, ec);
  if (ec) return 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const pid_t pid = temp_file_pid(it->path().filename().native());
    if (pid == 0 || !it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    // EPERM means the process exists (another user's): only ESRCH says it is gone.
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (std::filesystem::remove(it->path(), ec)) {
      ++removed;
      log_debug("removed {}, left by process {} that no longer runs", it->path().string(), pid);
    }
  }
  return removed;
}

}  // namespace ferry::io
