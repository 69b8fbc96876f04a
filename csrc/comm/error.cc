// error.cc: the comm layer's Failure record and the mapping of exceptions to ddl_status.
#include "comm/error.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace ddl_comm {

namespace {

ddl_error_info blank_info() {
    ddl_error_info i;
    memset(&i, 0, sizeof i);
    i.rank = -1;
    i.seq = -1;
    return i;
}

void copy_str(char* dst, size_t n, const std::string& src) {
    size_t k = std::min(n - 1, src.size());
    memcpy(dst, src.data(), k);
    dst[k] = '\0';
}

} // namespace

Failure::Failure() : info(blank_info()) {}
Failure::Failure(ddl_status s, std::string m) : st(s), msg(std::move(m)), info(blank_info()) {}

Failure Failure::last(ddl_status s, const std::string& prefix) {
    Failure f(s, prefix + ddl_last_error());
    f.info = *ddl_last_error_info();
    return f;
}

Failure& Failure::op(const char* name) {
    copy_str(info.op, sizeof info.op, name);
    return *this;
}

Failure& Failure::peer(const std::string& address) {
    copy_str(info.peer, sizeof info.peer, address);
    return *this;
}

Failure& Failure::ranks(const std::set<int>& rs) {
    info.n_ranks = 0;
    for (int r : rs) {
        if (info.n_ranks == DDL_ERROR_MAX_RANKS) break;
        info.ranks[info.n_ranks++] = r;
    }
    return *this;
}

ddl_status Failure::raise() const {
    ddl_fail(st, "%s", msg.c_str());
    *ddl_error_detail() = info;
    return st;
}

ddl_status map_exception(const char* where) {
    try {
        throw;
    } catch (const DdlError& e) {
        return e.f.raise();
    } catch (const TransportError& e) {
        return ddl_fail(DDL_E_COMM, "%s: %s", where, e.text.c_str());
    } catch (const std::bad_alloc&) {
        return ddl_fail(DDL_E_NOMEM, "%s: out of memory", where);
    } catch (const std::exception& e) { // gloo::EnforceNotMet derives from std::exception
        return ddl_fail(DDL_E_INTERNAL, "%s: %s", where, e.what());
    } catch (...) {
        return ddl_fail(DDL_E_INTERNAL, "%s: unknown C++ exception", where);
    }
}

std::string rank_list(const std::set<int>& ranks) {
    std::string out;
    for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
    return out;
}

} // namespace ddl_comm
