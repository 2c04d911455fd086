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

static void conv0_prep(const float *x, float *xp) { (void)x; (void)xp; }

static void conv0(const float *xb, float *yb, const float *restrict wt, const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm, const float *restrict bias, const float *restrict cmask, float *xp) {
        conv0_prep(xb, xp);
        const float *xin = xb;
        #pragma omp for schedule(static, 1) nowait
        for (int q = 0; q < 6; q++) {
        const int u = q / 3, t = q - u * 3;
        const int32_t *gp = gptr + (long)u * 1;
        const float *xt = xin + (long)t * 64;
        vf a0_0 = {0}; vf a0_1 = {0}; vf a0_2 = {0}; vf a0_3 = {0}; vf a1_0 = {0}; vf a1_1 = {0}; vf a1_2 = {0}; vf a1_3 = {0}; vf a2_0 = {0}; vf a2_1 = {0}; vf a2_2 = {0}; vf a2_3 = {0}; vf a3_0 = {0}; vf a3_1 = {0}; vf a3_2 = {0}; vf a3_3 = {0};
        for (int k = gp[0]; k < gp[1]; k++) {
            const float *s = xt + (long)cidx[k] * 182;
            const float *wk = wt + (long)k * 36;
            { const float w0 = wk[0]; const float w1 = wk[9]; const float w2 = wk[18]; const float w3 = wk[27];
              { const vf x = ld(s + 0); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 16); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 32); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 48); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[1]; const float w1 = wk[10]; const float w2 = wk[19]; const float w3 = wk[28];
              { const vf x = ld(s + 1); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 17); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 33); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 49); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[2]; const float w1 = wk[11]; const float w2 = wk[20]; const float w3 = wk[29];
              { const vf x = ld(s + 2); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 18); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 34); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 50); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[3]; const float w1 = wk[12]; const float w2 = wk[21]; const float w3 = wk[30];
              { const vf x = ld(s + 13); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 29); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 45); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 61); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[4]; const float w1 = wk[13]; const float w2 = wk[22]; const float w3 = wk[31];
              { const vf x = ld(s + 14); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 30); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 46); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 62); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[5]; const float w1 = wk[14]; const float w2 = wk[23]; const float w3 = wk[32];
              { const vf x = ld(s + 15); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 31); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 47); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 63); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[6]; const float w1 = wk[15]; const float w2 = wk[24]; const float w3 = wk[33];
              { const vf x = ld(s + 26); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 42); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 58); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 74); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[7]; const float w1 = wk[16]; const float w2 = wk[25]; const float w3 = wk[34];
              { const vf x = ld(s + 27); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 43); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 59); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 75); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
            { const float w0 = wk[8]; const float w1 = wk[17]; const float w2 = wk[26]; const float w3 = wk[35];
              { const vf x = ld(s + 28); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 44); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 60); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 76); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
        }
        { const int f = u * 4 + 0;
        const float bf = bias[f];
        const long base = (long)perm[f] * 182 + (long)t * 64 + 14;
        float *yo = yb + base;
        const float *mk = cmask + (long)t * 64;
        if (t < 2) { st(yo + 0, act_relu(a0_0 + bf) * ld(mk + 0)); st(yo + 16, act_relu(a0_1 + bf) * ld(mk + 16)); st(yo + 32, act_relu(a0_2 + bf) * ld(mk + 32)); st(yo + 48, act_relu(a0_3 + bf) * ld(mk + 48)); }
        else {
            float tmp[64] __attribute__((aligned(64)));
            st(tmp + 0, a0_0); st(tmp + 16, a0_1); st(tmp + 32, a0_2); st(tmp + 48, a0_3);
            for (int u = 0; u < 156 - t * 64 && u < 64; u++) {
                float v = tmp[u] + bf;   v = acts_relu(v);
                yo[u] = v * mk[u];
            }
        }
        }
        { const int f = u * 4 + 1;
        const float bf = bias[f];
        const long base = (long)perm[f] * 182 + (long)t * 64 + 14;
        float *yo = yb + base;
        const float *mk = cmask + (long)t * 64;
        if (t < 2) { st(yo + 0, act_relu(a1_0 + bf) * ld(mk + 0)); st(yo + 16, act_relu(a1_1 + bf) * ld(mk + 16)); st(yo + 32, act_relu(a1_2 + bf) * ld(mk + 32)); st(yo + 48, act_relu(a1_3 + bf) * ld(mk + 48)); }
        else {
            float tmp[64] __attribute__((aligned(64)));
            st(tmp + 0, a1_0); st(tmp + 16, a1_1); st(tmp + 32, a1_2); st(tmp + 48, a1_3);
            for (int u = 0; u < 156 - t * 64 && u < 64; u++) {
                float v = tmp[u] + bf;   v = acts_relu(v);
                yo[u] = v * mk[u];
            }
        }
        }
        { const int f = u * 4 + 2;
        const float bf = bias[f];
        const long base = (long)perm[f] * 182 + (long)t * 64 + 14;
        float *yo = yb + base;
        const float *mk = cmask + (long)t * 64;
        if (t < 2) { st(yo + 0, act_relu(a2_0 + bf) * ld(mk + 0)); st(yo + 16, act_relu(a2_1 + bf) * ld(mk + 16)); st(yo + 32, act_relu(a2_2 + bf) * ld(mk + 32)); st(yo + 48, act_relu(a2_3 + bf) * ld(mk + 48)); }
        else {
            float tmp[64] __attribute__((aligned(64)));
            st(tmp + 0, a2_0); st(tmp + 16, a2_1); st(tmp + 32, a2_2); st(tmp + 48, a2_3);
            for (int u = 0; u < 156 - t * 64 && u < 64; u++) {
                float v = tmp[u] + bf;   v = acts_relu(v);
                yo[u] = v * mk[u];
            }
        }
        }
        { const int f = u * 4 + 3;
        const float bf = bias[f];
        const long base = (long)perm[f] * 182 + (long)t * 64 + 14;
        float *yo = yb + base;
        const float *mk = cmask + (long)t * 64;
        if (t < 2) { st(yo + 0, act_relu(a3_0 + bf) * ld(mk + 0)); st(yo + 16, act_relu(a3_1 + bf) * ld(mk + 16)); st(yo + 32, act_relu(a3_2 + bf) * ld(mk + 32)); st(yo + 48, act_relu(a3_3 + bf) * ld(mk + 48)); }
        else {
            float tmp[64] __attribute__((aligned(64)));
            st(tmp + 0, a3_0); st(tmp + 16, a3_1); st(tmp + 32, a3_2); st(tmp + 48, a3_3);
            for (int u = 0; u < 156 - t * 64 && u < 64; u++) {
                float v = tmp[u] + bf;   v = acts_relu(v);
                yo[u] = v * mk[u];
            }
        }
        }
        }
        tsr_sync();
}

