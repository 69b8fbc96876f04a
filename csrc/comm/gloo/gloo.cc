// comm_gloo.cc: the only C++ in ddl; every Gloo call lives here behind extern "C" entry points
// (process groups, the communication thread, collectives, failure handling).
// No C++ exception crosses into C: each entry point catches and maps to a ddl_status.
#include "ddl/comm.h"
#include "store/store_impl.h" /* the Redis store below implements the store vtable */

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/config.h>
#include <gloo/gather.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#define HIREDIS_NESTED_INCLUDE 1 /* Debian installs hiredis.h under hiredis/ */
#include <gloo/rendezvous/redis_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/scatter.h>
#include <gloo/transport/tcp/address.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <new>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#define DDL_STR2(x) #x
#define DDL_STR(x) DDL_STR2(x)

namespace {

// An error carrying a ddl_status, thrown inside the shim and mapped back at the boundary.
struct DdlError : std::exception {
    ddl_status st;
    std::string msg;
    DdlError(ddl_status s, std::string m) : st(s), msg(std::move(m)) {}
    const char* what() const noexcept override { return msg.c_str(); }
};

// Map the exception in flight to a status with its message kept.
ddl_status map_exception(const char* where) {
    try {
        throw;
    } catch (const DdlError& e) {
        return ddl_fail(e.st, "%s", e.msg.c_str());
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

void ignore_sigpipe() {
    // Gloo writes without MSG_NOSIGNAL: a vanished peer must not kill us with SIGPIPE. Only
    // when nobody installed a handler (CPython already ignores it).
    struct sigaction old;
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL)
        std::signal(SIGPIPE, SIG_IGN);
}

// ddl's stores behind Gloo's Store interface.
class StoreAdapter : public gloo::rendezvous::Store {
  public:
    StoreAdapter(ddl_store* s, std::string prefix, int64_t timeout_ms)
        : s_(s), prefix_(std::move(prefix)), timeout_ms_(timeout_ms) {}
    void set(const std::string& key, const std::vector<char>& data) override {
        if (ddl_store_set(s_, k(key).c_str(), data.data(), data.size()) != DDL_OK)
            throw DdlError(DDL_E_COMM, std::string("store set: ") + ddl_last_error());
    }
    std::vector<char> get(const std::string& key) override {
        void* v = nullptr;
        size_t n = 0;
        ddl_status st = ddl_store_get(s_, k(key).c_str(), &v, &n, timeout_ms_);
        if (st != DDL_OK) throw DdlError(st, std::string("store get: ") + ddl_last_error());
        std::vector<char> out(static_cast<char*>(v), static_cast<char*>(v) + n);
        free(v);
        return out;
    }
    void wait(const std::vector<std::string>& keys) override {
        wait(keys, std::chrono::milliseconds(timeout_ms_));
    }
    void wait(const std::vector<std::string>& keys,
              const std::chrono::milliseconds& timeout) override {
        std::vector<std::string> full;
        std::vector<const char*> ptrs;
        for (auto& key : keys) full.push_back(k(key));
        for (auto& key : full) ptrs.push_back(key.c_str());
        ddl_status st = ddl_store_wait(s_, ptrs.data(), (int)ptrs.size(), timeout.count());
        if (st != DDL_OK) throw DdlError(st, std::string("store wait: ") + ddl_last_error());
    }
    // plain access for ddl's own keys: DDL_E_TIMEOUT when the key is missing, DDL_E_COMM when
    // the store is unreachable (message set)
    ddl_status get_status(const std::string& key, std::string* val, int64_t timeout_ms) {
        void* v = nullptr;
        size_t n = 0;
        ddl_status st = ddl_store_get(s_, k(key).c_str(), &v, &n, timeout_ms);
        if (st != DDL_OK) return st;
        val->assign(static_cast<char*>(v), n);
        free(v);
        return DDL_OK;
    }
    bool try_get(const std::string& key, std::string* val, int64_t timeout_ms) {
        return get_status(key, val, timeout_ms) == DDL_OK;
    }
    bool try_set(const std::string& key, const std::string& val) {
        return ddl_store_set(s_, k(key).c_str(), val.data(), val.size()) == DDL_OK;
    }

  private:
    std::string k(const std::string& key) const { return prefix_ + "/" + key; }
    ddl_store* s_;
    std::string prefix_;
    int64_t timeout_ms_;
};

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

const char* coll_name(int c) {
    static const char* names[] = {"?",      "all_reduce", "broadcast", "all_gather",
                                  "reduce_scatter", "reduce", "gather", "scatter",
                                  "all_to_all", "barrier"};
    return c >= 1 && c <= 9 ? names[c] : "?";
}

const char* redop_name(int op) {
    static const char* names[] = {"SUM", "AVG", "MIN", "MAX", "PRODUCT"};
    return op >= 0 && op < DDL_COMM_NUM_OPS ? names[op] : "?";
}

// The fixed-size description every rank exchanges before a collective's data.
struct Descriptor {
    uint64_t seq;
    int32_t coll;
    int32_t dtype;
    int64_t count;
    int32_t root;
    int32_t redop;
    int64_t count2;  // the second buffer's count where the op has two
    char pad[24];
};
static_assert(sizeof(Descriptor) == 64, "descriptor must be 64 bytes");

// Every collective starts with one message from each rank to every other rank, all at once (one
// step, where an allgather takes n-1): the descriptor, and for an all_reduce that fits the
// message its data too. Once the descriptors agree each rank reduces the blocks itself, in rank
// order (the same result, bit for bit, on every rank): a small all_reduce needs no second round.
// The message size is never taken from the call at hand, so ranks that disagree cannot trip
// Gloo's size-mismatch abort: it is kEagerMin, or the size of the previous all_reduce of at
// most kEagerMax bytes, which every rank agreed on (a loop of equal small all_reduces runs
// eagerly from its second call).
constexpr size_t kEagerMin = 4096;
constexpr size_t kEagerMax = 64 * 1024;

std::string describe(const Descriptor& d) {
    char buf[160];
    if (d.coll == DDL_COLL_BARRIER) {
        snprintf(buf, sizeof buf, "barrier()");
    } else {
        int n = snprintf(buf, sizeof buf, "%s(%s, %lld elements", coll_name(d.coll),
                         ddl_dtype_name((ddl_dtype)d.dtype), (long long)d.count);
        if (d.coll == DDL_COLL_ALLREDUCE || d.coll == DDL_COLL_REDUCE ||
            d.coll == DDL_COLL_REDUCE_SCATTER)
            n += snprintf(buf + n, sizeof buf - n, ", %s", redop_name(d.redop));
        if (d.coll == DDL_COLL_BROADCAST || d.coll == DDL_COLL_REDUCE ||
            d.coll == DDL_COLL_GATHER || d.coll == DDL_COLL_SCATTER)
            n += snprintf(buf + n, sizeof buf - n, ", root %d", d.root);
        snprintf(buf + n, sizeof buf - n, ")");
    }
    return buf;
}

bool same(const Descriptor& a, const Descriptor& b) {
    return a.seq == b.seq && a.coll == b.coll && a.dtype == b.dtype && a.count == b.count &&
           a.root == b.root && a.redop == b.redop && a.count2 == b.count2;
}

// One Gloo TCP device per (host or interface) per process, shared by its groups.
std::shared_ptr<gloo::transport::Device> device_for(const std::string& host,
                                                    const std::string& iface) {
    static std::mutex m;
    static auto* devices = new std::map<std::string, std::shared_ptr<gloo::transport::Device>>;
    static pid_t owner = getpid();
    std::lock_guard<std::mutex> lock(m);
    if (owner != getpid()) {
        // A forked child (ddl.distributed.launch) inherits the parent's devices but not their
        // event-loop threads: using one would hang. Start afresh, and leak the inherited ones
        // (destroying them would join threads that do not exist here).
        devices = new std::map<std::string, std::shared_ptr<gloo::transport::Device>>;
        owner = getpid();
    }
    std::string key = host + "|" + iface;
    auto it = devices->find(key);
    if (it != devices->end()) return it->second;
    gloo::transport::tcp::attr attr;
    if (!iface.empty()) attr.iface = iface;
    else attr.hostname = host.empty() ? "127.0.0.1" : host;
    attr.ai_family = AF_INET;
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    (*devices)[key] = dev;
    return dev;
}

}  // namespace

struct ddl_work {
    std::atomic<int> refs{1};
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    ddl_status st = DDL_OK;
    std::string msg;
    int64_t t_start = 0, t_end = 0;
    // the job
    Descriptor desc{};
    ddl_tensor* a = nullptr;  // the in-place / output tensor
    ddl_tensor* b = nullptr;  // the input where the op has a separate one
    int64_t timeout_ms = 0;

