// Fused CPU kernels for α-entmax: forward (threshold τ per row, then p) and backward (∂ℓ/∂z, ∂ℓ/∂α).
//
// Plain C ABI (loaded with ctypes by adasparse/ops/_cpu.py): no PyTorch headers, so it builds in about
// a second.  Rows are independent; OpenMP spreads them over threads (the process's libgomp, i.e. the one
// PyTorch already loaded, so torch.set_num_threads applies and no second thread pool appears).  Each row
// is solved while it sits in L1:
//
//   forward  1. max and NaN/finite counts (one vectorised pass)
//            2. gather the candidates x = (α−1)(z − max) > −1 (τ ≥ −1, so the others are zero forever)
//            3. find τ on the candidates only, dropping every candidate that falls below τ (τ only rises):
//               α = 2: Newton on the piecewise-linear f, stopping at the exact support (closed form);
//               α = 1.5: Newton + the exact quadratic root on the current support;
//               1 < α < 2: a power-mean lower bound (no powers), then Newton on φ(τ) = ‖[x − τ]₊‖_d − 1
//               (d = 1/(α−1)), convex and decreasing, so the iterates climb monotonically; exact for a
//               single (or tied) top entry, hence far fewer steps than Newton on Σ[x − τ]₊^d − 1; the last
//               pass also yields p (second-order update, with the last step taken from the second-order
//               model of f), so there is no separate power pass for the output; float rows are kept two
//               at a time in flight, so that the CPU overlaps their dependency chains;
//               α > 2: bisection on [−1, −n^{1−α}];  α = 1: softmax.
//            4. p on the support, normalised, scattered into a zeroed row.
//   backward s = p^{2−α} on the support (gathered first: powers only there); ∂ℓ/∂z = s ⊙ (g − Σ s⊙g / Σ s);
//            ∂ℓ/∂α from a few row sums (the α → 1 limit below α − 1 = alpha_one_eps).
//
// p = r^d amplifies the rounding of r by d: float rows with α < 1.125 (d > 8) take their powers from r − 1
// in the forward (Newton::pass_impl<true>), and their α-gradient from a regrouped, cancellation-free form in
// the backward (backward_row_small_alpha); both stay in float.
// Powers are exp(a·log r) with inline polynomial exp/log that the compiler vectorises.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef ADASPARSE_DEBUG_COUNT  // instrumentation hook: called with the candidate count of every Newton pass
#define ADASPARSE_DEBUG_COUNT(k) ((void)0)
#endif


namespace {

// exp and log, Cephes-style polynomials (float: ≤ 2 ulp; double: ≤ 2 ulp), written branch-free with bit
// casts so that GCC vectorises them inside `omp simd` loops (glibc's libmvec is ~20× slower here).
// exp returns 0 below the normal range; log expects a positive normal number.
inline float vexp(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float fx = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float res = y * scale;
  return x < -87.0f ? 0.0f : res;
}
inline float vlog(float x) {  // x > 0, normal
  // x = 2^e · m with m in [√½, √2), by integer arithmetic only (no select: the compiler would evaluate the
  // polynomial once per side of it)
  int32_t ix;
  std::memcpy(&ix, &x, 4);
  const int32_t tmp = ix - 0x3f3504f3;  // bits of √½
  const int32_t e = tmp >> 23;          // arithmetic shift: floor
  const int32_t im = ix - static_cast<int32_t>(static_cast<uint32_t>(tmp) & 0xff800000u);
  float m;
  std::memcpy(&m, &im, 4);
  m -= 1.0f;
  const float ef = static_cast<float>(e);
  const float z = m * m;
  float y = 7.0376836292E-2f;
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  y += ef * -2.12194440e-4f;
  y += -0.5f * z;
  return m + y + ef * 0.693359375f;
}
// log(1 + u) for −1 < u ≤ 0, accurate relative to u also where 1 + u rounds: log(m) for m = 1 + u (rounded),
// plus the first-order correction for the rounding error c = u − (m − 1), which is exact for m ≥ ½
inline float vlog1p(float u) {
  const float m = 1.0f + u;
  const float c = u - (m - 1.0f);
  return vlog(m) + c / m;
}
inline double vexp(double x) {
  const double xc = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double fx = __builtin_floor(xc * 1.4426950408889634073599 + 0.5);
  double r = xc - fx * 6.93145751953125E-1;
  r = r - fx * 1.42860682030941723212E-6;
  const double rr = r * r;
  const double px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr + 9.99999999999999999910E-1);
  const double qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr + 2.27265548208155028766E-1) * rr +
                    2.00000000000000000009E0;
  const double y = 1.0 + 2.0 * (px / (qx - px));
  const int64_t bits = (static_cast<int64_t>(fx) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, 8);
  const double res = y * scale;
  return x < -708.0 ? 0.0 : res;
}
inline double vlog(double x) {  // x > 0, normal
  int64_t ix;  // x = 2^e · m with m in [√½, √2), as for float
  std::memcpy(&ix, &x, 8);
  const int64_t tmp = ix - 0x3fe6a09e667f3bcdLL;  // bits of √½
  const int64_t e = tmp >> 52;
  const int64_t im = ix - static_cast<int64_t>(static_cast<uint64_t>(tmp) & 0xfff0000000000000ULL);
  double m;
  std::memcpy(&m, &im, 8);
  const double ef = static_cast<double>(e);
  const double t = m - 1.0;
  const double z = t * t;
  const double P = ((((1.01875663804580931796E-4 * t + 4.97494994976747001425E-1) * t + 4.70579119878881725854E0) * t +
                     1.44989225341610930846E1) * t + 1.79368678507819816313E1) * t + 7.70838733755885391666E0;
  const double Q = ((((t + 1.12873587189167450590E1) * t + 4.52279145837532221105E1) * t + 8.29875266912776603211E1) * t +
                    7.11544750618563894466E1) * t + 2.31251620126765340583E1;
  double y = t * (z * P / Q);
  y -= ef * 2.121944400546905827679e-4;
  y -= 0.5 * z;
  return t + y + ef * 0.693359375;
}

// float rows with α − 1 below this take the near-softmax paths (shifted powers forward, regrouped
// α-gradient backward); float rows with α − 1 below alpha_one_eps are computed in double in the backward
constexpr double kDoubleBelowAm1 = 0.125;
constexpr int64_t kB = 16;                  // candidate buffers are padded with −inf to a multiple of kB

inline int64_t round_up(int64_t k) { return (k + kB - 1) / kB * kB; }

