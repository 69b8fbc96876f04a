// select.h: which transport a new process group uses (select.cc).
#ifndef DDL_COMM_SELECT_H
#define DDL_COMM_SELECT_H

#include "comm/group_store.h"
#include "comm/transport.h"
#include "ddl/comm.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ddl_comm {

// Every rank publishes where it runs; then, by `mode`: GLOO -> Gloo over TCP; SHM -> the
// shared-memory segment (DDL_E_VALUE when the ranks are not all on one host, DDL_E_COMM when
// the segment is not visible to all); AUTO -> shared memory when every rank is on one host
// and the segment proved visible to all; across hosts with several ranks on some host, the
// hierarchical transport; else Gloo. Every rank reaches the same choice.
// *n_hosts: how many distinct hosts the group spans.
std::unique_ptr<Transport> select_transport(GroupStore& store, int rank, int size,
                                            const std::string& host, const std::string& iface,
                                            int64_t timeout_ms, ddl_transport mode, int* n_hosts);

struct HostRecord;
// The shared-memory transport over the `size` ranks of `store` (all on one host): the segment
// created by rank 0, mapped and seen by every rank; nullptr when some rank cannot (*failed:
// rank -> why), on every rank alike.
std::unique_ptr<Transport> shm_transport_new(GroupStore& store, int rank, int size,
                                             const std::vector<HostRecord>& hosts,
                                             std::map<int, std::string>* failed);
// The hierarchical transport (hierarchical.cc) of a group spanning hosts.
std::unique_ptr<Transport> hierarchical_transport_new(GroupStore& store, int rank, int size,
                                                      const std::vector<HostRecord>& hosts,
                                                      const std::string& host,
                                                      const std::string& iface, int64_t timeout_ms);

} // namespace ddl_comm

#endif
