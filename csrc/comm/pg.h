// pg.h: the process group's and work handle's insides (struct ddl_pg, struct ddl_work), shared
// by pg.cc (queue, communication thread, entry points) and failure.cc (diagnosis, watchdog).
#ifndef DDL_COMM_PG_H
#define DDL_COMM_PG_H

#include "comm/agreement.h"
#include "comm/error.h"
#include "comm/group_store.h"
#include "comm/transport.h"
#include "ddl/comm.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

struct ddl_work {
    std::atomic<int> refs{1};
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    ddl_comm::Failure result; // result.st == DDL_OK: it succeeded
    int64_t t_start = 0, t_end = 0;
    // the job
    ddl_comm::Descriptor desc{};
    ddl_tensor* a = nullptr; // the in-place / output tensor
    ddl_tensor* b = nullptr; // the input where the op has a separate one
    int64_t timeout_ms = 0;

    // Called once the collective has left the transport. If the watchdog completed the work
    // early (complete_early), its result stands.
    void finish(const ddl_comm::Failure& f);
    // Complete the work for its waiters, while the transport may still hold its buffers (the
    // tensors stay referenced until finish()). The first result set wins.
    void complete_early(const ddl_comm::Failure& f);
};

struct ddl_pg {
    std::atomic<int> refs{1};
    int rank = 0, size = 1;
    int64_t timeout_ms = 30000;
    int n_hosts = 1;
    std::unique_ptr<ddl_comm::GroupStore> store;
    std::unique_ptr<ddl_comm::Transport> transport;
    ddl_comm::Agreement agreement; // used by the one runner at a time

    // The queue and the communication thread (pg.cc), under qm.
    std::thread thread;
    std::mutex qm;
    std::condition_variable qcv;
    std::deque<ddl_work*> queue;
    bool shut_down = false;
    bool stopping = false;
    uint64_t next_seq = 0;      // assigned at issue time
    bool busy = false;          // a collective is running (comm thread or an inline caller)
    bool thread_exited = false; // the comm thread left run()
    bool leaked = false;        // shut down with its comm thread stuck in the transport

    // Broken: the first failure, kept whole (message and fields) and raised again by every
    // later call. broken_f is written once, under fail_m, before broken is set.
    std::atomic<int> broken{0};
    ddl_comm::Failure broken_f;
    std::mutex fail_m; // one failure handler at a time (the collective's runner, the watchdog)

    // The watchdog (failure.cc, watch()): the work now in the transport and since when, under wm.
    std::thread watchdog;
    std::mutex wm;
    std::condition_variable wcv;
    ddl_work* running = nullptr;
    int64_t running_since = 0;
    bool watch_stop = false;

    // pg.cc
    void run();
    void execute(ddl_work* w);
    // failure.cc
    void fail(ddl_work* w); // inside a catch block: diagnose, break the group, finish w
    void watch();

  private:
    ddl_comm::Failure diagnose(const ddl_work* w, bool* reported);
    ddl_comm::Failure connection_failure(const ddl_work* w, const std::set<int>& seen,
                                         const std::string& how, int sys_errno);
    std::set<int> absent_ranks(uint64_t seq);
    bool poll_reports(const std::string& key, int64_t grace_ms, std::map<int, std::string>* got,
                      std::set<int>* missing);
};

namespace ddl_comm {
int64_t now_us();
}

#endif
