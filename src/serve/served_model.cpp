// What a loaded model folder gives the server: its name, limits, sampling defaults and chat
// template.
#include <nlohmann/json.hpp>

#include "ferry/dispatch/prefetch.h"
#include "ferry/models/chat_template.h"
#include "ferry/serve/server.h"
#include "io/json_file.h"

namespace ferry::serve {
namespace {

// A special token of tokenizer_config.json as text: a string, or an added-token object
// {"content": "<s>", ...}; "" when absent or of another form.
std::string special_token(const nlohmann::ordered_json& config, const char* name) {
  const auto it = config.find(name);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

ChatTemplateSource chat_template_source(const std::filesystem::path& folder) {
  const std::filesystem::path file = folder / "tokenizer_config.json";
  ChatTemplateSource out{.source = "", .origin = file.string() + ": chat_template"};
  if (!std::filesystem::exists(file)) return out;
  const std::string text = io::read_text_file(file);
  out.source = models::chat_template_from_tokenizer_config(text, file.string()).value_or("");
  const nlohmann::ordered_json config = io::parse_json(text, file.string());
  out.bos_token = special_token(config, "bos_token");
  out.eos_token = special_token(config, "eos_token");
  return out;
}

// The folder's own name, also for "models/tiny/" and ".".
std::string folder_name(const std::filesystem::path& folder) {
  std::filesystem::path p = std::filesystem::absolute(folder).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

ServedModel served_model(const std::filesystem::path& folder, const models::LoadedModel& loaded,
                         std::shared_ptr<const models::Tokenizer> tokenizer, std::int64_t context) {
  ServedModel m;
  m.id = folder_name(folder);
  m.tokenizer = std::move(tokenizer);
  m.generation = loaded.generation;
  m.context = context;
  m.vocab_size = loaded.config.vocab_size;
  m.chat_template = chat_template_source(folder);
  if (loaded.model) m.prefetcher = dispatch::model_prefetcher(loaded.model->module());
  return m;
}

}  // namespace ferry::serve
