#pragma once
// Reading the bodies of POST /v1/completions and /v1/chat/completions into what the engine is
// given. Every field is checked for its type and range; a bad one throws ApiException (400)
// naming it. The rules, defaults and unsupported fields are listed in docs/serve.md.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "ferry/engine/engine.h"
#include "ferry/serve/server.h"

namespace ferry::serve {

struct GenerationRequest {
  std::vector<std::int64_t> prompt;
  engine::RequestOptions options;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a usage-only chunk at the end
};

// A chat message as the request gives it (content parts of type "text" joined).
struct RequestMessage {
  std::string role;
  std::string content;
};

// The body as a JSON object (400 for malformed JSON or another JSON type).
nlohmann::json parse_body(const std::string& body);

// Checks `model` (absent, null, or the served id) and the fields neither endpoint supports.
void check_common_fields(const nlohmann::json& body, const ServedModel& model, bool chat);

// The prompt of a completions request: a string (tokenized with the model's special tokens), a
// list of token ids, or a list holding one of those.
std::vector<std::int64_t> completion_prompt(const nlohmann::json& body, const ServedModel& model);

// The messages of a chat request (400 for none, or one that is not {role, content}).
std::vector<RequestMessage> chat_messages(const nlohmann::json& body);

// Sampling, stops, max_tokens and streaming of either request, for a prompt already read.
// max_tokens defaults to model.default_max_tokens, else 16 for completions (OpenAI's) and the
// rest of the context for chat; never more than the context leaves.
GenerationRequest generation_request(const nlohmann::json& body, const ServedModel& model,
                                     std::vector<std::int64_t> prompt, bool chat);

}  // namespace ferry::serve
