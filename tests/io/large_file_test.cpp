#include <gtest/gtest.h>

#include <filesystem>

#include "ferry/core/memory.h"
#include "ferry/io/safetensors.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

// A checkpoint larger than RAM (a sparse file: no disk space used) opens, and its header is
// read, without the mapping being charged against memory.
TEST(LargeFile, CheckpointLargerThanRamOpens) {
  testing::ScratchDir dir;
  const std::uint64_t data_bytes = 4 * available_ram().value() + (1ULL << 30);
  const std::string header = "{\"huge\":{\"dtype\":\"U8\",\"shape\":[" +
                             std::to_string(data_bytes) + "],\"data_offsets\":[0," +
                             std::to_string(data_bytes) + "]}}";
  const auto path = dir / "huge.safetensors";
  const std::string head = testing::safetensors_bytes(header);
  testing::write_file(path, head);
  std::filesystem::resize_file(path, head.size() + data_bytes);
  const auto file = SafetensorsFile::open(path);
  const TensorInfo info = file->info("huge");
  EXPECT_EQ(info.size_bytes(), data_bytes);
  EXPECT_EQ(info.dtype, DType::kU8);
}

}  // namespace
}  // namespace ferry::io