    // Called once the collective has left Gloo. If the watchdog completed the work early
    // (complete_early), its status stands.
    void finish(ddl_status s, const std::string& m) {
        ddl_tensor_release(a);
        ddl_tensor_release(b);
        a = b = nullptr;
        complete_early(s, m);
    }
    // Complete the work for its waiters, while Gloo may still hold its buffers (the tensors stay
    // referenced until finish()). The first status set wins.
    void complete_early(ddl_status s, const std::string& m) {
        std::lock_guard<std::mutex> lock(this->m);
        if (done) return;
        st = s;
        msg = m;
        t_end = now_us();
        done = true;
        cv.notify_all();
    }
};

struct ddl_pg {
    std::atomic<int> refs{1};
    bool shut_down = false;  // under qm
    int rank = 0, size = 1;
    int64_t timeout_ms = 30000;
    std::string prefix;
    std::unique_ptr<StoreAdapter> store;
    std::shared_ptr<gloo::transport::Device> dev;
    std::shared_ptr<gloo::rendezvous::Context> ctx;
    std::map<std::string, int> rank_of_addr;  // a peer's pair address -> its rank

    std::thread thread;
    std::mutex qm;
    std::condition_variable qcv;
    std::deque<ddl_work*> queue;
    bool stopping = false;
    uint64_t next_seq = 0;  // assigned at issue time, under qm
    bool busy = false;      // a collective is running (comm thread or an inline caller), under qm
    std::vector<uint8_t> xin, xout;  // the descriptor exchange's blocks (one runner at a time)
    size_t eager_cap = kEagerMin;    // payload bytes of the next exchange (one runner at a time)

    std::atomic<int> broken{0};
    ddl_status broken_st = DDL_OK;
    std::string broken_msg;
    std::mutex fail_m;  // one failure handler at a time (the collective's runner, the watchdog)

    // The watchdog (see watch()): the work now in Gloo and since when, under wm.
    std::thread watchdog;
    std::mutex wm;
    std::condition_variable wcv;
    ddl_work* running = nullptr;
    int64_t running_since = 0;
    bool watch_stop = false;
    std::map<int, std::string> pair_ends;  // rank -> "<this end>|<its end>" of their socket
    bool thread_exited = false;            // the comm thread left run(), under qm
    bool leaked = false;                   // shut down with its comm thread stuck in Gloo

