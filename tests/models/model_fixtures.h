#pragma once
// Helpers of the models tests: fixture paths, temporary folders, safetensors tensors.

#include <ATen/ATen.h>

#include <filesystem>
#include <random>
#include <string>

#include "ferry/io/checkpoint.h"

namespace ferry::models::testing {

inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(FERRY_MODEL_FIXTURES) / name;
}

// A tensor of a safetensors file, copied (the mapping may go away).
inline at::Tensor read_tensor(const std::filesystem::path& file, const std::string& name) {
  return io::open_checkpoint(file)->load(name).clone();
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("ferry-models-test-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ferry::models::testing
