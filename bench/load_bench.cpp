// P7: checkpoint load to CPU. Writes a sharded safetensors checkpoint (default 1 GiB), then, with
// the page cache dropped for its files before each run (posix_fadvise DONTNEED, no root needed),
// reads every tensor into owned CPU memory and compares the time with `dd` reading the same files
// in the same run (target ≤ 1.1×). Also times open-and-view (headers + zero-copy views; target:
// independent of size, ≤ 50 ms for 1 GiB) for the whole checkpoint and for a small one.
//
//   bench_load [--size-mib 1024] [--shard-mib 256] [--dir /tmp/ferry_bench_load] [--runs 3]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "ferry/core/bytes.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/sharded.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::filesystem::path> checkpoint_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    if (item.path().extension() == ".safetensors") files.push_back(item.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Drops the files' clean pages from the page cache.
void evict(const std::vector<std::filesystem::path>& files) {
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Writes a checkpoint of `size_mib` MiB in tensors of 32 MiB (F16, as LLM weights) plus small
// norms, split into shards of `shard_mib` MiB.
void write_checkpoint(const std::filesystem::path& dir, std::int64_t size_mib,
                      std::int64_t shard_mib) {
  std::filesystem::remove_all(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const std::int64_t n_big = size_mib / 32;
  for (std::int64_t i = 0; i < n_big; ++i) {
    // 4096 × 4096 × 2 bytes = 32 MiB; distinct values so pages are not deduplicated anywhere.
    tensors.emplace_back(fmt::format("model.layers.{}.mlp.weight", i),
                         at::full({4096, 4096}, static_cast<double>(i), at::kHalf));
    tensors.emplace_back(fmt::format("model.layers.{}.norm.weight", i), at::ones({4096}));
  }
  ferry::io::save_sharded(
      dir, tensors, {.max_shard_size = ferry::Bytes(static_cast<std::uint64_t>(shard_mib) << 20)});
}

double time_dd(const std::vector<std::filesystem::path>& files) {
  const auto start = Clock::now();
  for (const auto& f : files) {
    const std::string command =
        fmt::format("dd if='{}' of=/dev/null bs=16M status=none", f.string());
    if (std::system(command.c_str()) != 0) throw std::runtime_error("dd failed");
  }
  return seconds_since(start);
}

// Reads every tensor into memory it owns (LoadOptions::copy): the bytes really leave the disk.
double time_load(const std::filesystem::path& dir, std::uint64_t& bytes) {
  const auto start = Clock::now();
  const auto source = ferry::io::open_checkpoint(dir);
  bytes = 0;
  for (const std::string& name : source->names()) {
    const at::Tensor t = source->load(name, {.copy = true});
    bytes += static_cast<std::uint64_t>(t.nbytes());
  }
  return seconds_since(start);
}

// Opens the checkpoint and makes a zero-copy view of every tensor; touches no data page.
double time_open_and_view(const std::filesystem::path& dir) {
  const auto start = Clock::now();
  const auto source = ferry::io::open_checkpoint(dir);
  std::size_t n = 0;
  for (const std::string& name : source->names()) n += source->load(name).defined() ? 1 : 0;
  const double s = seconds_since(start);
  if (n != source->names().size()) throw std::runtime_error("view failed");
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t size_mib = 1024;
  std::int64_t shard_mib = 256;
  int runs = 3;
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "ferry_bench_load";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--size-mib") size_mib = std::stoll(argv[i + 1]);
    if (flag == "--shard-mib") shard_mib = std::stoll(argv[i + 1]);
    if (flag == "--runs") runs = std::stoi(argv[i + 1]);
    if (flag == "--dir") dir = argv[i + 1];
  }
  fmt::print("writing a {} MiB checkpoint in {} MiB shards to {}\n", size_mib, shard_mib,
             dir.string());
  write_checkpoint(dir, size_mib, shard_mib);
  write_checkpoint(dir / "small", 32, 32);
  const auto files = checkpoint_files(dir);
  const auto small_files = checkpoint_files(dir / "small");

  std::vector<double> dd, load, open_big, open_small, open_warm;
  std::uint64_t bytes = 0;
  for (int r = 0; r < runs; ++r) {
    evict(files);
    dd.push_back(time_dd(files));
    evict(files);
    load.push_back(time_load(dir, bytes));
    evict(files);
    evict(small_files);
    open_big.push_back(time_open_and_view(dir));
    open_small.push_back(time_open_and_view(dir / "small"));
    open_warm.push_back(time_open_and_view(dir));
  }
  const double gib = static_cast<double>(bytes) / (1 << 30);
  fmt::print("cold read, median of {} runs ({:.2f} GiB in {} files):\n", runs, gib, files.size());
  fmt::print("  dd bs=16M            {:7.3f} s  {:6.2f} GiB/s\n", median(dd), gib / median(dd));
  fmt::print("  ferry load (copy)    {:7.3f} s  {:6.2f} GiB/s\n", median(load), gib / median(load));
  fmt::print("  ratio ferry / dd     {:7.3f}   (target <= 1.10)\n", median(load) / median(dd));
  fmt::print("open + zero-copy view of every tensor (cold cache):\n");
  fmt::print("  {:5} MiB checkpoint  {:7.2f} ms\n", size_mib, 1e3 * median(open_big));
  fmt::print("  {:5} MiB checkpoint  {:7.2f} ms  (target: independent of size, <= 50 ms)\n", 32,
             1e3 * median(open_small));
  fmt::print("  {:5} MiB checkpoint  {:7.2f} ms  warm page cache\n", size_mib,
             1e3 * median(open_warm));
  std::filesystem::remove_all(dir);
  return 0;
}
