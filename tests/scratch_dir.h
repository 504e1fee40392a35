#pragma once
// A fresh folder for one test (several per test allowed), removed with its contents at the end;
// a death test's child process gets its own, which its parent removes (child_path()).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <unistd.h>

namespace ferry::testing {

class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string test = std::string(info->test_suite_name()) + "_" + info->name();
    std::replace(test.begin(), test.end(), '/', '_');  // parameterized: "Prefix/Suite", "Test/0"
    if (test != current_test_) {
      current_test_ = test;
      index_ = 0;
    }
    // A death test's child (threadsafe style) runs the test body again in a new process and
    // dies there without unwinding: its folder is named after its parent's (child_path()), so
    // the parent can look into it and removes it with its own.
    const bool child = !GTEST_FLAG_GET(internal_run_death_test).empty();
    const std::filesystem::path own =
        std::filesystem::temp_directory_path() /
        ("ferry_" + test + "_" + std::to_string(child ? ::getppid() : ::getpid()) + "_" +
         std::to_string(index_++));
    path_ = child ? child_path_of(own) : own;
    owner_ = !child;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    if (!owner_) return;
    std::filesystem::remove_all(path_);
    std::filesystem::remove_all(child_path());
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  // The folder a death test's child uses as this ScratchDir (its path() there).
  std::filesystem::path child_path() const { return child_path_of(path_); }

 private:
  static std::filesystem::path child_path_of(const std::filesystem::path& p) {
    return p.string() + "-child";
  }
  static inline std::string current_test_;  // the test the index counts in
  static inline int index_ = 0;             // folders made so far by that test
  bool owner_ = true;
  std::filesystem::path path_;
};

// Sets TMPDIR (where temporary folders are made) for the life of the object.
class TmpDirScope {
 public:
  explicit TmpDirScope(const std::filesystem::path& dir) {
    if (const char* old = std::getenv("TMPDIR")) old_ = old;
    ::setenv("TMPDIR", dir.c_str(), 1);
  }
  ~TmpDirScope() {
    if (old_) {
      ::setenv("TMPDIR", old_->c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }
  TmpDirScope(const TmpDirScope&) = delete;
  TmpDirScope& operator=(const TmpDirScope&) = delete;

 private:
  std::optional<std::string> old_;
};

}  // namespace ferry::testing
