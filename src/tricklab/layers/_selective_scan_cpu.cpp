// Fused selective scan (Mamba's S6 layer core) for the CPU: forward and a recomputing backward.
//
// Built on first use by tricklab/layers/_scan_kernel.py with torch.utils.cpp_extension (no Python headers: the
// ops are registered with the dispatcher and loaded with torch.ops.load_library). Everything of
// tricklab.layers.ssm.selective_scan happens here, per (batch, channel) row:
//
//   delta_t = softplus(delta_raw_t + delta_bias)          (optional bias; softplus as torch's, threshold 20)
//   h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t       (per channel: A (N,), h (N,); eq. 2a and 4)
//   y_t = C_t . h_t + D u_t                                (eq. 2b and the skip)
//   out_t = y_t * silu(z_t)                                (optional gate)
//
// Shapes: u, delta_raw, z, out (Bt, D, L); A (D, N); B, C (Bt, N, L) selective or (D, N) time-invariant;
// D, delta_bias (D,); h0, h_last (Bt, D, N).
// Work is split over the Bt * D independent rows with at::parallel_for (OpenMP in torch's CPU builds, so
// torch.set_num_threads applies). Within a row, one pass over time keeps the N states in vector registers: the
// state index n is the vector lane (GCC vector extensions, 64-byte vectors = 16 float / 8 double lanes, lowered
// to AVX-512, AVX2 or SSE by -march=native). N is padded with zeros to a whole number of vectors (padded lanes
// have A = B = C = 0: decay 1, no input, no output), and B_t, C_t are transposed once to padded (Bt, L, Np) rows
// so that each step loads whole vectors. The O(L) per-row work (softplus, skip, gate) is vectorised over t.
//
// Backward (reverse time). With G_t = dLoss/dh_t (total), a_t = exp(delta_t A), g_t = dLoss/dy_t:
//   G_t = g_t C_t + a_{t+1} * G_{t+1}            (G_L = g_L C_L + dh_last)
//   dC_t += g_t h_t;  dB_t += G_t delta_t u_t;   s_t = sum_n G_t B_t
//   d(delta_t A)_n = G_t h_{t-1} a_t  ->  ddelta_t = sum_n d(.)_n A_n + s_t u_t,  dA += d(.) delta_t
//   du_t = s_t delta_t + g_t D;  dD += g_t u_t;  dh0 = a_1 * G_1
//   gate: g_t = dout_t silu(z_t), dz_t = dout_t y_t sigma(z_t) (1 + z_t (1 - sigma(z_t)))
//   softplus: ddelta_raw_t = ddelta_t sigma(delta_raw_t + bias) (1 above the threshold), dbias += ddelta_raw_t
// The forward saves the state entering every chunk of T steps (Bt, D, ceil(L/T), Np) and, with a gate, y before
// the gate (Bt, D, L); the backward recomputes the T states and decays of one chunk into a per-thread buffer
// (2 T Np numbers) and walks it backwards, so memory is O(L/T + T) * N per row instead of O(L N).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace {

constexpr int kVecBytes = 64;

template <typename T> struct Vec;
template <> struct Vec<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef int32_t VI __attribute__((vector_size(kVecBytes)));
  static constexpr int W = kVecBytes / 4;
  // exp constants (see vexp)
  static constexpr float lo = -87.3f, hi = 88.3f, magic = 12582912.0f;  // 1.5 * 2^23
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int mant = 23, bias = 127, order = 7;
  static constexpr float inv_fact[8] = {1.f, 1.f, 1.f / 2, 1.f / 6, 1.f / 24, 1.f / 120, 1.f / 720, 1.f / 5040};
};
template <> struct Vec<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef int64_t VI __attribute__((vector_size(kVecBytes)));
  static constexpr int W = kVecBytes / 8;
  static constexpr double lo = -708.3, hi = 709.0, magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93145751953125e-1, ln2_lo = 1.42860682030941723212e-6;
  static constexpr int mant = 52, bias = 1023, order = 13;
  static constexpr double inv_fact[14] = {1., 1., 1. / 2, 1. / 6, 1. / 24, 1. / 120, 1. / 720, 1. / 5040,
                                          1. / 40320, 1. / 362880, 1. / 3628800, 1. / 39916800, 1. / 479001600,
                                          1. / 6227020800.};
};

template <typename T> using V = typename Vec<T>::V;

template <typename T>
inline V<T> splat(T x) {
  return V<T>{} + x;
}

