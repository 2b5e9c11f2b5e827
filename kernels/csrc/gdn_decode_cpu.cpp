// GDN decode step on CPU: causal conv update, gating, l2norm, one gated-delta-rule step and the gated RMSNorm
// readout, with both caches updated in place. Registered as torch.ops.qwen3next_cpu.*; the CPU implementations of
// the qwen3next ops call these where the extension is built (kernels/cpu_ext.py), else their PyTorch forms.
//
// B = sequences of a decode batch, S = state slots, D = conv channels (q | k | v: 2 H K + HV V), W = conv width,
// L = conv state length (>= W - 1), H = key heads, HV = value heads (value head j reads key head j / (HV / H)),
// K = key head dim, V = value head dim. Index tensors are int32; slot -1 skips the sequence (outputs zeros).
// Activations fp32 or bf16, caches fp32 or bf16 (each keeps its dtype); math in fp32, with the roundings of the
// PyTorch composition (conv output and recurrence output rounded to the activation dtype).
//
// Recurrence per (sequence, value head), from the old state S [K, V], reading S once for both products:
//   v_new = beta (v - exp(g) S^T k),   o = exp(g) S^T q + (q . k) v_new,   S <- exp(g) S + k v_new^T.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using bf16_t = uint16_t;  // bf16 bits, converted by hand so that the loops vectorise

inline float as_float(uint32_t u) { return __builtin_bit_cast(float, u); }
inline uint32_t as_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
// f rounded to bf16 (nearest even, NaN kept), as fp32 bits
inline uint32_t bf16_round_bits(float f) {
  const uint32_t u = as_bits(f);
  return (u & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

inline float ld(const float* p, int64_t i) { return p[i]; }
inline float ld(const bf16_t* p, int64_t i) { return as_float(static_cast<uint32_t>(p[i]) << 16); }
inline void st(float* p, int64_t i, float f) { p[i] = f; }
inline void st(bf16_t* p, int64_t i, float f) { p[i] = static_cast<bf16_t>(bf16_round_bits(f) >> 16); }
// f rounded to T's precision (T given by a null pointer of that type)
inline float round_as(const float*, float f) { return f; }
inline float round_as(const bf16_t*, float f) { return as_float(bf16_round_bits(f)); }

// exp in a form the compiler vectorises (libm's expf is a scalar call): 2^n exp(r), n = round(x log2 e),
// r = x - n ln 2 in two parts, exp(r) by Cephes' degree-6 polynomial; within 2 ulp of expf over the clamped range.
__attribute__((always_inline)) inline float vexp(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.f;
  return e * as_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }  // beta 1, threshold 20
__attribute__((always_inline)) inline float silu(float x) { return x / (1.f + vexp(-x)); }

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

// A small parameter tensor as fp32 values, in its logical (row-major) order.
std::vector<float> floats(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  if (c.scalar_type() != at::kFloat && c.scalar_type() != at::kBFloat16) c = c.to(at::kFloat);
  std::vector<float> out(c.numel());
  for (int64_t i = 0; i < c.numel(); ++i) out[i] = is_bf16(c) ? ld(ptr<bf16_t>(c), i) : ptr<float>(c)[i];
  return out;
}

#define DISPATCH_BF16_FLOAT(IS_BF16, T, ...) \
  [&] {                                      \
    if (IS_BF16) {                           \
      using T = bf16_t;                      \
      return __VA_ARGS__();                  \
    } else {                                 \
      using T = float;                       \
      return __VA_ARGS__();                  \
    }                                        \
  }()

void check_index(const at::Tensor& t, int64_t n, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kInt && t.dim() == 1 && t.size(0) == n && t.is_contiguous(), name,
              " must be a contiguous int32 [", n, "] tensor");
}

void check_float_or_bf16(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, name, " must be fp32 or bf16");
}

// --- the pieces ---------------------------------------------------------------------------------------------------

// A depthwise conv's parameters: weight [D, W] and bias [D] (or none), read in place, fp32 or bf16.
template <typename w_t>
struct Conv {
  const w_t* weight;
  const w_t* bias;
  int64_t D, W;
};

