// The generation engine: continuous batching gives every request the tokens it gets alone.
#include "ferry/engine/engine.h"

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "ferry/core/devices.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"
#include "ferry/nn/hook.h"
#include "schedules.h"
#include "scratch_dir.h"

namespace ferry::engine {

using namespace std::chrono_literals;

const std::filesystem::path& tiny_model() {
  static ferry::testing::ScratchDir dir;  // made by the first test that asks, removed at exit
  static const bool made = [] {
    models::make_model(dir.path(), {.arch = "llama",
                                    .hidden_size = 32,
                                    .n_layers = 2,
                                    .n_heads = 4,
                                    .n_kv_heads = 2,
                                    .intermediate_size = 64,
                                    .max_position_embeddings = 128,
                                    .seed = 5,
                                    .n_merges = 40});
    return true;
  }();
  (void)made;
  return dir.path();
}


Finished collect(RequestHandle& h, const std::function<void()>& pump) {
  Finished f;
  std::vector<std::int64_t> streamed;
  for (int i = 0; i < 100000; ++i) {
    if (pump) pump();
    auto e = h.next(pump ? 0ms : 5000ms);
    if (!e) {
      if (pump) continue;
      ADD_FAILURE() << "no event within 5 s";
      break;
    }
    f.text += e->text;
    if (e->kind == Event::Kind::kToken) {
      streamed.push_back(e->token);
    } else {
      f.reason = e->finish_reason;
      f.usage = e->usage;
      break;
    }
  }
  f.tokens = h.tokens();
  EXPECT_EQ(streamed, f.tokens);
  return f;
}

std::vector<std::int64_t> random_prompt(std::mt19937& rng, std::int64_t vocab, int length) {
  std::uniform_int_distribution<std::int64_t> id(3, vocab - 1);
  std::vector<std::int64_t> p(static_cast<std::size_t>(length));
  for (auto& t : p) t = id(rng);
  return p;
}

// The property: whatever the arrival times, lengths, stops, batch size and prefill chunk, greedy
// tokens equal each prompt's tokens generated alone.
void expect_schedules_match_alone(models::CausalLM& model, int rounds, std::uint64_t seed) {
  const std::int64_t vocab = model.config().vocab_size;
  std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
  for (int round = 0; round < rounds; ++round) {
    const int n = std::uniform_int_distribution<int>(2, 7)(rng);
    const std::int64_t max_batch = std::uniform_int_distribution<std::int64_t>(1, 4)(rng);
    const std::int64_t chunk = std::uniform_int_distribution<std::int64_t>(1, 40)(rng);
    struct Job {
      std::vector<std::int64_t> prompt;
      RequestOptions options;
      int arrival;  // step at which it is submitted
      std::vector<std::int64_t> expected;
      RequestHandle handle;
      bool submitted = false;
      Finished result;
    };
    std::vector<Job> jobs(static_cast<std::size_t>(n));
    for (auto& j : jobs) {
      j.prompt = random_prompt(rng, vocab, std::uniform_int_distribution<int>(1, 30)(rng));
      j.options.max_new_tokens = std::uniform_int_distribution<std::int64_t>(1, 14)(rng);
      j.arrival = std::uniform_int_distribution<int>(0, 20)(rng);
      // Alone, with the same prefill chunks.
      Engine alone(model, {.prefill_chunk = chunk});
      RequestHandle h = alone.submit(j.prompt, j.options);
      const std::vector<std::int64_t> tokens = collect(h, [&] { alone.step(); }).tokens;
      // A stop at a token the sequence produces (sometimes): it must end there in the batch too.
      if (tokens.size() > 2 && rng() % 2 == 0) {
        const std::int64_t stop = tokens[tokens.size() / 2];
        j.options.eos_token_ids = {stop};
        auto at = std::find(tokens.begin(), tokens.end(), stop);
        j.expected.assign(tokens.begin(), at + 1);
      } else {
        j.expected = tokens;
      }
    }
    Engine engine(model, {.max_batch = max_batch, .max_queue = 16, .prefill_chunk = chunk});
    int step = 0;
    std::size_t done = 0;
    while (done < jobs.size() && step < 10000) {
      for (auto& j : jobs) {
        if (!j.submitted && j.arrival <= step) {
          j.handle = engine.submit(j.prompt, j.options);
          j.submitted = true;
        }
      }
      engine.step();
      ++step;
      for (auto& j : jobs) {
        if (!j.submitted || !j.result.reason.empty()) continue;
        while (auto e = j.handle.next(0ms)) {
          if (e->kind == Event::Kind::kFinished) {
            j.result.reason = e->finish_reason;
            j.result.tokens = j.handle.tokens();
            ++done;
          }
        }
      }
    }
    ASSERT_EQ(done, jobs.size()) << "round " << round;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      EXPECT_EQ(jobs[i].result.tokens, jobs[i].expected)
          << "round " << round << " job " << i << " of " << n << ", max_batch " << max_batch
          << ", chunk " << chunk << ", arrival " << jobs[i].arrival;
    }
    EXPECT_EQ(engine.stats().kv_cache_bytes, 0u);
  }
}

