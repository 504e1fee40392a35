#include "serve/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "ferry/models/generate.h"
#include "serve/api_error.h"

namespace ferry::serve {
namespace {

using nlohmann::json;

// OpenAI's stop list holds at most 4; a few more cost nothing.
constexpr std::size_t kMaxStopStrings = 16;
// max_tokens of a completions request that sets none (OpenAI's default).
constexpr std::int64_t kDefaultCompletionTokens = 16;

// The field, or null when it is absent or JSON null (both mean "not set").
const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void wrong_type(const char* name, const char* expected, const json& value) {
  bad_request(name, fmt::format("'{}': expected {}, got {}", name, expected, value.type_name()));
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) wrong_type(name, "true or false", *v);
  return v->get<bool>();
}

std::optional<std::int64_t> integer(const json& body, const char* name, std::int64_t low,
                                    std::int64_t high) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) wrong_type(name, "an integer", *v);
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(high)) {
    bad_request(name, fmt::format("'{}': expected an integer from {} to {}, got {}", name, low,
                                  high, v->dump()));
  }
  const std::int64_t x = v->get<std::int64_t>();
  if (x < low || x > high) {
    bad_request(name,
                fmt::format("'{}': expected an integer from {} to {}, got {}", name, low, high, x));
  }
  return x;
}

// A finite number in [low, high] (or (low, high] with `open_low`).
std::optional<double> number(const json& body, const char* name, double low, double high,
                             bool open_low = false) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) wrong_type(name, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < low || x > high || (open_low && x == low)) {
    bad_request(name, fmt::format("'{}': expected a number in {}{}, {}], got {}", name,
                                  open_low ? "(" : "[", low, high, v->dump()));
  }
  return x;
}

[[noreturn]] void unsupported(const char* name, const std::string& what) {
  bad_request(name, fmt::format("'{}': {} is not supported by ferry serve", name, what),
              "unsupported_parameter");
}

std::vector<std::int64_t> token_ids(const json& list, const ServedModel& model) {
  std::vector<std::int64_t> ids;
  ids.reserve(list.size());
  for (const json& v : list) {
    if (!v.is_number_integer()) wrong_type("prompt", "a string or a list of token ids", v);
    const std::int64_t id = v.get<std::int64_t>();
    if (id < 0 || id >= model.vocab_size) {  // a huge unsigned id reads as negative
      bad_request("prompt", fmt::format("'prompt': token id {} is outside the vocabulary "
                                        "(expected 0 to {})",
                                        v.dump(), model.vocab_size - 1));
    }
    ids.push_back(id);
  }
  return ids;
}

std::vector<std::string> stop_strings(const json& body) {
  const json* v = field(body, "stop");
  if (v == nullptr) return {};
  std::vector<std::string> stops;
  if (v->is_string()) {
    stops.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > kMaxStopStrings) {
      bad_request("stop",
                  fmt::format("'stop': at most {} strings, got {}", kMaxStopStrings, v->size()));
    }
    for (const json& s : *v) {
      if (!s.is_string()) wrong_type("stop", "a string or a list of strings", s);
      stops.push_back(s.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or a list of strings", *v);
  }
  for (const std::string& s : stops) {
    if (s.empty()) bad_request("stop", "'stop': a stop string must not be empty");
  }
  return stops;
}

std::uint64_t random_seed() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator();
}

}  // namespace

json ApiError::body() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

void bad_request(std::string param, std::string message, std::string code) {
  throw ApiException(ApiError{.status = 400,
                              .message = std::move(message),
                              .param = std::move(param),
                              .code = std::move(code)});
}

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad_request("", "the request body is not valid JSON");
  if (!j.is_object()) {
    bad_request("", fmt::format("the request body must be a JSON object, got {}", j.type_name()));
  }
  return j;
}

