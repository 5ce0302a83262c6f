// IEEE half bits -> float, exact (every half is a float), without c10::Half so the torch-free kernel
// cores (int4_core.h, attention_core.h) stand alone: the same bit trick as c10's
// fp16_ieee_to_fp32_value (from Marat Dukhan's FP16 library).
#pragma once

#include <cstdint>
#include <cstring>

namespace herd_kernels_common {

inline float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  uint32_t bits = (two_w >> 4) + exp_offset;
  float normalized;
  std::memcpy(&normalized, &bits, sizeof bits);
  normalized *= 0x1.0p-112f;
  bits = (two_w >> 17) | (126u << 23);
  float denormalized;
  std::memcpy(&denormalized, &bits, sizeof bits);
  denormalized -= 0.5f;
  const float magnitude = two_w < (1u << 27) ? denormalized : normalized;
  uint32_t result;
  std::memcpy(&result, &magnitude, sizeof result);
  result |= sign;
  float out;
  std::memcpy(&out, &result, sizeof out);
  return out;
}

// bfloat16 bits -> float: the float's upper 16 bits.
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

}  // namespace herd_kernels_common
