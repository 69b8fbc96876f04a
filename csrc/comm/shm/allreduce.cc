// allreduce.cc: the shared-memory transport's large all_reduce, run by the caller's thread: a
// reduce-scatter and an allgather, pipelined over chunks small enough to stay in cache, one
// synchronisation per chunk, every rank working at once.
//
// Chunk k (len elements of the caller's buffer a) is cut in n slices, rank q owning slice q.
// Three phases, each a pass over cache-resident data:
//   X_k: copy the peers' slices of my chunk k into my slot k's X area (my slice stays in a)
//   R_k: reduce my slice of chunk k, in rank order, from a (mine) and the peers' X areas,
//        written at once to a and to my slot's R area, where the peers fetch it
//   O_k: copy the peers' reduced slices of chunk k from their R areas into a
// Step j does X_j, R_{j-L}, O_{j-2L} and publishes j; it first waits until every peer has
// published step j-L, which is all the data those phases read. So a rank may run up to L
// steps ahead of the slowest peer: on a busy machine, where the ranks often do not run at the
// same time, each turn on a core does up to 2L steps instead of one. Each rank reads every
// other rank's data once from the segment, and reads and writes each element of a once.
//
// Slots: a ring of 2L per rank over its two large buffers; step j writes slot j's X area and
// slot (j-L)'s R area, which the peers last read during their step j-L (done: waited for). A
// call ends with a barrier (every rank's last step), so the next call of any kind finds the
// slots free; it starts with one after round-based calls, which leave theirs in use.
#include "comm/shm/combine.h"
#include "comm/shm/shm.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace ddl_comm {

// Bytes of a moved per step: a step touches ~3 chunks of a and ~4 of slots, inside 1 MiB of
// L2 per core; smaller chunks pay more synchronisations (about 1 us each when both ranks run).
constexpr size_t kShmChunk = 256u << 10;
// How many steps a rank may run ahead of the slowest peer (the ring holds 2L slots).
constexpr int64_t kShmLag = 4;

void ShmTransport::allreduce_large(const Descriptor& d, uint8_t* a, int64_t deadline, int par0) {
    const int n = size_;
    const size_t es = ddl_dtype_size((ddl_dtype)d.dtype);
    const size_t ring_bytes = 2 * seg_->big_bytes(); // big(r, 0) and big(r, 1), contiguous
    // a slot is [X: chunk bytes][R: chunk bytes]; slices start on 64-byte boundaries
    const size_t chunk_bytes = std::min(kShmChunk, ring_bytes / (2 * 2 * kShmLag)) / 64 * 64;
    const int64_t per = (int64_t)(chunk_bytes / es);
    const int64_t chunks = (d.count + per - 1) / per;
    const int64_t lag = std::min(kShmLag, chunks), slots = 2 * lag;
    const int64_t align = (int64_t)(64 / es);
    auto len_of = [&](int64_t k) { return k == chunks - 1 ? d.count - k * per : per; };
    // first element of slice q of a chunk of len elements (slice n ends the chunk)
    auto lo = [&](int64_t len, int q) { return q == n ? len : len * q / n / align * align; };
    auto x_area = [&](int q, int64_t k) { return seg_->big(q, 0) + (k % slots) * 2 * chunk_bytes; };
    auto r_area = [&](int q, int64_t k) { return x_area(q, k) + chunk_bytes; };

    if (!big_free_) { // a round-based call's peers may still read their last round's buffers
        publish();
        wait_all(deadline);
        check_descriptors(d, par0);
    }
    big_free_ = false;
    const uint32_t base = step_; // step j publishes base + j + 1
    std::vector<const void*> in(n);
    for (int64_t j = 0; j < chunks + 2 * lag; j++) {
        if (j >= lag) {
            const uint32_t target = base + (uint32_t)(j - lag) + 1;
            for (int q = 0; q < n; q++)
                if (q != rank_) wait_rank(q, target, deadline);
            if (j == lag) check_descriptors(d, par0); // before any peer's data is read
        }
        if (j < chunks) { // X_j
            const int64_t off = j * per, len = len_of(j);
            uint8_t* x = x_area(rank_, j);
            for (int q = 0; q < n; q++) {
                if (q == rank_) continue;
                const int64_t s = lo(len, q), e = lo(len, q + 1);
                memcpy(x + s * es, a + (off + s) * es, (size_t)(e - s) * es);
            }
        }
        const int64_t kr = j - lag;
        if (kr >= 0 && kr < chunks) { // R_kr
            const int64_t len = len_of(kr);
            const int64_t s = lo(len, rank_), e = lo(len, rank_ + 1);
            uint8_t* mine = a + (kr * per + s) * es;
            for (int q = 0; q < n; q++) in[q] = q == rank_ ? mine : x_area(q, kr) + s * es;
            shm_combine(mine, r_area(rank_, kr) + s * es, in.data(), n, e - s, d.dtype, d.redop);
        }
        const int64_t ko = j - 2 * lag;
        if (ko >= 0) { // O_ko
            const int64_t off = ko * per, len = len_of(ko);
            for (int q = 0; q < n; q++) {
                if (q == rank_) continue;
                const int64_t s = lo(len, q), e = lo(len, q + 1);
                memcpy(a + (off + s) * es, r_area(q, ko) + s * es, (size_t)(e - s) * es);
            }
        }
        publish();
    }
    wait_all(deadline); // every rank is done reading: the slots are free for the next call
    big_free_ = true;
}

} // namespace ddl_comm
