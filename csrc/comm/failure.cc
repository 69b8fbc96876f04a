// failure.cc: what a process group does when a collective fails: name the ranks at fault
// (failure reports in the store, the ranks that never arrived, the connections found dead),
// break the group with a Failure whose fields say so, and the watchdog that releases waiters
// of a transfer stuck on a dead connection.
#include "comm/pg.h"

#include <chrono>

using namespace ddl_comm;

namespace {

// How long the ranks that saw a group fail wait for each other's reports in the store.
constexpr int64_t kReportGraceMs = 1000;
// After a timeout, how long to wait for the others to say where they are.
constexpr int64_t kArrivalGraceMs = 1500;
// The watchdog's period, and how long a collective runs before it is watched.
constexpr int64_t kWatchMs = 250;

// issue 13: each best-effort store call on a failure path gets at most this long on the
// network, so a frozen store host (SIGSTOP) costs seconds instead of a timeout per call.
constexpr int64_t kStoreCallMs = 2000;
struct StoreCallCap {
    int64_t old = ddl_store_set_thread_io_limit(kStoreCallMs);
    ~StoreCallCap() { ddl_store_set_thread_io_limit(old); }
};
// Set by absent_ranks: the store did not answer at all (its host is gone or stopped).
thread_local bool store_unreachable = false;

std::string what_of(const ddl_work* w) {
    return std::string(coll_name(w->desc.coll)) + " #" + std::to_string(w->desc.seq);
}

} // namespace

