// Decode attention straight from the paged KV cache on CPU: one query per sequence.
//
// Why: the portable path gathers every sequence's keys and values out of the cache into new tensors
// (index_select) and then runs SDPA over the copy. At 16 sequences x 540 tokens that was ~1.9 ms per
// layer on the 2-core dev box, most of it copying. Here each sequence's task reads its cache rows in
// place, once for all the query heads that share them (GQA), with a softmax in float32.
//
//   q            [B, H, hd]            float32 / bfloat16 / float16 (same dtype as the cache)
//   key_cache    [slots, Hkv, hd]      value_cache likewise
//   slots        [B, L] int64          cache slot of each sequence's j-th context token
//   mask         [B, L] bool           false = padding (sequences shorter than L); may be empty
//   -> out       [B, H, hd]            q's dtype
// The arithmetic (explicit SIMD per ISA, a vector exp, K/V converted in registers) is in
// attention_core.h, which has no ATen in it so a test can compile it alone for another architecture;
// this file checks the tensors and spreads the work over threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_core.h"

namespace {

static_assert(sizeof(c10::BFloat16) == 2 && sizeof(c10::Half) == 2, "16-bit cache elements");

// The core's element type for a cache dtype (the same bits).
template <typename T>
using CoreElement = std::conditional_t<std::is_same_v<T, c10::BFloat16>, herd_attention::bf16_bits,
                                       std::conditional_t<std::is_same_v<T, c10::Half>, herd_attention::f16_bits, T>>;

// Tasks: one per sequence when there are at least as many sequences as threads (each cache slot's
// row for all KV heads, [Hkv, hd] contiguous, is read in one sweep: per-(sequence, head) tasks touched
// a third of each row at a time and ran at half the memory bandwidth); else each sequence's KV heads
// in `split` contiguous ranges, one per thread, so a single long sequence still uses every core and
// each task reads one contiguous piece of every row (when the context is long enough to pay for it).
template <typename T>
void attend(const T* q, const T* keys, const T* values, const int64_t* slots, const bool* mask, T* out, int64_t batch,
            int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t length, float scale) {
  using E = CoreElement<T>;
  const E* k = reinterpret_cast<const E*>(keys);
  const E* v = reinterpret_cast<const E*>(values);
  const int64_t threads = at::get_num_threads();
  // a short context is a few microseconds of work: splitting it costs more in thread wake-ups than it saves
  const bool small = length * heads * head_dim < (int64_t{1} << 17);
  const int64_t split = batch >= threads || small ? 1 : std::min<int64_t>(kv_heads, (threads + batch - 1) / batch);
  const int64_t group = heads / kv_heads;
  at::parallel_for(0, batch * split, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> query(heads * head_dim), scores(heads * herd_attention::kBlock), acc(heads * head_dim);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / split, part = task % split;
      const int64_t kv0 = part * kv_heads / split, kv1 = (part + 1) * kv_heads / split;
      const int64_t h0 = kv0 * group * head_dim, h1 = kv1 * group * head_dim;
      const T* qb = q + b * heads * head_dim;
      for (int64_t i = h0; i < h1; ++i) query[i] = static_cast<float>(qb[i]) * scale;
      herd_attention::attend<herd_attention::Native>(query.data(), k, v, slots + b * length,
                                                     mask ? mask + b * length : nullptr, heads, kv_heads, head_dim,
                                                     length, kv0, kv1, scores.data(), acc.data());
      T* ob = out + b * heads * head_dim;
      for (int64_t i = h0; i < h1; ++i) ob[i] = static_cast<T>(acc[i]);
    }
  });
}

std::string attention_path() { return herd_attention::path(); }

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& slots, const at::Tensor& mask, double scale) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.sizes() == key_cache.sizes(),
              "paged_decode_attention: q [B, H, hd], caches [slots, Hkv, hd]");
  TORCH_CHECK(q.scalar_type() == key_cache.scalar_type() && q.scalar_type() == value_cache.scalar_type(),
              "paged_decode_attention: q and the caches must share a dtype");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "paged_decode_attention: contiguous caches");
  const int64_t batch = q.size(0), heads = q.size(1), head_dim = q.size(2), kv_heads = key_cache.size(1);
  TORCH_CHECK(key_cache.size(2) == head_dim && heads % kv_heads == 0, "paged_decode_attention: head shapes disagree");
  TORCH_CHECK(heads <= 256, "paged_decode_attention: at most 256 query heads, got ", heads);
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == batch && slots.scalar_type() == at::kLong,
              "paged_decode_attention: slots must be int64 [B, L]");
  const int64_t length = slots.size(1);
  const bool masked = mask.numel() > 0;
  TORCH_CHECK(!masked || (mask.scalar_type() == at::kBool && mask.numel() == batch * length),
              "paged_decode_attention: mask must be bool [B, L] or empty");
  const at::Tensor qc = q.contiguous(), sc = slots.contiguous();
  const at::Tensor mc = masked ? mask.reshape({batch, length}).contiguous() : mask;
  at::Tensor out = at::empty_like(qc);
  if (batch == 0) return out;
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    attend<T>(qc.data_ptr<T>(), key_cache.data_ptr<T>(), value_cache.data_ptr<T>(), sc.data_ptr<int64_t>(),
              masked ? mc.data_ptr<bool>() : nullptr, out.data_ptr<T>(), batch, heads, kv_heads, head_dim, length,
              static_cast<float>(scale));
  };
  switch (q.scalar_type()) {
    case at::kFloat: run(float{}); break;
    case at::kBFloat16: run(c10::BFloat16{}); break;
    case at::kHalf: run(c10::Half{}); break;
    default: TORCH_CHECK(false, "paged_decode_attention: float32, bfloat16 or float16 caches, got ", q.scalar_type());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(herd_kernels, m) {
  m.def("paged_decode_attention(Tensor q, Tensor key_cache, Tensor value_cache, Tensor slots, Tensor mask, float scale) -> Tensor");
  m.def("attention_path() -> str", &attention_path);
}

TORCH_LIBRARY_IMPL(herd_kernels, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