// One sequence: out[d] = act(sum_w weight[d, w] * window[w, d] + bias[d]) rounded to in_t, window = the last W - 1
// state rows then x; then the state shifts up one row and x becomes row L - 1. The state's channel stride is 1
// (UNIT_D) or any (a [S, D, L] cache seen as [S, L, D]); WC is W when known at compile time (4), else 0. The flags
// are template parameters so that the channel loop has no branch and vectorises.
template <int WC, bool UNIT_D, bool SILU, bool BIAS, typename in_t, typename conv_t, typename w_t>
inline void conv_update_row(const in_t* __restrict__ x, const Conv<w_t>& c, conv_t* __restrict__ state,
                            int64_t s_row, int64_t s_d_, int64_t L, float* __restrict__ out) {
  const int64_t s_d = UNIT_D ? 1 : s_d_, D = c.D, W = WC ? WC : c.W;
  const w_t* __restrict__ weight = c.weight;
  const w_t* __restrict__ bias = c.bias;
  const conv_t* win = state + (L - (W - 1)) * s_row;
  const in_t* as_in = nullptr;
  for (int64_t d = 0; d < D; ++d) {
    float y = BIAS ? ld(bias, d) : 0.f;
    for (int64_t w = 0; w < W - 1; ++w) y += ld(weight, d * W + w) * ld(win + w * s_row, d * s_d);
    y += ld(weight, d * W + W - 1) * ld(x, d);
    out[d] = round_as(as_in, SILU ? silu(y) : y);
  }
  for (int64_t r = 0; r + 1 < L; ++r)
    for (int64_t d = 0; d < D; ++d) st(state + r * s_row, d * s_d, ld(state + (r + 1) * s_row, d * s_d));
  for (int64_t d = 0; d < D; ++d) st(state + (L - 1) * s_row, d * s_d, ld(x, d));
}

template <bool SILU, bool BIAS, typename in_t, typename conv_t, typename w_t>
inline void conv_update_row(const in_t* x, const Conv<w_t>& c, conv_t* state, int64_t s_row, int64_t s_d, int64_t L,
                            float* out) {
  if (c.W == 4 && s_d == 1)
    conv_update_row<4, true, SILU, BIAS>(x, c, state, s_row, 1, L, out);
  else
    conv_update_row<0, false, SILU, BIAS>(x, c, state, s_row, s_d, L, out);
}

template <typename in_t, typename conv_t, typename w_t>
inline void conv_update_row(const in_t* x, const Conv<w_t>& c, conv_t* state, int64_t s_row, int64_t s_d, int64_t L,
                            bool act_silu, float* out) {
  if (act_silu)
    c.bias ? conv_update_row<true, true>(x, c, state, s_row, s_d, L, out)
           : conv_update_row<true, false>(x, c, state, s_row, s_d, L, out);
  else
    c.bias ? conv_update_row<false, true>(x, c, state, s_row, s_d, L, out)
           : conv_update_row<false, false>(x, c, state, s_row, s_d, L, out);
}

// x (n values) l2-normalised (fla's x * rsqrt(sum x^2 + 1e-6)) when l2norm, times scale, into out.
template <typename in_t>
inline void load_head(const in_t* __restrict__ x, int64_t n, bool l2norm, float scale, float* __restrict__ out) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = ld(x, i);
    ss += out[i] * out[i];
  }
  const float f = (l2norm ? 1.f / std::sqrt(ss + 1e-6f) : 1.f) * scale;
  for (int64_t i = 0; i < n; ++i) out[i] *= f;
}

