#include "ferry/models/chat_template.h"

#include <nlohmann/json.hpp>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "models/chat/parser.h"
#include "models/chat/render.h"

namespace ferry::models {

struct ChatTemplate::Impl {
  chat::Source source;
  std::vector<chat::Stmt> program;
};

ChatTemplate::ChatTemplate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

ChatTemplate ChatTemplate::parse(std::string_view source, std::string origin) {
  auto impl = std::make_shared<Impl>(Impl{chat::Source(source, std::move(origin)), {}});
  impl->program = chat::parse_template(impl->source);
  return ChatTemplate(std::move(impl));
}

const std::string& ChatTemplate::origin() const { return impl_->source.origin; }

std::string ChatTemplate::render(std::string_view variables_json) const {
  const std::string& origin = impl_->source.origin;
  auto variables = std::make_shared<chat::Json>(
      chat::Json::parse(variables_json, nullptr, /*allow_exceptions=*/false));
  FERRY_CHECK(variables->is_object(), InvalidArgument,
              "{}: the variables to render with must be a JSON object", origin);
  FERRY_CHECK(!chat::deeper_than(*variables, chat::kMaxValueDepth), InvalidArgument,
              "{}: the variables to render with are nested deeper than {} levels", origin,
              chat::kMaxValueDepth);
  return chat::render_template(impl_->source, impl_->program, variables);
}

std::string apply_chat_template(const ChatTemplate& chat_template,
                                const std::vector<ChatMessage>& messages,
                                const ChatRenderOptions& options) {
  chat::Json variables = chat::Json::object();
  chat::Json& list = variables["messages"] = chat::Json::array();
  for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  variables["add_generation_prompt"] = options.add_generation_prompt;
  variables["bos_token"] = options.bos_token;
  variables["eos_token"] = options.eos_token;
  // Invalid UTF-8 in a message is replaced, as a JSON round trip must be valid text.
  return chat_template.render(
      variables.dump(-1, ' ', /*ensure_ascii=*/false, chat::Json::error_handler_t::replace));
}

std::optional<std::string> chat_template_from_tokenizer_config(std::string_view json_text,
                                                               const std::string& origin) {
  const auto config = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  FERRY_CHECK(config.is_object(), CorruptFile, "{}: not a JSON object", origin);
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  FERRY_CHECK(it->is_array(), CorruptFile,
              "{}: chat_template must be a string or a list of {{name, template}}, not {}", origin,
              it->type_name());
  for (const auto& entry : *it) {
    FERRY_CHECK(entry.is_object() && entry.contains("name") && entry["name"].is_string() &&
                    entry.contains("template") && entry["template"].is_string(),
                CorruptFile, "{}: each chat_template entry needs a string name and template",
                origin);
    if (entry["name"] == "default") return entry["template"].get<std::string>();
  }
  throw CorruptFile(fmt::format("{}: chat_template has no template named 'default'", origin),
                    ErrorFields{.file = origin});
}

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

}  // namespace

ChatTemplateSource read_chat_template_source(const std::filesystem::path& folder) {
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

}  // namespace ferry::models
