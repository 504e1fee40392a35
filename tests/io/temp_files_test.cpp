// Temporary files of interrupted writes: a failed write leaves none behind, and
// remove_stale_temp_files removes those of processes that are gone, and only those.
#include "ferry/io/temp_files.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "ferry/core/error.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors_writer.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::ScratchDir;

// The pid of a process that has exited and been reaped.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) std::_Exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

std::vector<std::string> names_in(const std::filesystem::path& folder) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(folder)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(RemoveStaleTempFiles, RemovesOnlyThoseOfGoneProcesses) {
  ScratchDir dir;
  const pid_t gone = dead_pid();
  const std::string stale = fmt::format("w.dat.tmp-{}-0", gone);
  const std::string ours = fmt::format("w.dat.tmp-{}-3", ::getpid());
  const std::string init = "index.json.tmp-1-0";  // pid 1 always runs
  for (const std::string& name :
       {stale, ours, init, std::string("w.dat"), fmt::format("x.tmp-{}-", gone),
        fmt::format("x.tmp-{}", gone), fmt::format("x.tmp-{}-1a", gone), std::string("x.tmp--1")}) {
    testing::write_file(dir / name, "bytes");
  }
  std::filesystem::create_directory(dir / fmt::format("sub.tmp-{}-1", gone));
  EXPECT_EQ(remove_stale_temp_files(dir.path()), 1u);
  EXPECT_FALSE(std::filesystem::exists(dir / stale));
  EXPECT_EQ(names_in(dir.path()).size(), 8u);
  EXPECT_TRUE(std::filesystem::exists(dir / ours));
  EXPECT_TRUE(std::filesystem::exists(dir / init));
  EXPECT_EQ(remove_stale_temp_files(dir / "missing"), 0u);
}

// In a child process: writes files larger than a file size limit allows, which fails write(2)
// with EFBIG part way as a full disk fails it with ENOSPC. Exits 0 when each write threw IoError
// and `folder` is left empty.
[[noreturn]] void write_past_a_size_limit(const std::filesystem::path& folder) {
  std::signal(SIGXFSZ, SIG_IGN);
  const rlimit limit{.rlim_cur = 64 * 1024, .rlim_max = RLIM_INFINITY};
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) std::_Exit(3);
  try {
    OffloadIndex index;
    offload_weight(at::ones({1 << 20}), "w", folder, index);
    std::_Exit(4);  // 4 MiB written under a 64 KiB limit?
  } catch (const IoError& e) {
    std::fprintf(stderr, "%s\n", e.what());
  }
  try {
    save_safetensors(folder / "model.safetensors", {{"w", at::ones({1 << 20})}});
    std::_Exit(4);
  } catch (const IoError& e) {
    std::fprintf(stderr, "%s\n", e.what());
  }
  std::_Exit(names_in(folder).empty() ? 0 : 1);
}

TEST(AtomicWrites, AWriteThatFailsLeavesNothingBehind) {
  ScratchDir dir;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(write_past_a_size_limit(dir.path()), ::testing::ExitedWithCode(0), "cannot write");
}

}  // namespace
}  // namespace ferry::io
