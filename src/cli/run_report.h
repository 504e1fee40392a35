#pragma once
// What `ferry run` reports about memory: per device, the bytes placed there, its budget and
// reserves, its peak, and whether the peak kept the promise (≤ 1.05 × budget, plus the runtime's
// own memory on the CPU).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ferry/models/registry.h"

namespace ferry::cli {

struct DeviceReport {
  std::string key;  // "cpu", "0", "disk"
  std::uint64_t placed = 0;
  std::optional<std::uint64_t> budget;
  std::map<std::string, std::uint64_t> reserves;
  // The CPU: peak RSS less the page cache used in place (owned_peak_rss()); a simulated GPU: its
  // counter; disk: placed.
  std::uint64_t peak = 0;
  // The CPU: page-cache pages mapped in place at the end (borrowed_pages()): in RSS but neither
  // ferry's memory nor counted against the budget (Note [Page cache used in place]).
  std::uint64_t page_cache_in_place = 0;
  std::uint64_t limit = 0;
  bool over = false;
};

// Bytes resting on each placement of the loaded model's map ("cpu" for unmapped tensors).
std::map<std::string, std::uint64_t> placed_bytes(const models::LoadedModel& loaded);

// One report per device: the CPU, every simulated GPU, every budgeted device, and disk when
// weights rest there.
std::vector<DeviceReport> device_reports(const models::LoadedModel& loaded,
                                         const models::LoadModelOptions& load,
                                         const std::map<std::string, std::uint64_t>& placed,
                                         std::uint64_t footprint);

// "cpu    placed 1.20 MiB  budget 700.00 KiB  peak 190.00 MiB  reserved: kv cache 16.00 KiB":
// one line per device.
std::string device_line(const DeviceReport& d);

// What the process holds beside its data (the runtime's own memory, the CPU budget's baseline),
// measured before any weight is loaded after a warm-up of the kernels a forward uses.
std::uint64_t runtime_footprint();

// The BLAS LibTorch's CPU kernels call, from the libraries mapped into this process.
std::string blas_in_use();

// "kv cache 1.00 MiB, activations 2.00 MiB" for `device`'s reserves, or "none".
std::string reserve_summary(const plan::Resolution& r, Placement device);

}  // namespace ferry::cli
