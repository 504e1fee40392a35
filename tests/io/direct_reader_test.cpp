// File extents of every kind of source, and the DirectReader that reads them with pread
// (O_DIRECT or buffered): the bytes it returns are the bytes load() gives, at the offsets the
// extents name, whatever the alignment, chunking, file system or number of threads.
#include "ferry/io/direct_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <thread>
#include <unistd.h>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;

constexpr std::size_t kAlign = DirectReader::kAlignment;

// Tensors of odd sizes, so that data offsets fall anywhere within a page, one tensor spans
// several pages, and the file does not end on a page boundary.
std::vector<std::pair<std::string, at::Tensor>> odd_model() {
  return {{"a.weight", at::arange(3000, at::kFloat).reshape({30, 100}) + 0.5},
          {"b.bias", at::arange(777, at::kHalf) - 100},
          {"c.steps", at::arange(5000, at::kLong) * 7919},
          {"c.mask", at::arange(13, at::kByte)},
          {"e.scalar", at::scalar_tensor(7, at::kInt)}};
}

std::string bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// The stored bytes as load() gives them.
std::string loaded_bytes(const TensorSource& source, std::string_view name) {
  return bytes_of(source.load(name, {.copy = true}));
}

// A destination buffer aligned to kAlign, with a guard region after `capacity` to catch writes
// past it.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t capacity) : capacity_(capacity) {
    data_ = static_cast<std::byte*>(::operator new (capacity_ + kGuard, std::align_val_t{kAlign}));
    std::memset(data_ + capacity_, 0xAB, kGuard);
  }
  ~AlignedBuffer() { ::operator delete (data_, std::align_val_t{kAlign}); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  std::byte* data() const { return data_; }
  std::size_t capacity() const { return capacity_; }
  bool guard_intact() const {
    for (std::size_t i = 0; i < kGuard; ++i) {
      if (data_[capacity_ + i] != std::byte{0xAB}) return false;
    }
    return true;
  }

 private:
  static constexpr std::size_t kGuard = kAlign;
  std::size_t capacity_;
  std::byte* data_;
};

// Reads `e` into a buffer of exactly staging_bytes(e) and checks where the tensor landed.
std::string read_extent(const DirectReader& reader, const FileExtent& e) {
  AlignedBuffer buffer(reader.staging_bytes(e));
  const std::byte* tensor = reader.read(e, buffer.data(), buffer.capacity());
  const std::size_t delta = reads_whole_pages(reader.mode()) ? e.offset % kAlign : 0;
  EXPECT_EQ(tensor, buffer.data() + delta) << e.file << " @" << e.offset;
  EXPECT_TRUE(buffer.guard_intact()) << e.file << " @" << e.offset;
  return std::string(reinterpret_cast<const char*>(tensor), e.length);
}

// The bytes of `file` at [offset, offset + length), read with an ordinary stream.
std::string file_bytes(const std::filesystem::path& file, std::uint64_t offset,
                       std::uint64_t length) {
  return testing::read_file(file).substr(offset, length);
}

// Whether the file system of `file` does O_DIRECT reads, asked of the OS directly.
bool does_o_direct(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return false;
  AlignedBuffer page(kAlign);
  const bool ok = ::pread(fd, page.data(), kAlign, 0) >= 0;
  ::close(fd);
  return ok;
}

// Stores with file extents: one safetensors file, the same split into shards, and an offload
// folder with raw .dat entries.
struct Stores {
  std::shared_ptr<const SafetensorsFile> single;
  std::shared_ptr<const ShardedCheckpoint> sharded;
  std::shared_ptr<const OffloadFolder> offload;
  std::vector<std::shared_ptr<const TensorSource>> all() const {
    return {single, sharded, offload};
  }
};