static void conv1_prep(const float *x, float *xp) {
    /* interior of the zero-padded, phase-split planes; borders were zeroed once and never change. Rows are
       split across threads, as the conv's tiles are: each thread copies the band of rows it then reads. */
    #pragma omp for schedule(static) nowait
    for (int iy = 0; iy < 6; iy++) {
        const int r = iy + 0;
        for (int c = 0; c < 8; c++) {
            const float *srow = x + (long)c * 56 + 8 + iy * 7;
            float *dst = xp + (long)c * 36;
            if (r % 1 == 0) {
                float *row = dst + 0 + (r / 1) * 6;
                const float *sr = srow + 0;
                for (int j = 0; j < 6; j++) row[j] = sr[j * 1];
            }
        }
    }
        tsr_sync();
}

static void conv1(const float *xb, float *yb, const float *res, const float *restrict wt, const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm, const float *restrict bias, float *xp) {
        conv1_prep(xb, xp);
        const float *xin = xp;
        #pragma omp for schedule(static, 1) nowait
        for (int q = 0; q < 2; q++) {
        const int u = q / 1, t = q - u * 1;
        const int32_t *gp = gptr + (long)u * 1;
        const float *xt = xin + (long)t * 64;
        vf a0_0 = {0}; vf a0_1 = {0}; vf a0_2 = {0}; vf a0_3 = {0}; vf a1_0 = {0}; vf a1_1 = {0}; vf a1_2 = {0}; vf a1_3 = {0}; vf a2_0 = {0}; vf a2_1 = {0}; vf a2_2 = {0}; vf a2_3 = {0}; vf a3_0 = {0}; vf a3_1 = {0}; vf a3_2 = {0}; vf a3_3 = {0};
        for (int k = gp[0]; k < gp[1]; k++) {
            const float *s = xt + (long)cidx[k] * 36;
            const float *wk = wt + (long)k * 4;
            { const float w0 = wk[0]; const float w1 = wk[1]; const float w2 = wk[2]; const float w3 = wk[3];
              { const vf x = ld(s + 0); a0_0 += w0 * x; a1_0 += w1 * x; a2_0 += w2 * x; a3_0 += w3 * x; }
              { const vf x = ld(s + 16); a0_1 += w0 * x; a1_1 += w1 * x; a2_1 += w2 * x; a3_1 += w3 * x; }
              { const vf x = ld(s + 32); a0_2 += w0 * x; a1_2 += w1 * x; a2_2 += w2 * x; a3_2 += w3 * x; }
              { const vf x = ld(s + 48); a0_3 += w0 * x; a1_3 += w1 * x; a2_3 += w2 * x; a3_3 += w3 * x; }
            }
        }
        { const int f = u * 4 + 0;
        float tmp[64] __attribute__((aligned(64)));
        st(tmp + 0, a0_0); st(tmp + 16, a0_1); st(tmp + 32, a0_2); st(tmp + 48, a0_3);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 56;
        const float *rb = res + (long)perm[f] * 56;
        (void)rb;
        int j0 = t * 64, j1 = j0 + 64 < 36 ? j0 + 64 : 36;
        for (int j = j0; j < j1; ) {
            int yo = j / 6, xo = j - yo * 6;
            int run = 6 - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < 6 ? (6 - xo < run ? 6 - xo : run) : 0;
            if (valid == 6) {  /* a whole row (then xo = 0): explicit vector ops */
                for (int u = 0; u < 6; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7)[u]; (yf + 8 + yo * 7)[u] = v; }
            } else {
                for (int u = 0; u < valid; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7 + xo)[u]; (yf + 8 + yo * 7 + xo)[u] = v; }
            }
            j += run;
        }
        }
        { const int f = u * 4 + 1;
        float tmp[64] __attribute__((aligned(64)));
        st(tmp + 0, a1_0); st(tmp + 16, a1_1); st(tmp + 32, a1_2); st(tmp + 48, a1_3);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 56;
        const float *rb = res + (long)perm[f] * 56;
        (void)rb;
        int j0 = t * 64, j1 = j0 + 64 < 36 ? j0 + 64 : 36;
        for (int j = j0; j < j1; ) {
            int yo = j / 6, xo = j - yo * 6;
            int run = 6 - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < 6 ? (6 - xo < run ? 6 - xo : run) : 0;
            if (valid == 6) {  /* a whole row (then xo = 0): explicit vector ops */
                for (int u = 0; u < 6; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7)[u]; (yf + 8 + yo * 7)[u] = v; }
            } else {
                for (int u = 0; u < valid; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7 + xo)[u]; (yf + 8 + yo * 7 + xo)[u] = v; }
            }
            j += run;
        }
        }
        { const int f = u * 4 + 2;
        float tmp[64] __attribute__((aligned(64)));
        st(tmp + 0, a2_0); st(tmp + 16, a2_1); st(tmp + 32, a2_2); st(tmp + 48, a2_3);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 56;
        const float *rb = res + (long)perm[f] * 56;
        (void)rb;
        int j0 = t * 64, j1 = j0 + 64 < 36 ? j0 + 64 : 36;
        for (int j = j0; j < j1; ) {
            int yo = j / 6, xo = j - yo * 6;
            int run = 6 - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < 6 ? (6 - xo < run ? 6 - xo : run) : 0;
            if (valid == 6) {  /* a whole row (then xo = 0): explicit vector ops */
                for (int u = 0; u < 6; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7)[u]; (yf + 8 + yo * 7)[u] = v; }
            } else {
                for (int u = 0; u < valid; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7 + xo)[u]; (yf + 8 + yo * 7 + xo)[u] = v; }
            }
            j += run;
        }
        }
        { const int f = u * 4 + 3;
        float tmp[64] __attribute__((aligned(64)));
        st(tmp + 0, a3_0); st(tmp + 16, a3_1); st(tmp + 32, a3_2); st(tmp + 48, a3_3);
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * 56;
        const float *rb = res + (long)perm[f] * 56;
        (void)rb;
        int j0 = t * 64, j1 = j0 + 64 < 36 ? j0 + 64 : 36;
        for (int j = j0; j < j1; ) {
            int yo = j / 6, xo = j - yo * 6;
            int run = 6 - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < 6 ? (6 - xo < run ? 6 - xo : run) : 0;
            if (valid == 6) {  /* a whole row (then xo = 0): explicit vector ops */
                for (int u = 0; u < 6; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7)[u]; (yf + 8 + yo * 7)[u] = v; }
            } else {
                for (int u = 0; u < valid; u++) { float v = (tmp + j - j0)[u] + bf; v += (rb + 8 + yo * 7 + xo)[u]; (yf + 8 + yo * 7 + xo)[u] = v; }
            }
            j += run;
        }
        }
        }
        tsr_sync();
}

