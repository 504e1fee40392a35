// Read bandwidth for the prefetcher's defaults: one file read cold (page cache dropped before
// each run) by `dd bs=4M iflag=direct` and by DirectReader in Direct, Buffered and Auto mode,
// with chunk sizes of 1, 4 and 16 MiB and 1, 2 and 4 threads. The threads share one reader and
// take 64 MiB blocks in turn (disjoint ranges), each into its own reused aligned buffer, as the
// prefetcher's workers do. Then the three modes again, one thread and 16 MiB chunks, with the
// file warm (read through the page cache before each run): Auto should match Buffered warm and
// Direct cold (Note [Reading what the page cache holds]). Prints GB/s (10^9 bytes per second;
// median, min and max over the rounds), the ratio of medians to dd, and Auto's ratios to the
// other modes in the same state.
//
// The page cache is dropped with `sync; echo 3 > /proc/sys/vm/drop_caches` when that works
// (root), else per file with posix_fadvise(DONTNEED); the table says which, or "warm" when
// neither worked.
//
//   bench_read [--file F] [--size-mib 1024] [--dir D] [--runs 3]
//
// Without --file it writes a temporary file of --size-mib MiB into D (default: the folder of
// this executable, i.e. the build folder's disk) and removes it at the end.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

#include "ferry/io/direct_reader.h"

namespace {

using Clock = std::chrono::steady_clock;
using ferry::io::DirectReader;
using ferry::io::FileExtent;
using ferry::io::ReadMode;

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
constexpr std::uint64_t kBlockBytes = 64 * kMiB;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Empties the page cache of `file`; returns how ("cold (drop_caches)", "cold (fadvise)") or
// "warm" when it could not.
std::string drop_cache(const std::filesystem::path& file) {
  if (::geteuid() == 0) {
    ::sync();
    std::ofstream drop("/proc/sys/vm/drop_caches");
    drop << "3" << std::flush;
    if (drop.good()) return "cold (drop_caches)";
  }
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) return "warm";
  ::fdatasync(fd);
  const bool ok = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
  ::close(fd);
  return ok ? "cold (fadvise)" : "warm";
}

// Reads all of `file` through the page cache so that it is resident; returns "warm".
std::string warm_cache(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + file.string());
  std::vector<char> buffer(16 * kMiB);
  while (::read(fd, buffer.data(), buffer.size()) > 0) {
  }
  ::close(fd);
  return "warm";
}

const char* mode_name(ReadMode mode) {
  switch (mode) {
    case ReadMode::Direct: return "Direct";
    case ReadMode::Buffered: return "Buffered";
    case ReadMode::Auto: return "Auto";
  }
  return "?";
}

// Writes `size_mib` MiB of non-repeating bytes to `file` and syncs it.
void write_file(const std::filesystem::path& file, std::uint64_t size_mib) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + file.string());
  std::vector<std::uint64_t> block(16 * kMiB / sizeof(std::uint64_t));
  std::uint64_t counter = 0x9E3779B97F4A7C15ULL;
  for (std::uint64_t written = 0; written < size_mib * kMiB; written += 16 * kMiB) {
    for (auto& word : block) word = (counter += 0x9E3779B97F4A7C15ULL) * 0xBF58476D1CE4E5B9ULL;
    const auto n = static_cast<std::size_t>(std::min(16 * kMiB, size_mib * kMiB - written));
    if (::write(fd, block.data(), n) != static_cast<ssize_t>(n)) {
      throw std::runtime_error("cannot write " + file.string());
    }
  }
  ::fsync(fd);
  ::close(fd);
}

// Runs dd with O_DIRECT and returns its bandwidth in GB/s, from dd's own byte count and time.
double dd_direct_gbps(const std::filesystem::path& file) {
  const std::string command =
      fmt::format("dd if='{}' of=/dev/null bs=4M iflag=direct 2>&1", file.string());
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run dd");
  std::string output;
  char line[512];
  while (std::fgets(line, sizeof line, pipe) != nullptr) output += line;
  if (::pclose(pipe) != 0) throw std::runtime_error("dd failed: " + output);
  // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.1 s, 511 MB/s"
  const auto copied = output.find(" copied, ");
  const auto bytes_at = output.rfind('\n', copied);
  if (copied == std::string::npos) throw std::runtime_error("cannot parse dd: " + output);
  const double bytes =
      std::strtod(output.c_str() + (bytes_at == std::string::npos ? 0 : bytes_at + 1), nullptr);
  const double seconds = std::strtod(output.c_str() + copied + 9, nullptr);
  if (bytes <= 0 || seconds <= 0) throw std::runtime_error("cannot parse dd: " + output);
  return bytes / seconds / 1e9;
}