#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2 has no compress instruction: a mask of 8 lanes indexes a table of permutations that move the
// selected lanes to the front, in order (8 KiB, built at compile time).
struct CompressTable {
  alignas(32) int32_t idx[256][8];
  constexpr CompressTable() : idx() {
    for (int m = 0; m < 256; ++m) {
      int j = 0;
      for (int b = 0; b < 8; ++b)
        if (m & (1 << b)) idx[m][j++] = b;
      for (; j < 8; ++j) idx[m][j] = 0;
    }
  }
};
constexpr CompressTable kCompress{};

// the lanes of v selected by the 8-bit mask m, moved to the front (the rest is garbage, overwritten later)
inline __m256 compress_ps(__m256 v, int m) {
  return _mm256_permutevar8x32_ps(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[m])));
}
inline __m256i compress_epi32(__m256i v, int m) {
  return _mm256_permutevar8x32_epi32(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[m])));
}
#endif

template <typename T>
void fill(T* out, int64_t n, T v) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = v;
}

template <typename C>
void pad(C* xb, int64_t k) {
  for (int64_t j = k; j < round_up(k); ++j) xb[j] = -std::numeric_limits<C>::infinity();
}

// largest value of type C that is ≤ t (so that `x > below(t)` keeps every x > t)
template <typename C>
C below(double t) {
  return static_cast<C>(t);
}

template <>
float below<float>(double t) {
  float c = static_cast<float>(t);
  if (static_cast<double>(c) > t) {  // one ulp down (t is finite here)
    if (c == 0.0f) return -std::numeric_limits<float>::denorm_min();
    int32_t b;
    std::memcpy(&b, &c, 4);
    b += (c < 0.0f) ? 1 : -1;
    std::memcpy(&c, &b, 4);
  }
  return c;
}

// keep the candidates with x > thr (in place, order kept, padded); returns their count
template <typename C>
int64_t compact(C* xb, int32_t* ib, int64_t k, double thr) {
  const C t = below<C>(thr);
  int64_t j = 0;
  for (int64_t i = 0; i < k; ++i) {
    const C x = xb[i];
    const int32_t id = ib[i];
    xb[j] = x;
    ib[j] = id;
    j += (x > t);
  }
  pad(xb, j);
  return j;
}

#ifdef __AVX512F__
// register-form compress + full stores (the memory form of vcompressps is slow on some CPUs)
template <>
int64_t compact<float>(float* xb, int32_t* ib, int64_t k, double thr) {
  const __m512 t = _mm512_set1_ps(below<float>(thr));
  int64_t j = 0;
  for (int64_t i = 0; i < k; i += kB) {  // the padding makes every block full
    const __m512 x = _mm512_loadu_ps(xb + i);
    const __m512i id = _mm512_loadu_si512(ib + i);
    const __mmask16 m = _mm512_cmp_ps_mask(x, t, _CMP_GT_OQ);
    _mm512_storeu_ps(xb + j, _mm512_maskz_compress_ps(m, x));
    _mm512_storeu_si512(ib + j, _mm512_maskz_compress_epi32(m, id));
    j += __builtin_popcount(static_cast<unsigned>(m));
  }
  pad(xb, j);
  return j;
}
#elif defined(__AVX2__)
template <>
int64_t compact<float>(float* xb, int32_t* ib, int64_t k, double thr) {
  const __m256 t = _mm256_set1_ps(below<float>(thr));
  int64_t j = 0;
  for (int64_t i = 0; i < k; i += 8) {  // the padding (a multiple of kB) makes every block full; j ≤ i
    const __m256 x = _mm256_loadu_ps(xb + i);
    const __m256i id = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ib + i));
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(x, t, _CMP_GT_OQ));
    _mm256_storeu_ps(xb + j, compress_ps(x, m));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ib + j), compress_epi32(id, m));
    j += __builtin_popcount(static_cast<unsigned>(m));
  }
  pad(xb, j);
  return j;
}
#endif

// the vector versions' remainder (entries i0 … n−1, appended after the k found so far), then the padding
inline int64_t gather_tail(const float* z, int64_t i0, int64_t n, float mc, float am1, float* xb, int32_t* ib,
                           int64_t k) {
  for (int64_t i = i0; i < n; ++i) {
    const float x = (z[i] - mc) * am1;
    xb[k] = x;
    ib[k] = static_cast<int32_t>(i);
    k += (x > -1.0f);
  }
  pad(xb, k);
  return k;
}

// candidates x = (α−1)(z − m) > −1 with their indices, padded; returns their count
template <typename T, typename C>
int64_t gather(const T* z, int64_t n, C mc, C am1, C* xb, int32_t* ib) {
  int64_t k = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kB) {
    const int64_t i1 = std::min<int64_t>(n, i0 + kB);
    int any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t i = i0; i < i1; ++i) any |= ((static_cast<C>(z[i]) - mc) * am1 > C(-1));
    if (!any) continue;
    for (int64_t i = i0; i < i1; ++i) {
      const C x = (static_cast<C>(z[i]) - mc) * am1;
      xb[k] = x;
      ib[k] = static_cast<int32_t>(i);
      k += (x > C(-1));
    }
  }
  pad(xb, k);
  return k;
}

#ifdef __AVX512F__
template <>
int64_t gather<float, float>(const float* z, int64_t n, float mc, float am1, float* xb, int32_t* ib) {
  int64_t k = 0, i0 = 0;
  const __m512 mv = _mm512_set1_ps(mc), av = _mm512_set1_ps(am1), lo = _mm512_set1_ps(-1.0f);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (; i0 + kB <= n; i0 += kB, iv = _mm512_add_epi32(iv, step)) {
    const __m512 x = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(z + i0), mv), av);
    const __mmask16 m = _mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ);
    if (!m) continue;
    _mm512_storeu_ps(xb + k, _mm512_maskz_compress_ps(m, x));
    _mm512_storeu_si512(ib + k, _mm512_maskz_compress_epi32(m, iv));
    k += __builtin_popcount(static_cast<unsigned>(m));
  }
  return gather_tail(z, i0, n, mc, am1, xb, ib, k);
}
#elif defined(__AVX2__)
template <>
int64_t gather<float, float>(const float* z, int64_t n, float mc, float am1, float* xb, int32_t* ib) {
  int64_t k = 0, i0 = 0;
  const __m256 mv = _mm256_set1_ps(mc), av = _mm256_set1_ps(am1), lo = _mm256_set1_ps(-1.0f);
  __m256i iv = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  for (; i0 + 8 <= n; i0 += 8, iv = _mm256_add_epi32(iv, step)) {
    const __m256 x = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(z + i0), mv), av);
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(x, lo, _CMP_GT_OQ));
    if (!m) continue;
    _mm256_storeu_ps(xb + k, compress_ps(x, m));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ib + k), compress_epi32(iv, m));
    k += __builtin_popcount(static_cast<unsigned>(m));
  }
  return gather_tail(z, i0, n, mc, am1, xb, ib, k);
}
#endif

