#pragma once
// The server's state, shared by its files: lifecycle and routes (server.cpp), the generation
// endpoints (generation.cpp).

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <httplib.h>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ferry/engine/engine.h"
#include "ferry/serve/server.h"
#include "serve/api_error.h"
#include "serve/chat_prompt.h"
#include "serve/metrics.h"
#include "serve/openai_request.h"

namespace ferry::serve {

struct Server::Impl {
  Impl(engine::Engine& e, ServedModel m, ServerOptions o);

  engine::Engine& engine;
  ServedModel model;
  ServerOptions options;
  ChatPrompt chat;  // the model's chat template, or why there is none
  httplib::Server http;
  ServerMetrics metrics;
  std::thread listener;
  std::atomic<bool> stopping{false};
  std::atomic<bool> listening{false};
  std::mutex lifecycle;  // start() and stop()
  bool started = false;
  bool stopped = false;
  int port = -1;
  std::uint64_t id_prefix = 0;  // random per server: request ids stay unique across restarts
  std::atomic<std::uint64_t> next_id{0};

  void add_routes();
  bool authorized(const httplib::Request& req) const;

  // POST /v1/completions and /v1/chat/completions (generation.cpp).
  void completions(const httplib::Request& req, httplib::Response& res);
  void chat_completions(const httplib::Request& req, httplib::Response& res);
  // Submits and answers: the whole completion, or a stream of server-sent events.
  void generate(GenerationRequest request, bool chat, httplib::Response& res);
  engine::RequestHandle submit(GenerationRequest& request);

  std::string request_id(bool chat);
};

// Sets `res` to the JSON answer `body` with `status`.
void reply(httplib::Response& res, int status, const nlohmann::json& body);
// Sets `res` to the error's answer (with Retry-After on a 429).
void reply_error(httplib::Response& res, const ApiError& error);

}  // namespace ferry::serve