Stores make_stores(const ScratchDir& dir) {
  const auto tensors = odd_model();
  save_safetensors(dir / "model.safetensors", {tensors.begin(), tensors.end()});
  std::filesystem::create_directories(dir / "sharded");
  const auto index = save_sharded(dir / "sharded", tensors, {.max_shard_size = Bytes(20'000)});
  offload_state_dict(dir / "offload", tensors);
  return {SafetensorsFile::open(dir / "model.safetensors"), ShardedCheckpoint::open(index),
          OffloadFolder::open(dir / "offload")};
}

TEST(FileExtent, SafetensorsOffsetIsDataStartPlusBegin) {
  ScratchDir dir;
  const auto file = make_stores(dir).single;
  bool unaligned = false;
  for (const SafetensorsEntry& entry : file->entries()) {
    SCOPED_TRACE(entry.info.name);
    const auto e = file->extent(entry.info.name);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->file, dir / "model.safetensors");
    EXPECT_EQ(e->offset, file->data_offset_bytes() + entry.begin_bytes);
    EXPECT_EQ(e->length, entry.info.size_bytes());
    EXPECT_EQ(e->dtype, entry.info.dtype);
    EXPECT_EQ(e->shape, entry.info.shape);
    EXPECT_EQ(file_bytes(e->file, e->offset, e->length), loaded_bytes(*file, entry.info.name));
    unaligned = unaligned || e->offset % kAlign != 0;
  }
  EXPECT_TRUE(unaligned) << "the test model should have data offsets off page boundaries";
  EXPECT_EQ(file->extent("a.weight")->dtype, DType::kF32);
  EXPECT_THAT(file->extent("a.weight")->shape, ElementsAre(30, 100));
}

TEST(FileExtent, ShardedCheckpointPointsIntoTheHoldingShard) {
  ScratchDir dir;
  const auto sharded = make_stores(dir).sharded;
  ASSERT_GT(sharded->shard_files().size(), 1u);
  for (const std::string& name : sharded->names()) {
    SCOPED_TRACE(name);
    const auto e = sharded->extent(name);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->file, sharded->file_of(name));
    const auto in_shard = sharded->shard(sharded->shard_of(name))->extent(name);
    EXPECT_EQ(e->offset, in_shard->offset);
    EXPECT_EQ(e->length, sharded->info(name).size_bytes());
    EXPECT_EQ(file_bytes(e->file, e->offset, e->length), loaded_bytes(*sharded, name));
  }
}

TEST(FileExtent, OffloadFolderRawAndInPlaceEntries) {
  ScratchDir dir;
  const at::Tensor w = at::arange(1000, at::kHalf).reshape({10, 100});
  save_safetensors(dir / "model.safetensors", {{"model.w", w}, {"model.v", at::ones({3})}});
  OffloadIndex index;
  offload_weight(at::arange(6, at::kLong), "raw", dir / "offload", index);
  // "w" is stored as F16 but the entry asks for float32: the extent keeps the stored dtype.
  index.push_back({.name = "w",
                   .dtype = DType::kF32,
                   .safetensors_file = dir / "model.safetensors",
                   .weight_name = "model.w"});
  index.push_back({.name = "model.v", .safetensors_file = "../model.safetensors"});
  const auto folder = OffloadFolder::from_index(dir / "offload", index);
  const auto model = SafetensorsFile::open(dir / "model.safetensors");

  const auto raw = folder->extent("raw");
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->file, dir / "offload" / "raw.dat");
  EXPECT_EQ(raw->offset, 0u);
  EXPECT_EQ(raw->length, 48u);
  EXPECT_EQ(raw->length, std::filesystem::file_size(raw->file));
  EXPECT_EQ(raw->dtype, DType::kI64);
  EXPECT_THAT(raw->shape, ElementsAre(6));

  const auto in_place = folder->extent("w");
  ASSERT_TRUE(in_place);
  EXPECT_EQ(folder->info("w").dtype, DType::kF32);  // what load() converts to
  EXPECT_EQ(in_place->dtype, DType::kF16);          // what the bytes are
  EXPECT_EQ(in_place->length, 2000u);
  EXPECT_THAT(in_place->shape, ElementsAre(10, 100));
  EXPECT_EQ(in_place->file, dir / "model.safetensors");
  EXPECT_EQ(in_place->offset, model->extent("model.w")->offset);
  EXPECT_EQ(file_bytes(in_place->file, in_place->offset, in_place->length), bytes_of(w));

  // A relative safetensors path and no target dtype: the file's own extent.
  const auto relative = folder->extent("model.v");
  ASSERT_TRUE(relative);
  EXPECT_EQ(relative->offset, model->extent("model.v")->offset);
  EXPECT_EQ(relative->dtype, DType::kF32);
  EXPECT_EQ(file_bytes(relative->file, relative->offset, relative->length),
            bytes_of(at::ones({3})));
}

