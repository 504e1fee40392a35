#pragma once
// The bodies the OpenAI-style API answers with: whole completions, the chunks of a stream
// (server-sent events), usage counts and finish reasons (docs/serve.md).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/engine/engine.h"

namespace ferry::serve {

// OpenAI's finish_reason for the engine's: eos and stop_string → "stop", length and context →
// "length"; "cancelled" and "error" stay as they are.
std::string finish_reason(std::string_view engine_reason);

nlohmann::json usage_json(const engine::Usage& usage);

// What every answer and chunk of one request shares.
struct ResponseHead {
  std::string id;            // "cmpl-…" or "chatcmpl-…"
  std::int64_t created = 0;  // Unix seconds
  std::string model;
  bool chat = false;
};

// The non-streamed answer.
nlohmann::json completion_json(const ResponseHead& head, const std::string& text,
                               std::string_view engine_reason, const engine::Usage& usage);

// One chunk of a stream: new text (with the role on a chat stream's first chunk), or the final
// chunk with its finish reason and usage.
nlohmann::json chunk_json(const ResponseHead& head, const std::string& text, bool first);
nlohmann::json final_chunk_json(const ResponseHead& head, const std::string& text,
                                std::string_view engine_reason, const engine::Usage& usage);
// stream_options.include_usage: the last chunk before [DONE], usage only (no choices).
nlohmann::json usage_chunk_json(const ResponseHead& head, const engine::Usage& usage);

// JSON text of an answer. Generated text may end inside a multi-byte character (the engine holds
// such bytes back, but a request that ends there releases them): replaced, so it stays valid.
std::string json_text(const nlohmann::json& j);

// One server-sent event: "data: JSON\n\n".
std::string sse_event(const nlohmann::json& data);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace ferry::serve