    void run();
    void execute(ddl_work* w);
    bool exchange_descriptors(ddl_work* w);
    void run_collective(ddl_work* w);
    std::string peers_in(const std::string& text);
    std::string absent_ranks(uint64_t seq);
    bool lost_ranks(std::string* lost, std::map<int, std::string>* reports);
    bool poll_reports(const std::string& key, int64_t grace_ms, std::map<int, std::string>* got,
                      std::set<int>* missing);
    std::string rank_list(const std::set<int>& ranks);
    void close_connections();
    std::string connection_failure(const std::string& what, const std::string& seen);
    std::set<int> dead_connections();
    void watch();
};

namespace {

template <typename T>
void (*reduce_fn(int op))(void*, const void*, const void*, size_t) {
    switch (op) {
    case DDL_COMM_MIN: return &gloo::min<T>;
    case DDL_COMM_MAX: return &gloo::max<T>;
    case DDL_COMM_PRODUCT: return &gloo::product<T>;
    default: return &gloo::sum<T>;
    }
}

size_t dsize(int dtype) { return ddl_dtype_size((ddl_dtype)dtype); }

// Elementwise reduction of `n` chunks (count elements each, contiguous) into out.
template <typename T>
void reduce_chunks(T* out, const T* chunks, int n, int64_t count, int op) {
    auto fn = reduce_fn<T>(op);
    memcpy(out, chunks, sizeof(T) * count);
    for (int i = 1; i < n; i++) fn(out, out, chunks + (size_t)i * count, (size_t)count);
}

// The same over blocks `stride` bytes apart (the eager all_reduce's payloads).
template <typename T>
void reduce_blocks(T* out, const uint8_t* blocks, size_t stride, int n, int64_t count, int op) {
    auto fn = reduce_fn<T>(op);
    memcpy(out, blocks, sizeof(T) * count);
    for (int i = 1; i < n; i++) fn(out, out, blocks + (size_t)i * stride, (size_t)count);
}

template <typename T>
void divide(T* p, int64_t n, int by) {
    for (int64_t i = 0; i < n; i++) p[i] /= (T)by;
}

}  // namespace

// The ranks whose addresses appear in a Gloo error message ("[127.0.0.1]:4242"), as a whole
// token: ":4242" must not match inside ":42421".
std::string ddl_pg::peers_in(const std::string& text) {
    std::set<int> found;
    for (auto& kv : rank_of_addr)
        for (size_t at = text.find(kv.first); at != std::string::npos;
             at = text.find(kv.first, at + 1)) {
            size_t end = at + kv.first.size();
            if (end == text.size() || !isdigit(static_cast<unsigned char>(text[end]))) {
                found.insert(kv.second);
                break;
            }
        }
    std::string out;
    for (int r : found) out += (out.empty() ? "" : ", ") + std::to_string(r);
    return out;
}

// How long the ranks that saw a group fail wait for each other's reports in the store.
constexpr int64_t kReportGraceMs = 1000;

// Which of the other ranks have set "<key>/<rank>"? Polls (every 20 ms, each look without
// waiting) until all have or grace_ms passes: reports land in *got, the others stay in
// *missing. False when the store cannot be reached at all; if it goes away midway (its host
// exited after its own grace period, by when every live rank had reported) what was seen
// so far stands.
bool ddl_pg::poll_reports(const std::string& key, int64_t grace_ms,
                          std::map<int, std::string>* got, std::set<int>* missing) {
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

std::string ddl_pg::rank_list(const std::set<int>& ranks) {
    std::string out;
    for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
    return out;
}

// After a timeout: which ranks never reached this collective? Each survivor publishes that
// it is stuck (a group breaks at its first failure, so once); a rank that publishes nothing
// within a grace period is named. Best effort (the store may be gone with its host).
std::string ddl_pg::absent_ranks(uint64_t seq) {
    store->try_set("ddl/at/" + std::to_string(rank), std::to_string(seq));
    std::map<int, std::string> got;
    std::set<int> missing;
    if (!poll_reports("ddl/at", 1500, &got, &missing)) return "";
    return rank_list(missing);
}

// After a connection failure: which ranks are gone? Every rank that sees this group fail
// reports it in the store (ddl/failed/<rank>, see execute); the ranks with no report within
// kReportGraceMs go to *lost, the others' reports to *reports. False when the store is
// unreachable (then nothing is known).
bool ddl_pg::lost_ranks(std::string* lost, std::map<int, std::string>* reports) {
    std::set<int> missing;
    if (!poll_reports("ddl/failed", kReportGraceMs, reports, &missing)) return false;
    *lost = rank_list(missing);
    return true;
}

// Fail the peers fast: a rank not talking to the dead one would otherwise wait for its full
// timeout. The context is dead after any error anyway.
void ddl_pg::close_connections() {
    try {
        ctx->closeConnections();
    } catch (...) {
    }
}

// Returns true when the exchange also did the collective (an eager all_reduce).
bool ddl_pg::exchange_descriptors(ddl_work* w) {
    const Descriptor& d = w->desc;
    size_t bytes = (size_t)d.count * dsize(d.dtype);
    bool eager = d.coll == DDL_COLL_ALLREDUCE && d.count > 0 && bytes <= eager_cap;
    const size_t block = sizeof(Descriptor) + eager_cap;
    size_t used = sizeof(Descriptor) + (eager ? bytes : 0);
    xin.resize(block * size);
    xout.resize(block * size);
    memcpy(xin.data(), &d, sizeof(Descriptor));
    if (eager) memcpy(xin.data() + sizeof(Descriptor), ddl_tensor_data(w->a), bytes);
    for (int r = 1; r < size; r++) memcpy(xin.data() + (size_t)r * block, xin.data(), used);
    gloo::AlltoallOptions opts(ctx);
    opts.setInput(xin.data(), xin.size());
    opts.setOutput(xout.data(), xout.size());
    opts.setTag(1);
    opts.setTimeout(std::chrono::milliseconds(w->timeout_ms));
    gloo::alltoall(opts);
    for (int r = 0; r < size; r++) {
        Descriptor other;
        memcpy(&other, xout.data() + (size_t)r * block, sizeof other);
        if (!same(other, d)) {
            std::string msg = "mismatched collectives at sequence number " +
                              std::to_string(d.seq) + ": rank " + std::to_string(rank) +
                              " called " + describe(d) + " but rank " + std::to_string(r) +
                              " called " + describe(other);
            if (other.seq != d.seq)
                msg += " (its sequence number " + std::to_string(other.seq) + ")";
            throw DdlError(DDL_E_COMM, msg);
        }
    }
    // agreed by all: the next exchange carries an all_reduce of this size whole
    eager_cap = d.coll == DDL_COLL_ALLREDUCE && bytes > kEagerMin && bytes <= kEagerMax
                    ? (bytes + 63) / 64 * 64
                    : kEagerMin;
    if (!eager) return false;
    void* pa = ddl_tensor_data(w->a);
    const uint8_t* blocks = xout.data() + sizeof(Descriptor);
    int op = d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop;
    if (d.dtype == DDL_FLOAT32) {
        reduce_blocks(static_cast<float*>(pa), blocks, block, size, d.count, op);
        if (d.redop == DDL_COMM_AVG) divide(static_cast<float*>(pa), d.count, size);
    } else if (d.dtype == DDL_FLOAT64) {
        reduce_blocks(static_cast<double*>(pa), blocks, block, size, d.count, op);
        if (d.redop == DDL_COMM_AVG) divide(static_cast<double*>(pa), d.count, size);
    } else {
        reduce_blocks(static_cast<int64_t*>(pa), blocks, block, size, d.count, op);
    }
    return true;
}

void ddl_pg::run_collective(ddl_work* w) {
    const Descriptor& d = w->desc;
    auto timeout = std::chrono::milliseconds(w->timeout_ms);
    void* pa = w->a ? ddl_tensor_data(w->a) : nullptr;
    void* pb = w->b ? ddl_tensor_data(w->b) : nullptr;
    size_t es = dsize(d.dtype);
    const uint32_t tag = 2;
    switch (d.coll) {
    case DDL_COLL_ALLREDUCE: {
        gloo::AllreduceOptions opts(ctx);
        int op = d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop;
        if (d.dtype == DDL_FLOAT32) {
            opts.setOutput(static_cast<float*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<float>(op));
        } else if (d.dtype == DDL_FLOAT64) {
            opts.setOutput(static_cast<double*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<double>(op));
        } else {
            opts.setOutput(static_cast<int64_t*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<int64_t>(op));
        }
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::allreduce(opts);
        if (d.redop == DDL_COMM_AVG) {
            if (d.dtype == DDL_FLOAT32) divide(static_cast<float*>(pa), d.count, size);
            else divide(static_cast<double*>(pa), d.count, size);
        }
        break;
    }
    case DDL_COLL_BROADCAST: {
        gloo::BroadcastOptions opts(ctx);
        opts.setOutput(static_cast<uint8_t*>(pa), (size_t)d.count * es);
        opts.setRoot(d.root);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::broadcast(opts);
        break;
    }
    case DDL_COLL_ALLGATHER: {
        gloo::AllgatherOptions opts(ctx);
        opts.setInput(static_cast<uint8_t*>(pb), (size_t)d.count * es);
        opts.setOutput(static_cast<uint8_t*>(pa), (size_t)d.count * es * size);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::allgather(opts);
        break;
    }
    case DDL_COLL_ALLTOALL:
    case DDL_COLL_REDUCE_SCATTER: {
        // reduce_scatter = all-to-all of the chunks, then a local reduction of what arrived:
        // each byte crosses the network once
        int64_t chunk = d.coll == DDL_COLL_ALLTOALL ? d.count / size : d.count;
        std::vector<uint8_t> tmp;
        uint8_t* dst = static_cast<uint8_t*>(pa);
        if (d.coll == DDL_COLL_REDUCE_SCATTER) {
            tmp.resize((size_t)chunk * es * size);
            dst = tmp.data();
        }
        gloo::AlltoallOptions opts(ctx);
        opts.setInput(static_cast<uint8_t*>(pb), (size_t)chunk * es * size);
        opts.setOutput(dst, (size_t)chunk * es * size);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (chunk > 0) gloo::alltoall(opts);
        if (d.coll == DDL_COLL_REDUCE_SCATTER && chunk > 0) {
            int op = d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop;
            if (d.dtype == DDL_FLOAT32) {
                reduce_chunks(static_cast<float*>(pa), reinterpret_cast<float*>(dst), size, chunk, op);
                if (d.redop == DDL_COMM_AVG) divide(static_cast<float*>(pa), chunk, size);
            } else if (d.dtype == DDL_FLOAT64) {
                reduce_chunks(static_cast<double*>(pa), reinterpret_cast<double*>(dst), size, chunk, op);
                if (d.redop == DDL_COMM_AVG) divide(static_cast<double*>(pa), chunk, size);
            } else {
                reduce_chunks(static_cast<int64_t*>(pa), reinterpret_cast<int64_t*>(dst), size,
                              chunk, op);
            }
        }
        break;
    }
    case DDL_COLL_REDUCE: {
        gloo::ReduceOptions opts(ctx);
        int op = d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop;
        // Gloo reduces into every rank's output (its scratch space): a non-root rank works on
        // a copy so that its tensor is left as it was
        std::vector<uint8_t> scratch;
        if (rank != d.root && d.count > 0) {
            scratch.assign(static_cast<uint8_t*>(pa), static_cast<uint8_t*>(pa) + d.count * es);
            pa = scratch.data();
        }
        if (d.dtype == DDL_FLOAT32) {
            opts.setOutput(static_cast<float*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<float>(op));
        } else if (d.dtype == DDL_FLOAT64) {
            opts.setOutput(static_cast<double*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<double>(op));
        } else {
            opts.setOutput(static_cast<int64_t*>(pa), (size_t)d.count);
            opts.setReduceFunction(reduce_fn<int64_t>(op));
        }
        opts.setRoot(d.root);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::reduce(opts);
        if (d.redop == DDL_COMM_AVG && rank == d.root) {
            if (d.dtype == DDL_FLOAT32) divide(static_cast<float*>(pa), d.count, size);
            else divide(static_cast<double*>(pa), d.count, size);
        }
        break;
    }
    case DDL_COLL_GATHER: {
        gloo::GatherOptions opts(ctx);
        opts.setInput(static_cast<uint8_t*>(pb), (size_t)d.count * es);
        if (rank == d.root) opts.setOutput(static_cast<uint8_t*>(pa), (size_t)d.count * es * size);
        opts.setRoot(d.root);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::gather(opts);
        break;
    }
    case DDL_COLL_SCATTER: {
        gloo::ScatterOptions opts(ctx);
        std::vector<uint8_t*> chunks;
        if (rank == d.root)
            for (int r = 0; r < size; r++)
                chunks.push_back(static_cast<uint8_t*>(pb) + (size_t)r * d.count * es);
        if (rank == d.root) opts.setInputs(chunks, (size_t)d.count * es);
        opts.setOutput(static_cast<uint8_t*>(pa), (size_t)d.count * es);
        opts.setRoot(d.root);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        if (d.count > 0) gloo::scatter(opts);
        break;
    }
    case DDL_COLL_BARRIER: {
        gloo::BarrierOptions opts(ctx);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        gloo::barrier(opts);
        break;
    }
    default:
        throw DdlError(DDL_E_INTERNAL, "unknown collective");
    }
}

void ddl_pg::execute(ddl_work* w) {
    w->t_start = now_us();
    if (broken.load()) {
        w->finish(broken_st, broken_msg);
        return;
    }
    std::string what = std::string(coll_name(w->desc.coll)) + " #" + std::to_string(w->desc.seq);
    bool reported = false;  // this rank's failure report is in the store
    if (size > 1) {
        std::lock_guard<std::mutex> lock(wm);
        running = w;
        running_since = w->t_start;
    }
    struct Unwatch {  // however execute leaves, the watchdog stops looking at w first
        ddl_pg* pg;
        ~Unwatch() {
            std::lock_guard<std::mutex> lock(pg->wm);
            pg->running = nullptr;
        }
    } unwatch{this};
    std::unique_lock<std::mutex> failing(fail_m, std::defer_lock);
    try {
        if (size > 1) {
            // a barrier is the exchange itself: every rank has heard from every other
            if (!exchange_descriptors(w) && w->desc.coll != DDL_COLL_BARRIER) run_collective(w);
        } else if (w->desc.coll != DDL_COLL_BARRIER) {
            run_collective(w);  // one rank: Gloo's algorithms handle it locally
        }
        w->finish(DDL_OK, "");  // (if the watchdog completed w already, its status stands)
        return;
    } catch (...) {
        // the watchdog may have failed the group (and w) already: that report stands
        failing.lock();
        if (broken.load()) {
            w->finish(broken_st, broken_msg);
            return;
        }
        try {
            throw;
        } catch (const DdlError& e) {
            broken_st = e.st;
            broken_msg = "rank " + std::to_string(rank) + ": " + e.msg;
        } catch (const gloo::IoException& e) {
            bool timed_out = now_us() - w->t_start >= w->timeout_ms * 900;
            std::string text = e.what();
            std::string peers = peers_in(text);
            std::string me = "rank " + std::to_string(rank) + ": ";
            if (timed_out) {
                std::string absent = absent_ranks(w->desc.seq);
                broken_st = DDL_E_TIMEOUT;
                broken_msg = me + what + " timed out after " + std::to_string(w->timeout_ms) +
                             " ms" +
                             (absent.empty() ? "" : "; rank(s) " + absent + " never arrived") +
                             " (" + text + ")";
            } else {
                broken_st = DDL_E_COMM;
                broken_msg = connection_failure(
                    what, (peers.empty() ? "a peer" : "peer rank(s) " + peers) +
                              " closed the connection (" + text + ")");
                reported = true;
            }
        } catch (const std::exception& e) {
            broken_st = DDL_E_INTERNAL;
            broken_msg = "rank " + std::to_string(rank) + ": " + what + ": " + e.what();
        } catch (...) {
            broken_st = DDL_E_INTERNAL;
            broken_msg = "rank " + std::to_string(rank) + ": " + what + ": unknown C++ exception";
        }
    }
    broken.store(1);
    // tell the others why (a connection failure reported itself above), then fail them fast
    if (!reported) store->try_set("ddl/failed/" + std::to_string(rank), broken_msg);
    close_connections();
    w->finish(broken_st, broken_msg);
}

// A connection of this group failed (`seen`: how it showed here). A dead rank's connections
// close, but only the ranks reading from it notice; the others notice when the first ones
// close their connections. So who `seen` names may be a survivor: close at once, report in
// the store, and name the ranks that do not report. Returns the group's error message.
std::string ddl_pg::connection_failure(const std::string& what, const std::string& seen) {
    std::string me = "rank " + std::to_string(rank) + ": ";
    close_connections();
    store->try_set("ddl/failed/" + std::to_string(rank), me + what + " failed: " + seen);
    std::string lost;
    std::map<int, std::string> reports;
    if (!lost_ranks(&lost, &reports))
        return me + what + " failed: " + seen +
               "; the rendezvous store is unreachable as well, so its host (rank 0's process "
               "with env:// and tcp://) may have died or exited";
    if (!lost.empty())
        return me + what + " failed: rank(s) " + lost +
               " died or stopped responding (no failure report from them within " +
               std::to_string(kReportGraceMs) + " ms; every other rank reported); seen here: " +
               seen;
    // every rank is alive: quote why the first peer that closed on us failed
    size_t at = seen.find("rank(s) ");
    auto it = at == std::string::npos ? reports.end() : reports.find(atoi(seen.c_str() + at + 8));
    if (it == reports.end()) it = reports.begin();
    std::string msg = me + what + " failed: " + seen;
    if (it != reports.end()) msg += "; rank " + std::to_string(it->first) + " reported: " + it->second;
    return msg;
}

// The ranks whose connection with this one is gone: its socket closed, hung up or in error.
// Looked up from outside Gloo, among this process's sockets, by the two ends of each pair.
std::set<int> ddl_pg::dead_connections() {
    std::set<int> dead;
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return dead;  // nothing known: nothing named
    std::map<std::string, int> fd_of;
    while (dirent* e = readdir(dir)) {
        if (!isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
        int fd = atoi(e->d_name);
        sockaddr_storage a, b;
        socklen_t la = sizeof a, lb = sizeof b;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &la) != 0 ||
            getpeername(fd, reinterpret_cast<sockaddr*>(&b), &lb) != 0 ||
            (a.ss_family != AF_INET && a.ss_family != AF_INET6))
            continue;
        try {
            fd_of[gloo::transport::tcp::Address(reinterpret_cast<sockaddr*>(&a), la).str() + "|" +
                  gloo::transport::tcp::Address(reinterpret_cast<sockaddr*>(&b), lb).str()] = fd;
        } catch (...) {
        }
    }
    closedir(dir);
    for (auto& kv : pair_ends) {
        auto it = fd_of.find(kv.second);
        if (it == fd_of.end()) {  // Gloo closed it (or a reset peer left it unconnected)
            dead.insert(kv.first);
            continue;
        }
        pollfd p{it->second, POLLRDHUP, 0};
        if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            dead.insert(kv.first);
    }
    return dead;
}

// The watchdog. Gloo (this snapshot) does not wake a transfer that was under way when its
// connection failed (a send partly written, a receive partly read): the collective then waits
// for its whole timeout, although a peer died or every other rank already gave up. While a
// collective has run for kWatchMs, the watchdog looks at the group's sockets every kWatchMs;
// once one is gone it fails the group as the runner would have (report, name the lost
// ranks) and completes the work, so its waiter raises now. The runner itself stays in Gloo
// until the timeout ends the transfer (so large collectives run on the comm thread, never on
// the caller's), and a group shut down meanwhile is left behind rather than waited for.
constexpr int64_t kWatchMs = 250;

void ddl_pg::watch() {
    std::unique_lock<std::mutex> lock(wm);
    while (!watch_stop) {
        wcv.wait_for(lock, std::chrono::milliseconds(kWatchMs));
        if (watch_stop || !running || broken.load() || now_us() - running_since < kWatchMs * 1000)
            continue;
        ddl_work* w = running;
        w->refs.fetch_add(1);  // kept alive while we look (execute unregisters it under wm)
        lock.unlock();
        std::set<int> dead = dead_connections();
        if (!dead.empty()) {
            std::unique_lock<std::mutex> failing(fail_m, std::try_to_lock);
            if (failing && !broken.load()) {
                std::string what =
                    std::string(coll_name(w->desc.coll)) + " #" + std::to_string(w->desc.seq);
                std::string msg = connection_failure(
                    what, "the connection(s) with rank(s) " + rank_list(dead) +
                              " closed while a transfer was under way (found by the watchdog)");
                broken_st = DDL_E_COMM;
                broken_msg = msg;
                broken.store(1);
                w->complete_early(broken_st, broken_msg);
            }
        }
        ddl_work_free(w);
        lock.lock();
    }
}

void ddl_pg::run() {
    for (;;) {
        ddl_work* w;
        {
            std::unique_lock<std::mutex> lock(qm);
            qcv.wait(lock, [&] { return !busy && (stopping || !queue.empty()); });
            if (queue.empty()) {
                thread_exited = true;
                qcv.notify_all();
                return;
            }
            w = queue.front();
            queue.pop_front();
            busy = true;
        }
        execute(w);
        ddl_work_free(w);  // the queue's reference
        std::lock_guard<std::mutex> lock(qm);
        busy = false;
    }
}

namespace {

ddl_status check_tensor(const ddl_tensor* t, const char* who, const char* arg, bool allow_int) {
    if (!t) return ddl_fail(DDL_E_VALUE, "%s: %s is required", who, arg);
    if (!ddl_tensor_is_contiguous(t))
        return ddl_fail(DDL_E_VALUE, "%s: %s must be contiguous", who, arg);
    if (t->dtype == DDL_BOOL || (!allow_int && t->dtype == DDL_INT64))
        return ddl_fail(DDL_E_TYPE, "%s: %s of dtype %s is not supported", who, arg,
                        ddl_dtype_name(t->dtype));
    return DDL_OK;
}

ddl_status submit(ddl_pg* pg, int coll, ddl_tensor* a, const ddl_tensor* b, int root, int redop,
                  int64_t count, int64_t count2, int64_t timeout_ms, ddl_work** work) {
    if (pg->broken.load()) return ddl_fail(pg->broken_st, "%s", pg->broken_msg.c_str());
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        if (pg->shut_down)
            return ddl_fail(DDL_E_VALUE, "%s: the process group was destroyed", coll_name(coll));
    }
    ddl_work* w = new (std::nothrow) ddl_work;
    if (!w) return ddl_fail(DDL_E_NOMEM, "%s: out of memory", coll_name(coll));
    w->desc.coll = coll;
    w->desc.dtype = a ? (int)a->dtype : (b ? (int)b->dtype : 0);
    w->desc.count = count;
    w->desc.count2 = count2;
    w->desc.root = root;
    w->desc.redop = redop;
    w->timeout_ms = timeout_ms > 0 ? timeout_ms : pg->timeout_ms;
    if (a) ddl_tensor_retain(a);
    if (b) ddl_tensor_retain(const_cast<ddl_tensor*>(b));
    w->a = a;
    w->b = const_cast<ddl_tensor*>(b);
    w->refs = 2;  // the caller's and the queue's
    bool here = false;
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        w->desc.seq = pg->next_seq++;
        // a synchronous call with nothing queued or running runs on the caller's thread (in
        // issue order all the same): no handoff to the comm thread and back, two thread
        // wake-ups fewer per call
        // (small ones only: a large transfer can be stuck in Gloo after a failure until the
        // watchdog completes the work for its waiter, see watch())
        here = !work && !pg->busy && pg->queue.empty() &&
               (size_t)std::max(count, count2) * dsize(w->desc.dtype) <= kEagerMax;
        if (here) pg->busy = true;
        else pg->queue.push_back(w);
    }
    if (here) {
        pg->execute(w);
        ddl_work_free(w);  // the queue's reference
        std::lock_guard<std::mutex> lock(pg->qm);
        pg->busy = false;
        pg->qcv.notify_all();  // under the lock: ddl_pg_release may delete pg once it sees !busy
    } else {
        pg->qcv.notify_one();
    }
    if (work) {
        *work = w;
        return DDL_OK;
    }
    ddl_status st = ddl_work_wait(w, -1);
    ddl_work_free(w);
    return st;
}

}  // namespace

