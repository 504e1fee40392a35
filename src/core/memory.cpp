#include "ferry/core/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
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

// Note [Page cache used in place]
// A CPU block may compute from the page cache's own pages of an offloaded tensor (Note [Weights
// used in place], direct_reader.cpp). Those pages join the process's RSS, as file pages, yet they
// are not ferry's memory: they were in the page cache before, stay there after, are clean, and the
// kernel reclaims them under pressure like any cached page (in a memory cgroup they are charged to
// whoever read them first, and never make it kill). The CPU budget is a promise about what ferry
// holds, so the run reports the peak RSS less those pages, and those pages beside it.
// - The kernel keeps one peak, VmHWM, over all of RSS. To take the borrowed pages out of it
//   exactly, every change of the borrowed pages is bracketed under one lock: the peak so far less
//   the pages borrowed is recorded, the kernel's peak is reset to the current RSS (writing "5" to
//   /proc/self/clear_refs), the pages are mapped (populated at once, so that none is mapped
//   before it is counted) or unmapped, the peak of that short window less the larger of the
//   counts before and after is recorded, and the kernel's peak is reset again. Between changes the
//   borrowed count is constant, so VmHWM less it is the exact peak of the rest.
// - Changes are rare: a page is counted once, when its tensor is first used in place, and
//   uncounted when its file's mapping is closed; not on every forward.
// - If the kernel reclaims a borrowed page while it is mapped, RSS falls below the count and the
//   peak reported is low by that page until it is faulted in again; this happens only under
//   memory pressure, when the kernel is taking pages back anyway.
// - If the peak cannot be reset (no /proc/self/clear_refs), nothing is taken out: the report
//   shows the whole VmHWM, which can only overstate.
namespace {

struct Borrowed {
  std::mutex mu;
  std::uint64_t bytes = 0;
  std::uint64_t owned_peak = 0;  // max of (VmHWM - borrowed) over the windows closed so far
  bool exact = true;             // false once the kernel's peak could not be read or reset
};

Borrowed& borrowed() {
  static Borrowed b;
  return b;
}

bool reset_kernel_peak() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

// Closes a window: records its peak less `less`, then resets the kernel's peak. Caller holds mu.
void close_window(Borrowed& b, std::uint64_t less) {
  if (!b.exact) return;
  try {
    const std::uint64_t hwm = peak_rss().value();
    b.owned_peak = std::max(b.owned_peak, hwm > less ? hwm - less : 0);
    b.exact = reset_kernel_peak();
  } catch (const Error&) {
    b.exact = false;
  }
}

}  // namespace

void change_borrowed_pages(std::int64_t delta, const std::function<void()>& change) noexcept {
  Borrowed& b = borrowed();
  std::lock_guard lock(b.mu);
  const std::uint64_t before = b.bytes;
  const std::uint64_t magnitude =
      delta < 0 ? static_cast<std::uint64_t>(-(delta + 1)) + 1 : static_cast<std::uint64_t>(delta);
  const std::uint64_t after = delta < 0 ? before - std::min(before, magnitude) : before + magnitude;
  close_window(b, before);
  try {
    change();
  } catch (...) {
    // What was mapped is unknown: stop taking anything out of the peak (it can then only be
    // overstated).
    b.exact = false;
  }
  close_window(b, std::max(before, after));
  b.bytes = after;
}

Bytes borrowed_pages() {
  Borrowed& b = borrowed();
  std::lock_guard lock(b.mu);
  return Bytes(b.bytes);
}

Bytes owned_peak_rss() {
  Borrowed& b = borrowed();
  std::lock_guard lock(b.mu);
  const std::uint64_t hwm = peak_rss().value();
  if (!b.exact) return Bytes(std::max(b.owned_peak, hwm));
  return Bytes(std::max(b.owned_peak, hwm > b.bytes ? hwm - b.bytes : 0));
}

}  // namespace ferry
