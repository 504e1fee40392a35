#include "ferry/core/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "core/gpu_probe.h"
#include "ferry/core/error.h"

namespace ferry {
namespace {

constexpr std::uint64_t kDefaultSimCapacity = 16ULL << 30;

[[noreturn]] void reject_sim(std::string_view text) {
  throw InvalidArgument(
      fmt::format("invalid FERRY_SIM_GPUS '{}': expected a count (\"2\"), a count and a capacity "
                  "(\"2:8GiB\") or a list of capacities (\"8GiB,4GiB\")",
                  text),
      ErrorFields{.path = "FERRY_SIM_GPUS", .actual = std::string(text)});
}


// Without LibTorch: the GPUs FERRY_SIM_GPUS configures (all free), else none. The LibTorch part
// of the core layer replaces it (Note [GPU probes]).
std::vector<GpuMemory> probe_without_torch() {
  const char* env = std::getenv("FERRY_SIM_GPUS");
  std::vector<GpuMemory> gpus;
  if (env == nullptr) return gpus;
  const std::vector<Bytes> capacities = parse_sim_gpus(env);
  for (std::size_t i = 0; i < capacities.size(); ++i) {
    gpus.push_back({.index = static_cast<int>(i), .free = capacities[i], .total = capacities[i]});
  }
  return gpus;
}

std::string read_file(const char* path) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt::format("cannot read {}", path), ErrorFields{.file = path});
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Value in kB of the line "<key>:   <n> kB" in a /proc file's text, converted to bytes.
Bytes kb_field(std::string_view text, std::string_view key, std::string_view file) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.starts_with(key) || line.size() <= key.size() || line[key.size()] != ':') continue;
    std::string_view rest = line.substr(key.size() + 1);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    std::uint64_t kb = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), kb);
    std::string_view unit = rest.substr(static_cast<std::size_t>(end - rest.data()));
    if (ec != std::errc() || (unit != " kB" && !unit.empty())) {
      throw CorruptFile(fmt::format("{}: malformed {} line '{}'", file, key, line),
                        ErrorFields{.path = std::string(key),
                                    .file = std::string(file),
                                    .expected = "<number> kB",
                                    .actual = std::string(line)});
    }
    return Bytes(kb * 1024);
  }
  throw CorruptFile(fmt::format("{}: no {} line", file, key),
                    ErrorFields{.path = std::string(key), .file = std::string(file)});
}

}  // namespace

Bytes parse_meminfo_available(std::string_view text, std::string_view file) {
  return kb_field(text, "MemAvailable", file);
}

Bytes available_ram() { return parse_meminfo_available(read_file("/proc/meminfo")); }

// Note [GPU probes]
// Planning asks probe_gpus() for the GPUs' free memory. The core layer's LibTorch-free part
// (linked alone by the CLI's front end) knows only simulated GPUs from FERRY_SIM_GPUS; the
// LibTorch part (devices.cpp) installs the probe that also sees CUDA devices and the tensors a
// SimGpuScope's GPUs hold. devices.cpp is linked into every program that links ferry::core
// (FerryTargets: --undefined=ferry_core_torch_probe), so no LibTorch program plans with the
// partial probe.
namespace detail {
std::atomic<GpuProbe>& gpu_probe() {
  static std::atomic<GpuProbe> probe{&probe_without_torch};
  return probe;
}
}  // namespace detail

std::vector<Bytes> parse_sim_gpus(std::string_view text) {
  auto parse_count = [&](std::string_view s) {
    int n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || n < 0 || n > 64) {
      reject_sim(text);
    }
    return n;
  };
  try {
    const std::size_t colon = text.find(':');
    if (colon != std::string_view::npos) {
      const int n = parse_count(text.substr(0, colon));
      return std::vector<Bytes>(static_cast<std::size_t>(n), Bytes::parse(text.substr(colon + 1)));
    }
    if (text.find_first_not_of("0123456789") == std::string_view::npos) {
      return std::vector<Bytes>(static_cast<std::size_t>(parse_count(text)),
                                Bytes(kDefaultSimCapacity));
    }
    std::vector<Bytes> out;
    std::size_t start = 0;
    while (start <= text.size()) {
      const std::size_t comma = std::min(text.find(',', start), text.size());
      out.push_back(Bytes::parse(text.substr(start, comma - start)));
      start = comma + 1;
    }
    return out;
  } catch (const InvalidArgument&) {
    reject_sim(text);
  }
}

std::vector<GpuMemory> probe_gpus() { return detail::gpu_probe().load()(); }

Bytes current_rss() {
  return kb_field(read_file("/proc/self/status"), "VmRSS", "/proc/self/status");
}

Bytes peak_rss() { return kb_field(read_file("/proc/self/status"), "VmHWM", "/proc/self/status"); }

}  // namespace ferry