// One value head: o [V] and the state S [K, V] (row stride stride_k) updated in place. sk, sq: [V] scratch.
template <typename state_t>
inline void recurrent_head(state_t* __restrict__ S, int64_t K, int64_t V, int64_t stride_k,
                           const float* __restrict__ qn, const float* __restrict__ kn, const float* __restrict__ v,
                           float decay, float beta, float* __restrict__ sk, float* __restrict__ sq,
                           float* __restrict__ o) {
  for (int64_t j = 0; j < V; ++j) sk[j] = sq[j] = 0.f;
  float qk = 0.f;
  for (int64_t i = 0; i < K; ++i) {
    const state_t* row = S + i * stride_k;
    const float ki = kn[i], qi = qn[i];
    qk += qi * ki;
    for (int64_t j = 0; j < V; ++j) {
      const float s = ld(row, j);
      sk[j] += s * ki;
      sq[j] += s * qi;
    }
  }
  for (int64_t j = 0; j < V; ++j) {
    const float vn = beta * (v[j] - decay * sk[j]);
    o[j] = decay * sq[j] + qk * vn;
    sk[j] = vn;  // sk now holds v_new
  }
  for (int64_t i = 0; i < K; ++i) {
    state_t* row = S + i * stride_k;
    const float ki = kn[i];
    for (int64_t j = 0; j < V; ++j) st(row, j, ld(row, j) * decay + ki * sk[j]);
  }
}

// As transformers' Qwen3NextRMSNormGated on o (already rounded to in_t): h = o * rsqrt(mean(o^2) + eps) rounded to
// in_t; w * h rounded to in_t when both are bf16; times silu(z), rounded to in_t into out.
template <bool ROUND_WH, typename in_t>
inline void gated_norm_head(const float* __restrict__ o, const in_t* __restrict__ z, const float* __restrict__ w,
                            float eps, int64_t V, in_t* __restrict__ out) {
  const in_t* as_in = nullptr;
  const bf16_t* as_bf16 = nullptr;
  float ss = 0.f;
  for (int64_t j = 0; j < V; ++j) ss += o[j] * o[j];
  const float r = 1.f / std::sqrt(ss / V + eps);
  for (int64_t j = 0; j < V; ++j) {
    const float wh = w[j] * round_as(as_in, o[j] * r);
    st(out, j, (ROUND_WH ? round_as(as_bf16, wh) : wh) * silu(ld(z, j)));
  }
}

struct Heads {
  int64_t H, HV, K, V;
};

struct Rows {  // a [B, heads, n] operand: element (b, h, i) at p + b * sb + h * sh + i
  int64_t sb, sh;
};

struct Norm {  // the gated RMSNorm readout, when fused
  const void* z;
  Rows zr;
  std::vector<float> w;
  bool round_wh;
  float eps;
};

// The recurrence over every (b, hv): q, k rows of [B, H, K], v of [B, HV, V]; g, beta [B, HV] fp32.
// Writes o [B, HV, V] (out_t), through the gated norm when norm is given.
template <typename in_t, typename state_t, typename out_t>
void recurrent_step(const in_t* q, Rows qr, const in_t* k, Rows kr, const in_t* v, Rows vr, const float* g,
                    const float* beta, int64_t B, Heads h, float scale, state_t* states, int64_t s_slot,
                    int64_t s_head, int64_t s_k, const int32_t* slots, bool l2norm, const Norm* norm, out_t* o) {
  const int64_t G = h.HV / h.H;
  at::parallel_for(0, B * h.HV, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(2 * h.K + 4 * h.V);
    float *qn = buf.data(), *kn = qn + h.K, *vf = kn + h.K, *sk = vf + h.V, *sq = sk + h.V, *of = sq + h.V;
    const out_t* as_out = nullptr;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / h.HV, hv = bh % h.HV, hk = hv / G;
      out_t* out = o + bh * h.V;
      const int32_t slot = slots[b];
      if (slot < 0) {
        for (int64_t j = 0; j < h.V; ++j) st(out, j, 0.f);
        continue;
      }
      load_head(q + b * qr.sb + hk * qr.sh, h.K, l2norm, scale, qn);
      load_head(k + b * kr.sb + hk * kr.sh, h.K, l2norm, 1.f, kn);
      const in_t* vb = v + b * vr.sb + hv * vr.sh;
      for (int64_t j = 0; j < h.V; ++j) vf[j] = ld(vb, j);
      recurrent_head(states + slot * s_slot + hv * s_head, h.K, h.V, s_k, qn, kn, vf, std::exp(g[bh]), beta[bh],
                     sk, sq, of);
      if (norm == nullptr) {
        for (int64_t j = 0; j < h.V; ++j) st(out, j, of[j]);
        continue;
      }
      for (int64_t j = 0; j < h.V; ++j) of[j] = round_as(as_out, of[j]);
      const out_t* z = static_cast<const out_t*>(norm->z) + b * norm->zr.sb + hv * norm->zr.sh;
      if (norm->round_wh)
        gated_norm_head<true>(of, z, norm->w.data(), norm->eps, h.V, out);
      else
        gated_norm_head<false>(of, z, norm->w.data(), norm->eps, h.V, out);
    }
  });
}

