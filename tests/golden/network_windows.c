#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else  /* built without OpenMP (an export may be): one thread, the pragmas are ignored */
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif
typedef float vf __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(64), aligned(4), may_alias));
typedef float va __attribute__((vector_size(64), aligned(64), may_alias));
static inline vf ld(const float *p) { return *(const vf *)p; }
static inline vf lda(const float *p) { return *(const va *)p; }
static inline void st(float *p, vf v) { *(vf *)p = v; }
typedef float vh __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t vhi __attribute__((vector_size(32), aligned(4), may_alias));
static inline vh ldh(const float *p) { return *(const vh *)p; }
static inline void sth(float *p, vh v) { *(vh *)p = v; }
#include <math.h>

#define TSR_ACTS(V, VI, P) \
static inline V P##sel(VI m, V a, V b) { return (V)(((VI)a & m) | ((VI)b & ~m)); } \
static inline V P##relu(V v) { V z = {0}; return (V)((VI)v & (VI)(v > z)); } \
static inline V P##hardtanh(V v, float lo, float hi) { V l = (V){0} + lo, h = (V){0} + hi; \
    v = P##sel((VI)(v > l), v, l); return P##sel((VI)(v < h), v, h); } \
static inline V P##relu6(V v) { return P##hardtanh(v, 0.f, 6.f); } \
static inline V P##leaky_relu(V v, float a) { V z = {0}; return P##sel((VI)(v > z), v, v * a); } \
static inline V P##hardsigmoid(V v) { return P##hardtanh(v + 3.f, 0.f, 6.f) * (1.f / 6.f); } \
static inline V P##hardswish(V v) { return v * P##hardsigmoid(v); } \
static inline V P##exp(V x) { /* Cephes expf: 2^n * p(r), |r| <= ln2/2 */ \
    V z = {0}, one = z + 1.f; \
    x = P##hardtanh(x, -87.3365f, 88.3762626647949f); \
    V fx = x * 1.44269504088896341f + 0.5f; \
    V t = __builtin_convertvector(__builtin_convertvector(fx, VI), V); \
    t = t - P##sel((VI)(t > fx), one, z); \
    x = x - t * 0.693359375f + t * 2.12194440e-4f; \
    V y = z + 1.9875691500E-4f; \
    y = y * x + 1.3981999507E-3f; y = y * x + 8.3334519073E-3f; y = y * x + 4.1665795894E-2f; \
    y = y * x + 1.6666665459E-1f; y = y * x + 5.0000001201E-1f; \
    y = y * x * x + x + 1.f; \
    VI e = (__builtin_convertvector(t, VI) + 127) << 23; \
    return y * (V)e; } \
static inline V P##tanh(V v) { /* a rational fit (Eigen's fast tanh): |error| < 4e-7, one division */ \
    V x = P##hardtanh(v, -7.90531110763549805f, 7.90531110763549805f), x2 = x * x; \
    V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f; p = p * x2 + -8.60467152213735e-11f; \
    p = p * x2 + 5.12229709037114e-08f; p = p * x2 + 1.48572235717979e-05f; p = p * x2 + 6.37261928875436e-04f; \
    p = (p * x2 + 4.89352455891786e-03f) * x; \
    V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f; q = q * x2 + 2.26843463243900e-03f; \
    q = q * x2 + 4.89352518554385e-03f; \
    return p / q; } \
static inline V P##sigmoid(V v) { return 0.5f + 0.5f * P##tanh(0.5f * v); } \
static inline V P##silu(V v) { return v * P##sigmoid(v); } \
static inline V P##erf(V x) { /* Abramowitz-Stegun 7.1.26, |error| < 1.5e-7 */ \
    V z = {0}; VI neg = (VI)(x < z); V ax = P##sel(neg, -x, x); \
    V t = 1.f / (1.f + 0.3275911f * ax); \
    V p = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))); \
    V r = 1.f - p * P##exp(-ax * ax); return P##sel(neg, -r, r); } \
static inline V P##gelu(V v) { return 0.5f * v * (1.f + P##erf(v * 0.70710678118654752f)); } \
static inline V P##gelu_tanh(V v) { \
    return 0.5f * v * (1.f + P##tanh(0.7978845608028654f * (v + 0.044715f * v * v * v))); }
TSR_ACTS(vf, vi, act_)
TSR_ACTS(vh, vhi, acth_)

static inline float acts_relu(float v) { return v > 0.f ? v : 0.f; }
static inline float acts_hardtanh(float v, float lo, float hi) { v = v > lo ? v : lo; return v < hi ? v : hi; }
static inline float acts_relu6(float v) { return acts_hardtanh(v, 0.f, 6.f); }
static inline float acts_leaky_relu(float v, float a) { return v > 0.f ? v : v * a; }
static inline float acts_hardsigmoid(float v) { return acts_hardtanh(v + 3.f, 0.f, 6.f) * (1.f / 6.f); }
static inline float acts_hardswish(float v) { return v * acts_hardsigmoid(v); }
static inline float acts_sigmoid(float v) { return 1.f / (1.f + expf(-v)); }
static inline float acts_silu(float v) { return v * acts_sigmoid(v); }
static inline float acts_tanh(float v) { return tanhf(v); }
static inline float acts_gelu(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
static inline float acts_gelu_tanh(float v) {
    return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))); }

/* A centralised barrier with a generation count: ~25 ns between two cores here, where OpenMP's took 0.2-0.4 us,
   and a whole network has one or two per layer. Its counters live in the call's own scratch (two calls of one
   library never share them); each thread of the team keeps a pointer to them and the team's size. */
