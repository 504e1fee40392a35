// P1 (DESIGN.md): build a 100B-parameter model — Sequential of 1000 × Linear(10000, 10000) — on
// the meta device. Target: ≤ 100 ms and ≤ 64 MiB RSS growth. Prints median/min/max of N runs.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "ferry/core/memory.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 5;
  std::vector<double> ms;
  std::vector<double> rss_mib;
  for (int r = 0; r < runs; ++r) {
    const ferry::Bytes rss_before = ferry::current_rss();
    const auto start = std::chrono::steady_clock::now();
    auto model = std::make_shared<ferry::nn::Sequential>();
    {
      ferry::nn::InitEmptyWeights guard;
      for (int i = 0; i < 1000; ++i) {
        model->push_back(std::make_shared<ferry::nn::Linear>(10000, 10000));
      }
    }
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
    const ferry::Bytes rss_after = ferry::current_rss();
    rss_mib.push_back(static_cast<double>(rss_after.value()) / 1048576.0 -
                      static_cast<double>(rss_before.value()) / 1048576.0);
  }
  auto report = [](const char* what, std::vector<double> v, double target, const char* unit) {
    std::sort(v.begin(), v.end());
    const double median = v[v.size() / 2];
    fmt::print(
        "{:<34} median {:8.2f} {}  min {:8.2f}  max {:8.2f}  target <= {} {}  ratio {:.3f}\n", what,
        median, unit, v.front(), v.back(), target, unit, median / target);
  };
  fmt::print("P1: Sequential of 1000 x Linear(10000, 10000) under init_empty_weights, {} runs\n",
             runs);
  report("build time", ms, 100.0, "ms");
  report("RSS growth", rss_mib, 64.0, "MiB");
  return 0;
}
