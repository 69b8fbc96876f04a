/* file.c: the file store (ddl_store_new_file, ddl_store_file_remove): a directory on a
 * filesystem every rank sees, one file per key, written to a temporary and rename()d into
 * place; read-modify-write calls take flock() on dir/.lock, get and wait poll. */
#include "store/store_impl.h"
#include "store/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Keys of up to HEX_MAX bytes are files "k-<hex of key>"; longer ones (their hex would pass
 * NAME_MAX) are "h-<128-bit hash of key, hex>". */
#define HEX_MAX 100
#define FILE_TIMEOUT_MS 300000

typedef struct {
    ddl_store base;
    char *dir;
    int64_t timeout_ms; /* __atomic */
} file_store;

/* ---- names and files ---------------------------------------------------------------------- */

static void hash128(const char *key, size_t n, uint64_t h[2]) {
    /* two independently seeded 64-bit hashes of the key; long keys are rare and trusted */
    h[0] = store_hash(0x243f6a8885a308d3ull, key, n);
    h[1] = store_hash(0x13198a2e03707344ull, key, n) ^ (uint64_t)n * 0x9e3779b97f4a7c15ull;
    h[1] ^= h[1] >> 31, h[1] *= 0xc4ceb9fe1a85ec53ull, h[1] ^= h[1] >> 29;
}

/* *path = dir/<name for key> (malloc'd). */
static ddl_status key_path(const file_store *f, const char *who, const char *key, char **path) {
    size_t kl = strlen(key), dl = strlen(f->dir);
    char *p = malloc(dl + 2 + 2 + 2 * HEX_MAX + 1);
    if (!p) DDL_FAIL(DDL_E_NOMEM, "file store %s: out of memory", who);
    memcpy(p, f->dir, dl);
    char *q = p + dl;
    *q++ = '/';
    if (kl <= HEX_MAX) {
        *q++ = 'k', *q++ = '-';
        for (size_t i = 0; i < kl; i++) q += sprintf(q, "%02x", (unsigned char)key[i]);
        *q = 0;
    } else {
        uint64_t h[2];
        hash128(key, kl, h);
        sprintf(q, "h-%016" PRIx64 "%016" PRIx64, h[0], h[1]);
    }
    *path = p;
    return DDL_OK;
}

