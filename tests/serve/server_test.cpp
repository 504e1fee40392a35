// `ferry serve`'s HTTP layer, in process: a Server on a tiny made model, on a free port, talked
// to with httplib's client.
#include "ferry/serve/server.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <httplib.h>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/core/placement.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/engine/engine.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"
#include "ferry/plan/device_map.h"

namespace ferry::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// A folder removed at exit.
struct TempFolder {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("ferry-serve-test-" + std::to_string(std::random_device{}()));
  ~TempFolder() { std::filesystem::remove_all(path); }
};

// A tiny llama (hidden 64, 2 layers, 4096 positions), made and loaded once for every test. The
// loaded model is never destroyed: its tensors must not outlive LibTorch's own statics at exit.
struct TinyModel {
  std::filesystem::path folder;
  models::LoadedModel loaded;
  std::shared_ptr<const models::Tokenizer> tokenizer;

  static TinyModel& get() {
    static TempFolder dir;
    static TinyModel* m = [] {
      auto* made = new TinyModel;
      made->folder = dir.path / "tiny";
      models::make_model(made->folder, {.arch = "llama",
                                        .hidden_size = 64,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .max_position_embeddings = 4096,
                                        .seed = 3});
      made->loaded = models::load_model(made->folder);
      made->tokenizer = std::make_shared<const models::Tokenizer>(
          models::Tokenizer::load(made->folder, made->loaded.config.vocab_size));
      return made;
    }();
    return *m;
  }
};

// A chat template in the subset every chat template interpreter reads.
constexpr const char* kChatTemplate =
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}";

// "data: X\n\n" events of a server-sent stream, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < body.size()) {
    const std::size_t end = body.find("\n\n", at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "an event without its blank line: " << body.substr(at);
      break;
    }
    const std::string event = body.substr(at, end - at);
    EXPECT_EQ(event.rfind("data: ", 0), 0U) << event;
    out.push_back(event.substr(6));
    at = end + 2;
  }
  return out;
}

class ServeTest : public ::testing::Test {
 protected:
  void TearDown() override {
    server_.reset();
    engine_.reset();
  }

  // Starts a server on a fresh engine with a context of `engine_options.context` tokens (0:
  // 512); `edit` may change what is served.
  void start(engine::EngineOptions engine_options = {}, ServerOptions options = {},
             const std::function<void(ServedModel&)>& edit = {}) {
    TinyModel& m = TinyModel::get();
    if (engine_options.context == 0) engine_options.context = 512;
    auto tokenizer = m.tokenizer;
    engine_options.decode = [tokenizer](const std::vector<std::int64_t>& ids) {
      return tokenizer->decode(ids, /*skip_special_tokens=*/true);
    };
    engine_ = std::make_unique<engine::Engine>(*m.loaded.model, engine_options);
    ServedModel served = served_model(m.folder, m.loaded, m.tokenizer, engine_options.context);
    if (edit) edit(served);
    server_ = std::make_unique<Server>(*engine_, std::move(served), options);
    server_->start();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(60, 0);
  }

