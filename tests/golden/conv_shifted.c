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
            float *dst = xp + (long)c * 80;
            if (r % 1 == 0) {
                float *row = dst + 0 + (r / 1) * 8;
                const float *sr = srow + 0;
                for (int j = 0; j < 8; j++) row[j] = sr[j * 1];
            }
        }
    }
}

static void body_0(const float *xb, float *yb, const float *res, const float *restrict wt, const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm, const float *restrict bias, float *xp) {
        body_0_prep(xb, xp);
        const vf z = {0};
        #pragma omp for schedule(static)
        for (int q = 0; q < 2; q++) {
        const int t = q / 1, c0 = (q - t * 1) * 8;
        const int c1 = c0 + 8 < 8 ? c0 + 8 : 8;
        const float *xt = xp + (long)t * 32;
        
        float part[768] __attribute__((aligned(64)));
        (void)part;
        for (int b = 0; b < 4; b++) {
        for (int f = c0; f < c1; f++) {
        float *pf = part + (f - c0) * 96;
        (void)pf;
        vf c0_0, c0_1, c0_2, c0_3, c1_0, c1_1, c1_2, c1_3, c2_0, c2_1, c2_2, c2_3;
        if (b == 0) { c0_0 = z; c0_1 = z; c0_2 = z; c0_3 = z; c1_0 = z; c1_1 = z; c1_2 = z; c1_3 = z; c2_0 = z; c2_1 = z; c2_2 = z; c2_3 = z; } else { c0_0 = ld(pf + 0); c0_1 = ld(pf + 8); c0_2 = ld(pf + 16); c0_3 = ld(pf + 24); c1_0 = ld(pf + 32); c1_1 = ld(pf + 40); c1_2 = ld(pf + 48); c1_3 = ld(pf + 56); c2_0 = ld(pf + 64); c2_1 = ld(pf + 72); c2_2 = ld(pf + 80); c2_3 = ld(pf + 88); }
        const int32_t *gp = gptr + ((long)f * 4 + b) * 4;
            for (int k = gp[0]; k < gp[1]; k++) {
                const float *s = xt + cidx[k];
                const float *w = wt + (long)k * 4;
                { const vf x0 = lda(s + 8); const vf x1 = lda(s + 16); const vf x2 = lda(s + 24); const vf x3 = lda(s + 32); { const float wi = w[0]; c0_0 += wi * x0; c0_1 += wi * x1; c0_2 += wi * x2; c0_3 += wi * x3; } { const float wi = w[1]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } { const float wi = w[2]; c2_0 += wi * x0; c2_1 += wi * x1; c2_2 += wi * x2; c2_3 += wi * x3; } }
                { const vf x0 = lda(s + 16); const vf x1 = lda(s + 24); const vf x2 = lda(s + 32); const vf x3 = lda(s + 40); { const float wi = w[3]; c2_0 += wi * x0; c2_1 += wi * x1; c2_2 += wi * x2; c2_3 += wi * x3; } }
            }
            for (int k = gp[1]; k < gp[2]; k++) {
                const float *s = xt + cidx[k];
                const float *w = wt + (long)k * 4;
                { const vf x0 = lda(s + 0); const vf x1 = lda(s + 8); const vf x2 = lda(s + 16); const vf x3 = lda(s + 24); { const float wi = w[0]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
                { const vf x0 = lda(s + 8); const vf x1 = lda(s + 16); const vf x2 = lda(s + 24); const vf x3 = lda(s + 32); { const float wi = w[1]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } { const float wi = w[2]; c2_0 += wi * x0; c2_1 += wi * x1; c2_2 += wi * x2; c2_3 += wi * x3; } }
                { const vf x0 = lda(s + 16); const vf x1 = lda(s + 24); const vf x2 = lda(s + 32); const vf x3 = lda(s + 40); { const float wi = w[3]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
            }
            for (int k = gp[2]; k < gp[3]; k++) {
                const float *s = xt + cidx[k];
                const float *w = wt + (long)k * 4;
                { const vf x0 = lda(s + 0); const vf x1 = lda(s + 8); const vf x2 = lda(s + 16); const vf x3 = lda(s + 24); { const float wi = w[0]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
                { const vf x0 = lda(s + 8); const vf x1 = lda(s + 16); const vf x2 = lda(s + 24); const vf x3 = lda(s + 32); { const float wi = w[1]; c0_0 += wi * x0; c0_1 += wi * x1; c0_2 += wi * x2; c0_3 += wi * x3; } { const float wi = w[2]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } { const float wi = w[3]; c2_0 += wi * x0; c2_1 += wi * x1; c2_2 += wi * x2; c2_3 += wi * x3; } }
            }
            for (int k = gp[3]; k < gp[4]; k++) {
                const float *s = xt + cidx[k];
                const float *w = wt + (long)k * 4;
                { const vf x0 = lda(s + 0); const vf x1 = lda(s + 8); const vf x2 = lda(s + 16); const vf x3 = lda(s + 24); { const float wi = w[0]; c0_0 += wi * x0; c0_1 += wi * x1; c0_2 += wi * x2; c0_3 += wi * x3; } { const float wi = w[1]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
                { const vf x0 = lda(s + 8); const vf x1 = lda(s + 16); const vf x2 = lda(s + 24); const vf x3 = lda(s + 32); { const float wi = w[2]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
                { const vf x0 = lda(s + 16); const vf x1 = lda(s + 24); const vf x2 = lda(s + 32); const vf x3 = lda(s + 40); { const float wi = w[3]; c1_0 += wi * x0; c1_1 += wi * x1; c1_2 += wi * x2; c1_3 += wi * x3; } }
            }
        if (b < 3) { st(pf + 0, c0_0); st(pf + 8, c0_1); st(pf + 16, c0_2); st(pf + 24, c0_3); st(pf + 32, c1_0); st(pf + 40, c1_1); st(pf + 48, c1_2); st(pf + 56, c1_3); st(pf + 64, c2_0); st(pf + 72, c2_1); st(pf + 80, c2_2); st(pf + 88, c2_3); }
        else {
        float t0[48] __attribute__((aligned(64))), t1[48] __attribute__((aligned(64))), t2[48] __attribute__((aligned(64)));
        st(t0, z); st(t0 + 8, c0_0); st(t0 + 16, c0_1); st(t0 + 24, c0_2); st(t0 + 32, c0_3); st(t1 + 8, c1_0); st(t1 + 16, c1_1); st(t1 + 24, c1_2); st(t1 + 32, c1_3); st(t2 + 8, c2_0); st(t2 + 16, c2_1); st(t2 + 24, c2_2); st(t2 + 32, c2_3);
        const vi m0_0 = {0, -1, -1, -1, -1, -1, -1, -1}; const vi m2_0 = {-1, -1, -1, -1, -1, -1, -1, 0}; const vf o_0 = (vf)((vi)ld(t0 + 7) & m0_0) + ld(t1 + 8) + (vf)((vi)ld(t2 + 9) & m2_0); const vf o_1 = (vf)((vi)ld(t0 + 15) & m0_0) + ld(t1 + 16) + (vf)((vi)ld(t2 + 17) & m2_0); const vf o_2 = (vf)((vi)ld(t0 + 23) & m0_0) + ld(t1 + 24) + (vf)((vi)ld(t2 + 25) & m2_0); const vf o_3 = (vf)((vi)ld(t0 + 31) & m0_0) + ld(t1 + 32) + (vf)((vi)ld(t2 + 33) & m2_0);
        float tmp[32] __attribute__((aligned(64)));
        st(tmp + 0, o_0); st(tmp + 8, o_1); st(tmp + 16, o_2); st(tmp + 24, o_3);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 64;
        const int n = 64 - t * 32 < 32 ? 64 - t * 32 : 32;
        for (int j = 0; j < n; j += 8) {
            const int yo = (t * 32 + j) / 8;
            float *d = yf + yo * 8;
            const float *rr = res + (long)perm[f] * 64 + yo * 8;
            (void)rr;
            { const vf v = act_relu(ld(tmp + j + 0) + bf + ld(rr + 0)); st(d + 0, v); }
        }
        }
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
long scratch_size(void) { return 376; }
