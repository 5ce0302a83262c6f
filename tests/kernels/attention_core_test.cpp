// Standalone check of herd's paged decode attention core (herd/infer/kernels/attention_core.h), without
// torch, so it can be cross-compiled for aarch64 and run under qemu-aarch64 (tests/test_cpu_kernels_neon.py)
// as well as natively on x86.
//
// For float32, bfloat16 and float16 caches and several shapes (head_dim not a multiple of the vector
// width, lengths with tails, GQA groups of 1, 3 and 4, padding masks, a fully masked sequence, scores
// far apart so the softmax underflows) it runs the build's path (AVX-512, AVX2, NEON or portable:
// whatever the compiler targets) and the portable path over a shuffled paged cache, and checks both
// against the same attention in double precision (max |error| / max |out| < 2e-5) and against each other;
// the vector exp is checked against std::exp over [-90, 0].
//
// Usage: attention_core_test [expected-path]; exits 0 only if every check passes and the build's path
// is expected-path (when given), so a build that silently fell back to the portable loop cannot pass.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../herd/infer/kernels/attention_core.h"

namespace {

using herd_attention::bf16_bits;
using herd_attention::f16_bits;

uint16_t float_to_bf16(float x) {  // round to nearest even, as torch does (no NaN here)
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

uint16_t float_to_half(float x) {  // for |x| < 8, normal range: enough for these inputs
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  int exponent = static_cast<int>((bits >> 23) & 0xFF) - 127 + 15;
  uint32_t mantissa = bits & 0x7FFFFFu;
  if (exponent <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  uint32_t half = (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

template <typename E> E encode(float x);
template <> float encode<float>(float x) { return x; }
template <> bf16_bits encode<bf16_bits>(float x) { return {float_to_bf16(x)}; }
template <> f16_bits encode<f16_bits>(float x) { return {float_to_half(x)}; }

template <typename E> const char* type_name();
template <> const char* type_name<float>() { return "float32"; }
template <> const char* type_name<bf16_bits>() { return "bfloat16"; }
template <> const char* type_name<f16_bits>() { return "float16"; }

struct Shape {
  int64_t heads, kv_heads, hd, length, valid;  // valid < length: the rest is padding (0: all masked)
  float spread;                                 // query scale: large spreads make exp underflow
};

template <typename E>
bool check(const Shape& s, std::mt19937& gen) {
  const int64_t slots_total = s.length * 2 + 7, row = s.kv_heads * s.hd;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<E> keys(slots_total * row), values(slots_total * row);
  std::vector<double> kd(keys.size()), vd(values.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    keys[i] = encode<E>(normal(gen));
    values[i] = encode<E>(normal(gen));
    kd[i] = herd_attention::Portable::load(&keys[i]);
    vd[i] = herd_attention::Portable::load(&values[i]);
  }
  std::vector<int64_t> slots(s.length);
  std::vector<int64_t> order(slots_total);
  for (int64_t i = 0; i < slots_total; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), gen);
  for (int64_t j = 0; j < s.length; ++j) slots[j] = order[j];
  std::unique_ptr<bool[]> mask(new bool[s.length]);
  for (int64_t j = 0; j < s.length; ++j) mask[j] = j < s.valid;
  std::vector<float> query(s.heads * s.hd);
  for (auto& x : query) x = normal(gen) * s.spread;
  const bool* m = s.valid == s.length ? nullptr : mask.get();

  std::vector<float> scores(s.heads * herd_attention::kBlock), native(s.heads * s.hd), portable(s.heads * s.hd);
  herd_attention::attend<herd_attention::Native>(query.data(), keys.data(), values.data(), slots.data(), m, s.heads,
                                                 s.kv_heads, s.hd, s.length, 0, s.kv_heads, scores.data(),
                                                 native.data());
  // the portable path one KV head at a time: the split the torch op uses for short batches
  for (int64_t kv = 0; kv < s.kv_heads; ++kv)
    herd_attention::attend<herd_attention::Portable>(query.data(), keys.data(), values.data(), slots.data(), m,
                                                     s.heads, s.kv_heads, s.hd, s.length, kv, kv + 1, scores.data(),
                                                     portable.data());
  // reference in double
  const int64_t group = s.heads / s.kv_heads;
  std::vector<double> want(s.heads * s.hd, 0.0);
  double biggest = 0.0;
  for (int64_t h = 0; h < s.heads; ++h) {
    std::vector<double> w(s.length, 0.0);
    double top = -INFINITY;
    for (int64_t j = 0; j < s.valid; ++j) {
      double dot = 0.0;
      for (int64_t d = 0; d < s.hd; ++d) dot += double(query[h * s.hd + d]) * kd[slots[j] * row + (h / group) * s.hd + d];
      w[j] = dot;
      top = std::max(top, dot);
    }
    double total = 0.0;
    for (int64_t j = 0; j < s.valid; ++j) total += (w[j] = std::exp(w[j] - top));
    for (int64_t j = 0; j < s.valid; ++j)
      for (int64_t d = 0; d < s.hd; ++d)
        want[h * s.hd + d] += w[j] / total * vd[slots[j] * row + (h / group) * s.hd + d];
  }
  for (double x : want) biggest = std::max(biggest, std::fabs(x));
  double err_native = 0.0, err_portable = 0.0, err_between = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    err_native = std::max(err_native, std::fabs(native[i] - want[i]));
    err_portable = std::max(err_portable, std::fabs(portable[i] - want[i]));
    err_between = std::max(err_between, std::fabs(double(native[i]) - portable[i]));
  }
  const double scale = biggest > 0.0 ? biggest : 1.0;
  const bool ok = err_native / scale < 2e-5 && err_portable / scale < 2e-5 && err_between / scale < 2e-5 &&
                  (s.valid > 0 || biggest == 0.0) && (s.valid > 0 || err_native == 0.0);
  std::printf("%-8s H=%ld Hkv=%ld hd=%ld L=%ld valid=%ld spread=%.3g: native %.2e portable %.2e between %.2e %s\n",
              type_name<E>(), long(s.heads), long(s.kv_heads), long(s.hd), long(s.length), long(s.valid), s.spread,
              err_native / scale, err_portable / scale, err_between / scale, ok ? "ok" : "FAIL");
  return ok;
}

bool check_exp() {
  double worst = 0.0;
  bool ok = true;
  for (int i = 0; i <= 90000; ++i) {
    const float x = -90.f + i * 0.001f;
    float in[64], out[64];
    for (int t = 0; t < 64; ++t) in[t] = x;
    using Isa = herd_attention::Native;
    for (int t = 0; t + Isa::W <= 64; t += Isa::W) Isa::store(out + t, Isa::exp(Isa::load(in + t)));
    const double want = x < herd_attention::kExpMin ? 0.0 : std::exp(double(x));
    const double got = out[0];
    if (want == 0.0) {
      ok = ok && got == 0.0;
    } else {
      worst = std::max(worst, std::fabs(got - want) / want);
    }
    const double portable = herd_attention::Portable::exp(x);
    ok = ok && (want == 0.0 ? portable == 0.0 : std::fabs(portable - want) / want < 1e-6);
  }
  ok = ok && worst < 1e-6 && herd_attention::Portable::exp(-INFINITY) == 0.f;
  std::printf("exp over [-90, 0]: max relative error %.2e %s\n", worst, ok ? "ok" : "FAIL");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = herd_attention::path();
  std::printf("path %s\n", path.c_str());
  if (argc > 1 && path != argv[1]) {
    std::printf("FAIL: built path %s, expected %s\n", path.c_str(), argv[1]);
    return 1;
  }
  std::mt19937 gen(1234);
  const Shape shapes[] = {
      {9, 3, 64, 70, 70, 0.125f},   {9, 3, 64, 70, 33, 0.125f}, {4, 4, 72, 37, 37, 0.3f},  {32, 8, 128, 129, 100, 0.1f},
      {8, 2, 40, 5, 1, 0.2f},       {4, 1, 80, 300, 299, 2.f},  {6, 3, 64, 17, 0, 0.1f},   {2, 2, 20, 13, 13, 1.f},
  };
  bool ok = check_exp();
  for (const Shape& s : shapes) {
    ok = check<float>(s, gen) && ok;
    ok = check<bf16_bits>(s, gen) && ok;
    ok = check<f16_bits>(s, gen) && ok;
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
