// Paths on the command line (issue 13): a missing path says "does not exist", a file where a
// folder is expected (and the reverse) says so, before anything is read. And `ferry demo` counts
// parameters in words that cannot be read as bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "run_ferry.h"
#include "tiny_model.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Result;
using testing::run_ferry;

class Paths : public testing::TinyModel {};

TEST_F(Paths, MissingPathsSayTheyDoNotExist) {
  const std::string absent = path("absent");
  EXPECT_THAT(run_ferry("run " + absent + " -p Hi").out,
              HasSubstr("ferry: error: MODEL " + absent + " does not exist"));
  EXPECT_THAT(run_ferry("plan " + absent).out,
              HasSubstr("ferry: error: plan: " + absent + " does not exist"));
  EXPECT_THAT(run_ferry("run " + model() + " -p Hi --dump-logits " + absent + "/logits.st").out,
              HasSubstr("--dump-logits: the folder " + absent + " does not exist"));
}

TEST_F(Paths, AFileWhereAFolderIsExpectedSaysSo) {
  const std::string file = write("notes.txt", "not a model");
  const Result run = run_ferry("run " + file + " -p Hi");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.out, HasSubstr("ferry: error: MODEL " + file + " is a file: expected a folder"));
  EXPECT_THAT(run_ferry("run " + model() + " -p Hi --offload-folder " + file).out,
              HasSubstr("--offload-folder " + file + " is a file: expected a folder"));
  EXPECT_THAT(run_ferry("run " + model() + " -p Hi --dump-logits " + dir_.path().string()).out,
              HasSubstr("--dump-logits " + dir_.path().string() + " is a folder: expected a file"));
  // A folder without config.json is not a model folder.
  const Result empty = run_ferry("run " + dir_.path().string() + " -p Hi");
  EXPECT_THAT(empty.out, HasSubstr("config.json does not exist"));
}

TEST(Demo, CountsParametersInWordsAndSizesInBinaryUnits) {
  const Result r = run_ferry("demo --layers 10 --width 1000");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // 10 × (1000 × 1000 + 1000) parameters, 4 bytes each as float32.
  EXPECT_THAT(r.out, HasSubstr("10.0 M parameters (10010000)"));
  EXPECT_THAT(r.out, HasSubstr("size as float32   38.19 MiB"));
  EXPECT_THAT(r.out, Not(HasSubstr("(0.0 B)")));
}

}  // namespace
}  // namespace ferry::cli
