/*
 * bare_metal_link.c: a freestanding program (no libc, no startup files) linked against
 * the x86_64-unknown-none build of libprecopy.a, to check that the bare-metal archive
 * is self-contained: the only symbols a monitor must provide are memcpy, memmove,
 * memset and memcmp (defined here). Linked by ../run-c-test.sh, never run.
 */
#include <stddef.h>
#include <stdint.h>

#include "precopy.h"

void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *a = d;
    const unsigned char *b = s;
    while (n--) {
        *a++ = *b++;
    }
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    unsigned char *a = d;
    const unsigned char *b = s;
    if (a < b) {
        while (n--) {
            *a++ = *b++;
        }
    } else {
        while (n--) {
            a[n] = b[n];
        }
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    unsigned char *a = d;
    while (n--) {
        *a++ = (unsigned char)c;
    }
    return d;
}

int memcmp(const void *x, const void *y, size_t n) {
    const unsigned char *a = x, *b = y;
    for (; n; n--, a++, b++) {
        if (*a != *b) {
            return *a - *b;
        }
    }
    return 0;
}

static precopy_bitmap_t bm;
static uint64_t words[16];
static precopy_kvm_slots_t slots;
static precopy_scheduler_t sched;
static precopy_policy_t policy;
static precopy_lz4_t lz4;
static precopy_digest_t digest;
static uint8_t page[4096], out[8192];
volatile int sink;

/* Calls one function of each part of the API, so their code and all it needs is linked. */
void _start(void) {
    precopy_region_t r = {0, 1024 * 4096};
    int rc = precopy_bitmap_init(&bm, 4096, &r, 1, words, 16);
    rc |= precopy_bitmap_mark_range(&bm, 0, 8192);
    rc |= precopy_kvm_slots_init(&slots, &bm);
    uint64_t cursor = 0, pages[8];
    size_t n = 8;
    rc |= precopy_bitmap_harvest(&bm, &cursor, pages, &n);
    rc |= precopy_policy_default(&policy);
    rc |= precopy_scheduler_init(&sched, &policy, 1024, 4096, 0);
    precopy_round_measurement_t m = {1000000, 1024, 1024 * 4096, 10};
    precopy_round_outcome_t o;
    rc |= precopy_scheduler_round_done(&sched, &m, &o);
    char msg[256];
    size_t len = sizeof msg;
    rc |= precopy_outcome_describe(&o, msg, &len);
    rc |= precopy_lz4_init(&lz4);
    n = sizeof out;
    rc |= precopy_lz4_compress(&lz4, page, sizeof page, out, &n);
    precopy_frame_t f = {PRECOPY_FRAME_LZ4, 0, 1, 0, 0, 0, 0, out, n};
    size_t flen = sizeof out;
    rc |= precopy_frame_encode(&f, 4096, page, &flen);
    rc |= precopy_digest_init(&digest);
    sink = rc;
    for (;;) {
    }
}