// τ for α = 2 (sparsemax): exact.  Candidates all satisfy x > −1.
template <typename C>
double tau_sparsemax(C* xb, int32_t* ib, int64_t& k) {
  double tau = -1.0;
  for (int it = 0; it < 1000 && k > 0; ++it) {
    double sx = 0.0;
    C mn = std::numeric_limits<C>::infinity();
#pragma omp simd reduction(+ : sx) reduction(min : mn)
    for (int64_t j = 0; j < k; ++j) {
      sx += static_cast<double>(xb[j]);
      mn = std::min(mn, xb[j]);
    }
    const double t = (sx - 1.0) / static_cast<double>(k);  // Newton step = closed form on this support
    if (static_cast<double>(mn) > t || !(t > tau)) return std::max(t, tau);
    tau = t;
    k = compact(xb, ib, k, tau);
  }
  return tau;
}

// τ for α = 1.5: Newton steps until the quadratic's root on the current support is consistent.  The sums
// run over the candidates still above τ (masked); only the first step compacts the buffer (later steps
// drop few candidates, and a compaction costs more than the masked lanes it saves).
template <typename C>
double tau_entmax15(C* xb, int32_t* ib, int64_t& k) {
  double tau = -1.0;
  for (int it = 0; it < 1000 && k > 0; ++it) {
    const int64_t kp = round_up(k);
    double sr = 0.0, srr = 0.0, cnt = 0.0;
    C mn = std::numeric_limits<C>::infinity();
#pragma omp simd reduction(+ : sr, srr, cnt) reduction(min : mn)
    for (int64_t j = 0; j < kp; ++j) {
      const double r = static_cast<double>(xb[j]) - tau;  // −inf on the padding
      const bool on = r > 0.0;
      sr += on ? r : 0.0;
      srr += on ? r * r : 0.0;
      cnt += on ? 1.0 : 0.0;
      mn = std::min(mn, on ? xb[j] : std::numeric_limits<C>::infinity());
    }
    if (!(cnt > 0.0)) return tau;
    const double c = (srr - 1.0) / cnt, mu = sr / cnt;
    const double disc = mu * mu - c;
    if (disc >= 0.0) {  // root of Σ_S (r − t)² = 1, stable form of μ − sqrt(μ² − c)
      const double t = c / (mu + std::sqrt(disc));
      if (static_cast<double>(mn) - tau > t) return tau + t;
    }
    const double t = (srr - 1.0) / (2.0 * sr);  // Newton step (never past the root: f is convex)
    if (!(t > 0.0)) return tau;
    tau += t;
    if (it == 0) k = compact(xb, ib, k, tau);
  }
  return tau;
}

// Σ_j [x_j − t]₊^a over the padded candidates, and Σ_j [x_j − t]₊^{a+1} when `both`
template <typename C, bool both>
void power_sums(const C* xb, int64_t k, C t, C a, double& s_a, double& s_a1) {
  const int64_t kp = round_up(k);  // a multiple of kB: the vector loop has no remainder
  C s0 = 0, s1 = 0;
#pragma omp simd reduction(+ : s0, s1)
  for (int64_t j = 0; j < kp; ++j) {
    const C r = xb[j] - t;
    const bool on = r > C(0);
    const C e = vexp(a * vlog(on ? r : C(1)));
    s0 += on ? e : C(0);
    if (both) s1 += on ? e * r : C(0);
  }
  s_a = s0;
  s_a1 = s1;
}

// A lower bound on τ without powers (1 < α < 2): by the power-mean inequality, for the k candidates
// above τ', Σ [x − τ']₊^d ≥ k (mean [x − τ']₊)^d ≥ k (μ − τ')^d, so τ' = μ − k^{−(α−1)} has f(τ') ≥ 0; for
// d ≥ 2 also Σ r^d ≥ k (Σ r²/k)^{d/2}, tighter, valid while τ' stays below every candidate.  One
// application prunes most candidates that are out; more cost more than the Newton passes they save.
template <typename C>
double tau_lower_bound(C* xb, int32_t* ib, int64_t& k, double am1) {
  const double d = 1.0 / am1;
  double tau = -1.0;
  for (int it = 0; it < 1 && k > 1; ++it) {
    const int64_t kp = round_up(k);
    C sx = 0, sxx = 0, mn = std::numeric_limits<C>::infinity();
#pragma omp simd reduction(+ : sx, sxx) reduction(min : mn)
    for (int64_t j = 0; j < kp; ++j) {
      const C x = xb[j];
      const bool on = x > -std::numeric_limits<C>::infinity();  // padding is −inf
      sx += on ? x : C(0);
      sxx += on ? x * x : C(0);
      mn = std::min(mn, x > -std::numeric_limits<C>::infinity() ? x : std::numeric_limits<C>::infinity());
    }
    const double kk = static_cast<double>(k), mu = static_cast<double>(sx) / kk;
    // k^{−(α−1)} in float precision, rounded up by far more than its error (the bound stays valid)
    const double ck = static_cast<double>(vexp(static_cast<float>(-am1) * vlog(static_cast<float>(kk)))) * (1.0 + 1e-5);
    double t = mu - ck;                                         // mean bound
    if (d >= 2.0) {
      const double disc = mu * mu - static_cast<double>(sxx) / kk + ck * ck;
      if (disc >= 0.0) {
        const double t2 = mu - std::sqrt(disc);
        if (t2 > t && t2 <= static_cast<double>(mn)) t = t2;
      }
    }
    if (!(t > tau)) break;
    tau = t;
    const int64_t k_before = k;
    k = compact(xb, ib, k, tau);
    if (k == k_before) break;  // nothing pruned: further bounds gain little
  }
  return tau;
}

