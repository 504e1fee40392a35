// What a loaded model folder gives the server: its name, limits, sampling defaults and chat
// template.
#include <nlohmann/json.hpp>

#include "ferry/dispatch/prefetch.h"
#include "ferry/models/chat_template.h"
#include "ferry/serve/server.h"

namespace ferry::serve {
namespace {

// The folder's own name, also for "models/tiny/" and ".".
std::string folder_name(const std::filesystem::path& folder) {
  std::filesystem::path p = std::filesystem::absolute(folder).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

ServedModel served_model(const std::filesystem::path& folder, const models::LoadedModel& loaded,
                         std::shared_ptr<const models::Tokenizer> tokenizer, std::int64_t context) {
  ServedModel m;
  m.id = folder_name(folder);
  m.tokenizer = std::move(tokenizer);
  m.generation = loaded.generation;
  m.context = context;
  m.vocab_size = loaded.config.vocab_size;
  m.chat_template = models::read_chat_template_source(folder);
  if (loaded.model) m.prefetcher = dispatch::model_prefetcher(loaded.model->module());
  return m;
}

}  // namespace ferry::serve
