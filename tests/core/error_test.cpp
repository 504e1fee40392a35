#include "ferry/core/error.h"

#include <gtest/gtest.h>

#include "ferry/core/log.h"
#include "ferry/core/shape.h"

namespace ferry {
namespace {

TEST(Error, MismatchMessageNamesPathFileExpectedActual) {
  auto e = make_mismatch<ShapeMismatch>(
      "tensor", "shape",
      ErrorFields{.path = "model.layers.3.mlp.up_proj.weight",
                  .file = "model-00002-of-00004.safetensors",
                  .expected = shape_string(std::vector<std::int64_t>{11008, 4096}),
                  .actual = shape_string(std::vector<std::int64_t>{4096, 11008})});
  EXPECT_STREQ(e.what(),
               "tensor 'model.layers.3.mlp.up_proj.weight' in model-00002-of-00004.safetensors: "
               "expected shape [11008, 4096], got [4096, 11008]");
  EXPECT_EQ(e.path(), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(e.file(), "model-00002-of-00004.safetensors");
  EXPECT_EQ(e.expected(), "[11008, 4096]");
  EXPECT_EQ(e.actual(), "[4096, 11008]");
}

TEST(Error, MismatchWithoutFileOmitsIt) {
  auto e = make_mismatch<DTypeMismatch>(
      "tensor", "dtype", ErrorFields{.path = "w", .expected = "F32", .actual = "I8"});
  EXPECT_STREQ(e.what(), "tensor 'w': expected dtype F32, got I8");
}

TEST(Error, HierarchyIsCatchableAsError) {
  const auto throws = [] { FERRY_CHECK(1 + 1 == 3, CorruptFile, "bad {} in {}", "offset", "f"); };
  EXPECT_THROW(throws(), CorruptFile);
  try {
    throws();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "bad offset in f");
  }
  EXPECT_THROW(FERRY_ASSERT(false, "x={}", 1), InternalError);
}

TEST(Shape, Printing) {
  EXPECT_EQ(shape_string({}), "[]");
  EXPECT_EQ(shape_string(std::vector<std::int64_t>{1, 2, 3}), "[1, 2, 3]");
}

TEST(Log, CaptureRecordsWarningsAndInfo) {
  LogCapture capture;
  log_warning("Tied parameters are on different devices: {}", 2);
  log_info("layer {} assigned to device {}", 3, 0);
  EXPECT_TRUE(capture.contains(LogLevel::kWarning, "different devices: 2"));
  EXPECT_TRUE(capture.contains(LogLevel::kInfo, "layer 3 assigned to device 0"));
  EXPECT_FALSE(capture.contains(LogLevel::kWarning, "layer 3"));
}

}  // namespace
}  // namespace ferry