// g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b), fp32 [B, HV]; a, b: rows of [B, HV].
template <typename in_t>
void gating(const in_t* a, int64_t a_sb, const in_t* b, int64_t b_sb, const std::vector<float>& A_log,
            const std::vector<float>& dt_bias, int64_t B, int64_t HV, float* g, float* beta) {
  for (int64_t i = 0; i < B; ++i)
    for (int64_t hv = 0; hv < HV; ++hv) {
      g[i * HV + hv] = -std::exp(A_log[hv]) * softplus(ld(a + i * a_sb, hv) + dt_bias[hv]);
      beta[i * HV + hv] = 1.f / (1.f + std::exp(-ld(b + i * b_sb, hv)));
    }
}

// --- ops ----------------------------------------------------------------------------------------------------------

// x [B, D] (unit channel stride), weight [D, W], conv_states [S, L, D] (mutated), cache_indices [B] -> out [B, D].
at::Tensor causal_conv1d_update(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                at::Tensor conv_states, const at::Tensor& cache_indices, bool act_silu) {
  const int64_t B = x.size(0), D = x.size(1), L = conv_states.size(1);
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1 && weight.dim() == 2 && weight.size(0) == D && weight.is_contiguous());
  TORCH_CHECK(conv_states.dim() == 3 && conv_states.size(2) == D && L >= weight.size(1) - 1);
  TORCH_CHECK(!bias.has_value() || (bias->numel() == D && bias->is_contiguous() &&
                                    bias->scalar_type() == weight.scalar_type()), "bias: [D], the weight's dtype");
  check_float_or_bf16(x, "x");
  check_float_or_bf16(weight, "weight");
  check_float_or_bf16(conv_states, "conv_states");
  check_index(cache_indices, B, "cache_indices");
  at::Tensor out = at::empty({B, D}, x.options());
  const int32_t* slots = cache_indices.data_ptr<int32_t>();
  DISPATCH_BF16_FLOAT(is_bf16(x), in_t, [&] {
    DISPATCH_BF16_FLOAT(is_bf16(conv_states), conv_t, [&] {
      DISPATCH_BF16_FLOAT(is_bf16(weight), w_t, [&] {
        const Conv<w_t> c{ptr<w_t>(weight), bias.has_value() ? ptr<w_t>(*bias) : nullptr, D, weight.size(1)};
        at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
          std::vector<float> y(D);
          for (int64_t i = begin; i < end; ++i) {
            in_t* o = ptr<in_t>(out) + i * D;
            if (slots[i] >= 0)
              conv_update_row(ptr<in_t>(x) + i * x.stride(0), c, ptr<conv_t>(conv_states) +
                              slots[i] * conv_states.stride(0), conv_states.stride(1), conv_states.stride(2), L,
                              act_silu, y.data());
            for (int64_t d = 0; d < D; ++d) st(o, d, slots[i] >= 0 ? y[d] : 0.f);
          }
        });
      });
    });
  });
  return out;
}

