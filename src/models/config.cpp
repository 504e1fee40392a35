// config.json parsing: the fields common to every architecture here, the rest by the
// architecture's own reader (src/models/arch/), with transformers' names and defaults.
#include "ferry/models/config.h"

#include <cmath>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "models/architecture.h"
#include "models/blocks/config_io.h"
#include "models/model_file.h"

namespace ferry::models {

using detail::Json;
using detail::Reader;

ModelConfig parse_config(std::string_view json_text, const std::filesystem::path& file) {
  FERRY_CHECK(json_text.size() <= kMaxConfigBytes, CorruptFile,
              "{}: {} bytes, more than a config.json may have ({})", file.string(),
              json_text.size(), kMaxConfigBytes);
  const Json j = io::parse_json(json_text, file.string());
  FERRY_CHECK(j.is_object(), CorruptFile, "{}: expected a JSON object, got {}", file.string(),
              j.type_name());
  const Reader r(j, file.string());
  ModelConfig c;
  c.file = file;
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) r.fail("model_type", "is missing");
  // Unknown types are read as Llama-like decoders (transformers' common names) and rejected by
  // create_model, which lists what is supported.
  const std::shared_ptr<const detail::Architecture> architecture =
      detail::find_architecture(c.model_type);
  if (architecture && architecture->read_config) {
    architecture->read_config(r, c);
  } else {
    detail::read_decoder_fields(r, c);
  }
  const double n = architecture && architecture->parameter_bound
                       ? architecture->parameter_bound(c)
                       : detail::decoder_parameter_bound(c);
  if (n > static_cast<double>(kMaxParameters)) {
    throw InvalidArgument(
        fmt::format("{}: the sizes (vocabulary {}, hidden {}, intermediate {}, {} layers) imply "
                    "about {:.3g} parameters, more than the {:.3g} ferry accepts",
                    file.string(), c.vocab_size, c.hidden_size, c.intermediate_size, c.n_layers, n,
                    static_cast<double>(kMaxParameters)),
        ErrorFields{.file = file.string(),
                    .expected = fmt::format("<= {}", kMaxParameters),
                    .actual = fmt::format("{:.3g}", n)});
  }
  const auto token_id = [&](const char* field, std::int64_t id) {
    if (id < 0 || id >= c.vocab_size) {
      r.fail(field, fmt::format("{} is outside the vocabulary [0, {})", id, c.vocab_size));
    }
    return id;
  };
  if (r.has("bos_token_id")) c.bos_token_id = token_id("bos_token_id", r.integer("bos_token_id"));
  c.eos_token_ids = r.integers("eos_token_id");
  for (std::int64_t id : c.eos_token_ids) token_id("eos_token_id", id);
  c.torch_dtype = r.string("torch_dtype", "");
  return c;
}

ModelConfig load_config(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / "config.json" : path;
  return parse_config(detail::read_model_file(file, kMaxConfigBytes), file);
}

std::string config_to_json(const ModelConfig& c) {
  Json j;
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  const std::shared_ptr<const detail::Architecture> architecture =
      detail::find_architecture(c.model_type);
  if (architecture && architecture->write_config) {
    architecture->write_config(c, j);
  } else {
    detail::write_decoder_fields(c, j);
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  return j.dump(2) + "\n";
}

namespace detail {

double decoder_parameter_bound(const ModelConfig& c) {
  const auto d = [](std::int64_t v) { return static_cast<double>(v); };
  const double attention = d(c.hidden_size) * d(c.head_dim) * d(2 * c.n_heads + 2 * c.n_kv_heads);
  const double mlp = 3 * d(c.hidden_size) * d(c.intermediate_size);
  return 2 * d(c.vocab_size) * d(c.hidden_size) + d(c.n_layers) * (attention + mlp);
}

}  // namespace detail

}  // namespace ferry::models