  httplib::Result post(const std::string& path, const json& body,
                       const httplib::Headers& headers = {}) {
    return client_->Post(path.c_str(), headers, body.dump(), "application/json");
  }
  httplib::Result post_raw(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), body, "application/json");
  }

  // The body of a 200 answer, parsed.
  json ok(const httplib::Result& r) {
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body);
  }

  // Asserts an OpenAI-style error answer with `status`; returns its "error" object.
  json error(const httplib::Result& r, int status) {
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return {};
    EXPECT_EQ(r->status, status) << r->body;
    const json body = json::parse(r->body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body.contains("error")) << r->body;
    if (!body.is_object() || !body.contains("error")) return {};
    const json& e = body["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("param") && e.contains("code"));
    return e;
  }

  bool healthy() {
    const httplib::Result r = client_->Get("/health");
    return r && r->status == 200;
  }

  // Waits until `done` holds (checked every 5 ms, at most 20 s).
  static bool eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 4000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return done();
  }

  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ServeTest, CompletionHasTextFinishReasonAndUsage) {
  start();
  const json body = ok(post("/v1/completions", {{"prompt", "Hello"}, {"max_tokens", 8}}));
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], server_->model().id);
  EXPECT_TRUE(body["id"].get<std::string>().starts_with("cmpl-"));
  ASSERT_EQ(body["choices"].size(), 1U);
  EXPECT_TRUE(body["choices"][0]["text"].is_string());
  const std::string reason = body["choices"][0]["finish_reason"];
  EXPECT_TRUE(reason == "stop" || reason == "length") << reason;
  const json& usage = body["usage"];
  EXPECT_EQ(usage["prompt_tokens"], TinyModel::get().tokenizer->encode("Hello").size());
  EXPECT_GE(usage["completion_tokens"].get<int>(), 1);
  EXPECT_LE(usage["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(usage["total_tokens"].get<int>(),
            usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
}

TEST_F(ServeTest, TokenIdPromptGivesTheSameGreedyText) {
  start();
  const std::vector<std::int64_t> ids = TinyModel::get().tokenizer->encode("The cat");
  const json request = {{"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}};
  json by_text = request;
  by_text["prompt"] = "The cat";
  json by_ids = request;
  by_ids["prompt"] = ids;
  json by_list = request;
  by_list["prompt"] = json::array({"The cat"});
  const json a = ok(post("/v1/completions", by_text));
  const json b = ok(post("/v1/completions", by_ids));
  const json c = ok(post("/v1/completions", by_list));
  EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]);
  EXPECT_EQ(a["choices"][0]["text"], c["choices"][0]["text"]);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(a["usage"]["completion_tokens"], 12);
}

TEST_F(ServeTest, StreamedCompletionEqualsTheWholeOne) {
  start();
  const json request = {{"prompt", "Once upon"}, {"max_tokens", 16}, {"ignore_eos", true}};
  const json whole = ok(post("/v1/completions", request));
  json streamed_request = request;
  streamed_request["stream"] = true;
  const httplib::Result r = post("/v1/completions", streamed_request);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<std::string> events = sse_data(r->body);
  ASSERT_GE(events.size(), 2U);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    text += chunk["choices"][0]["text"].get<std::string>();
    const bool last = i + 2 == events.size();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), !last) << events[i];
    if (last) {
      EXPECT_EQ(chunk["choices"][0]["finish_reason"], "length");
      EXPECT_EQ(chunk["usage"], whole["usage"]);
    }
  }
  EXPECT_EQ(text, whole["choices"][0]["text"]);
}

