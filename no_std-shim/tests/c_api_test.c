/*
 * c_api_test.c: exercises every function of precopy.h from C, linked against
 * libprecopy.a, including bad arguments (NULL, misaligned and short buffers, bad
 * lengths, out-of-range pages, state never initialized, corrupt input).
 *
 * Built and run by ../run-c-test.sh. Prints one line per section and a summary; exits
 * non-zero if any check fails.
 */
#include "precopy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define OK(expr) CHECK_RC(expr, PRECOPY_OK)

static void section(const char *name) {
    static int last_checks, last_failures;
    if (name == NULL || last_checks != checks) {
        printf("  %-34s %3d checks, %d failed\n", "", checks - last_checks,
               failures - last_failures);
    }
    last_checks = checks;
    last_failures = failures;
    if (name) {
        printf("%s\n", name);
    }
}

/* Storage aligned to 8 bytes, from which misaligned pointers are made on purpose. */
typedef union {
    uint64_t words[4096];
    unsigned char bytes[4096 * 8];
} aligned_buf_t;

static void *misaligned(void *p) { return (unsigned char *)p + 4; }

/* ---- status codes ------------------------------------------------------------------ */

static void test_status(void) {
    section("status codes, ABI version");
    CHECK(precopy_abi_version() == PRECOPY_ABI_VERSION);
    static const int codes[] = {
        PRECOPY_OK, PRECOPY_MORE, PRECOPY_DELTA_GAVE_UP,
        PRECOPY_ERR_NULL, PRECOPY_ERR_MISALIGNED, PRECOPY_ERR_BUFFER_TOO_SMALL,
        PRECOPY_ERR_BAD_LENGTH, PRECOPY_ERR_UNINITIALIZED, PRECOPY_ERR_BAD_ARGUMENT,
        PRECOPY_ERR_BAD_PAGE_SIZE, PRECOPY_ERR_BAD_REGION, PRECOPY_ERR_OVERLAPPING_REGIONS,
        PRECOPY_ERR_TOO_MANY_REGIONS, PRECOPY_ERR_PAGE_OUT_OF_RANGE,
        PRECOPY_ERR_ADDRESS_OUT_OF_RANGE, PRECOPY_ERR_UNKNOWN_SLOT, PRECOPY_ERR_SLOT_OFFSET,
        PRECOPY_ERR_BAD_SLOT, PRECOPY_ERR_BAD_POLICY, PRECOPY_ERR_BAD_GUEST,
        PRECOPY_ERR_CORRUPT_PAGE, PRECOPY_ERR_CHECKSUM, PRECOPY_ERR_TRUNCATED,
        PRECOPY_ERR_BAD_FRAME, PRECOPY_ERR_BAD_HEADER, PRECOPY_ERR_UNSUPPORTED,
        PRECOPY_ERR_STREAM,
    };
    const size_t n = sizeof codes / sizeof codes[0];
    const char *unknown = precopy_strerror(-1000);
    CHECK(unknown != NULL && strstr(unknown, "unknown") != NULL);
    for (size_t i = 0; i < n; i++) {
        const char *m = precopy_strerror(codes[i]);
        CHECK(m != NULL && strlen(m) > 5);
        CHECK(strcmp(m, unknown) != 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(codes[i] != codes[j] || codes[i] == PRECOPY_DELTA_GAVE_UP);
            if (codes[i] != codes[j]) {
                CHECK(strcmp(m, precopy_strerror(codes[j])) != 0);
            }
        }
    }
    CHECK(strcmp(precopy_strerror(PRECOPY_OK), "success") == 0);
}

/* ---- dirty bitmap ------------------------------------------------------------------ */

#define PAGE 4096ULL
#define MIB (1024ULL * 1024ULL)

/* 100 pages at 0, a hole, 200 pages at 1 MiB: dense pages 0..100 and 100..300. */
static const precopy_region_t regions[2] = {
    {1 * MIB, 200 * PAGE}, /* given out of order on purpose */
    {0, 100 * PAGE},
};

static precopy_bitmap_t bm;
static aligned_buf_t words;

static int dirty(uint64_t page) {
    int d = -1;
    OK(precopy_bitmap_is_dirty(&bm, page, &d));
    return d;
}

static uint64_t dirty_count(void) {
    uint64_t n = UINT64_MAX;
    OK(precopy_bitmap_dirty_count(&bm, &n));
    return n;
}

/* Harvests a whole pass with a buffer of `cap` pages; returns the pages taken. */
static size_t harvest_all(uint64_t *out, size_t out_cap, size_t cap) {
    uint64_t cursor = 0;
    size_t total = 0;
    int rc;
    int calls = 0;
    do {
        uint64_t buf[512];
        size_t count = cap;
        rc = precopy_bitmap_harvest(&bm, &cursor, buf, &count);
        CHECK(rc == PRECOPY_OK || rc == PRECOPY_MORE);
        CHECK(count <= cap);
        for (size_t i = 0; i < count && total < out_cap; i++) {
            out[total++] = buf[i];
        }
        CHECK(++calls < 1000);
    } while (rc == PRECOPY_MORE && calls < 1000);
    CHECK(cursor == 300);
    return total;
}

static void test_bitmap_layout(void) {
    section("bitmap: layout and init");
    size_t nwords = 0;
    uint64_t npages = 0;
    OK(precopy_bitmap_storage_words(PAGE, regions, 2, &nwords, &npages));
    CHECK(nwords == 5 && npages == 300);
    nwords = 0;
    OK(precopy_bitmap_storage_words(PAGE, regions, 2, &nwords, NULL));
    CHECK(nwords == 5);
    CHECK_RC(precopy_bitmap_storage_words(PAGE, regions, 2, NULL, &npages), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_storage_words(PAGE, NULL, 2, &nwords, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_storage_words(PAGE, regions, 0, &nwords, NULL),
             PRECOPY_ERR_BAD_LENGTH);
    CHECK_RC(precopy_bitmap_storage_words(PAGE, regions, PRECOPY_MAX_REGIONS + 1, &nwords, NULL),
             PRECOPY_ERR_TOO_MANY_REGIONS);
    CHECK_RC(precopy_bitmap_storage_words(3000, regions, 2, &nwords, NULL),
             PRECOPY_ERR_BAD_PAGE_SIZE);
    const precopy_region_t unaligned[1] = {{100, PAGE}};
    CHECK_RC(precopy_bitmap_storage_words(PAGE, unaligned, 1, &nwords, NULL),
             PRECOPY_ERR_BAD_REGION);
    const precopy_region_t wrapping[1] = {{UINT64_MAX - PAGE + 1, 2 * PAGE}};
    CHECK_RC(precopy_bitmap_storage_words(PAGE, wrapping, 1, &nwords, NULL),
             PRECOPY_ERR_BAD_REGION);
    const precopy_region_t overlapping[2] = {{0, 4 * PAGE}, {2 * PAGE, 4 * PAGE}};
    CHECK_RC(precopy_bitmap_storage_words(PAGE, overlapping, 2, &nwords, NULL),
             PRECOPY_ERR_OVERLAPPING_REGIONS);
    CHECK_RC(precopy_bitmap_storage_words(PAGE, misaligned((void *)regions), 1, &nwords, NULL),
             PRECOPY_ERR_MISALIGNED);

    /* init: bad arguments first */
    CHECK_RC(precopy_bitmap_init(NULL, PAGE, regions, 2, words.words, 5), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_init(&bm, PAGE, regions, 2, words.words, 4),
             PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_bitmap_init(&bm, PAGE, regions, 2, NULL, 5), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_init(&bm, PAGE, regions, 2, misaligned(words.words), 5),
             PRECOPY_ERR_MISALIGNED);
    static aligned_buf_t raw_bm;
    CHECK_RC(precopy_bitmap_init(misaligned(raw_bm.bytes), PAGE, regions, 2, words.words, 5),
             PRECOPY_ERR_MISALIGNED);
    CHECK_RC(precopy_bitmap_init(&bm, PAGE, regions, 2, words.words, SIZE_MAX),
             PRECOPY_ERR_BAD_LENGTH);

    /* never initialized (zeroed) state is refused */
    precopy_bitmap_t zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    CHECK_RC(precopy_bitmap_mark(&zeroed, 1), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_bitmap_mark(NULL, 1), PRECOPY_ERR_NULL);

    /* init zeroes the words it is given */
    memset(words.words, 0xff, 6 * sizeof(uint64_t));
    OK(precopy_bitmap_init(&bm, PAGE, regions, 2, words.words, 6));
    CHECK(words.words[0] == 0 && words.words[4] == 0);
    CHECK(words.words[5] == UINT64_MAX); /* past the storage needed: untouched */
    uint64_t total = 0;
    OK(precopy_bitmap_total_pages(&bm, &total));
    CHECK(total == 300);
    CHECK_RC(precopy_bitmap_total_pages(&bm, NULL), PRECOPY_ERR_NULL);
    CHECK(dirty_count() == 0);
}

static void test_bitmap_mark(void) {
    section("bitmap: mark, mark range, mark pages");
    OK(precopy_bitmap_mark(&bm, 7));
    OK(precopy_bitmap_mark(&bm, 7));
    OK(precopy_bitmap_mark(&bm, 299));
    CHECK_RC(precopy_bitmap_mark(&bm, 300), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    CHECK_RC(precopy_bitmap_mark(&bm, UINT64_MAX), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    CHECK(dirty(7) == 1 && dirty(8) == 0 && dirty(299) == 1);

    /* 2 bytes straddling a page boundary in the second region: dense pages 100, 101 */
    OK(precopy_bitmap_mark_range(&bm, 1 * MIB + PAGE - 1, 2));
    CHECK(dirty(100) == 1 && dirty(101) == 1 && dirty(102) == 0);
    OK(precopy_bitmap_mark_range(&bm, 5 * PAGE, 0)); /* zero length: nothing */
    CHECK(dirty(5) == 0);
    /* in the hole */
    CHECK_RC(precopy_bitmap_mark_range(&bm, 100 * PAGE, 1), PRECOPY_ERR_ADDRESS_OUT_OF_RANGE);
    /* from the last page of region 1 into the hole: page 99 marked, error reported */
    CHECK_RC(precopy_bitmap_mark_range(&bm, 99 * PAGE, 2 * PAGE),
             PRECOPY_ERR_ADDRESS_OUT_OF_RANGE);
    CHECK(dirty(99) == 1);

    OK(precopy_bitmap_mark_pages(&bm, 250, 10));
    CHECK(dirty(249) == 0 && dirty(250) == 1 && dirty(259) == 1 && dirty(260) == 0);
    CHECK_RC(precopy_bitmap_mark_pages(&bm, 295, 10), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    CHECK(dirty(295) == 0); /* nothing marked */
    CHECK_RC(precopy_bitmap_mark_pages(&bm, UINT64_MAX, 2), PRECOPY_ERR_PAGE_OUT_OF_RANGE);

    int d = 0;
    CHECK_RC(precopy_bitmap_is_dirty(&bm, 300, &d), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    CHECK_RC(precopy_bitmap_is_dirty(&bm, 1, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_dirty_count(&bm, NULL), PRECOPY_ERR_NULL);
    CHECK(dirty_count() == 1 + 1 + 2 + 1 + 10); /* 7, 299, 100-101, 99, 250-259 */
}

static void test_bitmap_harvest(void) {
    section("bitmap: harvest (cursor, short buffers)");
    static const uint64_t want[] = {7,   99,  100, 101, 250, 251, 252, 253,
                                    254, 255, 256, 257, 258, 259, 299};
    const size_t nwant = sizeof want / sizeof want[0];
    uint64_t got[400];

    /* a buffer big enough for everything: one call */
    uint64_t cursor = 0;
    size_t count = 400;
    OK(precopy_bitmap_harvest(&bm, &cursor, got, &count));
    CHECK(cursor == 300 && count == nwant);
    CHECK(count == nwant && memcmp(got, want, sizeof want) == 0);
    CHECK(dirty_count() == 0);

    /* the same pages with buffers of 1, 3 and 64 pages: every page exactly once,
     * ascending, across PRECOPY_MORE calls (the pages that did not fit are put back) */
    static const size_t caps[] = {1, 3, 64};
    for (size_t c = 0; c < 3; c++) {
        for (size_t i = 0; i < nwant; i++) {
            OK(precopy_bitmap_mark(&bm, want[i]));
        }
        size_t n = harvest_all(got, 400, caps[c]);
        CHECK(n == nwant && memcmp(got, want, sizeof want) == 0);
        CHECK(dirty_count() == 0);
    }

    /* a full word plus neighbours, buffer of 5: 192 pages in order, none lost */
    OK(precopy_bitmap_mark_pages(&bm, 100, 192));
    size_t n = harvest_all(got, 400, 5);
    CHECK(n == 192);
    int ordered = 1;
    for (size_t i = 0; i < n; i++) {
        ordered &= got[i] == 100 + i;
    }
    CHECK(ordered);

    /* PRECOPY_MORE leaves the rest in the bitmap */
    OK(precopy_bitmap_mark_pages(&bm, 0, 10));
    cursor = 0;
    count = 4;
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, got, &count), PRECOPY_MORE);
    CHECK(count == 4 && got[0] == 0 && got[3] == 3 && cursor == 4);
    CHECK(dirty_count() == 6 && dirty(3) == 0 && dirty(4) == 1);
    count = 100;
    OK(precopy_bitmap_harvest(&bm, &cursor, got, &count));
    CHECK(count == 6 && got[0] == 4 && got[5] == 9);

    /* bad arguments */
    cursor = 301;
    count = 10;
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, got, &count), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    cursor = 0;
    count = 0;
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, got, &count), PRECOPY_ERR_BUFFER_TOO_SMALL);
    cursor = 300; /* at the end: nothing to do, even with no buffer */
    count = 0;
    OK(precopy_bitmap_harvest(&bm, &cursor, NULL, &count));
    CHECK(count == 0);
    cursor = 0;
    count = 5;
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, NULL, &count), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_harvest(&bm, NULL, got, &count), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, got, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_harvest(&bm, &cursor, misaligned(got), &count),
             PRECOPY_ERR_MISALIGNED);
}

