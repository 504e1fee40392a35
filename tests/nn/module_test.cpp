#include <gtest/gtest.h>

#include "ferry/nn/linear.h"

namespace ferry::nn {
namespace {

TEST(Module, LinearParameters) {
  Linear lin(3, 4);
  EXPECT_EQ(lin.named_parameters().size(), 2U);
}

}  // namespace
}  // namespace ferry::nn
