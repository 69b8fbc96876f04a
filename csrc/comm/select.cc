// select.cc: the transport choice when a group is made: host records through the store
// (hostname, boot id, network namespace, or DDL_HOST_ID), then, for ranks on one host, the
// shared segment created by rank 0, mapped by all, and probed both ways (every rank sees every
// other's pid written in it) before any rank relies on it.
#include "comm/select.h"

#include "comm/gloo/gloo.h"
#include "comm/shm/shm.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <set>

namespace ddl_comm {

namespace {

std::string key(const char* what, int r) {
    return std::string("ddl/") + what + "/" + std::to_string(r);
}

// Publish ok (or why not) under `what`; read every rank's: rank -> why, for those not ok.
std::map<int, std::string> vote(GroupStore& store, const char* what, int rank, int size, bool ok,
                                const std::string& why) {
    store.set(key(what, rank), ok ? "1" : "0" + why);
    std::map<int, std::string> failed;
    for (int r = 0; r < size; r++) {
        std::string v = store.get(key(what, r));
        if (v.empty() || v[0] != '1') failed[r] = v.empty() ? "" : v.substr(1);
    }
    return failed;
}

std::string describe_failures(const std::map<int, std::string>& failed) {
    std::string out;
    for (auto& kv : failed)
        out += (out.empty() ? "" : "; ") + std::string("rank ") + std::to_string(kv.first) + ": " +
               kv.second;
    return out;
}

std::set<int> keys_of(const std::map<int, std::string>& m) {
    std::set<int> s;
    for (auto& kv : m) s.insert(kv.first);
    return s;
}

// The segment, mapped by every rank and seen by every rank, or nullptr (*why says why).
std::unique_ptr<ShmSegment> map_segment(GroupStore& store, int rank, int size,
                                        const std::vector<HostRecord>& hosts,
                                        std::map<int, std::string>* failed) {
    std::unique_ptr<ShmSegment> seg(new ShmSegment(rank, size));
    std::string name, why;
    uint64_t nonce = 0;
    bool ok;
    if (rank == 0) {
        ok = seg->create(&name, &nonce, &why);
        store.set("ddl/shm/name", ok ? name + " " + std::to_string(nonce) : "");
    } else {
        std::string v = store.get("ddl/shm/name");
        size_t sp = v.find(' ');
        if (sp == std::string::npos) {
            ok = false;
            why = "rank 0 could not create the segment";
        } else {
            name = v.substr(0, sp);
            nonce = strtoull(v.c_str() + sp + 1, nullptr, 10);
            ok = seg->open(name, nonce, &why);
        }
    }
    if (ok) seg->mark_mapped(name);
    *failed = vote(store, "shm/mapped", rank, size, ok, why);
    if (rank == 0 && !name.empty()) shm_unlink(name.c_str()); // every rank mapped it or failed
    if (!failed->empty()) return nullptr;
    // the probe: this rank sees what every other rank wrote in its mapping
    std::string unseen;
    for (int q = 0; q < size; q++)
        if (__atomic_load_n(&seg->ctl(q)->pid, __ATOMIC_ACQUIRE) != hosts[q].pid)
            unseen += (unseen.empty() ? "" : ", ") + std::to_string(q);
    *failed = vote(store, "shm/seen", rank, size, unseen.empty(),
                   "does not see the pid of rank(s) " + unseen + " in the segment");
    if (!failed->empty()) return nullptr;
    return seg;
}

} // namespace

std::unique_ptr<Transport> shm_transport_new(GroupStore& store, int rank, int size,
                                             const std::vector<HostRecord>& hosts,
                                             std::map<int, std::string>* failed) {
    std::unique_ptr<ShmSegment> seg = map_segment(store, rank, size, hosts, failed);
    if (!seg) return nullptr;
    return std::unique_ptr<Transport>(new ShmTransport(std::move(seg), rank, size, hosts));
}

std::unique_ptr<Transport> select_transport(GroupStore& store, int rank, int size,
                                            const std::string& host, const std::string& iface,
                                            int64_t timeout_ms, ddl_transport mode, int* n_hosts) {
    store.set(key("host", rank), encode_host_record(local_host_record()));
    std::vector<HostRecord> hosts(size);
    std::set<std::string> distinct;
    for (int r = 0; r < size; r++) {
        hosts[r] = decode_host_record(store.get(key("host", r)));
        distinct.insert(hosts[r].host);
    }
    *n_hosts = (int)distinct.size();
    if (mode == DDL_TRANSPORT_GLOO)
        return gloo_transport_new(store, rank, size, host, iface, timeout_ms);
    if (distinct.size() > 1) {
        if (mode == DDL_TRANSPORT_SHM) {
            std::set<int> elsewhere;
            for (int r = 0; r < size; r++)
                if (hosts[r].host != hosts[rank].host) elsewhere.insert(r);
            throw DdlError(
                Failure(DDL_E_VALUE, "process group: transport 'shm' needs every rank on one host, "
                                     "but the group spans " +
                                         std::to_string(distinct.size()) + " hosts (rank(s) " +
                                         rank_list(elsewhere) + " run on another host than rank " +
                                         std::to_string(rank) + ")")
                    .op("join")
                    .rank(rank)
                    .ranks(elsewhere));
        }
        if ((int)distinct.size() < size) // some host runs several ranks
            return hierarchical_transport_new(store, rank, size, hosts, host, iface, timeout_ms);
        return gloo_transport_new(store, rank, size, host, iface, timeout_ms);
    }
    std::map<int, std::string> failed;
    std::unique_ptr<ShmSegment> seg = map_segment(store, rank, size, hosts, &failed);
    if (seg) return std::unique_ptr<Transport>(new ShmTransport(std::move(seg), rank, size, hosts));
    if (mode == DDL_TRANSPORT_SHM)
        throw DdlError(Failure(DDL_E_COMM, "process group: the shared-memory segment is not "
                                           "usable by every rank: " +
                                               describe_failures(failed))
                           .op("join")
                           .rank(rank)
                           .ranks(keys_of(failed)));
    return gloo_transport_new(store, rank, size, host, iface, timeout_ms);
}

} // namespace ddl_comm