template <typename T>
inline V<T> load(const T* p) {
  V<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, V<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// Sum of the lanes as a tree of whole-vector adds (log2 W shuffles) rather than W - 1 dependent scalar adds.
static_assert(kVecBytes == 64, "hsum's shuffles are written for 16 float / 8 double lanes");
inline float hsum(V<float> v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v[0];
}

inline double hsum(V<double> v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}

// exp(x) = 2^k exp(r), k = round(x / ln2) (the add-and-subtract-1.5*2^p trick rounds to nearest), r = x - k ln2
// with ln2 split Cody-Waite style into a high part with few bits (k * ln2_hi exact) and a low part, |r| <= ln2/2;
// exp(r) by its Taylor series in Horner form (coefficients 1/j!), whose truncation error |r|^(m+1)/(m+1)! is
// below the type's epsilon (float m = 7: 5e-9; double m = 13: 4e-18). 2^k is built in the exponent bits. Below
// the smallest normal result it returns 0 (absolute error < 1.2e-38 / 2.3e-308), above the largest inf; NaN
// stays NaN.
template <typename T>
inline V<T> vexp(V<T> x) {
  using C = Vec<T>;
  using VI = typename C::VI;
  const V<T> lo = splat<T>(C::lo), hi = splat<T>(C::hi);
  const V<T> xc = x < lo ? lo : (x > hi ? hi : x);
  V<T> k = xc * T(1.4426950408889634) + C::magic;
  k = k - C::magic;
  const V<T> r = (xc - k * C::ln2_hi) - k * C::ln2_lo;
  V<T> p = splat<T>(C::inv_fact[C::order]);
  for (int j = C::order - 1; j >= 0; --j) p = p * r + C::inv_fact[j];  // sum_j r^j / j!, Horner
  const VI bits = (__builtin_convertvector(k, VI) + C::bias) << C::mant;
  V<T> out = p * (V<T>)bits;  // a cast between equal-size vector types keeps the bits: 2^k
  // (a NaN x gives a NaN r, hence a NaN p and result, without a test of its own)
  out = x < lo ? V<T>{} : out;
  return x > hi ? splat<T>(std::numeric_limits<T>::infinity()) : out;
}

// log(1 + e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) in [0, 1/3]: 2 sum_j s^(2j+1) / (2j+1), truncated
// where (1/3)^(2m+2) / (2m+3) is below the type's epsilon (float m = 7, double m = 16).
template <typename T>
inline V<T> vlog1p_unit(V<T> e) {
  constexpr int m = sizeof(T) == 4 ? 7 : 16;
  const V<T> s = e / (T(2) + e), s2 = s * s;
  V<T> q = splat<T>(T(1) / T(2 * m + 1));
  for (int j = m - 1; j >= 0; --j) q = q * s2 + T(1) / T(2 * j + 1);
  return T(2) * s * q;
}

constexpr double kSoftplusThreshold = 20.0;  // torch's F.softplus default: x > 20 returns x

// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), and x itself above the threshold, as torch computes it.
template <typename T>
inline V<T> vsoftplus(V<T> x) {
  const V<T> ax = x < T(0) ? -x : x;
  const V<T> sp = (x > T(0) ? x : V<T>{}) + vlog1p_unit<T>(vexp<T>(-ax));
  return x > T(kSoftplusThreshold) ? x : sp;
}

// sigma(x) = 1 / (1 + e^-x); e^-x overflows to inf for x < -88 (float), giving 0 as it should.
template <typename T>
inline V<T> vsigmoid(V<T> x) {
  return T(1) / (T(1) + vexp<T>(-x));
}

// Load / store the first cnt <= W lanes (the tail of a row), the other lanes read as zero.
template <typename T>
inline V<T> loadn(const T* p, int64_t cnt) {
  if (cnt == Vec<T>::W) return load(p);
  T lane[Vec<T>::W] = {};
  std::copy(p, p + cnt, lane);
  return load(lane);
}

template <typename T>
inline void storen(T* p, V<T> v, int64_t cnt) {
  if (cnt == Vec<T>::W) return store(p, v);
  T lane[Vec<T>::W];
  store(lane, v);
  std::copy(lane, lane + cnt, p);
}

// ------------------------------------------------------------------------------------------------- one (b, d) row
// A row's loop-carried vectors (the state h; in the backward also G and the dA, dB, dC sums). NV > 0 fixes their
// number at compile time (1 for N <= 16 float / N <= 8 double) so they live in registers: carried through memory,
// every step would wait on a store-to-load forward. NV = 0: a run-time count nv, kept in scratch memory.
template <typename T, int NV>
struct Regs {
  V<T> v[NV];
  Regs(V<T>* /*scratch*/, int64_t /*nv*/) {}
  V<T>& operator[](int64_t i) { return v[i]; }
};
template <typename T>
struct Regs<T, 0> {
  V<T>* v;
  Regs(V<T>* scratch, int64_t /*nv*/) : v(scratch) {}
  V<T>& operator[](int64_t i) { return v[i]; }
};

// Copy n numbers into zero-padded vectors / vectors back into n numbers.
template <typename T, typename R>
void to_regs(R& r, const T* src, int64_t n, int64_t nv) {
  constexpr int W = Vec<T>::W;
  for (int64_t i = 0; i < nv; ++i) {
    T lane[W] = {};
    for (int64_t l = 0; l < W && i * W + l < n; ++l) lane[l] = src[i * W + l];
    r[i] = load(lane);
  }
}
template <typename T, typename R>
void from_regs(R& r, T* dst, int64_t n, int64_t nv) {
  constexpr int W = Vec<T>::W;
  for (int64_t i = 0; i < nv; ++i) {
    T lane[W];
    store(lane, r[i]);
    for (int64_t l = 0; l < W && i * W + l < n; ++l) dst[i * W + l] = lane[l];
  }
}

// Forward of one row. Pointers: u, dl, y (L,); A (Np,); B / C step rows with strides bs / cs (Np selective, 0
// time-invariant); h0, hlast (N,) unpadded; ckpt (K, Np) or null; scratch: nv vectors.
template <typename T, int NV>
void forward_row(int64_t L, int64_t n, int64_t nv_rt, int64_t chunk, const T* u, const T* dl, const T* A,
                 const T* Bp, int64_t bs, const T* Cp, int64_t cs, const T* h0, T* y, T* hlast, T* ckpt,
                 V<T>* scratch) {
  constexpr int W = Vec<T>::W;
  const int64_t nv = NV > 0 ? NV : nv_rt, np = nv * W;
  Regs<T, NV> h(scratch, nv);
  to_regs(h, h0, n, nv);
  for (int64_t c0 = 0; c0 < L; c0 += chunk) {
    if (ckpt != nullptr)
      for (int64_t i = 0; i < nv; ++i) store(ckpt + (c0 / chunk) * np + i * W, h[i]);
    const int64_t c1 = std::min(c0 + chunk, L);
    for (int64_t t = c0; t < c1; ++t) {
      const T d = dl[t], du = d * u[t];
      const T* b = Bp + t * bs;
      const T* c = Cp + t * cs;
      V<T> acc{};
      for (int64_t i = 0; i < nv; ++i) {
        h[i] = vexp<T>(d * load(A + i * W)) * h[i] + du * load(b + i * W);
        acc += h[i] * load(c + i * W);
      }
      y[t] = hsum(acc);
    }
  }
  from_regs(h, hlast, n, nv);
}

// Backward of one row. dBr / dCr: selective -> the row's (L, Np) block of a per-thread (Bt, L, Np) accumulator,
// added to; time-invariant -> the row's (Np,) output. dAr (Np,) and dh0 (N,) outputs; dhl (N,) input.
// hb ((T+1) Np) and ab (T Np) hold one chunk's recomputed states and decays; scratch: 4 nv vectors.
template <typename T, int NV, bool BSEL, bool CSEL>
void backward_row(int64_t L, int64_t n, int64_t nv_rt, int64_t chunk, const T* u, const T* dl, const T* A,
                  const T* Bp, const T* Cp, const T* ckpt, const T* dy, const T* dhl, T* du_out, T* dd_out, T* dAr,
                  T* dBr, T* dCr, T* dh0, T* hb, T* ab, V<T>* scratch) {
  constexpr int W = Vec<T>::W;
  const int64_t nv = NV > 0 ? NV : nv_rt, np = nv * W;
  const int64_t bs = BSEL ? np : 0, cs = CSEL ? np : 0;
  Regs<T, NV> G(scratch, nv), dA(scratch + nv, nv), dBl(scratch + 2 * nv, nv), dCl(scratch + 3 * nv, nv);
  to_regs(G, dhl, n, nv);
  for (int64_t i = 0; i < nv; ++i) dA[i] = V<T>{}, dBl[i] = V<T>{}, dCl[i] = V<T>{};
  const int64_t K = (L + chunk - 1) / chunk;
  for (int64_t k = K - 1; k >= 0; --k) {
    const int64_t t0 = k * chunk, nt = std::min(chunk, L - t0);
    // recompute the chunk: hb[j + 1] = h_{t0 + j}, hb[0] = the saved entering state; ab[j] = a_{t0 + j}
    std::copy(ckpt + k * np, ckpt + (k + 1) * np, hb);
    for (int64_t i = 0; i < nv; ++i) {
      V<T> h = load(hb + i * W);
      const V<T> Ai = load(A + i * W);
      for (int64_t j = 0; j < nt; ++j) {
        const int64_t t = t0 + j;
        const T d = dl[t];
        const V<T> a = vexp<T>(d * Ai);
        h = a * h + (d * u[t]) * load(Bp + t * bs + i * W);
        store(ab + j * np + i * W, a);
        store(hb + (j + 1) * np + i * W, h);
      }
    }
    for (int64_t j = nt - 1; j >= 0; --j) {
      const int64_t t = t0 + j;
      const T d = dl[t], ut = u[t], du = d * ut, gy = dy[t];
      const T* b = Bp + t * bs;
      const T* c = Cp + t * cs;
      V<T> s_dec{}, s_in{};
      for (int64_t i = 0; i < nv; ++i) {
        const int64_t o = i * W;
        const V<T> hc = load(hb + (j + 1) * np + o), hp = load(hb + j * np + o), a = load(ab + j * np + o);
        const V<T> g = G[i] + gy * load(c + o);  // dLoss/dh_t
        const V<T> dz = g * hp * a;              // dLoss/d(delta_t A_n)
        s_dec += dz * load(A + o);
        dA[i] += dz * d;
        s_in += g * load(b + o);
        if constexpr (CSEL) store(dCr + t * np + o, load(dCr + t * np + o) + gy * hc);
        else dCl[i] += gy * hc;
        if constexpr (BSEL) store(dBr + t * np + o, load(dBr + t * np + o) + g * du);
        else dBl[i] += g * du;
        G[i] = g * a;  // dLoss/dh_{t-1} through the decay
      }
      const T si = hsum(s_in);
      dd_out[t] = hsum(s_dec) + si * ut;
      du_out[t] = si * d;
    }
  }
  for (int64_t i = 0; i < nv; ++i) {
    store(dAr + i * W, dA[i]);
    if constexpr (!BSEL) store(dBr + i * W, dBl[i]);
    if constexpr (!CSEL) store(dCr + i * W, dCl[i]);
  }
  from_regs(G, dh0, n, nv);
}

// The optional inputs of the layer (D, z, delta bias) as raw pointers into this row, or null.
template <typename T>
struct RowExtras {
  const T* D;     // (D,) or null
  const T* z;     // (Bt, D, L) or null
  const T* bias;  // (D,) or null
  bool softplus;
};

// delta_t for one row into dl (L,): softplus(raw + bias) or raw + bias; sg (optional): softplus'(raw + bias).
template <typename T>
void row_delta(int64_t L, const T* raw, T bias, bool softplus, T* dl, T* sg) {
  constexpr int W = Vec<T>::W;
  for (int64_t t = 0; t < L; t += W) {
    const int64_t cnt = std::min<int64_t>(W, L - t);
    const V<T> x = loadn(raw + t, cnt) + bias;
    storen(dl + t, softplus ? vsoftplus<T>(x) : x, cnt);
    if (sg != nullptr) {
      const V<T> d = softplus ? (x > T(kSoftplusThreshold) ? splat<T>(T(1)) : vsigmoid<T>(x)) : splat<T>(T(1));
      storen(sg + t, d, cnt);
    }
  }
}

void check_inputs(const at::Tensor& u, const at::Tensor& dl, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                  const std::optional<at::Tensor>& bias, const at::Tensor& h) {
  TORCH_CHECK(u.device().is_cpu(), "tricklab fused scan: CPU tensors only, got ", u.device());
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "tricklab fused scan: float32 or float64 only, got ", u.scalar_type());
  std::vector<const at::Tensor*> all = {&dl, &A, &B, &C, &h};
  for (const auto* opt : {&D, &z, &bias})
    if (opt->has_value()) all.push_back(&opt->value());
  for (const at::Tensor* t : all) {
    TORCH_CHECK(t->scalar_type() == u.scalar_type() && t->device() == u.device(),
                "tricklab fused scan: all inputs must share u's dtype and device");
  }
  TORCH_CHECK(u.dim() == 3 && dl.sizes() == u.sizes() && A.dim() == 2 && A.size(0) == u.size(1),
              "tricklab fused scan: u, delta must be (Bt, D, L) and A (D, N)");
  TORCH_CHECK(h.dim() == 3 && h.size(0) == u.size(0) && h.size(1) == u.size(1) && h.size(2) == A.size(1),
              "tricklab fused scan: the state must be (Bt, D, N)");
  for (const at::Tensor* t : {&B, &C}) {
    TORCH_CHECK((t->dim() == 3 && t->size(0) == u.size(0) && t->size(1) == A.size(1) && t->size(2) == u.size(2)) ||
                    (t->dim() == 2 && t->sizes() == A.sizes()),
                "tricklab fused scan: B and C must be (Bt, N, L) or (D, N)");
  }
  for (const auto* opt : {&D, &bias})
    TORCH_CHECK(!opt->has_value() || (opt->value().dim() == 1 && opt->value().size(0) == u.size(1)),
                "tricklab fused scan: D and delta_bias must be (D,)");
  TORCH_CHECK(!z.has_value() || z->sizes() == u.sizes(), "tricklab fused scan: z must have u's shape");
}