void check_common_fields(const json& body, const ServedModel& model, bool chat) {
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) wrong_type("model", "a string", *m);
    if (m->get<std::string>() != model.id) {
      bad_request("model",
                  fmt::format("the model '{}' does not exist: this server serves '{}'",
                              m->get<std::string>(), model.id),
                  "model_not_found");
    }
  }
  if (const std::optional<std::int64_t> n = integer(body, "n", 1, 128); n && *n != 1) {
    unsupported("n", fmt::format("n = {} (more than one choice per request)", *n));
  }
  if (const std::optional<std::int64_t> b = integer(body, "best_of", 1, 128); b && *b != 1) {
    unsupported("best_of", fmt::format("best_of = {}", *b));
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    if (const std::optional<double> p = number(body, penalty, -2, 2); p && *p != 0) {
      unsupported(penalty, "a value other than 0 (use repetition_penalty)");
    }
  }
  if (const json* bias = field(body, "logit_bias")) {
    if (!bias->is_object()) wrong_type("logit_bias", "an object", *bias);
    if (!bias->empty()) unsupported("logit_bias", "a non-empty logit_bias");
  }
  if (const json* lp = field(body, "logprobs")) {
    if (!(lp->is_boolean() && !lp->get<bool>())) unsupported("logprobs", "logprobs");
  }
  if (field(body, "top_logprobs") != nullptr) unsupported("top_logprobs", "top_logprobs");
  for (const char* name : {"tools", "functions"}) {
    if (const json* v = field(body, name); v != nullptr && !(v->is_array() && v->empty())) {
      unsupported(name, "tool calling");
    }
  }
  if (const json* choice = field(body, "tool_choice");
      choice != nullptr && *choice != json("none")) {
    unsupported("tool_choice", "tool calling");
  }
  if (const json* format = field(body, "response_format")) {
    if (!format->is_object()) wrong_type("response_format", "an object", *format);
    if (format->value("type", json("text")) != json("text")) {
      unsupported("response_format", "a response format other than text");
    }
  }
  if (!chat) {
    if (boolean(body, "echo").value_or(false)) unsupported("echo", "echo");
    if (const json* suffix = field(body, "suffix")) {
      if (!suffix->is_string()) wrong_type("suffix", "a string", *suffix);
      if (!suffix->get<std::string>().empty()) unsupported("suffix", "suffix");
    }
  }
}

std::vector<std::int64_t> completion_prompt(const json& body, const ServedModel& model) {
  const json* p = field(body, "prompt");
  if (p == nullptr) bad_request("prompt", "'prompt' is required");
  const json* prompt = p;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) {
    prompt = &(*p)[0];  // a batch of one
  } else if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    unsupported("prompt", fmt::format("a batch of {} prompts (send one per request)", p->size()));
  }
  std::vector<std::int64_t> ids;
  if (prompt->is_string()) {
    ids = model.tokenizer->encode(prompt->get<std::string>());
  } else if (prompt->is_array()) {
    ids = token_ids(*prompt, model);
  } else {
    wrong_type("prompt", "a string or a list of token ids", *prompt);
  }
  if (ids.empty()) bad_request("prompt", "'prompt' is empty (0 tokens)");
  return ids;
}

std::vector<RequestMessage> chat_messages(const json& body) {
  const json* m = field(body, "messages");
  if (m == nullptr) bad_request("messages", "'messages' is required");
  if (!m->is_array()) wrong_type("messages", "a list of messages", *m);
  if (m->empty()) bad_request("messages", "'messages' is empty: expected at least one message");
  std::vector<RequestMessage> messages;
  for (std::size_t i = 0; i < m->size(); ++i) {
    const json& message = (*m)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!message.is_object()) {
      bad_request(where, fmt::format("'{}': expected an object with role and content, got {}",
                                     where, message.type_name()));
    }
    const json* role = field(message, "role");
    if (role == nullptr || !role->is_string()) {
      bad_request(where + ".role", fmt::format("'{}.role': expected a string", where));
    }
    RequestMessage out{.role = role->get<std::string>(), .content = ""};
    if (const json* content = field(message, "content")) {
      if (content->is_string()) {
        out.content = content->get<std::string>();
      } else if (content->is_array()) {
        for (const json& part : *content) {
          if (!part.is_object() || part.value("type", json()) != json("text") ||
              !part.contains("text") || !part["text"].is_string()) {
            bad_request(where + ".content",
                        fmt::format("'{}.content': only text parts ({{\"type\": \"text\", "
                                    "\"text\": ...}}) are supported",
                                    where));
          }
          out.content += part["text"].get<std::string>();
        }
      } else {
        bad_request(where + ".content",
                    fmt::format("'{}.content': expected a string or a list of text parts, got {}",
                                where, content->type_name()));
      }
    }
    messages.push_back(std::move(out));
  }
  return messages;
}

