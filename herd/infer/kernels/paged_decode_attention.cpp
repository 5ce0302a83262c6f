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
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

// A cache row as float32: in place for a float cache, converted into `buffer` otherwise.
template <typename T>
inline const float* row_as_float(const T* src, float* buffer, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) buffer[i] = static_cast<float>(src[i]);
    return buffer;
  }
}

// 16 partial sums: vectorizes without -ffast-math (no reassociation of one running sum needed).
inline float dot(const float* a, const float* b, int64_t n) {
  float partial[16] = {0.f};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int t = 0; t < 16; ++t) partial[t] += a[i + t] * b[i + t];
  float total = 0.f;
  for (int t = 0; t < 16; ++t) total += partial[t];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// One task per sequence, so each cache slot's row for all KV heads ([Hkv, hd], contiguous) is read
// in one sweep: per-(sequence, head) tasks touched a third of each row at a time and ran at half the
// memory bandwidth.
template <typename T>
void attend(const T* q, const T* keys, const T* values, const int64_t* slots, const bool* mask, T* out, int64_t batch,
            int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t length, float scale) {
  const int64_t group = heads / kv_heads;
  const int64_t row = kv_heads * head_dim;  // one slot: every KV head
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> query(heads * head_dim), buffer(row), scores(heads * length), acc(heads * head_dim);
    for (int64_t b = begin; b < end; ++b) {
      const T* qb = q + b * heads * head_dim;
      for (int64_t i = 0; i < heads * head_dim; ++i) query[i] = static_cast<float>(qb[i]) * scale;
      const int64_t* seq_slots = slots + b * length;
      const bool* seq_mask = mask ? mask + b * length : nullptr;
      for (int64_t j = 0; j < length; ++j) {
        if (seq_mask && !seq_mask[j]) {
          for (int64_t hq = 0; hq < heads; ++hq) scores[hq * length + j] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float* key = row_as_float(keys + seq_slots[j] * row, buffer.data(), row);
        for (int64_t hq = 0; hq < heads; ++hq)
          scores[hq * length + j] = dot(query.data() + hq * head_dim, key + (hq / group) * head_dim, head_dim);
      }
      for (int64_t hq = 0; hq < heads; ++hq) {  // softmax in place
        float* s = scores.data() + hq * length;
        const float top = *std::max_element(s, s + length);
        float total = 0.f;
        for (int64_t j = 0; j < length; ++j) {
          s[j] = std::isinf(top) ? 0.f : std::exp(s[j] - top);
          total += s[j];
        }
        const float inv = total > 0.f ? 1.f / total : 0.f;
        for (int64_t j = 0; j < length; ++j) s[j] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < length; ++j) {
        if (seq_mask && !seq_mask[j]) continue;
        const float* value = row_as_float(values + seq_slots[j] * row, buffer.data(), row);
        for (int64_t hq = 0; hq < heads; ++hq) {
          const float p = scores[hq * length + j];
          const float* v = value + (hq / group) * head_dim;
          float* a = acc.data() + hq * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) a[d] += p * v[d];
        }
      }
      T* ob = out + b * heads * head_dim;
      for (int64_t i = 0; i < heads * head_dim; ++i) ob[i] = static_cast<T>(acc[i]);
    }
  });
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                                  const at::Tensor& slots, const at::Tensor& mask, double scale) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.sizes() == key_cache.sizes(),
              "paged_decode_attention: q [B, H, hd], caches [slots, Hkv, hd]");
  TORCH_CHECK(q.scalar_type() == key_cache.scalar_type() && q.scalar_type() == value_cache.scalar_type(),
              "paged_decode_attention: q and the caches must share a dtype");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "paged_decode_attention: contiguous caches");
  const int64_t batch = q.size(0), heads = q.size(1), head_dim = q.size(2), kv_heads = key_cache.size(1);
  TORCH_CHECK(key_cache.size(2) == head_dim && heads % kv_heads == 0, "paged_decode_attention: head shapes disagree");
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_decode_attention", [&] {
    attend<scalar_t>(qc.data_ptr<scalar_t>(), key_cache.data_ptr<scalar_t>(), value_cache.data_ptr<scalar_t>(),
                     sc.data_ptr<int64_t>(), masked ? mc.data_ptr<bool>() : nullptr, out.data_ptr<scalar_t>(), batch,
                     heads, kv_heads, head_dim, length, static_cast<float>(scale));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(herd_kernels, m) {
  m.def("paged_decode_attention(Tensor q, Tensor key_cache, Tensor value_cache, Tensor slots, Tensor mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(herd_kernels, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
