#include "serve/chat_prompt.h"

#include <fmt/format.h>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "serve/api_error.h"

namespace ferry::serve {

ChatPrompt::ChatPrompt(const ChatTemplateSource& source) : source_(source) {
  if (source.source.empty()) {
    unusable_ = fmt::format(
        "this model has no chat template ({} is not set): use /v1/completions with a prompt",
        source.origin.empty() ? "tokenizer_config.json: chat_template" : source.origin);
    return;
  }
  try {
    template_ = models::ChatTemplate::parse(source.source, source.origin);
  } catch (const Error& e) {
    unusable_ = fmt::format("this model's chat template cannot be used: {}", e.what());
    log_warning("ferry serve: {}; chat completions will be refused", unusable_);
  }
}

std::vector<std::int64_t> ChatPrompt::prompt(const std::vector<RequestMessage>& messages,
                                             const models::Tokenizer& tokenizer) const {
  if (!template_) bad_request("messages", unusable_, "no_chat_template");
  std::vector<models::ChatMessage> chat;
  chat.reserve(messages.size());
  for (const RequestMessage& m : messages) chat.push_back({.role = m.role, .content = m.content});
  std::string text;
  try {
    text = models::apply_chat_template(*template_, chat,
                                       {.add_generation_prompt = true,
                                        .bos_token = source_.bos_token,
                                        .eos_token = source_.eos_token});
  } catch (const Error& e) {
    bad_request("messages", fmt::format("the chat template failed: {}", e.what()),
                "chat_template_error");
  }
  std::vector<std::int64_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (ids.empty()) bad_request("messages", "the chat template rendered an empty prompt");
  return ids;
}

}  // namespace ferry::serve
