#pragma once
// Embedding: a lookup table of shape [num_embeddings, embedding_dim].

#include <optional>

#include "ferry/nn/module.h"

namespace ferry::nn {

class Embedding : public Callable<Embedding> {
 public:
  // A table of `dtype`; the rows it returns are converted to `output_dtype` when given (a
  // model computing in float32 over a bfloat16 table converts the looked-up rows, never the
  // table).
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
            at::ScalarType dtype = at::kFloat,
            std::optional<at::ScalarType> output_dtype = std::nullopt);
  const at::Tensor& weight() const { return *weight_; }
  // The slot of the table, to tie an output projection to it.
  const SlotPtr& weight_slot() const { return find_entry("weight")->slot; }

 private:
  friend class Callable<Embedding>;
  // `ids`: integer tensor of any shape; result has shape ids.shape + [embedding_dim].
  at::Tensor forward(const at::Tensor& ids);

  TensorRef weight_;
  std::optional<at::ScalarType> output_dtype_;
};

}  // namespace ferry::nn
