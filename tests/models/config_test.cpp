// config.json parsing, the registry, and the errors of bad configs and checkpoints.
#include <gtest/gtest.h>

#include <fstream>
#include <sys/stat.h>

#include "ferry/core/error.h"
#include "ferry/models/generate.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::fixture;
using testing::TempDir;

constexpr const char* kLlama = R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 32,
  "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "eos_token_id": [1, 2], "bos_token_id": 0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";

template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

std::string with(std::string json, const std::string& from, const std::string& to) {
  json.replace(json.find(from), from.size(), to);
  return json;
}

TEST(Config, ReadsLlamaFields) {
  const ModelConfig c = parse_config(kLlama, "m/config.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_FALSE(c.attention_bias);
}

TEST(Config, Qwen2AlwaysHasQkvBias) {
  EXPECT_TRUE(parse_config(with(kLlama, "llama", "qwen2"), "c.json").attention_bias);
}

TEST(Config, RoundTripsThroughJson) {
  const ModelConfig c = load_config(fixture("llama_gqa"));
  const ModelConfig back = parse_config(config_to_json(c), "x.json");
  EXPECT_EQ(back.hidden_size, c.hidden_size);
  EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type);
  EXPECT_EQ(back.n_kv_heads, c.n_kv_heads);
  EXPECT_EQ(load_config(fixture("gpt2")).max_position_embeddings, 64);
}

TEST(ConfigErrors, NameFileAndField) {
  EXPECT_EQ(error_of<InvalidArgument>(
                [] { parse_config(with(kLlama, "\"hidden_size\": 32,", ""), "m/config.json"); }),
            "m/config.json: field 'hidden_size' is missing");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(with(kLlama, "\"hidden_size\": 32", "\"hidden_size\": \"32\""),
                           "c.json");
            }),
            "c.json: field 'hidden_size' must be an integer, got \"32\"");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(with(kLlama, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
                           "c.json");
            }),
            "c.json: field 'num_key_value_heads' (3) must be positive and divide "
            "num_attention_heads (4)");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(with(kLlama, "\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
                           "c.json");
            }),
            "c.json: field 'num_attention_heads' (5) must divide hidden_size (32)");
  EXPECT_EQ(
      error_of<InvalidArgument>(
          [] { parse_config(with(kLlama, "\"llama3\"", "\"yarn\""), "c.json"); }),
      "c.json: field 'rope_scaling.rope_type' 'yarn' is not supported (supported: linear, llama3)");
  EXPECT_EQ(
      error_of<InvalidArgument>([] { parse_config(with(kLlama, "[1, 2]", "[1, 200]"), "c.json"); }),
      "c.json: field 'eos_token_id' 200 is outside the vocabulary [0, 100)");
  EXPECT_EQ(error_of<InvalidArgument>([] { parse_config(R"({"vocab_size": 3})", "c.json"); }),
            "c.json: field 'model_type' is missing");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(R"({"model_type": "gpt2", "vocab_size": 3, "n_embd": 0})", "c.json");
            }),
            "c.json: field 'n_embd' must be positive, got 0");
  EXPECT_NE(error_of<CorruptFile>([] {
              parse_config("{not json", "bad/config.json");
            }).find("bad/config.json"),
            std::string::npos);
}

