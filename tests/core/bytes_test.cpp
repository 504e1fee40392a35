#include <gtest/gtest.h>

#include "ferry/core/bytes.h"
#include "ferry/core/error.h"

namespace ferry {
namespace {

TEST(Bytes, BinaryUnits) {
  EXPECT_EQ(Bytes::parse("10GiB").value(), 10ULL << 30);
}

}  // namespace
}  // namespace ferry
