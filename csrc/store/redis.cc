// redis.cc: a ddl_store over a Redis server through Gloo's RedisStore (for clusters that already
// run Redis). Gloo's store has set/get/check only (its wait polls check; ours does the same
// with our own deadline, so a timeout is known as such, not read from a message); the
// counters and deletes of the TCP store are not offered. C++ because Gloo is.
#include "store/store_impl.h"

#include <gloo/common/error.h>
#define HIREDIS_NESTED_INCLUDE 1 /* Debian installs hiredis.h under hiredis/ */
#include <gloo/rendezvous/redis_store.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

struct RedisStoreBox {
    ddl_store base; // first: the vtable's ddl_store* is this box
    std::unique_ptr<gloo::rendezvous::RedisStore> rs;
    std::mutex m; // a redisContext is not thread-safe
    int64_t timeout_ms = 300000;
    std::string address; // "host:port", for the error record
};

RedisStoreBox* box(ddl_store* s) { return reinterpret_cast<RedisStoreBox*>(s); }

// A failed call's fields: which call, which server.
ddl_status detail(ddl_status st, const char* op, const std::string& address) {
    ddl_error_info* i = ddl_error_detail();
    snprintf(i->op, sizeof i->op, "%s", op);
    snprintf(i->peer, sizeof i->peer, "%s", address.c_str());
    return st;
}

// Run f (one Gloo RedisStore call) under the box's lock, its exceptions as statuses.
template <typename F> ddl_status redis_call(RedisStoreBox* b, const char* op, F&& f) {
    ddl_status st;
    try {
        std::lock_guard<std::mutex> lock(b->m);
        f();
        return DDL_OK;
    } catch (const gloo::IoException& e) {
        st = ddl_fail(DDL_E_COMM, "redis store %s: %s", op, e.what());
    } catch (const std::bad_alloc&) {
        st = ddl_fail(DDL_E_NOMEM, "redis store %s: out of memory", op);
    } catch (const std::exception& e) {
        st = ddl_fail(DDL_E_INTERNAL, "redis store %s: %s", op, e.what());
    } catch (...) {
        st = ddl_fail(DDL_E_INTERNAL, "redis store %s: unknown C++ exception", op);
    }
    return detail(st, op, b->address);
}

ddl_status redis_set(ddl_store* s, const char* key, const void* val, size_t len) {
    auto* b = box(s);
    const char* p = static_cast<const char*>(val);
    return redis_call(b, "set", [&] { b->rs->set(key, std::vector<char>(p, p + len)); });
}

ddl_status redis_check(ddl_store* s, const char* const* keys, int n, int* all) {
    auto* b = box(s);
    std::vector<std::string> ks(keys, keys + n);
    return redis_call(b, "check", [&] { *all = b->rs->check(ks) ? 1 : 0; });
}

// Look every 10 ms (as Gloo's own wait does) until the keys exist or timeout_ms passes
// (0: look once, which the process group's failure handling relies on; < 0: forever).
ddl_status redis_wait(ddl_store* s, const char* const* keys, int n, int64_t timeout_ms) {
    auto start = std::chrono::steady_clock::now();
    for (;;) {
        int all = 0;
        ddl_status st = redis_check(s, keys, n, &all);
        if (st || all) return st;
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
        if (timeout_ms >= 0 && waited >= timeout_ms) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (timeout_ms == 0)
        ddl_fail(DDL_E_TIMEOUT, "redis store wait: key %s%s is not set", keys[0],
                 n > 1 ? " (or another of the keys)" : "");
    else
        ddl_fail(DDL_E_TIMEOUT, "redis store wait: timed out after %lld ms waiting for key %s%s",
                 (long long)timeout_ms, keys[0], n > 1 ? " (or another of the keys)" : "");
    return detail(DDL_E_TIMEOUT, "wait", box(s)->address);
}

ddl_status redis_get(ddl_store* s, const char* key, void** val, size_t* len, int64_t timeout_ms) {
    ddl_status st = redis_wait(s, &key, 1, timeout_ms);
    if (st) return st;
    auto* b = box(s);
    std::vector<char> v;
    st = redis_call(b, "get", [&] { v = b->rs->get(key); });
    if (st) return st;
    *val = malloc(v.size() ? v.size() : 1);
    if (!*val)
        return detail(ddl_fail(DDL_E_NOMEM, "redis store get: out of memory"), "get", b->address);
    memcpy(*val, v.data(), v.size());
    *len = v.size();
    return DDL_OK;
}

ddl_status redis_unsupported(const char* what) {
    return ddl_fail(DDL_E_VALUE,
                    "the redis store does not support %s (Gloo's RedisStore offers "
                    "set, get, wait and check)",
                    what);
}

ddl_status redis_add(ddl_store*, const char*, int64_t, int64_t*) {
    return redis_unsupported("add");
}
ddl_status redis_cas(ddl_store*, const char*, const void*, size_t, const void*, size_t, void**,
                     size_t*) {
    return redis_unsupported("compare_set");
}
ddl_status redis_del(ddl_store*, const char*, int*) { return redis_unsupported("delete_key"); }
ddl_status redis_num_keys(ddl_store*, int64_t*) { return redis_unsupported("num_keys"); }
void redis_set_timeout(ddl_store* s, int64_t ms) { box(s)->timeout_ms = ms; }
void redis_destroy(ddl_store* s) { delete box(s); }

const ddl_store_vtable redis_vtable = {
    "redis",     redis_set, redis_get,      redis_add,         redis_cas,     redis_wait,
    redis_check, redis_del, redis_num_keys, redis_set_timeout, redis_destroy,
};

} // namespace

ddl_status ddl_store_new_redis(ddl_store** out, const char* host, int port) {
    if (!host || !*host || port < 1 || port > 65535)
        return ddl_fail(DDL_E_VALUE, "redis store: bad address %s:%d", host ? host : "", port);
    std::string address = std::string(host) + ":" + std::to_string(port);
    try {
        std::unique_ptr<RedisStoreBox> b(new RedisStoreBox());
        ddl_store_init(&b->base, &redis_vtable);
        b->address = address;
        b->rs.reset(new gloo::rendezvous::RedisStore(host, port));
        *out = &b.release()->base;
        return DDL_OK;
    } catch (const std::bad_alloc&) {
        return detail(ddl_fail(DDL_E_NOMEM, "redis store: out of memory"), "connect", address);
    } catch (const std::exception& e) {
        return detail(ddl_fail(DDL_E_COMM, "redis store: cannot connect to %s: %s", address.c_str(),
                               e.what()),
                      "connect", address);
    } catch (...) {
        return detail(ddl_fail(DDL_E_COMM, "redis store: cannot connect to %s", address.c_str()),
                      "connect", address);
    }
}
