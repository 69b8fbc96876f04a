// hierarchical.cc: the transport of a group that spans hosts with several ranks on some:
// an all_reduce is reduced inside each host through its shared-memory segment, all-reduced
// over Gloo among one leader per host (each host's lowest rank), and broadcast back inside the
// host; every other collective (and the descriptor agreement) goes over Gloo among all ranks.
#include "comm/gloo/gloo.h"
#include "comm/reduce.h"
#include "comm/select.h"
#include "comm/shm/shm.h"

#include <map>

namespace ddl_comm {

namespace {

class HierTransport : public Transport {
  public:
    HierTransport(std::unique_ptr<Transport> all, std::unique_ptr<Transport> local,
                  std::unique_ptr<Transport> leaders, std::vector<int> local_ranks,
                  std::vector<int> leader_ranks, int size)
        : all_(std::move(all)), local_(std::move(local)), leaders_(std::move(leaders)),
          local_ranks_(std::move(local_ranks)), leader_ranks_(std::move(leader_ranks)),
          size_(size) {}

    void exchange(void* out, const void* in, size_t block, int64_t timeout_ms) override {
        all_->exchange(out, in, block, timeout_ms);
    }

    void run(const Descriptor& d, void* a, void* b, int64_t timeout_ms) override {
        if (d.coll != DDL_COLL_ALLREDUCE || d.count == 0) {
            all_->run(d, a, b, timeout_ms);
            return;
        }
        Descriptor l = d;
        l.seq = local_seq_++;
        l.redop = d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop;
        l.coll = DDL_COLL_REDUCE;
        l.root = 0;
        local_->run(l, a, nullptr, timeout_ms); // the host's reduction lands on its leader
        if (leaders_) {
            Descriptor g = l;
            g.coll = DDL_COLL_ALLREDUCE;
            leaders_->run(g, a, nullptr, timeout_ms);
            finish_avg(a, d.dtype, d.redop, d.count, size_);
        }
        l.seq = local_seq_++;
        l.coll = DDL_COLL_BROADCAST;
        local_->run(l, a, nullptr, timeout_ms);
    }

    void close() noexcept override {
        all_->close();
        local_->close();
        if (leaders_) leaders_->close();
    }

    std::set<int> dead_peers(int* sys_errno) noexcept override {
        std::set<int> dead = all_->dead_peers(sys_errno);
        try {
            for (int q : local_->dead_peers(nullptr)) dead.insert(local_ranks_[q]);
            if (leaders_)
                for (int q : leaders_->dead_peers(nullptr)) dead.insert(leader_ranks_[q]);
        } catch (...) {
        }
        return dead;
    }

    std::string peer_address(int rank) const override { return all_->peer_address(rank); }
    const char* name() const override { return "hierarchical"; }

  private:
    std::unique_ptr<Transport> all_, local_, leaders_;
    std::vector<int> local_ranks_;  // local index -> group rank
    std::vector<int> leader_ranks_; // leader index -> group rank
    int size_;
    uint64_t local_seq_ = 0;
};

} // namespace

std::unique_ptr<Transport> hierarchical_transport_new(GroupStore& store, int rank, int size,
                                                      const std::vector<HostRecord>& hosts,
                                                      const std::string& host,
                                                      const std::string& iface,
                                                      int64_t timeout_ms) {
    std::map<std::string, std::vector<int>> by_host; // host -> its ranks, ascending
    for (int r = 0; r < size; r++) by_host[hosts[r].host].push_back(r);
    std::vector<int> leader_ranks;
    for (int r = 0; r < size; r++)
        if (by_host[hosts[r].host][0] == r) leader_ranks.push_back(r);
    const std::vector<int>& mine = by_host[hosts[rank].host];
    int local_rank = 0, leader = -1;
    for (size_t i = 0; i < mine.size(); i++)
        if (mine[i] == rank) local_rank = (int)i;
    for (size_t i = 0; i < leader_ranks.size(); i++)
        if (leader_ranks[i] == rank) leader = (int)i;

    std::unique_ptr<Transport> all = gloo_transport_new(store, rank, size, host, iface, timeout_ms);
    GroupStore local_store = store.sub("host" + std::to_string(mine[0]));
    std::vector<HostRecord> local_hosts;
    for (int r : mine) local_hosts.push_back(hosts[r]);
    std::map<int, std::string> failed;
    std::unique_ptr<Transport> local =
        shm_transport_new(local_store, local_rank, (int)mine.size(), local_hosts, &failed);
    if (!local)
        throw DdlError(
            Failure(DDL_E_COMM, "process group: the shared-memory segment of the ranks on rank " +
                                    std::to_string(rank) + "'s host is not usable by all of them")
                .op("join")
                .rank(rank));
    std::unique_ptr<Transport> leaders;
    if (leader >= 0) {
        GroupStore leader_store = store.sub("leaders");
        leaders = gloo_transport_new(leader_store, leader, (int)leader_ranks.size(), host, iface,
                                     timeout_ms);
    }
    return std::unique_ptr<Transport>(new HierTransport(
        std::move(all), std::move(local), std::move(leaders), mine, leader_ranks, size));
}

} // namespace ddl_comm
