/* kv.h: the key-value map the TCP store server keeps: a seeded hash table of byte-string
 * keys to malloc'd values. Single-threaded (the server's thread owns it). */
#ifndef DDL_STORE_KV_H
#define DDL_STORE_KV_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_entry {
    struct kv_entry *next;
    uint64_t hash;
    uint8_t *val; /* (vlen,) malloc'd, at least 1 byte */
    size_t vlen;
    uint32_t klen;
    char key[]; /* (klen,) not NUL-terminated */
} kv_entry;

typedef struct {
    kv_entry **b;  /* (nb,) chains; nb a power of two or 0 */
    size_t nb, n;  /* n: number of keys */
    uint64_t seed; /* random per server, so clients cannot choose colliding keys */
} kv_map;

/* The entry of key k[0:kl], or NULL. */
kv_entry *kv_find(const kv_map *m, const void *k, size_t kl);
/* Set k to a copy of v; *created says whether k is new. -1 when out of memory (map as it was). */
int kv_put(kv_map *m, const void *k, size_t kl, const void *v, size_t vl, int *created);
/* Remove k; 1 if it was there. */
int kv_del(kv_map *m, const void *k, size_t kl);
/* Free every entry and the table (the map is then empty and reusable). */
void kv_free(kv_map *m);

#endif
