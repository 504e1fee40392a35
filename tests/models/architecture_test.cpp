// The architecture registry: every architecture's config round trip, module names and config
// errors; GPT-2 checkpoints with OpenAI's original tensor names (no "transformer." prefix).
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "ferry/nn/init.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::fixture;
using testing::read_tensor;
using testing::TempDir;

template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Architectures, EachIsRegisteredAndWritable) {
  const std::vector<std::string> all{"gemma2",  "gpt2", "llama", "mistral",
                                     "mixtral", "phi3", "qwen2"};
  EXPECT_EQ(supported_model_types(), all);
  EXPECT_EQ(make_model_architectures(), all);
}

// make_model's config of each architecture parses back to the same values, and the model built
// from it names its tensors as the architecture's checkpoints do.
TEST(Architectures, ConfigRoundTripAndCheckpointNames) {
  const std::map<std::string, std::vector<std::string>> names{
      {"phi3",
       {"model.layers.1.self_attn.qkv_proj.weight", "model.layers.1.mlp.gate_up_proj.weight"}},
      {"gemma2",
       {"model.layers.1.pre_feedforward_layernorm.weight",
        "model.layers.1.post_feedforward_layernorm.weight", "model.layers.0.mlp.gate_proj.weight"}},
      {"mixtral",
       {"model.layers.1.block_sparse_moe.gate.weight",
        "model.layers.1.block_sparse_moe.experts.7.w2.weight"}},
      {"gpt2", {"transformer.h.1.attn.c_attn.weight"}},
      {"llama", {"model.layers.1.mlp.up_proj.weight"}}};
  for (const auto& [arch, expected] : names) {
    TempDir dir;
    const MadeModel made = make_model(
        dir.path(), {.arch = arch, .hidden_size = 32, .n_layers = 2, .n_heads = 4, .n_merges = 10});
    const ModelConfig back = load_config(dir.path());
    EXPECT_EQ(config_to_json(back), config_to_json(made.config)) << arch;
    EXPECT_EQ(back.head_dim, 8) << arch;
    nn::InitEmptyWeights guard;
    auto model = create_model(back, at::kFloat);
    for (const std::string& name : expected) {
      EXPECT_NO_THROW(model->module().find_tensor(name)) << arch << ": " << name;
    }
  }
}

TEST(Architectures, Gemma2FieldsAreRead) {
  const std::string gemma = R"({"model_type": "gemma2", "vocab_size": 100, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 144,
    "final_logit_softcapping": null, "sliding_window": 8})";
  const ModelConfig g = parse_config(gemma, "g.json");
  EXPECT_EQ(g.head_dim, 16);
  EXPECT_EQ(g.sliding_window, 8);
  EXPECT_TRUE(g.tie_word_embeddings);  // Gemma 2's default
  EXPECT_EQ(g.hidden_act, "gelu_pytorch_tanh");
  const std::string text = config_to_json(g);
  EXPECT_NE(text.find("\"final_logit_softcapping\": null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"attn_logit_softcapping\": 50.0"), std::string::npos) << text;
  EXPECT_NE(text.find("\"query_pre_attn_scalar\": 144.0"), std::string::npos) << text;
}

TEST(Architectures, MixtralExpertsPerTokenAreChecked) {
  const std::string mixtral = R"({"model_type": "mixtral", "vocab_size": 100, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_local_experts": 4, "num_experts_per_tok": 5})";
  EXPECT_EQ(error_of<InvalidArgument>([&] { parse_config(mixtral, "m.json"); }),
            "m.json: field 'num_experts_per_tok' (5) must be at most num_local_experts (4)");
}

TEST(Architectures, Phi3LongRopeIsChecked) {
  const std::string phi3 = R"({"model_type": "phi3", "vocab_size": 100, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 64, "original_max_position_embeddings": 16,
    "rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1], "long_factor": [1, 2, 3]}})";
  EXPECT_EQ(error_of<InvalidArgument>([&] { parse_config(phi3, "p.json"); }),
            "p.json: field 'rope_scaling.long_factor' must have rotary_dim / 2 = 4 entries, got 3");
  std::string unsupported = phi3;
  unsupported.replace(unsupported.find("longrope"), 8, "dynamic");
  EXPECT_EQ(error_of<InvalidArgument>([&] { parse_config(unsupported, "p.json"); }),
            "p.json: field 'rope_scaling.type' 'dynamic' is not supported (supported: longrope, "
            "su)");
  std::string su = phi3;
  su.replace(su.find("[1, 2, 3]"), 9, "[1, 2, 3, 4]");
  su.replace(su.find("longrope"), 8, "su");
  EXPECT_NO_THROW(parse_config(su, "p.json"));
}

