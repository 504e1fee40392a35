// P8 (DESIGN.md), one layer: the decode product y = x · wᵀ for one row of x (batch 1) over a
// weight stored as float32, bfloat16, float16 or int8 (group 32 / per channel), as GB/s of weight
// bytes read, next to memcpy and read-only bandwidth measured in the same run with the same
// threads. The old path (weight converted to float32, then at::linear) is the baseline.
// Also: int8 accuracy (error of y vs the float32 product) on random and on LLM-like weights.
//
// Usage: bench_kernels [--threads N=2] [--reps N=9] [--isa portable|avx2|avx512]
//   [--sizes 4096,8192] [--formats fp32,bf16,f16,int8-g32,int8-channel] [--rows M=1]
//   (int8 scales are float16; int8-g32-f32, not in the default set, has float32 ones)
//   [--accuracy 1|0] (0: skip the int8 accuracy section)
//   [--hot 1] (one copy of each weight: read from the caches where it fits, not from memory)
//   [--misalign B] (float weights B bytes past a 64-byte boundary, as in place in a checkpoint)
//   [--interleave OUTxIN,...] (also: the formats called in turn, call by call, on weights of
//   these shapes, e.g. a model's 1024x1024,2816x1024,1024x2816; Note [Interleaved comparison])
// Each "ROW" line is machine-readable (bench/run.sh parses it).
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "ferry/kernels/isa.h"
#include "ferry/kernels/linear.h"
#include "ferry/kernels/quantized.h"

namespace {

using namespace ferry;
using Clock = std::chrono::steady_clock;

// Weights are cycled through copies totalling at least this, so no call finds its weight in cache.
// --hot 1: one copy, so a weight that fits in the caches is read from them (what the kernel
// computes per byte when memory is not the limit).
std::int64_t g_cold_bytes = std::int64_t{384} << 20;
// --misalign B: float weights start B bytes past a 64-byte boundary, as a weight used in place
// from a safetensors file does (its data offsets are multiples of 8 at best).
std::int64_t g_misalign = 0;

struct Summary {
  double median, min, max;
};
Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

// Bytes per second of `bytes` moved by each call of `body(i)`, over `reps` timed calls.
Summary bandwidth(std::int64_t bytes, int reps, const std::function<void(int)>& body) {
  body(0);  // warm-up: page faults, thread pool start
  std::vector<double> gbps;
  for (int r = 0; r < reps; ++r) {
    const auto t = Clock::now();
    body(r + 1);
    gbps.push_back(static_cast<double>(bytes) / 1e9 /
                   std::chrono::duration<double>(Clock::now() - t).count());
  }
  return summarize(gbps);
}

// memcpy of a 512 MiB buffer, split over the pool's threads (bytes copied per second).
Summary memcpy_bandwidth(int reps) {
  const std::int64_t bytes = std::int64_t{512} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  return bandwidth(bytes, reps, [&](int) {
    at::parallel_for(0, bytes, bytes / 64, [&](std::int64_t b, std::int64_t e) {
      std::memcpy(dst.data() + b, src.data() + b, e - b);
    });
  });
}

#if defined(__x86_64__)
// Sum of floats with AVX2 loads, four independent accumulators (BENCHMARKING.md's read-only bound).
__attribute__((target("avx2"))) float sum_avx2(const float* p, std::int64_t count) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float total = 0.0f;
  for (const float e : lanes) total += e;
  for (; i < count; ++i) total += p[i];
  return total;
}
#endif

__attribute__((noinline)) float sum_floats(const float* p, std::int64_t count) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, count);
#endif
  const std::int64_t whole = count / 4 * 4;
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (std::int64_t i = 0; i < whole; i += 4) a0 += p[i], a1 += p[i + 1], a2 += p[i + 2], a3 += p[i + 3];
  for (std::int64_t i = whole; i < count; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3;
}

