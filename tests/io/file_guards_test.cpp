// What io refuses or survives in the files it opens: FIFOs and devices (refused before a read
// could block), text files too large to read, a checkpoint truncated under a live mapping
// (Note [Truncated while mapped]), and the number of descriptors held while many files are in
// use (Note [Bounded descriptors]).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "ferry/core/error.h"
#include "ferry/io/direct_reader.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::HasSubstr;
using testing::ScratchDir;

// Runs `f` in a child process killed after 10 s, so a call that blocks fails the test instead
// of hanging it; `f` must throw IoError naming `file` and saying `kind`.
template <class F>
void expect_refused_without_blocking(F f, const std::filesystem::path& file,
                                     const std::string& kind) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::alarm(10);
        try {
          f();
        } catch (const IoError& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(e.file() == file.string() ? 0 : 2);
        }
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(0), "is not a regular file \\(" + kind + "\\)");
}

class FifoInput : public ::testing::Test {
 protected:
  std::filesystem::path fifo(const std::string& name) const {
    const auto path = dir_ / name;
    EXPECT_EQ(::mkfifo(path.c_str(), 0600), 0);
    return path;
  }
  ScratchDir dir_;
};

TEST_F(FifoInput, SafetensorsFile) {
  const auto path = fifo("model.safetensors");
  expect_refused_without_blocking([&] { SafetensorsFile::open(path); }, path, "a FIFO");
}

TEST_F(FifoInput, ShardedIndex) {
  const auto path = fifo("model.safetensors.index.json");
  expect_refused_without_blocking([&] { ShardedCheckpoint::open(path); }, path, "a FIFO");
}

TEST_F(FifoInput, OffloadedDatFile) {
  testing::write_file(dir_ / "index.json", R"({"w": {"dtype": "float32", "shape": [2]}})");
  const auto path = fifo("w.dat");
  expect_refused_without_blocking([&] { OffloadFolder::open(dir_.path())->load("w"); }, path,
                                  "a FIFO");
}

TEST_F(FifoInput, DirectReaderBothModes) {
  const auto path = fifo("w.dat");
  const FileExtent e{.file = path, .offset = 0, .length = 8, .dtype = DType::kF32, .shape = {2}};
  for (ReadMode mode : {ReadMode::Direct, ReadMode::Buffered}) {
    expect_refused_without_blocking(
        [&] {
          const DirectReader reader(mode);
          auto* buffer = static_cast<std::byte*>(
              ::operator new(DirectReader::kAlignment, std::align_val_t{DirectReader::kAlignment}));
          reader.read(e, buffer, DirectReader::kAlignment);
        },
        path, "a FIFO");
  }
}

TEST(DeviceInput, DevZeroAsAnIndexIsRefused) {
  ScratchDir dir;
  const auto index = dir / "model.safetensors.index.json";
  std::filesystem::create_symlink("/dev/zero", index);
  expect_refused_without_blocking([&] { ShardedCheckpoint::open(index); }, index,
                                  "a character device");
}

TEST(TextInput, IndexLargerThanTheLimitIsRefusedUnread) {
  ScratchDir dir;
  const auto index = dir / "model.safetensors.index.json";
  testing::write_file(index, "{}");
  std::filesystem::resize_file(index, (std::uint64_t{64} << 20) + 1);  // sparse: no disk used
  const auto e = catch_error<IoError>([&] { ShardedCheckpoint::open(index); });
  ASSERT_TRUE(e) << "a 64 MiB + 1 index was read";
  EXPECT_EQ(e->file(), index.string());
  EXPECT_THAT(e->what(), HasSubstr("too large"));
  EXPECT_EQ(e->expected(), fmt::format("at most {} bytes", std::uint64_t{64} << 20));
  EXPECT_EQ(e->actual(), fmt::format("{} bytes", (std::uint64_t{64} << 20) + 1));
}

// Note [Truncated while mapped]
TEST(TruncatedWhileMapped, ExitsNamingTheFileInsteadOfDyingSilently) {
  ScratchDir dir;
  const auto path = dir / "model.safetensors";
  save_safetensors(path, {{"w", at::ones({64 * 1024})}});  // 256 KiB of data
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto file = SafetensorsFile::open(path);
        const at::Tensor w = file->load("w");  // a view of the mapping
        std::filesystem::resize_file(path, 4096);
        volatile float last = w.data_ptr<float>()[w.numel() - 1];
        (void)last;
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(135),
      "ferry: [^ ]*model\\.safetensors changed or was truncated while mapped \\(SIGBUS at "
      "offset [0-9]+\\)");
}