TEST_F(ServeTest, StopStringEndsTheTextBeforeIt) {
  start();
  const json request = {{"prompt", "Hello"}, {"max_tokens", 24}, {"ignore_eos", true}};
  const std::string text = ok(post("/v1/completions", request))["choices"][0]["text"];
  // A stop string taken from the greedy text cuts it where it first occurs. The tiny model's
  // text is mostly bytes that are not UTF-8 (replaced in the JSON): an ASCII character is taken.
  std::size_t at = 1;
  while (at < text.size() && !(text[at] >= 0x20 && text[at] < 0x7F)) ++at;
  ASSERT_LT(at, text.size()) << "no ASCII character in " << text;
  const std::string stop = text.substr(at, 1);
  const std::size_t first = text.find(stop);
  json stopped_request = request;
  stopped_request["stop"] = json::array({stop});
  const json stopped = ok(post("/v1/completions", stopped_request));
  EXPECT_EQ(stopped["choices"][0]["text"], text.substr(0, first));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServeTest, BadRequestsAre400WithAnErrorBodyAndTheServerGoesOn) {
  start();
  struct Case {
    std::string body;
    std::string param;  // "" : null
  };
  const std::vector<Case> cases = {
      {"{not json", ""},
      {"[1, 2]", ""},
      {R"({"prompt": 5})", "prompt"},
      {R"({})", "prompt"},
      {R"({"prompt": "hi", "max_tokens": "8"})", "max_tokens"},
      {R"({"prompt": "hi", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "hi", "max_tokens": 100000})", "max_tokens"},
      {R"({"prompt": "hi", "max_tokens": 512})", "max_tokens"},
      {R"({"prompt": "hi", "temperature": -1})", "temperature"},
      {R"({"prompt": "hi", "top_p": 0})", "top_p"},
      {R"({"prompt": "hi", "stream": "yes"})", "stream"},
      {R"({"prompt": "hi", "stop": 3})", "stop"},
      {R"({"prompt": "hi", "stop": [""]})", "stop"},
      {R"({"prompt": "hi", "n": 2})", "n"},
      {R"({"prompt": "hi", "echo": true})", "echo"},
      {R"({"prompt": "hi", "logprobs": 2})", "logprobs"},
      {R"({"prompt": "hi", "model": "gpt-4"})", "model"},
      {R"({"prompt": [1, -4]})", "prompt"},
      {R"({"prompt": ["a", "b"]})", "prompt"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const json e = error(post_raw("/v1/completions", c.body), 400);
    EXPECT_EQ(e["type"], "invalid_request_error");
    if (c.param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << e;
    } else {
      EXPECT_EQ(e["param"], c.param) << e;
    }
    EXPECT_TRUE(healthy());
  }
  // A prompt longer than the context.
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) long_prompt += " the";
  const json e = error(post("/v1/completions", {{"prompt", long_prompt}}), 400);
  EXPECT_EQ(e["code"], "context_length_exceeded");
  EXPECT_EQ(e["param"], "prompt");
  // The served model's name is accepted.
  ok(post("/v1/completions",
          {{"prompt", "hi"}, {"max_tokens", 1}, {"model", server_->model().id}}));
  EXPECT_TRUE(healthy());
}

TEST_F(ServeTest, UnknownPathIs404WithAnErrorBody) {
  start();
  const json e = error(client_->Get("/v1/nothing"), 404);
  EXPECT_NE(e["message"].get<std::string>().find("/v1/nothing"), std::string::npos);
  error(client_->Get("/v1/completions"), 404);  // a known path with the wrong method
  EXPECT_TRUE(healthy());
}

TEST_F(ServeTest, ModelsListsTheServedModel) {
  start();
  const json list = ok(client_->Get("/v1/models"));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1U);
  EXPECT_EQ(list["data"][0]["id"], "tiny");
  EXPECT_EQ(list["data"][0]["object"], "model");
  EXPECT_EQ(ok(client_->Get("/v1/models/" + server_->model().id))["id"], server_->model().id);
  error(client_->Get("/v1/models/other"), 404);
}

TEST_F(ServeTest, ApiKeyIsRequiredOnTheApi) {
  start({}, {.api_key = "sekrit"});
  EXPECT_EQ(error(client_->Get("/v1/models"), 401)["code"], "invalid_api_key");
  error(client_->Get("/v1/models", {{"Authorization", "Bearer wrong"}}), 401);
  error(post("/v1/completions", {{"prompt", "hi"}}), 401);
  ok(client_->Get("/v1/models", {{"Authorization", "Bearer sekrit"}}));
  ok(post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}},
          {{"Authorization", "Bearer sekrit"}}));
  EXPECT_TRUE(healthy());  // health and metrics stay open
}

TEST(ServeOptions, NonLoopbackNeedsAnApiKey) {
  EXPECT_THROW(check_server_options({.host = "0.0.0.0"}), InvalidArgument);
  EXPECT_THROW(check_server_options({.host = "192.168.1.4"}), InvalidArgument);
  EXPECT_NO_THROW(check_server_options({.host = "0.0.0.0", .api_key = "k"}));
  EXPECT_NO_THROW(check_server_options({.host = "127.0.0.2"}));
  EXPECT_NO_THROW(check_server_options({.host = "::1"}));
  EXPECT_NO_THROW(check_server_options({.host = "localhost"}));
  EXPECT_THROW(check_server_options({.port = 70000}), InvalidArgument);
}

