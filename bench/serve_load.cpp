// A bounded load generator for `ferry serve`: N concurrent clients stream completions from an
// OpenAI-compatible server on the loopback interface, and one JSON line reports aggregate
// generated tokens/s, time to first token (p50/p99) and failures. Bounded in requests and in
// time; talks to 127.0.0.1 / localhost only (bench/serve.sh drives it).
//
//   bench_serve_load --port 8080 --clients 16 --requests 32 --max-tokens 32 --prompt-words 24
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <httplib.h>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  int clients = 1;
  int requests = 0;  // total; 0: 2 per client
  int max_tokens = 32;
  int prompt_words = 24;
  double time_limit_s = 600;
  std::string api_key;
};

struct Result {
  double ttft_s = 0;
  double seconds = 0;
  long tokens = 0;
  bool ok = false;
  std::string error;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// A prompt of `words` words, different per request so no two requests are the same.
std::string prompt_for(int request, int words) {
  static const char* vocab[] = {"the",   "sea", "ship", "carries", "a",     "model", "across",
                                "river", "to",  "far",  "shore",   "while", "wind",  "blows"};
  std::string p;
  for (int w = 0; w < words; ++w) {
    if (w) p += ' ';
    p += vocab[(request * 7 + w * 3 + w / 5) % 14];
  }
  return p;
}

Result one_request(const Options& o, int request, Clock::time_point deadline) {
  Result r;
  httplib::Client client(o.host, o.port);
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
  client.set_read_timeout(std::max<long>(1, static_cast<long>(left.count())), 0);
  client.set_connection_timeout(10, 0);
  nlohmann::json body{{"prompt", prompt_for(request, o.prompt_words)},
                      {"max_tokens", o.max_tokens},
                      {"temperature", 0},
                      {"ignore_eos", true},
                      {"stream", true},
                      {"stream_options", {{"include_usage", true}}}};
  httplib::Headers headers;
  if (!o.api_key.empty()) headers.emplace("Authorization", "Bearer " + o.api_key);
  const auto start = Clock::now();
  std::string buffer;
  bool first = true;
  long chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    buffer.append(data, n);
    std::size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") continue;
      const auto j = nlohmann::json::parse(payload, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("usage") && j["usage"].is_object())
        r.tokens = j["usage"].value("completion_tokens", 0L);
      if (j.contains("choices") && !j["choices"].empty()) {
        ++chunks;
        if (first) {
          r.ttft_s = std::chrono::duration<double>(Clock::now() - start).count();
          first = false;
        }
      }
    }
    return Clock::now() < deadline;
  };
  auto res = client.send(req);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!res) {
    r.error = httplib::to_string(res.error());
  } else if (res->status != 200) {
    r.error = fmt::format("HTTP {}", res->status);
  } else {
    if (r.tokens == 0) r.tokens = chunks;
    r.ok = true;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--host")
      o.host = next();
    else if (a == "--port")
      o.port = std::stoi(next());
    else if (a == "--clients")
      o.clients = std::stoi(next());
    else if (a == "--requests")
      o.requests = std::stoi(next());
    else if (a == "--max-tokens")
      o.max_tokens = std::stoi(next());
    else if (a == "--prompt-words")
      o.prompt_words = std::stoi(next());
    else if (a == "--time-limit")
      o.time_limit_s = std::stod(next());
    else if (a == "--api-key")
      o.api_key = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1") {
    std::fprintf(stderr, "bench_serve_load talks to the loopback interface only, not %s\n",
                 o.host.c_str());
    return 2;
  }
  if (o.port <= 0 || o.clients < 1) {
    std::fprintf(stderr, "need --port and --clients >= 1\n");
    return 2;
  }
  if (o.requests <= 0) o.requests = 2 * o.clients;

  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(static_cast<long>(o.time_limit_s * 1000));
  std::atomic<int> next_request{0};
  std::mutex m;
  std::vector<Result> results;
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&] {
      for (;;) {
        const int request = next_request++;
        if (request >= o.requests || Clock::now() >= deadline) return;
        Result r = one_request(o, request, deadline);
        std::lock_guard lock(m);
        results.push_back(std::move(r));
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  long tokens = 0;
  int ok = 0;
  std::vector<double> ttft;
  std::vector<std::string> errors;
  for (const Result& r : results) {
    if (r.ok) {
      ++ok;
      tokens += r.tokens;
      ttft.push_back(r.ttft_s);
    } else if (errors.size() < 5) {
      errors.push_back(r.error);
    }
  }
  nlohmann::json out{{"clients", o.clients},
                     {"requests", results.size()},
                     {"ok", ok},
                     {"generated_tokens", tokens},
                     {"seconds", wall},
                     {"tokens_per_second", wall > 0 ? static_cast<double>(tokens) / wall : 0.0},
                     {"ttft_p50_s", percentile(ttft, 0.5)},
                     {"ttft_p99_s", percentile(ttft, 0.99)},
                     {"errors", errors}};
  std::printf("%s\n", out.dump().c_str());
  return ok == static_cast<int>(results.size()) && ok > 0 ? 0 : 1;
}
