// The compute dtype (Note [Compute dtype]): float32 by default over bfloat16 and float16
// checkpoints whose weights stay as stored (views of the mapped files), "auto" computing in the
// stored dtype, narrower compute dtypes converting at load, and names refused before loading.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "ferry/core/devices.h"
#include "ferry/io/checkpoint.h"
#include "ferry/models/compute_dtype.h"
#include "ferry/models/generate.h"
#include "ferry/models/kv_cache.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "ferry/plan/module_tree.h"
#include "models/model_fixtures.h"
#include "models/plain_reference.h"

namespace ferry::models {
namespace {

using testing::fixture;
using testing::read_tensor;
using testing::TempDir;

// A float32 computation over weights exactly upcast from bf16/f16 agrees with the float32
// reference to rounding of the summation order.
constexpr double kTolerance = 1e-4;
const std::vector<std::int64_t> kPrompt{3, 77, 140, 9, 250, 31, 5, 17};

MakeModelOptions tiny(const std::string& arch, DType dtype) {
  return {.arch = arch,
          .hidden_size = 32,
          .n_layers = 2,
          .n_heads = 4,
          .n_kv_heads = arch == "gpt2" ? 0 : 2,
          .intermediate_size = 64,
          .max_position_embeddings = 64,
          .dtype = dtype,
          .seed = 21,
          .n_merges = 40};
}

at::Tensor prompt_logits(CausalLM& model) {
  return generate(model, {kPrompt}, {.max_new_tokens = 1, .keep_prompt_logits = true})
      .prompt_logits[0];
}

// The address ranges of the safetensors files mapped into this process.
std::vector<std::pair<std::uintptr_t, std::uintptr_t>> mapped_checkpoint_ranges() {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find(".safetensors") == std::string::npos) continue;
    std::istringstream in(line);
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    char dash = 0;
    in >> std::hex >> begin >> dash >> end;
    ranges.emplace_back(begin, end);
  }
  return ranges;
}

bool in_a_mapping(const at::Tensor& t,
                  const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>& ranges) {
  const auto address = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const auto& r) { return address >= r.first && address < r.second; });
}

// Float32 logits of `kPrompt` over the upcast weights: the plain reference (Phi-3, Gemma 2,
// Mixtral), else ferry's float32 path with the weights converted to float32 at load (a storage
// choice), which reference_test checks against transformers for Llama, Qwen2 and GPT-2.
at::Tensor float32_reference(const std::filesystem::path& folder, const std::string& arch) {
  if (arch == "phi3" || arch == "gemma2" || arch == "mixtral") {
    return testing::plain_logits(folder, kPrompt);
  }
  return prompt_logits(*load_model(folder, {.dispatch = {.dtype = DType::kF32}}).model);
}

// Bytes of the model's weights as the meta model holds them, and as the checkpoint stores the
// same tensors.
std::pair<std::uint64_t, std::uint64_t> held_and_stored_bytes(CausalLM& model,
                                                              const std::filesystem::path& folder) {
  const auto source = io::open_checkpoint(folder);
  std::uint64_t held = 0;
  std::uint64_t stored = 0;
  for (const auto& [name, t] : model.module().state_dict()) {
    held += static_cast<std::uint64_t>(t.numel()) * t.element_size();
    stored += source->info(name).size_bytes();
  }
  return {held, stored};
}

// Replaces `from` by `to` in `folder`/config.json.
void edit_config(const std::filesystem::path& folder, const std::string& from,
                 const std::string& to) {
  std::ifstream in(folder / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  std::ofstream(folder / "config.json", std::ios::trunc) << text;
}

TEST(ComputeDType, ParsesTheFourAcceptedNamesAndRefusesOthersListingThem) {
  EXPECT_TRUE(parse_compute_dtype("auto").automatic);
  EXPECT_EQ(parse_compute_dtype("float32").dtype, DType::kF32);
  EXPECT_EQ(parse_compute_dtype("bf16").dtype, DType::kBF16);
  EXPECT_EQ(parse_compute_dtype("torch.float16").dtype, DType::kF16);
  EXPECT_FALSE(parse_compute_dtype("bfloat16").automatic);
  for (const char* bad : {"int8", "float64", "bool", "garbage", ""}) {
    try {
      (void)parse_compute_dtype(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("auto, float32, bfloat16, float16"), std::string::npos)
          << e.what();
      EXPECT_EQ(e.fields().actual, bad);
    }
  }
  EXPECT_EQ(compute_dtype_name({.automatic = true}), "auto");
  EXPECT_EQ(compute_dtype_name({.dtype = DType::kBF16}), "bfloat16");
}

TEST(ComputeDType, WeightsAreHeldAsStoredUnlessTheComputeDTypeIsNarrower) {
  EXPECT_EQ(held_dtype(DType::kBF16, DType::kF32), DType::kBF16);
  EXPECT_EQ(held_dtype(DType::kF16, DType::kF32), DType::kF16);
  EXPECT_EQ(held_dtype(DType::kF32, DType::kBF16), DType::kBF16);
  EXPECT_EQ(held_dtype(DType::kF32, DType::kF32), DType::kF32);
  EXPECT_EQ(held_dtype(DType::kF16, DType::kBF16), DType::kF16);  // same width: as stored
}

TEST(ComputeDType, Float16NeedsACudaGpu) {
  EXPECT_THROW(check_computable(DType::kF16, /*on_cuda_only=*/false), Unsupported);
  EXPECT_NO_THROW(check_computable(DType::kF16, /*on_cuda_only=*/true));
  EXPECT_NO_THROW(check_computable(DType::kBF16, /*on_cuda_only=*/false));
}

struct Case {
  std::string arch;
  DType stored;
};
std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << c.arch << "_" << safetensors_name(c.stored);
}

class StoredDTypeTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { make_model(dir_.path(), tiny(GetParam().arch, GetParam().stored)); }
  TempDir dir_;
};

// The default computes in float32 over the stored weights: every weight keeps its stored dtype
// and lies in the mapped checkpoint (no copy, no float32 copy of the model), the KV cache is
// float32, and the logits are the float32 ones of the upcast weights.
TEST_P(StoredDTypeTest, DefaultComputesInFloat32OverTheStoredWeights) {
  const Case& c = GetParam();
  LoadedModel loaded = load_model(dir_.path());
  EXPECT_EQ(loaded.compute_dtype, DType::kF32);
  const auto ranges = mapped_checkpoint_ranges();
  ASSERT_FALSE(ranges.empty());
  std::size_t floating = 0;
  for (const auto& [name, t] : loaded.model->module().state_dict()) {
    if (!at::isFloatingType(t.scalar_type())) continue;
    ++floating;
    EXPECT_EQ(t.scalar_type(), require_scalar_type(c.stored)) << name;
    EXPECT_TRUE(in_a_mapping(t, ranges)) << name << " is not a view of the mapped checkpoint";
  }
  EXPECT_GT(floating, 0U);

  KvCache cache(static_cast<std::size_t>(loaded.config.n_layers));
  const auto n = static_cast<std::int64_t>(kPrompt.size());
  const at::Tensor ids = at::tensor(kPrompt, at::kLong).unsqueeze(0);
  (void)loaded.model->step({.input_ids = ids,
                            .position_ids = at::arange(n, at::kLong).unsqueeze(0),
                            .attention_mask = at::ones({1, n}, at::kLong)},
                           cache);
  EXPECT_EQ(cache.layer(0).key().scalar_type(), at::kFloat);

  const at::Tensor got = prompt_logits(*loaded.model);
  at::Tensor expected;
  expected = float32_reference(dir_.path(), c.arch);
  ASSERT_EQ(got.sizes(), expected.sizes());
  EXPECT_LT((got - expected).abs().max().item<double>(), kTolerance);
}

// "auto" computes in the stored dtype (bfloat16 only: LibTorch has no float16 CPU kernels).
TEST_P(StoredDTypeTest, AutoComputesInTheStoredDType) {
  const Case& c = GetParam();
  if (c.stored == DType::kF16) {
    if (gpu_count() == 0 || gpus_simulated()) {
      EXPECT_THROW(load_model(dir_.path(), {.compute_dtype = {.automatic = true}}), Unsupported);
    }
    return;
  }
  LoadedModel automatic = load_model(dir_.path(), {.compute_dtype = {.automatic = true}});
  EXPECT_EQ(automatic.compute_dtype, c.stored);
  KvCache cache(static_cast<std::size_t>(automatic.config.n_layers));
  (void)automatic.model->step({.input_ids = at::tensor({5, 6}, at::kLong).unsqueeze(0),
                               .position_ids = at::arange(2, at::kLong).unsqueeze(0),
                               .attention_mask = at::ones({1, 2}, at::kLong)},
                              cache);
  EXPECT_EQ(cache.layer(0).key().scalar_type(), require_scalar_type(c.stored));
  // Rounded activations: close to the float32 logits, not equal to them.
  const at::Tensor f32 = prompt_logits(*load_model(dir_.path()).model);
  const double diff = (prompt_logits(*automatic.model) - f32).abs().max().item<double>();
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 0.5);
}

// plan equals run: the planned model's weights are sized as stored.
TEST_P(StoredDTypeTest, PlanCountsTheStoredBytes) {
  const PlannedModel planned = plan_model(dir_.path(), {}, plan::Strategy::kAuto);
  const auto [held, stored] = held_and_stored_bytes(*planned.model, dir_.path());
  EXPECT_EQ(held, stored);
  EXPECT_EQ(planned.compute_dtype, DType::kF32);
  std::uint64_t planned_bytes = 0;  // every device's, disk included
  for (const auto& d : planned.resolution.plan.plan.devices) planned_bytes += d.used_bytes();
  EXPECT_GE(planned_bytes, stored);
  EXPECT_LT(planned_bytes, stored * 3 / 2);  // not a float32 copy
}