// Starts a streamed request on its own thread and collects the stream.
class StreamingClient {
 public:
  StreamingClient(int port, json request, bool hang_up_after_first_chunk = false) {
    thread_ = std::thread([this, port, request, hang_up_after_first_chunk] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(60, 0);
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = request.dump();
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [this, hang_up_after_first_chunk](const char* data, std::size_t n,
                                                               std::uint64_t, std::uint64_t) {
        body_.append(data, n);
        return !hang_up_after_first_chunk;
      };
      const httplib::Result r = client.send(req);
      status_ = r ? r->status : -1;
    });
  }
  ~StreamingClient() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  const std::string& body() const { return body_; }
  int status() const { return status_; }

 private:
  std::string body_;
  int status_ = 0;
  std::thread thread_;
};

TEST_F(ServeTest, FullQueueIs429WithRetryAfterAndStopEndsOpenStreams) {
  // Requests of 4000 tokens run for seconds: long enough to see one running and one waiting.
  start({.max_batch = 1, .max_queue = 1, .context = 4096});
  const json long_request = {
      {"prompt", "hi"}, {"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}};
  StreamingClient running(server_->port(), long_request);
  ASSERT_TRUE(eventually([&] { return engine_->stats().running == 1; }));
  StreamingClient waiting(server_->port(), long_request);
  ASSERT_TRUE(eventually([&] { return engine_->stats().waiting == 1; }));

  const httplib::Result r = post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 4}});
  const json e = error(r, 429);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_EQ(e["code"], "queue_full");

  // Stopping ends both streams properly: a finish chunk, then [DONE].
  server_->stop();
  running.join();
  waiting.join();
  for (const StreamingClient* c : {&running, &waiting}) {
    EXPECT_EQ(c->status(), 200);
    const std::vector<std::string> events = sse_data(c->body());
    ASSERT_GE(events.size(), 2U) << c->body();
    EXPECT_EQ(events.back(), "[DONE]");
    EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "cancelled");
  }
}

TEST_F(ServeTest, ClientHangingUpMidStreamFreesItsSequence) {
  start({.context = 4096});
  StreamingClient gone(
      server_->port(),
      {{"prompt", "hi"}, {"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}},
      /*hang_up_after_first_chunk=*/true);
  gone.join();
  EXPECT_FALSE(gone.body().empty());
  ASSERT_TRUE(eventually([&] {
    const engine::EngineStats s = engine_->stats();
    return s.running == 0 && s.kv_cache_bytes == 0;
  }));
  EXPECT_LT(engine_->stats().generated_tokens, 4000U);  // cancelled, not run to its end
  const httplib::Result metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("ferry_requests_finished_total{reason=\"cancelled\"} 1"),
            std::string::npos)
      << metrics->body;
}

TEST_F(ServeTest, MetricsAreInPrometheusTextFormat) {
  start();
  ok(post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 3}, {"ignore_eos", true}}));
  error(post_raw("/v1/completions", "{"), 400);
  // Answers are counted once written, and the engine's counters when the step that finished
  // the request ends, which may be just after its answer went out: wait for all of them.
  std::string text;
  ASSERT_TRUE(eventually([&] {
    const httplib::Result r = client_->Get("/metrics");
    text = r ? r->body : "";
    return text.find("ferry_requests_total{status=\"400\"} 1") != std::string::npos &&
           text.find("ferry_requests_total{status=\"200\"} 1") != std::string::npos &&
           text.find("ferry_generated_tokens_total 3") != std::string::npos &&
           text.find("ferry_requests_finished_total{reason=\"length\"} 1") != std::string::npos;
  })) << text;
  const httplib::Result r = client_->Get("/metrics");
  EXPECT_TRUE(r->get_header_value("Content-Type").starts_with("text/plain"));
  // Every line is a HELP or TYPE comment or a sample "name{labels} value".
  const std::regex comment(R"(# (HELP|TYPE) [a-z_]+ .+)");
  const std::regex sample_line(R"([a-z_]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+-]+)");
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(std::regex_match(line, comment) || std::regex_match(line, sample_line)) << line;
  }
  for (const char* name :
       {"ferry_queue_depth", "ferry_running_sequences", "ferry_batch_size",
        "ferry_generated_tokens_total", "ferry_tokens_per_second", "ferry_disk_bytes_read_total",
        "ferry_kv_cache_bytes", "ferry_requests_total"}) {
    EXPECT_NE(text.find(fmt::format("# TYPE {} ", name)), std::string::npos) << name;
  }
  EXPECT_NE(text.find("ferry_generated_tokens_total 3"), std::string::npos) << text;
  EXPECT_NE(text.find("ferry_requests_finished_total{reason=\"length\"} 1"), std::string::npos);
}

