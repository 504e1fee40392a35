#pragma once
// Chat templates: the Jinja template Hugging Face models ship as `chat_template` in
// tokenizer_config.json, which turns a list of chat messages into the prompt text. ferry renders
// them with its own interpreter of the Jinja subset real templates use, with the settings
// transformers compiles them with (trim_blocks and lstrip_blocks on, the loop-control tags, a
// Python-json `tojson`). docs/chat_templates.md lists what is supported; anything else is
// refused when the template is parsed, naming the construct and its line:column.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models {

// The largest prompt render() produces, and the most work one render may do (statements,
// expressions and list elements visited): past either it throws InvalidArgument, so a template
// that loops without end or grows a string without bound fails instead of exhausting memory.
inline constexpr std::size_t kMaxChatOutputBytes = std::size_t{64} << 20;
inline constexpr std::size_t kMaxChatRenderSteps = std::size_t{10'000'000};

// One message of a conversation, as in the OpenAI and transformers APIs.
struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ...
  std::string content;  // UTF-8 text
};

// What apply_chat_template() gives a template besides the messages.
struct ChatRenderOptions {
  // End with the opening of an assistant turn (on by default, unlike transformers: ferry renders
  // prompts to generate from).
  bool add_generation_prompt = true;
  std::string bos_token;  // tokenizer_config.json's bos_token, as text
  std::string eos_token;  // tokenizer_config.json's eos_token, as text
};

// A parsed chat template. Immutable once parsed: copies share it, and render() may be called
// from several threads at once.
class ChatTemplate {
 public:
  // Parses `source`; `origin` names it in errors ("tokenizer_config.json: chat_template").
  // Throws CorruptFile for a syntax error and Unsupported for a construct outside the subset (a
  // macro, an include, an unknown tag, filter, test, function or method), each message naming
  // the origin, the line:column and the construct.
  static ChatTemplate parse(std::string_view source, std::string origin);

  // Renders with the variables of `variables_json`, a JSON object (`messages`,
  // `add_generation_prompt`, `bos_token`, `eos_token`, `tools`, ...). Messages given this way
  // may carry any field (tool_calls, content as a list of parts). Throws InvalidArgument when
  // `variables_json` is not a JSON object, when the template calls raise_exception (the message
  // contains the template's text), on a type error (adding a string to a number, calling a
  // method on an undefined value), and past kMaxChatOutputBytes or kMaxChatRenderSteps.
  std::string render(std::string_view variables_json) const;

  const std::string& origin() const;

 private:
  struct Impl;
  explicit ChatTemplate(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

// Renders `messages` with the variables transformers' apply_chat_template passes: messages,
// add_generation_prompt, bos_token and eos_token. Throws as ChatTemplate::render().
std::string apply_chat_template(const ChatTemplate& chat_template,
                                const std::vector<ChatMessage>& messages,
                                const ChatRenderOptions& options = {});

// The `chat_template` of tokenizer_config.json text: the string, or from the list form
// ([{"name": ..., "template": ...}]) the one named "default". nullopt when the file has none
// (absent or null). Throws CorruptFile naming `origin` when the text is not a JSON object, when
// chat_template has another type, or when a list has no "default" entry.
std::optional<std::string> chat_template_from_tokenizer_config(std::string_view json_text,
                                                               const std::string& origin);

// A model folder's chat template as found, before parsing: the template text of
// tokenizer_config.json ("" when the folder has none, or no such file), where it came from for
// messages, and the bos/eos tokens as text (a string, or an added-token object's "content").
struct ChatTemplateSource {
  std::string source;
  std::string origin;  // "<folder>/tokenizer_config.json: chat_template"
  std::string bos_token;
  std::string eos_token;
};
// Reads it from `folder`. Throws IoError / CorruptFile for an unreadable tokenizer_config.json.
ChatTemplateSource read_chat_template_source(const std::filesystem::path& folder);

}  // namespace ferry::models
