// Planning speed (DESIGN.md P1, P2; issue 4): sizes and an automatic device map for
//   1. 1000 × Linear(10000, 10000) built on the meta device (100B parameters),
//   2. a 70B-Llama-like checkpoint's headers (80 layers), and
//   3. a synthetic mixture-of-experts header list with ~175,000 tensors.
// Prints milliseconds and tensor counts; run on an idle machine.
//
// `bench_plan --write-headers DIR` instead writes the 70B checkpoint's headers as DIR/
// model.safetensors, a sparse file (the header, then a hole the size of the weights), for timing
// a whole `ferry plan DIR` process (bench/run.sh, the start-up row next to P2).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"
#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/strategy.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

ferry::plan::MemoryBudget budget(const char* text) {
  return ferry::plan::get_max_memory(ferry::plan::parse_budget_entries(text), /*gpu_count=*/8);
}

std::vector<ferry::TensorInfo> llama_headers(int n_layers, int n_experts) {
  using ferry::DType;
  const std::int64_t h = 8192, f = n_experts ? 2048 : 28672, v = 128256, kv = 1024;
  std::vector<ferry::TensorInfo> out{{"model.embed_tokens.weight", DType::kBF16, {v, h}},
                                     {"model.norm.weight", DType::kBF16, {h}},
                                     {"lm_head.weight", DType::kBF16, {v, h}}};
  for (int i = 0; i < n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    out.push_back({p + "self_attn.q_proj.weight", DType::kBF16, {h, h}});
    out.push_back({p + "self_attn.k_proj.weight", DType::kBF16, {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", DType::kBF16, {kv, h}});
    out.push_back({p + "self_attn.o_proj.weight", DType::kBF16, {h, h}});
    out.push_back({p + "input_layernorm.weight", DType::kBF16, {h}});
    out.push_back({p + "post_attention_layernorm.weight", DType::kBF16, {h}});
    const int experts = n_experts ? n_experts : 1;
    for (int e = 0; e < experts; ++e) {
      const std::string q = n_experts ? fmt::format("{}mlp.experts.{}.", p, e) : p + "mlp.";
      out.push_back({q + "gate_proj.weight", DType::kBF16, {f, h}});
      out.push_back({q + "up_proj.weight", DType::kBF16, {f, h}});
      out.push_back({q + "down_proj.weight", DType::kBF16, {h, f}});
    }
    if (n_experts) out.push_back({p + "mlp.gate.weight", DType::kBF16, {n_experts, h}});
  }
  return out;
}

void bench_headers(const char* label, const std::vector<ferry::TensorInfo>& infos) {
  using namespace ferry::plan;
  const auto start = Clock::now();
  const ModuleTree tree = ModuleTree::from_tensors(infos);
  const PlanOptions options{.no_split_patterns = infer_no_split_patterns(tree)};
  const StrategyPlan plan =
      plan_with_strategy(tree, {.max_memory = budget("0=40GiB,1=40GiB,cpu=64GiB")}, options);
  const double total_ms = ms_since(start);
  fmt::print("{}: {} tensors, tree + balanced budgets + auto map in {:.1f} ms ({} map entries)\n",
             label, infos.size(), total_ms, plan.plan.device_map.size());
}

// A safetensors file holding `infos` in order: its header and a hole for the data.
int write_headers(const std::filesystem::path& dir, const std::vector<ferry::TensorInfo>& infos) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::uint64_t offset = 0;
  for (const ferry::TensorInfo& t : infos) {
    header[t.name] = {{"dtype", ferry::safetensors_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.size_bytes()}}};
    offset += t.size_bytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::filesystem::create_directories(dir);
  const std::filesystem::path file = dir / "model.safetensors";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    const std::uint64_t n = text.size();
    char length[8];
    std::memcpy(length, &n, 8);
    out.write(length, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) {
      fmt::print(stderr, "cannot write {}\n", file.string());
      return 1;
    }
  }
  std::filesystem::resize_file(file, 8 + text.size() + offset);
  fmt::print("wrote {}: {} tensors, {} bytes of weights (sparse)\n", file.string(), infos.size(),
             offset);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--write-headers") {
    return write_headers(argv[2], llama_headers(80, 0));
  }
  using namespace ferry;
  {
    auto start = Clock::now();
    auto model = std::make_shared<nn::Sequential>();
    {
      nn::InitEmptyWeights guard;
      for (int i = 0; i < 1000; ++i) model->push_back(std::make_shared<nn::Linear>(10000, 10000));
    }
    const double build_ms = ms_since(start);
    start = Clock::now();
    const plan::ModuleTree tree = plan::ModuleTree::from_module(*model);
    const double tree_ms = ms_since(start);
    start = Clock::now();
    const plan::ModuleSizes sizes = plan::compute_module_sizes(tree);
    const double sizes_ms = ms_since(start);
    start = Clock::now();
    const plan::DeviceMap map =
        plan::infer_auto_device_map(tree, budget("0=80GiB,1=80GiB,cpu=128GiB"));
    const double map_ms = ms_since(start);
    fmt::print(
        "1000 x Linear(10000, 10000) on meta: {} tensors, {:.1f} GB; build {:.1f} ms, tree {:.1f} "
        "ms, sizes {:.1f} ms, auto map {:.1f} ms; sizes + map total {:.1f} ms ({} map entries)\n",
        2 * model->size(), static_cast<double>(sizes.total_bits()) / 8e9, build_ms, tree_ms,
        sizes_ms, map_ms, tree_ms + sizes_ms + map_ms, map.size());
  }
  bench_headers("70B Llama headers (80 layers)", llama_headers(80, 0));
  bench_headers("MoE headers (94 layers x 620 experts)", llama_headers(94, 620));
  return 0;
}