TEST(FileExtent, PrefixedViewForwardsWithThePrefix) {
  ScratchDir dir;
  for (const auto& source : make_stores(dir).all()) {
    SCOPED_TRACE(source->description());
    const auto c = source->prefixed("c.");
    const auto e = c->extent("steps");
    ASSERT_TRUE(e);
    const auto full = source->extent("c.steps");
    EXPECT_EQ(e->file, full->file);
    EXPECT_EQ(e->offset, full->offset);
    EXPECT_EQ(e->length, 40'000u);
    EXPECT_EQ(e->dtype, DType::kI64);
    // Prefixes compose; a name outside the view is missing even where the parent has it.
    EXPECT_EQ(source->prefixed("c")->prefixed(".")->extent("mask")->offset,
              source->extent("c.mask")->offset);
    const auto missing = catch_error<MissingTensor>([&] { c->extent("a.weight"); });
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->path(), "a.weight");
    EXPECT_THAT(missing->what(), HasSubstr("prefix 'c.'"));
  }
}

TEST(FileExtent, MemorySourceHasNone) {
  const auto memory = make_memory_source({{"w", at::ones({2})}});
  EXPECT_EQ(memory->extent("w"), std::nullopt);
  EXPECT_EQ(memory->prefixed("")->extent("w"), std::nullopt);
  EXPECT_THROW(memory->extent("v"), MissingTensor);
}