static void test_bitmap_words(void) {
    section("bitmap: harvest words, restore words");
    OK(precopy_bitmap_mark(&bm, 1));
    OK(precopy_bitmap_mark(&bm, 64));
    OK(precopy_bitmap_mark(&bm, 299));
    uint64_t w[5] = {9, 9, 9, 9, 9};
    uint64_t taken = 0;
    OK(precopy_bitmap_harvest_words(&bm, 0, w, 5, &taken));
    CHECK(taken == 3);
    CHECK(w[0] == 2 && w[1] == 1 && w[2] == 0 && w[3] == 0 && w[4] == 1ULL << 43);
    CHECK(dirty_count() == 0);
    OK(precopy_bitmap_harvest_words(&bm, 0, w, 5, NULL));
    CHECK_RC(precopy_bitmap_harvest_words(&bm, 4, w, 2, &taken), PRECOPY_ERR_BAD_LENGTH);
    CHECK_RC(precopy_bitmap_harvest_words(&bm, SIZE_MAX, w, 2, &taken), PRECOPY_ERR_BAD_LENGTH);
    CHECK_RC(precopy_bitmap_harvest_words(&bm, 0, NULL, 2, &taken), PRECOPY_ERR_NULL);

    /* put back what could not be sent */
    const uint64_t back[2] = {1ULL << 5, 1ULL << 63};
    OK(precopy_bitmap_restore_words(&bm, 1, back, 2));
    CHECK(dirty(69) == 1 && dirty(191) == 1 && dirty_count() == 2);
    const uint64_t past_end[1] = {1ULL << 44}; /* page 300 does not exist */
    CHECK_RC(precopy_bitmap_restore_words(&bm, 4, past_end, 1), PRECOPY_ERR_PAGE_OUT_OF_RANGE);
    CHECK_RC(precopy_bitmap_restore_words(&bm, 4, back, 2), PRECOPY_ERR_BAD_LENGTH);
    CHECK_RC(precopy_bitmap_restore_words(&bm, 0, NULL, 1), PRECOPY_ERR_NULL);
    OK(precopy_bitmap_harvest_words(&bm, 0, w, 5, &taken));
    CHECK(taken == 2);
}

static void test_kvm(void) {
    section("bitmap: KVM dirty log and dirty ring");
    static precopy_kvm_slots_t slots;
    precopy_kvm_slots_t zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    CHECK_RC(precopy_kvm_slots_init(NULL, &bm), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_kvm_slots_init(&slots, NULL), PRECOPY_ERR_NULL);
    OK(precopy_kvm_slots_init(&slots, &bm));
    OK(precopy_kvm_slots_insert(&slots, 0, 0, 100));
    OK(precopy_kvm_slots_insert(&slots, 1u << 16 | 1, 1 * MIB, 200));
    CHECK_RC(precopy_kvm_slots_insert(&slots, 2, 0, 101), PRECOPY_ERR_BAD_SLOT);   /* hole */
    CHECK_RC(precopy_kvm_slots_insert(&slots, 2, 50 * PAGE, 60), PRECOPY_ERR_BAD_SLOT);
    CHECK_RC(precopy_kvm_slots_insert(&slots, 2, 0, 0), PRECOPY_ERR_BAD_SLOT);
    CHECK_RC(precopy_kvm_slots_insert(&zeroed, 2, 0, 1), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_kvm_slots_insert(NULL, 2, 0, 1), PRECOPY_ERR_NULL);

    /* slot pages 0, 63, 64, 199 of slot 1 -> dense 100, 163, 164, 299 */
    const uint32_t s1 = 1u << 16 | 1;
    const uint64_t log[4] = {1 | 1ULL << 63, 1, 0, 1ULL << 7};
    OK(precopy_bitmap_import_kvm_log(&bm, &slots, s1, log, 4));
    CHECK(dirty(100) && dirty(163) && dirty(164) && dirty(299) && dirty_count() == 4);
    uint64_t got[8];
    uint64_t cursor = 0;
    size_t count = 8;
    OK(precopy_bitmap_harvest(&bm, &cursor, got, &count));
    CHECK(count == 4 && got[0] == 100 && got[1] == 163 && got[2] == 164 && got[3] == 299);

    /* a bit past the slot (slot page 200): refused, nothing marked */
    const uint64_t bad[4] = {1, 0, 0, 1ULL << 8};
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &slots, s1, bad, 4), PRECOPY_ERR_SLOT_OFFSET);
    const uint64_t too_long[5] = {0, 0, 0, 0, 1};
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &slots, s1, too_long, 5),
             PRECOPY_ERR_SLOT_OFFSET);
    CHECK(dirty_count() == 0);
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &slots, 9, log, 4), PRECOPY_ERR_UNKNOWN_SLOT);
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &zeroed, s1, log, 4), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &slots, s1, NULL, 4), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_import_kvm_log(&bm, &slots, s1, misaligned((void *)log), 2),
             PRECOPY_ERR_MISALIGNED);
    OK(precopy_bitmap_import_kvm_log(&bm, &slots, s1, NULL, 0)); /* empty log */
    /* the short slot 0 at dense page 0: a log shorter than the slot is fine */
    const uint64_t log0[1] = {1ULL << 42};
    OK(precopy_bitmap_import_kvm_log(&bm, &slots, 0, log0, 1));
    CHECK(dirty(42) == 1);
    /* re-registering a slot id replaces it */
    OK(precopy_kvm_slots_insert(&slots, 0, 10 * PAGE, 5));
    const uint64_t log0b[1] = {1};
    OK(precopy_bitmap_import_kvm_log(&bm, &slots, 0, log0b, 1));
    CHECK(dirty(10) == 1);
    OK(precopy_kvm_slots_insert(&slots, 0, 0, 100));

    /* dirty ring: valid entries marked, the first bad one reported */
    const precopy_kvm_dirty_gfn_t ring[4] = {
        {1, 0, 5},
        {1, 7, 0},      /* unknown slot */
        {1, s1, 199},
        {1, 0, 100},    /* past slot 0 */
    };
    OK(precopy_bitmap_harvest_words(&bm, 0, (uint64_t[5]){0}, 5, NULL));
    CHECK_RC(precopy_bitmap_import_kvm_ring(&bm, &slots, ring, 4), PRECOPY_ERR_UNKNOWN_SLOT);
    CHECK(dirty(5) == 1 && dirty(299) == 1 && dirty_count() == 2);
    CHECK_RC(precopy_bitmap_import_kvm_ring(&bm, &slots, ring + 3, 1), PRECOPY_ERR_SLOT_OFFSET);
    OK(precopy_bitmap_import_kvm_ring(&bm, &slots, NULL, 0));
    CHECK_RC(precopy_bitmap_import_kvm_ring(&bm, &slots, NULL, 2), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_bitmap_import_kvm_ring(&bm, NULL, ring, 1), PRECOPY_ERR_NULL);
    /* more entries than the import's internal chunk (64) */
    static precopy_kvm_dirty_gfn_t many[150];
    for (int i = 0; i < 150; i++) {
        many[i].flags = 1;
        many[i].slot = s1;
        many[i].offset = (uint64_t)i;
    }
    OK(precopy_bitmap_import_kvm_ring(&bm, &slots, many, 150));
    CHECK(dirty(100) && dirty(249) && !dirty(250));
    OK(precopy_bitmap_harvest_words(&bm, 0, (uint64_t[5]){0}, 5, NULL));
}

/* Writers write a page (a version number), then mark it, while a harvester takes the
 * dirty pages and then reads them. No lost write: the last version written to every
 * page is read after some harvest that took it. */
#define THREADS 4
#define ROUNDS 20000
static _Atomic uint64_t mem_version[300];
static uint64_t last_read[300];
static atomic_int writers_done;
static int versions_monotone = 1;

static void *writer(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    void *ret = NULL;
    for (uint64_t r = 1; r <= ROUNDS; r++) {
        for (uint64_t p = id; p < 300; p += THREADS) {
            atomic_store_explicit(&mem_version[p], r, memory_order_relaxed);
            if (precopy_bitmap_mark(&bm, p) != PRECOPY_OK) {
                ret = (void *)1;
            }
        }
    }
    atomic_fetch_add(&writers_done, 1);
    return ret;
}

static uint64_t harvest_and_read(size_t cap) {
    uint64_t cursor = 0, taken = 0;
    int rc;
    do {
        uint64_t buf[300];
        size_t count = cap;
        rc = precopy_bitmap_harvest(&bm, &cursor, buf, &count);
        versions_monotone &= rc == PRECOPY_OK || rc == PRECOPY_MORE;
        for (size_t i = 0; i < count; i++) {
            /* the "send": read the page after the harvest took its bit */
            uint64_t v = atomic_load_explicit(&mem_version[buf[i]], memory_order_relaxed);
            versions_monotone &= v >= last_read[buf[i]];
            last_read[buf[i]] = v;
        }
        taken += count;
    } while (rc == PRECOPY_MORE);
    return taken;
}

static void test_bitmap_threads(void) {
    section("bitmap: concurrent writers and a harvester");
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&t[i], NULL, writer, (void *)i) == 0);
    }
    uint64_t harvested = 0, passes = 0;
    while (atomic_load(&writers_done) < THREADS) {
        harvested += harvest_and_read(passes % 2 ? 7 : 300);
        passes++;
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret = (void *)1;
        CHECK(pthread_join(t[i], &ret) == 0 && ret == NULL);
    }
    /* the writers are done: one last pass takes what is left */
    harvested += harvest_and_read(300);
    int all_final = 1;
    for (int p = 0; p < 300; p++) {
        all_final &= last_read[p] == ROUNDS;
    }
    CHECK(all_final);
    CHECK(versions_monotone);
    CHECK(passes > 1);
    CHECK(dirty_count() == 0);
    printf("    %d threads wrote and marked %d x 300 pages; %llu harvest passes took %llu pages; "
           "every page's last write was read after a harvest\n",
           THREADS, ROUNDS, (unsigned long long)passes, (unsigned long long)harvested);
}

