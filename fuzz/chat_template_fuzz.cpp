// libFuzzer target: chat template parsing on arbitrary text, then a render of what parsed with a
// small conversation (roles, unicode, a tool call, content as a list of parts). Only ferry::Error
// may escape; the render's step and output limits keep every input finite.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/core/error.h"
#include "ferry/models/chat_template.h"

namespace {

constexpr std::string_view kVariables = R"({
  "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi, caf\u00e9 \ud83d\ude00 \"quoted\"\n"},
    {"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": {"x": 1, "y": [true, null]}}}]},
    {"role": "tool", "content": [{"type": "text", "text": "42"}]},
    {"role": "user", "content": "  2+2?  "}
  ],
  "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
  "add_generation_prompt": true,
  "bos_token": "<s>",
  "eos_token": "</s>"
})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto t = ferry::models::ChatTemplate::parse(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/chat_template");
    const std::string out = t.render(kVariables);
    if (out.size() > ferry::models::kMaxChatOutputBytes) __builtin_trap();
  } catch (const ferry::Error&) {
  }
  return 0;
}