// 1 < α < 2: Newton on φ(τ) = (Σ r^d)^{1/d} − 1, r = [x − τ]₊, from a lower bound τ0.  φ is convex and
// decreasing, so the iterates climb monotonically.  Each pass computes e = r^{d−1} (kept in wb), Σ e and
// Σ e·r; once the step δ is so small that the second-order update p = e·(r − dδ + d(d−1)/2 · δ²/r) is
// exact to `eps` (see init), wb receives those p and the pass count ends there: no separate pass for the
// output.  The pieces below (pass, step, finish) are driven either row by row
// (newton_output) or for several rows at once (forward_lanes), whose independent chains the CPU overlaps.
template <typename C>
struct Newton {
  C* xb;
  int32_t* ib;
  C* wb;  // r^{d−1}, then p
  C* ub;  // r^{d−2} (last pass only)
  int64_t k;
  double am1, tau, accept;
  int it;
  double c3 = 0.0, rmin = 0.0;  // |C(d,3)|; the smallest r > 0 of the last pass
  double eps_ = 0.0;
  double accept_am1 = -1.0, accept_eps = 0.0;  // what `accept` was computed for (neighbouring rows often share α)
  void init(double am1_, double tau_, double eps) {
    am1 = am1_;
    tau = tau_;
    it = 0;
    eps_ = eps;
    if (am1 == accept_am1 && eps == accept_eps) return;
    accept_am1 = am1;
    accept_eps = eps;
    // finish() is second order, so its error is third order in the last step δ: with r = x − τ ≤ 1 and
    // the update only where r > δ, it is ≤ C(d,3)·δ³ for d ≥ 3 and ≤ G·δ^d for d < 3, where
    // G = max(|(d−1)(d−2)|/2, |C(d,3)|) bounds the scaled error (checked numerically over r/δ ∈ (1, 10⁴]).
    const double d = 1.0 / am1;
    c3 = std::fabs(d * (d - 1.0) * (d - 2.0)) / 6.0;
    if (d >= 3.0) {
      accept = vexp(vlog(eps / c3) / 3.0);
    } else {
      const double g = std::max(std::fabs((d - 1.0) * (d - 2.0)) * 0.5, c3) * 1.25;
      accept = g <= 0.0 ? 1.0 : vexp(vlog(eps / g) / d);
    }
  }
  // one pass at τ: e = r^{d−1} into wb; returns Σ e·r = Σ r^d (S0) and Σ e = Σ r^{d−1} (S1)
  void pass(double& S0, double& S1) {
    ADASPARSE_DEBUG_COUNT(k);
    if (sizeof(C) == 4 && am1 < kDoubleBelowAm1)  // float rows near softmax: powers from r − 1
      pass_impl<true>(S0, S1);
    else
      pass_impl<false>(S0, S1);
  }
  // Shifted: r^{d−1} = exp((d−1)·log(1 + u)) from u = x − (τ + 1) = r − 1.  A float r near 1 carries an
  // absolute rounding error of 2⁻²⁴, which p = r^d amplifies d-fold; u near 0 carries one relative to u, and
  // d·|u| ≈ |log p|, so p stays accurate to float precision whatever d (used for α − 1 < kDoubleBelowAm1).
  // (not inlined: with both loops inlined into forward_lanes, the plain pass ran ~7% slower)
  template <bool Shifted>
  __attribute__((noinline)) void pass_impl(double& S0, double& S1) {
    const int64_t kp = round_up(k);
    const C tc = static_cast<C>(Shifted ? tau + 1.0 : tau), dm1 = static_cast<C>(1.0 / am1 - 1.0);
    const C* __restrict x = xb;  // locals: the compiler must not reload the members inside the loop
    C* __restrict w = wb;
    C s0 = 0, s1 = 0, mn = std::numeric_limits<C>::infinity();
#pragma omp simd reduction(+ : s0, s1) reduction(min : mn)
    for (int64_t j = 0; j < kp; ++j) {
      const C u = x[j] - tc;  // r − 1 when Shifted, else r
      const C r = Shifted ? u + C(1) : u;
      const bool on = Shifted ? u > C(-1) : r > C(0);
      const C lg = Shifted ? vlog1p(on ? u : C(0)) : vlog(on ? r : C(1));
      const C e = vexp(dm1 * lg);  // r^{d−1}
      w[j] = on ? e : C(0);
      s1 += on ? e : C(0);
      s0 += on ? e * r : C(0);
      mn = std::min(mn, on ? r : std::numeric_limits<C>::infinity());
    }
    S0 = s0;
    S1 = s1;
    rmin = mn;
  }
  // after the last pass: u = e/r = r^{d−2} into ub (the finish's second-order term); returns Σ u
  double curvature() const {
    const int64_t kp = round_up(k);
    const C tc = static_cast<C>(tau);
    const C* __restrict x = xb;
    const C* __restrict w = wb;
    C* __restrict u = ub;
    C s2 = 0;
#pragma omp simd reduction(+ : s2)
    for (int64_t j = 0; j < kp; ++j) {
      const C r = x[j] - tc;
      const bool on = r > C(0);
      const C v = on ? w[j] / (on ? r : C(1)) : C(0);
      u[j] = v;
      s2 += v;
    }
    return s2;
  }
  // the last step, once done(): the root of the second-order model of f on the support,
  // Σ r^d − dδ Σ r^{d−1} + d(d−1)/2 · δ² Σ r^{d−2} = 1 (stable root form), so that τ + δ is off by O(δ³)
  // only, like the second-order update of finish()
  double last_step(double S0, double S1, double S2, double st) const {
    const double d = 1.0 / am1, q = 0.5 * d * (d - 1.0), b = d * S1;
    const double disc = b * b - 4.0 * q * S2 * (S0 - 1.0);
    if (!(S1 > 0.0) || !(disc >= 0.0)) return st;
    const double t = 2.0 * (S0 - 1.0) / (b + std::sqrt(disc));
    return t > 0.0 ? t : 0.0;
  }
  // the Newton step from (S0, S1): φ/(−φ') = (S0 − S0^{1−1/d}) / S1 far from the root; near it
  // (|S0 − 1| < 1/64) the plain Newton step on f, (S0 − 1)/(d S1), which agrees to first order, needs no
  // power and also stays left of the root (f is convex too).  ≤ 0 only at the root (or just past it, by
  // rounding), where it is clamped to 0.
  double step(double S0, double S1) const {
    double st = 0.0;
    if (S1 > 0.0) {
      if (std::fabs(S0 - 1.0) < 0.015625) {
        st = am1 * (S0 - 1.0) / S1;
      } else if (sizeof(C) == 4 && am1 >= kDoubleBelowAm1) {  // float S0^{1−1/d}: rounding ≪ float accuracy
        const float pw = vexp(static_cast<float>(1.0 - am1) * vlog(static_cast<float>(S0)));
        st = (S0 - static_cast<double>(pw)) / S1;
      } else {  // double rows, and small α − 1 (S0 − S0^{1−α} cancels): a rounded step could overshoot the root
        st = (S0 - vexp((1.0 - am1) * vlog(S0))) / S1;
      }
    }
    return st > 0.0 ? st : 0.0;
  }
  // done when the error of finish() is below eps for every r: `accept` covers any r; for d < 3 a row
  // whose smallest r exceeds 2δ has the sharper bound C(d,3)·(r/2)^{d−3}·δ³ ≤ 4 C(d,3) δ³ / r²
  bool done(double st) const {
    return st <= accept || it == 99 || (2.0 * st < rmin && 4.0 * c3 * st * st * st <= eps_ * rmin * rmin);
  }
  // after curvature(): p = (r − δ)^d ≈ e·(r − dδ) + d(d−1)/2 · δ² u into wb (second-order update to
  // τ + δ, 0 where r ≤ δ); returns Σ p
  double finish(double st) const {
    const int64_t kp = round_up(k);
    const double d = 1.0 / am1;
    const C tc = static_cast<C>(tau), h = static_cast<C>(st), sh = static_cast<C>(d * st),
            q2 = static_cast<C>(0.5 * d * (d - 1.0) * st * st);
    const C* __restrict x = xb;
    const C* __restrict u = ub;
    C* __restrict w = wb;
    C s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < kp; ++j) {
      const C r = x[j] - tc;  // −inf on the padding, where wb is 0
      const C pj = r > h ? std::max(w[j] * (r - sh) + q2 * u[j], C(0)) : C(0);
      w[j] = pj;
      s += pj;
    }
    return s;
  }
  // the whole ending: curvature, last step, finish; returns Σ p
  double conclude(double S0, double S1, double st) const {
    if (k == 0) return 0.0;
    return finish(last_step(S0, S1, curvature(), st));
  }
  void advance(double st) {
    tau += st;
    // dropping the candidates now below τ only saves work: after the first step few drop, and a
    // compaction then costs more than the masked lanes it saves
    if (it == 0) k = compact(xb, ib, k, tau);
    ++it;
  }
};