void net_forward(int n, const float *const *X, float *const *Y, void **B, void **S, void **P, int nthreads) {
    #pragma omp parallel num_threads(nthreads)
    {
    tsr_bar_ = (tsr_bar *)S[2]; tsr_nthr_ = omp_get_num_threads();
    for (int b = 0; b < n; b++) {
    const float *xb0 = X[0] + (long)b * 432;
    float *yb0 = Y[0] + (long)b * 5;
    #pragma omp for schedule(static) nowait  /* rows across threads, like the conv tiles */
    for (int i = 0; i < 12; i++) for (int c = 0; c < 3; c++) for (int j = 0; j < 12; j++)
        ((float *)B[0])[(long)(c) * 182 + 14 + (i) * 13 + (j)] = xb0[(long)c * 144 + i * 12 + j];
    tsr_sync();
    conv0(((float *)B[0]), ((float *)B[1]), (const float *)P[0], (const int32_t *)P[1], (const int32_t *)P[2], (const int32_t *)P[3], (const float *)P[4], (const float *)P[5], (float *)S[0]);
    #pragma omp for schedule(static) nowait  /* rows across threads, like the conv tiles */
    for (int q = 0; q < 48; q++) {
        const int c = q / 6, i = q - c * 6;
        const vf ninf = (vf){0} - INFINITY;
        { const vi k0 = (vi){0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1}; vf a = ninf;
            { const int iy = i * 2 - 1 + 0; if (iy >= 0 && iy < 12) { { const vf q = (vf)(((vi)__builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) & k0) | ((vi)ninf & ~k0)); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } } }
            { const int iy = i * 2 - 1 + 1; if (iy >= 0 && iy < 12) { { const vf q = (vf)(((vi)__builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) & k0) | ((vi)ninf & ~k0)); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } } }
            { const int iy = i * 2 - 1 + 2; if (iy >= 0 && iy < 12) { { const vf q = (vf)(((vi)__builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + -1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) & k0) | ((vi)ninf & ~k0)); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 0)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } { const vf q = __builtin_shuffle(ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)]), ld(&((float *)B[1])[(long)(c) * 182 + 14 + (iy) * 13 + ((0) * 2 + 1)] + 16), (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}); const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | ((vi)a & ~t)); } } }
            { float t_[16] __attribute__((aligned(64))); st(t_, a); for (int j = 0; j < 6; j++) { const float v = t_[j - 0]; ((float *)B[2])[(long)(c) * 56 + 8 + (i) * 7 + (j)] = v; } } }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 8; c++) {
        const float bc = ((const float *)P[7])[c];
        const float *wt = (const float *)P[6] + (long)c * 9;
        const vf z = {0}; const vf w0 = z + wt[0]; const vf w1 = z + wt[1]; const vf w2 = z + wt[2]; const vf w3 = z + wt[3]; const vf w4 = z + wt[4]; const vf w5 = z + wt[5]; const vf w6 = z + wt[6]; const vf w7 = z + wt[7]; const vf w8 = z + wt[8];
        int i = 0;
        for (; i + 1 < 6; i += 2) {
        { vf a0_0 = z + bc; vf a0_0_1 = z; vf a0_0_2 = z; vf a1_0 = z + bc; vf a1_0_1 = z; vf a1_0_2 = z;
            { const int iy = i * 1 - 1 + 0; if (iy >= 0 && iy < 6) { { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + -1)]); a0_0 += w0 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 0)]); a0_0 += w1 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 1)]); a0_0 += w2 * x0; } } }
            { const int iy = i * 1 - 1 + 1; if (iy >= 0 && iy < 6) { { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + -1)]); a0_0_1 += w3 * x0; a1_0 += w0 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 0)]); a0_0_1 += w4 * x0; a1_0 += w1 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 1)]); a0_0_1 += w5 * x0; a1_0 += w2 * x0; } } }
            { const int iy = i * 1 - 1 + 2; if (iy >= 0 && iy < 6) { { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + -1)]); a0_0_2 += w6 * x0; a1_0_1 += w3 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 0)]); a0_0_2 += w7 * x0; a1_0_1 += w4 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 1)]); a0_0_2 += w8 * x0; a1_0_1 += w5 * x0; } } }
            { const int iy = i * 1 - 1 + 3; if (iy >= 0 && iy < 6) { { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + -1)]); a1_0_2 += w6 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 0)]); a1_0_2 += w7 * x0; } { const vf x0 = ld(&((float *)B[2])[(long)(c) * 56 + 8 + (iy) * 7 + ((0 + 0) * 1 + 1)]); a1_0_2 += w8 * x0; } } }
            a0_0 += a0_0_1 + a0_0_2; a1_0 += a1_0_1 + a1_0_2;
            st(&((float *)B[3])[(long)(c) * 56 + 8 + (i) * 7 + (0)], (vf)((vi)(act_silu(a0_0)) & (vi){-1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})); st(&((float *)B[3])[(long)(c) * 56 + 8 + (i + 1) * 7 + (0)], (vf)((vi)(act_silu(a1_0)) & (vi){-1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})); }
        }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 8; c++) {
        const float *p = &((float *)B[3])[(long)(c) * 56 + 8 + (0) * 7 + (0)]; vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int j = 0; j < 0; j += 64) { a0 += ld(p + j); a1 += ld(p + j + 16); a2 += ld(p + j + 32); a3 += ld(p + j + 48); }
        for (int j = 0; j < 32; j += 16) a0 += ld(p + j); a0 += (vf)((vi)ld(p + 32) & (vi){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0});
        const vf a = (a0 + a1) + (a2 + a3); float s = 0.f; for (int l = 0; l < 16; l++) s += a[l];
        const float v = s * 0.027777777777777776f; ((float *)B[4])[(long)(c) * 1 + (0) * 1 + (0)] = v;
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int q = 0; q < 1; q++) {
        const vf z = {0}; (void)z;
        { vf a0 = ld(((const float *)P[9]) + q * 16 + 0);
        for (int i = 0; i < 8; i++) { const float xv = ((float *)B[4])[i];
            const float *w = (const float *)P[10] + (long)i * 16 + q * 16; a0 += xv * ld(w + 0); }
        float t_[16] __attribute__((aligned(64))); st(t_ + 0, act_relu(a0));
        for (int o = q * 16; o < q * 16 + 16 && o < 4; o++) {
            float s = t_[o - (q * 16)]; ((float *)B[5])[o] = s; } }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int q = 0; q < 1; q++) {
        const vf z = {0}; (void)z;
        { vf a0 = ld(((const float *)P[12]) + q * 16 + 0);
        for (int i = 0; i < 4; i++) { const float xv = ((float *)B[5])[i];
            const float *w = (const float *)P[13] + (long)i * 16 + q * 16; a0 += xv * ld(w + 0); }
        float t_[16] __attribute__((aligned(64))); st(t_ + 0, act_sigmoid(a0));
        for (int o = q * 16; o < q * 16 + 16 && o < 8; o++) {
            float s = t_[o - (q * 16)]; ((float *)B[4])[o] = s; } }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 8; c++) { const float s = ((float *)B[4])[c];
        const float *xr = &((float *)B[3])[(long)(c) * 56 + 8 + (0) * 7 + (0)]; float *yr = &((float *)B[6])[(long)(c) * 56 + 8 + (0) * 7 + (0)];
        for (int j = 0; j < 42; j++) yr[j] = xr[j] * s; }
    tsr_sync();
    conv1(((float *)B[6]), ((float *)B[3]), ((float *)B[2]), (const float *)P[14], (const int32_t *)P[15], (const int32_t *)P[16], (const int32_t *)P[17], (const float *)P[18], (float *)S[1]);
    #pragma omp for schedule(static) nowait
    for (int c = 0; c < 8; c++) {
        const float *p = &((float *)B[3])[(long)(c) * 56 + 8 + (0) * 7 + (0)]; vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int j = 0; j < 0; j += 64) { a0 += ld(p + j); a1 += ld(p + j + 16); a2 += ld(p + j + 32); a3 += ld(p + j + 48); }
        for (int j = 0; j < 32; j += 16) a0 += ld(p + j); a0 += (vf)((vi)ld(p + 32) & (vi){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0});
        const vf a = (a0 + a1) + (a2 + a3); float s = 0.f; for (int l = 0; l < 16; l++) s += a[l];
        const float v = s * 0.027777777777777776f; ((float *)B[4])[(long)(c) * 1 + (0) * 1 + (0)] = v;
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (int q = 0; q < 1; q++) {
        const vf z = {0}; (void)z;
        { vf a0 = ld(((const float *)P[20]) + q * 16 + 0);
        for (int i = 0; i < 8; i++) { const float xv = ((float *)B[4])[i];
            const float *w = (const float *)P[21] + (long)i * 16 + q * 16; a0 += xv * ld(w + 0); }
        float t_[16] __attribute__((aligned(64))); st(t_ + 0, (a0));
        for (int o = q * 16; o < q * 16 + 16 && o < 5; o++) {
            float s = t_[o - (q * 16)]; ((float *)B[7])[o] = s; } }
    }
    tsr_sync();
    #pragma omp for schedule(static) nowait
    for (long i = 0; i < 5; i++) yb0[i] = ((float *)B[7])[i];
    tsr_sync();
    }
    }
}
