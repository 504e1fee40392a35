#pragma once
// Shared by the engine's tests: the tiny model, and the property that any continuous-batching
// schedule gives each request the greedy tokens it gets alone.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ferry/engine/engine.h"
#include "ferry/models/causal_lm.h"

namespace ferry::engine {

// A tiny llama with 128 positions, made once.
const std::filesystem::path& tiny_model();

struct Finished {
  std::vector<std::int64_t> tokens;
  std::string text;
  std::string reason;
  Usage usage;
};

// Takes every event of `h` (the engine runs on its thread or is stepped by `pump`).
Finished collect(RequestHandle& h, const std::function<void()>& pump = {});

std::vector<std::int64_t> random_prompt(std::mt19937& rng, std::int64_t vocab, int length);

// `rounds` rounds of random requests (arrival steps, prompt lengths, max tokens, eos stops, batch
// sizes 1-4, prefill chunks 1-40): every request's tokens equal the tokens it gets alone.
void expect_schedules_match_alone(models::CausalLM& model, int rounds, std::uint64_t seed);

}  // namespace ferry::engine
