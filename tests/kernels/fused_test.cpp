// The fused layer steps against the LibTorch operator chains they replace (Note [Fused layer
// steps]).
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>

#include "ferry/kernels/fused.h"
#include "test_util.h"

namespace ferry::kernels {
namespace {

using testing::ThreadCount;

// transformers' LlamaRMSNorm on a float32 input, as nn::RMSNorm's LibTorch path computes it.
at::Tensor rms_norm_chain(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w.to(at::kFloat) * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

// transformers' apply_rotary_pos_emb on [B, heads, T, D] with cos, sin [B, T, rot].
at::Tensor rotate_half_chain(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const std::int64_t rot = cos.size(-1);
  const std::int64_t half = rot / 2;
  const at::Tensor part = x.narrow(-1, 0, rot);
  const at::Tensor rotated = at::cat({-part.narrow(-1, half, half), part.narrow(-1, 0, half)}, -1);
  const at::Tensor out = part * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
  if (rot == x.size(-1)) return out;
  return at::cat({out, x.narrow(-1, rot, x.size(-1) - rot)}, -1);
}

TEST(FusedRmsNorm, MatchesTheChainForEveryWeightDtypeAndShape) {
  at::manual_seed(1);
  for (const at::ScalarType wt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& shape : std::vector<std::vector<std::int64_t>>{
             {7}, {1, 1, 1024}, {2, 3, 33}, {5, 2048}, {3, 1}}) {
      const at::Tensor x = at::randn(shape) * 3;
      const at::Tensor w = (at::randn({shape.back()}) + 1).to(wt);
      ASSERT_TRUE(rms_norm_applies(x, w));
      const at::Tensor got = rms_norm(x, w, 1e-5);
      const at::Tensor want = rms_norm_chain(x, w, 1e-5);
      ASSERT_EQ(got.sizes(), x.sizes());
      EXPECT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-6))
          << c10::toString(wt) << " max diff " << (got - want).abs().max().item<double>();
    }
  }
}

// The weight is read where it lies, in its dtype (no LibTorch conversion): strided ones too.
TEST(FusedRmsNorm, StridedWeightOfEveryDtype) {
  at::manual_seed(3);
  ThreadCount threads(2);
  const at::Tensor x = at::randn({4, 130}) * 2;
  for (const at::ScalarType wt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor w = (at::randn({260}) + 1).to(wt).slice(0, 1, 260, 2);
    ASSERT_EQ(w.stride(0), 2);
    ASSERT_TRUE(rms_norm_applies(x, w));
    const at::Tensor got = rms_norm(x, w, 1e-5);
    const at::Tensor want = rms_norm_chain(x, w, 1e-5);
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-6))
        << c10::toString(wt) << " max diff " << (got - want).abs().max().item<double>();
  }
}

TEST(FusedRmsNorm, StridedRowsManyThreadsAndLargeEps) {
  at::manual_seed(2);
  ThreadCount threads(3);
  // Rows 96 floats apart, 80 used: the last dimension contiguous, the rows not.
  const at::Tensor wide = at::randn({64, 9, 96});
  const at::Tensor x = wide.narrow(-1, 8, 80);
  ASSERT_FALSE(x.is_contiguous());
  const at::Tensor w = at::randn({80});
  for (const double eps : {1e-6, 0.5}) {
    ASSERT_TRUE(rms_norm_applies(x, w));
    EXPECT_TRUE(at::allclose(rms_norm(x, w, eps), rms_norm_chain(x, w, eps), 1e-5, 1e-6)) << eps;
  }
  // An all-zero row gives zeros (0 · 1/sqrt(eps)), not NaN.
  const at::Tensor zeros = at::zeros({2, 16});
  EXPECT_TRUE(at::equal(rms_norm(zeros, at::ones({16}), 1e-5), zeros));
}

