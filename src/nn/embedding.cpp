#include "ferry/nn/embedding.h"

namespace ferry::nn {

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, at::ScalarType dtype)
    : Callable("Embedding") {
  weight_ = new_parameter("weight", {num_embeddings, embedding_dim}, dtype,
                          [](at::Tensor& t) { t.normal_(0.0, 1.0); });
}

at::Tensor Embedding::forward(const at::Tensor& ids) { return at::embedding(*weight_, ids); }

}  // namespace ferry::nn