// Sum of a 512 MiB buffer, split over the pool's threads (bytes read per second).
Summary read_bandwidth(int reps) {
  const std::int64_t n = (std::int64_t{512} << 20) / 4;
  std::vector<float> data(n, 1.0f);
  std::atomic<float> sink{0.0f};
  return bandwidth(n * 4, reps, [&](int) {
    at::parallel_for(0, n, n / 64, [&](std::int64_t b, std::int64_t e) {
      const float part = sum_floats(data.data() + b, e - b);
      float seen = sink.load();
      while (!sink.compare_exchange_weak(seen, seen + part)) {
      }
    });
  });
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    parts.push_back(text.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return parts;
}

std::vector<std::int64_t> parse_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  for (const std::string& part : split(text)) sizes.push_back(std::stoll(part));
  return sizes;
}

struct Format {
  const char* name;
  at::ScalarType dtype;                          // float weights
  std::optional<kernels::QuantScheme> scheme;    // int8 weights
  at::ScalarType scales = at::kHalf;             // int8 weights' scales
  bool by_default = true;                        // measured without --formats
};

// Copies of random [out, in] weights in one format, g_cold_bytes of them in all, so that cycling
// through them no call finds its weight in cache. Every copy is read once as it is made: on the
// project's VM the first read of freshly written memory ran 10-30 x slower than later ones
// (hypervisor page handling), which made the median of a few reps measure that instead of the
// kernel.
struct ColdCopies {
  const Format* format;
  std::vector<at::Tensor> ws;                // float weights
  std::vector<at::Tensor> buffers;           // --misalign: the storage ws view into
  std::vector<kernels::QuantizedWeight> qs;  // int8 weights
  std::int64_t bytes = 0;                    // of one copy

  ColdCopies(const Format& f, std::int64_t out, std::int64_t in, const at::Tensor& x) : format(&f) {
    do {
      const at::Tensor w = at::randn({out, in}) * 0.02;
      if (f.scheme) {
        qs.push_back(kernels::quantize(w, *f.scheme, f.scales));
        bytes = qs.back().values.nbytes() + qs.back().scales.nbytes();
      } else {
        ws.push_back(w.to(f.dtype));
        bytes = ws.back().nbytes();
        if (g_misalign != 0) {
          buffers.push_back(at::empty({bytes + 64}, at::kByte));
          auto* at_offset = buffers.back().data_ptr<std::uint8_t>() + g_misalign;
          std::memcpy(at_offset, ws.back().data_ptr(), static_cast<std::size_t>(bytes));
          ws.back() = at::from_blob(at_offset, {out, in}, at::TensorOptions().dtype(f.dtype));
        }
      }
      product(x, size() - 1);
    } while (static_cast<std::int64_t>(size()) * bytes < g_cold_bytes);
  }
  std::size_t size() const { return ws.size() + qs.size(); }
  void product(const at::Tensor& x, std::size_t c) const {
    if (format->scheme)
      kernels::linear(x, qs[c], std::nullopt);
    else
      kernels::linear(x, ws[c], std::nullopt);
  }
  at::Tensor dequantized(std::size_t c) const {
    return format->scheme ? qs[c].dequantize() : ws[c].to(at::kFloat);
  }
};

// Max and mean |y_int8 − y_f32| ÷ mean |y_f32| for one weight distribution.
void int8_accuracy(const char* label, const at::Tensor& w) {
  const at::Tensor x = at::randn({4, w.size(1)});
  const at::Tensor want = at::linear(x, w);
  const double scale = want.abs().mean().item<double>();
  for (const auto scheme : {kernels::QuantScheme::kGroup32, kernels::QuantScheme::kPerChannel}) {
    const at::Tensor err = (kernels::linear(x, kernels::quantize(w, scheme), std::nullopt) - want).abs();
    fmt::print("  {:<28} {:<12} max {:.2e}  mean {:.2e}  (÷ mean |y|: max {:.4f}, mean {:.5f})\n",
               label, scheme == kernels::QuantScheme::kGroup32 ? "group 32" : "per channel",
               err.max().item<double>(), err.mean().item<double>(),
               err.max().item<double>() / scale, err.mean().item<double>() / scale);
  }
}

