#pragma once
// The sampling flags `ferry run` and `ferry chat` share. Only the flags given become choices;
// generation_config.json (then ferry's defaults) decides the rest (models::GenerationChoices).

#include <CLI/CLI.hpp>

#include <memory>

#include "ferry/models/generate.h"

namespace ferry::cli {

struct SamplingFlags {
  models::SamplingOptions values;    // what the flags parsed into
  models::GenerationChoices chosen;  // the flags given (filled by choose_given)
};

// Adds --temperature/--temp, --top-k, --top-p, --min-p, --repetition-penalty and --seed.
void add_sampling_flags(CLI::App* cmd, SamplingFlags& flags);
// Throws InvalidArgument naming the flag for a value out of range (before anything is loaded).
void check_sampling_flags(const SamplingFlags& flags);
// Sets flags.chosen from the sampling flags given on `cmd` (call in the command's callback).
void choose_given(const CLI::App& cmd, SamplingFlags& flags);

}  // namespace ferry::cli