GenerationRequest generation_request(const json& body, const ServedModel& model,
                                     std::vector<std::int64_t> prompt, bool chat) {
  GenerationRequest r;
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }

  // Sampling: what the request sets, else generation_config.json, else greedy (`ferry run`).
  models::GenerationChoices chosen;
  chosen.temperature = number(body, "temperature", 0, 1e6);
  chosen.top_p = number(body, "top_p", 0, 1, /*open_low=*/true);
  if (const std::optional<std::int64_t> k =
          integer(body, "top_k", -1, std::numeric_limits<std::int32_t>::max())) {
    chosen.top_k = std::max<std::int64_t>(*k, 0);  // -1: off (vLLM's spelling)
  }
  chosen.min_p = number(body, "min_p", 0, 1);
  chosen.repetition_penalty = number(body, "repetition_penalty", 0, 1e6, /*open_low=*/true);
  if (const std::optional<std::int64_t> seed =
          integer(body, "seed", std::numeric_limits<std::int64_t>::min(),
                  std::numeric_limits<std::int64_t>::max())) {
    chosen.seed = static_cast<std::uint64_t>(*seed);
  } else {
    chosen.seed = random_seed();  // OpenAI: without a seed, every request samples anew
  }
  const bool ignore_eos = boolean(body, "ignore_eos").value_or(false);
  models::GenerateOptions g = models::resolve_generate_options(model.generation, chosen);
  r.options.sampling = g.sampling;
  if (!ignore_eos) {
    r.options.eos_token_ids = g.eos_token_ids;
    if (const std::optional<std::int64_t> eos = model.tokenizer->eos_token_id();
        eos &&
        std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), *eos) == g.eos_token_ids.end()) {
      r.options.eos_token_ids.push_back(*eos);
    }
  }
  r.options.stop_strings = stop_strings(body);

  // Tokens: the prompt and what may follow it must fit the context.
  const auto prompt_tokens = static_cast<std::int64_t>(prompt.size());
  const char* prompt_param = chat ? "messages" : "prompt";
  if (prompt_tokens >= model.context) {
    bad_request(prompt_param,
                fmt::format("the prompt is {} tokens, but this model's context is {} tokens "
                            "(prompt and completion together)",
                            prompt_tokens, model.context),
                "context_length_exceeded");
  }
  const std::int64_t room = model.context - prompt_tokens;
  std::optional<std::int64_t> max_tokens =
      integer(body, "max_tokens", 1, std::numeric_limits<std::int64_t>::max());
  const char* max_param = "max_tokens";
  if (chat && !max_tokens) {
    max_param = "max_completion_tokens";
    max_tokens = integer(body, max_param, 1, std::numeric_limits<std::int64_t>::max());
  }
  if (max_tokens && *max_tokens > room) {
    bad_request(max_param,
                fmt::format("'{}' is {}, but this model's context is {} tokens and the prompt "
                            "takes {}: at most {} can follow it",
                            max_param, *max_tokens, model.context, prompt_tokens, room),
                "context_length_exceeded");
  }
  const std::int64_t fallback = chat ? room : kDefaultCompletionTokens;
  r.options.max_new_tokens =
      max_tokens.value_or(std::min(model.default_max_tokens.value_or(fallback), room));
  r.prompt = std::move(prompt);
  return r;
}

}  // namespace ferry::serve
