#pragma once
// The small model the examples share: embedding, a stack of residual MLP blocks, a head.

#include <ferry/big_modeling.h>
#include <ferry/nn/activation.h>
#include <ferry/nn/embedding.h>
#include <ferry/nn/linear.h>
#include <ferry/nn/norm.h>
#include <memory>
#include <vector>

namespace example {

class Block : public ferry::nn::Callable<Block> {
 public:
  explicit Block(std::int64_t dim) : Callable("Block") {
    norm_ = register_module("norm", std::make_shared<ferry::nn::RMSNorm>(dim));
    up_ = register_module("up", std::make_shared<ferry::nn::Linear>(dim, 4 * dim));
    act_ = register_module(
        "act", std::make_shared<ferry::nn::Activation>(ferry::nn::ActivationKind::kSiLU));
    down_ = register_module("down", std::make_shared<ferry::nn::Linear>(4 * dim, dim));
  }

 private:
  friend class Callable<Block>;
  at::Tensor forward(const at::Tensor& x) { return x + (*down_)((*act_)((*up_)((*norm_)(x)))); }

  std::shared_ptr<ferry::nn::RMSNorm> norm_;
  std::shared_ptr<ferry::nn::Linear> up_;
  std::shared_ptr<ferry::nn::Activation> act_;
  std::shared_ptr<ferry::nn::Linear> down_;
};

class Model : public ferry::nn::Callable<Model> {
 public:
  Model(std::int64_t vocab, std::int64_t dim, int n_layers) : Callable("Model") {
    embed_ = register_module("embed", std::make_shared<ferry::nn::Embedding>(vocab, dim));
    auto layers = register_module("layers", std::make_shared<ferry::nn::ModuleList>());
    for (int i = 0; i < n_layers; ++i)
      blocks_.push_back(layers->push_back(std::make_shared<Block>(dim)));
    head_ = register_module("head", std::make_shared<ferry::nn::Linear>(dim, vocab));
  }

 private:
  friend class Callable<Model>;
  at::Tensor forward(const at::Tensor& ids) {
    at::Tensor h = (*embed_)(ids);
    for (const auto& b : blocks_) h = (*b)(h);
    return (*head_)(h);
  }

  std::shared_ptr<ferry::nn::Embedding> embed_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<ferry::nn::Linear> head_;
};

}  // namespace example