int64_t padded(int64_t n, int64_t w) { return (n + w - 1) / w * w; }

// rows of this many state updates or fewer are not worth an OpenMP fork
int64_t grain_for(int64_t L, int64_t np) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, L * np)); }

// A (D, N) -> (D, Np); B or C as contiguous zero-padded step rows: selective (Bt, N, L) -> (Bt, L, Np),
// time-invariant (D, N) -> (D, Np).
at::Tensor pad_states(const at::Tensor& t, int64_t np) {
  const at::Tensor rows = t.dim() == 3 ? t.transpose(1, 2) : t;
  const int64_t n = rows.size(-1);
  return (np == n ? rows : at::constant_pad_nd(rows, {0, np - n}, 0)).contiguous();
}

template <typename T>
const T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor opt_contig(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// Call f(std::integral_constant<int, NV>) with NV = the number of state vectors when it is 1 or 2, else 0 (run time).
template <typename F>
void with_nv(int64_t nv, F&& f) {
  if (nv == 1) f(std::integral_constant<int, 1>{});
  else if (nv == 2) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 0>{});
}

// A (Bt, D, L) tensor with any strides. The Mamba block hands over transposed views of (Bt, L, D) activations,
// whose (b, d) rows are strided; copying them to (Bt, D, L) with .contiguous() costs a full transpose per tensor
// per call. Instead, rows are handled in groups of kGroup neighbouring channels (Block): a group is gathered
// with one pass over its L cache lines (channels are contiguous in that layout) and scattered back the same way.
template <typename T>
struct Rows {
  T* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  Rows() = default;
  explicit Rows(const at::Tensor& t)
      : p(const_cast<T*>(t.const_data_ptr<T>())), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)) {}
};

