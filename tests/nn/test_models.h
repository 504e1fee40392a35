#pragma once
// Small modules shared by the nn tests.

#include <memory>

#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"

namespace ferry::nn::testing {

// Accelerate's ModelForTest: Linear(3, 4), BatchNorm1d(4), Linear(4, 5).
class ModelForTest : public Callable<ModelForTest> {
 public:
  ModelForTest() : Callable("ModelForTest") {
    linear1 = register_module("linear1", std::make_shared<Linear>(3, 4));
    batchnorm = register_module("batchnorm", std::make_shared<BatchNorm1d>(4));
    linear2 = register_module("linear2", std::make_shared<Linear>(4, 5));
  }
  std::shared_ptr<Linear> linear1;
  std::shared_ptr<BatchNorm1d> batchnorm;
  std::shared_ptr<Linear> linear2;

 private:
  friend class Callable<ModelForTest>;
  at::Tensor forward(const at::Tensor& x) { return (*linear2)((*batchnorm)((*linear1)(x))); }
};

}  // namespace ferry::nn::testing
