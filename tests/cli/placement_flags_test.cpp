// The placement flags of `ferry run` and `ferry plan` (issue 13): size strings in bits warn and
// bare unit letters are rejected with the accepted forms, --no-split means the same in both,
// --device-map takes a device and a guarded file, and --reserve exists in both.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <sys/stat.h>

#include "run_ferry.h"
#include "tiny_model.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_bounded;
using testing::run_ferry_stdout;

class PlacementFlags : public testing::TinyModel {
 protected:
  nlohmann::json json_of(const std::string& args) const {
    const Result r = run_ferry_stdout(args + " --json");
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out;
    return nlohmann::json::parse(r.out);
  }
  std::string run_args(const std::string& flags) const {
    return "run " + model() + " --prompt-ids 1,2,3 --ignore-eos " + flags;
  }
};

TEST_F(PlacementFlags, ALowercaseBIsBitsAndSaysSo) {
  const std::string args = "plan " + model() + " --max-memory cpu=600mb";
  EXPECT_EQ(json_of(args)["devices"]["cpu"]["budget_bytes"], 75000000);
  const Result r = run_ferry(args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("[ferry warning] --max-memory cpu 600mb: a lowercase 'b' means "
                               "bits (as in Accelerate), so this is 75000000 bytes (71.53 MiB); "
                               "for bytes write 600MB (600000000 bytes) or 600MiB (600.00 MiB)"));
  // The same rule and warning for every size flag; none for bytes.
  EXPECT_THAT(run_ferry("plan " + model() + " --reserve 8gb").out,
              HasSubstr("--reserve 8gb: a lowercase 'b' means bits"));
  EXPECT_THAT(run_ferry("plan " + model() + " --max-memory cpu=600MB").out,
              Not(HasSubstr("warning")));
}

TEST_F(PlacementFlags, ASizeWithoutItsBIsRejectedWithTheAcceptedForms) {
  for (const auto& [flags, start] :
       {std::pair{"--max-memory cpu=8G",
                  "--max-memory cpu: '8G' is not a size (did you mean "
                  "8GiB or 8GB?)"},
        std::pair{"--prefetch-bytes 512M",
                  "--prefetch-bytes: '512M' is not a size (did you "
                  "mean 512MiB or 512MB?)"},
        std::pair{"--reserve 1T", "--reserve: '1T' is not a size (there is no TB unit"}}) {
    const Result r = run_ferry("plan " + model() + " " + flags);
    EXPECT_EQ(r.exit_code, 1) << flags;
    EXPECT_THAT(r.out, HasSubstr(start)) << flags;
    EXPECT_THAT(r.out, HasSubstr("expected an integer number of bytes (1024), or a number with a "
                                 "unit: GiB, MiB, KiB (powers of 1024) or GB, MB, KB (powers of "
                                 "1000)"))
        << flags;
  }
}

TEST_F(PlacementFlags, NoSplitTakesAClassOrAPatternInRunAndPlan) {
  // Eight layers; keeping the layer list together changes the map. A class and a pattern naming
  // the same module give the same map, in plan and in run.
  const std::string eight = path("eight");
  ASSERT_EQ(run_ferry("make-model --arch llama --layers 8 --seed 1 --out " + eight).exit_code, 0);
  const std::string flags = " -c 8 -n 2 --io mmap --max-memory cpu=1800KB ";
  const nlohmann::json plan_default = json_of("plan " + eight + flags);
  const nlohmann::json plan_class = json_of("plan " + eight + flags + "--no-split ModuleList");
  const nlohmann::json plan_pattern = json_of("plan " + eight + flags + "--no-split model.layers");
  EXPECT_NE(plan_class["device_map"], plan_default["device_map"]);
  EXPECT_EQ(plan_class["device_map"], plan_pattern["device_map"]);
  for (const char* name : {"ModuleList", "model.layers"}) {
    const Result ran = run_ferry_stdout("run " + eight + " --prompt-ids 1,2,3 --json" + flags +
                                        "--no-split " + name);
    ASSERT_EQ(ran.exit_code, 0) << name << ran.out;
    EXPECT_EQ(nlohmann::json::parse(ran.out)["device_map"], plan_class["device_map"]) << name;
  }
}

TEST_F(PlacementFlags, DeviceMapCpuPutsTheWholeModelOnTheCpu) {
  const nlohmann::json whole = json_of(run_args("-n 2 --device-map cpu"));
  EXPECT_EQ(whole["device_map"], (nlohmann::json{{"", "cpu"}}));
  EXPECT_EQ(whole["token_ids"], json_of(run_args("-n 2"))["token_ids"]);
  // plan plans with a strategy: a device is a plan already.
  const Result plan = run_ferry("plan " + model() + " --device-map cpu");
  EXPECT_EQ(plan.exit_code, 1);
  EXPECT_THAT(plan.out, HasSubstr("ferry plan --device-map cpu: expected a strategy"));
  const Result unknown = run_ferry(run_args("--device-map fastest"));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.out, HasSubstr("--device-map fastest: expected a strategy (auto, balanced, "
                                     "balanced_low_0, sequential), a device for the whole model "
                                     "(cpu, 0, cuda, cuda:1) or a JSON file; fastest does not "
                                     "exist"));
}

TEST_F(PlacementFlags, ADeviceMapFileIsReadOnceAndAFifoIsRefused) {
  const std::string plan_file = path("plan.json");
  const Result planned = run_ferry_stdout("plan " + model() +
                                          " -c 8 -n 2 --max-memory cpu=700KB "
                                          "--json");
  ASSERT_EQ(planned.exit_code, 0) << planned.out;
  write("plan.json", planned.out);
  const nlohmann::json ran = json_of(run_args("-c 8 -n 2 --device-map " + plan_file));
  EXPECT_EQ(ran["device_map"], nlohmann::json::parse(planned.out)["device_map"]);

  const std::string fifo = path("map.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  const Result r = run_ferry_bounded(60, run_args("--device-map " + fifo), "2>&1");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--device-map " + fifo + " is a FIFO: expected a file"));
  const Result folder = run_ferry(run_args("--device-map " + dir_.path().string()));
  EXPECT_THAT(folder.out, HasSubstr("is a folder: expected a file"));
}

TEST_F(PlacementFlags, ReserveIsTakenByRunAndPlanAlike) {
  const std::string flags = "-c 8 -n 2 --max-memory cpu=4MiB --reserve cpu=100KiB";
  const nlohmann::json plan = json_of("plan " + model() + " " + flags);
  EXPECT_EQ(plan["devices"]["cpu"]["reserves"]["reserve"], 102400);
  const nlohmann::json ran = json_of(run_args(flags));
  EXPECT_EQ(ran["devices"]["cpu"]["reserves"]["reserve"], 102400);
  EXPECT_EQ(ran["device_map"], plan["device_map"]);
}

}  // namespace
}  // namespace ferry::cli
