#pragma once
// Probing of the memory at hand: available RAM and, when LibTorch has CUDA, free and total
// memory of each GPU.

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "ferry/core/bytes.h"

namespace ferry {

struct GpuMemory {
  int index = 0;  // CUDA device index
  Bytes free;     // free bytes as the driver reports them
  Bytes total;    // total bytes of the device
};

// MemAvailable of /proc/meminfo. Throws IoError when the file cannot be read or has no such line.
Bytes available_ram();
// Parses the text of a /proc/meminfo file; throws CorruptFile naming `file` when MemAvailable is
// missing or malformed.
Bytes parse_meminfo_available(std::string_view text, std::string_view file = "/proc/meminfo");

// One entry per GPU: the simulated ones when configured (free = capacity - resident), else each
// visible CUDA GPU; empty (not an error) without CUDA or without GPUs.
std::vector<GpuMemory> probe_gpus();

// Parses FERRY_SIM_GPUS: "2" (two GPUs of 16 GiB), "2:8GiB" (two of 8 GiB each), or a list of
// capacities "8GiB,4GiB". Throws InvalidArgument quoting the text.
std::vector<Bytes> parse_sim_gpus(std::string_view text);

// Resident set size of this process (VmRSS) and its peak (VmHWM), from /proc/self/status. The
// peak is the kernel's since it was last reset: change_borrowed_pages() resets it.
Bytes current_rss();
Bytes peak_rss();

// Note [Page cache used in place] (memory.cpp): page-cache pages mapped into this process that
// ferry does not own, and the peak RSS without them.
//
// Runs `change`, which maps (delta > 0) or unmaps (delta < 0) |delta| bytes of clean page-cache
// pages into this process's page tables, and keeps the peak RSS less such pages up to date
// across it. Never throws: if /proc cannot be read or the kernel's peak cannot be reset, the
// borrowed pages stop being taken out of the peak (owned_peak_rss() then returns VmHWM).
void change_borrowed_pages(std::int64_t delta, const std::function<void()>& change) noexcept;
// The bytes of page-cache pages mapped through change_borrowed_pages() and not unmapped since.
Bytes borrowed_pages();
// The peak resident set size less the borrowed pages mapped at each moment: what this process
// held of its own. Equal to peak_rss() while nothing was borrowed.
Bytes owned_peak_rss();

}  // namespace ferry
