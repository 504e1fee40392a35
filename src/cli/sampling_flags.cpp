#include "cli/sampling_flags.h"

#include <cmath>

#include "ferry/core/error.h"

namespace ferry::cli {

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f) {
  cmd->add_option("--temperature,--temp", f.values.temperature, "0 = greedy");
  cmd->add_option("--top-k", f.values.top_k, "Keep the k most likely tokens (0: all)");
  cmd->add_option("--top-p", f.values.top_p, "Nucleus sampling mass (1: all)");
  cmd->add_option("--min-p", f.values.min_p,
                  "Drop tokens less likely than this fraction of the top token (0: off)");
  cmd->add_option("--repetition-penalty", f.values.repetition_penalty, "> 1 discourages repeats");
  cmd->add_option("--seed", f.values.seed, "Sampling seed");
}

void check_sampling_flags(const SamplingFlags& f) {
  const models::SamplingOptions& s = f.values;
  FERRY_CHECK(std::isfinite(s.temperature) && s.temperature >= 0, InvalidArgument,
              "--temperature: expected 0 (greedy) or more, got {}", s.temperature);
  FERRY_CHECK(s.top_k >= 0, InvalidArgument, "--top-k: expected 0 (off) or more, got {}", s.top_k);
  FERRY_CHECK(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1, InvalidArgument,
              "--top-p: expected a value in (0, 1], got {}", s.top_p);
  FERRY_CHECK(std::isfinite(s.min_p) && s.min_p >= 0 && s.min_p <= 1, InvalidArgument,
              "--min-p: expected a value in [0, 1] (0: off), got {}", s.min_p);
  FERRY_CHECK(std::isfinite(s.repetition_penalty) && s.repetition_penalty > 0, InvalidArgument,
              "--repetition-penalty: expected a value above 0, got {}", s.repetition_penalty);
}

void choose_given(const CLI::App& cmd, SamplingFlags& f) {
  const auto given = [&cmd](const char* flag) { return cmd.count(flag) > 0; };
  if (given("--temperature")) f.chosen.temperature = f.values.temperature;
  if (given("--top-k")) f.chosen.top_k = f.values.top_k;
  if (given("--top-p")) f.chosen.top_p = f.values.top_p;
  if (given("--min-p")) f.chosen.min_p = f.values.min_p;
  if (given("--repetition-penalty")) f.chosen.repetition_penalty = f.values.repetition_penalty;
  if (given("--seed")) f.chosen.seed = f.values.seed;
}

}  // namespace ferry::cli