TEST(ConfigErrors, OutOfRangeValuesAreRejectedBeforeBuilding) {
  const auto rejects = [](const std::string& from, const std::string& to,
                          const std::string& message) {
    EXPECT_EQ(error_of<InvalidArgument>([&] { parse_config(with(kLlama, from, to), "c.json"); }),
              message)
        << to;
  };
  const std::string eps = "\"num_hidden_layers\": 2,";
  rejects(eps, eps + " \"rms_norm_eps\": -1,",
          "c.json: field 'rms_norm_eps' must be positive and finite, got -1");
  rejects(eps, eps + " \"rms_norm_eps\": 0,",
          "c.json: field 'rms_norm_eps' must be positive and finite, got 0");
  rejects(eps, eps + " \"rope_theta\": 0,",
          "c.json: field 'rope_theta' must be positive and finite, got 0");
  rejects("\"factor\": 8.0", "\"factor\": 0",
          "c.json: field 'rope_scaling.factor' must be positive and finite, got 0");
  rejects("\"low_freq_factor\": 1.0", "\"low_freq_factor\": -1",
          "c.json: field 'rope_scaling.low_freq_factor' must be positive and finite, got -1");
  rejects("\"high_freq_factor\": 4.0", "\"high_freq_factor\": 1.0",
          "c.json: field 'rope_scaling.high_freq_factor' (1) must be greater than "
          "low_freq_factor (1)");
  rejects("\"original_max_position_embeddings\": 8192", "\"original_max_position_embeddings\": 0",
          "c.json: field 'rope_scaling.original_max_position_embeddings' must be positive, got 0");
  rejects("\"bos_token_id\": 0", "\"bos_token_id\": -7",
          "c.json: field 'bos_token_id' -7 is outside the vocabulary [0, 100)");
  rejects("\"bos_token_id\": 0", "\"bos_token_id\": 100",
          "c.json: field 'bos_token_id' 100 is outside the vocabulary [0, 100)");
  rejects("[1, 2]", "[1, -2]",
          "c.json: field 'eos_token_id' -2 is outside the vocabulary [0, 100)");
  rejects("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1.5",
          "c.json: field 'num_hidden_layers' must be an integer, got 1.5");
  rejects("\"num_hidden_layers\": 2", "\"num_hidden_layers\": [2]",
          "c.json: field 'num_hidden_layers' must be an integer, got an array");
  rejects("\"bos_token_id\": 0", "\"bos_token_id\": 0.0",
          "c.json: field 'bos_token_id' must be an integer, got 0.0");
  rejects(eps, eps + " \"max_position_embeddings\": -5,",
          "c.json: field 'max_position_embeddings' must be positive, got -5");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(R"({"model_type": "gpt2", "vocab_size": 3, "n_embd": 8, "n_layer": 1,
                               "n_head": 2, "n_positions": 4, "layer_norm_epsilon": -1e-5})",
                           "g.json");
            }),
            "g.json: field 'layer_norm_epsilon' must be positive and finite, got -1e-05");
  EXPECT_EQ(error_of<InvalidArgument>([] {
              parse_config(with(kLlama, "\"rope_type\": \"llama3\", \"factor\": 8.0",
                                "\"rope_type\": \"linear\", \"factor\": -2"),
                           "c.json");
            }),
            "c.json: field 'rope_scaling.factor' must be positive and finite, got -2");
}

TEST(ConfigErrors, SizesAreBounded) {
  const auto message = [](const std::string& from, const std::string& to) {
    return error_of<InvalidArgument>([&] { parse_config(with(kLlama, from, to), "c.json"); });
  };
  EXPECT_EQ(message("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1000000000"),
            fmt::format("c.json: field 'num_hidden_layers' must be at most {}, got 1000000000",
                        kMaxDimension));
  EXPECT_EQ(message("\"vocab_size\": 100", "\"vocab_size\": 4611686018427387904"),
            fmt::format("c.json: field 'vocab_size' must be at most {}, got 4611686018427387904",
                        kMaxVocabSize));
  EXPECT_EQ(message("\"hidden_size\": 32", "\"hidden_size\": 18446744073709551615"),
            "c.json: field 'hidden_size' must be an integer below 2^63, got 18446744073709551615");
  EXPECT_EQ(message("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 0"),
            "c.json: field 'num_key_value_heads' must be positive, got 0");
  // Each size within its limit, the product not: refused before any tensor is sized.
  const std::string big = message("\"vocab_size\": 100, \"hidden_size\": 32,",
                                  "\"vocab_size\": 2147483648, \"hidden_size\": 1048576,");
  EXPECT_NE(big.find("parameters, more than"), std::string::npos) << big;
  // Limits leave room for released models: Llama 3 405B's sizes parse.
  EXPECT_NO_THROW(parse_config(
      R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 16384,
          "intermediate_size": 53248, "num_hidden_layers": 126, "num_attention_heads": 128,
          "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0})",
      "405b.json"));
}

