/*
 * c_migrate_test.c: a C host migrates a running guest through the engines of
 * precopy.h alone (no Rust on its side). It owns the guest memory and a writer thread
 * (pthreads) that writes pages and marks them dirty while the migration runs; it
 * drives STREAMS source engines, one coordinator and STREAMS destination appliers over
 * storage it allocates, delivers every stream in chunks of random sizes, and checks
 * that the destination's memory equals the source's and the digests agree. A second
 * run corrupts one byte on one stream: the migration must end with an error, the
 * sources aborted (their pages back in the bitmap), the source memory untouched.
 * Before that, every new function is called with bad arguments and out of order.
 *
 * Built and run by ../run-c-test.sh (also under -fsanitize=address,undefined). Exits
 * non-zero if any check fails.
 */
#define _POSIX_C_SOURCE 200809L
#include "precopy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define PAGE 4096u
#define PAGES 2048u /* 8 MiB */
#define STREAMS 3u
#define CACHE_BYTES (4u * 1024u * 1024u)
#define BUF_LEN (256u * 1024u)
#define MAX_ITERATIONS 100000u

/* ---- The guest: memory, a writer thread, its private copy ------------------------- */

typedef struct guest {
    uint8_t *mem;    /* the guest's memory (words written and read atomically) */
    uint8_t *shadow; /* what the writer wrote: the source memory must equal it */
    const precopy_bitmap_t *bm;
    atomic_int pause;  /* set by the host: stop writing */
    atomic_int paused; /* set by the writer: stopped */
    atomic_ulong writes;
    uint64_t rng;
} guest_t;