// An aligned buffer a reader thread reuses for every block, touched before timing starts.
struct Buffer {
  explicit Buffer(std::size_t n) : size(n) {
    data = static_cast<std::byte*>(::operator new (n, std::align_val_t{DirectReader::kAlignment}));
    std::memset(data, 0, n);
  }
  ~Buffer() { ::operator delete (data, std::align_val_t{DirectReader::kAlignment}); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::byte* data;
  std::size_t size;
};

// Reads the whole file in 64 MiB blocks with `threads` threads sharing one reader; GB/s.
double reader_gbps(const std::filesystem::path& file, std::uint64_t file_bytes, ReadMode mode,
                   std::uint64_t chunk_bytes, int threads) {
  DirectReader reader(mode);
  reader.set_chunk_bytes(static_cast<std::size_t>(chunk_bytes));
  reader.is_direct(file);  // opens the file outside the timed part
  std::vector<std::unique_ptr<Buffer>> buffers;
  for (int t = 0; t < threads; ++t) {
    buffers.push_back(std::make_unique<Buffer>(
        reader.staging_bytes(FileExtent{.offset = 0, .length = kBlockBytes})));
  }
  const std::uint64_t n_blocks = (file_bytes + kBlockBytes - 1) / kBlockBytes;
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> total{0};
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::uint64_t b = next++; b < n_blocks; b = next++) {
        const std::uint64_t offset = b * kBlockBytes;
        const FileExtent e{
            .file = file, .offset = offset, .length = std::min(kBlockBytes, file_bytes - offset)};
        reader.read(e, buffers[static_cast<std::size_t>(t)]->data,
                    buffers[static_cast<std::size_t>(t)]->size);
        total += e.length;
      }
    });
  }
  for (auto& thread : pool) thread.join();
  const double s = seconds_since(start);
  if (total != file_bytes) throw std::runtime_error("read fewer bytes than the file holds");
  return static_cast<double>(total) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path file;
  std::uint64_t size_mib = 1024;
  int runs = 3;
  std::filesystem::path dir = std::filesystem::canonical("/proc/self/exe").parent_path();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--file") file = argv[i + 1];
    if (flag == "--size-mib") size_mib = std::stoull(argv[i + 1]);
    if (flag == "--dir") dir = argv[i + 1];
    if (flag == "--runs") runs = std::max(1, std::stoi(argv[i + 1]));
  }
  const bool temporary = file.empty();
  if (temporary) {
    file = dir / fmt::format("ferry_read_bench_{}.bin", ::getpid());
    fmt::print("writing {} MiB to {}\n", size_mib, file.string());
    write_file(file, size_mib);
  }
  const std::uint64_t file_bytes = std::filesystem::file_size(file);
  {
    const DirectReader probe;
    fmt::print("file {} ({:.2f} GiB), O_DIRECT {}\n", file.string(),
               static_cast<double>(file_bytes) / (1 << 30),
               probe.is_direct(file) ? "supported" : "refused (Direct mode falls back)");
  }

  // Every configuration once per round, rounds repeated: drift in the disk's speed over the
  // minutes of the run spreads over all rows instead of biasing the ones measured last.
  struct Row {
    std::string label;
    std::function<double()> run;  // GB/s
    bool warm = false;            // file read into the page cache before each run (else dropped)
    std::vector<double> gbps;
  };
  std::vector<Row> rows;
  rows.push_back({"dd bs=4M iflag=direct", [&] { return dd_direct_gbps(file); }, false, {}});
  for (const ReadMode mode : {ReadMode::Direct, ReadMode::Buffered, ReadMode::Auto}) {
    for (const std::uint64_t chunk_mib : {1, 4, 16}) {
      for (const int threads : {1, 2, 4}) {
        rows.push_back({fmt::format("{:<8} chunk {:>2} MiB, {} thread{}", mode_name(mode),
                                    chunk_mib, threads, threads == 1 ? "" : "s"),
                        [&, mode, chunk_mib, threads] {
                          return reader_gbps(file, file_bytes, mode, chunk_mib * kMiB, threads);
                        },
                        false,
                        {}});
      }
    }
  }
  for (const ReadMode mode : {ReadMode::Direct, ReadMode::Buffered, ReadMode::Auto}) {
    rows.push_back({fmt::format("{:<8} chunk 16 MiB, 1 thread, warm", mode_name(mode)),
                    [&, mode] { return reader_gbps(file, file_bytes, mode, 16 * kMiB, 1); },
                    true,
                    {}});
  }
  std::string cache;
  for (int r = 0; r < runs; ++r) {
    for (Row& row : rows) {
      if (row.warm) {
        warm_cache(file);
      } else {
        cache = drop_cache(file);
      }
      row.gbps.push_back(row.run());
    }
  }
  const double dd_gbps = median(rows.front().gbps);
  fmt::print("cache before each run: {}; {} rounds\n\n", cache, runs);
  fmt::print("{:<40} {:>8} {:>8} {:>8} {:>8}\n", "reader", "GB/s", "min", "max", "vs dd");
  for (const Row& row : rows) {
    fmt::print("{:<40} {:8.3f} {:8.3f} {:8.3f} {:8.2f}\n", row.label, median(row.gbps),
               *std::min_element(row.gbps.begin(), row.gbps.end()),
               *std::max_element(row.gbps.begin(), row.gbps.end()), median(row.gbps) / dd_gbps);
  }
  const auto med = [&](std::string_view label) {
    for (const Row& row : rows) {
      if (row.label == label) return median(row.gbps);
    }
    throw std::logic_error("no row " + std::string(label));
  };
  fmt::print("\nAuto vs the others (medians, 16 MiB chunks, 1 thread):\n");
  fmt::print("  cold: Auto / Direct   {:6.2f}   Auto / Buffered {:6.2f}\n",
             med("Auto     chunk 16 MiB, 1 thread") / med("Direct   chunk 16 MiB, 1 thread"),
             med("Auto     chunk 16 MiB, 1 thread") / med("Buffered chunk 16 MiB, 1 thread"));
  fmt::print(
      "  warm: Auto / Buffered {:6.2f}   Auto / Direct   {:6.2f}\n",
      med("Auto     chunk 16 MiB, 1 thread, warm") / med("Buffered chunk 16 MiB, 1 thread, warm"),
      med("Auto     chunk 16 MiB, 1 thread, warm") / med("Direct   chunk 16 MiB, 1 thread, warm"));
  if (cache == "warm") fmt::print("\nwarning: the page cache could not be dropped (warm reads)\n");
  if (temporary) std::filesystem::remove(file);
  return 0;
}
