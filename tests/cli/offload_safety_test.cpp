// `ferry run` and its offload folder (issue 12): converted disk weights live in a private
// temporary folder that no run, error or signal leaves behind; a folder the user names is locked
// (two runs never mix their files), never the model's own folder, and a run killed while
// writing it is followed by runs that still give the right tokens. Flags are checked before
// anything is loaded.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "run_ferry.h"
#include "scratch_dir.h"
#include "spawn_ferry.h"

namespace ferry::cli {
namespace {

using testing::FerryProcess;
using testing::run_ferry;

std::vector<std::filesystem::path> entries(const std::filesystem::path& folder) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(folder)) out.push_back(e.path());
  return out;
}

std::string exit_description(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// A converting run's variable flags.
struct Convert {
  std::string tokens = "4";
  std::string cpu = "700KB";
  std::string dtype = "bfloat16";
};

class OffloadSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(tmp());
    for (const auto& [name, seed] : {std::pair{"a", 1}, std::pair{"b", 2}}) {
      // Eight layers: enough that part of the model rests on the CPU and the rest on disk.
      const auto made = run_ferry(fmt_args("make-model --arch llama --layers 8 --seed {} --out {}", seed,
                                           (dir_.path() / name).string()));
      ASSERT_EQ(made.exit_code, 0) << made.out;
    }
  }
  template <class... T>
  static std::string fmt_args(const char* format, T... args) {
    std::string out = format;
    (replace_first(out, args), ...);
    return out;
  }
  static void replace_first(std::string& s, const std::string& v) {
    s.replace(s.find("{}"), 2, v);
  }
  static void replace_first(std::string& s, int v) { replace_first(s, std::to_string(v)); }

  std::filesystem::path model(const std::string& name) const { return dir_.path() / name; }
  std::filesystem::path tmp() const { return dir_.path() / "tmp"; }
  std::string env_tmp() const { return "TMPDIR=" + tmp().string(); }

  // Arguments of a greedy run that converts the model (to bfloat16) with most of it on disk (so
  // .dat files are written).
  std::vector<std::string> convert_args(const std::string& name,
                                        const std::vector<std::string>& extra = {},
                                        const Convert& c = {}) const {
    std::vector<std::string> args = {
        "run",          model(name).string(), "--prompt-ids", "1,2,3", "--max-new-tokens",
        c.tokens,       "--ignore-eos",       "--json",       "--dtype", c.dtype,
        "--max-memory", "cpu=" + c.cpu,       "--no-progress", "--context",
        std::to_string(std::stoi(c.tokens) + 3)};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // The tokens of `args`, run to completion with TMPDIR = tmp(); fails the test on an error.
  nlohmann::json run_to_end(const std::vector<std::string>& args, const std::string& log_name) {
    FerryProcess p(args, {env_tmp()}, dir_.path() / log_name);
    const int status = p.wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << exit_description(status) << "\n"
        << p.output();
    const std::string out = p.output();
    const auto start = out.find('{');
    if (start == std::string::npos) return {};
    return nlohmann::json::parse(out.substr(start), nullptr, /*allow_exceptions=*/false);
  }

  ferry::testing::ScratchDir dir_;
};

TEST_F(OffloadSafety, NoTemporaryFolderSurvivesARunOrAnError) {
  const nlohmann::json j = run_to_end(convert_args("a"), "run.log");
  ASSERT_TRUE(j.contains("placed_bytes")) << j.dump();
  ASSERT_TRUE(j["placed_bytes"].contains("disk")) << j.dump();  // .dat files were needed
  EXPECT_TRUE(entries(tmp()).empty());
  // An error after the conversion (a staging budget below one block) leaves nothing either.
  FerryProcess failing(convert_args("a", {"--prefetch-bytes", "1KB"}), {env_tmp()},
                       dir_.path() / "fail.log");
  const int status = failing.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1)
      << exit_description(status) << failing.output();
  EXPECT_TRUE(entries(tmp()).empty());
}

TEST_F(OffloadSafety, SigtermWhileRunningRemovesTheTemporaryFolder) {
  // Poll for the private folder and signal the run as soon as it exists: mid-load or, at the
  // latest, mid-generation (the folder lives as long as the model).
  int observed = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    FerryProcess p(convert_args("a", {}, {.tokens = "400", .cpu = "3MB"}), {env_tmp()},
                   dir_.path() / "term.log");
    bool seen = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!seen && p.running() && std::chrono::steady_clock::now() < deadline) {
      for (const auto& e : entries(tmp())) {
        seen |= e.filename().string().starts_with("ferry-offload-");
      }
      if (!seen) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (seen) {
      ++observed;
      p.signal(SIGTERM);
    }
    const int status = p.wait();
    if (seen) {
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)
          << exit_description(status) << p.output();
    }
    for (const auto& left : entries(tmp())) {
      ADD_FAILURE() << "after attempt " << attempt << ": " << left << " was left ("
                    << std::distance(std::filesystem::directory_iterator(left),
                                     std::filesystem::directory_iterator())
                    << " entries)";
      std::filesystem::remove_all(left);  // so that the next attempt is judged on its own
    }
    // The folder was private: mode 0700.
  }
  EXPECT_GT(observed, 0) << "the run never showed its temporary folder";
}