namespace {

// A ddl_store over Gloo's RedisStore (for clusters that already run Redis). Gloo's store has
// set/get/wait/check only; the counters and deletes of the TCP store are not offered.
struct RedisStoreBox {
    ddl_store base;  // first: the vtable's ddl_store* is this box
    std::unique_ptr<gloo::rendezvous::RedisStore> rs;
    std::mutex m;  // a redisContext is not thread-safe
    int64_t timeout_ms = 300000;
};

RedisStoreBox* box(ddl_store* s) { return reinterpret_cast<RedisStoreBox*>(s); }

template <typename F>
ddl_status redis_call(const char* what, F&& f) {
    try {
        f();
        return DDL_OK;
    } catch (const gloo::IoException& e) {
        std::string m = e.what();
        bool timeout = m.find("imeout") != std::string::npos;
        return ddl_fail(timeout ? DDL_E_TIMEOUT : DDL_E_COMM, "redis store %s: %s", what, m.c_str());
    } catch (...) {
        return map_exception("redis store");
    }
}

ddl_status redis_set(ddl_store* s, const char* key, const void* val, size_t len) {
    auto* b = box(s);
    std::lock_guard<std::mutex> lock(b->m);
    const char* p = static_cast<const char*>(val);
    return redis_call("set", [&] { b->rs->set(key, std::vector<char>(p, p + len)); });
}

ddl_status redis_wait(ddl_store* s, const char* const* keys, int n, int64_t timeout_ms) {
    auto* b = box(s);
    std::vector<std::string> ks(keys, keys + n);
    std::lock_guard<std::mutex> lock(b->m);
    if (timeout_ms == 0) {
        // Gloo's RedisStore reads a zero timeout as "wait forever": look once instead (the
        // process group's failure handling polls its peers' reports this way)
        bool all = false;
        ddl_status st = redis_call("check", [&] { all = b->rs->check(ks); });
        if (st) return st;
        if (all) return DDL_OK;
        return ddl_fail(DDL_E_TIMEOUT, "redis store wait: key %s%s is not set", keys[0],
                        n > 1 ? " (or another of the keys)" : "");
    }
    return redis_call("wait", [&] {
        b->rs->wait(ks, std::chrono::milliseconds(timeout_ms < 0 ? INT32_MAX : timeout_ms));
    });
}

ddl_status redis_get(ddl_store* s, const char* key, void** val, size_t* len, int64_t timeout_ms) {
    ddl_status st = redis_wait(s, &key, 1, timeout_ms);
    if (st) return st;
    auto* b = box(s);
    std::lock_guard<std::mutex> lock(b->m);
    std::vector<char> v;
    st = redis_call("get", [&] { v = b->rs->get(key); });
    if (st) return st;
    *val = malloc(v.size() ? v.size() : 1);
    if (!*val) return ddl_fail(DDL_E_NOMEM, "redis store get: out of memory");
    memcpy(*val, v.data(), v.size());
    *len = v.size();
    return DDL_OK;
}

ddl_status redis_check(ddl_store* s, const char* const* keys, int n, int* all) {
    auto* b = box(s);
    std::vector<std::string> ks(keys, keys + n);
    std::lock_guard<std::mutex> lock(b->m);
    return redis_call("check", [&] { *all = b->rs->check(ks) ? 1 : 0; });
}

ddl_status redis_unsupported(const char* what) {
    return ddl_fail(DDL_E_VALUE, "the redis store does not support %s (Gloo's RedisStore offers "
                                 "set, get, wait and check)", what);
}

ddl_status redis_add(ddl_store*, const char*, int64_t, int64_t*) { return redis_unsupported("add"); }
ddl_status redis_cas(ddl_store*, const char*, const void*, size_t, const void*, size_t, void**,
                     size_t*) {
    return redis_unsupported("compare_set");
}
ddl_status redis_del(ddl_store*, const char*, int*) { return redis_unsupported("delete_key"); }
ddl_status redis_num_keys(ddl_store*, int64_t*) { return redis_unsupported("num_keys"); }
void redis_set_timeout(ddl_store* s, int64_t ms) { box(s)->timeout_ms = ms; }
void redis_destroy(ddl_store* s) { delete box(s); }

const ddl_store_vtable redis_vtable = {
    "redis",   redis_set, redis_get,         redis_add,     redis_cas, redis_wait, redis_check,
    redis_del, redis_num_keys, redis_set_timeout, redis_destroy,
};

}  // namespace

