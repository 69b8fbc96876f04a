/* rng.c: the global random generator (counter-based Philox4x32-10) and rand, randn, randint. */
#include "core/internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* The whole state is (seed, offset). Philox is keyed by the seed and maps a 64-bit counter to
 * 128 random bits; a call that needs `nblocks` blocks takes counters [offset, offset + nblocks)
 * and advances offset past them. Element i of a call is made from block offset + i / per-block
 * alone, so the numbers depend only on (seed, offset), never on the machine or thread count.
 *
 * Until the first ddl_manual_seed / ddl_rng_set_state, the seed comes from the OS
 * (getrandom, /dev/urandom as fallback), drawn at the first use, so fresh processes -- the
 * ranks of a job included -- draw different numbers unless they seed. ddl_manual_seed makes a
 * run reproducible. (PyTorch's CPU generator starts from a fixed seed; issue 15 asked for an
 * OS-random default.) */
static uint64_t rng_seed = 0;
static uint64_t rng_offset = 0;
static int rng_seeded = 0;
/* Guards the (seed, offset) pair: concurrent callers get disjoint counter ranges. */
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;

/* The OS's entropy, or the clock and pid where neither source works (a sandbox). Runs under
 * rng_lock. */
static void seed_from_os(void) {
    uint64_t s = 0;
    ssize_t got = getrandom(&s, sizeof s, GRND_NONBLOCK);
    if (got != (ssize_t)sizeof s) {
        FILE *f = fopen("/dev/urandom", "rb");
        size_t n = f ? fread(&s, 1, sizeof s, f) : 0;
        if (f) fclose(f);
        if (n != sizeof s) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            s = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
                ((uint64_t)getpid() << 32);
        }
    }
    rng_seed = s >> 1; /* < 2^63: round-trips through a signed 64-bit integer anywhere */
    rng_offset = 0;
    rng_seeded = 1;
}

static void ensure_seeded(void) {
    if (!rng_seeded) seed_from_os();
}

void ddl_manual_seed(uint64_t seed) { ddl_rng_set_state(seed, 0); }

uint64_t ddl_initial_seed(void) {
    pthread_mutex_lock(&rng_lock);
    ensure_seeded();
    uint64_t s = rng_seed;
    pthread_mutex_unlock(&rng_lock);
    return s;
}

void ddl_rng_get_state(uint64_t *seed, uint64_t *offset) {
    pthread_mutex_lock(&rng_lock);
    ensure_seeded();
    if (seed) *seed = rng_seed;
    if (offset) *offset = rng_offset;
    pthread_mutex_unlock(&rng_lock);
}

void ddl_rng_set_state(uint64_t seed, uint64_t offset) {
    pthread_mutex_lock(&rng_lock);
    rng_seed = seed;
    rng_offset = offset;
    rng_seeded = 1;
    pthread_mutex_unlock(&rng_lock);
}

/* Reserve `nblocks` counters: returns the seed and the first counter. */
static void rng_take(uint64_t *seed, uint64_t *first, uint64_t nblocks) {
    pthread_mutex_lock(&rng_lock);
    ensure_seeded();
    *seed = rng_seed;
    *first = rng_offset;
    rng_offset += nblocks; /* wraps after 2^64 blocks */
    pthread_mutex_unlock(&rng_lock);
}

/* ---- Philox4x32-10 (Salmon et al., SC'11; constants and rounds as in Random123) ------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
/* Blocks made together: structure-of-arrays so gcc can vectorize across blocks. */
#define BATCH 16

/* Philox4x32-10 of 128-bit counters {c0, c1, c2, c3} under key {k0, k1}, for BATCH blocks in
 * place: word w of block b is ctr[w][b]. */
