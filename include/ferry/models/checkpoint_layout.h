#pragma once
// What an architecture tells the loader about its checkpoints: the tensors that pin config.json's
// sizes (checked from the headers before a model is built) and the tensors it drops silently.

#include <string>
#include <vector>

namespace ferry::models {

struct CheckpointLayout {
  // A [vocab_size, hidden_size] tensor, e.g. "model.embed_tokens.weight"; "" skips the check.
  std::string embedding;
  // Decoder layer i's tensors are named layers_prefix + i + "."; "" skips the layer-count check.
  std::string layers_prefix;
  std::string n_layers_field = "num_hidden_layers";  // config.json's names, for messages
  std::string hidden_size_field = "hidden_size";
  std::string positions_field = "max_position_embeddings";
  // transformers' base_model_prefix ("transformer." for GPT-2): a checkpoint of the base model
  // alone names its tensors without it (OpenAI's GPT-2 files: "h.0.attn.c_attn.weight"), and
  // loads all the same. "" when the architecture never saw such files.
  std::string base_model_prefix;
  // ECMAScript regexes of whole tensor names the model lacks and drops without a warning:
  // buffers transformers recomputes (its _keys_to_ignore_on_load_unexpected).
  std::vector<std::string> ignored_keys;
};

}  // namespace ferry::models
