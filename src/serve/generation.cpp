// POST /v1/completions and /v1/chat/completions: a request is read and checked, submitted to the
// engine, and answered whole or as server-sent events.
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <memory>

#include "ferry/core/error.h"
#include "serve/openai_response.h"
#include "serve/server_impl.h"

namespace ferry::serve {
namespace {

using nlohmann::json;

// How long a handler waits for an event before looking again; nothing depends on its value
// but how soon a wait notices the end of a request the engine dropped without a word.
constexpr std::chrono::milliseconds kPoll{250};

// A stream's state, shared by copies of its content provider (httplib copies the callable).
struct Stream {
  engine::RequestHandle handle;
  ResponseHead head;
  bool include_usage = false;
};

// Note [Streams end whole]
// A stream is written by a single call of its content provider, which returns only once the
// request finished (or the client is gone). httplib checks for its own shutdown between calls
// of a provider, never within one, so Server::stop() cannot cut a stream before its finish
// chunk and [DONE]: stop() ends the requests, and every provider writes its ending.
bool write_stream(Stream& s, ServerMetrics& metrics, httplib::DataSink& sink) {
  const auto write = [&sink](const std::string& text) {
    return sink.write(text.data(), text.size());
  };
  bool first = true;
  if (s.head.chat) {  // the role comes at once, before the first token
    if (!write(sse_event(chunk_json(s.head, "", /*first=*/true)))) return false;
    first = false;
  }
  for (;;) {
    std::optional<engine::Event> event = s.handle.next(kPoll);
    if (!event) continue;
    if (event->kind == engine::Event::Kind::kToken) {
      metrics.count_tokens(1);
      if (event->text.empty()) continue;  // held back: part of a character or a stop string
      if (!write(sse_event(chunk_json(s.head, event->text, first)))) return false;
      first = false;
      continue;
    }
    metrics.count_finished(finish_reason(event->finish_reason));
    if (event->finish_reason == "error") {
      const ApiError error{.status = 500, .message = event->error, .type = "server_error"};
      write(sse_event(error.body()));
    } else {
      write(sse_event(final_chunk_json(s.head, event->text, event->finish_reason, event->usage)));
      if (s.include_usage) write(sse_event(usage_chunk_json(s.head, event->usage)));
    }
    write(std::string(kSseDone));
    sink.done();
    return true;
  }
}

}  // namespace

engine::RequestHandle Server::Impl::submit(GenerationRequest& request) {
  const ApiError shutting_down{.status = 503,
                               .message = "the server is shutting down",
                               .type = "server_error",
                               .code = "shutting_down"};
  if (stopping) throw ApiException(shutting_down);
  try {
    return engine.submit(std::move(request.prompt), std::move(request.options));
  } catch (const engine::QueueFull& e) {
    throw ApiException(ApiError{.status = 429,
                                .message = fmt::format("too many requests are waiting ({}); "
                                                       "retry later",
                                                       e.what()),
                                .type = "rate_limit_error",
                                .code = "queue_full",
                                .retry_after_seconds = options.retry_after_seconds});
  } catch (const InvalidArgument& e) {
    if (stopping) throw ApiException(shutting_down);  // the engine stopped meanwhile
    throw ApiException(ApiError{.status = 400, .message = e.what()});
  }
}

void Server::Impl::generate(GenerationRequest request, bool is_chat, httplib::Response& res) {
  ResponseHead head{.id = request_id(is_chat),
                    .created = static_cast<std::int64_t>(std::time(nullptr)),
                    .model = model.id,
                    .chat = is_chat};
  engine::RequestHandle handle = submit(request);
  if (request.stream) {
    auto stream = std::make_shared<Stream>(
        Stream{.handle = std::move(handle), .head = head, .include_usage = request.include_usage});
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream",
                                     [this, stream](std::size_t, httplib::DataSink& sink) {
                                       metrics.stream_opened();
                                       const bool whole = write_stream(*stream, metrics, sink);
                                       metrics.stream_closed();
                                       if (!whole) {
                                         // The client went away: its sequence and KV cache are
                                         // freed at the next step.
                                         stream->handle.cancel();
                                         metrics.count_finished("cancelled");
                                       }
                                       return whole;
                                     });
    return;
  }
  std::string text;
  for (;;) {
    std::optional<engine::Event> event = handle.next(kPoll);
    if (!event) continue;
    text += event->text;
    if (event->kind == engine::Event::Kind::kToken) {
      metrics.count_tokens(1);
      continue;
    }
    metrics.count_finished(finish_reason(event->finish_reason));
    if (event->finish_reason == "error") {
      throw ApiException(ApiError{.status = 500, .message = event->error, .type = "server_error"});
    }
    if (event->finish_reason == "cancelled") {
      throw ApiException(ApiError{.status = 503,
                                  .message = "the server is shutting down: the request was "
                                             "cancelled",
                                  .type = "server_error",
                                  .code = "shutting_down"});
    }
    return reply(res, 200, completion_json(head, text, event->finish_reason, event->usage));
  }
}

void Server::Impl::completions(const httplib::Request& req, httplib::Response& res) {
  try {
    const json body = parse_body(req.body);
    check_common_fields(body, model, /*chat=*/false);
    std::vector<std::int64_t> prompt = completion_prompt(body, model);
    generate(generation_request(body, model, std::move(prompt), /*chat=*/false), false, res);
  } catch (const ApiException& e) {
    reply_error(res, e.error());
  }
}

void Server::Impl::chat_completions(const httplib::Request& req, httplib::Response& res) {
  try {
    const json body = parse_body(req.body);
    check_common_fields(body, model, /*chat=*/true);
    std::vector<std::int64_t> prompt = chat.prompt(chat_messages(body), *model.tokenizer);
    generate(generation_request(body, model, std::move(prompt), /*chat=*/true), true, res);
  } catch (const ApiException& e) {
    reply_error(res, e.error());
  }
}

}  // namespace ferry::serve