// one row: returns Σ p (wb holds the unnormalised p of the k candidates)
template <typename C>
double newton_output(C* xb, int32_t* ib, int64_t& k, double am1, double tau, double eps, C* wb) {
  Newton<C> nt{xb, ib, wb, wb + round_up(k) + kB, k, 0.0, 0.0, 0.0, 0};
  nt.init(am1, tau, eps);
  while (nt.k > 0) {
    double S0, S1;
    nt.pass(S0, S1);
    const double st = nt.step(S0, S1);
    if (nt.done(st)) {
      k = nt.k;
      return nt.conclude(S0, S1, st);
    }
    nt.advance(st);
  }
  k = 0;
  return 0.0;
}

// τ for α > 2: bisection on [−1, −n^{1−α}] (f is concave there, Newton could overshoot).
template <typename C>
double tau_bisect(const C* xb, int64_t k, double am1, double nfin, int iters) {
  const C d = static_cast<C>(1.0 / am1);
  double lo = -1.0, hi = -vexp(-am1 * vlog(nfin));
  for (int it = 0; it < iters; ++it) {
    const double mid = 0.5 * (lo + hi);
    double s, unused;
    power_sums<C, false>(xb, k, static_cast<C>(mid), d, s, unused);
    if (s > 1.0)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

struct Scratch {
  std::vector<double> xb, wb;  // used as float* or double*
  std::vector<int32_t> ib;
  explicit Scratch(int64_t n) : xb(n + 2 * kB), wb(4 * (n + 2 * kB)), ib(n + 2 * kB) {}
};

// one row, compute type C (float or double), after the max pass
template <typename T, typename C>
void forward_row_c(const T* z, T* out, int64_t n, double alpha, T m, double nfin, Scratch& sc) {
  C* xb = reinterpret_cast<C*>(sc.xb.data());
  C* wb = reinterpret_cast<C*>(sc.wb.data());
  int32_t* ib = sc.ib.data();
  const C mc = static_cast<C>(m);
  if (alpha == 1.0) {  // softmax
    C s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) {
      const C e = vexp(static_cast<C>(z[i]) - mc);  // exactly 0 for −inf
      wb[i] = e;
      s += e;
    }
    const C inv = C(1) / s;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(wb[i] * inv);
    return;
  }
  const C am1 = static_cast<C>(alpha - 1.0);
  int64_t k = gather<T, C>(z, n, mc, am1, xb, ib);
  double tau;
  int kind;  // 1: p = r, 2: p = r², 0: p = r^d
  if (alpha == 2.0) {
    tau = tau_sparsemax(xb, ib, k);
    kind = 1;
  } else if (alpha == 1.5) {
    tau = tau_entmax15(xb, ib, k);
    kind = 2;
  } else if (alpha > 2.0) {
    tau = tau_bisect(xb, k, static_cast<double>(am1), nfin, sizeof(C) == 8 ? 60 : 40);
    kind = 0;
  } else {
    tau = tau_lower_bound(xb, ib, k, static_cast<double>(am1));
    const double eps = sizeof(T) == 8 ? 1e-17 : 1e-9;  // second-order error allowed in p
    const C s = static_cast<C>(newton_output(xb, ib, k, static_cast<double>(am1), tau, eps, wb));
    fill(out, n, T(0));
    if (!(s > 0)) return;
    const C inv = C(1) / s;
    for (int64_t j = 0; j < k; ++j) out[ib[j]] = static_cast<T>(wb[j] * inv);
    return;
  }
  // p on the candidates (padding gives 0), normalised, scattered into a zeroed row
  const C tc = static_cast<C>(tau);
  const C d = C(1) / am1;
  const int64_t kp = round_up(k);
  // double rows: an entry within rounding of τ (r ≤ 4 ulp) is a tie with the threshold, where the exact
  // solution is 0 (e.g. x = (−¼, 0 ×16) at α = 1.5, whose τ = −¼ comes out 1 ulp low): keep it outside
  // (its weight would be ≤ 1e-15 for sparsemax, ≤ 1e-30 for 1.5-entmax).  Float rows keep r > 0.
  const C tie = sizeof(C) == 8 ? static_cast<C>(4.0 * std::numeric_limits<double>::epsilon()) : C(0);
  C s = 0;
  if (kind == 1) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < kp; ++j) {
      const C r0 = xb[j] - tc;
      const C r = r0 > tie ? r0 : C(0);
      wb[j] = r;
      s += r;
    }
  } else if (kind == 2) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < kp; ++j) {
      const C r0 = xb[j] - tc;
      const C r = r0 > tie ? r0 : C(0);
      wb[j] = r * r;
      s += r * r;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < kp; ++j) {
      const C r = xb[j] - tc;
      const bool on = r > C(0);
      const C e = vexp(d * vlog(on ? r : C(1)));
      wb[j] = on ? e : C(0);
      s += on ? e : C(0);
    }
  }
  fill(out, n, T(0));
  if (!(s > 0)) return;
  const C inv = C(1) / s;
  for (int64_t j = 0; j < k; ++j) out[ib[j]] = static_cast<T>(wb[j] * inv);
}

// the max pass: returns true when the row is settled here (NaN/+inf → NaN row, fully masked → zeros)
template <typename T>
bool row_prelude(const T* z, T* out, int64_t n, T& m, int64_t& nfin) {
  m = -std::numeric_limits<T>::infinity();
  int64_t bad = 0, fin = 0;
#pragma omp simd reduction(max : m) reduction(+ : bad, fin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = z[i];
    m = v > m ? v : m;
    bad += (v != v);
    fin += (v > -std::numeric_limits<T>::infinity());
  }
  nfin = fin;
  if (bad || m == std::numeric_limits<T>::infinity()) {  // NaN (or +inf) stays in its row
    fill(out, n, std::numeric_limits<T>::quiet_NaN());
    return true;
  }
  if (nfin == 0) {  // fully masked row
    fill(out, n, T(0));
    return true;
  }
  return false;
}