TEST(FusedRmsNorm, DeclinesWhatItDoesNotCover) {
  const at::Tensor w = at::ones({8});
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}).to(at::kBFloat16), w));  // compute dtype
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}, at::kDouble), w));
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}), at::ones({9})));          // wrong length
  EXPECT_FALSE(rms_norm_applies(at::randn({8, 2}).t(), w));                  // last dim strided
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}), at::Tensor()));
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 0}), at::ones({0})));          // nothing to norm
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}).requires_grad_(), w));     // autograd
  EXPECT_FALSE(rms_norm_applies(at::randn({2, 8}), at::ones({8}, at::kInt)));
}

TEST(FusedRotateHalf, MatchesTheChainOnHeadViewsWholeAndPartial) {
  at::manual_seed(3);
  ThreadCount threads(2);
  for (const std::int64_t batch : {1, 3}) {
    for (const std::int64_t tokens : {1, 5, 300}) {
      for (const std::int64_t rot : {64, 32, 2}) {
        constexpr std::int64_t kHeads = 4;
        constexpr std::int64_t kDim = 64;
        // As attention makes it: [B, T, heads, D] viewed as [B, heads, T, D].
        const at::Tensor x = at::randn({batch, tokens, kHeads, kDim}).transpose(1, 2);
        const at::Tensor angles = at::rand({batch, tokens, rot}) * 100;
        const at::Tensor cos = angles.cos();
        const at::Tensor sin = angles.sin();
        ASSERT_TRUE(rotate_half_applies(x, cos, sin));
        const at::Tensor got = rotate_half(x, cos, sin);
        const at::Tensor want = rotate_half_chain(x, cos, sin);
        ASSERT_EQ(got.sizes(), want.sizes());
        EXPECT_TRUE(at::allclose(got, want, 1e-6, 1e-6))
            << "B " << batch << " T " << tokens << " rot " << rot << " max diff "
            << (got - want).abs().max().item<double>();
        if (rot < kDim) {  // the unrotated tail is copied exactly
          EXPECT_TRUE(at::equal(got.narrow(-1, rot, kDim - rot), x.narrow(-1, rot, kDim - rot)));
        }
      }
    }
  }
}

TEST(FusedRotateHalf, DeclinesWhatItDoesNotCover) {
  const at::Tensor x = at::randn({1, 2, 3, 8});
  const at::Tensor c = at::randn({1, 3, 8});
  EXPECT_TRUE(rotate_half_applies(x, c, c));
  EXPECT_FALSE(rotate_half_applies(x.to(at::kBFloat16), c, c));
  EXPECT_FALSE(rotate_half_applies(x, c.to(at::kDouble), c));
  EXPECT_FALSE(rotate_half_applies(x, at::randn({1, 3, 7}), at::randn({1, 3, 7})));  // odd
  EXPECT_FALSE(rotate_half_applies(x, at::randn({1, 3, 10}), at::randn({1, 3, 10})));  // > D
  EXPECT_FALSE(rotate_half_applies(x, at::randn({2, 3, 8}), at::randn({2, 3, 8})));  // batch
  EXPECT_FALSE(rotate_half_applies(x, at::randn({1, 4, 8}), at::randn({1, 4, 8})));  // tokens
  EXPECT_FALSE(rotate_half_applies(at::randn({1, 2, 8, 3}).transpose(2, 3), c, c));
  EXPECT_FALSE(rotate_half_applies(x.clone().requires_grad_(), c, c));
}

// models' attend() as LibTorch computes it (the chain the fused loop replaces).
at::Tensor attend_chain(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& mask, double scale, std::optional<double> softcap) {
  const std::int64_t groups = q.size(1) / k.size(1);
  const at::Tensor keys = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  const at::Tensor values = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  at::Tensor scores = at::matmul(q, keys.transpose(-1, -2)) * scale;
  if (softcap) scores = at::tanh(scores / *softcap) * *softcap;
  const at::Tensor out = at::matmul(at::softmax(scores + mask, -1), values);
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * q.size(3)});
}