extern "C" {

ddl_status ddl_store_new_redis(ddl_store** out, const char* host, int port) {
    if (!host || !*host || port < 1 || port > 65535)
        return ddl_fail(DDL_E_VALUE, "redis store: bad address %s:%d", host ? host : "", port);
    try {
        auto* b = new RedisStoreBox();
        b->base.vt = &redis_vtable;
        b->base.refs = 1;
        try {
            b->rs.reset(new gloo::rendezvous::RedisStore(host, port));
        } catch (...) {
            delete b;
            throw;
        }
        *out = &b->base;
        return DDL_OK;
    } catch (const std::exception& e) {
        return ddl_fail(DDL_E_COMM, "redis store: cannot connect to %s:%d: %s", host, port,
                        e.what());
    } catch (...) {
        return map_exception("redis store");
    }
}

const char* ddl_gloo_version(void) {
    return DDL_STR(GLOO_VERSION_MAJOR) "." DDL_STR(GLOO_VERSION_MINOR) "." DDL_STR(
        GLOO_VERSION_PATCH);
}

int64_t ddl_now_us(void) { return now_us(); }

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
                auto dev = device_for("127.0.0.1", "");
                ctx->connectFullMesh(store, dev);
                gloo::AllreduceOptions opts(ctx);
                opts.setOutput(&v[rank], 1);
                opts.setReduceFunction(reduce_fn<double>(DDL_COMM_SUM));
                opts.setTag(1);
                gloo::allreduce(opts);
                st[rank] = DDL_OK;
            } catch (...) {
                st[rank] = map_exception("gloo self-test");
                err[rank] = ddl_last_error();
            }
        };
        std::thread t1(one, 1);
        one(0);
        t1.join();
        for (int r = 0; r < 2; r++)
            if (st[r] != DDL_OK) return ddl_fail(st[r], "%s", err[r].c_str());
        if (v[0] != 3.0 || v[1] != 3.0)
            return ddl_fail(DDL_E_INTERNAL, "gloo self-test: allreduce gave %g and %g, not 3",
                            v[0], v[1]);
        *result = v[0];
        return DDL_OK;
    } catch (...) {
        return map_exception("gloo self-test");
    }
}