// Which of the other ranks have set "<key>/<rank>"? Polls (every 20 ms, each look without
// waiting) until all have or grace_ms passes: reports land in *got, the others stay in
// *missing. False when the store cannot be reached at all; if it goes away midway (its host
// exited after its own grace period, by when every live rank had reported) what was seen
// so far stands.
bool ddl_pg::poll_reports(const std::string& key, int64_t grace_ms, std::map<int, std::string>* got,
                          std::set<int>* missing) {
    for (int r = 0; r < size; r++)
        if (r != rank) missing->insert(r);
    int64_t deadline = now_us() + grace_ms * 1000;
    bool reached = false;
    for (;;) {
        for (auto it = missing->begin(); it != missing->end();) {
            std::string v;
            ddl_status st = store->get_status(key + "/" + std::to_string(*it), &v, 0);
            if (st != DDL_OK && st != DDL_E_TIMEOUT) return reached;
            reached = true;
            if (st == DDL_OK) {
                (*got)[*it] = v;
                it = missing->erase(it);
            } else {
                ++it;
            }
        }
        if (missing->empty() || now_us() >= deadline) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// After a timeout: which ranks never reached this collective? Each survivor publishes that
// it is stuck (a group breaks at its first failure, so once); a rank that publishes nothing
// within a grace period is named. Best effort (the store may be gone with its host).
std::set<int> ddl_pg::absent_ranks(uint64_t seq) {
    StoreCallCap cap;
    store_unreachable = false;
    bool stored = store->try_set("ddl/at/" + std::to_string(rank), std::to_string(seq));
    std::map<int, std::string> got;
    std::set<int> missing;
    if (!stored || !poll_reports("ddl/at", kArrivalGraceMs, &got, &missing)) {
        store_unreachable = true;
        return {};
    }
    return missing;
}

// A connection of this group failed (`how`: how it showed here; `seen`: the peers whose
// connections were found dead). A dead rank's connections close, but only the ranks reading
// from it notice; the others notice when the first ones close their connections. So whom
// `seen` names may be survivors: close at once, report in the store, and name the ranks that
// do not report (every rank that sees the group fail reports, see fail()).
Failure ddl_pg::connection_failure(const ddl_work* w, const std::set<int>& seen,
                                   const std::string& how, int sys_errno) {
    std::string failed = "rank " + std::to_string(rank) + ": " + what_of(w) + " failed: ";
    StoreCallCap cap;
    transport->close();
    store->try_set("ddl/failed/" + std::to_string(rank), failed + how);
    std::set<int> lost;
    std::map<int, std::string> reports;
    Failure f(DDL_E_COMM, failed);
    if (!poll_reports("ddl/failed", kReportGraceMs, &reports, &lost)) {
        f.msg += how +
                 "; the rendezvous store is unreachable as well, so its host (rank 0's process "
                 "with env:// and tcp://) may have died or exited";
        f.ranks(seen);
    } else if (!lost.empty()) {
        f.msg += "rank(s) " + rank_list(lost) +
                 " died or stopped responding (no failure report from them within " +
                 std::to_string(kReportGraceMs) +
                 " ms; every other rank reported); seen here: " + how;
        f.ranks(lost);
    } else {
        // every rank is alive: quote why the first peer that closed on us failed
        auto it = seen.empty() ? reports.end() : reports.find(*seen.begin());
        if (it == reports.end()) it = reports.begin();
        f.msg += how;
        if (it != reports.end())
            f.msg += "; rank " + std::to_string(it->first) + " reported: " + it->second;
        f.ranks(seen);
    }
    f.rank(rank).seq((int64_t)w->desc.seq).op(coll_op_name(w->desc.coll)).sys_errno(sys_errno);
    if (f.info.n_ranks > 0) f.peer(transport->peer_address(f.info.ranks[0]));
    return f;
}

// The exception in flight (from executing w) as the group's failure. *reported: this rank's
// failure report is in the store already.
Failure ddl_pg::diagnose(const ddl_work* w, bool* reported) {
    std::string me = "rank " + std::to_string(rank) + ": ";
    Failure f;
    try {
        throw;
    } catch (const DdlError& e) {
        f = e.f;
        f.msg = me + f.msg;
    } catch (const TransportError& e) {
        bool timed_out = now_us() - w->t_start >= w->timeout_ms * 900;
        if (timed_out) {
            std::set<int> absent = absent_ranks(w->desc.seq);
            f = Failure(
                DDL_E_TIMEOUT,
                me + what_of(w) + " timed out after " + std::to_string(w->timeout_ms) + " ms" +
                    (absent.empty() ? "" : "; rank(s) " + rank_list(absent) + " never arrived") +
                    (store_unreachable ? "; the rendezvous store does not answer either, so its "
                                         "host (rank 0's process with env:// and tcp://) is "
                                         "likely stopped, frozen or dead"
                                       : "") +
                    " (" + e.text + ")");
            f.ranks(absent);
        } else {
            int err = 0;
            std::set<int> seen = transport->dead_peers(&err); // before close() hangs up
            f = connection_failure(w, seen,
                                   (seen.empty() ? "a peer" : "peer rank(s) " + rank_list(seen)) +
                                       " closed the connection (" + e.text + ")",
                                   err);
            *reported = true;
        }
    } catch (const std::exception& e) {
        f = Failure(DDL_E_INTERNAL, me + what_of(w) + ": " + e.what());
    } catch (...) {
        f = Failure(DDL_E_INTERNAL, me + what_of(w) + ": unknown C++ exception");
    }
    return f.rank(rank).seq((int64_t)w->desc.seq).op(coll_op_name(w->desc.coll));
}

void ddl_pg::fail(ddl_work* w) {
    // the watchdog may have failed the group (and w) already: that report stands
    std::lock_guard<std::mutex> failing(fail_m);
    if (!broken.load()) {
        bool reported = false;
        store_unreachable = false;
        broken_f = diagnose(w, &reported);
        broken.store(1);
        // tell the others why (a connection failure reported itself), then fail them fast:
        // a rank not talking to the dead one would otherwise wait for its full timeout
        StoreCallCap cap;
        if (!reported && !store_unreachable)
            store->try_set("ddl/failed/" + std::to_string(rank), broken_f.msg);
        transport->close();
    }
    w->finish(broken_f);
}

// The watchdog. Gloo (this snapshot) does not wake a transfer that was under way when its
// connection failed (a send partly written, a receive partly read): the collective then waits
// for its whole timeout, although a peer died or every other rank already gave up. While a
// collective has run for kWatchMs, the watchdog asks the transport every kWatchMs which
// connections are gone; once one is, it fails the group as the runner would have (report,
// name the lost ranks) and completes the work, so its waiter raises now. The runner itself
// stays in the transport until the timeout ends the transfer (so large collectives run on the
// comm thread, never on the caller's), and a group shut down meanwhile is left behind rather
// than waited for.
void ddl_pg::watch() {
    std::unique_lock<std::mutex> lock(wm);
    while (!watch_stop) {
        wcv.wait_for(lock, std::chrono::milliseconds(kWatchMs));
        if (watch_stop || !running || broken.load() || now_us() - running_since < kWatchMs * 1000)
            continue;
        ddl_work* w = running;
        w->refs.fetch_add(1); // kept alive while we look (execute unregisters it under wm)
        lock.unlock();
        int err = 0;
        std::set<int> dead = transport->dead_peers(&err);
        if (!dead.empty()) {
            std::unique_lock<std::mutex> failing(fail_m, std::try_to_lock);
            if (failing && !broken.load()) {
                broken_f = connection_failure(
                    w, dead,
                    "the connection(s) with rank(s) " + rank_list(dead) +
                        " closed while a transfer was under way (found by the watchdog)",
                    err);
                broken.store(1);
                w->complete_early(broken_f);
            }
        }
        ddl_work_free(w);
        lock.lock();
    }
}