// q, k [B, H, K], v [B, HV, V] (unit last stride, one dtype), g, beta [B, HV], ssm_states [S, HV, K, V] (mutated).
at::Tensor fused_recurrent_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& g, const at::Tensor& beta, double scale,
                                            at::Tensor ssm_states, const at::Tensor& state_indices, bool l2norm) {
  const int64_t B = q.size(0);
  const Heads h{q.size(1), v.size(1), q.size(2), v.size(2)};
  TORCH_CHECK(q.dim() == 3 && k.sizes() == q.sizes() && v.dim() == 3 && v.size(0) == B && h.HV % h.H == 0);
  TORCH_CHECK(q.stride(2) == 1 && k.stride(2) == 1 && v.stride(2) == 1, "q, k, v need a unit last stride");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "q, k, v: one dtype");
  TORCH_CHECK(ssm_states.dim() == 4 && ssm_states.size(1) == h.HV && ssm_states.size(2) == h.K &&
              ssm_states.size(3) == h.V && ssm_states.stride(3) == 1);
  check_float_or_bf16(q, "q");
  check_float_or_bf16(ssm_states, "ssm_states");
  check_index(state_indices, B, "state_indices");
  at::Tensor g32 = g.to(at::kFloat).contiguous(), b32 = beta.to(at::kFloat).contiguous();
  at::Tensor o = at::empty({B, h.HV, h.V}, v.options());
  DISPATCH_BF16_FLOAT(is_bf16(q), in_t, [&] {
    DISPATCH_BF16_FLOAT(is_bf16(ssm_states), state_t, [&] {
      recurrent_step(ptr<in_t>(q), Rows{q.stride(0), q.stride(1)}, ptr<in_t>(k), Rows{k.stride(0), k.stride(1)},
                     ptr<in_t>(v), Rows{v.stride(0), v.stride(1)}, g32.data_ptr<float>(), b32.data_ptr<float>(), B,
                     h, float(scale), ptr<state_t>(ssm_states), ssm_states.stride(0), ssm_states.stride(1),
                     ssm_states.stride(2), state_indices.data_ptr<int32_t>(), l2norm, nullptr, ptr<in_t>(o));
    });
  });
  return o;
}