constexpr int64_t kGroup = 16;

// kGroup rows of one Rows tensor as contiguous (L,) rows: in place when the rows are contiguous (stride 1 along
// time), else through a per-thread buffer (gathered by load, scattered by store).
template <typename T>
struct Block {
  std::vector<T> buf;
  const Rows<T>* src = nullptr;
  int64_t b = 0, d0 = 0, g = 0, L = 0;
  explicit Block(int64_t length) : buf(kGroup * length), L(length) {}
  bool direct() const { return src->s2 == 1; }
  T* place(int64_t j) { return direct() ? src->p + b * src->s0 + (d0 + j) * src->s1 : buf.data() + j * L; }
  void bind(const Rows<T>& s, int64_t b_, int64_t d0_, int64_t g_) { src = &s, b = b_, d0 = d0_, g = g_; }
  void load(const Rows<T>& s, int64_t b_, int64_t d0_, int64_t g_) {  // for inputs
    bind(s, b_, d0_, g_);
    if (direct()) return;
    const T* base = s.p + b * s.s0 + d0 * s.s1;
    int64_t t0 = 0;
    if (g == kGroup && s.s1 == 1) {  // channels contiguous: transpose kGroup x kGroup tiles through the stack
      T tile[kGroup][kGroup];
      for (; t0 + kGroup <= L; t0 += kGroup) {
        for (int64_t i = 0; i < kGroup; ++i)
          for (int64_t j = 0; j < kGroup; ++j) tile[j][i] = base[(t0 + i) * s.s2 + j];
        for (int64_t j = 0; j < kGroup; ++j) std::copy(tile[j], tile[j] + kGroup, buf.data() + j * L + t0);
      }
    }
    for (int64_t t = t0; t < L; ++t)
      for (int64_t j = 0; j < g; ++j) buf[j * L + t] = base[t * s.s2 + j * s.s1];
  }
  void store() {  // for outputs, after their rows were written at place(j)
    if (direct()) return;
    T* base = src->p + b * src->s0 + d0 * src->s1;
    int64_t t0 = 0;
    if (g == kGroup && src->s1 == 1) {
      T tile[kGroup][kGroup];
      for (; t0 + kGroup <= L; t0 += kGroup) {
        for (int64_t j = 0; j < kGroup; ++j) {
          const T* row = buf.data() + j * L + t0;
          std::copy(row, row + kGroup, tile[j]);
        }
        for (int64_t i = 0; i < kGroup; ++i)
          for (int64_t j = 0; j < kGroup; ++j) base[(t0 + i) * src->s2 + j] = tile[j][i];
      }
    }
    for (int64_t t = t0; t < L; ++t)
      for (int64_t j = 0; j < g; ++j) base[t * src->s2 + j * src->s1] = buf[j * L + t];
  }
};