template <typename T>
void forward_row(const T* z, T* out, int64_t n, double alpha, Scratch& sc) {
  T m;
  int64_t nfin;
  if (row_prelude(z, out, n, m, nfin)) return;
  if (sizeof(T) == 4 && alpha - 1.0 >= kDoubleBelowAm1)
    forward_row_c<T, float>(z, out, n, alpha, m, static_cast<double>(nfin), sc);
  else
    forward_row_c<T, double>(z, out, n, alpha, m, static_cast<double>(nfin), sc);
}

// normalise the candidates' p (wb) and scatter them into a zeroed output row
template <typename T, typename C>
void scatter_output(T* out, int64_t n, const C* wb, const int32_t* ib, int64_t k, C s) {
  fill(out, n, T(0));
  if (!(s > 0)) return;
  const C inv = C(1) / s;
  for (int64_t j = 0; j < k; ++j) out[ib[j]] = static_cast<T>(wb[j] * inv);
}

// Rows of float type with 1 < α < 2, α ≠ 1.5 (the Newton rows), kLanes at a time: each round does the
// pass of every lane, then every lane's step.  One row's Newton iteration is a chain of dependent
// latencies (powers, a horizontal sum, a scalar power, a division, the compaction); the lanes' chains are
// independent, so the CPU overlaps them.  A lane whose row is done takes the next row at once.  Other
// rows are computed on the spot by forward_row.
constexpr int kLanes = 2;

template <typename T>
void forward_lanes(const T* z, T* out, int64_t r0, int64_t r1, int64_t n, const T* alpha, double alpha_value,
                   Scratch* sc) {
  Newton<float> L[kLanes];
  int64_t row[kLanes];
  int active = 0;
  int64_t next = r0;
  // load the next Newton row into lane `l`; false when no rows are left
  auto load = [&](int l) -> bool {
    while (next < r1) {
      const int64_t r = next++;
      const double a = alpha ? static_cast<double>(alpha[r]) : alpha_value;
      const T* zr = z + r * n;
      T* orow = out + r * n;
      if (!(a > 1.0 && a < 2.0 && a != 1.5)) {
        forward_row(zr, orow, n, a, sc[l]);
        continue;
      }
      T m;
      int64_t nfin;
      if (row_prelude(zr, orow, n, m, nfin)) continue;
      Newton<float>& nt = L[l];
      nt.xb = reinterpret_cast<float*>(sc[l].xb.data());
      nt.ib = sc[l].ib.data();
      nt.wb = reinterpret_cast<float*>(sc[l].wb.data());
      nt.ub = nt.wb + round_up(n) + kB;
      nt.k = gather<T, float>(zr, n, static_cast<float>(m), static_cast<float>(a - 1.0), nt.xb, nt.ib);
      const double tau = tau_lower_bound(nt.xb, nt.ib, nt.k, a - 1.0);
      nt.init(a - 1.0, tau, 1e-9);
      row[l] = r;
      return true;
    }
    return false;
  };
  int on[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    on[l] = load(l);
    active += on[l];
  }
  double S0[kLanes], S1[kLanes];
  while (active > 0) {
    for (int l = 0; l < kLanes; ++l)
      if (on[l]) L[l].pass(S0[l], S1[l]);
    for (int l = 0; l < kLanes; ++l) {
      if (!on[l]) continue;
      Newton<float>& nt = L[l];
      const double st = nt.step(S0[l], S1[l]);
      if (nt.done(st) || nt.k == 0) {
        const float s = static_cast<float>(nt.conclude(S0[l], S1[l], st));
        scatter_output(out + row[l] * n, n, nt.wb, nt.ib, nt.k, s);
        if (!load(l)) {
          on[l] = 0;
          --active;
        }
      } else {
        nt.advance(st);
      }
    }
  }
}

// the vector versions' remainder of support_gather: entries i0 … n−1 appended after k; their Σ p in `tail`
inline int64_t support_tail(const float* p, const float* g, int64_t i0, int64_t n, float* ps, float* gs, int32_t* is,
                            int64_t k, float& tail) {
  for (int64_t i = i0; i < n; ++i) {
    tail += p[i];
    ps[k] = p[i];
    gs[k] = g[i];
    is[k] = static_cast<int32_t>(i);
    k += (p[i] > 0.0f);
  }
  return k;
}

// the support (p > 0) of a row with g and the indices; also Σ p (NaN iff the row holds a NaN)
template <typename T, typename C>
int64_t support_gather(const T* p, const T* g, int64_t n, C* ps, C* gs, int32_t* is, C& sp) {
  int64_t k = 0;
  C acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const C pi = static_cast<C>(p[i]);
    acc += pi;
    ps[k] = pi;
    gs[k] = static_cast<C>(g[i]);
    is[k] = static_cast<int32_t>(i);
    k += (pi > C(0));
  }
  sp = acc;
  return k;
}

#ifdef __AVX512F__
template <>
int64_t support_gather<float, float>(const float* p, const float* g, int64_t n, float* ps, float* gs, int32_t* is,
                                     float& sp) {
  int64_t k = 0, i0 = 0;
  __m512 acc = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (; i0 + kB <= n; i0 += kB, iv = _mm512_add_epi32(iv, step)) {
    const __m512 pv = _mm512_loadu_ps(p + i0);
    acc = _mm512_add_ps(acc, pv);
    const __mmask16 m = _mm512_cmp_ps_mask(pv, zero, _CMP_GT_OQ);
    if (!m) continue;
    _mm512_storeu_ps(ps + k, _mm512_maskz_compress_ps(m, pv));
    _mm512_storeu_ps(gs + k, _mm512_maskz_compress_ps(m, _mm512_loadu_ps(g + i0)));
    _mm512_storeu_si512(is + k, _mm512_maskz_compress_epi32(m, iv));
    k += __builtin_popcount(static_cast<unsigned>(m));
  }
  float tail = 0.0f;
  k = support_tail(p, g, i0, n, ps, gs, is, k, tail);
  sp = _mm512_reduce_add_ps(acc) + tail;
  return k;
}
#elif defined(__AVX2__)
template <>
int64_t support_gather<float, float>(const float* p, const float* g, int64_t n, float* ps, float* gs, int32_t* is,
                                     float& sp) {
  int64_t k = 0, i0 = 0;
  __m256 acc = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  __m256i iv = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  for (; i0 + 8 <= n; i0 += 8, iv = _mm256_add_epi32(iv, step)) {
    const __m256 pv = _mm256_loadu_ps(p + i0);
    acc = _mm256_add_ps(acc, pv);
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(pv, zero, _CMP_GT_OQ));
    if (!m) continue;
    _mm256_storeu_ps(ps + k, compress_ps(pv, m));
    _mm256_storeu_ps(gs + k, compress_ps(_mm256_loadu_ps(g + i0), m));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(is + k), compress_epi32(iv, m));
    k += __builtin_popcount(static_cast<unsigned>(m));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float tail = 0.0f;
  k = support_tail(p, g, i0, n, ps, gs, is, k, tail);
  sp = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
  return k;
}
#endif

