#pragma once
// A test fixture with a tiny Llama checkpoint folder made by `ferry make-model` (hidden 64,
// 2 layers, about 650 KB of fp32 weights) in the test's scratch folder.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli::testing {

class TinyModel : public ::testing::Test {
 protected:
  void SetUp() override {
    const Result made = run_ferry("make-model --arch llama --seed 1 --out " + model());
    ASSERT_EQ(made.exit_code, 0) << made.out;
  }
  std::string model() const { return (dir_.path() / "tiny").string(); }
  std::string path(const std::string& name) const { return (dir_.path() / name).string(); }
  // Writes `text` to a file in the scratch folder; returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir_.path() / name, std::ios::binary) << text;
    return path(name);
  }

  ferry::testing::ScratchDir dir_;
};

}  // namespace ferry::cli::testing
