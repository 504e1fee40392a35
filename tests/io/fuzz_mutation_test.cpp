// A deterministic, always-on cousin of the libFuzzer targets in fuzz/: valid files are mutated
// at random many times; reading them must either succeed or throw a ferry::Error — never crash,
// hang, or throw anything else. Run under the sanitizer build for memory errors.
#include <gtest/gtest.h>

#include <random>

#include "ferry/core/error.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/safetensors_header.h"
#include "ferry/io/safetensors_writer.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::ScratchDir;

class Mutator {
 public:
  explicit Mutator(std::uint32_t seed) : rng_(seed) {}

  std::string mutate(std::string s) {
    const int n = 1 + static_cast<int>(pick(4));
    for (int i = 0; i < n; ++i) {
      switch (pick(7)) {
        case 0:
          if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << pick(8));
          break;
        case 1:
          if (!s.empty()) s[pick(s.size())] = static_cast<char>(pick(256));
          break;
        case 2: s.resize(pick(s.size() + 1)); break;
        case 3: s.insert(pick(s.size() + 1), 1, kTokens[pick(kTokens.size())]); break;
        case 4:
          if (!s.empty()) s.erase(pick(s.size()), 1 + pick(8));
          break;
        case 5:
          if (s.size() >= 8) s[pick(8)] = static_cast<char>(pick(256));
          break;    // length
        default: {  // replace a digit: offsets and shapes
          const std::size_t at = s.find_first_of("0123456789", pick(s.size() + 1));
          if (at != std::string::npos) s[at] = static_cast<char>('0' + pick(10));
        }
      }
    }
    return s;
  }

 private:
  static constexpr std::string_view kTokens = "{}[]\",:-0123456789e.FIUB \\";
  std::size_t pick(std::size_t n) { return n == 0 ? 0 : rng_() % n; }
  std::mt19937 rng_;
};

std::vector<std::string> seed_files(const ScratchDir& dir) {
  std::vector<std::string> seeds;
  save_safetensors(dir / "a", {{"w", at::arange(6, at::kFloat).reshape({2, 3})},
                               {"b", at::ones({3}, at::kHalf)},
                               {"s", at::scalar_tensor(1, at::kLong)},
                               {"e", at::empty({0, 2}, at::kBFloat16)}});
  save_safetensors(dir / "b", {{"x", at::ones({4}, at::kBool)}}, {.metadata = {}});
  for (const char* name : {"a", "b"}) seeds.push_back(testing::read_file(dir / name));
  return seeds;
}

TEST(FuzzMutation, SafetensorsHeaderParserOnlyThrowsFerryErrors) {
  ScratchDir dir;
  const auto seeds = seed_files(dir);
  Mutator mutator(20240611);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string bytes = mutator.mutate(seeds[static_cast<std::size_t>(i) % seeds.size()]);
    try {
      parse_safetensors_header(testing::as_bytes(bytes), "fuzz.safetensors");
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 0);  // some mutations stay valid, so later stages are exercised too
}

TEST(FuzzMutation, MutatedFilesLoadOrThrowFerryErrors) {
  ScratchDir dir;
  const auto seeds = seed_files(dir);
  Mutator mutator(7);
  for (int i = 0; i < 600; ++i) {
    const auto path = dir / "m.safetensors";
    testing::write_file(path, mutator.mutate(seeds[static_cast<std::size_t>(i) % seeds.size()]));
    try {
      const auto file = SafetensorsFile::open(path);
      for (const std::string& name : file->names()) {
        file->load(name).sum();
        file->load(name, {.dtype = DType::kF32, .copy = true});
      }
    } catch (const Error&) {
    }
  }
}

TEST(FuzzMutation, OffloadIndexParserOnlyThrowsFerryErrors) {
  const std::string seed =
      R"({"a.weight": {"dtype": "float32", "shape": [4, 2]}, "s": {"dtype": "int64", "shape": []},)"
      R"( "t": {"safetensors_file": "/x/m.safetensors", "weight_name": "w", "dtype": "float16"}})";
  Mutator mutator(99);
  for (int i = 0; i < 20000; ++i) {
    try {
      parse_offload_index(mutator.mutate(seed), "fuzz/index.json");
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace ferry::io
