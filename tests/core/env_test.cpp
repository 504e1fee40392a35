#include "ferry/core/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "ferry/core/error.h"

namespace ferry {
namespace {

TEST(TruthValue, TruthyAndFalsyWordsInAnyCase) {
  for (const char* w : {"y", "yes", "t", "true", "on", "1", "YES", "True", "On"}) {
    EXPECT_TRUE(parse_truth_value(w)) << w;
  }
  for (const char* w : {"n", "no", "f", "false", "off", "0", "NO", "False", "OFF"}) {
    EXPECT_FALSE(parse_truth_value(w)) << w;
  }
}

TEST(TruthValue, AnythingElseIsInvalid) {
  for (const char* w : {"", "2", "maybe", "yes ", "enable"}) {
    try {
      parse_truth_value(w);
      FAIL() << w;
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(std::string(e.what()), std::string("invalid truth value ") + w);
    }
  }
}

TEST(EnvFlag, UnsetIsNulloptAndBadValueNamesTheVariable) {
  ::unsetenv("FERRY_TEST_FLAG");
  EXPECT_EQ(env_flag("FERRY_TEST_FLAG"), std::nullopt);
  ::setenv("FERRY_TEST_FLAG", "on", 1);
  EXPECT_EQ(env_flag("FERRY_TEST_FLAG"), true);
  ::setenv("FERRY_TEST_FLAG", "bogus", 1);
  try {
    env_flag("FERRY_TEST_FLAG");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("invalid truth value bogus"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("FERRY_TEST_FLAG"), std::string::npos);
  }
  ::unsetenv("FERRY_TEST_FLAG");
}

}  // namespace
}  // namespace ferry