// Returns (out (Bt, D, L), h_last (Bt, D, N), chunk states (Bt, D, K, Np) or (0,), y before the gate (Bt, D, L)
// when z is given and save is set, else (0,)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_fwd(
    const at::Tensor& u_, const at::Tensor& dl_, const at::Tensor& A_, const at::Tensor& B_, const at::Tensor& C_,
    const std::optional<at::Tensor>& D_, const std::optional<at::Tensor>& z_,
    const std::optional<at::Tensor>& bias_, const at::Tensor& h0_, bool softplus, int64_t chunk, bool save) {
  check_inputs(u_, dl_, A_, B_, C_, D_, z_, bias_, h0_);
  TORCH_CHECK(chunk >= 1, "tricklab fused scan: chunk must be >= 1");
  const int64_t Bt = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t W = kVecBytes / static_cast<int64_t>(u_.element_size()), np = padded(N, W), nv = np / W;
  const int64_t K = (L + chunk - 1) / chunk;
  const at::Tensor h0 = h0_.contiguous(), Dv = opt_contig(D_), bias = opt_contig(bias_);
  const at::Tensor A = pad_states(A_, np), Bm = pad_states(B_, np), Cm = pad_states(C_, np);
  const bool b_sel = B_.dim() == 3, c_sel = C_.dim() == 3, has_z = z_.has_value(), keep_y = save && has_z;
  // out takes u's layout (a transposed view of (Bt, L, D) gives one that is, transposed back, contiguous)
  at::Tensor out = at::empty_like(u_), hl = at::empty({Bt, D, N}, u_.options());
  at::Tensor ck = save ? at::empty({Bt, D, K, np}, u_.options()) : at::empty({0}, u_.options());
  at::Tensor ypre = keep_y ? at::empty({Bt, D, L}, u_.options()) : at::empty({0}, u_.options());
  AT_DISPATCH_FLOATING_TYPES(u_.scalar_type(), "tricklab_scan_fwd", [&] {
    using T = scalar_t;
    constexpr int Wv = Vec<T>::W;
    const Rows<T> u(u_), dl(dl_), z = has_z ? Rows<T>(*z_) : Rows<T>(), yo(out);
    const T *pA = A.const_data_ptr<T>(), *pB = Bm.const_data_ptr<T>(), *pC = Cm.const_data_ptr<T>();
    const T *ph0 = h0.const_data_ptr<T>(), *pD = opt_ptr<T>(Dv), *pbias = opt_ptr<T>(bias);
    T *phl = hl.mutable_data_ptr<T>(), *pck = save ? ck.mutable_data_ptr<T>() : nullptr;
    T* pyp = keep_y ? ypre.mutable_data_ptr<T>() : nullptr;
    at::parallel_for(0, Bt * D, grain_for(L, np), [&](int64_t r0, int64_t r1) {
      std::vector<V<T>> scratch(nv);
      std::vector<T> dlb(L);
      Block<T> ublk(L), dlblk(L), zblk(has_z ? L : 0), yblk(L);
      for (int64_t r = r0; r < r1;) {  // groups of up to kGroup channels of one batch element
        const int64_t b = r / D, d0 = r % D, g = std::min({kGroup, D - d0, r1 - r});
        ublk.load(u, b, d0, g), dlblk.load(dl, b, d0, g), yblk.bind(yo, b, d0, g);
        if (has_z) zblk.load(z, b, d0, g);
        for (int64_t j = 0; j < g; ++j) {
          const int64_t d = d0 + j, rr = r + j;
          row_delta<T>(L, dlblk.place(j), pbias ? pbias[d] : T(0), softplus, dlb.data(), nullptr);
          const T* ur = ublk.place(j);
          const T* Bp = b_sel ? pB + b * L * np : pB + d * np;
          const T* Cp = c_sel ? pC + b * L * np : pC + d * np;
          T* y = yblk.place(j);
          with_nv(nv, [&](auto nvc) {
            forward_row<T, decltype(nvc)::value>(L, N, nv, chunk, ur, dlb.data(), pA + d * np, Bp,
                                                 b_sel ? np : 0, Cp, c_sel ? np : 0, ph0 + rr * N, y, phl + rr * N,
                                                 pck ? pck + rr * K * np : nullptr, scratch.data());
          });
          if (pD == nullptr && !has_z) continue;
          const T Dd = pD ? pD[d] : T(0);
          const T* zr = has_z ? zblk.place(j) : nullptr;
          for (int64_t t = 0; t < L; t += Wv) {  // y += D u; keep y; y *= silu(z)
            const int64_t cnt = std::min<int64_t>(Wv, L - t);
            V<T> yv = loadn(y + t, cnt) + Dd * loadn(ur + t, cnt);
            if (zr != nullptr) {
              if (pyp != nullptr) storen(pyp + rr * L + t, yv, cnt);
              const V<T> zv = loadn(zr + t, cnt);
              yv = yv * zv * vsigmoid<T>(zv);
            }
            storen(y + t, yv, cnt);
          }
        }
        yblk.store();
        r += g;
      }
    });
  });
  return {out, hl, ck, ypre};
}