namespace {


TEST(Engine, OneRequestEqualsGenerate) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  const std::vector<std::int64_t> prompt{3, 77, 140, 9, 250, 31, 5};
  const auto alone = models::generate(*m.model, {prompt}, {.max_new_tokens = 12});
  Engine engine(*m.model, {});
  RequestHandle h = engine.submit(prompt, {.max_new_tokens = 12});
  const Finished f = collect(h, [&] { engine.step(); });
  EXPECT_EQ(f.tokens, alone.tokens[0]);
  EXPECT_EQ(f.reason, "length");
  EXPECT_EQ(f.usage.prompt_tokens, 7);
  EXPECT_EQ(f.usage.completion_tokens, 12);
  EXPECT_FALSE(engine.step());  // nothing left to do
  EXPECT_EQ(engine.stats().running, 0);
  EXPECT_EQ(engine.stats().generated_tokens, 12u);
  EXPECT_EQ(engine.stats().kv_cache_bytes, 0u);
}

// Records, at each call of the module it is attached to, whether inference mode was on.
class InferenceModeProbe : public nn::ModelHook {
 public:
  explicit InferenceModeProbe(std::vector<bool>* seen) : seen_(seen) {}
  void pre_forward(nn::Module&, nn::TensorView&) override {
    seen_->push_back(c10::InferenceMode::is_enabled());
  }

 private:
  std::vector<bool>* seen_;
};

// Note [Inference mode] (src/models/generate.cpp): step() computes in inference mode and gives
// the caller's mode back.
TEST(Engine, StepsRunInInferenceModeAndTheCallersModeIsRestored) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  std::vector<bool> seen;
  m.model->module().submodule("lm_head").set_hook(std::make_shared<InferenceModeProbe>(&seen));
  Engine engine(*m.model, {});
  RequestHandle h = engine.submit({3, 77, 140, 9}, {.max_new_tokens = 4});
  ASSERT_FALSE(c10::InferenceMode::is_enabled());
  const Finished f = collect(h, [&] {
    engine.step();
    EXPECT_FALSE(c10::InferenceMode::is_enabled());
  });
  EXPECT_EQ(f.tokens.size(), 4u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen, std::vector<bool>(seen.size(), true));
}

TEST(EngineProperty, ContinuousBatchingEqualsAlone) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  expect_schedules_match_alone(*m.model, 12, 1);
}

TEST(EngineProperty, ContinuousBatchingEqualsAloneWithDiskOffloadAndSimulatedGpus) {
  SimGpuScope gpus({Bytes(4'000'000)});
  ferry::testing::ScratchDir offload;
  models::LoadModelOptions o;
  o.dispatch.device_map = plan::DeviceMap{{"model.embed_tokens", Placement::gpu(0)},
                                          {"model.layers.0", Placement::gpu(0)},
                                          {"model.layers.1", Placement::disk()},
                                          {"model.norm", Placement::cpu()},
                                          {"lm_head", Placement::cpu()}};
  o.dispatch.offload_folder = offload.path();
  models::LoadedModel m = models::load_model(tiny_model(), o);
  expect_schedules_match_alone(*m.model, 4, 2);
}

TEST(Engine, GreedyBatchEqualsGenerateAlone) {
  // Against models::generate (one whole-prompt prefill), with a chunk longer than the prompts.
  models::LoadedModel m = models::load_model(tiny_model(), {});
  std::mt19937 rng(3);
  std::vector<std::vector<std::int64_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(random_prompt(rng, 320, 2 + 5 * i));
  Engine engine(*m.model, {.max_batch = 6});
  std::vector<RequestHandle> handles;
  for (const auto& p : prompts) handles.push_back(engine.submit(p, {.max_new_tokens = 10}));
  while (engine.step()) {
  }
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(handles[i].tokens(),
              models::generate(*m.model, {prompts[i]}, {.max_new_tokens = 10}).tokens[0])
        << "prompt " << i;
  }
}

TEST(Engine, SamplingIsPerRequestAndSeeded) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  const std::vector<std::int64_t> prompt{3, 77, 140, 9};
  auto run = [&](std::uint64_t seed, int others) {
    Engine engine(*m.model, {.max_batch = 4});
    std::vector<RequestHandle> noise;
    for (int i = 0; i < others; ++i)
      noise.push_back(engine.submit(
          {5, 6, 7}, {.max_new_tokens = 8, .sampling = {.temperature = 1.0, .seed = 99}}));
    RequestHandle h = engine.submit(
        prompt,
        {.max_new_tokens = 10, .sampling = {.temperature = 1.5, .top_k = 50, .seed = seed}});
    while (engine.step()) {
    }
    return h.tokens();
  };
  EXPECT_EQ(run(7, 0), run(7, 3));  // the batch does not change a request's draws
  EXPECT_NE(run(7, 0), run(8, 0));
}