/* ---- scheduler --------------------------------------------------------------------- */

static precopy_round_outcome_t round_done(precopy_scheduler_t *s, uint64_t now, uint64_t sent,
                                          uint64_t bytes, uint64_t dirty_pages) {
    precopy_round_measurement_t m = {now, sent, bytes, dirty_pages};
    precopy_round_outcome_t o;
    memset(&o, 0xAB, sizeof o);
    OK(precopy_scheduler_round_done(s, &m, &o));
    return o;
}

static void describe(const precopy_round_outcome_t *o, char *buf, size_t cap) {
    size_t len = cap;
    OK(precopy_outcome_describe(o, buf, &len));
    CHECK(len == strlen(buf));
}

static void test_policy(void) {
    section("scheduler: policies");
    precopy_policy_t p;
    memset(&p, 0xff, sizeof p);
    OK(precopy_policy_default(&p));
    CHECK(p.downtime_limit_ns == 300000000ULL && p.non_memory_downtime_ns == 10000000ULL);
    CHECK(p.switchover_bandwidth == 0 && p.bandwidth_cap == 0 && p.timeout_ns == 0);
    CHECK(p.max_rounds == 30 && p.max_bytes_ratio == 3.0 && p.smoothing == 0.5);
    CHECK(p.on_limit == PRECOPY_ON_LIMIT_FAIL && p.switch_below_pages == 0);
    CHECK(p.throttle_enabled == 1 && p.throttle_initial_percent == 20 &&
          p.throttle_step_percent == 10 && p.throttle_max_percent == 99 &&
          p.throttle_trigger_rounds == 2 && p.throttle_threshold == 0.5);
    CHECK(p.ramp_enabled == 0 && p.min_rounds == 2);
    CHECK(p.shrink_enabled == 1 && p.shrink_max_extra_rounds == 8 &&
          p.shrink_target_fraction == 0.002 && p.shrink_min_shrink == 0.1 &&
          p.shrink_headroom == 1.25 && p.shrink_max_extra_bytes_ratio == 0.5);
    CHECK_RC(precopy_policy_default(NULL), PRECOPY_ERR_NULL);

    OK(precopy_policy_preset(&p, PRECOPY_POLICY_QEMU));
    CHECK(p.max_rounds == UINT32_MAX && p.max_bytes_ratio == 0.0 && p.throttle_enabled == 0);
    CHECK(p.throttle_initial_percent == 20); /* kept, so enabling is one field */
    CHECK(p.non_memory_downtime_ns == 0);
    CHECK(p.shrink_enabled == 0 && p.shrink_min_shrink == 0.1); /* kept, as throttle */
    OK(precopy_policy_preset(&p, PRECOPY_POLICY_XEN));
    CHECK(p.max_rounds == 5 && p.switch_below_pages == 50 &&
          p.on_limit == PRECOPY_ON_LIMIT_SWITCH_OVER);
    OK(precopy_policy_preset(&p, PRECOPY_POLICY_XEN_LEGACY));
    CHECK(p.max_rounds == 30 && p.max_bytes_ratio == 3.0);
    CHECK_RC(precopy_policy_preset(&p, 99), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_policy_preset(&p, -1), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_policy_preset(NULL, PRECOPY_POLICY_XEN), PRECOPY_ERR_NULL);

    char msg[256];
    size_t len = sizeof msg;
    OK(precopy_policy_default(&p));
    OK(precopy_policy_validate(&p, msg, &len));
    CHECK(len == 0 && msg[0] == '\0');
    OK(precopy_policy_validate(&p, NULL, NULL));

    precopy_policy_t q = p;
    q.smoothing = 0.0;
    len = sizeof msg;
    CHECK_RC(precopy_policy_validate(&q, msg, &len), PRECOPY_ERR_BAD_POLICY);
    CHECK(strstr(msg, "smoothing") != NULL && len == strlen(msg));
    printf("    smoothing = 0: \"%s\"\n", msg);
    q = p;
    q.on_limit = 7;
    len = sizeof msg;
    CHECK_RC(precopy_policy_validate(&q, msg, &len), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK(strstr(msg, "on_limit") != NULL);
    q = p;
    q.throttle_max_percent = 300;
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_POLICY);
    q = p;
    q.throttle_enabled = 2;
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_ARGUMENT);
    q = p;
    q.min_rounds = 0; /* no minimum: valid */
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_OK);
    q = p;
    q.max_rounds = 0;
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_POLICY);
    q = p;
    q.max_bytes_ratio = 0.5;
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_POLICY);
    q = p;
    q.shrink_min_shrink = 1.0; /* every round would have to empty the dirty set */
    len = sizeof msg;
    CHECK_RC(precopy_policy_validate(&q, msg, &len), PRECOPY_ERR_BAD_POLICY);
    CHECK(strstr(msg, "shrink.min_shrink") != NULL);
    q = p;
    q.shrink_enabled = 2;
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_ARGUMENT);
    q = p;
    q.shrink_enabled = 0;
    q.shrink_min_shrink = 7.0; /* ignored when off */
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_OK);
    q = p;
    q.ramp_enabled = 1;
    q.ramp_max_ns = 1; /* below the limit */
    CHECK_RC(precopy_policy_validate(&q, NULL, NULL), PRECOPY_ERR_BAD_POLICY);
    /* a short message buffer: truncated, NUL-terminated, full length reported */
    q = p;
    q.smoothing = 2.0;
    char small[8];
    len = sizeof small;
    CHECK_RC(precopy_policy_validate(&q, small, &len), PRECOPY_ERR_BAD_POLICY);
    CHECK(strlen(small) == 7 && len > 7);
    len = 0;
    CHECK_RC(precopy_policy_validate(&q, NULL, &len), PRECOPY_ERR_BAD_POLICY);
    CHECK(len > 20);
    CHECK_RC(precopy_policy_validate(NULL, msg, &len), PRECOPY_ERR_NULL);
}