// A causal mask [B, 1, T, S] for T new tokens after S − T cached ones, with `padding` masked
// leading keys in batch row 0 (a left-padded prompt).
at::Tensor causal(std::int64_t batch, std::int64_t tokens, std::int64_t keys, std::int64_t padding) {
  const at::Tensor q_pos = at::arange(keys - tokens, keys).unsqueeze(1);
  const at::Tensor k_pos = at::arange(keys).unsqueeze(0);
  at::Tensor allowed = (k_pos <= q_pos).unsqueeze(0).unsqueeze(0).repeat({batch, 1, 1, 1});
  if (padding > 0) allowed[0].narrow(-1, 0, padding).fill_(false);
  return at::zeros(allowed.sizes()).masked_fill(allowed.logical_not(),
                                                std::numeric_limits<float>::lowest());
}

TEST(FusedAttend, MatchesTheChainForDecodePrefillGroupsAndSoftcap) {
  at::manual_seed(4);
  ThreadCount threads(2);
  struct Case {
    std::int64_t batch, heads, kv, tokens, past, dim;
    std::optional<double> softcap;
  };
  for (const Case& c : {Case{1, 4, 4, 1, 9, 64, std::nullopt}, Case{2, 8, 2, 1, 30, 16, std::nullopt},
                        Case{1, 6, 3, 7, 0, 24, std::nullopt}, Case{3, 4, 1, 5, 3, 13, 50.0},
                        Case{1, 2, 2, 64, 64, 32, std::nullopt}}) {
    const std::int64_t keys = c.past + c.tokens;
    // q as attention makes it ([B, T, H, D] viewed as [B, H, T, D]); k, v as the cache holds them.
    const at::Tensor q = at::randn({c.batch, c.tokens, c.heads, c.dim}).transpose(1, 2);
    const at::Tensor k = at::randn({c.batch, c.kv, keys, c.dim});
    const at::Tensor v = at::randn({c.batch, c.kv, keys, c.dim});
    const at::Tensor mask = causal(c.batch, c.tokens, keys, c.batch > 1 ? 2 : 0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
    ASSERT_TRUE(attend_applies(q, k, v, mask));
    const at::Tensor got = attend(q, k, v, mask, scale, c.softcap);
    const at::Tensor want = attend_chain(q, k, v, mask, scale, c.softcap);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
        << "heads " << c.heads << " kv " << c.kv << " T " << c.tokens << " max diff "
        << (got - want).abs().max().item<double>();
    // A mask shared by the batch ([1, 1, T, S]) broadcasts.
    const at::Tensor shared = causal(1, c.tokens, keys, 0);
    EXPECT_TRUE(at::allclose(attend(q, k, v, shared, scale, c.softcap),
                             attend_chain(q, k, v, shared, scale, c.softcap), 1e-5, 1e-5));
  }
}

TEST(FusedAttend, DeclinesWhatItDoesNotCover) {
  const at::Tensor q = at::randn({1, 4, 1, 8});
  const at::Tensor k = at::randn({1, 2, 5, 8});
  const at::Tensor m = at::zeros({1, 1, 1, 5});
  EXPECT_TRUE(attend_applies(q, k, k, m));
  EXPECT_FALSE(attend_applies(q.to(at::kBFloat16), k, k, m));
  EXPECT_FALSE(attend_applies(q, at::randn({1, 3, 5, 8}), at::randn({1, 3, 5, 8}), m));  // 4 % 3
  EXPECT_FALSE(attend_applies(q, k, k, at::zeros({1, 1, 1, 6})));                       // keys
  EXPECT_FALSE(attend_applies(q, k, at::randn({1, 2, 5, 7}), m));                       // v shape
  EXPECT_FALSE(attend_applies(q, k, k, at::zeros({1, 5}).view({1, 1, 1, 5}).to(at::kDouble)));
  EXPECT_FALSE(attend_applies(at::randn({1, 4, 8, 3}).transpose(2, 3).narrow(2, 0, 1), k, k, m));
  EXPECT_FALSE(attend_applies(q.clone().requires_grad_(), k, k, m));
}

}  // namespace
}  // namespace ferry::kernels
