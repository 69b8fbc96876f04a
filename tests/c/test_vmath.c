/* test_vmath.c: csrc/vmath.h's float32 exp/tanh/sigmoid against glibc and against the exact
 * value (double libm, rounded once), and bit-identical across the ISAs ddl compiles them for.
 *
 *   test_vmath            every 4099th float32 bit pattern plus special values (~1M inputs)
 *   test_vmath --all      all 2^32 inputs (a few minutes)
 *
 * Fails (exit code 1) when a result is more than 2 ulp from glibc (expf, tanhf, and the float
 * sigmoid formula ddl used before), more than 1 ulp from the exact value, differs from glibc on
 * a special value (NaN, inf, zero and its sign), or differs between ISAs. */
#include "core/vmath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the kernels' loops as ops_elementwise.c builds them: vectorized, once per ISA */
#define LOOPS(SUF, ATTR)                                                                           \
    ATTR static void exp_##SUF(float *o, const float *x, int64_t n) {                              \
        for (int64_t i = 0; i < n; i++) o[i] = vm_exp_f32(x[i]);                                   \
    }                                                                                              \
    ATTR static void tanh_##SUF(float *o, const float *x, int64_t n) {                             \
        for (int64_t i = 0; i < n; i++) o[i] = vm_tanh_f32(x[i]);                                  \
    }                                                                                              \
    ATTR static void sigmoid_##SUF(float *o, const float *x, int64_t n) {                          \
        for (int64_t i = 0; i < n; i++) o[i] = vm_sigmoid_f32(x[i]);                               \
    }

typedef void (*loop_fn)(float *, const float *, int64_t);

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define VEC __attribute__((optimize("O3", "no-trapping-math")))
LOOPS(v4, VEC __attribute__((target("arch=x86-64-v4"))))
LOOPS(v3, VEC __attribute__((target("arch=x86-64-v3"))))
LOOPS(base, VEC)
static const char *isa_names[3] = {"x86-64-v4", "x86-64-v3", "baseline"};
static loop_fn loops[3][3] = {{exp_v4, tanh_v4, sigmoid_v4},
                              {exp_v3, tanh_v3, sigmoid_v3},
                              {exp_base, tanh_base, sigmoid_base}};
static int isa_ok(int i) {
    __builtin_cpu_init();
    if (i == 0) return __builtin_cpu_supports("x86-64-v4");
    if (i == 1) return __builtin_cpu_supports("x86-64-v3");
    return 1;
}
#define N_ISA 3
#else
LOOPS(base, )
static const char *isa_names[1] = {"native"};
static loop_fn loops[1][3] = {{exp_base, tanh_base, sigmoid_base}};
static int isa_ok(int i) { return i == 0; }
#define N_ISA 1
#endif

/* references */
static float glibc_sigmoid(float x) {
    return x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x));
}
static float exact_exp(float x) { return (float)exp((double)x); }
static float exact_tanh(float x) { return (float)tanh((double)x); }
static float exact_sigmoid(float x) {
    double d = x;
    return (float)(d >= 0 ? 1 / (1 + exp(-d)) : exp(d) / (1 + exp(d)));
}

static const char *names[3] = {"exp", "tanh", "sigmoid"};
static float (*glibc_fn[3])(float) = {expf, tanhf, glibc_sigmoid};
static float (*exact_fn[3])(float) = {exact_exp, exact_tanh, exact_sigmoid};

/* distance in ulps (in the order of float bit patterns); NaN vs NaN is 0, NaN vs a number 1e9 */
static int64_t ulps(float a, float b) {
    if (a != a || b != b) return (a != a && b != b) ? 0 : 1000000000;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia, ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return oa > ob ? oa - ob : ob - oa;
}
static int special(float v) { return v != v || isinf(v) || v == 0.0f; }

typedef struct {
    int64_t n, max_glibc, max_exact, over1_exact;
    float worst_glibc, worst_exact;
    int64_t fail;
} stats;

