/* harness.h: what the C kernel harnesses share: check counting, a seeded random source, and a
 * central-difference gradient check tight enough to fail on a 0.1% error in a backward kernel.
 *
 * The gradient check. For a sampled element x[k] of a parameter, the numeric derivative of a
 * scalar objective f (a random projection of a kernel's output, summed in double) is the
 * Richardson extrapolation (4 D(h/2) - D(h)) / 3 of two central differences D, each divided by
 * the float step actually taken: the h^2 truncation term cancels, so what is left is the
 * objective's rounding noise divided by the step. The error of an element is
 *     |analytic - numeric| / (|numeric| + floor * max_j |analytic_j|),
 * a relative error with a floor that keeps tiny gradients (pure noise) from failing. A check
 * fails when any sampled element's error exceeds rtol. With rtol = GC_RTOL (2e-4) a backward
 * scaled by 1.001 fails at its largest elements (error ~1e-3 / (1 + floor)), while the real
 * kernels stay below ~5e-5 (float32 objectives) or ~1e-6 (float64 reference objectives).
 * The largest |analytic| element is always sampled, then `nsamp - 1` more at random.
 *
 * DDL_HARNESS_SEED (an integer in the environment) changes the random draws, to check that
 * the tolerances hold beyond one seed. */
#ifndef DDL_TESTS_C_HARNESS_H
#define DDL_TESTS_C_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail = 0, n_check = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        n_check++;                                                                                 \
        if (!(cond)) {                                                                             \
            n_fail++;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* ---- random numbers (splitmix64) ---------------------------------------------------------- */

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static inline void harness_seed(void) {
    const char *s = getenv("DDL_HARNESS_SEED");
    if (s && *s) rng_state ^= strtoull(s, NULL, 0) * 0x9E3779B97F4A7C15ull;
}
static inline double urand(void) { /* [0, 1) */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}
static inline int64_t irand(int64_t lo, int64_t hi) { /* [lo, hi] */
    return lo + (int64_t)(urand() * (double)(hi - lo + 1));
}
static inline double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- gradient check ----------------------------------------------------------------------- */

typedef double (*objective_fn)(void *ctx);

#define GC_RTOL 2e-4 /* catches a 1e-3 relative error with a 5x margin */
#define GC_FLOOR 0.1 /* of max |analytic|: below it an element's error is measured absolutely */

/* Richardson-extrapolated central difference of f with respect to param[k]. */
static inline double fd_derivative(objective_fn f, void *ctx, float *param, int64_t k, double eps) {
    double d[2];
    float v = param[k];
    for (int j = 0; j < 2; j++) {
        double h = j ? eps / 2 : eps;
        float vp = (float)(v + h), vm = (float)(v - h);
        param[k] = vp;
        double fp = f(ctx);
        param[k] = vm;
        double fm = f(ctx);
        param[k] = v;
        d[j] = (fp - fm) / ((double)vp - (double)vm);
    }
    return (4 * d[1] - d[0]) / 3;
}

/* Compares `analytic` (n values, the gradient of f with respect to `param`) with central
 * differences at `nsamp` elements (all when nsamp <= 0 or >= n); one check, one line of output
 * naming `name`. Returns the worst error. */
static inline double grad_check(const char *name, objective_fn f, void *ctx, float *param,
                                int64_t n, const float *analytic, double eps, double rtol,
                                int64_t nsamp) {
    int64_t top = 0;
    double gmax = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(analytic[i]) > gmax) gmax = fabs(analytic[i]), top = i;
    int all = nsamp <= 0 || nsamp >= n;
    int64_t m = all ? n : nsamp;
    double worst = 0;
    int bad = 0;
    for (int64_t s = 0; s < m; s++) {
        int64_t k = all ? s : s == 0 ? top : irand(0, n - 1);
        double num = fd_derivative(f, ctx, param, k, eps), a = analytic[k];
        double err = fabs(a - num) / (fabs(num) + GC_FLOOR * gmax + 1e-30);
        if (!(err <= rtol)) {
            if (bad < 4)
                printf("    %s[%lld]: analytic %.8g numeric %.8g (err %.1e)\n", name, (long long)k,
                       a, num, err);
            bad++;
        }
        if (!(err <= worst)) worst = err; /* NaN sticks */
    }
    n_check++;
    if (bad) n_fail++;
    printf("  %-4s %-52s n=%-5lld sampled %-5lld max|g|=%.3g worst err %.1e (rtol %.0e)\n",
           bad ? "FAIL" : "ok", name, (long long)n, (long long)m, gmax, worst, rtol);
    return worst;
}

/* free() every pointer named (NULL ones too). */
#define FREE_ALL(...)                                                                              \
    do {                                                                                           \
        void *ptrs_[] = {__VA_ARGS__};                                                             \
        for (size_t i_ = 0; i_ < sizeof ptrs_ / sizeof *ptrs_; i_++) free(ptrs_[i_]);              \
    } while (0)

#endif
