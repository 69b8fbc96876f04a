/* test_store_errors.c: the structured error record (ddl_last_error_info) of store failures at a
 * system call or a peer: op, peer address, errno. Built by tests/test_store.py with ASan and
 * UBSan against the .c files of csrc/store and core/error.c; exits 1 if any check fails. */
#include "ddl/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (message: %s)\n", ddl_last_error());                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* The call failed with st, and the record says op/peer/errno (peer NULL: must be empty;
 * err < 0: any errno). */
static void expect(const char *what, ddl_status got, ddl_status st, const char *op,
                   const char *peer, int err) {
    const ddl_error_info *d = ddl_last_error_info();
    CHECK(got == st, "%s: status %d, expected %d", what, got, st);
    CHECK(strcmp(d->op, op) == 0, "%s: op '%s', expected '%s'", what, d->op, op);
    CHECK(strcmp(d->peer, peer ? peer : "") == 0, "%s: peer '%s', expected '%s'", what, d->peer,
          peer ? peer : "");
    CHECK(err < 0 || d->sys_errno == err, "%s: sys_errno %d, expected %d", what, d->sys_errno, err);
}

static void tcp_checks(void) {
    ddl_tcp_server *srv = NULL, *srv2 = NULL;
    ddl_store *s = NULL, *p = NULL;
    int port = 0;
    char peer[64];
    void *v = NULL;
    size_t n = 0;
    CHECK(ddl_tcp_server_new(&srv, "127.0.0.1", 0, &port) == DDL_OK, "server");
    snprintf(peer, sizeof peer, "127.0.0.1:%d", port);
    CHECK(ddl_store_new_tcp(&s, "127.0.0.1", port, 5000) == DDL_OK, "connect");

    expect("get timeout", ddl_store_get(s, "missing", &v, &n, 20), DDL_E_TIMEOUT, "get", peer, 0);
    const char *keys[] = {"a", "b"};
    expect("wait timeout", ddl_store_wait(s, keys, 2, 20), DDL_E_TIMEOUT, "wait", peer, 0);
    CHECK(ddl_store_set(s, "x", "y", 1) == DDL_OK, "set");
    expect("add on text", ddl_store_add(s, "x", 1, NULL), DDL_E_VALUE, "add", peer, 0);
    CHECK(ddl_store_new_prefix(&p, "job", s) == DDL_OK, "prefix");
    expect("prefix get timeout", ddl_store_get(p, "k", &v, &n, 20), DDL_E_TIMEOUT, "get", peer, 0);

    /* a second server on the same port cannot listen */
    expect("port taken", ddl_tcp_server_new(&srv2, "127.0.0.1", port, NULL), DDL_E_COMM, "listen",
           peer, EADDRINUSE);

    /* the server goes away: the pooled connection is closed, then nothing answers */
    ddl_tcp_server_free(srv);
    expect("server gone", ddl_store_set(s, "k", "v", 1), DDL_E_COMM, "set", peer, -1);
    expect("unreachable", ddl_store_num_keys(s, (int64_t[1]){0}), DDL_E_COMM, "num_keys", peer,
           ECONNREFUSED);
    ddl_store_release(p);
    ddl_store_release(s);

    ddl_store *s2 = NULL;
    expect("connect refused", ddl_store_new_tcp(&s2, "127.0.0.1", port, 50), DDL_E_TIMEOUT,
           "connect", peer, ECONNREFUSED);
    CHECK(s2 == NULL, "no handle on failure");

    /* argument errors carry no detail */
    expect("NULL store", ddl_store_get(NULL, "k", &v, &n, 0), DDL_E_VALUE, "", NULL, 0);
}

static void file_checks(const char *dir) {
    char path[512], sub[600];
    ddl_store *s = NULL;
    void *v = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/fs", dir);
    CHECK(ddl_store_new_file(&s, path) == DDL_OK, "file store");
    expect("file get timeout", ddl_store_get(s, "missing", &v, &n, 10), DDL_E_TIMEOUT, "get", NULL,
           0);
    const char *keys[] = {"a"};
    expect("file wait timeout", ddl_store_wait(s, keys, 1, 10), DDL_E_TIMEOUT, "wait", NULL, 0);
    ddl_store_release(s);

    /* a regular file where a directory should be: mkdir fails with ENOTDIR */
    snprintf(path, sizeof path, "%s/plain", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "create %s", path);
    if (f) fclose(f);
    snprintf(sub, sizeof sub, "%s/below", path);
    expect("mkdir under a file", ddl_store_new_file(&s, sub), DDL_E_COMM, "open", NULL, ENOTDIR);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch dir>\n", argv[0]);
        return 2;
    }
    tcp_checks();
    file_checks(argv[1]);
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    else
        printf("store error detail: all checks passed\n");
    return failures ? 1 : 0;
}
