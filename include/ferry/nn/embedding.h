#pragma once
// Embedding: a lookup table of shape [num_embeddings, embedding_dim].

#include "ferry/nn/module.h"

namespace ferry::nn {

class Embedding : public Callable<Embedding> {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
            at::ScalarType dtype = at::kFloat);
  const at::Tensor& weight() const { return *weight_; }
  // The slot of the table, to tie an output projection to it.
  const SlotPtr& weight_slot() const { return find_entry("weight")->slot; }

 private:
  friend class Callable<Embedding>;
  // `ids`: integer tensor of any shape; result has shape ids.shape + [embedding_dim].
  at::Tensor forward(const at::Tensor& ids);

  TensorRef weight_;
};

}  // namespace ferry::nn