// Returns (du, ddelta_raw, dA, dB, dC, dD, dz, ddelta_bias, dh0); dD, dz, ddelta_bias are (0,) when the input was
// not given.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
scan_bwd(const at::Tensor& u_, const at::Tensor& dl_, const at::Tensor& A_, const at::Tensor& B_, const at::Tensor& C_,
         const std::optional<at::Tensor>& D_, const std::optional<at::Tensor>& z_,
         const std::optional<at::Tensor>& bias_, bool softplus, const at::Tensor& ckpt_, const at::Tensor& ypre_,
         const at::Tensor& dout_, const at::Tensor& dhl_, int64_t chunk) {
  check_inputs(u_, dl_, A_, B_, C_, D_, z_, bias_, dhl_);
  const int64_t Bt = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t W = kVecBytes / static_cast<int64_t>(u_.element_size()), np = padded(N, W), nv = np / W;
  const int64_t K = (L + chunk - 1) / chunk;
  TORCH_CHECK(chunk >= 1 && ckpt_.dim() == 4 && ckpt_.size(0) == Bt && ckpt_.size(1) == D && ckpt_.size(2) == K &&
                  ckpt_.size(3) == np && ckpt_.scalar_type() == u_.scalar_type(),
              "tricklab fused scan backward: the saved states do not match (run the forward with save=True and "
              "the same chunk)");
  TORCH_CHECK(!z_.has_value() || ypre_.sizes() == u_.sizes(),
              "tricklab fused scan backward: the gate needs the saved pre-gate output");
  TORCH_CHECK(dout_.sizes() == u_.sizes(), "tricklab fused scan backward: dout must have u's shape");
  const bool b_sel = B_.dim() == 3, c_sel = C_.dim() == 3, has_z = z_.has_value();
  const at::Tensor ck = ckpt_.contiguous(), dhl = dhl_.contiguous();
  const at::Tensor Dv = opt_contig(D_), bias = opt_contig(bias_);
  const at::Tensor ypre = has_z ? ypre_.contiguous() : at::Tensor();
  const at::Tensor A = pad_states(A_, np), Bm = pad_states(B_, np), Cm = pad_states(C_, np);
  auto o = u_.options();
  // input gradients take their inputs' layouts (see Rows)
  at::Tensor du = at::empty_like(u_), dd = at::empty_like(dl_), dz = has_z ? at::empty_like(*z_) : at::empty({0}, o);
  at::Tensor dA_rows = at::empty({Bt, D, np}, o), dh0 = at::empty({Bt, D, N}, o);
  at::Tensor dD_rows = Dv.defined() ? at::empty({Bt, D}, o) : at::Tensor();
  at::Tensor dbias_rows = bias.defined() ? at::empty({Bt, D}, o) : at::Tensor();
  // selective: per-thread (Bt, L, Np) accumulators, since rows of different channels add into the same dB_t, dC_t;
  // time-invariant: per-row (Bt, D, Np) results, summed over the batch below
  const int64_t grain = grain_for(L, np);
  const int64_t n_threads = (Bt * D > grain) ? at::get_num_threads() : 1;
  auto grad_buffer = [&](bool sel) {
    return sel ? at::zeros({n_threads, Bt, L, np}, o) : at::empty({Bt, D, np}, o);
  };
  at::Tensor dB_acc = grad_buffer(b_sel), dC_acc = grad_buffer(c_sel);
  AT_DISPATCH_FLOATING_TYPES(u_.scalar_type(), "tricklab_scan_bwd", [&] {
    using T = scalar_t;
    constexpr int Wv = Vec<T>::W;
    const Rows<T> u(u_), dl(dl_), dout(dout_), z = has_z ? Rows<T>(*z_) : Rows<T>();
    const Rows<T> du_o(du), dd_o(dd), dz_o = has_z ? Rows<T>(dz) : Rows<T>();
    const T *pA = A.const_data_ptr<T>(), *pB = Bm.const_data_ptr<T>(), *pC = Cm.const_data_ptr<T>();
    const T *pck = ck.const_data_ptr<T>(), *pdhl = dhl.const_data_ptr<T>();
    const T *pD = opt_ptr<T>(Dv), *pbias = opt_ptr<T>(bias), *pyp = opt_ptr<T>(ypre);
    T *pdA = dA_rows.mutable_data_ptr<T>(), *pdh0 = dh0.mutable_data_ptr<T>();
    T *pdB = dB_acc.mutable_data_ptr<T>(), *pdC = dC_acc.mutable_data_ptr<T>();
    T* pdD = dD_rows.defined() ? dD_rows.mutable_data_ptr<T>() : nullptr;
    T* pdbias = dbias_rows.defined() ? dbias_rows.mutable_data_ptr<T>() : nullptr;
    at::parallel_for(0, Bt * D, grain, [&](int64_t r0, int64_t r1) {
      const int64_t tid = (b_sel || c_sel) ? at::get_thread_num() : 0;
      TORCH_CHECK(tid < n_threads, "tricklab fused scan backward: more threads than accumulators");
      const int64_t tc = std::min(chunk, L);
      std::vector<T> hb((tc + 1) * np), ab(tc * np), dlb(L), sgb(L), gyb(L);
      std::vector<V<T>> scratch(4 * nv);
      const int64_t zl = has_z ? L : 0;
      Block<T> ublk(L), dlblk(L), goblk(L), zblk(zl), dublk(L), ddblk(L), dzblk(zl);
      for (int64_t r = r0; r < r1;) {  // groups of up to kGroup channels of one batch element
        const int64_t b = r / D, d0 = r % D, g = std::min({kGroup, D - d0, r1 - r});
        ublk.load(u, b, d0, g), dlblk.load(dl, b, d0, g), goblk.load(dout, b, d0, g);
        dublk.bind(du_o, b, d0, g), ddblk.bind(dd_o, b, d0, g);
        if (has_z) zblk.load(z, b, d0, g), dzblk.bind(dz_o, b, d0, g);
        for (int64_t j = 0; j < g; ++j) {
          const int64_t d = d0 + j, rr = r + j;
          const T* ur = ublk.place(j);
          row_delta<T>(L, dlblk.place(j), pbias ? pbias[d] : T(0), softplus, dlb.data(), sgb.data());
          // through the gate and the skip: g = dLoss/dy (y = C h + D u), dz, dD
          const T* gor = goblk.place(j);
          const T* zr = has_z ? zblk.place(j) : nullptr;
          T* dzr = has_z ? dzblk.place(j) : nullptr;
          const T Dd = pD ? pD[d] : T(0);
          V<T> dDv{};
          for (int64_t t = 0; t < L; t += Wv) {
            const int64_t cnt = std::min<int64_t>(Wv, L - t);
            V<T> gv = loadn(gor + t, cnt);
            if (zr != nullptr) {
              const V<T> zv = loadn(zr + t, cnt), sz = vsigmoid<T>(zv);
              storen(dzr + t, gv * loadn(pyp + rr * L + t, cnt) * sz * (T(1) + zv * (T(1) - sz)), cnt);
              gv = gv * zv * sz;
            }
            dDv += gv * loadn(ur + t, cnt);
            storen(gyb.data() + t, gv, cnt);
          }
          if (pdD != nullptr) pdD[rr] = hsum(dDv);
          T* dur = dublk.place(j);
          T* ddr = ddblk.place(j);
          auto run = [&](auto nvc, auto bsel, auto csel) {
            constexpr bool BS = decltype(bsel)::value, CS = decltype(csel)::value;
            const T* Bp = BS ? pB + b * L * np : pB + d * np;
            const T* Cp = CS ? pC + b * L * np : pC + d * np;
            T* dBr = BS ? pdB + (tid * Bt + b) * L * np : pdB + rr * np;
            T* dCr = CS ? pdC + (tid * Bt + b) * L * np : pdC + rr * np;
            backward_row<T, decltype(nvc)::value, BS, CS>(L, N, nv, chunk, ur, dlb.data(), pA + d * np, Bp, Cp,
                                                          pck + rr * K * np, gyb.data(), pdhl + rr * N, dur, ddr,
                                                          pdA + rr * np, dBr, dCr, pdh0 + rr * N, hb.data(),
                                                          ab.data(), scratch.data());
          };
          with_nv(nv, [&](auto nvc) {
            if (b_sel && c_sel) run(nvc, std::true_type{}, std::true_type{});
            else if (b_sel) run(nvc, std::true_type{}, std::false_type{});
            else if (c_sel) run(nvc, std::false_type{}, std::true_type{});
            else run(nvc, std::false_type{}, std::false_type{});
          });
          // du += g D; ddelta_raw = ddelta softplus'(raw + bias); dbias = sum_t ddelta_raw
          V<T> dbv{};
          for (int64_t t = 0; t < L; t += Wv) {
            const int64_t cnt = std::min<int64_t>(Wv, L - t);
            if (pD != nullptr) storen(dur + t, loadn(dur + t, cnt) + Dd * loadn(gyb.data() + t, cnt), cnt);
            const V<T> dr = loadn(ddr + t, cnt) * loadn(sgb.data() + t, cnt);
            storen(ddr + t, dr, cnt);
            dbv += dr;
          }
          if (pdbias != nullptr) pdbias[rr] = hsum(dbv);
        }
        dublk.store(), ddblk.store();
        if (has_z) dzblk.store();
        r += g;
      }
    });
  });
  // drop the padded lanes; selective: (threads, Bt, L, Np) -> (Bt, N, L); time-invariant: (Bt, D, Np) -> (D, N)
  auto finish = [N](const at::Tensor& acc, bool sel) {
    const at::Tensor s = (acc.size(0) == 1 ? acc.select(0, 0) : acc.sum(0)).narrow(-1, 0, N);
    return sel ? s.transpose(1, 2).contiguous() : s.contiguous();
  };
  auto batch_sum = [&](const at::Tensor& rows) { return rows.defined() ? rows.sum(0) : at::empty({0}, o); };
  return {du, dd, finish(dA_rows, false), finish(dB_acc, b_sel), finish(dC_acc, c_sel),
          batch_sum(dD_rows), dz, batch_sum(dbias_rows), dh0};
}