INSTANTIATE_TEST_SUITE_P(Architectures, StoredDTypeTest,
                         ::testing::Values(Case{"llama", DType::kBF16}, Case{"llama", DType::kF16},
                                           Case{"mistral", DType::kBF16},
                                           Case{"mistral", DType::kF16},
                                           Case{"gpt2", DType::kBF16}, Case{"gpt2", DType::kF16},
                                           Case{"phi3", DType::kBF16},
                                           Case{"gemma2", DType::kF16},
                                           Case{"mixtral", DType::kBF16}),
                         [](const auto& test) {
                           return test.param.arch + "_" +
                                  std::string(safetensors_name(test.param.stored));
                         });

// The bf16 fixtures against transformers' float32 logits with the default compute dtype (the
// issue: computed in bfloat16 they differed by 0.14).
TEST(ComputeDType, DefaultMatchesTransformersFloat32OnBfloat16Fixtures) {
  for (const std::string name : {"llama_gqa", "llama_tied", "qwen2", "gpt2"}) {
    const auto file = fixture(name) / "reference.safetensors";
    const at::Tensor prompt = read_tensor(file, "prompt_ids");
    const std::vector<std::int64_t> ids(prompt.data_ptr<std::int64_t>(),
                                        prompt.data_ptr<std::int64_t>() + prompt.numel());
    LoadedModel loaded = load_model(fixture(name));
    for (const auto& [tensor, t] : loaded.model->module().state_dict()) {
      if (at::isFloatingType(t.scalar_type())) {
        EXPECT_EQ(t.scalar_type(), at::kBFloat16) << tensor;
      }
    }
    const at::Tensor got =
        generate(*loaded.model, {ids}, {.max_new_tokens = 1, .keep_prompt_logits = true})
            .prompt_logits;
    EXPECT_LT((got - read_tensor(file, "logits")).abs().max().item<double>(), 1e-5) << name;
  }
}

// A float32 checkpoint computed in bfloat16 is converted at load (half the bytes, planned so).
TEST(ComputeDType, ANarrowerComputeDTypeConvertsAtLoadAndIsPlannedSo) {
  TempDir dir;
  make_model(dir.path(), tiny("llama", DType::kF32));
  const LoadModelOptions options{.compute_dtype = {.dtype = DType::kBF16}};
  const PlannedModel planned = plan_model(dir.path(), options, plan::Strategy::kAuto);
  LoadedModel loaded = load_model(dir.path(), options);
  const auto [held, stored] = held_and_stored_bytes(*planned.model, dir.path());
  EXPECT_EQ(held * 2, stored);
  const auto ranges = mapped_checkpoint_ranges();
  for (const auto& [name, t] : loaded.model->module().state_dict()) {
    EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
    EXPECT_FALSE(in_a_mapping(t, ranges)) << name << ": a converted copy, not the mapped file";
  }
  EXPECT_EQ(loaded.compute_dtype, DType::kBF16);
  const double diff = (prompt_logits(*loaded.model) - float32_reference(dir.path(), "llama"))
                          .abs()
                          .max()
                          .item<double>();
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 0.5);
}

// config.json's torch_dtype "auto" says nothing: the default computes in float32, auto in the
// stored dtype; a torch_dtype ferry cannot compute in is refused under auto, naming the file.
TEST(ComputeDType, ConfigTorchDTypeAutoParses) {
  TempDir dir;
  make_model(dir.path(), tiny("llama", DType::kBF16));
  edit_config(dir.path(), "\"torch_dtype\": \"bfloat16\"", "\"torch_dtype\": \"auto\"");
  EXPECT_EQ(load_model(dir.path()).compute_dtype, DType::kF32);
  EXPECT_EQ(load_model(dir.path(), {.compute_dtype = {.automatic = true}}).compute_dtype,
            DType::kBF16);
  edit_config(dir.path(), "\"torch_dtype\": \"auto\"", "\"torch_dtype\": \"int8\"");
  EXPECT_EQ(load_model(dir.path()).compute_dtype, DType::kF32);  // not asked for: not read
  try {
    (void)load_model(dir.path(), {.compute_dtype = {.automatic = true}});
    ADD_FAILURE() << "int8 torch_dtype accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.fields().path, "torch_dtype");
    EXPECT_NE(e.fields().file.find("config.json"), std::string::npos) << e.what();
  }
}

TEST(ComputeDType, AnUnsupportedComputeDTypeIsRefusedBeforeLoading) {
  TempDir dir;
  make_model(dir.path(), tiny("llama", DType::kBF16));
  EXPECT_THROW(load_model(dir.path(), {.compute_dtype = {.dtype = DType::kI8}}), InvalidArgument);
  EXPECT_THROW(plan_model(dir.path(), {.compute_dtype = {.dtype = DType::kF64}},
                          plan::Strategy::kAuto),
               InvalidArgument);
}

}  // namespace
}  // namespace ferry::models
