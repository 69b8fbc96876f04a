/* kv.c: the TCP store server's key-value map (kv.h): chained hash table, doubling when full. */
#include "store/kv.h"

#include "store/util.h"

#include <stdlib.h>
#include <string.h>

kv_entry *kv_find(const kv_map *m, const void *k, size_t kl) {
    if (!m->nb) return NULL;
    uint64_t h = store_hash(m->seed, k, kl);
    for (kv_entry *e = m->b[h & (m->nb - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) return e;
    return NULL;
}

/* Double the table (64 chains to start) so chains stay short; -1 when out of memory. */
static int kv_grow(kv_map *m) {
    size_t nb = m->nb ? m->nb * 2 : 64;
    kv_entry **b = calloc(nb, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < m->nb; i++)
        for (kv_entry *x = m->b[i], *nx; x; x = nx) {
            nx = x->next;
            x->next = b[x->hash & (nb - 1)];
            b[x->hash & (nb - 1)] = x;
        }
    free(m->b);
    m->b = b, m->nb = nb;
    return 0;
}

int kv_put(kv_map *m, const void *k, size_t kl, const void *v, size_t vl, int *created) {
    kv_entry *e = kv_find(m, k, kl);
    uint8_t *copy = store_memdup(v, vl);
    if (!copy) return -1;
    *created = !e;
    if (e) {
        free(e->val);
        e->val = copy, e->vlen = vl;
        return 0;
    }
    if ((m->n >= m->nb && kv_grow(m) < 0) || !(e = malloc(sizeof *e + kl))) {
        free(copy);
        return -1;
    }
    e->hash = store_hash(m->seed, k, kl);
    e->klen = (uint32_t)kl;
    memcpy(e->key, k, kl);
    e->val = copy, e->vlen = vl;
    e->next = m->b[e->hash & (m->nb - 1)];
    m->b[e->hash & (m->nb - 1)] = e;
    m->n++;
    return 0;
}

int kv_del(kv_map *m, const void *k, size_t kl) {
    if (!m->nb) return 0;
    uint64_t h = store_hash(m->seed, k, kl);
    for (kv_entry **pe = &m->b[h & (m->nb - 1)]; *pe; pe = &(*pe)->next) {
        kv_entry *e = *pe;
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) {
            *pe = e->next;
            free(e->val);
            free(e);
            m->n--;
            return 1;
        }
    }
    return 0;
}

void kv_free(kv_map *m) {
    for (size_t i = 0; i < m->nb; i++)
        for (kv_entry *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e->val);
            free(e);
        }
    free(m->b);
    m->b = NULL, m->nb = m->n = 0;
}
