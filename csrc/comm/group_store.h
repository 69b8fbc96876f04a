// group_store.h: a process group's keys in the rendezvous store ("<prefix>/<key>" in a
// ddl_store): the join, the failure reports, and what a transport's rendezvous needs.
#ifndef DDL_COMM_GROUP_STORE_H
#define DDL_COMM_GROUP_STORE_H

#include "comm/error.h"
#include "ddl/store.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace ddl_comm {

class GroupStore {
  public:
    GroupStore(ddl_store* s, std::string prefix, int64_t timeout_ms)
        : s_(s), prefix_(std::move(prefix)), timeout_ms_(timeout_ms) {}

    int64_t timeout_ms() const { return timeout_ms_; }

    // These throw DdlError with the store's message and fields (what a transport's
    // rendezvous, run inside its own code, can pass on).
    void set(const std::string& key, const std::string& val) {
        if (ddl_store_set(s_, k(key).c_str(), val.data(), val.size()) != DDL_OK)
            throw DdlError(Failure::last(DDL_E_COMM, "store set: "));
    }
    std::string get(const std::string& key) { return get(key, timeout_ms_); }
    std::string get(const std::string& key, int64_t timeout_ms) {
        std::string v;
        ddl_status st = get_status(key, &v, timeout_ms);
        if (st != DDL_OK) throw DdlError(Failure::last(st, "store get: "));
        return v;
    }
    void wait(const std::vector<std::string>& keys, int64_t timeout_ms) {
        std::vector<std::string> full;
        std::vector<const char*> ptrs;
        for (auto& key : keys) full.push_back(k(key));
        for (auto& key : full) ptrs.push_back(key.c_str());
        ddl_status st = ddl_store_wait(s_, ptrs.data(), (int)ptrs.size(), timeout_ms);
        if (st != DDL_OK) throw DdlError(Failure::last(st, "store wait: "));
    }

    // Plain access for ddl's own keys: DDL_E_TIMEOUT when the key is missing, DDL_E_COMM when
    // the store is unreachable (this thread's error set either way).
    ddl_status get_status(const std::string& key, std::string* val, int64_t timeout_ms) {
        void* v = nullptr;
        size_t n = 0;
        ddl_status st = ddl_store_get(s_, k(key).c_str(), &v, &n, timeout_ms);
        if (st != DDL_OK) return st;
        val->assign(static_cast<char*>(v), n);
        free(v);
        return DDL_OK;
    }
    bool try_set(const std::string& key, const std::string& val) {
        return ddl_store_set(s_, k(key).c_str(), val.data(), val.size()) == DDL_OK;
    }

    // The same store under "<prefix>/<name>": the keys of a transport inside the group (the
    // hierarchical transport's per-host segments and its leaders' Gloo mesh).
    GroupStore sub(const std::string& name) const {
        return GroupStore(s_, prefix_ + "/" + name, timeout_ms_);
    }

  private:
    std::string k(const std::string& key) const { return prefix_ + "/" + key; }
    ddl_store* s_;
    std::string prefix_;
    int64_t timeout_ms_;
};

} // namespace ddl_comm

#endif
