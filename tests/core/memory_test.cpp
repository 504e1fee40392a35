#include "ferry/core/memory.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"

namespace ferry {
namespace {

TEST(Memory, ParsesMemAvailable) {
  const std::string text =
      "MemTotal:       24589360 kB\nMemFree:        23000000 kB\nMemAvailable:   "
      "22000000 kB\nBuffers:           1000 kB\n";
  EXPECT_EQ(parse_meminfo_available(text).value(), 22000000ULL * 1024);
}

TEST(Memory, MissingOrMalformedMemAvailableIsCorruptFile) {
  EXPECT_THROW(parse_meminfo_available("MemTotal: 5 kB\n", "meminfo"), CorruptFile);
  try {
    parse_meminfo_available("MemAvailable: lots kB\n", "meminfo");
    FAIL();
  } catch (const CorruptFile& e) {
    EXPECT_EQ(e.file(), "meminfo");
    EXPECT_NE(std::string(e.what()).find("MemAvailable"), std::string::npos);
  }
  // A key that merely starts the same way is not the field.
  EXPECT_THROW(parse_meminfo_available("MemAvailableX: 5 kB\n"), CorruptFile);
}

TEST(Memory, ProbesThisMachine) {
  EXPECT_GT(available_ram().value(), 0U);
  EXPECT_GT(current_rss().value(), 0U);
  EXPECT_GE(peak_rss(), current_rss());
  // Without CUDA (or without GPUs) probing reports zero GPUs without error.
  const auto gpus = probe_gpus();
  for (const auto& g : gpus) EXPECT_LE(g.free, g.total);
}

}  // namespace
}  // namespace ferry