ddl_status ddl_pg_new(ddl_pg** out, ddl_store* store, const char* prefix, int rank, int size,
                      const char* hostname, const char* iface, int64_t timeout_ms) {
    if (size < 1 || rank < 0 || rank >= size)
        return ddl_fail(DDL_E_VALUE, "process group: rank %d is outside [0, %d)", rank, size);
    if (!store) return ddl_fail(DDL_E_VALUE, "process group: a store is required");
    if (timeout_ms <= 0) timeout_ms = 30000;
    ignore_sigpipe();
    ddl_pg* pg = new (std::nothrow) ddl_pg;
    if (!pg) return ddl_fail(DDL_E_NOMEM, "process group: out of memory");
    try {
        pg->rank = rank;
        pg->size = size;
        pg->timeout_ms = timeout_ms;
        pg->prefix = prefix ? prefix : "ddl";
        pg->store.reset(new StoreAdapter(store, pg->prefix, timeout_ms));
        // 1. everyone announces itself with its world size, so a rank that never comes is
        //    named and ranks started with different world sizes fail at once (one deadline)
        const std::string my_size = std::to_string(size);
        pg->store->set("ddl/joined/" + std::to_string(rank),
                       std::vector<char>(my_size.begin(), my_size.end()));
        int64_t deadline = now_us() + timeout_ms * 1000;
        for (int r = 0; r < size; r++) {
            std::string v;
            int64_t left = std::max<int64_t>(0, (deadline - now_us()) / 1000);
            ddl_status st = pg->store->get_status("ddl/joined/" + std::to_string(r), &v, left);
            if (st == DDL_E_TIMEOUT) {
                std::string missing = std::to_string(r);
                for (int q = r + 1; q < size; q++)
                    if (pg->store->get_status("ddl/joined/" + std::to_string(q), &v, 0) != DDL_OK)
                        missing += ", " + std::to_string(q);
                throw DdlError(DDL_E_TIMEOUT, "process group: rank(s) " + missing + " of " +
                                                  my_size + " never joined within " +
                                                  std::to_string(timeout_ms) + " ms");
            }
            if (st != DDL_OK)
                throw DdlError(st, "process group: waiting for rank " + std::to_string(r) +
                                       " to join: " + ddl_last_error());
            if (v != my_size)
                throw DdlError(DDL_E_VALUE, "process group: rank " + std::to_string(r) +
                                                " was started with world size " + v +
                                                " but rank " + std::to_string(rank) + " with " +
                                                my_size + ": every rank needs the same WORLD_SIZE");
        }
        // 2. Gloo's full mesh
        pg->dev = device_for(hostname ? hostname : "", iface ? iface : "");
        pg->ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
        pg->ctx->setTimeout(std::chrono::milliseconds(timeout_ms));
        pg->ctx->connectFullMesh(*pg->store, pg->dev);
        // 3. learn which address is which peer, to name peers in errors
        for (int r = 0; r < size; r++)
            if (r != rank)
                pg->store->set("ddl/addr/" + std::to_string(rank) + "/" + std::to_string(r),
                               [&] {
                                   std::string a = pg->ctx->getPair(r)->address().str();
                                   return std::vector<char>(a.begin(), a.end());
                               }());
        for (int r = 0; r < size; r++)
            if (r != rank) {
                std::vector<char> a =
                    pg->store->get("ddl/addr/" + std::to_string(r) + "/" + std::to_string(rank));
                pg->rank_of_addr[std::string(a.begin(), a.end())] = r;
            }
        // A pair that accepted its connection before connect() ran names the peer by the
        // address it listened on (Gloo's rendezvous key "<r>": r's listening address for each
        // other rank, in rank order, itself left out); map those too. Best effort.
        for (int r = 0; r < size; r++) {
            if (r == rank) continue;
            try {
                std::vector<char> all = pg->store->get(std::to_string(r));
                size_t n = all.size() / (size_t)(size - 1);
                size_t at = (size_t)(rank > r ? rank - 1 : rank) * n;
                if (n > 0 && all.size() == n * (size_t)(size - 1)) {
                    std::vector<char> one(all.begin() + (ptrdiff_t)at,
                                          all.begin() + (ptrdiff_t)(at + n));
                    pg->rank_of_addr[gloo::transport::tcp::Address(one).str()] = r;
                }
            } catch (...) {
            }
        }
        for (int r = 0; r < size; r++)
            if (r != rank) {
                std::vector<char> a =
                    pg->store->get("ddl/addr/" + std::to_string(r) + "/" + std::to_string(rank));
                pg->pair_ends[r] =
                    pg->ctx->getPair(r)->address().str() + "|" + std::string(a.begin(), a.end());
            }
        pg->thread = std::thread([pg] { pg->run(); });
        if (size > 1) pg->watchdog = std::thread([pg] { pg->watch(); });
        *out = pg;
        return DDL_OK;
    } catch (...) {
        ddl_status st = map_exception("process group");
        delete pg;
        return st;
    }
}

