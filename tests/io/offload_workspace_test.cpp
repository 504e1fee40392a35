// OffloadWorkspace: private temporary folders removed on destruction and on signals; named
// folders locked, reused only under the same fingerprint, and cleaned of what ferry owned.
#include "ferry/io/offload_workspace.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdlib>
#include <fstream>

#include "ferry/core/error.h"
#include "ferry/io/offload_folder.h"
#include "scratch_dir.h"

namespace ferry::io {
namespace {

using ferry::testing::ScratchDir;

std::size_t count_entries(const std::filesystem::path& folder) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(folder)) ++n;
  return n;
}

OffloadIndex write_two(const std::filesystem::path& folder, float value) {
  OffloadIndex index;
  offload_weight(at::full({4, 3}, value), "a.weight", folder, index);
  offload_weight(at::full({5}, value), "b.bias", folder, index);
  return index;
}

TEST(OffloadWorkspace, TemporaryIsANewPrivateFolderRemovedWithItsFiles) {
  ScratchDir tmp;
  ferry::testing::TmpDirScope scope(tmp.path());
  std::filesystem::path path;
  {
    auto ws = OffloadWorkspace::temporary();
    path = ws->path();
    EXPECT_TRUE(ws->is_temporary());
    EXPECT_EQ(path.parent_path(), tmp.path());
    EXPECT_TRUE(path.filename().string().starts_with("ferry-offload-"));
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700U);
    auto other = OffloadWorkspace::temporary();
    EXPECT_NE(other->path(), path);
    const OffloadIndex index = write_two(path, 1.0F);
    ws->publish("fp", index);
    EXPECT_FALSE(std::filesystem::exists(path / "index.json"));  // kept in memory
    const auto folder = OffloadFolder::from_index(path, index);
    EXPECT_TRUE(at::equal(folder->load("a.weight"), at::full({4, 3}, 1.0F)));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(count_entries(tmp.path()), 0U);
}

TEST(OffloadWorkspace, SigtermRemovesTemporaryFolders) {
  ScratchDir tmp;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::setenv("TMPDIR", tmp.path().c_str(), 1);
        auto ws = OffloadWorkspace::temporary();
        write_two(ws->path(), 2.0F);
        std::raise(SIGTERM);
      },
      ::testing::KilledBySignal(SIGTERM), "");
  // The child made its workspace under its own scratch folder, which must now be empty.
  ASSERT_TRUE(std::filesystem::is_directory(tmp.child_path()));
  EXPECT_EQ(count_entries(tmp.child_path()), 0U);
}

TEST(OffloadWorkspace, ExitWithoutUnwindingRemovesTemporaryFolders) {
  ScratchDir tmp;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::setenv("TMPDIR", tmp.path().c_str(), 1);
        static std::shared_ptr<OffloadWorkspace> leaked = OffloadWorkspace::temporary();
        write_two(leaked->path(), 2.0F);
        std::exit(3);
      },
      ::testing::ExitedWithCode(3), "");
  ASSERT_TRUE(std::filesystem::is_directory(tmp.child_path()));
  EXPECT_EQ(count_entries(tmp.child_path()), 0U);
}

TEST(OffloadWorkspace, ANamedFolderIsLockedForItsLifetime) {
  ScratchDir dir;
  const auto folder = dir.path() / "offload" / "nested";
  {
    auto first = OffloadWorkspace::open(folder);
    EXPECT_FALSE(first->is_temporary());
    try {
      OffloadWorkspace::open(folder);
      FAIL() << "a second holder was let in";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("is in use by another ferry process"),
                std::string::npos)
          << e.what();
      EXPECT_EQ(e.file(), folder.string());
    }
  }
  EXPECT_NO_THROW(OffloadWorkspace::open(folder));  // released with the first
  EXPECT_TRUE(std::filesystem::is_directory(folder));  // a named folder is kept
}

TEST(OffloadWorkspace, ReusesOnlyCompleteEntriesOfTheSameFingerprint) {
  ScratchDir dir;
  const auto folder = dir.path() / "kept";
  OffloadIndex index;
  {
    auto ws = OffloadWorkspace::open(folder);
    EXPECT_TRUE(ws->reusable("fp1").empty());  // new folder
    index = {OffloadEntry{.name = "a.weight", .dtype = DType::kF32, .shape = {4, 3}},
             OffloadEntry{.name = "b.bias", .dtype = DType::kF32, .shape = {5}}};
    ws->begin("fp1", index);
    write_two(folder, 3.0F);
    EXPECT_TRUE(ws->reusable("fp1").empty());  // not published yet
    ws->publish("fp1", index);
    EXPECT_EQ(ws->reusable("fp1").size(), 2U);
    EXPECT_TRUE(ws->reusable("fp2").empty());
  }
  {
    auto ws = OffloadWorkspace::open(folder);
    EXPECT_EQ(ws->reusable("fp1").size(), 2U);
    // A truncated file is not reused.
    std::filesystem::resize_file(folder / "b.bias.dat", 4);
    const OffloadIndex kept = ws->reusable("fp1");
    ASSERT_EQ(kept.size(), 1U);
    EXPECT_EQ(kept.front().name, "a.weight");
  }
  {
    // Another source: begin() removes every file of the previous record, not other files.
    std::ofstream(folder / "notes.txt") << "mine";
    auto ws = OffloadWorkspace::open(folder);
    const OffloadIndex other{OffloadEntry{.name = "c.weight", .dtype = DType::kBF16, .shape = {2}}};
    ws->begin("fp2", other);
    EXPECT_FALSE(std::filesystem::exists(folder / "a.weight.dat"));
    EXPECT_FALSE(std::filesystem::exists(folder / "b.bias.dat"));
    EXPECT_TRUE(std::filesystem::exists(folder / "notes.txt"));
    // Killed here: nothing is trusted by the next run.
  }
  auto ws = OffloadWorkspace::open(folder);
  EXPECT_TRUE(ws->reusable("fp1").empty());
  EXPECT_TRUE(ws->reusable("fp2").empty());
}

TEST(OffloadWorkspace, StaleTemporaryFilesOfDeadProcessesAreRemoved) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path() / "f");
  // A pid that cannot be alive (above pid_max) and our own, which is.
  std::ofstream(dir.path() / "f" / "x.dat.tmp-99999999-0") << "partial";
  const std::string mine = "y.dat.tmp-" + std::to_string(::getpid()) + "-0";
  std::ofstream(dir.path() / "f" / mine) << "in progress";
  auto ws = OffloadWorkspace::open(dir.path() / "f");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "f" / "x.dat.tmp-99999999-0"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "f" / mine));
}

}  // namespace
}  // namespace ferry::io