TEST(Engine, StopStringsAreNeverEmitted) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  models::Tokenizer tok = models::Tokenizer::load(tiny_model());
  auto decode = [&](const std::vector<std::int64_t>& ids) { return tok.decode(ids, true); };
  const std::vector<std::int64_t> prompt = tok.encode("hello there");
  Engine plain(*m.model, {.decode = decode});
  RequestHandle h0 = plain.submit(prompt, {.max_new_tokens = 20});
  const Finished free_run = collect(h0, [&] { plain.step(); });
  ASSERT_GE(free_run.text.size(), 6u) << "the tiny model should say something";
  EXPECT_EQ(free_run.text, decode(free_run.tokens));
  // A stop string from the middle of that text.
  const std::string stop = free_run.text.substr(free_run.text.size() / 2, 2);
  const std::size_t at = free_run.text.find(stop);
  Engine engine(*m.model, {.decode = decode});
  RequestHandle h = engine.submit(prompt, {.max_new_tokens = 20, .stop_strings = {stop}});
  const Finished f = collect(h, [&] { engine.step(); });
  EXPECT_EQ(f.reason, "stop_string");
  EXPECT_EQ(f.text, free_run.text.substr(0, at));
}

TEST(Engine, CancelFreesTheRowAndQueueIsBounded) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  Engine engine(*m.model, {.max_batch = 1, .max_queue = 1});
  RequestHandle a = engine.submit({3, 4, 5}, {.max_new_tokens = 50});
  engine.step();  // a is running; the queue is empty
  RequestHandle b = engine.submit({3, 4}, {.max_new_tokens = 5});
  EXPECT_THROW(engine.submit({3}, {.max_new_tokens = 5}), QueueFull);
  engine.step();
  EXPECT_EQ(engine.stats().running, 1);
  EXPECT_EQ(engine.stats().waiting, 1);
  a.cancel();
  engine.step();  // a leaves, b is admitted and prefilled
  auto last = a.next(0ms);
  while (last && last->kind != Event::Kind::kFinished) last = a.next(0ms);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->finish_reason, "cancelled");
  while (engine.step()) {
  }
  EXPECT_EQ(b.tokens().size(), 5u);
  EXPECT_EQ(engine.stats().running, 0);
  EXPECT_EQ(engine.stats().kv_cache_bytes, 0u);
  {
    // Dropping the handle cancels too.
    RequestHandle c = engine.submit({3, 4}, {.max_new_tokens = 50});
    engine.step();
  }
  engine.step();
  EXPECT_EQ(engine.stats().running, 0);
}

TEST(Engine, RejectsBadRequests) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  Engine engine(*m.model, {.context = 32});
  EXPECT_THROW(engine.submit({}, {}), InvalidArgument);
  EXPECT_THROW(engine.submit({3, 320}, {}), InvalidArgument);
  EXPECT_THROW(engine.submit({3, -1}, {}), InvalidArgument);
  EXPECT_THROW(engine.submit({3}, {.max_new_tokens = 0}), InvalidArgument);
  try {
    engine.submit(std::vector<std::int64_t>(30, 3), {.max_new_tokens = 3});
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.path(), "max_tokens");
    EXPECT_EQ(e.actual(), "33");
  }
  EXPECT_THROW(engine.submit({3}, {.stop_strings = {"x"}}), InvalidArgument);  // no decode
  EXPECT_THROW(engine.submit({3}, {.sampling = {.top_p = 2}}), InvalidArgument);
  EXPECT_THROW(Engine(*m.model, {.context = 129}), InvalidArgument);
  EXPECT_THROW(Engine(*m.model, {.max_batch = 0}), InvalidArgument);
}

TEST(Engine, BackgroundThreadServesConcurrentClients) {
  models::LoadedModel m = models::load_model(tiny_model(), {});
  Engine engine(*m.model, {.max_batch = 4, .max_queue = 16});
  engine.start();
  std::vector<std::vector<std::int64_t>> prompts;
  std::mt19937 rng(9);
  for (int i = 0; i < 8; ++i) prompts.push_back(random_prompt(rng, 320, 3 + i));
  std::vector<std::vector<std::int64_t>> got(prompts.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      RequestHandle h = engine.submit(prompts[i], {.max_new_tokens = 6});
      got[i] = collect(h).tokens;
    });
  }
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got[i], models::generate(*m.model, {prompts[i]}, {.max_new_tokens = 6}).tokens[0]);
  }
  EXPECT_GT(engine.stats().last_batch, 0);
  // Stopping without draining cancels what runs.
  RequestHandle slow = engine.submit({3, 4, 5}, {.max_new_tokens = 100});
  engine.stop(false);
  const Finished f = collect(slow);
  EXPECT_TRUE(f.reason == "cancelled" || f.reason == "length") << f.reason;
  EXPECT_THROW(engine.submit({3}, {}), InvalidArgument);
}

}  // namespace
}  // namespace ferry::engine
