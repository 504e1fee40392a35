// The launcher's environment (torchrun's variables and ferry's FERRY_DIST_TIMEOUT), read
// strictly: a malformed or missing variable is named with its value.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fcntl.h>
#include <string>

#include "ferry/engine/world.h"

namespace ferry::engine {
namespace {

using std::chrono::milliseconds;

std::optional<std::string> env_text(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

[[noreturn]] void throw_malformed(const char* name, std::string_view text,
                                  const std::string& expected) {
  throw InvalidArgument(
      fmt::format("environment variable {}: expected {}, got '{}'", name, expected, text),
      ErrorFields{.path = name, .expected = expected, .actual = std::string(text)});
}

// An integer in [lo, hi], the whole text (no sign, spaces or suffix).
std::int64_t parse_integer(const char* name, std::string_view text, std::int64_t lo,
                           std::int64_t hi, const std::string& expected) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < lo || value > hi) {
    throw_malformed(name, text, expected);
  }
  return value;
}

std::string require_variable(const char* name, int world_size) {
  std::optional<std::string> text = env_text(name);
  if (!text) {
    throw InvalidArgument(
        fmt::format("environment variable {} is not set: WORLD_SIZE={} makes this a distributed "
                    "run, which needs MASTER_ADDR, MASTER_PORT and RANK as well",
                    name, world_size),
        ErrorFields{.path = name, .expected = "set", .actual = "unset"});
  }
  return *text;
}

}  // namespace

std::optional<WorldInfo> world_from_environment() {
  const std::optional<std::string> size_text = env_text("WORLD_SIZE");
  if (!size_text) return std::nullopt;
  WorldInfo info;
  info.world_size =
      static_cast<int>(parse_integer("WORLD_SIZE", *size_text, 1, kMaxWorldSize,
                                     fmt::format("a number of ranks in 1..{}", kMaxWorldSize)));
  const std::string ranks =
      fmt::format("a rank in 0..{} (WORLD_SIZE is {})", info.world_size - 1, info.world_size);
  info.rank = static_cast<int>(parse_integer("RANK", require_variable("RANK", info.world_size), 0,
                                             info.world_size - 1, ranks));
  const std::optional<std::string> local = env_text("LOCAL_RANK");
  info.local_rank =
      local ? static_cast<int>(parse_integer("LOCAL_RANK", *local, 0, info.world_size - 1, ranks))
            : info.rank;
  info.master_addr = require_variable("MASTER_ADDR", info.world_size);
  if (info.master_addr.empty() || info.master_addr.find_first_of(" \t\n") != std::string::npos) {
    throw_malformed("MASTER_ADDR", info.master_addr, "a host name or address");
  }
  // FERRY_PORT_PIPE: `ferry launch`'s pipe for the port rank 0 binds (Note [A port nobody else
  // can take] in world.cpp); MASTER_PORT is 0 then.
  if (const std::optional<std::string> pipe = env_text("FERRY_PORT_PIPE")) {
    const std::string expected = "an open descriptor (FERRY_PORT_PIPE is set by ferry launch)";
    info.port_pipe =
        static_cast<int>(parse_integer("FERRY_PORT_PIPE", *pipe, 0, INT_MAX, expected));
    // Kept open for the process's life (a later read of the environment names the same pipe)
    // but not passed on to programs it starts.
    if (::fcntl(info.port_pipe, F_SETFD, FD_CLOEXEC) == -1) {
      throw_malformed("FERRY_PORT_PIPE", *pipe, expected);
    }
  }
  const bool any_port = info.port_pipe >= 0;
  info.master_port = static_cast<std::uint16_t>(parse_integer(
      "MASTER_PORT", require_variable("MASTER_PORT", info.world_size), any_port ? 0 : 1, 65535,
      any_port ? "a port in 0..65535" : "a port in 1..65535"));
  return info;
}

WorldOptions world_options_from_environment() {
  WorldOptions options;
  const std::optional<std::string> text = env_text("FERRY_DIST_TIMEOUT");
  if (!text) return options;
  double seconds = 0;
  const char* end = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(text->data(), end, seconds);
  // At most a day: a longer wait is a hang by another name.
  if (text->empty() || ec != std::errc() || ptr != end || !(seconds > 0) || seconds > 86400) {
    throw_malformed("FERRY_DIST_TIMEOUT", *text, "a number of seconds in (0, 86400]");
  }
  options.timeout = std::max(milliseconds(1), milliseconds(std::llround(seconds * 1000)));
  return options;
}

}  // namespace ferry::engine