// Note [Interleaved comparison]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// On a shared VM the bandwidth a thread gets moves by 10-30 % from one second to the next, so
// formats measured one after the other differ by more than their kernels do. Here each rep calls
// every format once, each on its own cold copy, in an order that rotates from rep to rep; the
// medians of those interleaved calls are compared, and turned into what the kernels alone would
// make of a decode: × fp32 speed = (fp32 bytes ÷ the format's) × (its GB/s ÷ fp32's).
void interleaved(std::int64_t out, std::int64_t in, const std::vector<const Format*>& formats,
                 int reps) {
  struct Contender {
    ColdCopies copies;
    std::vector<double> gbps;
  };
  const at::Tensor x = at::randn({1, in});
  std::vector<Contender> cs;
  for (const Format* f : formats) cs.push_back({ColdCopies(*f, out, in, x), {}});
  for (int r = 0; r < reps; ++r) {
    for (std::size_t i = 0; i < cs.size(); ++i) {
      Contender& c = cs[(i + static_cast<std::size_t>(r)) % cs.size()];
      const auto t = Clock::now();
      c.copies.product(x, static_cast<std::size_t>(r) % c.copies.size());
      c.gbps.push_back(static_cast<double>(c.copies.bytes) / 1e9 /
                       std::chrono::duration<double>(Clock::now() - t).count());
    }
  }
  fmt::print("\n{}x{} (out x in), formats interleaved call by call, {} reps, median GB/s\n", out,
             in, reps);
  const Contender* fp32 = nullptr;
  for (const Contender& c : cs) {
    if (std::string(c.copies.format->name) == "fp32") fp32 = &c;
  }
  for (const Contender& c : cs) {
    const Summary g = summarize(c.gbps);
    fmt::print("  {:<13} {:6.2f} GB/s ({:.2f}-{:.2f})", c.copies.format->name, g.median, g.min,
               g.max);
    if (fp32 != nullptr) {
      const double base = summarize(fp32->gbps).median;
      fmt::print("  {:.2f} x fp32 GB/s  => {:.2f} x fp32 speed", g.median / base,
                 static_cast<double>(fp32->copies.bytes) / static_cast<double>(c.copies.bytes) *
                     g.median / base);
    }
    fmt::print("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 9;
  std::int64_t rows = 1;
  bool accuracy = true;
  std::vector<std::int64_t> sizes = {4096, 8192};
  std::vector<std::string> only;  // formats to run; empty: all
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;  // --interleave
  std::optional<kernels::ScopedIsa> isa_guard;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--reps") reps = std::stoi(value);
    else if (flag == "--isa") isa_guard.emplace(kernels::parse_isa(value));
    else if (flag == "--sizes") sizes = parse_sizes(value);
    else if (flag == "--formats")
      only = split(value);
    else if (flag == "--rows")
      rows = std::stoll(value);
    else if (flag == "--accuracy")
      accuracy = value != "0";
    else if (flag == "--misalign")
      g_misalign = std::stoll(value);
    else if (flag == "--hot")
      g_cold_bytes = value != "0" ? 0 : g_cold_bytes;
    else if (flag == "--interleave") {
      for (const std::string& part : split(value)) {
        const std::size_t by = part.find('x');
        if (by == std::string::npos) {
          fmt::print(stderr, "bench_kernels: --interleave wants OUTxIN, got {}\n", part);
          return 2;
        }
        shapes.emplace_back(std::stoll(part.substr(0, by)), std::stoll(part.substr(by + 1)));
      }
    } else {
      fmt::print(stderr, "bench_kernels: unknown flag {}\n", flag);
      return 2;
    }
  }
  at::NoGradGuard no_grad;
  kernels::set_fused_float32(true);  // the fp32 rows measure the kernel; "old path" is at::linear
  at::set_num_threads(threads);
  at::manual_seed(0);
  fmt::print("kernels: isa {} (detected {}), {} threads, median of {} calls (min-max), M={}\n",
             kernels::isa_name(kernels::active_isa()), kernels::isa_name(kernels::detected_isa()),
             at::get_num_threads(), reps, rows);
  const Summary copy = memcpy_bandwidth(reps);
  const Summary read = read_bandwidth(reps);
  fmt::print("memcpy (bound)      {:6.2f} GB/s ({:.2f}-{:.2f}) bytes copied, 512 MiB\n", copy.median, copy.min, copy.max);
  fmt::print("read-only (bound)   {:6.2f} GB/s ({:.2f}-{:.2f}) sum of 512 MiB\n", read.median, read.min, read.max);

  const Format formats[] = {{"fp32", at::kFloat, std::nullopt},
                            {"bf16", at::kBFloat16, std::nullopt},
                            {"f16", at::kHalf, std::nullopt},
                            {"int8-g32", at::kFloat, kernels::QuantScheme::kGroup32},
                            {"int8-g32-f32", at::kFloat, kernels::QuantScheme::kGroup32, at::kFloat,
                             /*by_default=*/false},
                            {"int8-channel", at::kFloat, kernels::QuantScheme::kPerChannel}};
  std::vector<const Format*> chosen;  // --formats, in the table's order
  for (const Format& f : formats) {
    if (only.empty() ? f.by_default : std::find(only.begin(), only.end(), f.name) != only.end()) {
      chosen.push_back(&f);
    }
  }
  for (const std::int64_t size : sizes) {
    fmt::print("\n{0}x{0}, weight GB/s (bytes read ÷ time)\n", size);
    const at::Tensor x = at::randn({rows, size});
    for (const Format* f : chosen) {
      const ColdCopies cold(*f, size, size, x);
      const std::size_t copies = cold.size();
      const std::int64_t bytes = cold.bytes;
      const Summary fast = bandwidth(
          bytes, reps, [&](int r) { cold.product(x, static_cast<std::size_t>(r) % copies); });
      // The old path: the weight converted to float32 (int8: dequantized), then at::linear.
      const int old_reps = std::max(3, reps / 3);
      const Summary old = bandwidth(bytes, old_reps, [&](int r) {
        at::linear(x, cold.dequantized(static_cast<std::size_t>(r) % copies));
      });
      fmt::print(
          "  {:<13} {:6.2f} GB/s ({:.2f}-{:.2f})  {:.2f} x memcpy  {:.2f} x read-only  |"
          "  old path {:5.2f} GB/s, {:.1f} x faster\n",
          f->name, fast.median, fast.min, fast.max, fast.median / copy.median,
          fast.median / read.median, old.median, fast.median / old.median);
      fmt::print(
          "ROW size={} format={} gbps={:.3f} min={:.3f} max={:.3f} memcpy={:.3f} read={:.3f} "
          "memcpy_ratio={:.3f} read_ratio={:.3f} old_gbps={:.3f} isa={} threads={} rows={}\n",
          size, f->name, fast.median, fast.min, fast.max, copy.median, read.median,
          fast.median / copy.median, fast.median / read.median, old.median,
          kernels::isa_name(kernels::active_isa()), at::get_num_threads(), rows);
    }
  }

  for (const auto& [out, in] : shapes) interleaved(out, in, chosen, std::max(reps, 100));

  if (!accuracy) return 0;
  fmt::print("\nint8 accuracy, y = x · wᵀ for x ~ N(0, 1) [4, 4096], error vs the float32 product\n");
  at::manual_seed(1);
  int8_accuracy("random N(0, 0.02)", at::randn({1024, 4096}) * 0.02);
  // LLM-like: heavy-tailed (Student t, 4 degrees of freedom) plus a few outlier input columns
  // 20× larger, as large models' projections have.
  const at::Tensor t4 = at::randn({1024, 4096}) / (at::randn({1024, 4096}).pow(2) + at::randn({1024, 4096}).pow(2) +
                                                   at::randn({1024, 4096}).pow(2) + at::randn({1024, 4096}).pow(2))
                                                      .div(4).sqrt();
  at::Tensor llm = t4 * 0.02;
  for (std::int64_t c = 0; c < 4096; c += 512) llm.narrow(1, c, 1).mul_(20);
  int8_accuracy("t(4) + outlier columns", llm);
  return 0;
}