static int is_key_name(const char *name) {
    if ((name[0] != 'k' && name[0] != 'h') || name[1] != '-') return 0;
    size_t n = strlen(name + 2);
    if (name[0] == 'h' ? n != 32 : n % 2 != 0 || n > 2 * HEX_MAX) return 0;
    for (const char *p = name + 2; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static int is_store_file(const char *name) {
    return is_key_name(name) || strcmp(name, ".lock") == 0 || strncmp(name, ".tmp-", 5) == 0;
}

/* DDL_E_COMM "<prefix>cannot <verb> <path>: <strerror>", with errno and the call as detail. */
static ddl_status fs_sys_fail(const char *who, const char *prefix, const char *verb,
                              const char *path, int e) {
    char eb[128];
    return store_detail(ddl_fail(DDL_E_COMM, "%scannot %s %s: %s", prefix, verb, path,
                                 store_errstr(e, eb, sizeof eb)),
                        e, who, NULL);
}

/* Read a whole file: 0 ok (*buf malloc'd), 1 missing, or a status. */
static int read_file(const char *who, const char *path, void **buf, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 1 : fs_sys_fail(who, "file store: ", "open", path, errno);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return fs_sys_fail(who, "file store: ", "stat", path, e);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0; /* files are never changed after rename() */
    uint8_t *b = malloc(cap);
    for (;;) {
        if (b && n == cap) {
            uint8_t *nb = realloc(b, cap * 2);
            if (!nb) free(b);
            b = nb, cap *= 2;
        }
        if (!b) {
            close(fd);
            return ddl_fail(DDL_E_NOMEM, "file store: out of memory reading %s", path);
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r > 0) {
            n += (size_t)r;
        } else if (r == 0) {
            break;
        } else if (errno != EINTR) {
            int e = errno;
            free(b);
            close(fd);
            return fs_sys_fail(who, "file store: ", "read", path, e);
        }
    }
    close(fd);
    *buf = b, *len = n;
    return 0;
}

static uint64_t tmp_seed;
static pthread_once_t tmp_once = PTHREAD_ONCE_INIT;
static void tmp_init(void) { tmp_seed = store_random_u64(); }

/* Write val to path atomically: a unique temp file in the same directory, then rename(). */
static ddl_status write_file(const char *who, const char *dir, const char *path, const void *val,
                             size_t len) {
    static uint64_t counter;
    pthread_once(&tmp_once, tmp_init);
    size_t dl = strlen(dir);
    char *tmp = malloc(dl + 80);
    if (!tmp) DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    /* pid alone may repeat across hosts sharing the filesystem: add a per-process random */
    snprintf(tmp, dl + 80, "%s/.tmp-%ld-%016" PRIx64 "-%" PRIu64, dir, (long)getpid(), tmp_seed,
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    ddl_status st = DDL_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = fs_sys_fail(who, "file store: ", "create", tmp, errno);
        free(tmp);
        return st;
    }
    const uint8_t *p = val;
    size_t left = len;
    int e = 0;
    while (left && !e) {
        ssize_t r = write(fd, p, left);
        if (r > 0)
            p += r, left -= (size_t)r;
        else if (r < 0 && errno != EINTR)
            e = errno;
    }
    if (close(fd) < 0 && !e) e = errno; /* NFS reports write errors at close */
    if (!e && rename(tmp, path) < 0) e = errno;
    if (e) {
        unlink(tmp);
        st = fs_sys_fail(who, "file store: ", "write", path, e);
    }
    free(tmp);
    return st;
}

/* ---- the directory's lock ----------------------------------------------------------------- */

/* Take the directory's lock (flock on dir/.lock, across threads and processes) within the
 * handle's timeout; *fd is to be passed to fs_unlock. */
static ddl_status fs_lock(file_store *f, const char *who, int *fd) {
    size_t dl = strlen(f->dir);
    char *path = malloc(dl + 8), prefix[64];
    if (!path) DDL_FAIL(DDL_E_NOMEM, "file store %s: out of memory", who);
    snprintf(path, dl + 8, "%s/.lock", f->dir);
    snprintf(prefix, sizeof prefix, "file store %s: ", who);
    ddl_status st = DDL_OK;
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0) {
        st = fs_sys_fail(who, prefix, "open", path, errno);
        free(path);
        return st;
    }
    int64_t timeout = __atomic_load_n(&f->timeout_ms, __ATOMIC_RELAXED);
    int64_t deadline = store_deadline(timeout), nap = 1;
    for (;;) {
        if (flock(*fd, LOCK_EX | LOCK_NB) == 0) break;
        int e = errno;
        if (e == EINTR) continue;
        if (e != EWOULDBLOCK) {
            st = fs_sys_fail(who, prefix, "lock", path, e);
            break;
        }
        if (!store_nap(deadline, &nap, 8)) {
            st = store_detail(ddl_fail(DDL_E_TIMEOUT,
                                       "file store %s: could not lock %s within %" PRId64 " ms",
                                       who, path, timeout),
                              0, who, NULL);
            break;
        }
    }
    free(path);
    if (st) {
        close(*fd);
        *fd = -1;
    }
    return st;
}

static void fs_unlock(int fd) {
    flock(fd, LOCK_UN);
    close(fd);
}

/* A read-modify-write call in progress: key's file, the directory's lock, the value read. */
typedef struct {
    char *path; /* malloc'd */
    int lk;     /* from fs_lock */
    void *old;  /* (olen,) malloc'd: the current value, when `found` */
    size_t olen;
    int found;
} fs_txn;

static void fs_end(fs_txn *t) {
    fs_unlock(t->lk);
    free(t->old);
    free(t->path);
}

/* Begin a read-modify-write call on key: its path, the lock and (with read) the current
 * value. On failure nothing is held. End it with fs_end. */
static ddl_status fs_begin(file_store *f, const char *who, const char *key, int read, fs_txn *t) {
    *t = (fs_txn){.lk = -1};
    DDL_TRY(key_path(f, who, key, &t->path));
    ddl_status st = fs_lock(f, who, &t->lk);
    if (st) {
        free(t->path);
        return st;
    }
    int r = read ? read_file(who, t->path, &t->old, &t->olen) : 1;
    if (r < 0) {
        fs_end(t);
        return (ddl_status)r;
    }
    t->found = r == 0;
    return DDL_OK;
}

/* ---- the vtable --------------------------------------------------------------------------- */

static ddl_status fs_set(ddl_store *s, const char *key, const void *val, size_t len) {
    file_store *f = (file_store *)s;
    fs_txn t;
    DDL_TRY(fs_begin(f, "set", key, 0, &t));
    ddl_status st = write_file("set", f->dir, t.path, val, len);
    fs_end(&t);
    return st;
}

static ddl_status fs_get(ddl_store *s, const char *key, void **val, size_t *len,
                         int64_t timeout_ms) {
    file_store *f = (file_store *)s;
    char *path;
    DDL_TRY(key_path(f, "get", key, &path));
    int64_t deadline = store_deadline(timeout_ms), nap = 1;
    int r;
    while ((r = read_file("get", path, val, len)) == 1 && store_nap(deadline, &nap, 32)) {
    }
    free(path);
    if (r <= 0) return (ddl_status)r;
    char q[STORE_KEY_STR];
    return store_detail(ddl_fail(DDL_E_TIMEOUT,
                                 "store get: timed out after %" PRId64
                                 " ms waiting for key %s (file store %s)",
                                 timeout_ms, store_key_str(q, key, strlen(key)), f->dir),
                        0, "get", NULL);
}

static ddl_status fs_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    file_store *f = (file_store *)s;
    fs_txn t;
    DDL_TRY(fs_begin(f, "add", key, 1, &t));
    ddl_status st = store_add_apply(result, t.old, t.olen, t.found, delta);
    if (st) {
        char msg[256], q[STORE_KEY_STR];
        snprintf(msg, sizeof msg, "%s", ddl_last_error());
        ddl_fail(st, "store add key %s: %s (file store %s)", store_key_str(q, key, strlen(key)),
                 msg, f->dir);
    } else {
        char txt[24];
        int tl = snprintf(txt, sizeof txt, "%" PRId64, *result);
        st = write_file("add", f->dir, t.path, txt, (size_t)tl);
    }
    fs_end(&t);
    return st;
}

