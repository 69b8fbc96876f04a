// selftest.cc: Gloo's version and a two-rank allreduce in one process over loopback TCP,
// proving that the Gloo transport is compiled, linked and working.
#include "comm/gloo/gloo.h"

#include "comm/reduce.h"

#include <gloo/allreduce.h>
#include <gloo/config.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>

#include <thread>

#define DDL_STR2(x) #x
#define DDL_STR(x) DDL_STR2(x)

using namespace ddl_comm;

namespace {

// The exception in flight, Gloo's translated, as a status.
ddl_status map_gloo_exception(const char* where) {
    try {
        rethrow_translated();
    } catch (...) {
        return map_exception(where);
    }
}

} // namespace

extern "C" {

const char* ddl_gloo_version(void) {
    return DDL_STR(GLOO_VERSION_MAJOR) "." DDL_STR(GLOO_VERSION_MINOR) "." DDL_STR(
        GLOO_VERSION_PATCH);
}

ddl_status ddl_gloo_selftest(double* result) {
    ignore_sigpipe();
    try {
        gloo::rendezvous::HashStore store;
        double v[2] = {1.0, 2.0};
        ddl_status st[2] = {DDL_E_INTERNAL, DDL_E_INTERNAL};
        std::string err[2];
        auto one = [&](int rank) {
            try {
                auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, 2);
                ctx->setTimeout(std::chrono::seconds(10));
                auto dev = gloo_device("127.0.0.1", "");
                ctx->connectFullMesh(store, dev);
                gloo::AllreduceOptions opts(ctx);
                opts.setOutput(&v[rank], 1);
                opts.setReduceFunction(reduce_fn<double>(DDL_COMM_SUM));
                opts.setTag(1);
                gloo::allreduce(opts);
                st[rank] = DDL_OK;
            } catch (...) {
                st[rank] = map_gloo_exception("gloo self-test");
                err[rank] = ddl_last_error();
            }
        };
        std::thread t1(one, 1);
        one(0);
        t1.join();
        for (int r = 0; r < 2; r++)
            if (st[r] != DDL_OK) return ddl_fail(st[r], "%s", err[r].c_str());
        if (v[0] != 3.0 || v[1] != 3.0)
            return ddl_fail(DDL_E_INTERNAL, "gloo self-test: allreduce gave %g and %g, not 3", v[0],
                            v[1]);
        *result = v[0];
        return DDL_OK;
    } catch (...) {
        return map_gloo_exception("gloo self-test");
    }
}

} // extern "C"