TEST(ConfigErrors, ConfigFileMustBeASmallRegularFile) {
  EXPECT_THROW(load_config("/dev/zero"), IoError);
  TempDir dir;
  const auto fifo = dir.path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::filesystem::create_directories(dir.path() / "fifo_model");
  std::filesystem::rename(fifo, dir.path() / "fifo_model" / "config.json");
  EXPECT_THROW(load_config(dir.path() / "fifo_model"), IoError);  // returns: never opened
  const auto big = dir.path() / "config.json";
  std::ofstream(big) << kLlama;
  std::filesystem::resize_file(big, kMaxConfigBytes + 1);  // sparse: no disk used
  const CorruptFile e = [&] {
    try {
      load_config(dir.path());
    } catch (const CorruptFile& caught) {
      return caught;
    }
    return CorruptFile("(no error)");
  }();
  EXPECT_EQ(e.file(), big.string());
  EXPECT_EQ(e.actual(), fmt::format("{} bytes", kMaxConfigBytes + 1));
}

TEST(Registry, UnknownModelTypeListsSupported) {
  const ModelConfig c = parse_config(with(kLlama, "llama", "falcon"), "f/config.json");
  EXPECT_EQ(error_of<InvalidArgument>([&] { create_model(c, at::kFloat); }),
            "f/config.json: model_type 'falcon' is not supported (supported: gemma2, gpt2, llama, "
            "mistral, mixtral, phi3, qwen2)");
}

TEST(Registry, ModulePathsAreCheckpointNames) {
  const ModelConfig c = parse_config(kLlama, "c.json");
  auto model = create_model(c, at::kFloat);
  EXPECT_EQ(model->decoder_layer_class(), "LlamaDecoderLayer");
  EXPECT_NO_THROW(model->module().find_tensor("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_EQ(model->module().find_tensor("model.layers.1.self_attn.k_proj.weight").tensor().size(0),
            16);
  EXPECT_EQ(create_model(parse_config(with(kLlama, "llama", "mistral"), "c.json"), at::kFloat)
                ->decoder_layer_class(),
            "MistralDecoderLayer");
}

TEST(LoadErrors, CheckpointDisagreeingWithConfigNamesTensorAndFile) {
  TempDir dir;
  for (const auto& e : std::filesystem::directory_iterator(fixture("llama_gqa"))) {
    std::filesystem::copy(e.path(), dir.path() / e.path().filename());
  }
  std::string text;
  {
    std::ifstream in(dir.path() / "config.json");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir.path() / "config.json")
      << with(text, "\"intermediate_size\": 128", "\"intermediate_size\": 80");
  const std::string message = error_of<ShapeMismatch>([&] { load_model(dir.path()); });
  EXPECT_NE(message.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
}

TEST(GenerateErrors, PromptLongerThanMaxPositions) {
  LoadedModel loaded = load_model(fixture("gpt2"));
  const std::vector<std::int64_t> prompt(65, 3);
  const std::string message = error_of<InvalidArgument>([&] { generate(*loaded.model, {prompt}); });
  EXPECT_NE(message.find("prompt 0 has 65 tokens, more than the model's n_positions = 64 in"),
            std::string::npos)
      << message;
  EXPECT_EQ(error_of<InvalidArgument>([&] {
              generate(*loaded.model, {{3, 400}});
            }).substr(0, 62),
            "prompt 0: token id 400 is outside the vocabulary [0, 320) of /");
  EXPECT_EQ(error_of<InvalidArgument>([&] { generate(*loaded.model, {{}}); }),
            "generate: prompt 0 is empty");
}

}  // namespace
}  // namespace ferry::models