static uint64_t next_rand(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *writer(void *arg) {
    guest_t *g = arg;
    while (!atomic_load(&g->pause)) {
        uint64_t page = next_rand(&g->rng) % PAGES;
        uint64_t word = next_rand(&g->rng) % (PAGE / 8);
        uint64_t value = next_rand(&g->rng);
        uint64_t *w = (uint64_t *)(void *)(g->mem + page * PAGE) + word;
        /* Write, then mark (the bitmap's ordering contract). */
        __atomic_store_n(w, value, __ATOMIC_RELEASE);
        memcpy(g->shadow + page * PAGE + word * 8, &value, 8);
        if (precopy_bitmap_mark(g->bm, page) != PRECOPY_OK) {
            fprintf(stderr, "writer: precopy_bitmap_mark failed\n");
            abort();
        }
        atomic_fetch_add(&g->writes, 1);
        if (atomic_load(&g->writes) % 64 == 0) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    atomic_store(&g->paused, 1);
    return NULL;
}

static void pause_guest(guest_t *g, pthread_t thread) {
    atomic_store(&g->pause, 1);
    pthread_join(thread, NULL);
    CHECK(atomic_load(&g->paused) == 1);
}

/* Source memory: read word by word, atomically (the writer runs concurrently). */
static int source_read(void *ctx, uint64_t page, uint8_t *buf, size_t len) {
    guest_t *g = ctx;
    if (page >= PAGES || len != PAGE) return -1;
    const uint64_t *src = (const uint64_t *)(const void *)(g->mem + page * PAGE);
    for (size_t i = 0; i < PAGE / 8; i++) {
        uint64_t v = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE);
        memcpy(buf + i * 8, &v, 8);
    }
    return 0;
}

/* Destination memory: plain bytes, one thread. */
static int dest_read(void *ctx, uint64_t page, uint8_t *buf, size_t len) {
    if (page >= PAGES || len != PAGE) return -1;
    memcpy(buf, (uint8_t *)ctx + page * PAGE, len);
    return 0;
}

static int dest_write(void *ctx, uint64_t page, const uint8_t *buf, size_t len) {
    if (page >= PAGES || len != PAGE) return -1;
    memcpy((uint8_t *)ctx + page * PAGE, buf, len);
    return 0;
}

static void *alloc64(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

/* ---- One migration ---------------------------------------------------------------- */

typedef struct migration {
    precopy_bitmap_t bm;
    uint64_t *bm_words;
    precopy_source_t src[STREAMS];
    uint64_t *src_storage[STREAMS];
    precopy_coordinator_t coord;
    uint64_t *coord_storage;
    precopy_applier_t app[STREAMS];
    uint64_t *app_storage[STREAMS];
    uint8_t *dest;
    uint64_t digest[STREAMS][2];
    int aborted[STREAMS];
    uint32_t syncs, paused_syncs; /* stream 0's sync points, the one after the pause */
    uint32_t round_notes;         /* ROUND_MEASURED of the round in progress */
} migration_t;

static const precopy_region_t REGION = {0, (uint64_t)PAGES * PAGE};

static void setup(migration_t *m, guest_t *g, uint8_t *dest) {
    memset(m, 0, sizeof *m);
    precopy_storage_needs_t needs;
    CHECK_RC(precopy_storage_needs(PAGE, &REGION, 1, CACHE_BYTES, STREAMS, &needs), PRECOPY_OK);
    CHECK(needs.bitmap_bytes == PAGES / 8);
    CHECK(needs.coordinator_bytes > 0 && needs.applier_bytes > PAGE);
    m->bm_words = alloc64((size_t)needs.bitmap_bytes);
    CHECK_RC(precopy_bitmap_init(&m->bm, PAGE, &REGION, 1, m->bm_words,
                                 (size_t)needs.bitmap_bytes / 8),
             PRECOPY_OK);
    g->bm = &m->bm;

    precopy_page_memory_t source_memory = {g, source_read, NULL, PAGE, PAGES};
    size_t total = 0;
    for (uint32_t i = 0; i < STREAMS; i++) {
        precopy_source_config_t config;
        CHECK_RC(precopy_source_config_default(&config), PRECOPY_OK);
        config.cache_bytes = CACHE_BYTES;
        config.stream_index = i;
        config.stream_count = STREAMS;
        config.max_pages_per_poll = 256;
        config.session_id[0] = 0x42;
        /* Stream 0 stops before every harvest (the pre-harvest sync point of a VMM
         * with a KVM dirty log); the others harvest at once. */
        config.sync_before_harvest = i == 0;
        size_t bytes = 0;
        CHECK_RC(precopy_source_storage_size(&m->bm, &config, &bytes), PRECOPY_OK);
        CHECK(bytes <= needs.source_bytes);
        total += bytes;
        m->src_storage[i] = alloc64(bytes);
        CHECK_RC(precopy_source_init(&m->src[i], &m->bm, &config, &source_memory,
                                     m->src_storage[i], bytes, 0),
                 PRECOPY_OK);
    }
    CHECK(total == needs.sources_total_bytes);

    precopy_policy_t policy;
    CHECK_RC(precopy_policy_default(&policy), PRECOPY_OK);
    policy.downtime_limit_ns = 50000000; /* 50 ms */
    policy.max_rounds = 6;
    policy.on_limit = PRECOPY_ON_LIMIT_SWITCH_OVER;
    m->coord_storage = alloc64((size_t)needs.coordinator_bytes);
    CHECK_RC(precopy_coordinator_init(&m->coord, &policy, PAGES, PAGE, STREAMS,
                                      m->coord_storage, (size_t)needs.coordinator_bytes, 0),
             PRECOPY_OK);

    m->dest = dest;
    precopy_page_memory_t dest_memory = {dest, dest_read, dest_write, PAGE, PAGES};
    for (uint32_t i = 0; i < STREAMS; i++) {
        m->app_storage[i] = alloc64((size_t)needs.applier_bytes);
        CHECK_RC(precopy_applier_init(&m->app[i], &dest_memory, m->app_storage[i],
                                      (size_t)needs.applier_bytes),
                 PRECOPY_OK);
    }
}

static void teardown(migration_t *m) {
    free(m->bm_words);
    free(m->coord_storage);
    for (uint32_t i = 0; i < STREAMS; i++) {
        free(m->src_storage[i]);
        free(m->app_storage[i]);
    }
}

/* Runs the migration; `corrupt_stream` < STREAMS flips one byte of that stream once
 * `corrupt_after` of its bytes went out. Returns the coordinator's final event kind
 * (DONE or FAILED) and its error in *error. */
static uint32_t run(migration_t *m, guest_t *g, pthread_t writer_thread, uint32_t corrupt_stream,
                    size_t corrupt_after, int *error) {
    uint8_t *buf = malloc(BUF_LEN);
    uint8_t *wire = malloc(BUF_LEN); /* what the link delivers: a copy, maybe corrupted */
    uint64_t rng = 0x9e3779b97f4a7c15u;
    size_t sent[STREAMS] = {0};
    int corrupted = 0, paused = 0;
    uint64_t now = 0;
    uint32_t result = PRECOPY_COORDINATOR_EVENT_NONE;
    *error = PRECOPY_OK;
    /* The guest runs before the migration starts and between its polls (a loaded
     * machine might otherwise never schedule the writer before the pause). */
    while (atomic_load(&g->writes) < 256) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    unsigned long writes_at_start = atomic_load(&g->writes);
    for (uint32_t it = 0; it < MAX_ITERATIONS && result == PRECOPY_COORDINATOR_EVENT_NONE; it++) {
        now += 1000000; /* 1 ms of virtual time per iteration */
        if (!paused) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        for (uint32_t i = 0; i < STREAMS; i++) {
            if (m->aborted[i]) continue;
            size_t n = 0;
            int rc = precopy_source_poll_transmit(&m->src[i], now, buf, BUF_LEN, &n);
            CHECK_RC(rc, PRECOPY_OK);
            memcpy(wire, buf, n);
            if (!corrupted && i == corrupt_stream && sent[i] + n > corrupt_after && n > 0) {
                size_t at = corrupt_after > sent[i] ? corrupt_after - sent[i] : 0;
                wire[at < n ? at : n - 1] ^= 0x10;
                corrupted = 1;
            }
            /* The link delivers the bytes in chunks of random sizes. */
            size_t off = 0;
            while (off < n) {
                size_t chunk = 1 + (size_t)(next_rand(&rng) % 9000);
                if (chunk > n - off) chunk = n - off;
                uint32_t complete = 0;
                int frc = precopy_applier_feed(&m->app[i], wire + off, chunk, &complete);
                if (frc != PRECOPY_OK) {
                    /* The destination refused the stream: everything from this chunk
                     * on did not arrive; its pages go back into the bitmap. */
                    uint64_t put_back = 0;
                    *error = frc;
                    CHECK_RC(precopy_put_back_undelivered(&m->bm, buf, n, &put_back),
                             PRECOPY_OK);
                    CHECK(put_back > 0);
                    CHECK_RC(precopy_coordinator_stream_failed(&m->coord, i), PRECOPY_OK);
                    break;
                }
                off += chunk;
            }
            sent[i] += n;
            precopy_source_event_t ev;
            while (precopy_source_poll_event(&m->src[i], &ev) == PRECOPY_OK &&
                   ev.kind != PRECOPY_SOURCE_EVENT_NONE) {
                if (ev.kind == PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG) {
                    CHECK(i == 0);
                    m->syncs += 1;
                    m->paused_syncs += ev.paused;
                    CHECK_RC(precopy_source_dirty_log_synced(&m->src[i], now), PRECOPY_OK);
                    continue;
                }
                if (ev.kind == PRECOPY_SOURCE_EVENT_COMPLETE) {
                    m->digest[i][0] = ev.digest_lo;
                    m->digest[i][1] = ev.digest_hi;
                }
                if (ev.kind == PRECOPY_SOURCE_EVENT_ROUND_MEASURED &&
                    ++m->round_notes == STREAMS) {
                    /* The round's barrier: the pages the guest dirtied since the
                     * streams harvested count in the prediction. */
                    uint64_t pending = 0;
                    m->round_notes = 0;
                    CHECK_RC(precopy_bitmap_dirty_count(&m->bm, &pending), PRECOPY_OK);
                    CHECK_RC(precopy_coordinator_note_pending_pages(&m->coord, pending),
                             PRECOPY_OK);
                }
                int hrc = precopy_coordinator_handle_source_event(&m->coord, i, &ev, now);
                /* After a failure the coordinator takes no more events. */
                if (*error == PRECOPY_OK) CHECK_RC(hrc, PRECOPY_OK);
            }
        }
        precopy_coordinator_event_t cev;
        while (precopy_coordinator_poll_event(&m->coord, &cev) == PRECOPY_OK &&
               cev.kind != PRECOPY_COORDINATOR_EVENT_NONE) {
            switch (cev.kind) {
            case PRECOPY_COORDINATOR_EVENT_DECIDE:
                for (uint32_t i = 0; i < STREAMS; i++)
                    CHECK_RC(precopy_source_decide(&m->src[i], &cev), PRECOPY_OK);
                break;
            case PRECOPY_COORDINATOR_EVENT_PAUSE_GUEST:
                pause_guest(g, writer_thread);
                paused = 1;
                /* The guest wrote while the migration ran. */
                CHECK(atomic_load(&g->writes) > writes_at_start);
                CHECK_RC(precopy_coordinator_guest_paused(&m->coord, now), PRECOPY_OK);
                break;
            case PRECOPY_COORDINATOR_EVENT_GUEST_PAUSED:
                for (uint32_t i = 0; i < STREAMS; i++)
                    CHECK_RC(precopy_source_guest_paused(&m->src[i], now), PRECOPY_OK);
                break;
            case PRECOPY_COORDINATOR_EVENT_FINAL_ROUND:
                for (uint32_t i = 0; i < STREAMS; i++) {
                    uint64_t digest[2] = {0, 0};
                    int vrc = precopy_applier_verdict(&m->app[i], digest);
                    CHECK_RC(vrc, PRECOPY_OK);
                    CHECK(digest[0] == m->digest[i][0] && digest[1] == m->digest[i][1]);
                    CHECK_RC(precopy_coordinator_verdict(&m->coord, i, vrc == PRECOPY_OK),
                             PRECOPY_OK);
                }
                break;
            case PRECOPY_COORDINATOR_EVENT_DONE:
                result = cev.kind;
                CHECK(cev.round >= 2);
                printf("  done: %u rounds, %llu pages, %llu bytes, %lu guest writes\n",
                       cev.round, (unsigned long long)cev.pages_sent,
                       (unsigned long long)cev.wire_bytes, atomic_load(&g->writes));
                break;
            case PRECOPY_COORDINATOR_EVENT_FAILED:
                result = cev.kind;
                *error = *error ? *error : cev.error;
                CHECK(cev.error == PRECOPY_ERR_STREAM_FAILED);
                for (uint32_t i = 0; i < STREAMS; i++) {
                    CHECK_RC(precopy_source_abort(&m->src[i]), PRECOPY_OK);
                    m->aborted[i] = 1;
                }
                break;
            default:
                break;
            }
        }
    }
    if (!paused) pause_guest(g, writer_thread);
    free(buf);
    free(wire);
    return result;
}

static void start_guest(guest_t *g, uint8_t *mem, uint8_t *shadow) {
    memset(g, 0, sizeof *g);
    g->mem = mem;
    g->shadow = shadow;
    g->rng = 0x2545f4914f6cdd1du;
    atomic_init(&g->pause, 0);
    atomic_init(&g->paused, 0);
    atomic_init(&g->writes, 0);
    /* Initial contents: zero, repetitive and random pages. */
    uint64_t x = 88172645463325252u;
    for (uint32_t p = 0; p < PAGES; p++) {
        uint8_t *page = mem + (size_t)p * PAGE;
        if (p % 3 == 0) {
            memset(page, 0, PAGE);
        } else if (p % 3 == 1) {
            for (uint32_t b = 0; b < PAGE; b++) page[b] = (uint8_t)(b % 17);
        } else {
            for (uint32_t b = 0; b < PAGE; b += 8) {
                uint64_t v = next_rand(&x);
                memcpy(page + b, &v, 8);
            }
        }
    }
    memcpy(shadow, mem, (size_t)PAGES * PAGE);
}

/* One test's guest (memory and its shadow, writing on its own thread), destination
 * memory and migration state. */
typedef struct {
    uint8_t *mem, *shadow, *dest;
    guest_t g;
    pthread_t thread;
    migration_t *m;
} fixture_t;

/* Allocates a fixture, starts its guest writing and sets up its migration. */
static void fixture_start(fixture_t *f) {
    f->mem = alloc64((size_t)PAGES * PAGE);
    f->shadow = alloc64((size_t)PAGES * PAGE);
    f->dest = alloc64((size_t)PAGES * PAGE);
    f->m = alloc64(sizeof *f->m);
    start_guest(&f->g, f->mem, f->shadow);
    setup(f->m, &f->g, f->dest);
    CHECK(pthread_create(&f->thread, NULL, writer, &f->g) == 0);
}

/* Tears down the migration and frees what fixture_start allocated. */
static void fixture_end(fixture_t *f) {
    teardown(f->m);
    free(f->m);
    free(f->mem);
    free(f->shadow);
    free(f->dest);
}

static void migrate_with_writes(void) {
    fixture_t f;
    fixture_start(&f);
    uint8_t *mem = f.mem, *shadow = f.shadow, *dest = f.dest;
    migration_t *m = f.m;
    int error = 0;
    uint32_t end = run(m, &f.g, f.thread, STREAMS, 0, &error);
    CHECK(end == PRECOPY_COORDINATOR_EVENT_DONE);
    CHECK_RC(error, PRECOPY_OK);
    CHECK(atomic_load(&f.g.writes) > 0);
    CHECK(m->syncs >= 2 && m->paused_syncs == 1);
    CHECK(memcmp(mem, dest, (size_t)PAGES * PAGE) == 0);
    CHECK(memcmp(mem, shadow, (size_t)PAGES * PAGE) == 0);
    uint64_t delta = 0;
    for (uint32_t i = 0; i < STREAMS; i++) {
        precopy_apply_progress_t p;
        CHECK_RC(precopy_applier_progress(&m->app[i], &p), PRECOPY_OK);
        CHECK(p.complete == 1 && p.error == PRECOPY_OK);
        delta += p.delta_pages;
        /* Done: the engines take no more calls, only their verdicts stay. */
        size_t n = 0;
        uint8_t b[16];
        CHECK_RC(precopy_source_poll_transmit(&m->src[i], 0, b, sizeof b, &n),
                 PRECOPY_ERR_BUFFER_TOO_SMALL);
    }
    printf("  memory equal (%u pages), digests verified on %u streams, %llu delta pages\n",
           PAGES, STREAMS, (unsigned long long)delta);
    fixture_end(&f);
}

static void corrupted_byte_fails_and_leaves_the_source_intact(void) {
    fixture_t f;
    fixture_start(&f);
    uint8_t *mem = f.mem, *shadow = f.shadow;
    migration_t *m = f.m;
    int error = 0;
    uint32_t end = run(m, &f.g, f.thread, 1, 300000, &error);
    CHECK(end == PRECOPY_COORDINATOR_EVENT_FAILED);
    CHECK(error == PRECOPY_ERR_CHECKSUM || error == PRECOPY_ERR_BAD_FRAME ||
          error == PRECOPY_ERR_STREAM);
    printf("  corrupted byte: %s\n", precopy_strerror(error));
    /* The source memory is what the guest wrote: the migration only read it. */
    CHECK(memcmp(mem, shadow, (size_t)PAGES * PAGE) == 0);
    /* Pages not delivered are back in the bitmap, which still works. */
    uint64_t dirty = 0;
    CHECK_RC(precopy_bitmap_dirty_count(&m->bm, &dirty), PRECOPY_OK);
    CHECK(dirty > 0);
    CHECK_RC(precopy_bitmap_mark(&m->bm, 0), PRECOPY_OK);
    /* The aborted sources take no more calls; the refused stream keeps its error. */
    size_t n = 0;
    uint8_t *buf = malloc(BUF_LEN);
    for (uint32_t i = 0; i < STREAMS; i++) {
        CHECK_RC(precopy_source_poll_transmit(&m->src[i], 0, buf, BUF_LEN, &n),
                 PRECOPY_ERR_ENDED);
        CHECK_RC(precopy_source_abort(&m->src[i]), PRECOPY_ERR_ENDED);
    }
    CHECK_RC(precopy_applier_verdict(&m->app[1], NULL), error);
    char msg[256];
    size_t msg_len = sizeof msg;
    CHECK_RC(precopy_applier_error_message(&m->app[1], msg, &msg_len), PRECOPY_OK);
    CHECK(msg_len > 0 && strstr(msg, "frame") != NULL);
    printf("  destination stream 1: \"%s\"\n", msg);
    msg_len = sizeof msg;
    CHECK_RC(precopy_applier_error_message(&m->app[0], msg, &msg_len), PRECOPY_OK);
    CHECK(msg_len > 0); /* stream 0 ended before its completion frame */
    msg_len = sizeof msg;
    CHECK_RC(precopy_source_error_message(&m->src[0], msg, &msg_len), PRECOPY_OK);
    CHECK(msg_len == 0); /* aborted, not failed */
    free(buf);
    fixture_end(&f);
}

/* ---- Every new call is total: bad arguments and wrong order are error codes ------- */

static int fail_read(void *ctx, uint64_t page, uint8_t *buf, size_t len) {
    (void)ctx;
    (void)page;
    (void)buf;
    (void)len;
    return 7;
}

static void bad_arguments_and_wrong_order(void) {
    enum { P = 64 };
    static uint8_t mem[P * PAGE];
    static uint8_t dmem[P * PAGE];
    const precopy_region_t region = {0, (uint64_t)P * PAGE};
    static uint64_t words[1];
    precopy_bitmap_t bm;
    CHECK_RC(precopy_bitmap_init(&bm, PAGE, &region, 1, words, 1), PRECOPY_OK);

    precopy_storage_needs_t needs;
    CHECK_RC(precopy_storage_needs(PAGE, &region, 1, 0, 1, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_storage_needs(PAGE, NULL, 1, 0, 1, &needs), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_storage_needs(PAGE, &region, 1, 0, 0, &needs), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_storage_needs(PAGE, &region, 1, 0, 256, &needs), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_storage_needs(3000, &region, 1, 0, 1, &needs), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_storage_needs(PAGE, &region, 1, 0, 1, &needs), PRECOPY_OK);

    /* Source: NULL, misaligned, uninitialized, short and zero storage, bad tables. */
    static precopy_source_t src, zeroed;
    static _Alignas(64) uint8_t raw[sizeof(precopy_source_t) + 64];
    precopy_source_config_t config;
    CHECK_RC(precopy_source_config_default(NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_source_config_default(&config), PRECOPY_OK);
    config.cache_bytes = 0;
    size_t bytes = 0;
    CHECK_RC(precopy_source_storage_size(&bm, &config, &bytes), PRECOPY_OK);
    CHECK(bytes > 0 && bytes == needs.source_bytes);
    uint64_t *storage = alloc64(bytes + 8);
    precopy_page_memory_t memory = {mem, dest_read, NULL, PAGE, P};
    CHECK_RC(precopy_source_init(NULL, &bm, &config, &memory, storage, bytes, 0),
             PRECOPY_ERR_NULL);
    CHECK_RC(precopy_source_init((precopy_source_t *)(void *)(raw + 8), &bm, &config, &memory,
                                 storage, bytes, 0),
             PRECOPY_ERR_MISALIGNED);
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, bytes - 8, 0),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, 0, 0),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory,
                                 (uint64_t *)(void *)((uint8_t *)storage + 4), bytes, 0),
             PRECOPY_ERR_MISALIGNED);
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, NULL, bytes, 0), PRECOPY_ERR_NULL);
    precopy_page_memory_t no_read = {mem, NULL, NULL, PAGE, P};
    CHECK_RC(precopy_source_init(&src, &bm, &config, &no_read, storage, bytes, 0),
             PRECOPY_ERR_NULL);
    precopy_page_memory_t wrong_size = {mem, dest_read, NULL, PAGE, P + 1};
    CHECK_RC(precopy_source_init(&src, &bm, &config, &wrong_size, storage, bytes, 0),
             PRECOPY_ERR_BAD_GUEST);
    config.stream_index = 2;
    config.stream_count = 2;
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, bytes, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    config.stream_index = 0;
    config.stream_count = 1;
    config.verify = 9;
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, bytes, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    config.verify = PRECOPY_VERIFY_AFTER_RESUME;
    config.max_pages_per_poll = 0;
    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, bytes, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    config.max_pages_per_poll = 16;

    uint8_t out[64 * 1024];
    size_t n = 0;
    precopy_source_event_t ev;
    CHECK_RC(precopy_source_poll_transmit(&zeroed, 0, out, sizeof out, &n),
             PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_source_poll_event(&zeroed, &ev), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_source_abort(&zeroed), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_source_abort(NULL), PRECOPY_ERR_NULL);

    CHECK_RC(precopy_source_init(&src, &bm, &config, &memory, storage, bytes, 0), PRECOPY_OK);
    size_t min = 0;
    CHECK_RC(precopy_source_min_buffer(&src, &min), PRECOPY_OK);
    CHECK(min > PAGE && min < sizeof out);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, min - 1, &n),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, NULL, sizeof out, &n), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, NULL), PRECOPY_ERR_NULL);
    /* Wrong order: nothing asked for these yet. */
    precopy_coordinator_event_t decide = {0};
    decide.kind = PRECOPY_COORDINATOR_EVENT_DECIDE;
    decide.decision = PRECOPY_DECISION_CONTINUE;
    CHECK_RC(precopy_source_decide(&src, &decide), PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_source_guest_paused(&src, 0), PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_source_dirty_log_synced(&src, 0), PRECOPY_ERR_OUT_OF_ORDER);
    precopy_coordinator_event_t not_decide = decide;
    not_decide.kind = PRECOPY_COORDINATOR_EVENT_THROTTLE;
    CHECK_RC(precopy_source_decide(&src, &not_decide), PRECOPY_ERR_BAD_ARGUMENT);
    decide.decision = 77;
    CHECK_RC(precopy_source_decide(&src, &decide), PRECOPY_ERR_BAD_ARGUMENT);
    decide.decision = PRECOPY_DECISION_CONTINUE;
    /* The bulk round, to its end: 64 pages at 16 per poll. */
    int measured = 0;
    for (int i = 0; i < 20 && !measured; i++) {
        CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, &n), PRECOPY_OK);
        while (precopy_source_poll_event(&src, &ev) == PRECOPY_OK &&
               ev.kind != PRECOPY_SOURCE_EVENT_NONE)
            measured |= ev.kind == PRECOPY_SOURCE_EVENT_ROUND_MEASURED;
    }
    CHECK(measured && ev.kind == PRECOPY_SOURCE_EVENT_NONE);
    CHECK(measured);
    /* A round measured: no bytes until decided; the answer to another event is refused. */
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, &n), PRECOPY_OK);
    CHECK(n == 0);
    CHECK_RC(precopy_source_guest_paused(&src, 0), PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_source_decide(&src, &decide), PRECOPY_OK);
    CHECK_RC(precopy_source_decide(&src, &decide), PRECOPY_ERR_OUT_OF_ORDER);
    /* Abort: pages of the round not sent go back; then the engine has ended. */
    CHECK_RC(precopy_bitmap_mark(&bm, 5), PRECOPY_OK);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, &n), PRECOPY_OK);
    CHECK_RC(precopy_source_abort(&src), PRECOPY_OK);
    CHECK_RC(precopy_source_abort(&src), PRECOPY_ERR_ENDED);
    CHECK_RC(precopy_source_poll_event(&src, &ev), PRECOPY_ERR_ENDED);
    CHECK_RC(precopy_source_decide(&src, &decide), PRECOPY_ERR_ENDED);
    static const uint8_t torn[3] = {9, 0, 0};
    CHECK(precopy_put_back_undelivered(&bm, torn, sizeof torn, NULL) < 0);
    CHECK_RC(precopy_put_back_undelivered(NULL, out, 0, NULL), PRECOPY_ERR_NULL);

    /* A memory callback that fails ends the engine with PRECOPY_ERR_MEMORY. */
    precopy_page_memory_t failing = {mem, fail_read, NULL, PAGE, P};
    for (uint32_t i = 0; i < 4; i++) mem[i * PAGE] = 1; /* non-zero pages are read */
    CHECK_RC(precopy_source_init(&src, &bm, &config, &failing, storage, bytes, 0), PRECOPY_OK);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, &n), PRECOPY_ERR_MEMORY);
    CHECK_RC(precopy_source_poll_transmit(&src, 0, out, sizeof out, &n), PRECOPY_ERR_ENDED);
    char msg[256];
    size_t msg_len = 0;
    CHECK_RC(precopy_source_error_message(&src, NULL, &msg_len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(msg_len > 0);
    msg_len = sizeof msg;
    CHECK_RC(precopy_source_error_message(&src, msg, &msg_len), PRECOPY_OK);
    CHECK(strstr(msg, "guest memory") != NULL);
    CHECK_RC(precopy_source_error_message(&zeroed, msg, &msg_len), PRECOPY_ERR_UNINITIALIZED);
    free(storage);

    /* Coordinator. */
    static precopy_coordinator_t coord, zcoord;
    size_t cbytes = 0;
    CHECK_RC(precopy_coordinator_storage_size(0, &cbytes), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_coordinator_storage_size(2, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_coordinator_storage_size(2, &cbytes), PRECOPY_OK);
    uint64_t cstorage[16];
    precopy_policy_t policy;
    CHECK_RC(precopy_policy_default(&policy), PRECOPY_OK);
    CHECK_RC(precopy_coordinator_init(&coord, &policy, P, PAGE, 2, cstorage, 0, 0),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_coordinator_init(&coord, &policy, P, PAGE, 2, cstorage, cbytes - 8, 0),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_coordinator_init(&coord, &policy, P, PAGE, 0, cstorage, cbytes, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_coordinator_init(&coord, NULL, P, PAGE, 2, cstorage, cbytes, 0),
             PRECOPY_ERR_NULL);
    precopy_coordinator_event_t cev;
    CHECK_RC(precopy_coordinator_poll_event(&zcoord, &cev), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_coordinator_init(&coord, &policy, P, PAGE, 2, cstorage, cbytes, 0),
             PRECOPY_OK);
    CHECK_RC(precopy_coordinator_poll_event(&coord, &cev), PRECOPY_OK);
    CHECK(cev.kind == PRECOPY_COORDINATOR_EVENT_NONE);
    CHECK_RC(precopy_coordinator_guest_paused(&coord, 0), PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_coordinator_verdict(&coord, 0, 1), PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_coordinator_verdict(&coord, 0, 2), PRECOPY_ERR_BAD_ARGUMENT);
    precopy_source_event_t sev = {0};
    sev.kind = PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG;
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &sev, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    sev.kind = PRECOPY_SOURCE_EVENT_PAUSE_GUEST;
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &sev, 0),
             PRECOPY_ERR_OUT_OF_ORDER);
    sev.kind = PRECOPY_SOURCE_EVENT_ROUND_MEASURED;
    sev.round = 2;
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &sev, 0),
             PRECOPY_ERR_OUT_OF_ORDER);
    sev.round = 1;
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 5, &sev, 0),
             PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &sev, 0), PRECOPY_OK);
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &sev, 0),
             PRECOPY_ERR_OUT_OF_ORDER);
    CHECK_RC(precopy_coordinator_stream_failed(&coord, 1), PRECOPY_OK);
    CHECK_RC(precopy_coordinator_poll_event(&coord, &cev), PRECOPY_OK);
    CHECK(cev.kind == PRECOPY_COORDINATOR_EVENT_FAILED &&
          cev.error == PRECOPY_ERR_STREAM_FAILED && cev.stream == 1);
    CHECK_RC(precopy_coordinator_handle_source_event(&coord, 1, &sev, 0), PRECOPY_ERR_ENDED);

    /* Pages dirtied after the harvests count in the round's prediction: the same
     * round, with and without 5000 of them (raw pages at a fixed 1 GB/s: 20.5 ms). */
    CHECK_RC(precopy_coordinator_note_pending_pages(NULL, 1), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_coordinator_note_pending_pages(&zcoord, 1), PRECOPY_ERR_UNINITIALIZED);
    uint64_t predicted[2] = {0, 0};
    policy.switchover_bandwidth = 1000000000;
    for (int with = 0; with < 2; with++) {
        CHECK_RC(precopy_coordinator_init(&coord, &policy, P, PAGE, 2, cstorage, cbytes, 0),
                 PRECOPY_OK);
        precopy_source_event_t round = {0};
        round.kind = PRECOPY_SOURCE_EVENT_ROUND_MEASURED;
        round.round = 1;
        round.pages_sent = P / 2;
        round.wire_bytes = P / 2 * PAGE;
        round.dirty_pages = 10;
        CHECK_RC(precopy_coordinator_handle_source_event(&coord, 0, &round, 1000000),
                 PRECOPY_OK);
        if (with) CHECK_RC(precopy_coordinator_note_pending_pages(&coord, 5000), PRECOPY_OK);
        CHECK_RC(precopy_coordinator_handle_source_event(&coord, 1, &round, 1000000),
                 PRECOPY_OK);
        while (precopy_coordinator_poll_event(&coord, &cev) == PRECOPY_OK &&
               cev.kind != PRECOPY_COORDINATOR_EVENT_NONE)
            if (cev.kind == PRECOPY_COORDINATOR_EVENT_ROUND_DONE)
                predicted[with] = cev.predicted_downtime_ns;
    }
    CHECK(predicted[0] > 0 && predicted[1] > predicted[0]);
    CHECK(predicted[1] - predicted[0] >= 5000ull * PAGE - 1000 &&
          predicted[1] - predicted[0] <= 5000ull * PAGE + 1000);

    /* Applier. */
    static precopy_applier_t app, zapp;
    static _Alignas(64) uint8_t araw[sizeof(precopy_applier_t) + 64];
    size_t abytes = 0;
    CHECK_RC(precopy_applier_storage_size(3000, &abytes), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_applier_storage_size(PAGE, &abytes), PRECOPY_OK);
    CHECK(abytes == needs.applier_bytes);
    uint64_t *astorage = alloc64(abytes);
    precopy_page_memory_t dmemory = {dmem, dest_read, dest_write, PAGE, P};
    precopy_page_memory_t read_only = {dmem, dest_read, NULL, PAGE, P};
    CHECK_RC(precopy_applier_init(&app, &read_only, astorage, abytes), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_applier_init(&app, &dmemory, astorage, abytes - 8),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_applier_init((precopy_applier_t *)(void *)(araw + 8), &dmemory, astorage,
                                  abytes),
             PRECOPY_ERR_MISALIGNED);
    uint32_t complete = 9;
    CHECK_RC(precopy_applier_feed(&zapp, out, 4, &complete), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_applier_init(&app, &dmemory, astorage, abytes), PRECOPY_OK);
    CHECK_RC(precopy_applier_feed(&app, NULL, 4, &complete), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_applier_verdict(&app, NULL), PRECOPY_ERR_STREAM);
    CHECK_RC(precopy_applier_feed(&app, (const uint8_t *)"GARBAGE-BYTES-HERE", 18, &complete),
             PRECOPY_ERR_BAD_HEADER);
    CHECK_RC(precopy_applier_feed(&app, out, 0, &complete), PRECOPY_ERR_BAD_HEADER);
    CHECK_RC(precopy_applier_verdict(&app, NULL), PRECOPY_ERR_BAD_HEADER);
    precopy_apply_progress_t progress;
    CHECK_RC(precopy_applier_progress(&app, &progress), PRECOPY_OK);
    CHECK(progress.complete == 0 && progress.error == PRECOPY_ERR_BAD_HEADER);
    free(astorage);
}

int main(void) {
    printf("precopy C migration test (ABI %u)\n", precopy_abi_version());
    bad_arguments_and_wrong_order();
    printf("bad arguments and wrong order: error codes\n");
    migrate_with_writes();
    printf("migration of a running guest over %u streams: OK\n", STREAMS);
    corrupted_byte_fails_and_leaves_the_source_intact();
    printf("corrupted byte: the migration failed, the source is intact\n");
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
