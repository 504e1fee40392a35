#include "ferry/nn/embedding.h"

namespace ferry::nn {

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, at::ScalarType dtype,
                     std::optional<at::ScalarType> output_dtype)
    : Callable("Embedding"), output_dtype_(output_dtype) {
  weight_ = new_parameter("weight", {num_embeddings, embedding_dim}, dtype,
                          [](at::Tensor& t) { t.normal_(0.0, 1.0); });
}

at::Tensor Embedding::forward(const at::Tensor& ids) {
  // Note [Compute dtype]: the rows are looked up in the stored dtype, then converted.
  const at::Tensor rows = at::embedding(*weight_, ids);
  return output_dtype_ && rows.scalar_type() != *output_dtype_ ? rows.to(*output_dtype_) : rows;
}

}  // namespace ferry::nn
