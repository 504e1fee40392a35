#include "ferry/serve/server.h"

#include <fmt/format.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <ctime>
#include <random>
#include <thread>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/dispatch/prefetch.h"
#include "serve/openai_response.h"
#include "serve/server_impl.h"

namespace ferry::serve {
namespace {

using nlohmann::json;

// Loopback addresses only: anything else is reachable from other machines and needs a key.
bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

// Compares without stopping at the first difference, so the time taken does not tell how much
// of a guessed key was right.
bool same_secret(std::string_view given, std::string_view key) {
  if (given.size() != key.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < key.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i] ^ key[i]);
  }
  return diff == 0;
}

// The reason phrase of the statuses httplib answers by itself.
std::string_view status_text(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    default: return status >= 500 ? "Server Error" : "Error";
  }
}

json model_json(const ServedModel& m, std::int64_t created) {
  return {{"id", m.id},
          {"object", "model"},
          {"created", created},
          {"owned_by", "ferry"},
          {"max_model_len", m.context}};
}

}  // namespace

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body), "application/json");
}

void reply_error(httplib::Response& res, const ApiError& error) {
  if (error.status == 429) res.set_header("Retry-After", std::to_string(error.retry_after_seconds));
  reply(res, error.status, error.body());
}

Server::Impl::Impl(engine::Engine& e, ServedModel m, ServerOptions o)
    : engine(e), model(std::move(m)), options(std::move(o)), chat(model.chat_template) {
  id_prefix = std::random_device{}();
  id_prefix = (id_prefix << 32) | std::random_device{}();
}

std::string Server::Impl::request_id(bool is_chat) {
  return fmt::format("{}-{:016x}{:x}", is_chat ? "chatcmpl" : "cmpl", id_prefix, next_id++);
}

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (options.api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!header.starts_with(kBearer)) return false;
  return same_secret(std::string_view(header).substr(kBearer.size()), options.api_key);
}

void Server::Impl::add_routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!req.path.starts_with("/v1/") || authorized(req)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    reply_error(res, ApiError{.status = 401,
                              .message = "missing or incorrect API key: send the header "
                                         "'Authorization: Bearer KEY' with the server's key",
                              .code = "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  http.Post("/v1/completions",
            [this](const httplib::Request& req, httplib::Response& res) { completions(req, res); });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    chat_completions(req, res);
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    reply(res, 200,
          {{"object", "list"}, {"data", json::array({model_json(model, model.created)})}});
  });
  http.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == model.id) return reply(res, 200, model_json(model, model.created));
    reply_error(res, ApiError{.status = 404,
                              .message = fmt::format("the model '{}' does not exist: this server "
                                                     "serves '{}'",
                                                     req.matches[1].str(), model.id),
                              .param = "model",
                              .code = "model_not_found"});
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (stopping) return reply(res, 503, {{"status", "stopping"}});
    reply(res, 200, {{"status", "ok"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::optional<dispatch::PrefetchStats> prefetch;
    if (model.prefetcher) prefetch = model.prefetcher->stats();
    res.set_content(metrics.render(engine.stats(), engine.options(), prefetch),
                    "text/plain; version=0.0.4");
  });
  // Statuses httplib sets itself (404 unknown path, 413 body too large, 400 unreadable request)
  // get the same error body as ours; answers that have one keep it.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError error{
        .status = res.status,
        .message = fmt::format("{} {}: {}", req.method, req.path, status_text(res.status))};
    if (res.status == 404) {
      error.message = fmt::format("unknown path: {} {}", req.method, req.path);
      error.code = "not_found";
    }
    reply_error(res, error);
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        log_warning("ferry serve: request failed: {}", what);
        reply_error(res, ApiError{.status = 500, .message = what, .type = "server_error"});
      });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (req.path != "/health" && req.path != "/metrics") metrics.count_answer(res.status);
  });
}

void check_server_options(const ServerOptions& options) {
  FERRY_CHECK(!options.host.empty(), InvalidArgument, "host: expected an address to bind");
  FERRY_CHECK(options.port >= 0 && options.port <= 65535, InvalidArgument,
              "port {}: expected 0 (any free port) to 65535", options.port);
  FERRY_CHECK(is_loopback(options.host) || !options.api_key.empty(), InvalidArgument,
              "host {}: binding an address other machines can reach needs an API key "
              "(--api-key or FERRY_API_KEY); without one, bind 127.0.0.1",
              options.host);
  FERRY_CHECK(options.threads >= 0 && options.retry_after_seconds >= 0, InvalidArgument,
              "threads {} and retry_after_seconds {}: expected 0 or more", options.threads,
              options.retry_after_seconds);
}

Server::Server(engine::Engine& engine, ServedModel model, ServerOptions options) {
  check_server_options(options);
  FERRY_CHECK(model.context >= 2, InvalidArgument,
              "context {}: expected at least 2 tokens (a prompt token and a generated one)",
              model.context);
  FERRY_CHECK(model.tokenizer != nullptr, InvalidArgument, "the served model needs a tokenizer");
  if (model.created == 0) model.created = static_cast<std::int64_t>(std::time(nullptr));
  impl_ = std::make_unique<Impl>(engine, std::move(model), std::move(options));
  Impl& s = *impl_;
  const std::int64_t threads =
      s.options.threads > 0 ? s.options.threads
                            : s.engine.options().max_batch + s.engine.options().max_queue + 8;
  s.http.new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<std::size_t>(threads));
  };
  s.http.set_payload_max_length(s.options.max_body_bytes);
  s.add_routes();
}

Server::~Server() {
  try {
    stop();
  } catch (const std::exception& e) {
    log_warning("ferry serve: stopping: {}", e.what());
  }
}

void Server::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle);
  FERRY_CHECK(!s.started, InvalidArgument, "the server was started already");
  s.started = true;
  s.port = s.options.port == 0
               ? s.http.bind_to_any_port(s.options.host)
               : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  if (s.port < 0) {
    throw IoError(fmt::format("cannot listen on {}:{}: the address is in use or not this "
                              "machine's",
                              s.options.host, s.options.port),
                  ErrorFields{.expected = "a free port on a local address",
                              .actual = fmt::format("{}:{}", s.options.host, s.options.port)});
  }
  s.engine.start();
  s.listening = true;
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    s.listening = false;
  });
  // httplib's stop() does nothing before its listen loop has begun (is_running()): a stop that
  // came first (a SIGTERM right after the port is printed, on a loaded machine) left the listener
  // blocked in accept() and stop() waiting for it forever. So start() returns once it listens.
  while (s.listening && !s.http.is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle);
  if (s.stopped) return;
  s.stopped = true;
  // New requests are answered 503 from here on. Stopping the engine without draining ends
  // every request "cancelled": waiting answers get a 503, open streams their finish chunk and
  // [DONE] (each stream is written by one call of its content provider, which httplib's stop()
  // does not cut short). Then the listener closes and its handler threads are joined.
  s.stopping = true;
  s.engine.stop(/*drain=*/false);
  if (!s.started) return;
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
}

bool Server::running() const { return impl_->listening && !impl_->stopping; }

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const std::string& host = impl_->options.host;
  const bool v6 = host.find(':') != std::string::npos;
  return fmt::format("http://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", impl_->port);
}

const ServedModel& Server::model() const { return impl_->model; }

}  // namespace ferry::serve