static ddl_status fs_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, void **current, size_t *clen) {
    file_store *f = (file_store *)s;
    fs_txn t;
    DDL_TRY(fs_begin(f, "compare_set", key, 1, &t));
    ddl_status st = DDL_OK;
    if (!t.found && elen) { /* PyTorch: a missing key with a non-empty expectation */
        *current = store_memdup(expected, elen), *clen = elen;
    } else if (!t.found || (t.olen == elen && memcmp(t.old, expected, elen) == 0)) {
        st = write_file("compare_set", f->dir, t.path, desired, dlen);
        if (!st) *current = store_memdup(desired, dlen), *clen = dlen;
    } else {
        *current = t.old, *clen = t.olen;
        t.old = NULL;
    }
    fs_end(&t);
    if (!st && !*current) DDL_FAIL(DDL_E_NOMEM, "file store compare_set: out of memory");
    return st;
}

/* Whether all keys exist (*missing: index of the first one that does not, or -1). */
static ddl_status fs_exist(file_store *f, const char *who, const char *const *keys, int n,
                           int *missing) {
    *missing = -1;
    for (int i = 0; i < n; i++) {
        char *path;
        DDL_TRY(key_path(f, who, keys[i], &path));
        struct stat st;
        int r = stat(path, &st), e = errno;
        ddl_status bad =
            r < 0 && e != ENOENT ? fs_sys_fail(who, "file store: ", "stat", path, e) : DDL_OK;
        free(path);
        if (bad) return bad;
        if (r < 0) {
            *missing = i;
            return DDL_OK;
        }
    }
    return DDL_OK;
}

