#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else  /* built without OpenMP (an export may be): one thread, the pragmas are ignored */
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
#endif
typedef float vf __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(32), aligned(4), may_alias));
typedef float va __attribute__((vector_size(32), aligned(32), may_alias));
static inline vf ld(const float *p) { return *(const vf *)p; }
static inline vf lda(const float *p) { return *(const va *)p; }
static inline void st(float *p, vf v) { *(vf *)p = v; }
typedef float vh __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t vhi __attribute__((vector_size(16), aligned(4), may_alias));
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
__attribute__((visibility("hidden"))) void tile_1(const float *xt, long ldx, float *yt, long ldy, const float *rt,
                   int r0, int r1, const float *restrict vals, const int32_t *restrict cols,
                   const int32_t *restrict rp, const float *restrict bias, int cout);
__attribute__((visibility("hidden"))) void tile_2(const float *xt, long ldx, float *yt, long ldy, const float *rt,
                   int r0, int r1, const float *restrict vals, const int32_t *restrict cols,
                   const int32_t *restrict rp, const float *restrict bias, int cout);

void run_0(int P, int nimg, const float *x, float *y, const float *res,
         const float *restrict vals, const int32_t *restrict cols, const int32_t *restrict rp,
         const float *restrict bias, float *scratch, int nthreads) {
    if (P <= 0 || nimg <= 0) return;  /* an empty batch: nothing to split (and no division by zero tiles) */
    const int full = P / 16, tail = P - full * 16, ntiles = full + (tail > 0);
    int chunks = (4 * nthreads + ntiles - 1) / ntiles;
    if (nthreads == 1 || chunks < 1) chunks = 1;
    if (chunks > 4) chunks = 4;
    const int per = (4 + chunks - 1) / chunks * 4;
    chunks = (16 + per - 1) / per;
    float *xs = scratch, *ys = scratch + 128, *rs = ys + 256;
    (void)res; (void)rs;
    #pragma omp parallel num_threads(nthreads)
    for (int b = 0; b < nimg; b++) {
        const float *xb = x + (long)b * 8 * P;
        float *yb = y + (long)b * 16 * P;
        const float *rb = res ? res + (long)b * 16 * P : 0;
        (void)rb;
        if (tail) {
            #pragma omp for schedule(static) nowait
            for (int c = 0; c < 8; c++) {
                memcpy(xs + (long)c * 16, xb + (long)c * P + (long)full * 16, sizeof(float) * tail);
                memset(xs + (long)c * 16 + tail, 0, sizeof(float) * (16 - tail));
            }
            #pragma omp barrier
        }
        #pragma omp for schedule(static, 1)
        for (int q = 0; q < ntiles * chunks; q++) {
            const int t = q / chunks, ch = q - t * chunks;
            const int r0 = ch * per, r1 = r0 + per < 16 ? r0 + per : 16;
            if (t < full)
                tile_2(xb + (long)t * 16, P, yb + (long)t * 16, P, rb ? rb + (long)t * 16 : 0, r0, r1,
                       vals, cols, rp, bias, 16);
            else switch ((tail + 7) / 8) {  /* the partial tile: only the vectors it needs */
                case 1: tile_1(xs, 16, ys, 16, rs, r0, r1, vals, cols, rp, bias, 16); break;
                default: tile_2(xs, 16, ys, 16, rs, r0, r1, vals, cols, rp, bias, 16);
            }
        }
        if (tail) {
            #pragma omp for schedule(static)
            for (int c = 0; c < 16; c++)
                memcpy(yb + (long)c * P + (long)full * 16, ys + (long)c * 16, sizeof(float) * tail);
        }
    }
}
long scratch_size(void) { return 640; }