typedef struct { unsigned count, gen; } tsr_bar;
static __thread tsr_bar *tsr_bar_;
static __thread int tsr_nthr_;
static inline void tsr_sync(void) {
    if (tsr_nthr_ == 1) return;
    tsr_bar *b = tsr_bar_;
    const unsigned gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == (unsigned)tsr_nthr_) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#elif defined(__aarch64__)
            __asm__ __volatile__("yield");
#endif
        }
    }
}

void net_forward(int n, const float *const *X, float *const *Y, void **B, void **S, void **P, int nthreads) {
    #pragma omp parallel num_threads(nthreads)
    {
    tsr_bar_ = (tsr_bar *)S[0]; tsr_nthr_ = omp_get_num_threads();
    for (int b = 0; b < n; b++) {
    const float *xb0 = X[0] + (long)b * 1764;
    float *yb0 = Y[0] + (long)b * 726;
    #pragma omp for schedule(static) nowait  /* rows across threads, like the conv tiles */
    for (int i = 0; i < 21; i++) for (int c = 0; c < 4; c++) for (int j = 0; j < 21; j++)
        ((float *)B[0])[(long)(c) * 506 + 23 + (i) * 22 + (j)] = xb0[(long)c * 441 + i * 21 + j];
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 4; c++) {
        const float bc = ((const float *)P[1])[c];
        const float *wt = (const float *)P[0] + (long)c * 25;
        const vf z = {0};
        for (int i = 0; i < 11; i++) {
        { const vi m0 = (vi){0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0}; const vi m4 = (vi){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0}; vf a0_0 = z + bc; vf a0_0_1 = z; vf a0_0_2 = z; vf a0_0_3 = z; vf a0_0_4 = z;
            { const int iy = i * 2 - 2 + 0; if (iy >= 0 && iy < 21) { { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m0); a0_0 += wt[0] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0 += wt[1] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0 += wt[2] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0 += wt[3] * x0; } { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m4); a0_0 += wt[4] * x0; } } }
            { const int iy = i * 2 - 2 + 1; if (iy >= 0 && iy < 21) { { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m0); a0_0_1 += wt[5] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_1 += wt[6] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_1 += wt[7] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_1 += wt[8] * x0; } { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m4); a0_0_1 += wt[9] * x0; } } }
            { const int iy = i * 2 - 2 + 2; if (iy >= 0 && iy < 21) { { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m0); a0_0_2 += wt[10] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_2 += wt[11] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_2 += wt[12] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_2 += wt[13] * x0; } { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m4); a0_0_2 += wt[14] * x0; } } }
            { const int iy = i * 2 - 2 + 3; if (iy >= 0 && iy < 21) { { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m0); a0_0_3 += wt[15] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_3 += wt[16] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_3 += wt[17] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_3 += wt[18] * x0; } { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m4); a0_0_3 += wt[19] * x0; } } }
            { const int iy = i * 2 - 2 + 4; if (iy >= 0 && iy < 21) { { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m0); a0_0_4 += wt[20] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_4 += wt[21] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_4 += wt[22] * x0; } { const vf x0 = __builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); a0_0_4 += wt[23] * x0; } { const vf x0 = (vf)((vi)(__builtin_shuffle(ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)]), ld(&((float *)B[0])[(long)(c) * 506 + 23 + (iy) * 22 + ((0 + 0) * 2 + 2)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})) & m4); a0_0_4 += wt[24] * x0; } } }
            a0_0 += a0_0_1 + a0_0_2 + a0_0_3 + a0_0_4;
            st(&((float *)B[1])[(long)(c) * 156 + 13 + (i) * 12 + (0)], (vf)((vi)(act_relu6(a0_0)) & (vi){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0})); }
        }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int q = 0; q < 66; q++) {
        const int c = q / 11, i = q - c * 11;
        float acc[11];
        const float bc = ((const float *)P[3])[c];
        for (int j = 0; j < 11; j++) acc[j] = bc;
        for (int k = 0; k < 2; k++) {
        const int ci = c / 3 * 2 + k;
        const float *wt = (const float *)P[2] + ((long)c * 2 + k) * 9;
        { const int iy = i * 1 - 1 + 0; if (iy >= 0 && iy < 11) {
            { const float wv = wt[0]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (0 - 1)]; for (int j = 1; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[1]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (1 - 1)]; for (int j = 0; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[2]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (2 - 1)]; for (int j = 0; j < 10; j++) acc[j] += wv * xr[j * 1]; } } }
        { const int iy = i * 1 - 1 + 1; if (iy >= 0 && iy < 11) {
            { const float wv = wt[3]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (0 - 1)]; for (int j = 1; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[4]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (1 - 1)]; for (int j = 0; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[5]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (2 - 1)]; for (int j = 0; j < 10; j++) acc[j] += wv * xr[j * 1]; } } }
        { const int iy = i * 1 - 1 + 2; if (iy >= 0 && iy < 11) {
            { const float wv = wt[6]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (0 - 1)]; for (int j = 1; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[7]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (1 - 1)]; for (int j = 0; j < 11; j++) acc[j] += wv * xr[j * 1]; }
            { const float wv = wt[8]; const float *xr = &((float *)B[1])[(long)(ci) * 156 + 13 + (iy) * 12 + (2 - 1)]; for (int j = 0; j < 10; j++) acc[j] += wv * xr[j * 1]; } } }
        }
        for (int j = 0; j < 11; j++) { float v = acc[j]; ((float *)B[2])[(long)(c) * 156 + 13 + (i) * 12 + (j)] = v; }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 6; c++) for (int i = 0; i < 11; i++) for (int j = 0; j < 11; j++)
        yb0[(long)c * 121 + i * 11 + j] = ((float *)B[2])[(long)(c) * 156 + 13 + (i) * 12 + (j)];
    tsr_sync();
    }
    }
}