TEST(FileExtent, UnknownNameIsMissingTensor) {
  ScratchDir dir;
  auto sources = make_stores(dir).all();
  sources.push_back(make_memory_source({{"w", at::ones({2})}}));
  for (const auto& source : sources) {
    SCOPED_TRACE(source->description());
    const auto e = catch_error<MissingTensor>([&] { source->extent("model.nope"); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->path(), "model.nope");
    EXPECT_THAT(e->what(), HasSubstr(source->description()));
  }
}

TEST(DirectReader, StagingBytesIsTheAlignedSuperset) {
  const DirectReader direct;
  const DirectReader buffered(ReadMode::Buffered);
  EXPECT_EQ(direct.mode(), ReadMode::Direct);
  EXPECT_EQ(direct.staging_bytes({.offset = 0, .length = 4096}), 4096u);
  EXPECT_EQ(direct.staging_bytes({.offset = 4100, .length = 10}), 4096u);
  EXPECT_EQ(direct.staging_bytes({.offset = 4090, .length = 10}), 8192u);
  EXPECT_EQ(direct.staging_bytes({.offset = 8, .length = 4096}), 8192u);
  EXPECT_EQ(direct.staging_bytes({.offset = 12288, .length = 0}), 0u);
  EXPECT_EQ(buffered.staging_bytes({.offset = 4090, .length = 10}), 10u);
}

TEST(DirectReader, ChunkSizeRoundsUpToTheAlignment) {
  DirectReader reader;
  EXPECT_EQ(reader.chunk_bytes(), std::size_t{8} << 20);
  reader.set_chunk_bytes(5000);
  EXPECT_EQ(reader.chunk_bytes(), 8192u);
  EXPECT_THROW(reader.set_chunk_bytes(0), InvalidArgument);
}

class DirectReaderModes : public ::testing::TestWithParam<ReadMode> {};

// Every tensor of every store, read with the default chunk size and with one page per chunk
// (many chunks per tensor, and a last, short O_DIRECT read at the end of each file).
TEST_P(DirectReaderModes, BytesEqualLoad) {
  ScratchDir dir;
  const Stores stores = make_stores(dir);
  EXPECT_NE(std::filesystem::file_size(dir / "model.safetensors") % kAlign, 0u);
  for (const std::size_t chunk : {std::size_t{8} << 20, kAlign}) {
    DirectReader reader(GetParam());
    reader.set_chunk_bytes(chunk);
    for (const auto& source : stores.all()) {
      for (const std::string& name : source->names()) {
        SCOPED_TRACE(fmt::format("{} in {}, chunk {}", name, source->description(), chunk));
        EXPECT_EQ(read_extent(reader, *source->extent(name)), loaded_bytes(*source, name));
      }
    }
    // No spurious fallback: direct exactly where the file system does O_DIRECT.
    for (const auto& file : {dir / "model.safetensors", dir / "offload" / "a.weight.dat"}) {
      EXPECT_EQ(reader.is_direct(file), reads_whole_pages(GetParam()) && does_o_direct(file));
    }
  }
}

TEST_P(DirectReaderModes, TruncatedFileIsCorruptFile) {
  ScratchDir dir;
  const auto path = dir / "model.safetensors";
  const auto file = make_stores(dir).single;
  // The last tensor in the file, so that truncating cuts it and nothing else.
  const std::string last = file->entries().back().info.name;
  const FileExtent e = *file->extent(last);
  ASSERT_GT(e.length, 4u);
  const DirectReader reader(GetParam());
  EXPECT_EQ(read_extent(reader, e), loaded_bytes(*file, last));  // opens the file
  std::filesystem::resize_file(path, e.offset + e.length / 2);
  AlignedBuffer buffer(reader.staging_bytes(e));
  const auto error =
      catch_error<CorruptFile>([&] { reader.read(e, buffer.data(), buffer.capacity()); });
  ASSERT_TRUE(error);
  EXPECT_EQ(error->file(), path.string());
  EXPECT_EQ(error->expected(), std::to_string(e.length));
  EXPECT_EQ(error->actual(), std::to_string(e.length / 2));
  EXPECT_THAT(error->what(), HasSubstr(path.string()));
  EXPECT_THAT(error->what(), HasSubstr(fmt::format("expected {} bytes at offset {}, got {}",
                                                   e.length, e.offset, e.length / 2)));
}

TEST_P(DirectReaderModes, ConcurrentReadsGiveCorrectBytes) {
  ScratchDir dir;
  const Stores stores = make_stores(dir);
  std::vector<std::pair<FileExtent, std::string>> expected;
  for (const auto& source : stores.all()) {
    for (const std::string& name : source->names()) {
      expected.emplace_back(*source->extent(name), loaded_bytes(*source, name));
    }
  }
  DirectReader reader(GetParam());  // fresh: the threads race to open the files too
  reader.set_chunk_bytes(8192);
  std::atomic<int> reads{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      AlignedBuffer buffer(64 * kAlign);
      for (int round = 0; round < 20; ++round) {
        for (std::size_t i = 0; i < expected.size(); ++i) {
          const auto& [e, bytes] = expected[(i + static_cast<std::size_t>(t)) % expected.size()];
          try {
            const std::byte* got = reader.read(e, buffer.data(), buffer.capacity());
            if (std::memcmp(got, bytes.data(), bytes.size()) != 0) ++wrong;
          } catch (const std::exception&) {
            ++wrong;
          }
          ++reads;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(reads, static_cast<int>(4 * 20 * expected.size()));
  EXPECT_EQ(wrong, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, DirectReaderModes,
                         ::testing::Values(ReadMode::Direct, ReadMode::Buffered, ReadMode::Auto),
                         [](const auto& p) {
                           switch (p.param) {
                             case ReadMode::Direct: return "Direct";
                             case ReadMode::Buffered: return "Buffered";
                             case ReadMode::Auto: return "Auto";
                           }
                           return "?";
                         });

// procfs refuses O_DIRECT at open (EINVAL): the reader falls back to buffered reads of that
// file, says so once at debug level, and keeps the Direct-mode buffer layout.
TEST(DirectReader, FallsBackWhereODirectIsRefused) {
  const std::filesystem::path ostype = "/proc/sys/kernel/ostype";
  if (!std::filesystem::exists(ostype)) GTEST_SKIP() << ostype << " does not exist";
  const std::string contents = testing::read_file(ostype);
  ASSERT_GE(contents.size(), 5u);
  const DirectReader reader;
  LogCapture log;
  const FileExtent e{.file = ostype, .offset = 2, .length = 3};
  EXPECT_EQ(read_extent(reader, e), contents.substr(2, 3));
  EXPECT_EQ(read_extent(reader, e), contents.substr(2, 3));
  EXPECT_FALSE(reader.is_direct(ostype));
  const auto fallbacks =
      std::count_if(log.entries().begin(), log.entries().end(), [&](const auto& m) {
        return m.level == LogLevel::kDebug &&
               m.message.find(ostype.string()) != std::string::npos &&
               m.message.find("O_DIRECT") != std::string::npos;
      });
  EXPECT_EQ(fallbacks, 1);
}

// tmpfs does O_DIRECT since Linux 6.6 and refuses it before: either way the bytes are right.
TEST(DirectReader, ReadsFromShmDirectOrNot) {
  const std::filesystem::path shm = "/dev/shm";
  if (!std::filesystem::is_directory(shm)) GTEST_SKIP() << "no /dev/shm";
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto path = shm / fmt::format("ferry_{}_{}.safetensors", test->name(), ::getpid());
  const auto tensors = odd_model();
  save_safetensors(path, {tensors.begin(), tensors.end()});
  struct Remove {
    std::filesystem::path p;
    ~Remove() { std::filesystem::remove(p); }
  } remove{path};
  const auto file = SafetensorsFile::open(path);
  const DirectReader reader;
  LogCapture log;
  for (const std::string& name : file->names()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(read_extent(reader, *file->extent(name)), loaded_bytes(*file, name));
  }
  EXPECT_EQ(reader.is_direct(path), !log.contains(LogLevel::kDebug, "O_DIRECT"));
}

TEST(DirectReader, MissingFileIsIoError) {
  ScratchDir dir;
  for (const ReadMode mode : {ReadMode::Direct, ReadMode::Buffered, ReadMode::Auto}) {
    const DirectReader reader(mode);
    AlignedBuffer buffer(kAlign);
    const FileExtent e{.file = dir / "gone.dat", .offset = 0, .length = 16};
    const auto error =
        catch_error<IoError>([&] { reader.read(e, buffer.data(), buffer.capacity()); });
    ASSERT_TRUE(error);
    EXPECT_EQ(error->file(), e.file.string());
    EXPECT_THAT(error->what(), HasSubstr("gone.dat"));
    EXPECT_THAT(error->what(), HasSubstr(std::strerror(ENOENT)));
    EXPECT_THROW(reader.is_direct(e.file), IoError);
  }
}

TEST(DirectReader, RejectsSmallOrMisalignedBuffers) {
  ScratchDir dir;
  const auto file = make_stores(dir).single;
  const FileExtent e = *file->extent("c.steps");
  const DirectReader reader;
  AlignedBuffer buffer(reader.staging_bytes(e) + kAlign);
  EXPECT_THROW(reader.read(e, buffer.data(), reader.staging_bytes(e) - 1), InvalidArgument);
  EXPECT_THROW(reader.read(e, buffer.data() + 8, reader.staging_bytes(e)), InvalidArgument);
  // Buffered reads need neither alignment nor more than the tensor's bytes.
  const DirectReader buffered(ReadMode::Buffered);
  const std::byte* got = buffered.read(e, buffer.data() + 8, e.length);
  EXPECT_EQ(got, buffer.data() + 8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got), e.length),
            loaded_bytes(*file, "c.steps"));
}

}  // namespace
}  // namespace ferry::io
