/* error.c: the thread-local error message and structured record behind ddl_status. */
#include "core/internal.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];
static _Thread_local ddl_error_info last_info = {.rank = -1, .seq = -1};

const char *ddl_last_error(void) { return last_error; }
const ddl_error_info *ddl_last_error_info(void) { return &last_info; }
ddl_error_info *ddl_error_detail(void) { return &last_info; }

ddl_status ddl_fail(ddl_status st, const char *fmt, ...) {
    memset(&last_info, 0, sizeof last_info);
    last_info.rank = -1;
    last_info.seq = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *ddl_status_name(ddl_status st) {
    switch (st) {
    case DDL_OK: return "ok";
    case DDL_E_VALUE: return "value error";
    case DDL_E_TYPE: return "type error";
    case DDL_E_INDEX: return "index error";
    case DDL_E_NOMEM: return "out of memory";
    case DDL_E_COMM: return "communication error";
    case DDL_E_TIMEOUT: return "timeout";
    case DDL_E_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *ddl_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, ndim == 1 ? ",)" : ")");
    return buf;
}
