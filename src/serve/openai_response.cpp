#include "serve/openai_response.h"

namespace ferry::serve {
namespace {

using nlohmann::json;

json head_json(const ResponseHead& head, bool chunk) {
  const char* object =
      head.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", head.id}, {"object", object}, {"created", head.created}, {"model", head.model}};
}

json choice(const ResponseHead& head, const json& content, const json& reason, bool chunk) {
  json c = {{"index", 0}};
  if (!head.chat) {
    c["text"] = content.is_null() ? json("") : content;
  } else if (chunk) {
    c["delta"] = content.is_null() ? json::object() : json{{"content", content}};
  } else {
    c["message"] = {{"role", "assistant"}, {"content", content}};
  }
  c["logprobs"] = nullptr;
  c["finish_reason"] = reason;
  return c;
}

}  // namespace

std::string finish_reason(std::string_view engine_reason) {
  if (engine_reason == "eos" || engine_reason == "stop_string") return "stop";
  if (engine_reason == "length" || engine_reason == "context") return "length";
  return std::string(engine_reason);
}

json usage_json(const engine::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

json completion_json(const ResponseHead& head, const std::string& text,
                     std::string_view engine_reason, const engine::Usage& usage) {
  json j = head_json(head, /*chunk=*/false);
  j["choices"] = json::array({choice(head, text, finish_reason(engine_reason), false)});
  j["usage"] = usage_json(usage);
  return j;
}

json chunk_json(const ResponseHead& head, const std::string& text, bool first) {
  json j = head_json(head, /*chunk=*/true);
  json c = choice(head, text, nullptr, true);
  if (head.chat && first) c["delta"]["role"] = "assistant";
  j["choices"] = json::array({std::move(c)});
  return j;
}

json final_chunk_json(const ResponseHead& head, const std::string& text,
                      std::string_view engine_reason, const engine::Usage& usage) {
  json j = head_json(head, /*chunk=*/true);
  j["choices"] = json::array({choice(head, text.empty() ? json(nullptr) : json(text),
                                     finish_reason(engine_reason), true)});
  j["usage"] = usage_json(usage);
  return j;
}

json usage_chunk_json(const ResponseHead& head, const engine::Usage& usage) {
  json j = head_json(head, /*chunk=*/true);
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return j;
}

std::string json_text(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

std::string sse_event(const json& data) { return "data: " + json_text(data) + "\n\n"; }

}  // namespace ferry::serve
