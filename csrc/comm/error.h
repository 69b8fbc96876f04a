// error.h: failures inside the comm layer: a status, a message and the structured record
// (ddl_error_info) travelling together, the exceptions that carry them to the C boundary,
// and map_exception, which turns the exception in flight into a ddl_status there.
#ifndef DDL_COMM_ERROR_H
#define DDL_COMM_ERROR_H

#include "ddl/core.h"

#include <exception>
#include <set>
#include <string>

namespace ddl_comm {

// What went wrong, as it is handed from where it was found to where it is reported: raise()
// makes it this thread's error (the message for ddl_last_error, the fields for
// ddl_last_error_info). A broken group keeps one and raises it again for every later call.
struct Failure {
    ddl_status st = DDL_OK;
    std::string msg;
    ddl_error_info info;

    Failure();
    Failure(ddl_status s, std::string m);
    // This thread's last error, its message after `prefix`, its fields kept.
    static Failure last(ddl_status s, const std::string& prefix);

    Failure& rank(int r) {
        info.rank = r;
        return *this;
    }
    Failure& seq(int64_t s) {
        info.seq = s;
        return *this;
    }
    Failure& op(const char* name);
    Failure& peer(const std::string& address);
    Failure& sys_errno(int e) {
        info.sys_errno = e;
        return *this;
    }
    Failure& ranks(const std::set<int>& rs); // the first DDL_ERROR_MAX_RANKS of them

    ddl_status raise() const; // ddl_fail with msg, then the fields; returns st
};

// Thrown inside the comm layer (and out of the store adapter through Gloo's rendezvous code),
// mapped back at the extern "C" boundary with its fields.
struct DdlError : std::exception {
    Failure f;
    explicit DdlError(Failure failure) : f(std::move(failure)) {}
    DdlError(ddl_status s, std::string m) : f(s, std::move(m)) {}
    const char* what() const noexcept override { return f.msg.c_str(); }
};

// A transport's own failure: a connection failed, or the transport's timeout passed (it
// cannot always tell which; the process group judges by the time the call took). `text` is
// the transport's words, quoted in messages and never parsed.
struct TransportError : std::exception {
    std::string text;
    explicit TransportError(std::string t) : text(std::move(t)) {}
    const char* what() const noexcept override { return text.c_str(); }
};

// The exception in flight as a status, message and fields (called inside a catch block).
ddl_status map_exception(const char* where);

// "0, 2, 3"
std::string rank_list(const std::set<int>& ranks);

} // namespace ddl_comm

#endif