TEST_F(OffloadSafety, TheTemporaryFolderIsPrivateAndNeverAPreparedOne) {
  // A folder named as the old scheme would (ferry-offload-<pid>) with planted files is ignored.
  for (int pid = 1; pid < 4; ++pid) {
    std::filesystem::create_directories(tmp() / ("ferry-offload-" + std::to_string(pid)));
  }
  const auto before = entries(tmp()).size();
  const nlohmann::json j = run_to_end(convert_args("a"), "run.log");
  EXPECT_EQ(entries(tmp()).size(), before);
  // While it runs, the folder ferry made is 0700.
  FerryProcess p(convert_args("a", {}, {.tokens = "400", .cpu = "3MB"}), {env_tmp()},
                 dir_.path() / "mode.log");
  bool checked = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!checked && p.running() && std::chrono::steady_clock::now() < deadline) {
    for (const auto& e : entries(tmp())) {
      const std::string name = e.filename().string();
      if (!name.starts_with("ferry-offload-") || name.size() != 20) continue;
      std::error_code ec;
      const auto perms = std::filesystem::status(e, ec).permissions();
      if (ec) continue;
      EXPECT_EQ(perms & std::filesystem::perms::all, std::filesystem::perms::owner_all) << e;
      checked = true;
    }
  }
  p.signal(SIGTERM);
  p.wait();
  EXPECT_TRUE(checked);
}

TEST_F(OffloadSafety, TwoRunsSharingAFolderGiveTheirOwnTokensOrAClearError) {
  // The same conversion with everything in RAM.
  const nlohmann::json expected_a =
      run_to_end(convert_args("a", {}, {.cpu = "1GB"}), "ref-a.log")["token_ids"];
  const nlohmann::json expected_b =
      run_to_end(convert_args("b", {}, {.cpu = "1GB"}), "ref-b.log")["token_ids"];
  ASSERT_NE(expected_a, expected_b);
  const std::string shared = (dir_.path() / "shared-offload").string();
  int completed = 0;
  int refused = 0;
  for (int round = 0; round < 6; ++round) {
    FerryProcess a(convert_args("a", {"--offload-folder", shared}), {env_tmp()},
                   dir_.path() / "a.log");
    FerryProcess b(convert_args("b", {"--offload-folder", shared}), {env_tmp()},
                   dir_.path() / "b.log");
    for (auto* p : {&a, &b}) {
      const int status = p->wait();
      const std::string out = p->output();
      const nlohmann::json& expected = p == &a ? expected_a : expected_b;
      ASSERT_TRUE(WIFEXITED(status)) << exit_description(status) << out;
      if (WEXITSTATUS(status) == 0) {
        const auto j = nlohmann::json::parse(out.substr(out.find('{')));
        EXPECT_EQ(j["token_ids"], expected) << "round " << round;
        ++completed;
      } else {
        EXPECT_EQ(WEXITSTATUS(status), 1) << out;
        EXPECT_NE(out.find("is in use by another ferry process"), std::string::npos) << out;
        ++refused;
      }
    }
  }
  EXPECT_GT(completed, 0);
  EXPECT_EQ(completed + refused, 12);
}

TEST_F(OffloadSafety, ARunKilledWhileWritingAFolderIsFollowedByCorrectRuns) {
  const nlohmann::json expected =
      run_to_end(convert_args("a", {}, {.cpu = "1GB"}), "ref.log")["token_ids"];
  const std::string folder = (dir_.path() / "kept-offload").string();
  for (int round = 0; round < 6; ++round) {
    {
      FerryProcess victim(convert_args(round % 2 ? "a" : "b", {"--offload-folder", folder}),
                          {env_tmp()}, dir_.path() / "victim.log");
      std::this_thread::sleep_for(std::chrono::milliseconds(40 * round));
      victim.signal(SIGKILL);
      victim.wait();
    }
    const nlohmann::json j =
        run_to_end(convert_args("a", {"--offload-folder", folder}), "after.log");
    EXPECT_EQ(j["token_ids"], expected) << "round " << round;
  }
  // Nothing half-written is left: only .dat files, index.json and ferry's record.
  for (const auto& e : entries(folder)) {
    const std::string name = e.filename().string();
    EXPECT_TRUE(name.ends_with(".dat") || name == "index.json" || name == "ferry-offload.json")
        << name;
  }
}