static void check_block(const float *x, int64_t n, float *out[N_ISA], stats st[3]) {
    for (int f = 0; f < 3; f++) {
        int first = -1;
        for (int i = 0; i < N_ISA; i++) {
            if (!isa_ok(i)) continue;
            loops[i][f](out[i], x, n);
            if (first < 0) {
                first = i;
            } else if (memcmp(out[i], out[first], (size_t)n * sizeof(float))) {
                for (int64_t j = 0; j < n; j++)
                    if (memcmp(&out[i][j], &out[first][j], sizeof(float))) {
                        if (st[f].fail++ < 10)
                            printf("FAIL %s(%a): %s gives %a, %s gives %a\n", names[f], x[j],
                                   isa_names[i], out[i][j], isa_names[first], out[first][j]);
                        break;
                    }
            }
        }
        const float *y = out[first];
        for (int64_t j = 0; j < n; j++) {
            float g = glibc_fn[f](x[j]), e = exact_fn[f](x[j]);
            int64_t dg = ulps(y[j], g), de = ulps(y[j], e);
            stats *s = &st[f];
            s->n++;
            if (dg > s->max_glibc) s->max_glibc = dg, s->worst_glibc = x[j];
            if (de > s->max_exact) s->max_exact = de, s->worst_exact = x[j];
            if (de > 1) s->over1_exact++;
            int bad_special = (special(y[j]) || special(g)) &&
                              !((y[j] != y[j] && g != g && signbit(y[j]) == signbit(g)) ||
                                (y[j] == g && signbit(y[j]) == signbit(g)));
            if (dg > 2 || de > 1 || bad_special) {
                if (s->fail++ < 10)
                    printf("FAIL %s(%a) = %a: glibc %a (%lld ulp), exact %a (%lld ulp)\n", names[f],
                           x[j], y[j], g, (long long)dg, e, (long long)de);
            }
        }
    }
}

int main(int argc, char **argv) {
    uint64_t step = (argc > 1 && !strcmp(argv[1], "--all")) ? 1 : 4099;
    enum { BLOCK = 1 << 16 };
    float *x = malloc(BLOCK * sizeof(float)), *out[N_ISA];
    for (int i = 0; i < N_ISA; i++) out[i] = malloc(BLOCK * sizeof(float));
    if (!x) return 2;
    for (int i = 0; i < N_ISA; i++)
        if (!out[i]) return 2;
    stats st[3];
    memset(st, 0, sizeof st);

    /* special and boundary values first */
    const float specials[] = {0.0f,
                              -0.0f,
                              INFINITY,
                              -INFINITY,
                              NAN,
                              -NAN,
                              1e-45f,
                              -1e-45f,
                              1e-38f,
                              -1e-38f,
                              88.72283172607421875f,
                              88.72283935546875f,
                              89.0f,
                              100.0f,
                              1e30f,
                              -87.33654f,
                              -103.972076f,
                              -103.97208f,
                              -104.0f,
                              -1e30f,
                              9.01f,
                              10.0f,
                              -10.0f,
                              20.0f,
                              0x1.fffffep127f,
                              -0x1.fffffep127f,
                              0.5f,
                              -0.5f,
                              1.0f,
                              -1.0f,
                              0.625f,
                              0.0292666f};
    int64_t ns = (int64_t)(sizeof specials / sizeof specials[0]);
    memcpy(x, specials, sizeof specials);
    check_block(x, ns, out, st);

    int64_t n = 0;
    for (uint64_t u = 0; u <= 0xffffffffull; u += step) {
        uint32_t b = (uint32_t)u;
        memcpy(&x[n++], &b, 4);
        if (n == BLOCK) {
            check_block(x, n, out, st);
            n = 0;
        }
    }
    check_block(x, n, out, st);

    int64_t fails = 0;
    for (int f = 0; f < 3; f++) {
        printf("%-8s %lld inputs: max %lld ulp from glibc (at %a), max %lld ulp from exact (at "
               "%a; %lld over 1 ulp)\n",
               names[f], (long long)st[f].n, (long long)st[f].max_glibc, st[f].worst_glibc,
               (long long)st[f].max_exact, st[f].worst_exact, (long long)st[f].over1_exact);
        fails += st[f].fail;
    }
    printf("ISAs compared:");
    for (int i = 0; i < N_ISA; i++)
        if (isa_ok(i)) printf(" %s", isa_names[i]);
    printf("\n%lld failures\n", (long long)fails);
    free(x);
    for (int i = 0; i < N_ISA; i++) free(out[i]);
    return fails > 0;
}
