#pragma once
// Models for the dispatch tests: Accelerate's ModelForTest and a small transformer-like stack.

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ferry/nn/activation.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"
#include "ferry/plan/device_map.h"

namespace ferry::dispatch::testing {

class ModelForTest : public nn::Callable<ModelForTest> {
 public:
  ModelForTest() : Callable("ModelForTest") {
    linear1 = register_module("linear1", std::make_shared<nn::Linear>(3, 4));
    batchnorm = register_module("batchnorm", std::make_shared<nn::BatchNorm1d>(4));
    linear2 = register_module("linear2", std::make_shared<nn::Linear>(4, 5));
  }
  std::shared_ptr<nn::Linear> linear1;
  std::shared_ptr<nn::BatchNorm1d> batchnorm;
  std::shared_ptr<nn::Linear> linear2;

 private:
  friend class Callable<ModelForTest>;
  at::Tensor forward(const at::Tensor& x) { return (*linear2)((*batchnorm)((*linear1)(x))); }
};

// Pre-norm residual block: x + fc2(act(fc1(norm(x)))).
class Block : public nn::Callable<Block> {
 public:
  explicit Block(std::int64_t dim) : Callable("Block") {
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(dim));
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(dim, 2 * dim));
    act = register_module("act", std::make_shared<nn::Activation>(nn::ActivationKind::kGELU));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(2 * dim, dim));
  }
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Activation> act;
  std::shared_ptr<nn::Linear> fc2;

 private:
  friend class Callable<Block>;
  at::Tensor forward(const at::Tensor& x) { return x + (*fc2)((*act)((*fc1)((*norm)(x)))); }
};

// Embedding → n Blocks → RMSNorm → head tied to the embedding; input ids [B, T].
class TinyStack : public nn::Callable<TinyStack> {
 public:
  TinyStack(std::int64_t vocab, std::int64_t dim, int n_layers) : Callable("TinyStack") {
    embed = register_module("embed", std::make_shared<nn::Embedding>(vocab, dim));
    layers = register_module("layers", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < n_layers; ++i)
      blocks.push_back(layers->push_back(std::make_shared<Block>(dim)));
    norm = register_module("norm", std::make_shared<nn::RMSNorm>(dim));
    head = register_module(
        "head", std::make_shared<nn::Linear>(dim, vocab, nn::LinearOptions{.bias = false}));
    head->set_slot("weight", embed->weight_slot());
    register_buffer("scale", at::full({1}, 0.5));
  }
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::ModuleList> layers;
  std::vector<std::shared_ptr<Block>> blocks;
  std::shared_ptr<nn::RMSNorm> norm;
  std::shared_ptr<nn::Linear> head;

 private:
  friend class Callable<TinyStack>;
  at::Tensor forward(const at::Tensor& ids) {
    at::Tensor h = (*embed)(ids);
    for (const auto& b : blocks) h = (*b)(h);
    const at::Tensor& scale = find_entry("scale")->slot->tensor();
    return (*head)((*norm)(h)) * scale.to(h.device());
  }
};

// A random device map of a TinyStack with 3 layers over {gpu 0, gpu 1, cpu, disk}, at block or
// leaf granularity. embed and head are tied: together half of the time (as infer_auto_device_map
// places them), apart otherwise (a user's map; Note [Tied weights split between ...]).
inline plan::DeviceMap random_stack_map(std::mt19937& rng) {
  const std::vector<Placement> choices{Placement::gpu(0), Placement::gpu(1), Placement::cpu(),
                                       Placement::disk()};
  auto pick = [&] { return choices[rng() % choices.size()]; };
  plan::DeviceMap map;
  const Placement tied = pick();
  map.set("embed", tied);
  map.set("head", rng() % 2 == 0 ? tied : pick());
  for (int i = 0; i < 3; ++i) {
    const std::string block = "layers." + std::to_string(i);
    if (rng() % 2 == 0) {
      map.set(block, pick());
    } else {
      for (const char* leaf : {"norm", "fc1", "act", "fc2"}) map.set(block + "." + leaf, pick());
    }
  }
  map.set("norm", pick());
  map.set("scale", pick());
  return map;
}

}  // namespace ferry::dispatch::testing
