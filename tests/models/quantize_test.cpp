// `--quantize int8` (LoadModelOptions::quantize): the decoder blocks' Linear weights held as int8
// with float16 scales per 32 inputs (Note [int8 Linear weights]), computed through the fused
// kernel; planned with their quantized bytes; streamed from disk as int8; and int8 weights written
// with another group size refused, not misread.
#include <gtest/gtest.h>

#include <map>

#include "ferry/core/error.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/kernels/quantized.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "ferry/nn/linear.h"
#include "ferry/plan/module_sizes.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::TempDir;

constexpr std::int64_t kLayers = 2;
constexpr std::int64_t kLinearsPerLayer = 7;  // q, k, v, o, gate, up, down
const std::vector<std::int64_t> kPrompt{3, 77, 140, 9, 250, 31, 5, 17};

// A tiny llama whose projections have in_features divisible by 32.
class TinyLlama {
 public:
  TinyLlama() {
    make_model(dir_.path(), {.arch = "llama",
                             .hidden_size = 128,
                             .n_layers = kLayers,
                             .n_heads = 4,
                             .n_kv_heads = 2,
                             .intermediate_size = 256,
                             .max_position_embeddings = 128,
                             .seed = 5,
                             .n_merges = 40});
  }
  const std::filesystem::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

const TinyLlama& tiny() {
  static const TinyLlama model;
  return model;
}

LoadModelOptions int8() { return {.quantize = Quantization::kInt8}; }

bool is_decoder_linear_weight(const std::string& name) {
  return name.starts_with("model.layers.") && name.ends_with("_proj.weight");
}

TEST(QuantizeInt8, EveryDecoderLinearWeightIsInt8WithGroupScales) {
  LoadedModel loaded = load_model(tiny().path(), int8());
  nn::Module& m = loaded.model->module();
  int quantized = 0;
  for (const auto& [name, tensor] : m.state_dict()) {
    if (is_decoder_linear_weight(name)) {
      ++quantized;
      EXPECT_EQ(tensor.scalar_type(), at::kChar) << name;
      const at::Tensor scale = m.find_tensor(name + "_scale").tensor();
      EXPECT_EQ(scale.scalar_type(), at::kHalf) << name;
      EXPECT_EQ(scale.sizes(), (std::vector<std::int64_t>{tensor.size(0), tensor.size(1) / 32}));
      EXPECT_FALSE(scale.is_meta());
    } else if (!name.ends_with("weight_scale")) {
      EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;  // embeddings, norms, lm_head
    }
  }
  EXPECT_EQ(quantized, kLayers * kLinearsPerLayer);
  // The stored values are the kernels' quantization of the checkpoint's weight.
  const std::string w = "model.layers.1.mlp.down_proj.weight";
  const kernels::QuantizedWeight expected = kernels::quantize(
      testing::read_tensor(tiny().path() / "model.safetensors", w), kernels::QuantScheme::kGroup32);
  EXPECT_TRUE(at::equal(m.find_tensor(w).tensor(), expected.values));
  EXPECT_TRUE(at::equal(m.find_tensor(w + "_scale").tensor(), expected.scales));
}

TEST(QuantizeInt8, LogitsAndGreedyTokensFollowFloat32) {
  LoadedModel f32 = load_model(tiny().path());
  LoadedModel q = load_model(tiny().path(), int8());
  // 64 greedy tokens of the float32 model; both models then score the same 72 tokens.
  const GenerateResult reference = generate(*f32.model, {kPrompt}, {.max_new_tokens = 64});
  std::vector<std::int64_t> sequence = kPrompt;
  sequence.insert(sequence.end(), reference.tokens[0].begin(), reference.tokens[0].end());
  sequence.pop_back();
  ASSERT_EQ(sequence.size(), kPrompt.size() + 63);
  const auto logits = [&sequence](CausalLM& model) {
    return generate(model, {sequence}, {.max_new_tokens = 1, .keep_prompt_logits = true})
        .prompt_logits[0];
  };
  const at::Tensor a = logits(*f32.model);
  const at::Tensor b = logits(*q.model);
  const at::Tensor diff = (a - b).abs();
  const double max_diff = diff.max().item<double>();
  const double mean_diff = diff.mean().item<double>();
  const double mean_abs = a.abs().mean().item<double>();
  // The 64 positions that predict the generated tokens.
  const at::Tensor predicted = a.narrow(0, a.size(0) - 64, 64).argmax(-1);
  const at::Tensor quantized = b.narrow(0, b.size(0) - 64, 64).argmax(-1);
  const double agreement = predicted.eq(quantized).to(at::kDouble).mean().item<double>();
  std::cout << "int8 vs float32 logits: max |diff| " << max_diff << ", mean |diff| " << mean_diff
            << " (mean |logit| " << mean_abs << "), greedy agreement over 64 tokens "
            << agreement << "\n";
  EXPECT_GT(max_diff, 0.0);  // quantization happened
  EXPECT_LT(mean_diff, 0.05 * mean_abs);
  EXPECT_GE(agreement, 0.9);
}

// Bytes of every tensor of `model` as module sizes count them.
std::uint64_t planned_bytes(const LoadModelOptions& options) {
  PlannedModel planned = plan_model(tiny().path(), options, plan::Strategy::kAuto);
  return plan::compute_module_sizes(planned.model->module()).bytes("");
}

TEST(QuantizeInt8, PlanCountsInt8ValuesAndScales) {
  const auto source = io::open_checkpoint(tiny().path());
  std::uint64_t quantized_f32 = 0;
  std::uint64_t quantized_int8 = 0;
  for (const std::string& name : source->names()) {
    if (!is_decoder_linear_weight(name)) continue;
    const TensorInfo info = source->info(name);
    const auto n = static_cast<std::uint64_t>(info.shape[0]);
    const auto k = static_cast<std::uint64_t>(info.shape[1]);
    quantized_f32 += 4 * n * k;
    quantized_int8 += n * k + 2 * n * (k / 32);  // values + float16 scales
  }
  ASSERT_GT(quantized_f32, 0u);
  const std::uint64_t f32 = planned_bytes({});
  const std::uint64_t q = planned_bytes(int8());
  EXPECT_EQ(f32, source->total_bytes());
  EXPECT_EQ(f32 - q, quantized_f32 - quantized_int8);
  // 1.0625 bytes per weight instead of 4.
  EXPECT_DOUBLE_EQ(static_cast<double>(quantized_int8) / static_cast<double>(quantized_f32),
                   1.0625 / 4);
}

std::vector<std::int64_t> greedy(CausalLM& model) {
  return generate(model, {kPrompt}, {.max_new_tokens = 24}).tokens[0];
}

TEST(QuantizeInt8, DiskOffloadedRunMatchesInRamRunAndStoresInt8) {
  TempDir offload;
  LoadedModel ram = load_model(tiny().path(), int8());
  const std::vector<std::int64_t> expected = greedy(*ram.model);
  plan::DeviceMap map{{"model.embed_tokens", Placement::cpu()}};
  for (std::int64_t i = 0; i < kLayers; ++i) {
    map.set("model.layers." + std::to_string(i), Placement::disk());
  }
  map.set("model.norm", Placement::cpu());
  map.set("lm_head", Placement::cpu());
  LoadModelOptions o = int8();
  o.dispatch.device_map = map;
  o.dispatch.offload_folder = offload.path();
  {
    LoadedModel disk = load_model(tiny().path(), o);
    EXPECT_EQ(greedy(*disk.model), expected);
  }
  // The offload folder holds the int8 values and float16 scales (not float32 weights).
  const auto folder = io::OffloadFolder::open(offload.path());
  const std::string w = "model.layers.0.self_attn.q_proj.weight";
  EXPECT_EQ(folder->info(w).dtype, DType::kI8);
  EXPECT_EQ(folder->info(w + "_scale").dtype, DType::kF16);
  EXPECT_EQ(folder->info(w + "_scale").shape, (std::vector<std::int64_t>{128, 4}));
  EXPECT_EQ(std::filesystem::file_size(offload.path() / (w + ".dat")), 128u * 128u);
  EXPECT_TRUE(at::equal(folder->load(w), ram.model->module().find_tensor(w).tensor()));
  // Reused by a second run with the same options: same tokens again.
  LoadedModel again = load_model(tiny().path(), o);
  EXPECT_EQ(greedy(*again.model), expected);
}

TEST(QuantizeInt8, AutoPlanWithATinyBudgetStreamsTheSameTokens) {
  LoadedModel ram = load_model(tiny().path(), int8());
  const std::vector<std::int64_t> expected = greedy(*ram.model);
  TempDir offload;
  LoadModelOptions o = int8();
  o.dispatch.device_map = plan::Strategy::kAuto;
  // The smallest budget from 40 % of the quantized weights up (in 64 KiB steps) that can stage
  // the layers streamed through it, with part of the model on disk.
  const std::uint64_t weights = planned_bytes(int8());
  for (std::uint64_t budget = weights * 4 / 10; budget < 4 * weights; budget += 65536) {
    o.dispatch.max_memory = plan::MemoryBudget::parse("cpu=" + std::to_string(budget));
    try {
      if (plan_model(tiny().path(), o, plan::Strategy::kAuto).resolution.plan.plan.device_map.uses(
              Placement::disk())) {
        break;
      }
    } catch (const Error&) {  // too small to stage a streamed layer
    }
  }
  LoadedModel disk = load_model(tiny().path(), o);
  ASSERT_TRUE(disk.device_map.uses(Placement::disk()));
  EXPECT_EQ(greedy(*disk.model), expected);
}

// A checkpoint whose int8 weight was written with groups of 64 (scales [out, in / 64]).
TEST(QuantizeInt8, Int8WeightsOfAnotherGroupSizeAreRefusedNamingTensorAndFile) {
  TempDir dir;
  std::filesystem::copy_file(tiny().path() / "config.json", dir.path() / "config.json");
  const auto source = io::open_checkpoint(tiny().path() / "model.safetensors");
  std::map<std::string, at::Tensor> tensors;
  for (const std::string& n : source->names()) tensors[n] = source->load(n);
  const std::string w = "model.layers.0.mlp.up_proj.weight";
  const at::Tensor f = tensors[w];  // [256, 128]
  const at::Tensor scales = f.reshape({f.size(0), -1, 64}).abs().amax(-1) / 127.0;  // [256, 2]
  tensors[w] = (f.reshape({f.size(0), -1, 64}) / scales.unsqueeze(-1))
                   .round()
                   .clamp(-127, 127)
                   .to(at::kChar)
                   .reshape(f.sizes());
  tensors[w + "_scale"] = scales.contiguous();
  io::save_safetensors(dir.path() / "model.safetensors", tensors);
  try {
    load_model(dir.path(), int8());
    ADD_FAILURE() << "loaded int8 weights of groups of 64 as groups of 32";
  } catch (const ShapeMismatch& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'" + w + "_scale'"), std::string::npos) << message;
    EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("[256, 4]"), std::string::npos) << message;
    EXPECT_NE(message.find("[256, 2]"), std::string::npos) << message;
    EXPECT_NE(message.find("groups of 64"), std::string::npos) << message;
  }
  // Scales of groups of 32 in bfloat16: refused too (neither float16 nor float32).
  const kernels::QuantizedWeight q = kernels::quantize(f, kernels::QuantScheme::kGroup32);
  tensors[w] = q.values;
  tensors[w + "_scale"] = q.scales.to(at::kBFloat16);
  io::save_safetensors(dir.path() / "model.safetensors", tensors);
  EXPECT_THROW(load_model(dir.path(), int8()), ShapeMismatch);
  // Scales of groups of 32 load, float16 or (as ferry saved them before) float32: a saved int8
  // model passes through, its scales in their own dtype, and computes as its values × scales.
  for (const at::ScalarType dtype : {at::kHalf, at::kFloat}) {
    const kernels::QuantizedWeight saved =
        kernels::quantize(f, kernels::QuantScheme::kGroup32, dtype);
    tensors[w] = saved.values;
    tensors[w + "_scale"] = saved.scales;
    io::save_safetensors(dir.path() / "model.safetensors", tensors);
    LoadedModel ok = load_model(dir.path(), int8());
    nn::Module& m = ok.model->module();
    EXPECT_TRUE(at::equal(m.find_tensor(w).tensor(), saved.values));
    EXPECT_TRUE(at::equal(m.find_tensor(w + "_scale").tensor(), saved.scales)) << dtype;
    const at::Tensor x = at::randn({3, 128});
    auto& up = dynamic_cast<nn::Linear&>(m.submodule("model.layers.0.mlp.up_proj"));
    EXPECT_TRUE(at::allclose(up(x), kernels::linear(x, saved, std::nullopt), 1e-6, 1e-6)) << dtype;
  }
}

}  // namespace
}  // namespace ferry::models
