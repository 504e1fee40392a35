// load_model against checkpoints that disagree with config.json or carry extra tensors: the
// config is checked against the headers before a model is built; buffers transformers saved
// are dropped silently, other unused tensors warned about once, missing ones fatal.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/models/registry.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

using testing::fixture;
using testing::TempDir;

// A copy of a fixture folder whose config.json has `from` replaced by `to`, and whose checkpoint
// gets `extra` tensors and loses `drop`.
class EditedModel {
 public:
  EditedModel(const std::string& name, const std::string& from = "", const std::string& to = "",
              const std::map<std::string, at::Tensor>& extra = {},
              const std::vector<std::string>& drop = {}) {
    std::ifstream in(fixture(name) / "config.json");
    std::string config(std::istreambuf_iterator<char>(in), {});
    if (!from.empty()) {
      const auto at = config.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      config.replace(at, from.size(), to);
    }
    std::ofstream(dir_.path() / "config.json") << config;
    std::map<std::string, at::Tensor> tensors = extra;
    const auto source = io::open_checkpoint(fixture(name) / "model.safetensors");
    for (const std::string& n : source->names()) {
      if (std::find(drop.begin(), drop.end(), n) == drop.end()) tensors[n] = source->load(n);
    }
    io::save_safetensors(dir_.path() / "model.safetensors", tensors);
  }
  const std::filesystem::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

template <class E>
E error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  ADD_FAILURE() << "no error of the expected type";
  return E("(no error)");
}

TEST(LoadModelChecks, LayerCountDisagreeingWithCheckpointNamesConfigField) {
  for (const auto& [name, from, to, field] :
       std::vector<std::tuple<std::string, std::string, std::string, std::string>>{
           {"llama_gqa", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3",
            "num_hidden_layers"},
           {"llama_gqa", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1",
            "num_hidden_layers"},
           {"gpt2", "\"n_layer\": 2", "\"n_layer\": 1000000", "n_layer"}}) {
    const EditedModel model(name, from, to);
    const auto e = error_of<ShapeMismatch>([&] { load_model(model.path()); });
    EXPECT_EQ(e.path(), field) << e.what();
    EXPECT_EQ(e.file(), (model.path() / "config.json").string()) << e.what();
    EXPECT_EQ(e.actual(),
              "2 layers (" + std::string(name == "gpt2" ? "transformer.h." : "model.layers.") +
                  "0 to " + (name == "gpt2" ? "transformer.h." : "model.layers.") + "1)")
        << e.what();
  }
}

TEST(LoadModelChecks, EmbeddingDisagreeingWithConfigNamesVocabOrHidden) {
  {
    const EditedModel model("llama_gqa", "\"vocab_size\": 320", "\"vocab_size\": 400");
    const auto e = error_of<ShapeMismatch>([&] { load_model(model.path()); });
    EXPECT_EQ(e.path(), "vocab_size");
    EXPECT_EQ(e.expected(), "[400, 32]");
    EXPECT_EQ(e.actual(), "[320, 32]");
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  {
    const EditedModel model("gpt2", "\"n_embd\": 32", "\"n_embd\": 64");
    const auto e = error_of<ShapeMismatch>([&] { load_model(model.path()); });
    EXPECT_EQ(e.path(), "n_embd") << e.what();
  }
}

TEST(LoadModelChecks, MissingTensorIsFatalAndNamed) {
  const EditedModel model("llama_gqa", "", "", {}, {"model.norm.weight"});
  const auto e = error_of<MissingTensor>([&] { load_model(model.path()); });
  EXPECT_EQ(e.path(), "model.norm.weight");
  EXPECT_NE(std::string(e.what()).find("[model.norm.weight]"), std::string::npos) << e.what();
}

TEST(LoadModelChecks, KnownBuffersDropSilentlyOtherExtrasWarnOnce) {
  const at::Tensor inv_freq = at::ones({4});
  const EditedModel llama("llama_gqa", "", "",
                          {{"model.layers.0.self_attn.rotary_emb.inv_freq", inv_freq},
                           {"model.layers.1.self_attn.rotary_emb.inv_freq", inv_freq},
                           {"model.extra_thing.weight", at::zeros({2})}});
  LogCapture capture;
  const LoadedModel loaded = load_model(llama.path());
  EXPECT_EQ(loaded.config.n_layers, 2);
  std::size_t warnings = 0;
  for (const auto& entry : capture.entries()) {
    if (entry.level != LogLevel::kWarning) continue;
    ++warnings;
    EXPECT_EQ(entry.message.find("inv_freq"), std::string::npos) << entry.message;
    EXPECT_NE(entry.message.find("model.extra_thing.weight"), std::string::npos) << entry.message;
  }
  EXPECT_EQ(warnings, 1u);

  const at::Tensor mask = at::ones({1, 1, 64, 64});
  const EditedModel gpt2("gpt2", "", "",
                         {{"transformer.h.0.attn.bias", mask},
                          {"transformer.h.1.attn.bias", mask},
                          {"transformer.h.0.attn.masked_bias", at::scalar_tensor(-1e4)}});
  LogCapture quiet;
  EXPECT_NO_THROW(load_model(gpt2.path()));
  EXPECT_FALSE(quiet.contains(LogLevel::kWarning, "attn")) << quiet.entries().size();
}

TEST(LoadModelChecks, StrictMakesUnusedTensorsFatal) {
  const EditedModel llama("llama_gqa", "", "",
                          {{"model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({4})},
                           {"model.extra_thing.weight", at::zeros({2})}});
  LoadModelOptions options;
  options.dispatch.strict = true;
  const auto e = error_of<MissingTensor>([&] { load_model(llama.path(), options); });
  EXPECT_NE(std::string(e.what()).find("model.extra_thing.weight"), std::string::npos);
  EXPECT_EQ(std::string(e.what()).find("inv_freq"), std::string::npos) << e.what();
}

TEST(LoadModelChecks, AConfigAlreadyReadIsNotReadAgain) {
  // `ferry run` reads config.json once, before loading (issue 13): a folder whose config.json is
  // gone by the time load_model runs still loads with the caller's copy.
  const EditedModel model("llama_gqa");
  const ModelConfig config = load_config(model.path());
  std::filesystem::remove(model.path() / "config.json");
  const LoadedModel loaded = load_model(model.path(), {.config = config});
  EXPECT_EQ(loaded.config.n_layers, config.n_layers);
  EXPECT_EQ(loaded.config.file, config.file);
  EXPECT_THROW(load_model(model.path()), IoError);
}

}  // namespace
}  // namespace ferry::models