static ddl_status fs_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    file_store *f = (file_store *)s;
    int64_t deadline = store_deadline(timeout_ms), nap = 1;
    int missing;
    do {
        DDL_TRY(fs_exist(f, "wait", keys, n, &missing));
        if (missing < 0) return DDL_OK;
    } while (store_nap(deadline, &nap, 32));
    char what[512];
    store_keys_str(what, sizeof what, keys + missing, n - missing);
    return store_detail(ddl_fail(DDL_E_TIMEOUT,
                                 "store wait: timed out after %" PRId64
                                 " ms waiting for %s (file store %s)",
                                 timeout_ms, what, f->dir),
                        0, "wait", NULL);
}

static ddl_status fs_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    int missing;
    DDL_TRY(fs_exist((file_store *)s, "check", keys, n, &missing));
    *all_exist = missing < 0;
    return DDL_OK;
}

static ddl_status fs_del(ddl_store *s, const char *key, int *deleted) {
    fs_txn t;
    DDL_TRY(fs_begin((file_store *)s, "delete", key, 0, &t));
    int r = unlink(t.path), e = errno;
    *deleted = r == 0;
    ddl_status st = r < 0 && e != ENOENT
                        ? fs_sys_fail("delete", "file store delete: ", "remove", t.path, e)
                        : DDL_OK;
    fs_end(&t);
    return st;
}

static ddl_status fs_num_keys(ddl_store *s, int64_t *n) {
    file_store *f = (file_store *)s;
    DIR *d = opendir(f->dir);
    if (!d) return fs_sys_fail("num_keys", "file store num_keys: ", "read", f->dir, errno);
    int64_t k = 0;
    for (struct dirent *e; (e = readdir(d));) k += is_key_name(e->d_name);
    closedir(d);
    *n = k;
    return DDL_OK;
}

static void fs_set_timeout(ddl_store *s, int64_t ms) {
    __atomic_store_n(&((file_store *)s)->timeout_ms, ms, __ATOMIC_RELAXED);
}

static void fs_destroy(ddl_store *s) {
    free(((file_store *)s)->dir);
    free(s);
}

STORE_VTABLE(file_vtable, "file", fs);

/* ---- opening and removing ----------------------------------------------------------------- */

/* mkdir -p */
static ddl_status make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != 0) continue;
        char ch = *q;
        *q = 0;
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            ddl_status st = fs_sys_fail("open", "file store: ", "create directory", p, errno);
            free(p);
            return st;
        }
        *q = ch;
        if (!ch) break;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) < 0) return fs_sys_fail("open", "file store: ", "stat", path, errno);
    if (!S_ISDIR(st.st_mode)) DDL_FAIL(DDL_E_VALUE, "file store: %s is not a directory", path);
    return DDL_OK;
}

ddl_status ddl_store_new_file(ddl_store **out, const char *path) {
    STORE_CHECK_OUT(out, "file store");
    if (!path || !path[0]) DDL_FAIL(DDL_E_VALUE, "file store: path is empty");
    if (strlen(path) > PATH_MAX - 300) DDL_FAIL(DDL_E_VALUE, "file store: path is too long");
    DDL_TRY(make_dirs(path));
    char *dir;
    file_store *f = store_new(sizeof *f, path, &dir);
    if (!f) DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
    ddl_store_init(&f->base, &file_vtable);
    f->dir = dir;
    f->timeout_ms = FILE_TIMEOUT_MS;
    *out = &f->base;
    return DDL_OK;
}

ddl_status ddl_store_file_remove(const char *path) {
    static const char who[] = "remove", prefix[] = "file store remove: ";
    if (!path || !path[0]) DDL_FAIL(DDL_E_VALUE, "file store remove: path is empty");
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? DDL_OK : fs_sys_fail(who, prefix, "read", path, errno);
    size_t pl = strlen(path);
    ddl_status st = DDL_OK;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_store_file(e->d_name)) continue;
        size_t n = pl + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            st = ddl_fail(DDL_E_NOMEM, "file store remove: out of memory");
            break;
        }
        snprintf(p, n, "%s/%s", path, e->d_name);
        if (unlink(p) < 0 && errno != ENOENT && !st)
            st = fs_sys_fail(who, prefix, "remove", p, errno);
        free(p);
    }
    closedir(d);
    if (!st && rmdir(path) < 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
        return fs_sys_fail(who, prefix, "remove", path, errno);
    return st;
}