// the support (p > 0) of a row gathered after the scratch sb's first block (which then receives s): p and g
// there, padded with zeros to a multiple of kB, and the indices; `nan` when the row holds a NaN
template <typename C>
struct Support {
  C* ps;
  C* gs;
  int32_t* is;
  int64_t k;
  bool nan;
  template <typename T>
  Support(const T* p, const T* g, int64_t n, C* sb)
      : ps(sb + round_up(n) + kB), gs(ps + round_up(n) + kB), is(reinterpret_cast<int32_t*>(gs + round_up(n) + kB)) {
    C sp = 0;  // Σ p: NaN iff the row holds a NaN
    k = support_gather<T, C>(p, g, n, ps, gs, is, sp);
    for (int64_t j = k; j < round_up(k); ++j) ps[j] = gs[j] = C(0);
    nan = sp != sp;
  }
  // ∂ℓ/∂z = s ⊙ (g − c) on the support (s in sb, in support order), 0 elsewhere
  template <typename T>
  void scatter_grad(T* gz, int64_t n, const C* sb, C c) const {
    fill(gz, n, T(0));
    for (int64_t j = 0; j < k; ++j) gz[is[j]] = static_cast<T>(sb[j] * (gs[j] - c));
  }
};

// backward of one row in compute type C; writes gz (if wanted) and returns ∂ℓ/∂α (if wanted)
template <typename T, typename C>
double backward_row_c(const T* p, const T* g, T* gz, int64_t n, double alpha, bool need_z, bool need_a,
                      double alpha_one_eps, C* sb) {
  const double am1 = alpha - 1.0;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  if (alpha == 2.0 && !need_a) {
    C cnt = 0, sg = 0, sp = 0;
#pragma omp simd reduction(+ : cnt, sg, sp)
    for (int64_t i = 0; i < n; ++i) {
      const bool on = p[i] > T(0);
      cnt += on ? C(1) : C(0);
      sg += on ? static_cast<C>(g[i]) : C(0);
      sp += static_cast<C>(p[i]);  // NaN iff the row holds a NaN
    }
    if (sp != sp) {
      fill(gz, n, nan);
      return 0.0;
    }
    const C c = cnt > 0 ? sg / cnt : C(0);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gz[i] = p[i] > T(0) ? static_cast<T>(static_cast<C>(g[i]) - c) : T(0);
    return 0.0;
  }
  if (alpha == 1.5 && !need_a) {
    C s_ = 0, sg = 0, sp = 0;
#pragma omp simd reduction(+ : s_, sg, sp)
    for (int64_t i = 0; i < n; ++i) {
      const C s = std::sqrt(std::max(static_cast<C>(p[i]), C(0)));
      sb[i] = s;
      s_ += s;
      sg += s * static_cast<C>(g[i]);
      sp += static_cast<C>(p[i]);
    }
    if (sp != sp) {
      fill(gz, n, nan);
      return 0.0;
    }
    const C c = s_ > 0 ? sg / s_ : C(0);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gz[i] = static_cast<T>(sb[i] * (static_cast<C>(g[i]) - c));
    return 0.0;
  }
  // gather the support (p > 0) with g, so that the powers are computed there only
  const Support<C> sup(p, g, n, sb);
  if (sup.nan) {
    if (need_z) fill(gz, n, nan);
    return std::numeric_limits<double>::quiet_NaN();
  }
  const C *ps = sup.ps, *gs = sup.gs;
  const int64_t k = sup.k, kp = round_up(k);
  const C e2 = static_cast<C>(2.0 - alpha);
  C s_ = 0, sg = 0, gp = 0, gh = 0, hs = 0, gpl2 = 0, pl2 = 0;
  if (need_a) {
#pragma omp simd reduction(+ : s_, sg, gp, gh, hs, gpl2, pl2)
    for (int64_t j = 0; j < kp; ++j) {
      const C pi = ps[j], gi = gs[j];
      const bool on = pi > C(0);
      const C L = on ? vlog(on ? pi : C(1)) : C(0);
      const C s = on ? vexp(e2 * L) : C(0);
      const C h = -pi * L;
      sb[j] = s;
      s_ += s;
      sg += s * gi;
      gp += gi * pi;
      gh += gi * h;
      hs += h;
      gpl2 += gi * pi * L * L;
      pl2 += pi * L * L;
    }
  } else {
#pragma omp simd reduction(+ : s_, sg)
    for (int64_t j = 0; j < kp; ++j) {
      const C pi = ps[j];
      const bool on = pi > C(0);
      const C s = vexp(e2 * vlog(on ? pi : C(1)));
      sb[j] = on ? s : C(0);
      s_ += on ? s : C(0);
      sg += on ? s * gs[j] : C(0);
    }
  }
  const double S = s_, SG = sg;
  const double c = S > 0 ? SG / S : 0.0;
  if (need_z) sup.scatter_grad(gz, n, sb, static_cast<C>(c));
  if (!need_a) return 0.0;
  if (am1 < alpha_one_eps)  // the α → 1 limit
    return 0.5 * (-static_cast<double>(gpl2) + static_cast<double>(gp) * static_cast<double>(pl2));
  // Σ g (p − p̃)/(α−1)² + (Σ g h − Σ h · Σ g p̃)/(α−1),  p̃ = s/Σs
  return (static_cast<double>(gp) - c) / (am1 * am1) + (static_cast<double>(gh) - static_cast<double>(hs) * c) / am1;
}