TEST_F(ServeTest, MetricsCountTheBytesStreamedFromDisk) {
  // The second decoder layer rests on disk: each step streams it through the prefetcher.
  TinyModel& m = TinyModel::get();
  TempFolder offload;
  models::LoadModelOptions o;
  o.dispatch.device_map = plan::DeviceMap{{"model.embed_tokens", Placement::cpu()},
                                          {"model.layers.0", Placement::cpu()},
                                          {"model.layers.1", Placement::disk()},
                                          {"model.norm", Placement::cpu()},
                                          {"lm_head", Placement::cpu()}};
  o.dispatch.offload_folder = offload.path;
  const models::LoadedModel on_disk = models::load_model(m.folder, o);
  engine::Engine engine(*on_disk.model, {.context = 64});
  ServedModel served = served_model(m.folder, on_disk, m.tokenizer, 64);
  ASSERT_NE(served.prefetcher, nullptr);
  const std::shared_ptr<dispatch::Prefetcher> prefetcher = served.prefetcher;
  Server server(engine, std::move(served), {});
  server.start();
  httplib::Client client("127.0.0.1", server.port());
  const httplib::Result r = client.Post(
      "/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 4}}.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  const auto value = [&](const std::string& name) -> std::uint64_t {
    std::smatch found;
    if (!std::regex_search(metrics->body, found, std::regex("\\n" + name + " ([0-9]+)\\n"))) {
      ADD_FAILURE() << "no " << name << " in\n" << metrics->body;
      return 0;
    }
    return std::stoull(found[1]);
  };
  // The layer's weights were read, or used in place from the page cache (--io auto, the default:
  // the offload folder was just written, so the cache holds it).
  const dispatch::PrefetchStats st = prefetcher->stats();
  EXPECT_GT(st.bytes_read + st.in_place_bytes, 0U);
  EXPECT_EQ(value("ferry_disk_bytes_read_total"), st.bytes_read);
  EXPECT_EQ(value("ferry_disk_in_place_bytes_total"), st.in_place_bytes);
  // Page cache used in place is reported beside the peak, not in it.
  EXPECT_EQ(value("ferry_page_cache_in_place_bytes") > 0, st.in_place_bytes > 0);
  EXPECT_GT(value("ferry_peak_rss_bytes"), 0U);
}

// A stop right after start (a SIGTERM as soon as the port is printed) returns: start() waits
// until the listener runs, since httplib's stop() does nothing before it does. Before that fix a
// loaded machine hung here now and then, the listener blocked in accept().
TEST_F(ServeTest, StopRightAfterStartReturns) {
  TinyModel& m = TinyModel::get();
  for (int i = 0; i < 20; ++i) {
    engine::Engine engine(*m.loaded.model, {.context = 64});
    Server server(engine, served_model(m.folder, m.loaded, m.tokenizer, 64), {});
    server.start();
    EXPECT_TRUE(server.running());
    server.stop();
    EXPECT_FALSE(server.running());
  }
}

