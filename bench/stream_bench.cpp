// P5 (DESIGN.md), simulated: CPU → GPU streaming through the prefetcher vs a plain memcpy of the
// same bytes, measured in the same run.
//
//   transfer  the prefetcher alone: every block of a model (weights in CPU RAM) taken and
//             released in order, forward after forward, with no compute — bytes moved per second
//             vs memcpy of the same tensors into buffers allocated once (the bound), and vs
//             memcpy into freshly allocated memory (what any copy into a new device tensor pays).
//   overlap   a forward of the model streamed to simulated GPU 0 vs the same model resident
//             there: how much of the transfer hides behind compute.
// Usage: bench_stream [layers=24] [dim=1024] [rounds=5]. Prints medians (min–max) and ratios.
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ferry/core/devices.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"

namespace {

using namespace ferry;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Summary {
  double median, min, max;
};
Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

std::unique_ptr<nn::Sequential> make_model(int layers, std::int64_t dim) {
  auto model = std::make_unique<nn::Sequential>();
  for (int i = 0; i < layers; ++i) model->push_back(std::make_shared<nn::Linear>(dim, dim));
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = argc > 1 ? std::atoi(argv[1]) : 24;
  const std::int64_t dim = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 5;
  at::NoGradGuard no_grad;
  at::manual_seed(0);
  SimGpuScope gpus({64_GiB});

  auto model = make_model(layers, dim);
  std::vector<std::pair<std::string, at::Tensor>> weights;
  std::uint64_t total = 0;
  for (const auto& p : model->named_parameters()) {
    weights.emplace_back(p.name, p.tensor().contiguous());
    total += p.tensor().nbytes();
  }
  fmt::print(
      "bench_stream: {} x Linear({}, {}) fp32, {:.1f} MiB of weights, {} compute "
      "thread(s), simulated GPU\n",
      layers, dim, dim, total / 1048576.0, at::get_num_threads());

  // Bound: memcpy of the same tensors into buffers allocated once.
  std::vector<std::vector<std::byte>> dst;
  for (const auto& [n, t] : weights) dst.emplace_back(t.nbytes());
  std::vector<double> memcpy_gbs, fresh_gbs, stream_gbs, nolook_gbs;
  auto copy_all = [&] {
    for (std::size_t i = 0; i < weights.size(); ++i)
      std::memcpy(dst[i].data(), weights[i].second.data_ptr(), weights[i].second.nbytes());
  };
  copy_all();

  // The prefetcher over the same weights, one block per Linear, executing on simulated GPU 0.
  std::map<std::string, at::Tensor> state(weights.begin(), weights.end());
  auto source = io::make_memory_source(state);
  auto make_prefetcher = [&](bool lookahead) {
    auto p = std::make_shared<dispatch::Prefetcher>(
        dispatch::PrefetchOptions{.lookahead = lookahead,
                                  .host_budget_bytes = 0,
                                  .device_budget_bytes = 4 * (total / layers)});
    std::vector<dispatch::Prefetcher::BlockId> ids;
    for (int i = 0; i < layers; ++i) {
      const std::string prefix = std::to_string(i) + ".";
      ids.push_back(p->add_block(
          std::to_string(i), "", ExecutionDevice::gpu(0),
          {{prefix + "weight", source, DType::kF32}, {prefix + "bias", source, DType::kF32}}));
    }
    return std::make_pair(p, ids);
  };
  auto stream_forward = [](dispatch::Prefetcher& p,
                           const std::vector<dispatch::Prefetcher::BlockId>& ids) {
    p.begin_forward();
    for (auto id : ids) {
      std::vector<at::Tensor> t = p.take(id);
      t.clear();
      p.release(id);
    }
    p.end_forward();
  };
  auto [look, look_ids] = make_prefetcher(true);
  auto [nolook, nolook_ids] = make_prefetcher(false);
  stream_forward(*look, look_ids);  // records the order
  stream_forward(*nolook, nolook_ids);

  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    copy_all();
    memcpy_gbs.push_back(total / since(t) / 1e9);

    t = Clock::now();
    for (const auto& [n, w] : weights) {
      std::vector<std::byte> fresh(w.nbytes());  // new memory: page faults, as a new tensor
      std::memcpy(fresh.data(), w.data_ptr(), w.nbytes());
    }
    fresh_gbs.push_back(total / since(t) / 1e9);

    t = Clock::now();
    stream_forward(*look, look_ids);
    stream_gbs.push_back(total / since(t) / 1e9);

    t = Clock::now();
    stream_forward(*nolook, nolook_ids);
    nolook_gbs.push_back(total / since(t) / 1e9);
  }
  const Summary mc = summarize(memcpy_gbs), fr = summarize(fresh_gbs), st = summarize(stream_gbs),
                nl = summarize(nolook_gbs);
  fmt::print("  memcpy (bound)            {:6.2f} GB/s ({:.2f}-{:.2f})\n", mc.median, mc.min,
             mc.max);
  fmt::print("  memcpy into new memory    {:6.2f} GB/s ({:.2f}-{:.2f})\n", fr.median, fr.min,
             fr.max);
  fmt::print("  prefetcher, lookahead     {:6.2f} GB/s ({:.2f}-{:.2f})  {:.2f} x memcpy\n",
             st.median, st.min, st.max, st.median / mc.median);
  fmt::print("  prefetcher, no lookahead  {:6.2f} GB/s ({:.2f}-{:.2f})  {:.2f} x memcpy\n",
             nl.median, nl.min, nl.max, nl.median / mc.median);

  // Overlap: a streamed forward vs the same model resident on the simulated GPU.
  const at::Tensor x = at::randn({1, dim});
  auto resident = make_model(layers, dim);
  dispatch::dispatch_model(*resident, plan::DeviceMap{{"", Placement::gpu(0)}});
  auto streamed = make_model(layers, dim);
  dispatch::cpu_offload(*streamed, dispatch::OffloadOptions{.execution_device = ExecutionDevice::gpu(0)});
  (*streamed)(x);  // records the order
  std::vector<double> res_ms, str_ms;
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    (*resident)(x);
    res_ms.push_back(since(t) * 1e3);
    t = Clock::now();
    (*streamed)(x);
    str_ms.push_back(since(t) * 1e3);
  }
  const Summary rs = summarize(res_ms), ss = summarize(str_ms);
  fmt::print("  forward, resident on GPU  {:7.2f} ms ({:.2f}-{:.2f})\n", rs.median, rs.min, rs.max);
  fmt::print("  forward, streamed         {:7.2f} ms ({:.2f}-{:.2f})  {:.2f} x resident\n",
             ss.median, ss.min, ss.max, ss.median / rs.median);
  fmt::print(
      "SUMMARY sim CPU->GPU streaming: {:.2f} GB/s = {:.2f} x memcpy ({:.2f} GB/s); "
      "streamed forward {:.2f} x resident\n",
      st.median, st.median / mc.median, mc.median, ss.median / rs.median);
  return 0;
}