TEST(TruncatedWhileMapped, AnotherSigbusKeepsItsDefaultAction) {
  ScratchDir dir;
  const auto path = dir / "model.safetensors";
  save_safetensors(path, {{"w", at::ones({4})}});
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto file = SafetensorsFile::open(path);  // installs the handler
        std::raise(SIGBUS);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> many_tensors(int n) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(fmt::format("t{}", i), at::full({4}, float(i)));
  return out;
}

// Note [Bounded descriptors]
TEST(Descriptors, LoadedOffloadedTensorsHoldNone) {
  ScratchDir dir;
  const auto tensors = many_tensors(300);
  offload_state_dict(dir.path(), tensors);
  const std::size_t before = open_descriptors();
  const auto folder = OffloadFolder::open(dir.path());
  std::vector<at::Tensor> loaded;
  for (const auto& [name, tensor] : tensors) loaded.push_back(folder->load(name));
  EXPECT_LE(open_descriptors(), before + 4) << "descriptors held by 300 loaded .dat tensors";
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    EXPECT_TRUE(at::equal(loaded[i], tensors[i].second));
  }
}

TEST(Descriptors, OpenSafetensorsFilesHoldNone) {
  ScratchDir dir;
  for (int i = 0; i < 200; ++i) {
    save_safetensors(dir / fmt::format("m{}.safetensors", i), {{"w", at::full({4}, float(i))}});
  }
  const std::size_t before = open_descriptors();
  std::vector<std::shared_ptr<const SafetensorsFile>> files;
  for (int i = 0; i < 200; ++i) {
    files.push_back(SafetensorsFile::open(dir / fmt::format("m{}.safetensors", i)));
  }
  EXPECT_LE(open_descriptors(), before + 4);
  // A copying load reads with pread, opening the file for the call.
  EXPECT_TRUE(at::equal(files[7]->load("w", {.copy = true}), at::full({4}, 7.0F)));
  EXPECT_LE(open_descriptors(), before + 4);
}

TEST(Descriptors, DirectReaderKeepsTheMostRecentlyUsedOpen) {
  ScratchDir dir;
  const auto tensors = many_tensors(300);
  offload_state_dict(dir.path(), tensors);
  const auto folder = OffloadFolder::open(dir.path());
  const std::size_t before = open_descriptors();
  for (ReadMode mode : {ReadMode::Direct, ReadMode::Buffered}) {
    const DirectReader reader(mode);
    auto* buffer = static_cast<std::byte*>(
        ::operator new(DirectReader::kAlignment, std::align_val_t{DirectReader::kAlignment}));
    // Twice over: the second round reopens files the first closed.
    for (int round = 0; round < 2; ++round) {
      for (const auto& [name, tensor] : tensors) {
        const FileExtent e = *folder->extent(name);
        const std::byte* bytes = reader.read(e, buffer, DirectReader::kAlignment);
        EXPECT_EQ(std::memcmp(bytes, tensor.data_ptr(), 16), 0) << name;
      }
    }
    EXPECT_LE(reader.open_files(), DirectReader::kMaxOpenFiles);
    EXPECT_LE(open_descriptors(), before + 2 * DirectReader::kMaxOpenFiles);
    ::operator delete(buffer, std::align_val_t{DirectReader::kAlignment});
  }
  EXPECT_LE(open_descriptors(), before + 4);
}

// In a child process: loads every tensor of `folder` with fewer descriptors allowed than it has
// files, as under `ulimit -n`. Exits 0 when all load.
[[noreturn]] void load_all_under_a_low_ulimit(const std::filesystem::path& folder, int n) {
  rlimit current{};
  ::getrlimit(RLIMIT_NOFILE, &current);
  const rlimit lowered{.rlim_cur = open_descriptors() + 100, .rlim_max = current.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &lowered) != 0) std::_Exit(3);
  try {
    const auto offload = OffloadFolder::open(folder);
    std::vector<at::Tensor> loaded;
    for (int i = 0; i < n; ++i) loaded.push_back(offload->load(fmt::format("t{}", i)));
    std::_Exit(0);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::_Exit(1);
  }
}

TEST(Descriptors, ALowUlimitDoesNotStopAManyFileLoad) {
  ScratchDir dir;
  offload_state_dict(dir.path(), many_tensors(300));
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(load_all_under_a_low_ulimit(dir.path(), 300), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace ferry::io
