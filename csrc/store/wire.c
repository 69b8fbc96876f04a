/* wire.c: encoding and decoding the TCP store's frames and fields (wire.h), for both ends. */
#include "store/wire.h"

#include <string.h>

size_t wire_body_len(const wire_field *f, int nf) {
    size_t n = 1;
    for (int i = 0; i < nf; i++) n += 4 + f[i].n;
    return n;
}

void wire_write(uint8_t *dst, size_t body, int head, const wire_field *f, int nf) {
    put_be32(dst, (uint32_t)body);
    dst[WIRE_LEN_BYTES] = (uint8_t)head;
    uint8_t *p = dst + WIRE_LEN_BYTES + 1;
    for (int i = 0; i < nf; i++) {
        put_be32(p, (uint32_t)f[i].n);
        if (f[i].n) memcpy(p + 4, f[i].p, f[i].n);
        p += 4 + f[i].n;
    }
}

int wire_next_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
    if (*p == end) return 0;
    if (end - *p < 4) return -1;
    uint32_t n = get_be32(*p);
    if (n > (size_t)(end - *p) - 4) return -1;
    f->p = *p + 4, f->n = n;
    *p += 4 + (size_t)n;
    return 1;
}

int wire_fields_exact(const uint8_t *p, const uint8_t *end, wire_field *f, int nf) {
    for (int i = 0; i < nf; i++)
        if (wire_next_field(&p, end, &f[i]) != 1) return -1;
    return p == end ? 0 : -1;
}