static void pg_shutdown(ddl_pg* pg) {
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        if (pg->shut_down) return;
        pg->shut_down = true;
        pg->stopping = true;
    }
    pg->qcv.notify_all();
    {
        std::lock_guard<std::mutex> lock(pg->wm);
        pg->watch_stop = true;
    }
    pg->wcv.notify_all();
    if (pg->watchdog.joinable()) pg->watchdog.join();
    if (pg->thread.joinable()) {
        // A broken group's comm thread may sit in a Gloo transfer that only the timeout ends
        // (see watch()): give it a moment, then leave it (and the group's memory) behind.
        bool exited = true;
        if (pg->broken.load()) {
            std::unique_lock<std::mutex> lock(pg->qm);
            exited = pg->qcv.wait_for(lock, std::chrono::milliseconds(200),
                                      [&] { return pg->thread_exited; });
        }
        if (exited) {
            pg->thread.join();
        } else {
            pg->thread.detach();
            pg->leaked = true;
        }
    }
    try {
        if (pg->ctx) pg->ctx->closeConnections();
    } catch (...) {
    }
}

ddl_pg* ddl_pg_retain(ddl_pg* pg) {
    if (pg) pg->refs.fetch_add(1);
    return pg;
}

void ddl_pg_release(ddl_pg* pg) {
    if (pg && pg->refs.fetch_sub(1) == 1) {
        pg_shutdown(pg);
        if (!pg->leaked) delete pg;
    }
}

void ddl_pg_shutdown(ddl_pg* pg) {
    if (pg) pg_shutdown(pg);
}

int ddl_pg_rank(const ddl_pg* pg) { return pg->rank; }
int ddl_pg_size(const ddl_pg* pg) { return pg->size; }

ddl_status ddl_pg_check(const ddl_pg* pg) {
    if (pg->broken.load()) return ddl_fail(pg->broken_st, "%s", pg->broken_msg.c_str());
    return DDL_OK;
}

ddl_status ddl_pg_allreduce(ddl_pg* pg, ddl_tensor* t, ddl_comm_op op, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(t, "all_reduce", "tensor", true);
    if (st) return st;
    if ((unsigned)op >= DDL_COMM_NUM_OPS) return ddl_fail(DDL_E_VALUE, "all_reduce: bad op %d", op);
    if (op == DDL_COMM_AVG && t->dtype == DDL_INT64)
        return ddl_fail(DDL_E_TYPE, "all_reduce: AVG needs a floating-point tensor, got int64");
    return submit(pg, DDL_COLL_ALLREDUCE, t, nullptr, 0, op, ddl_tensor_numel(t), 0, timeout_ms,
                  work);
}

ddl_status ddl_pg_broadcast(ddl_pg* pg, ddl_tensor* t, int root, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(t, "broadcast", "tensor", true);
    if (st) return st;
    if (root < 0 || root >= pg->size)
        return ddl_fail(DDL_E_VALUE, "broadcast: root %d is outside [0, %d)", root, pg->size);
    return submit(pg, DDL_COLL_BROADCAST, t, nullptr, root, 0, ddl_tensor_numel(t), 0, timeout_ms,
                  work);
}