TEST_F(ServeTest, ChatWithoutATemplateIsAClear400) {
  start();
  const json e = error(
      post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}), 400);
  EXPECT_NE(e["message"].get<std::string>().find("no chat template"), std::string::npos) << e;
  EXPECT_TRUE(healthy());
}

TEST_F(ServeTest, ChatCompletionWholeAndStreamed) {
  start({}, {}, [](ServedModel& m) { m.chat_template.source = kChatTemplate; });
  const json messages = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", "Hello"}}};
  const json request = {{"messages", messages}, {"max_tokens", 10}, {"ignore_eos", true}};
  const json whole = ok(post("/v1/chat/completions", request));
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_TRUE(whole["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 10);

  json streamed_request = request;
  streamed_request["stream"] = true;
  streamed_request["stream_options"] = {{"include_usage", true}};
  const httplib::Result r = post("/v1/chat/completions", streamed_request);
  ASSERT_TRUE(r);
  const std::vector<std::string> events = sse_data(r->body);
  ASSERT_GE(events.size(), 4U);
  EXPECT_EQ(events.back(), "[DONE]");
  const json first = json::parse(events.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (std::size_t i = 0; i + 2 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    text += chunk["choices"][0]["delta"].value("content", "");
  }
  const json final_chunk = json::parse(events[events.size() - 3]);
  EXPECT_EQ(final_chunk["choices"][0]["finish_reason"], "length");
  const json usage_chunk = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"], whole["usage"]);
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"]);

  // Bad chat input.
  EXPECT_EQ(error(post("/v1/chat/completions", {{"messages", json::array()}}), 400)["param"],
            "messages");
  error(post("/v1/chat/completions", {{"messages", {{{"content", "no role"}}}}}), 400);
  error(post("/v1/chat/completions", {{"messages", "hi"}}), 400);
  EXPECT_TRUE(healthy());
}

TEST_F(ServeTest, ChatTemplateErrorsAre400) {
  const json request = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  start({}, {}, [](ServedModel& m) {
    m.chat_template.source = "{{ raise_exception('only assistants may speak') }}";
  });
  json e = error(post("/v1/chat/completions", request), 400);
  EXPECT_EQ(e["code"], "chat_template_error");
  EXPECT_NE(e["message"].get<std::string>().find("only assistants may speak"), std::string::npos)
      << e;
  EXPECT_TRUE(healthy());
  TearDown();
  // A template ferry cannot parse: chat is refused, naming the construct; completions work.
  start({}, {}, [](ServedModel& m) {
    m.chat_template.source = "{% macro greet() %}hi{% endmacro %}{{ greet() }}";
  });
  e = error(post("/v1/chat/completions", request), 400);
  EXPECT_NE(e["message"].get<std::string>().find("cannot be used"), std::string::npos) << e;
  EXPECT_NE(e["message"].get<std::string>().find("macro"), std::string::npos) << e;
  ok(post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}}));
}

TEST_F(ServeTest, ServedModelReadsTheChatTemplateOfTokenizerConfig) {
  TinyModel& m = TinyModel::get();
  const std::filesystem::path folder = m.folder.parent_path() / "tiny-chat";
  std::filesystem::create_directories(folder);
  json config = json::parse(std::ifstream(m.folder / "tokenizer_config.json"));
  config["chat_template"] = kChatTemplate;
  std::ofstream(folder / "tokenizer_config.json") << config.dump();
  const ServedModel served = served_model(folder, m.loaded, m.tokenizer, 64);
  EXPECT_EQ(served.chat_template.source, kChatTemplate);
  EXPECT_EQ(served.chat_template.eos_token, config["eos_token"]);
  EXPECT_EQ(served.id, folder.filename().string());
  EXPECT_EQ(served.context, 64);
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace ferry::serve
