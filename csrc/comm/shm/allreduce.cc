// allreduce.cc: the shared-memory transport's large all_reduce, run by the caller's thread: a
// reduce-scatter and an allgather, pipelined over chunks small enough to stay in L2, one
// synchronisation per chunk, every rank working at once.
//
// Chunk k (len elements of the caller's buffer a) is cut in n slices, rank q owning slice q.
// Three phases, each a pass over L2-resident data:
//   X_k: copy the peers' slices of my chunk k into my slot's X area (my own slice stays in a)
//   R_k: reduce my slice of chunk k, in rank order, from a (mine) and the peers' X areas,
//        written at once to a and to my slot's R area, where the peers fetch it
//   O_k: copy the peers' reduced slices of chunk k from their R areas into a
// Step i does X_i, R_{i-1}, O_{i-2}, then publishes i; it starts by waiting until every peer
// published step i-1, which is all the data those phases read. Each rank reads every other
// rank's data once from the segment, and reads and writes each element of a once.
//
// Slots alternate by step parity (bigpar_): my step i writes slot i & 1, which the peers last
// read during step i - 1 (done: I waited for it). The last step (O only) publishes nothing and
// leaves the parity where a next step would write: the slot it reads stays untouched until
// every peer has published that next step, so the next call (of any kind) needs no barrier.
#include "comm/shm/combine.h"
#include "comm/shm/shm.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace ddl_comm {

// Bytes of a moved per step: each step touches ~3 chunks of a and ~4 of slots, inside 1 MiB
// of L2 per core; smaller chunks would pay more synchronisations (about 1 us each).
constexpr size_t kShmChunk = 256u << 10;

void ShmTransport::allreduce_large(const Descriptor& d, uint8_t* a, int64_t deadline, int par0) {
    const int n = size_;
    const size_t es = ddl_dtype_size((ddl_dtype)d.dtype);
    // a slot is [X: chunk bytes][R: chunk bytes]; slices start on 64-byte boundaries
    size_t chunk_bytes = std::min(kShmChunk, seg_->big_bytes() / 2) / 64 * 64;
    const int64_t per = (int64_t)(chunk_bytes / es);
    const int64_t chunks = (d.count + per - 1) / per;
    const int64_t align = (int64_t)(64 / es);
    auto len_of = [&](int64_t k) { return k == chunks - 1 ? d.count - k * per : per; };
    // first element of slice q of a chunk of len elements (slice n ends the chunk)
    auto lo = [&](int64_t len, int q) {
        return q == n ? len : len * q / n / align * align;
    };
    std::vector<const void*> in(n);
    for (int64_t i = 0; i <= chunks + 1; i++) {
        const int cur = (int)bigpar_, prev = cur ^ 1;
        if (i >= 1) {
            wait_all(deadline);
            if (i == 1) check_descriptors(d, par0);
        }
        if (i < chunks) { // X_i
            const int64_t off = i * per, len = len_of(i);
            uint8_t* x = seg_->big(rank_, cur);
            for (int q = 0; q < n; q++) {
                if (q == rank_) continue;
                const int64_t s = lo(len, q), e = lo(len, q + 1);
                memcpy(x + s * es, a + (off + s) * es, (size_t)(e - s) * es);
            }
        }
        if (i >= 1 && i - 1 < chunks) { // R_{i-1}
            const int64_t off = (i - 1) * per, len = len_of(i - 1);
            const int64_t s = lo(len, rank_), e = lo(len, rank_ + 1);
            uint8_t* mine = a + (off + s) * es;
            for (int q = 0; q < n; q++)
                in[q] = q == rank_ ? mine : seg_->big(q, prev) + s * es;
            shm_combine(mine, seg_->big(rank_, cur) + chunk_bytes + s * es, in.data(), n, e - s,
                        d.dtype, d.redop);
        }
        if (i >= 2) { // O_{i-2}
            const int64_t off = (i - 2) * per, len = len_of(i - 2);
            for (int q = 0; q < n; q++) {
                if (q == rank_) continue;
                const int64_t s = lo(len, q), e = lo(len, q + 1);
                memcpy(a + (off + s) * es, seg_->big(q, prev) + chunk_bytes + s * es,
                       (size_t)(e - s) * es);
            }
        }
        if (i <= chunks) {
            publish();
            bigpar_ ^= 1;
        }
    }
}

} // namespace ddl_comm
