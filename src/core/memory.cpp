#include "ferry/core/memory.h"

#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

#include "core/gpu_probe.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"

namespace ferry {
namespace {

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

std::vector<GpuMemory> probe_gpus() {
  if (!gpus_simulated()) return detail::probe_cuda_gpus();
  std::vector<GpuMemory> gpus;
  for (int i = 0; i < simulated_gpu_count(); ++i) {
    const SimGpuStats s = sim_gpu_stats(i);
    gpus.push_back(
        {.index = i, .free = Bytes(s.capacity.value() - s.resident.value()), .total = s.capacity});
  }
  return gpus;
}

Bytes current_rss() {
  return kb_field(read_file("/proc/self/status"), "VmRSS", "/proc/self/status");
}

Bytes peak_rss() { return kb_field(read_file("/proc/self/status"), "VmHWM", "/proc/self/status"); }

}  // namespace ferry