// OpenAI's GPT-2 files name tensors without "transformer." (and keep the attention's causal
// buffers): transformers loads them, and so does ferry, with the same logits as the prefixed
// checkpoint and a device map in the checkpoint's names.
class Gpt2OriginalNames : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::copy(fixture("gpt2") / "config.json", dir_.path() / "config.json");
    std::map<std::string, at::Tensor> tensors;
    const auto source = io::open_checkpoint(fixture("gpt2") / "model.safetensors");
    for (const std::string& name : source->names()) {
      if (name.starts_with("lm_head.")) continue;  // tied: OpenAI's files have none
      ASSERT_TRUE(name.starts_with("transformer.")) << name;
      tensors[name.substr(std::string("transformer.").size())] = source->load(name);
    }
    tensors["h.0.attn.bias"] = at::ones({1, 1, 64, 64});
    tensors["h.1.attn.bias"] = at::ones({1, 1, 64, 64});
    io::save_safetensors(dir_.path() / "model.safetensors", tensors);
  }
  TempDir dir_;
};

TEST_F(Gpt2OriginalNames, LoadWithTheSameLogitsAsTransformersNames) {
  LogCapture capture;
  const auto ref = fixture("gpt2") / "reference.safetensors";
  const at::Tensor prompt = read_tensor(ref, "prompt_ids");
  const std::vector<std::int64_t> ids(prompt.data_ptr<std::int64_t>(),
                                      prompt.data_ptr<std::int64_t>() + prompt.numel());
  LoadModelOptions strict{.dispatch = {.dtype = DType::kF32, .strict = true}};
  LoadedModel loaded = load_model(dir_.path(), strict);
  EXPECT_FALSE(capture.contains(LogLevel::kWarning, "")) << capture.entries().size();
  EXPECT_NO_THROW(loaded.model->module().find_tensor("h.0.attn.c_attn.weight"));
  const GenerateResult r =
      generate(*loaded.model, {ids}, {.max_new_tokens = 4, .keep_prompt_logits = true});
  EXPECT_LT((r.prompt_logits - read_tensor(ref, "logits")).abs().max().item<double>(), 1e-5);
  const at::Tensor greedy = read_tensor(ref, "greedy_ids").narrow(0, 0, 4);
  EXPECT_EQ(r.tokens[0], std::vector<std::int64_t>(greedy.data_ptr<std::int64_t>(),
                                                   greedy.data_ptr<std::int64_t>() + 4));
}

TEST_F(Gpt2OriginalNames, DispatchWithAMapInTheCheckpointsNames) {
  TempDir offload;
  LoadModelOptions o{.dispatch = {.device_map = plan::DeviceMap{{"wte", Placement::cpu()},
                                                                {"wpe", Placement::cpu()},
                                                                {"h.0", Placement::cpu()},
                                                                {"h.1", Placement::disk()},
                                                                {"ln_f", Placement::cpu()},
                                                                {"lm_head", Placement::cpu()}},
                                  .offload_folder = offload.path(),
                                  .dtype = DType::kF32}};
  LoadedModel loaded = load_model(dir_.path(), o);
  const LoadedModel prefixed = load_model(fixture("gpt2"), {.dispatch = {.dtype = DType::kF32}});
  const std::vector<std::int64_t> ids{3, 77, 140, 9};
  const GenerateOptions g{.max_new_tokens = 3, .keep_prompt_logits = true};
  const GenerateResult a = generate(*loaded.model, {ids}, g);
  const GenerateResult b = generate(*prefixed.model, {ids}, g);
  EXPECT_TRUE(at::equal(a.prompt_logits, b.prompt_logits));
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST_F(Gpt2OriginalNames, LayerCountIsCheckedInTheCheckpointsNames) {
  ModelConfig c = load_config(dir_.path());
  c.n_layers = 3;
  std::ofstream(dir_.path() / "config.json") << config_to_json(c);
  const std::string message = error_of<ShapeMismatch>([&] { load_model(dir_.path()); });
  EXPECT_NE(message.find("2 layers (h.0 to h.1)"), std::string::npos) << message;
}

}  // namespace
}  // namespace ferry::models
