#include "cli/run_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "ferry/core/devices.h"
#include "ferry/core/memory.h"

namespace ferry::cli {

std::map<std::string, std::uint64_t> placed_bytes(const models::LoadedModel& loaded) {
  // Tensors on meta still have their sizes.
  std::map<std::string, std::uint64_t> placed;
  for (const auto& t : loaded.model->module().named_parameters()) {
    const auto p = loaded.device_map.placement_of(t.name);
    placed[p ? p->to_string() : "cpu"] += static_cast<std::uint64_t>(t.tensor().nbytes());
  }
  return placed;
}

std::vector<DeviceReport> device_reports(const models::LoadedModel& loaded,
                                         const models::LoadModelOptions& load,
                                         const std::map<std::string, std::uint64_t>& placed,
                                         std::uint64_t footprint) {
  std::optional<plan::MemoryBudget> budget;
  if (loaded.resolution) {
    budget = loaded.resolution->budget;
  } else if (load.dispatch.max_memory) {
    budget = *load.dispatch.max_memory;
  }
  std::vector<Placement> keys{Placement::cpu()};
  for (int i = 0; i < simulated_gpu_count(); ++i) keys.push_back(Placement::gpu(i));
  if (budget) {
    for (const auto& [p, b] : budget->entries()) {
      if (std::find(keys.begin(), keys.end(), p) == keys.end()) keys.push_back(p);
    }
  }
  if (placed.contains("disk") &&
      std::find(keys.begin(), keys.end(), Placement::disk()) == keys.end()) {
    keys.push_back(Placement::disk());
  }
  std::vector<DeviceReport> out;
  for (const Placement p : keys) {
    DeviceReport d{.key = p.to_string()};
    if (auto it = placed.find(d.key); it != placed.end()) d.placed = it->second;
    if (p.is_disk()) {
      d.peak = d.placed;  // what rests there (no budget, nothing to compare)
      out.push_back(std::move(d));
      continue;
    }
    if (p.is_cpu()) {
      d.peak = owned_peak_rss().value();
      d.page_cache_in_place = borrowed_pages().value();
    } else if (p.index() < simulated_gpu_count()) {
      d.peak = sim_gpu_stats(p.index()).peak.value();
    }
    if (budget && budget->contains(p)) d.budget = budget->at(p).value();
    if (loaded.resolution) {
      for (const plan::Reserve& r : loaded.resolution->reserves) {
        if (r.device == p) d.reserves[r.what] += r.bytes;
      }
    }
    if (d.budget) {
      d.limit = *d.budget + *d.budget / 20 + (p.is_cpu() ? footprint : 0);
      d.over = d.peak > d.limit;
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::string device_line(const DeviceReport& d) {
  std::string reserves;
  for (const auto& [what, bytes] : d.reserves) {
    reserves += fmt::format("{}{} {}", reserves.empty() ? "" : ", ", what, format_bytes(bytes));
  }
  const bool disk = d.key == "disk";
  return fmt::format(
      "{:<5} placed {:>10}  budget {:>10}  peak {:>10}{}{}{}", d.key, format_bytes(d.placed),
      d.budget ? format_bytes(*d.budget) : "-", disk ? "-" : format_bytes(d.peak),
      d.page_cache_in_place == 0
          ? ""
          : fmt::format(" (+ {} of page cache used in place)", format_bytes(d.page_cache_in_place)),
      reserves.empty() ? "" : "  reserved: " + reserves, d.over ? "  OVER BUDGET" : "");
}

std::uint64_t runtime_footprint() {
  {
    // The BLAS and thread pools allocate their per-thread buffers once, at first use.
    const at::Tensor a = at::randn({256, 256});
    const at::Tensor w = at::randn({256, 256});
    at::Tensor x = at::linear(a, w);
    x = at::softmax(at::matmul(x, x.t()), -1);
    x = at::silu(x) * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6);
    (void)x.sum().item<float>();
  }
  // Plus ferry's own bookkeeping, which grows with the number of tensors and not with the
  // budget: modules and hooks, checkpoint headers, allocator caches (a few MiB on small models).
  constexpr std::uint64_t kBookkeepingBytes = std::uint64_t{16} << 20;
  return current_rss().value() + kBookkeepingBytes;
}

std::string blas_in_use() {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return "unknown";
  std::string found = "unknown";
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    const std::string_view l(line);
    if (l.find("openblas") != std::string_view::npos) {
      found = "OpenBLAS";
      break;
    }
    if (l.find("libmkl") != std::string_view::npos) {
      found = "MKL";
      break;
    }
    if (l.find("/libblas.so") != std::string_view::npos) found = "reference BLAS (slow)";
  }
  std::fclose(f);
  return found;
}

std::string reserve_summary(const plan::Resolution& r, Placement device) {
  std::string out;
  for (const plan::Reserve& reserve : r.reserves) {
    if (reserve.device != device) continue;
    out +=
        fmt::format("{}{} {}", out.empty() ? "" : ", ", reserve.what, format_bytes(reserve.bytes));
  }
  return out.empty() ? "none" : out;
}

}  // namespace ferry::cli
