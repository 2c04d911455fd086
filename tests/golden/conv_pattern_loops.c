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

static void body_0_prep(const float *x, float *xp) {
    /* interior of the zero-padded, phase-split planes; borders were zeroed once and never change. Rows are
       split across threads, as the conv's tiles are: each thread copies the band of rows it then reads. */
    #pragma omp for schedule(static)
    for (int iy = 0; iy < 8; iy++) {
        const int r = iy + 1;
        for (int c = 0; c < 4; c++) {
            const float *srow = x + (long)c * 64 + 0 + iy * 8;
            float *dst = xp + (long)c * 90;
            if (r % 1 == 0) {
                float *row = dst + 0 + (r / 1) * 9;
                const float *sr = srow + -1;
                for (int j = 1; j < 9; j++) row[j] = sr[j * 1];
            }
        }
    }
}

static void body_0(const float *xb, float *yb, const float *res, const float *restrict wt, const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm, const float *restrict bias, float *xp) {
        body_0_prep(xb, xp);
        const float *xin = xp;
        #pragma omp for schedule(static, 1)
        for (int q = 0; q < 40; q++) {
        const int u = q / 5, t = q - u * 5;
        const int32_t *gp = gptr + (long)u * 4;
        const float *xt = xin + (long)t * 16;
        vf a0_0 = {0}; vf a0_1 = {0};
        for (int k = gp[0]; k < gp[1]; k++) {
            const float *s = xt + (long)cidx[k] * 90;
            const float *wk = wt + (long)k * 4;
            { const float w0 = wk[0];
              a0_0 += w0 * ld(s + 9);
              a0_1 += w0 * ld(s + 17);
            }
            { const float w0 = wk[1];
              a0_0 += w0 * ld(s + 10);
              a0_1 += w0 * ld(s + 18);
            }
            { const float w0 = wk[2];
              a0_0 += w0 * ld(s + 11);
              a0_1 += w0 * ld(s + 19);
            }
            { const float w0 = wk[3];
              a0_0 += w0 * ld(s + 20);
              a0_1 += w0 * ld(s + 28);
            }
        }
        for (int k = gp[1]; k < gp[2]; k++) {
            const float *s = xt + (long)cidx[k] * 90;
            const float *wk = wt + (long)k * 4;
            { const float w0 = wk[0];
              a0_0 += w0 * ld(s + 1);
              a0_1 += w0 * ld(s + 9);
            }
            { const float w0 = wk[1];
              a0_0 += w0 * ld(s + 10);
              a0_1 += w0 * ld(s + 18);
            }
            { const float w0 = wk[2];
              a0_0 += w0 * ld(s + 11);
              a0_1 += w0 * ld(s + 19);
            }
            { const float w0 = wk[3];
              a0_0 += w0 * ld(s + 19);
              a0_1 += w0 * ld(s + 27);
            }
        }
        for (int k = gp[2]; k < gp[3]; k++) {
            const float *s = xt + (long)cidx[k] * 90;
            const float *wk = wt + (long)k * 4;
            { const float w0 = wk[0];
              a0_0 += w0 * ld(s + 1);
              a0_1 += w0 * ld(s + 9);
            }
            { const float w0 = wk[1];
              a0_0 += w0 * ld(s + 9);
              a0_1 += w0 * ld(s + 17);
            }
            { const float w0 = wk[2];
              a0_0 += w0 * ld(s + 10);
              a0_1 += w0 * ld(s + 18);
            }
            { const float w0 = wk[3];
              a0_0 += w0 * ld(s + 11);
              a0_1 += w0 * ld(s + 19);
            }
        }
        for (int k = gp[3]; k < gp[4]; k++) {
            const float *s = xt + (long)cidx[k] * 90;
            const float *wk = wt + (long)k * 4;
            { const float w0 = wk[0];
              a0_0 += w0 * ld(s + 0);
              a0_1 += w0 * ld(s + 8);
            }
            { const float w0 = wk[1];
              a0_0 += w0 * ld(s + 1);
              a0_1 += w0 * ld(s + 9);
            }
            { const float w0 = wk[2];
              a0_0 += w0 * ld(s + 10);
              a0_1 += w0 * ld(s + 18);
            }
            { const float w0 = wk[3];
              a0_0 += w0 * ld(s + 19);
              a0_1 += w0 * ld(s + 27);
            }
        }
        { const int f = u * 1 + 0;
        float tmp[16] __attribute__((aligned(64)));
        st(tmp + 0, a0_0); st(tmp + 8, a0_1);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 64;
        const float *rb = res + (long)perm[f] * 64;
        (void)rb;
        int j0 = t * 16, j1 = j0 + 16 < 72 ? j0 + 16 : 72;
        for (int j = j0; j < j1; ) {
            int yo = j / 9, xo = j - yo * 9;
            int run = 9 - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < 8 ? (8 - xo < run ? 8 - xo : run) : 0;
            if (valid == 8) {  /* a whole row (then xo = 0): explicit vector ops */
                { const vf v = act_relu(ld(tmp + j - j0 + 0) + bf + ld(rb + yo * 8 + 0)); st(yf + yo * 8 + 0, v); }
            } else {
                for (int u = 0; u < valid; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + yo * 8 + xo)[u]; v = acts_relu(v); (yf + yo * 8 + xo)[u] = v; }
            }
            j += run;
        }
        }
        }
}

void run_0(int n, const float *x, float *y, const float *res0, const float *restrict wt,
         const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm,
         const float *restrict bias, float *xp, int nthreads) {
    #pragma omp parallel num_threads(nthreads)
    for (int b = 0; b < n; b++)
        body_0(x + (long)b * 256, y + (long)b * 512, res0 + (long)b * 512, wt, gptr, cidx,
               perm, bias, xp);
}
long scratch_size(void) { return 408; }
