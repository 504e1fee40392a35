// `ferry inspect` run as a process: the table, the --json object, and a one-line error with a
// non-zero exit code for a bad file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "run_ferry.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;

using testing::Result;
using testing::run_ferry;

class InspectCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ferry_cli_inspect_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    io::save_sharded(dir_ / "model",
                     {{"embed.weight", at::ones({4, 3})},
                      {"layers.0.weight", at::ones({2, 3}, at::kHalf)},
                      {"layers.1.weight", at::ones({2, 3}, at::kHalf)}},
                     {.max_shard_size = Bytes(48)});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(InspectCommand, JsonListsTensorsAndTotals) {
  const Result r = run_ferry("inspect --json " + (dir_ / "model").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["total_bytes"], 48 + 12 + 12);
  ASSERT_EQ(json["tensors"].size(), 3u);
  EXPECT_EQ(json["tensors"][0]["name"], "embed.weight");
  EXPECT_EQ(json["tensors"][0]["dtype"], "F32");
  EXPECT_EQ(json["tensors"][0]["shape"], nlohmann::json::array({4, 3}));
  EXPECT_EQ(json["tensors"][0]["size_bytes"], 48);
  EXPECT_EQ(json["tensors"][0]["file"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(json["totals_by_file"]["model-00002-of-00002.safetensors"]["size_bytes"], 24);
  EXPECT_EQ(json["totals_by_dtype"]["F16"]["tensors"], 2);
  EXPECT_EQ(json["metadata"]["format"], "pt");
  EXPECT_EQ(json["valid"], true);
}

TEST_F(InspectCommand, TableEndsWithVerdict) {
  const Result r =
      run_ferry("inspect " + (dir_ / "model" / "model.safetensors.index.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("layers.1.weight"));
  EXPECT_THAT(r.out, HasSubstr("totals by dtype"));
  EXPECT_THAT(r.out, HasSubstr("validation: OK"));
}

TEST_F(InspectCommand, OffloadFolder) {
  io::offload_state_dict(dir_ / "offload", {{"w", at::ones({2}, at::kBFloat16)}});
  const Result r = run_ferry("inspect --json " + (dir_ / "offload").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["tensors"][0]["file"], "w.dat");
}

TEST_F(InspectCommand, BadFileIsOneLineErrorAndNonZeroExit) {
  std::ofstream(dir_ / "model" / "model-00002-of-00002.safetensors", std::ios::trunc) << "short";
  const Result r = run_ferry("inspect " + (dir_ / "model").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

TEST_F(InspectCommand, NamesInNaturalOrderWithParameterCounts) {
  io::save_safetensors(dir_ / "layers.safetensors", {{"layers.10.weight", at::ones({2, 3})},
                                                     {"layers.2.weight", at::ones({2, 3})},
                                                     {"layers.1.weight", at::ones({4})},
                                                     {"embed.weight", at::ones({1000, 2})}});
  const Result r = run_ferry("inspect --json " + (dir_ / "layers.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto json = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (const auto& t : json["tensors"]) names.push_back(t["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"embed.weight", "layers.1.weight", "layers.2.weight",
                                             "layers.10.weight"}));
  EXPECT_EQ(json["tensors"][0]["parameters"], 2000);
  EXPECT_EQ(json["total_parameters"], 2000 + 4 + 6 + 6);
  EXPECT_EQ(json["totals_by_dtype"]["F32"]["parameters"], 2016);
  const Result table = run_ferry("inspect " + (dir_ / "layers.safetensors").string());
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_LT(table.out.find("layers.2.weight"), table.out.find("layers.10.weight"));
  EXPECT_THAT(table.out, HasSubstr("4 tensors, 2.02 K parameters (2016), 7.88 KiB"));
}

TEST_F(InspectCommand, AMissingPathSaysItDoesNotExist) {
  const Result r = run_ferry("inspect " + (dir_ / "absent").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("inspect: " + (dir_ / "absent").string() + " does not exist"));
}

}  // namespace
}  // namespace ferry::cli