// Backward of a float row with small ε = α − 1 (alpha_one_eps ≤ ε < kDoubleBelowAm1), in float.  With
// L = log p, t = −εL ≥ 0, m = expm1(t) and φ = m − t = Σ_{k≥2} tᵏ/k!:  s = p^{1−ε} = p(1 + m), and, using
// Σ p = 1, the α-gradient Σ g [(p − p̃)/ε² + (h − p̃ Σh)/ε] (p̃ = s/Σs, h = −p L) regroups exactly into
//     ∂ℓ/∂α = (Φ · Σ g p (1 + t) − (1 + T) · Σ g p φ) / ((1 + M) ε²),   Φ = Σ p φ, T = Σ p t, M = T + Φ,
// whose terms are all O(ε²): the two O(1/ε) parts of the textbook form, which cancel there and lose
// float precision by 1/ε², never appear.  (As ε → 0 it tends to the limit (Σgp·ΣpL² − ΣgpL²)/2.)
template <typename T>
double backward_row_small_alpha(const T* p, const T* g, T* gz, int64_t n, double am1, bool need_z, bool need_a,
                                float* sb) {
  const Support<float> sup(p, g, n, sb);
  if (sup.nan) {
    if (need_z) fill(gz, n, std::numeric_limits<T>::quiet_NaN());
    return std::numeric_limits<double>::quiet_NaN();
  }
  const float *ps = sup.ps, *gs = sup.gs;
  const int64_t k = sup.k, kp = round_up(k);
  const float e = static_cast<float>(am1);
  float s_ = 0, sg = 0, tt = 0, ph = 0, gp1 = 0, gph = 0;
#pragma omp simd reduction(+ : s_, sg, tt, ph, gp1, gph)
  for (int64_t j = 0; j < kp; ++j) {
    const float pi = ps[j], gi = gs[j];
    const bool on = pi > 0.0f;
    const float t = on ? -e * vlog(on ? pi : 1.0f) : 0.0f;
    // φ(t) = eᵗ − 1 − t: its series to t¹⁰ below 1 (relative error < 4e-8), else from exp (no cancellation)
    const float series =
        t * t *
        (0.5f + t * (1.6666667e-1f + t * (4.1666668e-2f + t * (8.3333338e-3f + t * (1.3888889e-3f +
        t * (1.9841270e-4f + t * (2.4801587e-5f + t * (2.7557319e-6f + t * 2.7557319e-7f))))))));
    const float phi = t < 1.0f ? series : vexp(t) - 1.0f - t;
    const float si = on ? pi * (1.0f + t + phi) : 0.0f;
    sb[j] = si;
    s_ += si;
    sg += si * gi;
    tt += pi * t;
    ph += pi * phi;
    gp1 += gi * pi * (1.0f + t);
    gph += gi * pi * phi;
  }
  if (need_z) sup.scatter_grad(gz, n, sb, s_ > 0.0f ? sg / s_ : 0.0f);
  if (!need_a) return 0.0;
  const double Phi = ph, Tt = tt;
  return (Phi * static_cast<double>(gp1) - (1.0 + Tt) * static_cast<double>(gph)) / ((1.0 + Tt + Phi) * am1 * am1);
}

template <typename T>
double backward_row(const T* p, const T* g, T* gz, int64_t n, double alpha, bool need_z, bool need_a,
                    double alpha_one_eps, Scratch& sc) {
  float* fb = reinterpret_cast<float*>(sc.wb.data());
  if (sizeof(T) == 4 && alpha - 1.0 >= kDoubleBelowAm1)
    return backward_row_c<T, float>(p, g, gz, n, alpha, need_z, need_a, alpha_one_eps, fb);
  if (sizeof(T) == 4 && alpha - 1.0 >= alpha_one_eps && alpha - 1.0 > 0.0)
    return backward_row_small_alpha<T>(p, g, gz, n, alpha - 1.0, need_z, need_a, fb);
  return backward_row_c<T, double>(p, g, gz, n, alpha, need_z, need_a, alpha_one_eps, sc.wb.data());
}

int threads_for(int64_t rows, int64_t n, int nthreads) {
  const int64_t work = rows * n;
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(nthreads, work / 16384 + 1));
  return static_cast<int>(std::min<int64_t>(t, rows));
}

template <typename T>
int forward_all(const T* z, T* out, int64_t rows, int64_t n, const T* alpha, double alpha_value, int nthreads) {
  if (n >= (int64_t(1) << 31)) return 1;
  const int nt = threads_for(rows, n, nthreads);
#pragma omp parallel num_threads(nt)
  {
    if (sizeof(T) == 4) {  // contiguous blocks of rows per thread, kLanes rows in flight
      std::vector<Scratch> sc(kLanes, Scratch(n));
#ifdef _OPENMP
      const int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();
#else
      const int64_t t = 0, nth = 1;
#endif
      const int64_t per = (rows + nth - 1) / nth;
      const int64_t r0 = std::min(rows, t * per), r1 = std::min(rows, r0 + per);
      forward_lanes(z, out, r0, r1, n, alpha, alpha_value, sc.data());
    } else {
      Scratch sc(n);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const double a = alpha ? static_cast<double>(alpha[r]) : alpha_value;
        forward_row(z + r * n, out + r * n, n, a, sc);
      }
    }
  }
  return 0;
}

template <typename T>
int backward_all(const T* p, const T* g, T* gz, double* ga, int64_t rows, int64_t n, const T* alpha,
                 double alpha_value, double alpha_one_eps, int nthreads) {
  if (n >= (int64_t(1) << 31)) return 1;
  const int nt = threads_for(rows, n, nthreads);
  const bool need_z = gz != nullptr, need_a = ga != nullptr;
#pragma omp parallel num_threads(nt)
  {
    Scratch sc(n);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const double a = alpha ? static_cast<double>(alpha[r]) : alpha_value;
      const double v =
          backward_row(p + r * n, g + r * n, need_z ? gz + r * n : nullptr, n, a, need_z, need_a, alpha_one_eps, sc);
      if (need_a) ga[r] = v;
    }
  }
  return 0;
}

}  // namespace

extern "C" {

int adasparse_abi_version() { return 1; }

int adasparse_entmax_forward_f32(const float* z, float* out, int64_t rows, int64_t n, const float* alpha,
                                 double alpha_value, int nthreads) {
  return forward_all<float>(z, out, rows, n, alpha, alpha_value, nthreads);
}

int adasparse_entmax_forward_f64(const double* z, double* out, int64_t rows, int64_t n, const double* alpha,
                                 double alpha_value, int nthreads) {
  return forward_all<double>(z, out, rows, n, alpha, alpha_value, nthreads);
}

int adasparse_entmax_backward_f32(const float* p, const float* g, float* gz, double* ga, int64_t rows, int64_t n,
                                  const float* alpha, double alpha_value, double alpha_one_eps, int nthreads) {
  return backward_all<float>(p, g, gz, ga, rows, n, alpha, alpha_value, alpha_one_eps, nthreads);
}

int adasparse_entmax_backward_f64(const double* p, const double* g, double* gz, double* ga, int64_t rows, int64_t n,
                                  const double* alpha, double alpha_value, double alpha_one_eps, int nthreads) {
  return backward_all<double>(p, g, gz, ga, rows, n, alpha, alpha_value, alpha_one_eps, nthreads);
}

}  // extern "C"
