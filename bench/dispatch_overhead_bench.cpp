// P3 (DESIGN.md): dispatch overhead with every weight resident — the same model called through
// AlignDevicesHooks (dispatch_model with force_hooks, all on the CPU) vs called without hooks.
// Target: ≤ 3 % slower. Alternates the two variants per round; prints medians and the ratio.
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "ferry/dispatch/dispatch_model.h"
#include "ferry/nn/activation.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"

namespace {

using namespace ferry;

class Block : public nn::Callable<Block> {
 public:
  explicit Block(std::int64_t dim) : Callable("Block") {
    norm_ = register_module("norm", std::make_shared<nn::RMSNorm>(dim));
    up_ = register_module("up", std::make_shared<nn::Linear>(dim, 4 * dim));
    act_ = register_module("act", std::make_shared<nn::Activation>(nn::ActivationKind::kSiLU));
    down_ = register_module("down", std::make_shared<nn::Linear>(4 * dim, dim));
  }

 private:
  friend class Callable<Block>;
  at::Tensor forward(const at::Tensor& x) { return x + (*down_)((*act_)((*up_)((*norm_)(x)))); }
  std::shared_ptr<nn::RMSNorm> norm_;
  std::shared_ptr<nn::Linear> up_;
  std::shared_ptr<nn::Activation> act_;
  std::shared_ptr<nn::Linear> down_;
};

double time_ms(nn::Sequential& model, const at::Tensor& x, int calls) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) model(x);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
             .count() /
         calls;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  const std::int64_t dim = 512;
  const int n_layers = 16;
  at::NoGradGuard no_grad;
  at::manual_seed(0);
  nn::Sequential plain;
  nn::Sequential hooked;
  for (int i = 0; i < n_layers; ++i) {
    plain.push_back(std::make_shared<Block>(dim));
    hooked.push_back(std::make_shared<Block>(dim));
  }
  dispatch::dispatch_model(hooked, plan::DeviceMap{{"", Placement::cpu()}},
                           dispatch::DispatchOptions{.force_hooks = true});
  // Decode-like input: one token, batch 1 — the case where per-call overhead shows most.
  const at::Tensor x = at::randn({1, 1, dim});
  time_ms(plain, x, 20);
  time_ms(hooked, x, 20);
  std::vector<double> a;
  std::vector<double> b;
  for (int r = 0; r < rounds; ++r) {
    a.push_back(time_ms(plain, x, 100));
    b.push_back(time_ms(hooked, x, 100));
  }
  const double pa = median(a);
  const double pb = median(b);
  fmt::print(
      "P3: {} blocks (dim {}, {} modules with hooks), input [1, 1, {}], threads {}, {} rounds\n",
      n_layers, dim, n_layers * 5, dim, at::get_num_threads(), rounds);
  fmt::print("  without hooks  median {:.3f} ms/forward (min {:.3f}, max {:.3f})\n", pa,
             *std::min_element(a.begin(), a.end()), *std::max_element(a.begin(), a.end()));
  fmt::print("  dispatched     median {:.3f} ms/forward (min {:.3f}, max {:.3f})\n", pb,
             *std::min_element(b.begin(), b.end()), *std::max_element(b.begin(), b.end()));
  fmt::print("  overhead ratio {:.4f} (target <= 1.03)\n", pb / pa);
  return 0;
}
