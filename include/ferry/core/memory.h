#pragma once
// Probing of the memory at hand: available RAM and, when LibTorch has CUDA, free and total
// memory of each GPU.

#include <cstdint>
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

// Resident set size of this process (VmRSS) and its peak (VmHWM), from /proc/self/status.
Bytes current_rss();
Bytes peak_rss();

}  // namespace ferry
