// A Hugging Face model folder in one call: ferry plans where each layer rests under the budgets
// (here the CPU's; the rest streams from disk), loads, and generates with the model's own eos
// ids and generation_config.json. Usage: example_hf_llama MODEL_DIR [MAX_MEMORY] [PROMPT]
// e.g. example_hf_llama ~/models/Llama-3.2-1B 0=20GiB,cpu=64GiB "The capital of France is"
#include <ferry/ferry.h>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR [MAX_MEMORY] [PROMPT]\n";
    return 2;
  }
  const std::string max_memory = argc > 2 ? argv[2] : "cpu=8GiB";
  const std::string prompt = argc > 3 ? argv[3] : "Once upon a time";
  try {
    auto model = ferry::load_pretrained(argv[1], {.device_map = "auto", .max_memory = max_memory});
    std::cout << prompt << model.generate(prompt, {.max_new_tokens = 16}) << "\n";
  } catch (const ferry::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
