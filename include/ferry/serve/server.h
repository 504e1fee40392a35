#pragma once
// `ferry serve`: an OpenAI-compatible HTTP front of one engine::Engine (docs/serve.md).
//
//   serve::Server server(engine, serve::served_model(folder, loaded, tokenizer, context),
//                        {.port = 0});
//   server.start();                       // binds, starts the engine, serves on its own threads
//   fmt::print("{}\n", server.url());
//   ...
//   server.stop();                        // every open stream ends with a finish chunk + [DONE]
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
// GET /metrics (Prometheus text). Handler threads submit to the engine (thread-safe) and wait on
// their request; a client that goes away mid-stream has its request cancelled.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "ferry/engine/engine.h"
#include "ferry/models/chat_template.h"
#include "ferry/models/generation_config.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"

namespace ferry::dispatch {
class Prefetcher;
}

namespace ferry::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";  // an address to bind (a non-loopback one needs api_key)
  int port = 0;                    // 0: a free port, chosen at bind (Server::port())
  std::string api_key;             // "": no key; else /v1/* need "Authorization: Bearer KEY"
  // HTTP handler threads; each waiting or streaming request holds one. 0: the engine's
  // max_batch + max_queue + 8, so that a full queue answers 429 instead of stalling.
  int threads = 0;
  int retry_after_seconds = 1;  // the Retry-After of a 429 (the engine's queue is full)
  std::uint64_t max_body_bytes = std::uint64_t{16} << 20;  // larger request bodies: 413
};

// Checks `options` alone: InvalidArgument for an empty host, a port outside [0, 65535], a
// non-loopback host without an api key, negative threads or retry_after_seconds. Server's
// constructor calls it; a CLI calls it before loading a model.
void check_server_options(const ServerOptions& options);

// The chat template of a model folder, as tokenizer_config.json gives it.
using models::ChatTemplateSource;

// What the server serves: one model and how to talk to it. The engine is passed beside it.
struct ServedModel {
  std::string id;  // the model name of /v1/models; a request's `model` must be it (or absent)
  std::shared_ptr<const models::Tokenizer> tokenizer;
  // Sampling defaults and eos ids where a request sets none (as `ferry run`).
  models::GenerationConfig generation;
  std::int64_t context = 0;     // tokens per sequence (prompt + generated), as the engine's
  std::int64_t vocab_size = 0;  // token ids a prompt may hold: [0, vocab_size) (config.json's)
  // max_tokens of a request that sets none (at most what the context leaves); nullopt: 16 for
  // completions (OpenAI's default), the rest of the context for chat.
  std::optional<std::int64_t> default_max_tokens;
  ChatTemplateSource chat_template;
  std::int64_t created = 0;  // Unix seconds of /v1/models (0: when the server is made)
  // Where disk-offloaded weights stream through (bytes read, for /metrics); null: none.
  std::shared_ptr<dispatch::Prefetcher> prefetcher;
};

// The ServedModel of a loaded model folder: its name as id, `context` (the engine's, resolved),
// generation_config.json's defaults, the chat template of tokenizer_config.json (if any) and the
// model's prefetcher. Throws IoError / CorruptFile for an unreadable tokenizer_config.json.
ServedModel served_model(const std::filesystem::path& folder, const models::LoadedModel& loaded,
                         std::shared_ptr<const models::Tokenizer> tokenizer, std::int64_t context);

class Server {
 public:
  // Checks the options (check_server_options) and the model: InvalidArgument for a context
  // below 2 or no tokenizer. `engine` outlives the server; the server starts and
  // stops it.
  Server(engine::Engine& engine, ServedModel model, ServerOptions options);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (IoError naming host and port when it cannot), starts the engine and serves on
  // background threads. Once.
  void start();
  // Stops accepting, cancels every request (engine stop without drain: open streams end with a
  // finish chunk and [DONE], waiting answers with 503), and joins the HTTP threads. Idempotent;
  // thread-safe (a signal-watching thread may call it).
  void stop();
  // True between start() and stop() while the listener runs.
  bool running() const;

  int port() const;         // the bound port (after start())
  std::string url() const;  // "http://HOST:PORT"
  const ServedModel& model() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::serve
