// comm_gloo.cc: the only C++ in ddl; every Gloo call lives here behind extern "C" entry points.
// No C++ exception crosses into C: each entry point catches and maps to a ddl_status.
#include "ddl.h"

#include <gloo/allreduce.h>
#include <gloo/config.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <csignal>
#include <exception>
#include <new>
#include <string>
#include <thread>

#define DDL_STR2(x) #x
#define DDL_STR(x) DDL_STR2(x)

namespace {

// Map the exception in flight to a status with its message kept.
ddl_status map_exception(const char* where) {
    try {
        throw;
    } catch (const gloo::IoException& e) {
        return ddl_fail(DDL_E_COMM, "%s: %s", where, e.what());
    } catch (const std::bad_alloc&) {
        return ddl_fail(DDL_E_NOMEM, "%s: out of memory", where);
    } catch (const std::exception& e) {  // gloo::EnforceNotMet derives from std::exception
        return ddl_fail(DDL_E_INTERNAL, "%s: %s", where, e.what());
    } catch (...) {
        return ddl_fail(DDL_E_INTERNAL, "%s: unknown C++ exception", where);
    }
}

// One rank of the self-test world: connect over the shared store, allreduce one double.
void selftest_rank(gloo::rendezvous::HashStore* store, int rank, double* value, ddl_status* st,
                   std::string* err) {
    try {
        gloo::transport::tcp::attr attr;
        attr.hostname = "127.0.0.1";
        attr.ai_family = AF_INET;
        auto dev = gloo::transport::tcp::CreateDevice(attr);
        auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, 2);
        ctx->setTimeout(std::chrono::seconds(10));
        ctx->connectFullMesh(*store, dev);
        gloo::AllreduceOptions opts(ctx);
        opts.setOutput(value, 1);
        void (*fn)(void*, const void*, const void*, size_t) = &gloo::sum<double>;
        opts.setReduceFunction(fn);
        opts.setTag(1);
        gloo::allreduce(opts);
        *st = DDL_OK;
    } catch (...) {
        *st = map_exception("gloo self-test");
        *err = ddl_last_error();  // the message is thread-local: carry it to the caller
    }
}

}  // namespace

extern "C" {

const char* ddl_gloo_version(void) {
    return DDL_STR(GLOO_VERSION_MAJOR) "." DDL_STR(GLOO_VERSION_MINOR) "." DDL_STR(
        GLOO_VERSION_PATCH);
}

ddl_status ddl_gloo_selftest(double* result) {
    // Gloo writes without MSG_NOSIGNAL: a peer that vanished must not kill us with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        gloo::rendezvous::HashStore store;
        double v0 = 1.0, v1 = 2.0;
        ddl_status s0 = DDL_E_INTERNAL, s1 = DDL_E_INTERNAL;
        std::string e0, e1;
        std::thread t1(selftest_rank, &store, 1, &v1, &s1, &e1);
        selftest_rank(&store, 0, &v0, &s0, &e0);
        t1.join();
        if (s0 != DDL_OK) return ddl_fail(s0, "%s", e0.c_str());
        if (s1 != DDL_OK) return ddl_fail(s1, "%s", e1.c_str());
        if (v0 != 3.0 || v1 != 3.0)
            return ddl_fail(DDL_E_INTERNAL, "gloo self-test: allreduce gave %g and %g, not 3", v0,
                            v1);
        *result = v0;
        return DDL_OK;
    } catch (...) {
        return map_exception("gloo self-test");
    }
}

}  // extern "C"