static void test_scheduler(void) {
    section("scheduler: rounds, decisions, failures");
    precopy_policy_t p;
    precopy_scheduler_t s;
    const uint64_t pages = 1ULL << 18; /* 1 GiB of 4 KiB pages */
    OK(precopy_policy_default(&p));

    CHECK_RC(precopy_scheduler_init(&s, &p, 0, PAGE, 0), PRECOPY_ERR_BAD_GUEST);
    CHECK_RC(precopy_scheduler_init(&s, &p, pages, 0, 0), PRECOPY_ERR_BAD_GUEST);
    CHECK_RC(precopy_scheduler_init(NULL, &p, pages, PAGE, 0), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_scheduler_init(&s, NULL, pages, PAGE, 0), PRECOPY_ERR_NULL);
    precopy_policy_t bad = p;
    bad.downtime_limit_ns = 0;
    CHECK_RC(precopy_scheduler_init(&s, &bad, pages, PAGE, 0), PRECOPY_ERR_BAD_POLICY);
    precopy_scheduler_t zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    precopy_round_measurement_t m = {1, 1, 1, 1};
    precopy_round_outcome_t o;
    CHECK_RC(precopy_scheduler_round_done(&zeroed, &m, &o), PRECOPY_ERR_UNINITIALIZED);

    /* converging: 10 Gbit/s, the guest re-dirties a tenth of what each round sends */
    OK(precopy_scheduler_init(&s, &p, pages, PAGE, 0));
    CHECK_RC(precopy_scheduler_round_done(&s, NULL, &o), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_scheduler_round_done(&s, &m, NULL), PRECOPY_ERR_NULL);
    uint64_t now = 0, to_send = pages;
    char msg[512];
    for (int i = 0; i < 10; i++) {
        uint64_t bytes = to_send * PAGE;
        now += bytes * 8 / 10;
        o = round_done(&s, now, to_send, bytes, to_send / 10);
        CHECK(o.round == (uint32_t)i + 1);
        CHECK(o.not_converging.bound == PRECOPY_BOUND_NONE);
        if (o.decision != PRECOPY_DECISION_CONTINUE) {
            break;
        }
        CHECK(o.throttle_percent == 0);
        to_send /= 10;
    }
    CHECK(o.decision == PRECOPY_DECISION_SWITCH_OVER);
    CHECK(o.switch_reason == PRECOPY_SWITCH_DOWNTIME_MET);
    CHECK(o.round <= 4 && o.predicted_downtime_ns <= 300000000ULL);
    CHECK(o.bandwidth_bytes_per_sec > 1.2e9 && o.bandwidth_bytes_per_sec < 1.3e9);
    CHECK(o.downtime_limit_ns == 300000000ULL);
    describe(&o, msg, sizeof msg);
    CHECK(strstr(msg, "switch over") != NULL);
    printf("    converging: \"%s\"\n", msg);

    precopy_downtime_report_t r;
    OK(precopy_scheduler_finish(&s, 2 * o.predicted_downtime_ns, &r));
    CHECK(r.predicted_ns == o.predicted_downtime_ns && r.real_ns == 2 * r.predicted_ns);
    CHECK(r.ratio > 1.99 && r.ratio < 2.01);
    CHECK_RC(precopy_scheduler_finish(&s, 1, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_scheduler_finish(&zeroed, 1, &r), PRECOPY_ERR_UNINITIALIZED);

    /* not converging, byte bound: the guest dirties all memory every round */
    OK(precopy_scheduler_init(&s, &p, pages, PAGE, 0));
    now = 0;
    uint32_t throttles[8] = {0};
    int rounds = 0;
    for (; rounds < 8; rounds++) {
        now += 1000000000ULL;
        o = round_done(&s, now, pages, pages * PAGE, pages);
        throttles[rounds] = o.throttle_percent;
        if (o.decision != PRECOPY_DECISION_CONTINUE) {
            break;
        }
    }
    CHECK(o.decision == PRECOPY_DECISION_FAIL && o.switch_reason == PRECOPY_SWITCH_NONE);
    CHECK(o.not_converging.bound == PRECOPY_BOUND_BYTES && o.not_converging.rounds == 3);
    CHECK(o.not_converging.predicted_downtime_ns > o.not_converging.downtime_limit_ns);
    CHECK(o.not_converging.dirty_pages_per_sec > 2.6e5 && o.not_converging.dirty_pages_per_sec < 2.7e5);
    CHECK(throttles[0] == 0 && throttles[1] == 20); /* trigger_rounds = 2 */
    describe(&o, msg, sizeof msg);
    CHECK(strstr(msg, "not converging") != NULL && strstr(msg, "byte limit") != NULL);
    printf("    not converging: \"%s\"\n", msg);

    /* round bound, and the throttle escalating 0, 20, 30, 40 */
    precopy_policy_t pr = p;
    pr.max_bytes_ratio = 0.0;
    pr.max_rounds = 5;
    OK(precopy_scheduler_init(&s, &pr, pages, PAGE, 0));
    now = 0;
    for (rounds = 0; rounds < 8; rounds++) {
        now += 1000000000ULL;
        o = round_done(&s, now, pages, pages * PAGE, pages);
        throttles[rounds] = o.throttle_percent;
        if (o.decision != PRECOPY_DECISION_CONTINUE) {
            break;
        }
    }
    CHECK(o.decision == PRECOPY_DECISION_FAIL && o.not_converging.bound == PRECOPY_BOUND_ROUNDS);
    CHECK(o.not_converging.rounds == 5 && rounds == 4);
    CHECK(throttles[0] == 0 && throttles[1] == 20 && throttles[2] == 30 && throttles[3] == 40);

    /* timeout bound */
    precopy_policy_t pt = p;
    pt.max_bytes_ratio = 0.0;
    pt.max_rounds = UINT32_MAX;
    pt.timeout_ns = 1000000000ULL;
    OK(precopy_scheduler_init(&s, &pt, pages, PAGE, 0));
    o = round_done(&s, 600000000ULL, pages, pages * PAGE, pages);
    CHECK(o.decision == PRECOPY_DECISION_CONTINUE);
    o = round_done(&s, 1200000000ULL, pages, pages * PAGE, pages);
    CHECK(o.decision == PRECOPY_DECISION_FAIL && o.not_converging.bound == PRECOPY_BOUND_TIMEOUT);
    describe(&o, msg, sizeof msg);
    CHECK(strstr(msg, "timeout") != NULL);

    /* on_limit = switch over: a bound reached becomes a forced switchover */
    pr.on_limit = PRECOPY_ON_LIMIT_SWITCH_OVER;
    pr.max_rounds = 2;
    OK(precopy_scheduler_init(&s, &pr, pages, PAGE, 0));
    o = round_done(&s, 1000000000ULL, pages, pages * PAGE, pages);
    o = round_done(&s, 2000000000ULL, pages, pages * PAGE, pages);
    CHECK(o.decision == PRECOPY_DECISION_SWITCH_OVER &&
          o.switch_reason == PRECOPY_SWITCH_BOUND_REACHED);
    describe(&o, msg, sizeof msg);
    CHECK(strstr(msg, "bound") != NULL);

    /* Xen: few dirty pages */
    OK(precopy_policy_preset(&p, PRECOPY_POLICY_XEN));
    OK(precopy_scheduler_init(&s, &p, pages, PAGE, 0));
    o = round_done(&s, 1000000000ULL, pages, pages * PAGE, 10);
    CHECK(o.decision == PRECOPY_DECISION_SWITCH_OVER &&
          o.switch_reason == PRECOPY_SWITCH_FEW_DIRTY_PAGES);

    /* downtime ramp: the limit rises each round after the first */
    OK(precopy_policy_default(&p));
    p.ramp_enabled = 1;
    p.ramp_after_rounds = 1;
    p.ramp_step_ns = 100000000ULL;
    p.ramp_max_ns = 500000000ULL;
    p.max_bytes_ratio = 0.0;
    OK(precopy_scheduler_init(&s, &p, pages, PAGE, 0));
    o = round_done(&s, 1000000000ULL, pages, pages * PAGE, pages);
    CHECK(o.downtime_limit_ns == 300000000ULL);
    o = round_done(&s, 2000000000ULL, pages, pages * PAGE, pages);
    CHECK(o.downtime_limit_ns == 400000000ULL);
    o = round_done(&s, 3000000000ULL, pages, pages * PAGE, pages);
    o = round_done(&s, 4000000000ULL, pages, pages * PAGE, pages);
    CHECK(o.downtime_limit_ns == 500000000ULL);

    /* describe: size query, truncation, bad values */
    size_t len = 0;
    CHECK_RC(precopy_outcome_describe(&o, NULL, &len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 10);
    char exact[256];
    size_t need = len;
    len = need + 1;
    OK(precopy_outcome_describe(&o, exact, &len));
    CHECK(len == need && strlen(exact) == need);
    len = need; /* one short: the NUL does not fit */
    CHECK_RC(precopy_outcome_describe(&o, exact, &len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(strlen(exact) == need - 1);
    precopy_round_outcome_t weird = o;
    weird.decision = 9;
    len = sizeof exact;
    CHECK_RC(precopy_outcome_describe(&weird, exact, &len), PRECOPY_ERR_BAD_ARGUMENT);
    weird.decision = PRECOPY_DECISION_FAIL;
    weird.not_converging.bound = 77;
    CHECK_RC(precopy_outcome_describe(&weird, exact, &len), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_outcome_describe(NULL, exact, &len), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_outcome_describe(&o, exact, NULL), PRECOPY_ERR_NULL);
}

/* ---- page codecs ------------------------------------------------------------------- */

static precopy_lz4_t lz4; /* 64-byte aligned by its type */

static void fill_text(uint8_t *page, size_t n, unsigned seed) {
    static const char *words[] = {"precopy ", "dirty ", "page ", "round ", "guest ", "bitmap "};
    size_t at = 0;
    while (at < n) {
        const char *w = words[(seed = seed * 1103515245u + 12345u) >> 16 & 3 ? seed % 6 : 0];
        for (size_t i = 0; w[i] && at < n; i++) {
            page[at++] = (uint8_t)w[i];
        }
    }
}

static void test_codecs(void) {
    section("codecs: zero, hash, LZ4, delta, decode");
    static uint8_t page[4096], base[4096], out[8192], back[4096];
    int zero = -1;
    memset(page, 0, sizeof page);
    OK(precopy_page_is_zero(page, sizeof page, &zero));
    CHECK(zero == 1);
    page[4095] = 1;
    OK(precopy_page_is_zero(page, sizeof page, &zero));
    CHECK(zero == 0);
    OK(precopy_page_is_zero(NULL, 0, &zero));
    CHECK(zero == 1);
    CHECK_RC(precopy_page_is_zero(NULL, 4096, &zero), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_page_is_zero(page, 4096, NULL), PRECOPY_ERR_NULL);

    uint64_t h1 = 0, h2 = 0, h3 = 0;
    OK(precopy_base_hash(page, sizeof page, &h1));
    OK(precopy_base_hash(page, sizeof page, &h2));
    page[0] = 9;
    OK(precopy_base_hash(page, sizeof page, &h3));
    CHECK(h1 == h2 && h1 != h3);
    CHECK_RC(precopy_base_hash(NULL, 10, &h1), PRECOPY_ERR_NULL);

    size_t max = 0;
    OK(precopy_lz4_max_output_len(4096, &max));
    CHECK(max >= 4096 + 16 && max < 4700); /* LZ4's worst case: about 110% */
    CHECK_RC(precopy_lz4_max_output_len(1000, &max), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_lz4_max_output_len(256, &max), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_lz4_max_output_len(1 << 17, &max), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_lz4_max_output_len(4096, NULL), PRECOPY_ERR_NULL);

    /* LZ4 */
    static precopy_lz4_t zeroed_lz4;
    size_t n = sizeof out;
    CHECK_RC(precopy_lz4_compress(&zeroed_lz4, page, 4096, out, &n), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_lz4_init(NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_lz4_init((precopy_lz4_t *)((unsigned char *)&zeroed_lz4 + 8)),
             PRECOPY_ERR_MISALIGNED);
    OK(precopy_lz4_init(&lz4));
    fill_text(page, sizeof page, 1);
    n = sizeof out;
    OK(precopy_lz4_compress(&lz4, page, 4096, out, &n));
    CHECK(n > 0 && n < 2048);
    printf("    LZ4: 4096-byte text page -> %zu bytes\n", n);
    memset(back, 0xee, sizeof back);
    OK(precopy_lz4_decompress(out, n, back, 4096));
    CHECK(memcmp(back, page, 4096) == 0);
    size_t small = 100;
    CHECK_RC(precopy_lz4_compress(&lz4, page, 4096, out, &small), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(small == max);
    small = sizeof out;
    CHECK_RC(precopy_lz4_compress(&lz4, page, 4000, out, &small), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_lz4_compress(&lz4, NULL, 4096, out, &small), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_lz4_compress(&lz4, page, 4096, NULL, &small), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_lz4_decompress(out, n - 1, back, 4096), PRECOPY_ERR_CORRUPT_PAGE);
    CHECK_RC(precopy_lz4_decompress(out, n, back, 2048), PRECOPY_ERR_CORRUPT_PAGE);
    CHECK_RC(precopy_lz4_decompress(out, 0, back, 4096), PRECOPY_ERR_CORRUPT_PAGE);
    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof garbage);
    CHECK_RC(precopy_lz4_decompress(garbage, sizeof garbage, back, 4096),
             PRECOPY_ERR_CORRUPT_PAGE);
    /* the largest page size */
    static uint8_t big[65536], big_back[65536], big_out[80000];
    fill_text(big, sizeof big, 7);
    OK(precopy_lz4_max_output_len(sizeof big, &max));
    CHECK(max <= sizeof big_out);
    n = sizeof big_out;
    OK(precopy_lz4_compress(&lz4, big, sizeof big, big_out, &n));
    OK(precopy_lz4_decompress(big_out, n, big_back, sizeof big_back));
    CHECK(memcmp(big, big_back, sizeof big) == 0);

    /* delta against a caller-held base */
    memcpy(base, page, sizeof page);
    memcpy(page + 100, "changed!", 8);
    n = 512;
    OK(precopy_delta_encode(base, page, 4096, out, &n));
    CHECK(n == 2 + 8);
    memcpy(back, base, sizeof back);
    OK(precopy_delta_apply(back, 4096, out, n));
    CHECK(memcmp(back, page, 4096) == 0);
    n = 4; /* threshold below the delta's size: gives up, not an error */
    CHECK_RC(precopy_delta_encode(base, page, 4096, out, &n), PRECOPY_DELTA_GAVE_UP);
    n = 0;
    OK(precopy_delta_encode(base, base, 4096, NULL, &n)); /* identical: empty delta */
    CHECK(n == 0);
    n = 512;
    CHECK_RC(precopy_delta_encode(base, page, 3000, out, &n), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_delta_encode(NULL, page, 4096, out, &n), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_delta_encode(base, page, 4096, out, NULL), PRECOPY_ERR_NULL);
    const uint8_t past_end[] = {0xff, 0x7f, 0x01, 0xaa}; /* skip 16383: past the page */
    CHECK_RC(precopy_delta_apply(back, 4096, past_end, sizeof past_end),
             PRECOPY_ERR_CORRUPT_PAGE);
    const uint8_t empty_run[] = {0x00, 0x00};
    CHECK_RC(precopy_delta_apply(back, 4096, empty_run, 2), PRECOPY_ERR_CORRUPT_PAGE);
    const uint8_t cut[] = {0x05, 0x08, 'a'};
    CHECK_RC(precopy_delta_apply(back, 4096, cut, 3), PRECOPY_ERR_CORRUPT_PAGE);
    OK(precopy_delta_apply(back, 4096, NULL, 0));
    CHECK_RC(precopy_delta_apply(NULL, 4096, cut, 3), PRECOPY_ERR_NULL);

    /* decode of each encoding */
    memset(back, 0x55, sizeof back);
    OK(precopy_page_decode(PRECOPY_ENCODING_ZERO, NULL, 0, back, 4096));
    OK(precopy_page_is_zero(back, 4096, &zero));
    CHECK(zero == 1);
    OK(precopy_page_decode(PRECOPY_ENCODING_RAW, page, 4096, back, 4096));
    CHECK(memcmp(back, page, 4096) == 0);
    CHECK_RC(precopy_page_decode(PRECOPY_ENCODING_RAW, page, 4095, back, 4096),
             PRECOPY_ERR_BAD_LENGTH);
    n = sizeof out;
    OK(precopy_lz4_compress(&lz4, base, 4096, out, &n));
    OK(precopy_page_decode(PRECOPY_ENCODING_LZ4, out, n, back, 4096));
    CHECK(memcmp(back, base, 4096) == 0);
    n = 512;
    OK(precopy_delta_encode(base, page, 4096, out, &n));
    OK(precopy_page_decode(PRECOPY_ENCODING_DELTA, out, n, back, 4096));
    CHECK(memcmp(back, page, 4096) == 0);
    CHECK_RC(precopy_page_decode(9, out, n, back, 4096), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_page_decode(PRECOPY_ENCODING_RAW, page, 4096, NULL, 4096),
             PRECOPY_ERR_NULL);
}

/* ---- stream format ----------------------------------------------------------------- */

static int frames_equal(const precopy_frame_t *a, const precopy_frame_t *b) {
    return a->kind == b->kind && a->round == b->round && a->page == b->page &&
           a->pages == b->pages && a->base_hash == b->base_hash &&
           a->digest_lo == b->digest_lo && a->digest_hi == b->digest_hi &&
           a->data_len == b->data_len &&
           (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static void test_wire(void) {
    section("wire: stream header, frames, digest");
    precopy_stream_header_t h, d;
    memset(&h, 0, sizeof h);
    h.features = PRECOPY_FEATURE_LZ4 | PRECOPY_FEATURE_DELTA;
    h.page_size = 4096;
    memcpy(h.session_id, "session-0123456", 16);
    h.nregions = 2;
    h.regions[0] = regions[0];
    h.regions[1] = regions[1];
    static uint8_t buf[PRECOPY_MAX_STREAM_HEADER_LEN];
    size_t len = sizeof buf;
    OK(precopy_stream_header_encode(&h, buf, &len));
    CHECK(len == 40 + 2 * 16 + 4);
    const size_t hlen = len;
    size_t consumed = 0;
    memset(&d, 0xcc, sizeof d);
    OK(precopy_stream_header_decode(buf, hlen, &d, &consumed));
    CHECK(consumed == hlen && d.features == h.features && d.page_size == 4096);
    CHECK(memcmp(d.session_id, h.session_id, 16) == 0 && d.nregions == 2 && d.reserved == 0);
    /* a zero-initialized header is the single stream: 0 of 1 */
    CHECK(d.stream_index == 0 && d.stream_count == 1);
    CHECK(buf[38] == 0 && buf[39] == 1);
    /* decoded in guest address order */
    CHECK(d.regions[0].guest_addr == 0 && d.regions[0].len == 100 * PAGE);
    CHECK(d.regions[1].guest_addr == 1 * MIB && d.regions[1].len == 200 * PAGE);
    CHECK(d.regions[2].guest_addr == 0 && d.regions[2].len == 0);

    len = 10;
    CHECK_RC(precopy_stream_header_encode(&h, buf, &len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(len == hlen);
    precopy_stream_header_t hb = h;
    hb.features = 8; /* unknown (4 is device state) */
    len = sizeof buf;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    hb = h;
    hb.nregions = 0;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_BAD_LENGTH);
    hb.nregions = PRECOPY_MAX_REGIONS + 1;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_TOO_MANY_REGIONS);
    hb = h;
    hb.page_size = 4097;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_BAD_PAGE_SIZE);
    hb = h;
    hb.reserved = 1;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    hb = h;
    hb.regions[1].len = 7;
    CHECK_RC(precopy_stream_header_encode(&hb, buf, &len), PRECOPY_ERR_BAD_REGION);
    CHECK_RC(precopy_stream_header_encode(NULL, buf, &len), PRECOPY_ERR_NULL);
    len = sizeof buf;
    OK(precopy_stream_header_encode(&h, buf, &len));

    /* decode: truncated, corrupt, foreign, newer */
    CHECK_RC(precopy_stream_header_decode(buf, 5, &d, &consumed), PRECOPY_ERR_TRUNCATED);
    CHECK(consumed == 12);
    CHECK_RC(precopy_stream_header_decode(buf, 20, &d, &consumed), PRECOPY_ERR_TRUNCATED);
    CHECK(consumed == hlen);
    static uint8_t bad[PRECOPY_MAX_STREAM_HEADER_LEN];
    memcpy(bad, buf, hlen);
    bad[25] ^= 1;
    CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_CHECKSUM);
    memcpy(bad, buf, hlen);
    bad[0] = 'X';
    CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_BAD_HEADER);
    memcpy(bad, buf, hlen);
    bad[8] = 3; /* format version 3 */
    CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_UNSUPPORTED);
    CHECK_RC(precopy_stream_header_decode(NULL, hlen, &d, &consumed), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_stream_header_decode(buf, hlen, NULL, &consumed), PRECOPY_ERR_NULL);

    /* frames: every kind round-trips */
    size_t max = 0;
    OK(precopy_frame_max_len(4096, &max));
    CHECK(max == 12 + 16 + 4096);
    CHECK_RC(precopy_frame_max_len(100, &max), PRECOPY_ERR_BAD_PAGE_SIZE);
    static uint8_t page[4096], fbuf[4200];
    fill_text(page, sizeof page, 3);
    const precopy_frame_t frames[] = {
        {PRECOPY_FRAME_ZERO_RUN, 0, 10, 5, 0, 0, 0, NULL, 0},
        {PRECOPY_FRAME_RAW, 0, 42, 0, 0, 0, 0, page, 4096},
        {PRECOPY_FRAME_LZ4, 0, 43, 0, 0, 0, 0, page, 100},
        {PRECOPY_FRAME_DELTA, 0, 44, 0, 0xfeedface, 0, 0, page, 10},
        {PRECOPY_FRAME_DELTA, 0, 45, 0, 0x1234, 0, 0, NULL, 0}, /* identical page */
        {PRECOPY_FRAME_ROUND_BEGIN, 3, 0, 1000, 0, 0, 0, NULL, 0},
        {PRECOPY_FRAME_ROUND_END, 3, 0, 999, 0, 0, 0, NULL, 0},
        {PRECOPY_FRAME_SWITCHOVER, 0, 0, 77, 0, 0, 0, NULL, 0},
        {PRECOPY_FRAME_COMPLETE, 0, 0, 300, 0, 0x0123456789abcdefULL, 0xfedcba9876543210ULL,
         NULL, 0},
        /* device state: version in `round`, id in `page`, the state in `data` */
        {PRECOPY_FRAME_DEVICE_STATE, 1, 0x100, 0, 0, 0, 0, page, 436},
        {PRECOPY_FRAME_DEVICE_STATE, 65535, 0xffffffffULL, 0, 0, 0, 0, NULL, 0},
        {PRECOPY_FRAME_DEVICE_STATE, 2, 7, 0, 0, 0, 0, page, 4096},
    };
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        len = sizeof fbuf;
        OK(precopy_frame_encode(&frames[i], 4096, fbuf, &len));
        precopy_frame_t f;
        memset(&f, 0xcc, sizeof f);
        consumed = 0;
        OK(precopy_frame_decode(fbuf, len, 4096, &f, &consumed));
        CHECK(consumed == len);
        CHECK(frames_equal(&f, &frames[i]));
        CHECK(f.data_len == 0 || (f.data >= fbuf && f.data + f.data_len <= fbuf + len));
    }
    /* encode: bad arguments */
    precopy_frame_t fb = frames[1];
    fb.data_len = 4095;
    len = sizeof fbuf;
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_BAD_LENGTH);
    fb = frames[2];
    fb.data_len = 0; /* an empty LZ4 block */
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_BAD_LENGTH);
    fb = frames[1];
    fb.data = NULL;
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_NULL);
    fb.kind = 10;
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    /* device state: a version past u16, an id past u32, more than a page */
    fb = (precopy_frame_t){PRECOPY_FRAME_DEVICE_STATE, 65536, 1, 0, 0, 0, 0, page, 8};
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    fb.round = 1;
    fb.page = 1ULL << 32;
    CHECK_RC(precopy_frame_encode(&fb, 4096, fbuf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    fb.page = 1;
    fb.data_len = 513; /* a page of 512 bytes and one more */
    CHECK_RC(precopy_frame_encode(&fb, 512, fbuf, &len), PRECOPY_ERR_BAD_LENGTH);
    len = 100;
    CHECK_RC(precopy_frame_encode(&frames[1], 4096, fbuf, &len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 12 + 8 + 4096);
    len = sizeof fbuf;
    CHECK_RC(precopy_frame_encode(&frames[0], 1000, fbuf, &len), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_frame_encode(NULL, 4096, fbuf, &len), PRECOPY_ERR_NULL);

    /* decode: truncated, corrupt, unknown kind */
    len = sizeof fbuf;
    OK(precopy_frame_encode(&frames[3], 4096, fbuf, &len));
    const size_t flen = len;
    precopy_frame_t f;
    CHECK_RC(precopy_frame_decode(fbuf, 5, 4096, &f, &consumed), PRECOPY_ERR_TRUNCATED);
    CHECK(consumed == 12);
    CHECK_RC(precopy_frame_decode(fbuf, flen - 1, 4096, &f, &consumed), PRECOPY_ERR_TRUNCATED);
    CHECK(consumed == flen);
    fbuf[flen - 1] ^= 0x10;
    CHECK_RC(precopy_frame_decode(fbuf, flen, 4096, &f, &consumed), PRECOPY_ERR_CHECKSUM);
    fbuf[flen - 1] ^= 0x10;
    fbuf[0] = 10;
    CHECK_RC(precopy_frame_decode(fbuf, flen, 4096, &f, &consumed), PRECOPY_ERR_BAD_FRAME);
    fbuf[0] = PRECOPY_FRAME_DELTA;
    fbuf[1] = 1; /* reserved */
    CHECK_RC(precopy_frame_decode(fbuf, flen, 4096, &f, &consumed), PRECOPY_ERR_BAD_FRAME);
    fbuf[1] = 0;
    OK(precopy_frame_decode(fbuf, flen, 4096, &f, &consumed));
    /* a delta frame longer than a 512-byte page allows */
    len = sizeof fbuf;
    OK(precopy_frame_encode(&frames[1], 4096, fbuf, &len));
    CHECK_RC(precopy_frame_decode(fbuf, len, 512, &f, &consumed), PRECOPY_ERR_BAD_FRAME);
    CHECK_RC(precopy_frame_decode(NULL, 12, 4096, &f, &consumed), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_frame_decode(fbuf, len, 4096, NULL, &consumed), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_frame_decode(fbuf, len, 4096, &f, NULL), PRECOPY_ERR_NULL);

    /* digest */
    static precopy_digest_t d1, d2, dz;
    uint64_t lo1, hi1, lo2, hi2;
    OK(precopy_digest_init(&d1));
    OK(precopy_digest_init(&d2));
    OK(precopy_digest_update(&d1, page, 4096));
    OK(precopy_digest_update(&d2, page, 4096));
    OK(precopy_digest_finish(&d1, &lo1, &hi1));
    OK(precopy_digest_finish(&d2, &lo2, &hi2));
    CHECK(lo1 == lo2 && hi1 == hi2 && (lo1 | hi1) != 0);
    OK(precopy_digest_update(&d2, page, 4096));
    OK(precopy_digest_finish(&d2, &lo2, &hi2));
    CHECK(lo1 != lo2 || hi1 != hi2);
    CHECK_RC(precopy_digest_update(&dz, page, 4096), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_digest_finish(&dz, &lo1, &hi1), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_digest_init((precopy_digest_t *)((unsigned char *)&dz + 8)),
             PRECOPY_ERR_MISALIGNED);
    CHECK_RC(precopy_digest_update(&d1, NULL, 4096), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_digest_finish(&d1, NULL, &hi1), PRECOPY_ERR_NULL);
}

/* ---- stream decoder ---------------------------------------------------------------- */

static size_t put_frame(uint8_t *at, uint32_t kind, uint32_t round, uint64_t page,
                        uint64_t pages, const uint8_t *data, size_t data_len) {
    precopy_frame_t f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.round = round;
    f.page = page;
    f.pages = pages;
    f.data = data;
    f.data_len = data_len;
    size_t len = 8200;
    OK(precopy_frame_encode(&f, 4096, at, &len));
    return len;
}

static size_t put_header(uint8_t *at, uint32_t features, uint32_t page_size) {
    precopy_stream_header_t h;
    memset(&h, 0, sizeof h);
    h.features = features;
    h.page_size = page_size;
    h.nregions = 2;
    h.regions[0] = regions[0];
    h.regions[1] = regions[1];
    if (page_size != 4096) {
        h.nregions = 1;
        h.regions[0].guest_addr = 0;
        h.regions[0].len = 4 * (uint64_t)page_size;
    }
    size_t len = PRECOPY_MAX_STREAM_HEADER_LEN;
    OK(precopy_stream_header_encode(&h, at, &len));
    return len;
}

/* Feeds `len` bytes in pieces of `piece` bytes; returns the first non-MORE error (or
 * PRECOPY_OK) and counts events. */
static int feed(precopy_decoder_t *dec, const uint8_t *bytes, size_t len, size_t piece,
                int *events) {
    for (size_t off = 0; off < len; off += piece) {
        const uint8_t *in = bytes + off;
        size_t in_len = len - off < piece ? len - off : piece;
        for (;;) {
            precopy_event_t ev;
            int rc = precopy_decoder_next(dec, &in, &in_len, &ev);
            if (rc == PRECOPY_MORE) {
                CHECK(in_len == 0);
                break;
            }
            if (rc != PRECOPY_OK) {
                return rc;
            }
            CHECK(ev.kind == PRECOPY_EVENT_HEADER || ev.kind == PRECOPY_EVENT_FRAME);
            (*events)++;
        }
    }
    return PRECOPY_OK;
}

/* CRC-32 (IEEE, reflected, as the stream header's checksum). */
static uint32_t crc32_ieee(const uint8_t *p, size_t len) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

/* Rewrites the header's trailing CRC after a test changed its bytes. */
static void reseal_header(uint8_t *h, size_t len) {
    uint32_t crc = crc32_ieee(h, len - 4);
    for (int i = 0; i < 4; i++) {
        h[len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    }
}

static void test_streams(void) {
    section("wire: multi-stream headers, page ownership");
    precopy_stream_header_t h, d;
    memset(&h, 0, sizeof h);
    h.page_size = 4096;
    h.nregions = 2;
    h.regions[0] = regions[0];
    h.regions[1] = regions[1];
    static uint8_t buf[PRECOPY_MAX_STREAM_HEADER_LEN], bad[PRECOPY_MAX_STREAM_HEADER_LEN];
    size_t len, consumed;

    /* index and count round-trip (bytes 38 and 39 of the header) */
    static const uint8_t pairs[][2] = {{0, 1}, {2, 3}, {0, 4}, {3, 4}, {254, 255}, {0, 255}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        h.stream_index = pairs[i][0];
        h.stream_count = pairs[i][1];
        len = sizeof buf;
        OK(precopy_stream_header_encode(&h, buf, &len));
        CHECK(buf[8] == 2 && buf[9] == 0); /* format version 2 */
        CHECK(buf[38] == pairs[i][0] && buf[39] == pairs[i][1]);
        memset(&d, 0xcc, sizeof d);
        OK(precopy_stream_header_decode(buf, len, &d, &consumed));
        CHECK(consumed == len && d.reserved == 0);
        CHECK(d.stream_index == pairs[i][0] && d.stream_count == pairs[i][1]);
    }
    /* count 0 is the single stream when encoding; index >= count is refused */
    h.stream_index = 0;
    h.stream_count = 0;
    len = sizeof buf;
    OK(precopy_stream_header_encode(&h, buf, &len));
    CHECK(buf[38] == 0 && buf[39] == 1);
    static const uint8_t refused[][2] = {{1, 0}, {1, 1}, {3, 3}, {4, 3}, {255, 255}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        h.stream_index = refused[i][0];
        h.stream_count = refused[i][1];
        len = sizeof buf;
        CHECK_RC(precopy_stream_header_encode(&h, buf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    }
    h.stream_index = 0;
    h.stream_count = 2;
    h.reserved = 1;
    CHECK_RC(precopy_stream_header_encode(&h, buf, &len), PRECOPY_ERR_BAD_ARGUMENT);
    h.reserved = 0;

    /* decode: bad index/count in a format-2 header, format-1 headers */
    len = sizeof buf;
    OK(precopy_stream_header_encode(&h, buf, &len)); /* stream 0 of 2 */
    const size_t hlen = len;
    memcpy(bad, buf, hlen);
    reseal_header(bad, hlen);
    OK(precopy_stream_header_decode(bad, hlen, &d, &consumed)); /* reseal is a no-op */
    static const uint8_t bad_pairs[][2] = {{2, 2}, {0, 0}, {1, 0}, {200, 7}};
    for (size_t i = 0; i < sizeof bad_pairs / sizeof bad_pairs[0]; i++) {
        memcpy(bad, buf, hlen);
        bad[38] = bad_pairs[i][0];
        bad[39] = bad_pairs[i][1];
        CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_CHECKSUM);
        reseal_header(bad, hlen);
        CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_BAD_HEADER);
    }
    /* format 1: bytes 38 and 39 must be zero, and mean the single stream */
    memcpy(bad, buf, hlen);
    bad[8] = 1;
    bad[38] = 0;
    bad[39] = 0;
    reseal_header(bad, hlen);
    memset(&d, 0xcc, sizeof d);
    OK(precopy_stream_header_decode(bad, hlen, &d, &consumed));
    CHECK(consumed == hlen && d.stream_index == 0 && d.stream_count == 1 && d.nregions == 2);
    static const uint8_t v1_bad[][2] = {{0, 1}, {1, 0}, {0, 2}};
    for (size_t i = 0; i < sizeof v1_bad / sizeof v1_bad[0]; i++) {
        bad[38] = v1_bad[i][0];
        bad[39] = v1_bad[i][1];
        reseal_header(bad, hlen);
        CHECK_RC(precopy_stream_header_decode(bad, hlen, &d, &consumed), PRECOPY_ERR_BAD_HEADER);
    }
    /* the stream decoder refuses them too, as a header error */
    static uint8_t dbuf[8192];
    static precopy_decoder_t dec;
    OK(precopy_decoder_init(&dec, dbuf, sizeof dbuf));
    const uint8_t *in = bad;
    size_t in_len = hlen;
    precopy_event_t ev;
    CHECK_RC(precopy_decoder_next(&dec, &in, &in_len, &ev), PRECOPY_ERR_BAD_HEADER);
    CHECK_RC(precopy_decoder_finish(&dec), PRECOPY_ERR_BAD_HEADER);

    /* page ownership: chunks of PRECOPY_STREAM_CHUNK_PAGES dealt round-robin */
    CHECK(PRECOPY_STREAM_CHUNK_PAGES == 512);
    static const uint64_t totals[] = {0, 1, 300, 511, 512, 513, 1536, 5000};
    for (uint8_t count = 1; count <= 5; count++) {
        for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++) {
            uint64_t sum = 0;
            for (uint8_t index = 0; index < count; index++) {
                uint64_t pages = 0, counted = 0;
                OK(precopy_stream_pages(index, count, totals[t], &pages));
                for (uint64_t p = 0; p < totals[t]; p++) {
                    int owns = -1;
                    int rc = precopy_stream_owns_page(index, count, p, &owns);
                    if (rc != PRECOPY_OK || owns != ((p / 512) % count == index)) {
                        CHECK_RC(rc, PRECOPY_OK);
                        CHECK(owns == ((p / 512) % count == index));
                    }
                    counted += (uint64_t)(owns == 1);
                }
                CHECK(pages == counted);
                sum += pages;
            }
            CHECK(sum == totals[t]);
        }
    }
    int owns = -1;
    OK(precopy_stream_owns_page(0, 0, 123456, &owns)); /* count 0: the single stream */
    CHECK(owns == 1);
    OK(precopy_stream_owns_page(1, 3, 512 * 7, &owns)); /* chunk 7: stream 1 of 3 */
    CHECK(owns == 1);
    OK(precopy_stream_owns_page(2, 3, 512 * 7 - 1, &owns)); /* chunk 6: stream 0 */
    CHECK(owns == 0);
    uint64_t pages = 7;
    OK(precopy_stream_pages(0, 0, 1000, &pages));
    CHECK(pages == 1000);
    OK(precopy_stream_pages(1, 2, 1000, &pages));
    CHECK(pages == 1000 - 512);
    CHECK_RC(precopy_stream_owns_page(2, 2, 0, &owns), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_stream_owns_page(1, 0, 0, &owns), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_stream_owns_page(0, 1, 0, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_stream_pages(5, 4, 100, &pages), PRECOPY_ERR_BAD_ARGUMENT);
    CHECK_RC(precopy_stream_pages(0, 1, 100, NULL), PRECOPY_ERR_NULL);

    /* a stream's digest is the memory digest of only its pages, in page order: with
     * one stream it is the whole digest, and the pages of stream 1 of 2 in a 1024-page
     * guest are pages 512..1023 */
    static uint8_t mem[1024][64];
    for (size_t p = 0; p < 1024; p++) {
        fill_text(mem[p], sizeof mem[p], (unsigned)p);
    }
    static precopy_digest_t whole, one, upper;
    OK(precopy_digest_init(&whole));
    OK(precopy_digest_init(&one));
    OK(precopy_digest_init(&upper));
    for (uint64_t p = 0; p < 1024; p++) {
        OK(precopy_digest_update(&whole, mem[p], sizeof mem[p]));
        OK(precopy_stream_owns_page(0, 1, p, &owns));
        if (owns) {
            OK(precopy_digest_update(&one, mem[p], sizeof mem[p]));
        }
        OK(precopy_stream_owns_page(1, 2, p, &owns));
        if (owns) {
            CHECK(p >= 512);
            OK(precopy_digest_update(&upper, mem[p], sizeof mem[p]));
        }
    }
    uint64_t wlo, whi, olo, ohi, ulo, uhi;
    OK(precopy_digest_finish(&whole, &wlo, &whi));
    OK(precopy_digest_finish(&one, &olo, &ohi));
    OK(precopy_digest_finish(&upper, &ulo, &uhi));
    CHECK(wlo == olo && whi == ohi);
    CHECK(wlo != ulo || whi != uhi);

    /* the stream decoder refuses pages of another stream: in a 1100-page guest,
     * stream 1 of 2 carries pages 512..1023 only */
    memset(&h, 0, sizeof h);
    h.page_size = 4096;
    h.nregions = 1;
    h.regions[0].guest_addr = 0;
    h.regions[0].len = 1100 * PAGE;
    h.stream_index = 1;
    h.stream_count = 2;
    static uint8_t st[20000], page[4096];
    fill_text(page, sizeof page, 5);
    static const struct {
        uint32_t kind;
        uint64_t page, pages;
        int want;
    } cases[] = {
        {PRECOPY_FRAME_RAW, 512, 0, PRECOPY_OK},
        {PRECOPY_FRAME_RAW, 1023, 0, PRECOPY_OK},
        {PRECOPY_FRAME_RAW, 511, 0, PRECOPY_ERR_STREAM},
        {PRECOPY_FRAME_RAW, 1024, 0, PRECOPY_ERR_STREAM},
        {PRECOPY_FRAME_RAW, 0, 0, PRECOPY_ERR_STREAM},
        {PRECOPY_FRAME_ZERO_RUN, 512, 512, PRECOPY_OK},
        {PRECOPY_FRAME_ZERO_RUN, 1000, 30, PRECOPY_ERR_STREAM}, /* crosses into chunk 2 */
        {PRECOPY_FRAME_ZERO_RUN, 500, 20, PRECOPY_ERR_STREAM},  /* starts in chunk 0 */
        {PRECOPY_FRAME_ZERO_RUN, 1050, 10, PRECOPY_ERR_STREAM},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = PRECOPY_MAX_STREAM_HEADER_LEN;
        OK(precopy_stream_header_encode(&h, st, &n));
        const uint64_t carried = cases[i].kind == PRECOPY_FRAME_RAW ? 1 : cases[i].pages;
        n += put_frame(st + n, PRECOPY_FRAME_ROUND_BEGIN, 0, 0, carried, NULL, 0);
        if (cases[i].kind == PRECOPY_FRAME_RAW) {
            n += put_frame(st + n, PRECOPY_FRAME_RAW, 0, cases[i].page, 0, page, 4096);
        } else {
            n += put_frame(st + n, PRECOPY_FRAME_ZERO_RUN, 0, cases[i].page, cases[i].pages,
                           NULL, 0);
        }
        n += put_frame(st + n, PRECOPY_FRAME_ROUND_END, 0, 0, carried, NULL, 0);
        OK(precopy_decoder_init(&dec, dbuf, sizeof dbuf));
        int events = 0;
        CHECK_RC(feed(&dec, st, n, 333, &events), cases[i].want);
        CHECK(events == (cases[i].want == PRECOPY_OK ? 4 : 2));
        precopy_stream_header_t got;
        OK(precopy_decoder_header(&dec, &got));
        CHECK(got.stream_index == 1 && got.stream_count == 2);
        if (cases[i].want != PRECOPY_OK) {
            char msg[256];
            size_t mlen = sizeof msg;
            OK(precopy_decoder_error_message(&dec, msg, &mlen));
            CHECK(strstr(msg, "another stream") != NULL && strstr(msg, "frame 1") != NULL);
        }
    }
}

static void test_decoder(void) {
    section("wire: stream decoder (pieces, stream rules, errors)");
    static uint8_t dbuf[70000], st[40000], page[4096];
    size_t need = 0;
    OK(precopy_decoder_buffer_len(4096, &need));
    CHECK(need == 12 + 16 + 4096);
    size_t need_small = 0;
    OK(precopy_decoder_buffer_len(512, &need_small));
    CHECK(need_small == PRECOPY_MAX_STREAM_HEADER_LEN);
    CHECK_RC(precopy_decoder_buffer_len(100, &need), PRECOPY_ERR_BAD_PAGE_SIZE);
    CHECK_RC(precopy_decoder_buffer_len(4096, NULL), PRECOPY_ERR_NULL);

    static precopy_decoder_t dec, zeroed;
    CHECK_RC(precopy_decoder_init(&dec, dbuf, 100), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(precopy_decoder_init(&dec, NULL, 5000), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_init(NULL, dbuf, 5000), PRECOPY_ERR_NULL);
    const uint8_t *in = st;
    size_t in_len = 1;
    precopy_event_t ev;
    CHECK_RC(precopy_decoder_next(&zeroed, &in, &in_len, &ev), PRECOPY_ERR_UNINITIALIZED);

    /* a valid stream: header, round 0 (a zero run, a raw page), switchover, round 1
     * (empty), completion */
    fill_text(page, sizeof page, 11);
    size_t n = put_header(st, PRECOPY_FEATURE_LZ4, 4096);
    const size_t after_header = n;
    n += put_frame(st + n, PRECOPY_FRAME_ROUND_BEGIN, 0, 0, 3, NULL, 0);
    const size_t after_round_begin = n;
    n += put_frame(st + n, PRECOPY_FRAME_ZERO_RUN, 0, 10, 2, NULL, 0);
    n += put_frame(st + n, PRECOPY_FRAME_RAW, 0, 299, 0, page, 4096);
    n += put_frame(st + n, PRECOPY_FRAME_ROUND_END, 0, 0, 3, NULL, 0);
    n += put_frame(st + n, PRECOPY_FRAME_SWITCHOVER, 0, 0, 0, NULL, 0);
    n += put_frame(st + n, PRECOPY_FRAME_ROUND_BEGIN, 1, 0, 0, NULL, 0);
    n += put_frame(st + n, PRECOPY_FRAME_ROUND_END, 1, 0, 0, NULL, 0);
    n += put_frame(st + n, PRECOPY_FRAME_COMPLETE, 0, 0, 300, NULL, 0);
    static const size_t pieces[] = {1, 7, 100, 4096, 40000};
    for (size_t i = 0; i < 5; i++) {
        OK(precopy_decoder_init(&dec, dbuf, need + 4096));
        precopy_stream_header_t h;
        CHECK_RC(precopy_decoder_header(&dec, &h), PRECOPY_ERR_TRUNCATED);
        int events = 0;
        OK(feed(&dec, st, n, pieces[i], &events));
        CHECK(events == 9);
        OK(precopy_decoder_header(&dec, &h));
        CHECK(h.page_size == 4096 && h.nregions == 2 && h.features == PRECOPY_FEATURE_LZ4);
        OK(precopy_decoder_finish(&dec));
        char msg[64] = "x";
        size_t len = sizeof msg;
        OK(precopy_decoder_error_message(&dec, msg, &len));
        CHECK(len == 0 && msg[0] == '\0');
    }
    /* the raw page's payload, split over pieces, comes out whole */
    OK(precopy_decoder_init(&dec, dbuf, need));
    in = st;
    in_len = after_round_begin + 1000;
    int frames = 0;
    while (precopy_decoder_next(&dec, &in, &in_len, &ev) == PRECOPY_OK) {
        frames++;
    }
    in_len = n - (size_t)(in - st);
    const uint8_t *payload = NULL;
    while (precopy_decoder_next(&dec, &in, &in_len, &ev) == PRECOPY_OK) {
        if (ev.frame.kind == PRECOPY_FRAME_RAW) {
            payload = ev.frame.data;
            CHECK(ev.frame.page == 299 && ev.frame.data_len == 4096);
            CHECK(payload != NULL && memcmp(payload, page, 4096) == 0);
        }
    }
    CHECK(payload != NULL);
    OK(precopy_decoder_finish(&dec));

    /* ends early: inside a frame, or between frames before the completion */
    OK(precopy_decoder_init(&dec, dbuf, need));
    int events = 0;
    OK(feed(&dec, st, after_round_begin + 5, 1000, &events));
    CHECK_RC(precopy_decoder_finish(&dec), PRECOPY_ERR_TRUNCATED);
    OK(precopy_decoder_init(&dec, dbuf, need));
    OK(feed(&dec, st, after_round_begin, 1000, &events));
    CHECK_RC(precopy_decoder_finish(&dec), PRECOPY_ERR_STREAM);
    char msg[256];
    size_t len = sizeof msg;
    OK(precopy_decoder_error_message(&dec, msg, &len));
    CHECK(strstr(msg, "completion") != NULL);
    len = 0;
    CHECK_RC(precopy_decoder_error_message(&dec, NULL, &len), PRECOPY_ERR_BUFFER_TOO_SMALL);
    CHECK(len == strlen(msg));

    /* corruption in frame 2: a checksum error naming the frame and byte; sticky */
    static uint8_t bad[40000];
    memcpy(bad, st, n);
    bad[after_round_begin + 20] ^= 0x01;
    OK(precopy_decoder_init(&dec, dbuf, need));
    events = 0;
    CHECK_RC(feed(&dec, bad, n, 333, &events), PRECOPY_ERR_CHECKSUM);
    CHECK(events == 2);
    in = st;
    in_len = 10;
    CHECK_RC(precopy_decoder_next(&dec, &in, &in_len, &ev), PRECOPY_ERR_CHECKSUM);
    CHECK_RC(precopy_decoder_finish(&dec), PRECOPY_ERR_CHECKSUM);
    len = sizeof msg;
    OK(precopy_decoder_error_message(&dec, msg, &len));
    CHECK(strstr(msg, "frame 1") != NULL && strstr(msg, "checksum") != NULL);
    printf("    corrupt byte: \"%s\"\n", msg);

    /* stream rules: a page outside a round, past the end, an unannounced codec,
     * rounds out of order, bytes after the completion */
    size_t m = put_header(bad, PRECOPY_FEATURE_LZ4, 4096);
    m += put_frame(bad + m, PRECOPY_FRAME_RAW, 0, 1, 0, page, 4096);
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, m, 5000, &events), PRECOPY_ERR_STREAM);
    len = sizeof msg;
    OK(precopy_decoder_error_message(&dec, msg, &len));
    CHECK(strstr(msg, "outside a round") != NULL);
    printf("    page outside a round: \"%s\"\n", msg);

    m = after_round_begin;
    memcpy(bad, st, m);
    m += put_frame(bad + m, PRECOPY_FRAME_RAW, 0, 300, 0, page, 4096);
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, m, 5000, &events), PRECOPY_ERR_STREAM);

    m = after_round_begin;
    m += put_frame(bad + m, PRECOPY_FRAME_DELTA, 0, 5, 0, page, 10);
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, m, 5000, &events), PRECOPY_ERR_STREAM);
    len = sizeof msg;
    OK(precopy_decoder_error_message(&dec, msg, &len));
    CHECK(strstr(msg, "announce") != NULL);

    m = after_header;
    m += put_frame(bad + m, PRECOPY_FRAME_ROUND_BEGIN, 1, 0, 0, NULL, 0);
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, m, 5000, &events), PRECOPY_ERR_STREAM);

    memcpy(bad, st, n);
    bad[n] = 0;
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, n + 1, 5000, &events), PRECOPY_ERR_STREAM);

    /* a header for 64 KiB pages into a buffer sized for 4 KiB pages */
    m = put_header(bad, 0, 65536);
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, bad, m, 5000, &events), PRECOPY_ERR_BUFFER_TOO_SMALL);
    /* not a precopy stream */
    OK(precopy_decoder_init(&dec, dbuf, need));
    CHECK_RC(feed(&dec, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, 18, &events),
             PRECOPY_ERR_BAD_HEADER);

    /* bad arguments */
    OK(precopy_decoder_init(&dec, dbuf, need));
    in = NULL;
    in_len = 0;
    CHECK_RC(precopy_decoder_next(&dec, &in, &in_len, &ev), PRECOPY_MORE);
    in_len = 5;
    CHECK_RC(precopy_decoder_next(&dec, &in, &in_len, &ev), PRECOPY_ERR_NULL);
    in = st;
    CHECK_RC(precopy_decoder_next(&dec, NULL, &in_len, &ev), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_next(&dec, &in, NULL, &ev), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_next(&dec, &in, &in_len, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_header(&dec, NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_finish(NULL), PRECOPY_ERR_NULL);
    CHECK_RC(precopy_decoder_finish(&zeroed), PRECOPY_ERR_UNINITIALIZED);
    CHECK_RC(precopy_decoder_error_message(&dec, msg, NULL), PRECOPY_ERR_NULL);
}

/* ---- a whole migration in C: bitmap, scheduler, codecs and frames together ---------- */

#define GUEST_PAGES 64
static uint8_t src_mem[GUEST_PAGES][4096], dst_mem[GUEST_PAGES][4096];
static uint8_t sent[GUEST_PAGES][4096]; /* the source's delta bases */
static int has_base[GUEST_PAGES];
static uint8_t stream[GUEST_PAGES * 8 * 4200];

/* Encodes page p as the cheapest frame into the stream; returns bytes written. */
static size_t send_page(uint64_t p, uint8_t *at, size_t room, int counts[4]) {
    static uint8_t payload[8192];
    precopy_frame_t f;
    memset(&f, 0, sizeof f);
    f.page = p;
    int zero = 0;
    OK(precopy_page_is_zero(src_mem[p], 4096, &zero));
    size_t n = 512; /* delta threshold: an eighth of a page */
    if (zero) {
        f.kind = PRECOPY_FRAME_ZERO_RUN;
        f.pages = 1;
        counts[0]++;
    } else if (has_base[p] && precopy_delta_encode(sent[p], src_mem[p], 4096, payload, &n) ==
                                  PRECOPY_OK) {
        f.kind = PRECOPY_FRAME_DELTA;
        OK(precopy_base_hash(sent[p], 4096, &f.base_hash));
        f.data = payload;
        f.data_len = n;
        counts[1]++;
    } else {
        n = sizeof payload;
        OK(precopy_lz4_compress(&lz4, src_mem[p], 4096, payload, &n));
        if (n < 4096) {
            f.kind = PRECOPY_FRAME_LZ4;
            f.data = payload;
            f.data_len = n;
            counts[2]++;
        } else {
            f.kind = PRECOPY_FRAME_RAW;
            f.data = src_mem[p];
            f.data_len = 4096;
            counts[3]++;
        }
    }
    /* the base is what the destination will hold: update it for every encoding */
    memcpy(sent[p], src_mem[p], 4096);
    has_base[p] = 1;
    size_t len = room;
    OK(precopy_frame_encode(&f, 4096, at, &len));
    return len;
}

static void test_migration(void) {
    section("end to end: a 64-page migration through frames");
    precopy_region_t r = {0, GUEST_PAGES * 4096};
    static precopy_bitmap_t mbm;
    static uint64_t mwords[1];
    OK(precopy_bitmap_init(&mbm, 4096, &r, 1, mwords, 1));
    /* guest memory: zero, text, random-ish */
    for (int p = 0; p < GUEST_PAGES; p++) {
        if (p % 3 == 0) {
            memset(src_mem[p], 0, 4096);
        } else if (p % 3 == 1) {
            fill_text(src_mem[p], 4096, (unsigned)p);
        } else {
            unsigned x = (unsigned)p * 2654435761u;
            for (int i = 0; i < 4096; i++) {
                src_mem[p][i] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
            }
        }
    }
    memset(dst_mem, 0xa5, sizeof dst_mem);
    OK(precopy_bitmap_mark_pages(&mbm, 0, GUEST_PAGES)); /* the bulk round sends all */

    precopy_policy_t pol;
    precopy_scheduler_t s;
    OK(precopy_policy_default(&pol));
    pol.non_memory_downtime_ns = 0;
    pol.downtime_limit_ns = 100000; /* 100 us: a few live rounds before switching over */
    OK(precopy_scheduler_init(&s, &pol, GUEST_PAGES, 4096, 0));

    size_t at = 0;
    precopy_stream_header_t sh;
    memset(&sh, 0, sizeof sh);
    sh.features = PRECOPY_FEATURE_LZ4 | PRECOPY_FEATURE_DELTA;
    sh.page_size = 4096;
    sh.nregions = 1;
    sh.regions[0] = r;
    size_t hlen = sizeof stream;
    OK(precopy_stream_header_encode(&sh, stream, &hlen));
    at = hlen;
    int counts[4] = {0};
    uint64_t now = 0;
    uint32_t round = 0;
    precopy_round_outcome_t o;
    for (;;) {
        precopy_frame_t f = {PRECOPY_FRAME_ROUND_BEGIN, round, 0, 0, 0, 0, 0, NULL, 0};
        size_t len = sizeof stream - at;
        OK(precopy_frame_encode(&f, 4096, stream + at, &len));
        at += len;
        size_t round_start = at;
        uint64_t cursor = 0, pages_sent = 0;
        int rc;
        do {
            uint64_t batch[16];
            size_t count = 16;
            rc = precopy_bitmap_harvest(&mbm, &cursor, batch, &count);
            for (size_t i = 0; i < count; i++) {
                at += send_page(batch[i], stream + at, sizeof stream - at, counts);
            }
            pages_sent += count;
        } while (rc == PRECOPY_MORE);
        f.kind = PRECOPY_FRAME_ROUND_END;
        f.pages = pages_sent;
        len = sizeof stream - at;
        OK(precopy_frame_encode(&f, 4096, stream + at, &len));
        at += len;
        /* the guest writes a few bytes in a few pages meanwhile (fewer each round) */
        uint64_t writes = round < 3 ? 8u >> round : 0;
        for (uint64_t w = 0; w < writes; w++) {
            uint64_t p = (w * 7 + round) % GUEST_PAGES;
            src_mem[p][w * 3] ^= 0x5a;
            OK(precopy_bitmap_mark(&mbm, p));
        }
        uint64_t dirty_now = 0;
        OK(precopy_bitmap_dirty_count(&mbm, &dirty_now));
        now += 1000000;
        o = round_done(&s, now, pages_sent, at - round_start, dirty_now);
        round++;
        if (o.decision != PRECOPY_DECISION_CONTINUE) {
            break;
        }
    }
    CHECK(o.decision == PRECOPY_DECISION_SWITCH_OVER && round >= 2);
    /* paused: the final round */
    precopy_frame_t f = {PRECOPY_FRAME_SWITCHOVER, 0, 0, 0, 0, 0, 0, NULL, 0};
    OK(precopy_bitmap_dirty_count(&mbm, &f.pages));
    size_t len = sizeof stream - at;
    OK(precopy_frame_encode(&f, 4096, stream + at, &len));
    at += len;
    uint64_t cursor = 0;
    uint64_t batch[GUEST_PAGES];
    size_t count = GUEST_PAGES;
    OK(precopy_bitmap_harvest(&mbm, &cursor, batch, &count));
    f.kind = PRECOPY_FRAME_ROUND_BEGIN;
    f.round = round;
    f.pages = count;
    len = sizeof stream - at;
    OK(precopy_frame_encode(&f, 4096, stream + at, &len));
    at += len;
    for (size_t i = 0; i < count; i++) {
        at += send_page(batch[i], stream + at, sizeof stream - at, counts);
    }
    f.kind = PRECOPY_FRAME_ROUND_END;
    len = sizeof stream - at;
    OK(precopy_frame_encode(&f, 4096, stream + at, &len));
    at += len;
    static precopy_digest_t dg;
    OK(precopy_digest_init(&dg));
    for (int p = 0; p < GUEST_PAGES; p++) {
        OK(precopy_digest_update(&dg, src_mem[p], 4096));
    }
    f.kind = PRECOPY_FRAME_COMPLETE;
    f.pages = GUEST_PAGES;
    OK(precopy_digest_finish(&dg, &f.digest_lo, &f.digest_hi));
    len = sizeof stream - at;
    OK(precopy_frame_encode(&f, 4096, stream + at, &len));
    at += len;

    /* destination: the header, then frame by frame, fed in chunks of 1000 bytes */
    precopy_stream_header_t dh;
    size_t hused = 0;
    OK(precopy_stream_header_decode(stream, at, &dh, &hused));
    CHECK(hused == hlen && dh.nregions == 1 && dh.regions[0].len == GUEST_PAGES * 4096);
    static uint8_t inbuf[8400];
    size_t have = 0, pos = hused;
    int complete = 0, frames = 0;
    uint64_t digest_lo = 0, digest_hi = 0;
    while (!complete) {
        precopy_frame_t g;
        size_t used = 0;
        int rc = precopy_frame_decode(inbuf, have, 4096, &g, &used);
        if (rc == PRECOPY_ERR_TRUNCATED) {
            size_t chunk = at - pos < 1000 ? at - pos : 1000;
            CHECK(chunk > 0 && have + chunk <= sizeof inbuf);
            if (chunk == 0 || have + chunk > sizeof inbuf) {
                break;
            }
            memcpy(inbuf + have, stream + pos, chunk);
            have += chunk;
            pos += chunk;
            continue;
        }
        OK(rc);
        if (rc != PRECOPY_OK) {
            break;
        }
        frames++;
        switch (g.kind) {
        case PRECOPY_FRAME_ZERO_RUN:
            for (uint64_t p = g.page; p < g.page + g.pages; p++) {
                OK(precopy_page_decode(PRECOPY_ENCODING_ZERO, NULL, 0, dst_mem[p], 4096));
            }
            break;
        case PRECOPY_FRAME_RAW:
            OK(precopy_page_decode(PRECOPY_ENCODING_RAW, g.data, g.data_len, dst_mem[g.page],
                                   4096));
            break;
        case PRECOPY_FRAME_LZ4:
            OK(precopy_page_decode(PRECOPY_ENCODING_LZ4, g.data, g.data_len, dst_mem[g.page],
                                   4096));
            break;
        case PRECOPY_FRAME_DELTA: {
            uint64_t h = 0;
            OK(precopy_base_hash(dst_mem[g.page], 4096, &h));
            CHECK(h == g.base_hash); /* delta base agreement */
            OK(precopy_page_decode(PRECOPY_ENCODING_DELTA, g.data, g.data_len,
                                   dst_mem[g.page], 4096));
            break;
        }
        case PRECOPY_FRAME_COMPLETE:
            complete = 1;
            digest_lo = g.digest_lo;
            digest_hi = g.digest_hi;
            break;
        default:
            break;
        }
        memmove(inbuf, inbuf + used, have - used);
        have -= used;
    }
    CHECK(complete && pos == at && have == 0);
    CHECK(memcmp(src_mem, dst_mem, sizeof src_mem) == 0);
    OK(precopy_digest_init(&dg));
    for (int p = 0; p < GUEST_PAGES; p++) {
        OK(precopy_digest_update(&dg, dst_mem[p], 4096));
    }
    uint64_t lo = 0, hi = 0;
    OK(precopy_digest_finish(&dg, &lo, &hi));
    CHECK(lo == digest_lo && hi == digest_hi);
    CHECK(counts[0] > 0 && counts[1] > 0 && counts[2] > 0 && counts[3] > 0);

    /* the same stream through the stream decoder (rules checked), in pieces of 1..4999 */
    static precopy_decoder_t dec;
    static uint8_t dbuf[4200];
    static uint8_t dst2[GUEST_PAGES][4096];
    memset(dst2, 0x3c, sizeof dst2);
    OK(precopy_decoder_init(&dec, dbuf, sizeof dbuf));
    size_t off = 0, piece = 1;
    int events = 0, rc = PRECOPY_OK;
    while (off < at && rc != PRECOPY_ERR_NULL) {
        const uint8_t *in = stream + off;
        size_t in_len = at - off < piece ? at - off : piece;
        off += in_len;
        piece = piece * 7 % 4999 + 1;
        precopy_event_t ev;
        while ((rc = precopy_decoder_next(&dec, &in, &in_len, &ev)) == PRECOPY_OK) {
            events++;
            const precopy_frame_t *g = &ev.frame;
            if (ev.kind != PRECOPY_EVENT_FRAME) {
                continue;
            }
            if (g->kind == PRECOPY_FRAME_ZERO_RUN) {
                memset(dst2[g->page], 0, 4096 * g->pages);
            } else if (g->kind == PRECOPY_FRAME_RAW || g->kind == PRECOPY_FRAME_LZ4 ||
                       g->kind == PRECOPY_FRAME_DELTA) {
                uint32_t enc = g->kind == PRECOPY_FRAME_RAW   ? PRECOPY_ENCODING_RAW
                               : g->kind == PRECOPY_FRAME_LZ4 ? PRECOPY_ENCODING_LZ4
                                                              : PRECOPY_ENCODING_DELTA;
                OK(precopy_page_decode(enc, g->data, g->data_len, dst2[g->page], 4096));
            }
        }
        CHECK_RC(rc, PRECOPY_MORE);
        if (rc != PRECOPY_MORE) {
            break;
        }
    }
    OK(precopy_decoder_finish(&dec));
    CHECK(events == frames + 1); /* the header, then every frame */
    CHECK(memcmp(src_mem, dst2, sizeof src_mem) == 0);
    printf("    %u live rounds + final, %d frames, %zu stream bytes; pages: %d zero, %d delta, "
           "%d lz4, %d raw; memory and digest equal (one-shot frames and stream decoder)\n",
           round, frames, at, counts[0], counts[1], counts[2], counts[3]);
}

int main(void) {
    printf("precopy C API test (ABI %u)\n", precopy_abi_version());
    test_status();
    test_bitmap_layout();
    test_bitmap_mark();
    test_bitmap_harvest();
    test_bitmap_words();
    test_kvm();
    test_bitmap_threads();
    test_policy();
    test_scheduler();
    test_codecs();
    test_wire();
    test_decoder();
    test_streams();
    test_migration();
    section(NULL);
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