// One step of the recurrence for generation (no autograd: the Python step is used when gradients are needed):
// u, delta_raw, z (Bt, D); h (Bt, D, N); B, C (Bt, N) if selective else (D, N). Returns (y (Bt, D), new h); the
// given state is not modified.
std::tuple<at::Tensor, at::Tensor> scan_step(const at::Tensor& h_, const at::Tensor& u_, const at::Tensor& dl_,
                                             const at::Tensor& A_, const at::Tensor& B_, const at::Tensor& C_,
                                             const std::optional<at::Tensor>& D_, const std::optional<at::Tensor>& z_,
                                             const std::optional<at::Tensor>& bias_, bool softplus, bool selective) {
  TORCH_CHECK(u_.device().is_cpu() && (u_.scalar_type() == at::kFloat || u_.scalar_type() == at::kDouble),
              "tricklab fused step: float32 or float64 CPU tensors only");
  const int64_t Bt = u_.size(0), D = u_.size(1), N = A_.size(1);
  TORCH_CHECK(u_.dim() == 2 && dl_.sizes() == u_.sizes() && A_.dim() == 2 && A_.size(0) == D && h_.dim() == 3 &&
                  h_.size(0) == Bt && h_.size(1) == D && h_.size(2) == N,
              "tricklab fused step: u, delta (Bt, D), A (D, N), h (Bt, D, N)");
  const int64_t rows_bc = selective ? Bt : D;
  TORCH_CHECK(B_.dim() == 2 && C_.dim() == 2 && B_.size(0) == rows_bc && C_.size(0) == rows_bc && B_.size(1) == N &&
                  C_.size(1) == N,
              "tricklab fused step: B and C must be (Bt, N) when selective, else (D, N)");
  for (const at::Tensor* t : {&h_, &dl_, &A_, &B_, &C_})
    TORCH_CHECK(t->scalar_type() == u_.scalar_type(), "tricklab fused step: all inputs must share u's dtype");
  const at::Tensor h = h_.contiguous(), u = u_.contiguous(), dl = dl_.contiguous(), A = A_.contiguous();
  const at::Tensor Bm = B_.contiguous(), Cm = C_.contiguous(), Dv = opt_contig(D_), z = opt_contig(z_);
  const at::Tensor bias = opt_contig(bias_);
  at::Tensor y = at::empty({Bt, D}, u.options()), hn = at::empty({Bt, D, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "tricklab_scan_step", [&] {
    using T = scalar_t;
    constexpr int W = Vec<T>::W;
    const T *ph = h.const_data_ptr<T>(), *pu = u.const_data_ptr<T>(), *pd = dl.const_data_ptr<T>();
    const T *pA = A.const_data_ptr<T>(), *pB = Bm.const_data_ptr<T>(), *pC = Cm.const_data_ptr<T>();
    const T *pD = opt_ptr<T>(Dv), *pz = opt_ptr<T>(z), *pbias = opt_ptr<T>(bias);
    T *py = y.mutable_data_ptr<T>(), *phn = hn.mutable_data_ptr<T>();
    for (int64_t r = 0; r < Bt * D; ++r) {  // one step is far too little work to fork threads for
      const int64_t b = r / D, d = r % D;
      T x = pd[r] + (pbias ? pbias[d] : T(0));
      if (softplus) x = x > T(kSoftplusThreshold) ? x : std::log1p(std::exp(x));
      const T du = x * pu[r];
      const T* b_row = pB + (selective ? b : d) * N;
      const T* c_row = pC + (selective ? b : d) * N;
      V<T> acc{};
      for (int64_t i = 0; i < N; i += W) {  // the state in whole vectors; lanes past N read as zero
        const int64_t cnt = std::min<int64_t>(W, N - i);
        const V<T> hv = vexp<T>(x * loadn(pA + d * N + i, cnt)) * loadn(ph + r * N + i, cnt) +
                        du * loadn(b_row + i, cnt);
        storen(phn + r * N + i, hv, cnt);
        acc += hv * loadn(c_row + i, cnt);
      }
      T out = hsum(acc) + (pD ? pD[d] * pu[r] : T(0));
      if (pz != nullptr) out *= pz[r] / (T(1) + std::exp(-pz[r]));
      py[r] = out;
    }
  });
  return {y, hn};
}

}  // namespace

TORCH_LIBRARY(tricklab, m) {
  m.def("selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, Tensor h0, bool delta_softplus, int chunk, bool save) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("selective_scan_bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool delta_softplus, Tensor checkpoints, Tensor y_pre_gate, Tensor dout, Tensor dh_last, "
        "int chunk) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("selective_scan_step(Tensor h, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool delta_softplus, bool selective) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tricklab, CPU, m) {
  m.impl("selective_scan_fwd", &scan_fwd);
  m.impl("selective_scan_bwd", &scan_bwd);
  m.impl("selective_scan_step", &scan_step);
}