ddl_status ddl_pg_allgather(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(out, "all_gather", "output", true);
    if (!st) st = check_tensor(in, "all_gather", "input", true);
    if (st) return st;
    if (out->dtype != in->dtype || ddl_tensor_numel(out) != ddl_tensor_numel(in) * pg->size)
        return ddl_fail(DDL_E_VALUE,
                        "all_gather: output holds %lld %s elements; it needs %d x %lld %s",
                        (long long)ddl_tensor_numel(out), ddl_dtype_name(out->dtype), pg->size,
                        (long long)ddl_tensor_numel(in), ddl_dtype_name(in->dtype));
    return submit(pg, DDL_COLL_ALLGATHER, out, in, 0, 0, ddl_tensor_numel(in), 0, timeout_ms, work);
}

ddl_status ddl_pg_reduce_scatter(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, ddl_comm_op op,
                                 int64_t timeout_ms, ddl_work** work) {
    ddl_status st = check_tensor(out, "reduce_scatter", "output", true);
    if (!st) st = check_tensor(in, "reduce_scatter", "input", true);
    if (st) return st;
    if ((unsigned)op >= DDL_COMM_NUM_OPS)
        return ddl_fail(DDL_E_VALUE, "reduce_scatter: bad op %d", op);
    if (op == DDL_COMM_AVG && out->dtype == DDL_INT64)
        return ddl_fail(DDL_E_TYPE, "reduce_scatter: AVG needs a floating-point tensor");
    if (out->dtype != in->dtype || ddl_tensor_numel(in) != ddl_tensor_numel(out) * pg->size)
        return ddl_fail(DDL_E_VALUE, "reduce_scatter: input holds %lld elements; it needs %d x %lld",
                        (long long)ddl_tensor_numel(in), pg->size,
                        (long long)ddl_tensor_numel(out));
    return submit(pg, DDL_COLL_REDUCE_SCATTER, out, in, 0, op, ddl_tensor_numel(out), 0,
                  timeout_ms, work);
}

ddl_status ddl_pg_reduce(ddl_pg* pg, ddl_tensor* t, int root, ddl_comm_op op, int64_t timeout_ms,
                         ddl_work** work) {
    ddl_status st = check_tensor(t, "reduce", "tensor", true);
    if (st) return st;
    if (root < 0 || root >= pg->size)
        return ddl_fail(DDL_E_VALUE, "reduce: root %d is outside [0, %d)", root, pg->size);
    if ((unsigned)op >= DDL_COMM_NUM_OPS) return ddl_fail(DDL_E_VALUE, "reduce: bad op %d", op);
    if (op == DDL_COMM_AVG && t->dtype == DDL_INT64)
        return ddl_fail(DDL_E_TYPE, "reduce: AVG needs a floating-point tensor, got int64");
    return submit(pg, DDL_COLL_REDUCE, t, nullptr, root, op, ddl_tensor_numel(t), 0, timeout_ms,
                  work);
}

ddl_status ddl_pg_gather(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int root,
                         int64_t timeout_ms, ddl_work** work) {
    ddl_status st = check_tensor(in, "gather", "input", true);
    if (st) return st;
    if (root < 0 || root >= pg->size)
        return ddl_fail(DDL_E_VALUE, "gather: root %d is outside [0, %d)", root, pg->size);
    if (pg->rank == root) {
        if ((st = check_tensor(out, "gather", "output", true))) return st;
        if (out->dtype != in->dtype || ddl_tensor_numel(out) != ddl_tensor_numel(in) * pg->size)
            return ddl_fail(DDL_E_VALUE, "gather: output holds %lld elements; it needs %d x %lld",
                            (long long)ddl_tensor_numel(out), pg->size,
                            (long long)ddl_tensor_numel(in));
    } else {
        out = nullptr;
    }
    return submit(pg, DDL_COLL_GATHER, out, in, root, 0, ddl_tensor_numel(in), 0, timeout_ms,
                  work);
}

ddl_status ddl_pg_scatter(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int root,
                          int64_t timeout_ms, ddl_work** work) {
    ddl_status st = check_tensor(out, "scatter", "output", true);
    if (st) return st;
    if (root < 0 || root >= pg->size)
        return ddl_fail(DDL_E_VALUE, "scatter: root %d is outside [0, %d)", root, pg->size);
    if (pg->rank == root) {
        if ((st = check_tensor(in, "scatter", "input", true))) return st;
        if (out->dtype != in->dtype || ddl_tensor_numel(in) != ddl_tensor_numel(out) * pg->size)
            return ddl_fail(DDL_E_VALUE, "scatter: input holds %lld elements; it needs %d x %lld",
                            (long long)ddl_tensor_numel(in), pg->size,
                            (long long)ddl_tensor_numel(out));
    } else {
        in = nullptr;
    }
    return submit(pg, DDL_COLL_SCATTER, out, in, root, 0, ddl_tensor_numel(out), 0, timeout_ms,
                  work);
}

ddl_status ddl_pg_alltoall(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int64_t timeout_ms,
                           ddl_work** work) {
    ddl_status st = check_tensor(out, "all_to_all", "output", true);
    if (!st) st = check_tensor(in, "all_to_all", "input", true);
    if (st) return st;
    int64_t n = ddl_tensor_numel(in);
    if (out->dtype != in->dtype || ddl_tensor_numel(out) != n || n % pg->size)
        return ddl_fail(DDL_E_VALUE,
                        "all_to_all: input and output must hold the same number of elements, "
                        "divisible by the world size %d (got %lld and %lld)",
                        pg->size, (long long)n, (long long)ddl_tensor_numel(out));
    return submit(pg, DDL_COLL_ALLTOALL, out, in, 0, 0, n, 0, timeout_ms, work);
}

ddl_status ddl_pg_barrier(ddl_pg* pg, int64_t timeout_ms, ddl_work** work) {
    return submit(pg, DDL_COLL_BARRIER, nullptr, nullptr, 0, 0, 0, 0, timeout_ms, work);
}

ddl_status ddl_work_wait(ddl_work* w, int64_t timeout_ms) {
    std::unique_lock<std::mutex> lock(w->m);
    if (timeout_ms < 0) {
        w->cv.wait(lock, [&] { return w->done; });
    } else if (!w->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                               [&] { return w->done; })) {
        return ddl_fail(DDL_E_TIMEOUT, "%s #%llu: still running after %lld ms",
                        coll_name(w->desc.coll), (unsigned long long)w->desc.seq,
                        (long long)timeout_ms);
    }
    if (w->st != DDL_OK) return ddl_fail(w->st, "%s", w->msg.c_str());
    return DDL_OK;
}

int ddl_work_is_completed(ddl_work* w) {
    std::lock_guard<std::mutex> lock(w->m);
    return w->done;
}

void ddl_work_free(ddl_work* w) {
    if (w && w->refs.fetch_sub(1) == 1) {
        ddl_tensor_release(w->a);
        ddl_tensor_release(w->b);
        delete w;
    }
}

void ddl_work_times(ddl_work* w, int64_t* start_us, int64_t* end_us) {
    std::lock_guard<std::mutex> lock(w->m);
    *start_us = w->t_start;
    *end_us = w->t_end;
}

}  // extern "C"