TEST_F(OffloadSafety, ReusedFolderIsKeptWhenItMatchesAndRebuiltWhenNot) {
  const std::string folder = (dir_.path() / "kept").string();
  const nlohmann::json first = run_to_end(convert_args("a", {"--offload-folder", folder}), "1.log");
  std::map<std::string, std::filesystem::file_time_type> written;
  for (const auto& e : entries(folder)) {
    if (e.extension() == ".dat") written[e.filename().string()] = std::filesystem::last_write_time(e);
  }
  ASSERT_FALSE(written.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const nlohmann::json second =
      run_to_end(convert_args("a", {"--offload-folder", folder}), "2.log");
  EXPECT_EQ(second["token_ids"], first["token_ids"]);
  for (const auto& [name, time] : written) {
    EXPECT_EQ(std::filesystem::last_write_time(std::filesystem::path(folder) / name), time)
        << name << " was rewritten although the folder matched";
  }
  // Another model in the same folder: its record does not match, so every file is rebuilt and
  // none of the first model's is read; the index lists exactly the files there.
  const nlohmann::json other =
      run_to_end(convert_args("b", {"--offload-folder", folder}), "3.log");
  const nlohmann::json expected_b =
      run_to_end(convert_args("b", {}, {.cpu = "4MB"}), "3-ref.log");
  EXPECT_EQ(other["token_ids"], expected_b["token_ids"]);
  const auto index =
      nlohmann::json::parse(std::ifstream(std::filesystem::path(folder) / "index.json"));
  std::size_t dats = 0;
  for (const auto& e : entries(folder)) {
    if (e.extension() != ".dat") continue;
    ++dats;
    EXPECT_NE(std::filesystem::last_write_time(e), written[e.filename().string()])
        << e << " was kept from the other model";
  }
  EXPECT_EQ(dats, index.size());
}

TEST_F(OffloadSafety, TheModelsOwnFolderIsNeverWrittenInto) {
  // An offload-format model: the converted folder of a run, with the config and tokenizer.
  const std::filesystem::path offloaded = dir_.path() / "offloaded";
  const nlohmann::json made = run_to_end(
      convert_args("a", {"--offload-folder", offloaded.string()}, {.cpu = "400KB"}), "make.log");
  ASSERT_TRUE(made.contains("token_ids"));
  for (const char* file : {"config.json", "tokenizer.json"}) {
    std::filesystem::copy_file(model("a") / file, offloaded / file);
  }
  std::map<std::string, std::filesystem::file_time_type> before;
  for (const auto& e : entries(offloaded)) before[e.filename().string()] = std::filesystem::last_write_time(e);
  std::vector<std::string> into_itself = {"run", offloaded.string(), "--prompt-ids", "1,2,3",
                                          "--max-new-tokens", "2", "--dtype", "float32",
                                          "--max-memory", "cpu=900KB", "--context", "16",
                                          "--offload-folder", offloaded.string()};
  FerryProcess p(into_itself, {env_tmp()}, dir_.path() / "self.log");
  const int status = p.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << exit_description(status)
                                                             << p.output();
  EXPECT_NE(p.output().find("is the folder the checkpoint is read from"), std::string::npos)
      << p.output();
  for (const auto& e : entries(offloaded)) {
    const std::string name = e.filename().string();
    ASSERT_TRUE(before.contains(name)) << name << " appeared";
    EXPECT_EQ(std::filesystem::last_write_time(e), before[name]) << name << " was rewritten";
  }
}

TEST(RunFlags, AreCheckedBeforeLoading) {
  ferry::testing::ScratchDir dir;
  const std::string model = (dir.path() / "m").string();
  ASSERT_EQ(run_ferry("make-model --arch llama --out " + model).exit_code, 0);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--max-new-tokens -1", "--max-new-tokens: expected 0 or more, got -1"},
      {"--threads -3", "--threads: expected a positive count"},
      {"--max-memory cpu=1GB,cpu=2GB", "device cpu is given twice (1GB and 2GB)"},
      {"--max-memory -1=1GB", "Device -1 is not recognized: a GPU index is 0 or more"},
      {"--temperature -1", "--temperature: expected 0 (greedy) or more, got -1"},
      {"--top-p 0", "--top-p: expected a value in (0, 1], got 0"},
      {"--dtype int3", "int3"},
  };
  for (const auto& [flags, message] : cases) {
    const auto r = run_ferry("run " + model + " --prompt-ids 1,2 " + flags);
    EXPECT_EQ(r.exit_code, 1) << flags << "\n" << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << flags << "\n" << r.out;
    EXPECT_EQ(r.out.find("loading"), std::string::npos) << flags << " loaded first:\n" << r.out;
  }
  const auto missing = run_ferry("run " + (dir.path() / "nothing").string() + " --prompt-ids 1");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("does not exist"), std::string::npos) << missing.out;
}

TEST(RunFlags, ThreadsAboveTheUsableCpusAreCappedWithAWarning) {
  ferry::testing::ScratchDir dir;
  const std::string model = (dir.path() / "m").string();
  ASSERT_EQ(run_ferry("make-model --arch llama --out " + model).exit_code, 0);
  const auto r = run_ferry("run " + model + " --prompt-ids 1,2 --max-new-tokens 1 --threads 500");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--threads 500: only"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(
      testing::run_ferry_stdout("run " + model +
                                " --prompt-ids 1,2 --max-new-tokens 1 --threads 500 --json")
          .out);
  EXPECT_LE(j["threads"].get<int>(), static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace ferry::cli