// The whole decode step after the projections (the contract of qwen3next::fused_gdn_decode): conv update (SiLU) of
// mixed_qkv [B, D], gating of a, b [B, HV], the recurrence, then the gated RMSNorm with z [B, HV, V].
// Returns out [B, HV, V] in mixed_qkv's dtype.
at::Tensor gdn_decode(const at::Tensor& mixed_qkv, const at::Tensor& z, const at::Tensor& a, const at::Tensor& b,
                      const at::Tensor& conv_weight, const std::optional<at::Tensor>& conv_bias, at::Tensor conv_states,
                      const at::Tensor& A_log, const at::Tensor& dt_bias, const at::Tensor& norm_weight,
                      double norm_eps, double scale, at::Tensor ssm_states, const at::Tensor& state_indices,
                      bool l2norm) {
  const int64_t B = mixed_qkv.size(0), D = mixed_qkv.size(1), L = conv_states.size(1);
  TORCH_CHECK(ssm_states.dim() == 4 && ssm_states.stride(3) == 1);
  const int64_t HV = ssm_states.size(1), K = ssm_states.size(2), V = ssm_states.size(3);
  const Heads h{(D - HV * V) / (2 * K), HV, K, V};
  TORCH_CHECK(mixed_qkv.dim() == 2 && mixed_qkv.stride(1) == 1 && D == 2 * h.H * K + HV * V && HV % h.H == 0);
  TORCH_CHECK(conv_weight.dim() == 2 && conv_weight.size(0) == D && conv_weight.is_contiguous() &&
              conv_states.dim() == 3 && conv_states.size(2) == D && L >= conv_weight.size(1) - 1);
  TORCH_CHECK(!conv_bias.has_value() || (conv_bias->numel() == D && conv_bias->is_contiguous() &&
                                         conv_bias->scalar_type() == conv_weight.scalar_type()));
  TORCH_CHECK(a.dim() == 2 && a.size(0) == B && a.size(1) == HV && a.stride(1) == 1);
  TORCH_CHECK(b.sizes() == a.sizes() && b.stride(1) == 1);
  TORCH_CHECK(z.dim() == 3 && z.size(0) == B && z.size(1) == HV && z.size(2) == V && z.stride(2) == 1);
  TORCH_CHECK(a.scalar_type() == mixed_qkv.scalar_type() && b.scalar_type() == mixed_qkv.scalar_type() &&
              z.scalar_type() == mixed_qkv.scalar_type(), "mixed_qkv, z, a, b: one dtype");
  TORCH_CHECK(norm_weight.numel() == V);
  check_float_or_bf16(mixed_qkv, "mixed_qkv");
  check_float_or_bf16(conv_weight, "conv_weight");
  check_float_or_bf16(conv_states, "conv_states");
  check_float_or_bf16(ssm_states, "ssm_states");
  check_index(state_indices, B, "state_indices");
  const Norm norm{z.data_ptr(), Rows{z.stride(0), z.stride(1)}, floats(norm_weight),
                  is_bf16(mixed_qkv) && is_bf16(norm_weight), float(norm_eps)};
  const std::vector<float> A = floats(A_log), dt = floats(dt_bias);
  const int32_t* slots = state_indices.data_ptr<int32_t>();
  std::vector<float> g(B * HV), beta(B * HV), x(B * D);  // x: the conv output, rounded to the activation dtype
  at::Tensor out = at::empty({B, HV, V}, mixed_qkv.options());
  DISPATCH_BF16_FLOAT(is_bf16(mixed_qkv), in_t, [&] {
    gating(ptr<in_t>(a), a.stride(0), ptr<in_t>(b), b.stride(0), A, dt, B, HV, g.data(), beta.data());
    DISPATCH_BF16_FLOAT(is_bf16(conv_states), conv_t, [&] {
      DISPATCH_BF16_FLOAT(is_bf16(conv_weight), w_t, [&] {
        const Conv<w_t> c{ptr<w_t>(conv_weight), conv_bias.has_value() ? ptr<w_t>(*conv_bias) : nullptr, D,
                          conv_weight.size(1)};
        at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i)
            if (slots[i] >= 0)
              conv_update_row(ptr<in_t>(mixed_qkv) + i * mixed_qkv.stride(0), c, ptr<conv_t>(conv_states) +
                              slots[i] * conv_states.stride(0), conv_states.stride(1), conv_states.stride(2), L,
                              true, x.data() + i * D);
        });
      });
    });
    DISPATCH_BF16_FLOAT(is_bf16(ssm_states), state_t, [&] {
      const float* xp = x.data();
      const int64_t HK = h.H * K;
      recurrent_step(xp, Rows{D, K}, xp + HK, Rows{D, K}, xp + 2 * HK, Rows{D, V}, g.data(), beta.data(), B, h,
                     float(scale), ptr<state_t>(ssm_states), ssm_states.stride(0), ssm_states.stride(1),
                     ssm_states.stride(2), slots, l2norm, &norm, ptr<in_t>(out));
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(qwen3next_cpu, m) {
  m.def("causal_conv1d_update(Tensor x, Tensor weight, Tensor? bias, Tensor(a!) conv_states, Tensor cache_indices, "
        "bool silu) -> Tensor");
  m.def("fused_recurrent_gated_delta_rule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float scale, "
        "Tensor(a!) ssm_states, Tensor state_indices, bool l2norm) -> Tensor");
  m.def("gdn_decode(Tensor mixed_qkv, Tensor z, Tensor a, Tensor b, Tensor conv_weight, Tensor? conv_bias, "
        "Tensor(a!) conv_states, Tensor A_log, Tensor dt_bias, Tensor norm_weight, float norm_eps, float scale, "
        "Tensor(b!) ssm_states, Tensor state_indices, bool l2norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(qwen3next_cpu, CPU, m) {
  m.impl("causal_conv1d_update", &causal_conv1d_update);
  m.impl("fused_recurrent_gated_delta_rule", &fused_recurrent_gated_delta_rule);
  m.impl("gdn_decode", &gdn_decode);
}