static void philox_batch(uint32_t ctr[4][BATCH], uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        for (int b = 0; b < BATCH; b++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * ctr[0][b];
            uint64_t p1 = (uint64_t)PHILOX_M1 * ctr[2][b];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ ctr[1][b] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ ctr[3][b] ^ k1;
            ctr[0][b] = n0;
            ctr[1][b] = (uint32_t)p1;
            ctr[2][b] = n2;
            ctr[3][b] = (uint32_t)p0;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

/* The random words of BATCH consecutive blocks from counter `first`: words[b * 4 + w]. */
static void philox_blocks(uint32_t words[4 * BATCH], uint64_t seed, uint64_t first) {
    uint32_t ctr[4][BATCH];
    for (int b = 0; b < BATCH; b++) {
        uint64_t c = first + (uint64_t)b;
        ctr[0][b] = (uint32_t)c;
        ctr[1][b] = (uint32_t)(c >> 32);
        ctr[2][b] = 0;
        ctr[3][b] = 0;
    }
    philox_batch(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
    for (int b = 0; b < BATCH; b++)
        for (int w = 0; w < 4; w++) words[b * 4 + w] = ctr[w][b];
}

/* ---- sampling -------------------------------------------------------------------------------- */

typedef enum { DIST_UNIFORM, DIST_NORMAL, DIST_INT } dist;

static inline uint64_t join64(uint32_t hi, uint32_t lo) { return (uint64_t)hi << 32 | lo; }

/* Values per 128-bit block: float32 takes 32 bits a value, all else 64. */
static int per_block(dist d, ddl_dtype dt) { return d != DIST_INT && dt == DDL_FLOAT32 ? 4 : 2; }

/* The `per` values of one block (4 words) into v. */
static void block_values(double *v, dist d, ddl_dtype dt, const uint32_t *w) {
    const double two_pi = 6.283185307179586476925286766559;
    if (dt == DDL_FLOAT32 && d == DIST_UNIFORM) {
        for (int i = 0; i < 4; i++) v[i] = (double)(w[i] >> 8) * 0x1p-24; /* [0, 1) in float */
    } else if (d == DIST_UNIFORM) {
        for (int i = 0; i < 2; i++) v[i] = (double)(join64(w[2 * i], w[2 * i + 1]) >> 11) * 0x1p-53;
    } else if (dt == DDL_FLOAT32) {
        /* Box-Muller on two pairs of 32-bit uniforms; u1 in (0, 1] keeps log finite */
        for (int i = 0; i < 4; i += 2) {
            double u1 = ((double)w[i] + 1.0) * 0x1p-32, u2 = (double)w[i + 1] * 0x1p-32;
            double r = sqrt(-2.0 * log(u1));
            v[i] = r * cos(two_pi * u2);
            v[i + 1] = r * sin(two_pi * u2);
        }
    } else {
        double u1 = ((double)(join64(w[0], w[1]) >> 11) + 1.0) * 0x1p-53;
        double u2 = (double)(join64(w[2], w[3]) >> 11) * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        v[0] = r * cos(two_pi * u2);
        v[1] = r * sin(two_pi * u2);
    }
}

/* Fill the contiguous tensor t with uniform or normal values. */
static void fill_float(ddl_tensor *t, dist d) {
    int64_t n = ddl_tensor_numel(t);
    int per = per_block(d, t->dtype);
    uint64_t nblocks = (uint64_t)((n + per - 1) / per), seed, first;
    rng_take(&seed, &first, nblocks);
    uint32_t words[4 * BATCH];
    double v[4];
    float *pf = ddl_tensor_data(t);
    double *pd = ddl_tensor_data(t);
    for (uint64_t b0 = 0; b0 < nblocks; b0 += BATCH) {
        philox_blocks(words, seed, first + b0);
        for (uint64_t b = b0; b < nblocks && b < b0 + BATCH; b++) {
            block_values(v, d, t->dtype, words + (b - b0) * 4);
            int64_t e = (int64_t)b * per;
            int m = n - e < per ? (int)(n - e) : per;
            for (int i = 0; i < m; i++) {
                if (t->dtype == DDL_FLOAT32)
                    pf[e + i] = (float)v[i];
                else
                    pd[e + i] = v[i];
            }
        }
    }
}

static ddl_status make_float(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape, dist d,
                             const char *who) {
    if (!out) DDL_FAIL(DDL_E_VALUE, "%s: NULL output", who);
    if (!ddl_dtype_is_float(dt))
        DDL_FAIL(DDL_E_TYPE, "%s: dtype must be float32 or float64, got %s", who,
                 ddl_dtype_name(dt));
    ddl_tensor *t;
    DDL_TRY(ddl_tensor_empty(&t, ddl_dtype_compute(dt), ndim, shape));
    fill_float(t, d);
    if (t->dtype != dt) { /* float16 / bfloat16: drawn as float32, rounded */
        ddl_tensor *r;
        ddl_status st = ddl_tensor_to(&r, t, dt);
        ddl_tensor_release(t);
        DDL_TRY(st);
        t = r;
    }
    *out = t;
    return DDL_OK;
}

ddl_status ddl_rand(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape) {
    return make_float(out, dt, ndim, shape, DIST_UNIFORM, "rand");
}

ddl_status ddl_randn(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape) {
    return make_float(out, dt, ndim, shape, DIST_NORMAL, "randn");
}

ddl_status ddl_randint(ddl_tensor **out, int64_t low, int64_t high, int ndim,
                       const int64_t *shape) {
    __extension__ typedef unsigned __int128 u128;
    if (!out) DDL_FAIL(DDL_E_VALUE, "randint: NULL output");
    if (high <= low)
        DDL_FAIL(DDL_E_VALUE, "randint: high (%lld) must be greater than low (%lld)",
                 (long long)high, (long long)low);
    ddl_tensor *t;
    DDL_TRY(ddl_tensor_empty(&t, DDL_INT64, ndim, shape));
    int64_t n = ddl_tensor_numel(t);
    uint64_t range = (uint64_t)high - (uint64_t)low, nblocks = (uint64_t)((n + 1) / 2), seed, first;
    rng_take(&seed, &first, nblocks);
    int64_t *p = ddl_tensor_data(t);
    uint32_t words[4 * BATCH];
    for (uint64_t b0 = 0; b0 < nblocks; b0 += BATCH) {
        philox_blocks(words, seed, first + b0);
        for (uint64_t b = b0; b < nblocks && b < b0 + BATCH; b++) {
            const uint32_t *w = words + (b - b0) * 4;
            for (int i = 0; i < 2 && (int64_t)b * 2 + i < n; i++) {
                /* Lemire's multiply-shift: bias at most range / 2^64 */
                uint64_t r = join64(w[2 * i], w[2 * i + 1]);
                uint64_t k = (uint64_t)(((u128)r * range) >> 64);
                p[(int64_t)b * 2 + i] = (int64_t)((uint64_t)low + k);
            }
        }
    }
    *out = t;
    return DDL_OK;
}
