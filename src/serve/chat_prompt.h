#pragma once
// A model's chat template, parsed once when the server is made, turning the messages of a chat
// request into prompt ids.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ferry/models/chat_template.h"
#include "ferry/models/tokenizer.h"
#include "ferry/serve/server.h"
#include "serve/openai_request.h"

namespace ferry::serve {

class ChatPrompt {
 public:
  // Parses the template; a template that cannot be used is kept as the reason chat requests
  // are refused (and logged once), not thrown: completions still work.
  explicit ChatPrompt(const ChatTemplateSource& source);

  // The prompt ids of `messages` followed by the opening of an assistant turn, tokenized
  // without adding special tokens (the template writes them, as transformers does). Throws
  // ApiException 400 when the model has no usable template or rendering fails.
  std::vector<std::int64_t> prompt(const std::vector<RequestMessage>& messages,
                                   const models::Tokenizer& tokenizer) const;

 private:
  ChatTemplateSource source_;
  std::optional<models::ChatTemplate> template_;
  std::string unusable_;  // why there is no template_
};

}  // namespace ferry::serve
