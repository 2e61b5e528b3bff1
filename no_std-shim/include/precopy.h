/*
 * precopy.h: the C API of precopy, dirty-page tracking and pre-copy live migration of
 * virtual-machine memory. Link with libprecopy.a, a no_std Rust static library: no
 * allocator, no global state; the host provides memcpy, memmove, memset and memcmp.
 *
 * Kept in sync with the Rust sources (no_std-shim/src) by no_std-shim/check-header.py
 * (run by run-c-test.sh): every function, struct field and constant below is compared
 * with the Rust declarations.
 *
 * Conventions, the same for every function:
 *  - Functions return a status: PRECOPY_OK (0), a positive status that is not an
 *    error (PRECOPY_MORE: call again; PRECOPY_DELTA_GAVE_UP), or a negative
 *    PRECOPY_ERR_* code; precopy_strerror() describes each.
 *  - No allocation. State lives in fixed-size structs the caller allocates anywhere
 *    (stack, static, heap): precopy_bitmap_t, precopy_kvm_slots_t,
 *    precopy_scheduler_t, precopy_decoder_t, precopy_coordinator_t, and the 64-byte
 *    aligned precopy_lz4_t, precopy_digest_t, precopy_source_t and precopy_applier_t
 *    (static, stack or aligned_alloc); the engines' pages and buffers live in storage
 *    the caller sizes with precopy_storage_needs. Their contents are opaque; use
 *    them after their _init call; they own no resources (no _fini). Every output goes
 *    into caller buffers with explicit lengths.
 *  - NULL pointers, misaligned pointers, short buffers, bad lengths, out-of-range
 *    pages, undefined enumeration values and state never initialized return an error
 *    code (state blobs carry a magic number; zero a blob before use to make the
 *    "never initialized" check reliable). What the library cannot check is each
 *    function's contract: a pointer points at as many elements as its length says.
 *  - Threads: the bitmap's mark, harvest and import functions may run concurrently on
 *    one bitmap (lock-free); everything else needs its state to itself.
 */
#ifndef PRECOPY_H
#define PRECOPY_H

#include <stddef.h>
#include <stdint.h>

/* precopy_lz4_t and precopy_digest_t hold 64-byte aligned state. */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define PRECOPY_ALIGN64 alignas(64)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define PRECOPY_ALIGN64 _Alignas(64)
#elif defined(__GNUC__)
#define PRECOPY_ALIGN64 __attribute__((aligned(64)))
#else
#error "precopy.h needs C11, C++11 or GNU C (64-byte aligned types)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versioning ------------------------------------------------------------------ */

/* Compare with precopy_abi_version() at startup. */
#define PRECOPY_ABI_VERSION 1

/* The library's PRECOPY_ABI_VERSION. */
uint32_t precopy_abi_version(void);

/* ---- Status codes ---------------------------------------------------------------- */

#define PRECOPY_OK 0
/* Success, but the output buffer filled first: call again (precopy_bitmap_harvest). */
#define PRECOPY_MORE 1
#define PRECOPY_ERR_NULL (-1)                /* a required pointer is NULL */
#define PRECOPY_ERR_MISALIGNED (-2)          /* a pointer is misaligned for its type */
#define PRECOPY_ERR_BUFFER_TOO_SMALL (-3)    /* an output buffer is too small */
#define PRECOPY_ERR_BAD_LENGTH (-4)          /* a length or count is out of range */
#define PRECOPY_ERR_UNINITIALIZED (-5)       /* state not initialized by its _init */
#define PRECOPY_ERR_BAD_ARGUMENT (-6)        /* undefined enumeration value, bad stream */
#define PRECOPY_ERR_BAD_PAGE_SIZE (-7)       /* page size not a (supported) power of 2 */
#define PRECOPY_ERR_BAD_REGION (-8)          /* region empty, unaligned or wrapping */
#define PRECOPY_ERR_OVERLAPPING_REGIONS (-9) /* two regions overlap */
#define PRECOPY_ERR_TOO_MANY_REGIONS (-10)   /* more than PRECOPY_MAX_REGIONS */
#define PRECOPY_ERR_PAGE_OUT_OF_RANGE (-11)  /* page index past the end of the guest */
#define PRECOPY_ERR_ADDRESS_OUT_OF_RANGE (-12) /* guest address in no region */
#define PRECOPY_ERR_UNKNOWN_SLOT (-13)       /* KVM slot id not in the slot table */
#define PRECOPY_ERR_SLOT_OFFSET (-14)        /* KVM log bit / ring entry past its slot */
#define PRECOPY_ERR_BAD_SLOT (-15)           /* KVM slot not contiguous, or table full */
#define PRECOPY_ERR_BAD_POLICY (-16)         /* policy field invalid */
#define PRECOPY_ERR_BAD_GUEST (-17)          /* zero pages or zero page size */
#define PRECOPY_ERR_CORRUPT_PAGE (-18)       /* LZ4 or delta page data corrupt */
#define PRECOPY_ERR_CHECKSUM (-19)           /* header/frame checksum mismatch */
#define PRECOPY_ERR_TRUNCATED (-20)          /* input ends inside a header/frame */
#define PRECOPY_ERR_BAD_FRAME (-21)          /* unknown kind, reserved set, bad length */
#define PRECOPY_ERR_BAD_HEADER (-22)         /* stream header malformed (not a stream) */
#define PRECOPY_ERR_UNSUPPORTED (-23)        /* newer format version or features */
#define PRECOPY_ERR_STREAM (-24)             /* frames break the stream's rules */

/* A static, NUL-terminated description of a status code (never NULL). */
const char *precopy_strerror(int code);

/* ---- Dirty bitmap over caller memory --------------------------------------------- */

#define PRECOPY_MAX_REGIONS 64
#define PRECOPY_MAX_KVM_SLOTS 128
#define PRECOPY_BITMAP_SIZE 1664
#define PRECOPY_KVM_SLOTS_SIZE 5760

/* One contiguous range of guest-physical memory. */
typedef struct precopy_region {
    uint64_t guest_addr; /* page-aligned */
    uint64_t len;        /* bytes, a non-zero multiple of the page size */
} precopy_region_t;

/* A dirty bitmap's state (not its words, which the caller provides). Opaque. */
typedef struct precopy_bitmap {
    uint64_t opaque[PRECOPY_BITMAP_SIZE / 8];
} precopy_bitmap_t;

/* A table of KVM memory slots, mapping slot ids to the bitmap's pages. Opaque. */
typedef struct precopy_kvm_slots {
    uint64_t opaque[PRECOPY_KVM_SLOTS_SIZE / 8];
} precopy_kvm_slots_t;

/* One KVM dirty-ring entry: the layout of the kernel's struct kvm_dirty_gfn. */
typedef struct precopy_kvm_dirty_gfn {
    uint32_t flags;  /* KVM_DIRTY_GFN_F_* (not interpreted) */
    uint32_t slot;   /* address space << 16 | slot number */
    uint64_t offset; /* page offset within the slot */
} precopy_kvm_dirty_gfn_t;

/* Words (*words_out) and pages (*pages_out, may be NULL) that a guest layout needs:
 * page_size a power of two, 1 to PRECOPY_MAX_REGIONS non-overlapping regions. */
int precopy_bitmap_storage_words(uint64_t page_size, const precopy_region_t *regions,
                                 size_t nregions, size_t *words_out, uint64_t *pages_out);

/* Initializes *bm, all clean, over the caller's words (8-byte aligned, at least the
 * count precopy_bitmap_storage_words gives; zeroed here; kept alive while bm is used).
 * Pages are numbered densely from 0 in guest address order; holes take no numbers. */
int precopy_bitmap_init(precopy_bitmap_t *bm, uint64_t page_size,
                        const precopy_region_t *regions, size_t nregions, uint64_t *words,
                        size_t nwords);

/* *pages_out = pages tracked. */
int precopy_bitmap_total_pages(const precopy_bitmap_t *bm, uint64_t *pages_out);

/* Marks dense page `page` dirty (after writing it). Wait-free, any thread. */
int precopy_bitmap_mark(const precopy_bitmap_t *bm, uint64_t page);

/* Marks every page touched by guest-physical [addr, addr + len) dirty. Pages inside
 * regions are marked even when part of the range is not (which returns
 * PRECOPY_ERR_ADDRESS_OUT_OF_RANGE). */
int precopy_bitmap_mark_range(const precopy_bitmap_t *bm, uint64_t addr, uint64_t len);

/* Marks dense pages [first_page, first_page + count) dirty (nothing if out of range). */
int precopy_bitmap_mark_pages(const precopy_bitmap_t *bm, uint64_t first_page,
                              uint64_t count);

/* *dirty_out = 1 if page `page` is dirty now, else 0. */
int precopy_bitmap_is_dirty(const precopy_bitmap_t *bm, uint64_t page, int *dirty_out);

/* *count_out = pages dirty now. */
int precopy_bitmap_dirty_count(const precopy_bitmap_t *bm, uint64_t *count_out);

/* Fetch-and-clear of dirty pages from page *cursor on into pages[0..*count), ascending.
 * In: *count = capacity. Out: *count = pages written, *cursor advanced. Returns
 * PRECOPY_OK when the pass reached the end (start a pass with *cursor = 0), or
 * PRECOPY_MORE when `pages` filled first (send them, call again with the same cursor).
 * Pages taken that did not fit are put back: none is lost. Several harvesters may run
 * at once (each dirty page goes to one of them), with any number of markers. */
int precopy_bitmap_harvest(const precopy_bitmap_t *bm, uint64_t *cursor, uint64_t *pages,
                           size_t *count);

/* Fetch-and-clear of raw words [first_word, first_word + nwords) into out (bit i of
 * word w = page 64*w + i); *taken_out (may be NULL) = dirty pages taken. */
int precopy_bitmap_harvest_words(const precopy_bitmap_t *bm, size_t first_word,
                                 uint64_t *out, size_t nwords, uint64_t *taken_out);

/* ORs harvested words back (words[i] onto word first_word + i): pages that could not be
 * sent go back for the next round. Bits past the last page are refused. */
int precopy_bitmap_restore_words(const precopy_bitmap_t *bm, size_t first_word,
                                 const uint64_t *words, size_t nwords);

/* Initializes *slots as an empty KVM slot table for the layout of bitmap *bm. */
int precopy_kvm_slots_init(precopy_kvm_slots_t *slots, const precopy_bitmap_t *bm);

/* Registers KVM slot `slot` covering `pages` pages at guest_addr (tracked memory, no
 * hole). Re-registering an id replaces it. */
int precopy_kvm_slots_insert(precopy_kvm_slots_t *slots, uint32_t slot, uint64_t guest_addr,
                             uint64_t pages);

/* ORs the words KVM_GET_DIRTY_LOG returned for slot `slot` into the bitmap. A bit past
 * the slot's end is refused before anything is marked. */
int precopy_bitmap_import_kvm_log(const precopy_bitmap_t *bm, const precopy_kvm_slots_t *slots,
                                  uint32_t slot, const uint64_t *log, size_t nwords);

/* Marks the pages named by KVM dirty-ring entries; every valid one is marked, the first
 * invalid one (unknown slot, offset past its slot) is then reported. */
int precopy_bitmap_import_kvm_ring(const precopy_bitmap_t *bm, const precopy_kvm_slots_t *slots,
                                   const precopy_kvm_dirty_gfn_t *entries, size_t nentries);

/* ---- Round scheduler ------------------------------------------------------------- */

#define PRECOPY_SCHEDULER_SIZE 512

#define PRECOPY_ON_LIMIT_FAIL 0        /* at a bound: fail (the source keeps running) */
#define PRECOPY_ON_LIMIT_SWITCH_OVER 1 /* at a bound: switch over anyway */

#define PRECOPY_POLICY_DEFAULT 0    /* 300 ms, 10 ms allowance, 30 rounds, 3x, throttle */
#define PRECOPY_POLICY_QEMU 1       /* 300 ms, no bounds, no throttling, no allowance */
#define PRECOPY_POLICY_XEN 2        /* 5 rounds or < 50 dirty pages, then switch over */
#define PRECOPY_POLICY_XEN_LEGACY 3 /* 30 rounds or 3x memory, or < 50 dirty pages */

#define PRECOPY_DECISION_CONTINUE 0    /* run another live round (throttle_percent) */
#define PRECOPY_DECISION_SWITCH_OVER 1 /* pause, harvest, send the final round */
#define PRECOPY_DECISION_FAIL 2        /* not converging: see not_converging */

#define PRECOPY_SWITCH_NONE 0
#define PRECOPY_SWITCH_DOWNTIME_MET 1    /* predicted downtime within the limit */
#define PRECOPY_SWITCH_FEW_DIRTY_PAGES 2 /* at most switch_below_pages dirty */
#define PRECOPY_SWITCH_BOUND_REACHED 3   /* a bound, predicted above the limit, on_limit = SWITCH_OVER */

#define PRECOPY_BOUND_NONE 0
#define PRECOPY_BOUND_ROUNDS 1  /* max_rounds */
#define PRECOPY_BOUND_BYTES 2   /* max_bytes_ratio */
#define PRECOPY_BOUND_TIMEOUT 3 /* timeout_ns */
#define PRECOPY_BOUND_OTHER 4   /* a bound this header does not name */

/* The migration policy. 0 means "off"/"none" where noted. Fill with
 * precopy_policy_default() or precopy_policy_preset(), then change fields. */
typedef struct precopy_policy {
    uint64_t downtime_limit_ns;      /* max downtime of the final round (300 ms) */
    uint64_t non_memory_downtime_ns; /* device state etc., added to predictions (10 ms) */
    uint64_t switchover_bandwidth;   /* bytes/s to predict with; 0 = measured */
    uint64_t bandwidth_cap;          /* bytes/s the link is capped at; 0 = none */
    uint64_t switch_below_pages;     /* switch over at <= this many dirty; 0 = off */
    uint64_t timeout_ns;             /* longest migration; 0 = none */
    double max_bytes_ratio;          /* most wire bytes / guest memory (>= 1); 0 = none */
    double smoothing;                /* weight of a new round, (0, 1] (0.5) */
    uint32_t max_rounds;             /* >= 1, counting the bulk round; UINT32_MAX = no bound */
    uint32_t on_limit;               /* PRECOPY_ON_LIMIT_* */
    uint32_t throttle_enabled;       /* 0 or 1 */
    uint32_t throttle_trigger_rounds; /* rounds not draining before each step */
    double throttle_threshold;       /* dirty bytes/s over bandwidth = not draining (0.5) */
    uint32_t throttle_initial_percent; /* first advice, 1..max */
    uint32_t throttle_step_percent;  /* added per further step */
    uint32_t throttle_max_percent;   /* <= 99 */
    uint32_t ramp_enabled;           /* 0 or 1: raise the limit when not converging */
    uint32_t ramp_after_rounds;      /* rounds at the base limit first */
    uint32_t min_rounds;             /* fewest live rounds before switching on the downtime rule (2); 0/1 = none */
    uint64_t ramp_step_ns;           /* added per round after that */
    uint64_t ramp_max_ns;            /* ceiling, >= downtime_limit_ns */
    uint32_t shrink_enabled;         /* 0 or 1: iterate past the limit while rounds shrink the dirty set (1) */
    uint32_t shrink_max_extra_rounds; /* most rounds after the first within the limit, >= 1 (8) */
    double shrink_target_fraction;   /* iterate only while the memory part of the prediction is above this share of the limit, (0, 1) (0.002) */
    double shrink_min_shrink;        /* least share a round shrinks the dirty set by, (0, 1) (0.1) */
    double shrink_headroom;          /* next round's extrapolated prediction x this within the limit, >= 1 (1.25) */
    double shrink_max_extra_bytes_ratio; /* most bytes of extra rounds / guest memory, > 0 (0.5) */
} precopy_policy_t;

/* What the host measured over one live round. */
typedef struct precopy_round_measurement {
    uint64_t now_ns;      /* when the round ended and the next dirty set was harvested */
    uint64_t pages_sent;  /* pages sent in the round */
    uint64_t wire_bytes;  /* bytes on the wire (compressed, framed) */
    uint64_t dirty_pages; /* pages harvested dirty at the end: the next round's work */
} precopy_round_measurement_t;

/* Why the migration fails (PRECOPY_DECISION_FAIL); all zero otherwise. */
typedef struct precopy_not_converging {
    uint32_t bound;                  /* PRECOPY_BOUND_* */
    uint32_t rounds;                 /* rounds completed */
    double dirty_pages_per_sec;      /* smoothed dirty rate */
    double bandwidth_bytes_per_sec;  /* smoothed bandwidth */
    uint64_t predicted_downtime_ns;  /* if switching over now */
    uint64_t downtime_limit_ns;      /* limit in force */
} precopy_not_converging_t;

/* A round's statistics and the decision. */
typedef struct precopy_round_outcome {
    uint32_t decision;               /* PRECOPY_DECISION_* */
    uint32_t switch_reason;          /* PRECOPY_SWITCH_* */
    uint32_t throttle_percent;       /* advice for the next round, % of vCPU time */
    uint32_t round;                  /* 1 = the bulk round */
    uint64_t pages_sent;
    uint64_t wire_bytes;
    uint64_t dirty_pages;
    uint64_t duration_ns;
    double bandwidth_bytes_per_sec;  /* smoothed; 0 until measured */
    double dirty_pages_per_sec;      /* smoothed */
    uint64_t predicted_downtime_ns;  /* UINT64_MAX while unknown */
    uint64_t downtime_limit_ns;      /* in force, after any ramp */
    precopy_not_converging_t not_converging;
} precopy_round_outcome_t;

/* Predicted against real downtime, after the fact. */
typedef struct precopy_downtime_report {
    uint64_t predicted_ns;
    uint64_t real_ns;
    double ratio; /* real / predicted; above 1.0: the prediction was optimistic */
} precopy_downtime_report_t;

/* A round scheduler's state. Opaque. */
typedef struct precopy_scheduler {
    uint64_t opaque[PRECOPY_SCHEDULER_SIZE / 8];
} precopy_scheduler_t;

/* Fills *policy with precopy's defaults. */
int precopy_policy_default(precopy_policy_t *policy);

/* Fills *policy with PRECOPY_POLICY_*. Disabled throttling keeps default throttle_*
 * values, so throttle_enabled = 1 is enough to turn it on. */
int precopy_policy_preset(precopy_policy_t *policy, int preset);

/* Checks *policy. On error, if msg_len is not NULL, writes a message naming the field
 * to msg (*msg_len bytes, NUL-terminated, truncated if short) and sets *msg_len to its
 * full length (msg NULL: only the length); on success *msg_len = 0. */
int precopy_policy_validate(const precopy_policy_t *policy, char *msg, size_t *msg_len);

/* Initializes *sched for total_pages pages of page_size bytes at time now_ns (the bulk
 * round starts now; any epoch, the same for every call). */
int precopy_scheduler_init(precopy_scheduler_t *sched, const precopy_policy_t *policy,
                           uint64_t total_pages, uint64_t page_size, uint64_t now_ns);

/* Feeds the round that just ended; *outcome gets its statistics and the decision. */
int precopy_scheduler_round_done(precopy_scheduler_t *sched,
                                 const precopy_round_measurement_t *measurement,
                                 precopy_round_outcome_t *outcome);

/* The real downtime (pause to resume, measured by the host) against the prediction
 * made at switchover. */
int precopy_scheduler_finish(const precopy_scheduler_t *sched, uint64_t real_downtime_ns,
                             precopy_downtime_report_t *report);

/* A one-line description of *outcome for an operator (for a failure: what was measured
 * and what to change) into buf (*len bytes, NUL-terminated); *len = its full length.
 * PRECOPY_ERR_BUFFER_TOO_SMALL if truncated (*len = 0, buf = NULL asks the length). */
int precopy_outcome_describe(const precopy_round_outcome_t *outcome, char *buf, size_t *len);

/* ---- Page codecs over caller buffers --------------------------------------------- */

#define PRECOPY_MIN_PAGE_SIZE 512
#define PRECOPY_MAX_PAGE_SIZE 65536
#define PRECOPY_LZ4_SIZE 16576

/* Status, not an error: precopy_delta_encode gave up because the delta would not fit
 * in the output buffer (the caller's threshold). Send the page another way. */
#define PRECOPY_DELTA_GAVE_UP 2

#define PRECOPY_ENCODING_ZERO 0  /* all-zero page, no payload */
#define PRECOPY_ENCODING_DELTA 1 /* delta against the version last sent */
#define PRECOPY_ENCODING_LZ4 2   /* LZ4 block */
#define PRECOPY_ENCODING_RAW 3   /* the page bytes */

/* An LZ4 compressor (its hash table, kept between pages). Opaque. 64-byte aligned: a
 * static or stack variable, or aligned_alloc(64, ...); plain malloc memory is refused
 * with PRECOPY_ERR_MISALIGNED. One per encoding thread. */
typedef struct precopy_lz4 {
    PRECOPY_ALIGN64 uint64_t opaque[PRECOPY_LZ4_SIZE / 8];
} precopy_lz4_t;

/* Page sizes below are powers of two in PRECOPY_MIN_PAGE_SIZE..PRECOPY_MAX_PAGE_SIZE. */

/* *zero_out = 1 if all len bytes at page are zero, else 0 (any length). */
int precopy_page_is_zero(const uint8_t *page, size_t len, int *zero_out);

/* *hash_out = XXH3-64 of the len bytes at page: the name of a delta base in frames. */
int precopy_base_hash(const uint8_t *page, size_t len, uint64_t *hash_out);

/* *len_out = the output buffer precopy_lz4_compress needs for page_size pages. */
int precopy_lz4_max_output_len(size_t page_size, size_t *len_out);

/* Initializes *lz4 with a fresh hash table. */
int precopy_lz4_init(precopy_lz4_t *lz4);

/* Compresses one page into out. In: *out_len = capacity (>= precopy_lz4_max_output_len).
 * Out: compressed length (may exceed the page size: then send it raw). */
int precopy_lz4_compress(precopy_lz4_t *lz4, const uint8_t *page, size_t page_size,
                         uint8_t *out, size_t *out_len);

/* Decompresses an LZ4 block (untrusted) into page, which it must fill exactly. */
int precopy_lz4_decompress(const uint8_t *data, size_t len, uint8_t *page, size_t page_size);

/* Delta of page against base (what the destination holds). In: *out_len = capacity of
 * out = the threshold; returns PRECOPY_DELTA_GAVE_UP as soon as the delta would not fit.
 * Out: the delta's length (0: identical pages). */
int precopy_delta_encode(const uint8_t *base, const uint8_t *page, size_t page_size,
                         uint8_t *out, size_t *out_len);

/* Applies a delta (untrusted) onto page, which holds its base. On error page may be
 * partly updated: apply into a scratch copy. */
int precopy_delta_apply(uint8_t *page, size_t page_size, const uint8_t *data, size_t len);

/* Decodes a payload of PRECOPY_ENCODING_* into page (delta: onto the base it holds). */
int precopy_page_decode(uint32_t encoding, const uint8_t *payload, size_t len, uint8_t *page,
                        size_t page_size);

/* ---- Stream format: header, frames, memory digest -------------------------------- */

#define PRECOPY_FRAME_HEADER_LEN 12
#define PRECOPY_MAX_STREAM_HEADER_LEN 1068
#define PRECOPY_DIGEST_SIZE 704

#define PRECOPY_STREAM_CHUNK_PAGES 512 /* chunk c of the pages travels on stream c % count */

#define PRECOPY_FEATURE_LZ4 1   /* LZ4 page frames may appear */
#define PRECOPY_FEATURE_DELTA 2 /* delta page frames may appear */
#define PRECOPY_FEATURE_DEVICE_STATE 4 /* device-state frames may appear */

#define PRECOPY_FRAME_ZERO_RUN 1    /* pages page..page+pages are zero */
#define PRECOPY_FRAME_RAW 2         /* page `page` is data (one page) */
#define PRECOPY_FRAME_LZ4 3         /* page `page` is LZ4 block data */
#define PRECOPY_FRAME_DELTA 4       /* page `page` = base (base_hash) + delta data */
#define PRECOPY_FRAME_ROUND_BEGIN 5 /* round `round` begins, `pages` planned */
#define PRECOPY_FRAME_ROUND_END 6   /* round `round` ends, `pages` carried */
#define PRECOPY_FRAME_SWITCHOVER 7  /* guest paused, `pages` remain */
#define PRECOPY_FRAME_COMPLETE 8    /* all `pages` sent; digest_lo/hi = memory digest */
#define PRECOPY_FRAME_DEVICE_STATE 9 /* VMM state `data` (<= a page), id `page`, version `round` */

/* The stream header. */
typedef struct precopy_stream_header {
    uint32_t features;        /* PRECOPY_FEATURE_* */
    uint32_t page_size;       /* PRECOPY_MIN_PAGE_SIZE..PRECOPY_MAX_PAGE_SIZE */
    uint8_t session_id[16];   /* identifies the migration */
    uint32_t nregions;        /* 1..PRECOPY_MAX_REGIONS */
    uint8_t stream_index;     /* this stream: < stream_count (see precopy_stream_owns_page) */
    uint8_t stream_count;     /* streams of the migration, 1..255; encode: 0 means 1 */
    uint16_t reserved;        /* must be 0 */
    precopy_region_t regions[PRECOPY_MAX_REGIONS]; /* len in bytes */
} precopy_stream_header_t;

/* One frame of any kind; fields a kind does not use are ignored when encoding and zero
 * when decoded. */
typedef struct precopy_frame {
    uint32_t kind;       /* PRECOPY_FRAME_* */
    uint32_t round;      /* ROUND_BEGIN, ROUND_END; DEVICE_STATE: the state's version */
    uint64_t page;       /* RAW, LZ4, DELTA: the page; ZERO_RUN: the first page; DEVICE_STATE: id */
    uint64_t pages;      /* a page count, see PRECOPY_FRAME_* */
    uint64_t base_hash;  /* DELTA: precopy_base_hash of the base */
    uint64_t digest_lo;  /* COMPLETE: memory digest, low 64 bits */
    uint64_t digest_hi;  /* COMPLETE: memory digest, high 64 bits */
    const uint8_t *data; /* RAW, LZ4, DELTA payload; decoded: points into the input */
    size_t data_len;
} precopy_frame_t;

/* A running memory digest (XXH3-128 over every page in page order). Opaque, 64-byte
 * aligned like precopy_lz4_t. */
typedef struct precopy_digest {
    PRECOPY_ALIGN64 uint64_t opaque[PRECOPY_DIGEST_SIZE / 8];
} precopy_digest_t;

/* *len_out = the longest frame for page_size pages (a buffer for any frame). */
int precopy_frame_max_len(size_t page_size, size_t *len_out);

/* Writes *header into out. In: *out_len = capacity. Out: bytes written (or needed, with
 * PRECOPY_ERR_BUFFER_TOO_SMALL). stream_index >= stream_count (0 counting as 1),
 * unknown features or reserved != 0: PRECOPY_ERR_BAD_ARGUMENT. */
int precopy_stream_header_encode(const precopy_stream_header_t *header, uint8_t *out,
                                 size_t *out_len);

/* Decodes and validates the stream header at the start of bytes (untrusted);
 * *consumed = its length. PRECOPY_ERR_TRUNCATED: more bytes needed (*consumed = the
 * length needed as far as known). */
int precopy_stream_header_decode(const uint8_t *bytes, size_t len,
                                 precopy_stream_header_t *header, size_t *consumed);

/* Writes *frame into out. In: *out_len = capacity. Out: bytes written (or needed, with
 * PRECOPY_ERR_BUFFER_TOO_SMALL). A payload of the wrong length for its kind is
 * PRECOPY_ERR_BAD_LENGTH. */
int precopy_frame_encode(const precopy_frame_t *frame, size_t page_size, uint8_t *out,
                         size_t *out_len);

/* Decodes and checks (kind, length, checksum) the frame at the start of bytes
 * (untrusted); *consumed = its length; the payload points into bytes.
 * PRECOPY_ERR_TRUNCATED: more bytes needed (*consumed = the frame length once its
 * 12-byte header is in, else 12). */
int precopy_frame_decode(const uint8_t *bytes, size_t len, size_t page_size,
                         precopy_frame_t *frame, size_t *consumed);

/* Initializes *digest as the digest of no pages. */
int precopy_digest_init(precopy_digest_t *digest);

/* Adds the next page, in page order. */
int precopy_digest_update(precopy_digest_t *digest, const uint8_t *page, size_t len);

/* The digest of the pages added so far, as the completion frame carries it. */
int precopy_digest_finish(const precopy_digest_t *digest, uint64_t *lo_out, uint64_t *hi_out);

/* Multi-stream migrations: pages are cut into chunks of PRECOPY_STREAM_CHUNK_PAGES;
 * chunk c travels on stream c % stream_count. A stream's completion digest is the
 * digest above over only its own pages, in page order. stream_count 0 counts as 1;
 * stream_index >= stream_count: PRECOPY_ERR_BAD_ARGUMENT. */

/* *owns_out = 1 if page travels on stream stream_index of stream_count, else 0. */
int precopy_stream_owns_page(uint8_t stream_index, uint8_t stream_count, uint64_t page,
                             int *owns_out);

/* *pages_out = the pages of 0..total_pages that travel on that stream. */
int precopy_stream_pages(uint8_t stream_index, uint8_t stream_count, uint64_t total_pages,
                         uint64_t *pages_out);

/* ---- Stream decoder: bytes in any pieces, header and frames out, stream rules checked */

#define PRECOPY_DECODER_SIZE 1856

#define PRECOPY_EVENT_HEADER 1 /* the stream header: see precopy_decoder_header */
#define PRECOPY_EVENT_FRAME 2  /* a frame, in `frame` */

/* A stream decoder's state. Opaque. It refers to its buffer: do not use two copies of
 * one decoder (they would share the buffer). */
typedef struct precopy_decoder {
    uint64_t opaque[PRECOPY_DECODER_SIZE / 8];
} precopy_decoder_t;

/* What the decoder produced. */
typedef struct precopy_event {
    uint32_t kind;         /* PRECOPY_EVENT_* */
    uint32_t reserved;     /* 0 */
    precopy_frame_t frame; /* payload valid until the next call on the decoder */
} precopy_event_t;

/* *len_out = the buffer a decoder needs for pages up to max_page_size bytes. */
int precopy_decoder_buffer_len(size_t max_page_size, size_t *len_out);

/* Initializes *decoder for a new stream; split frames are gathered in buf (len bytes,
 * kept valid and otherwise unused while the decoder is). */
int precopy_decoder_init(precopy_decoder_t *decoder, uint8_t *buf, size_t len);

/* Decodes the next header or frame from *input (*input_len bytes, untrusted, split
 * anywhere), advancing *input and *input_len. PRECOPY_OK: *event is filled.
 * PRECOPY_MORE: input used up, feed the next piece. Enforces the stream's rules too
 * (header first, pages in range and inside rounds, rounds in order with matching
 * counts, codecs announced, switchover before completion, nothing after it). The first
 * error is final; precopy_decoder_error_message says what and where. */
int precopy_decoder_next(precopy_decoder_t *decoder, const uint8_t **input, size_t *input_len,
                         precopy_event_t *event);

/* Copies the decoded stream header; PRECOPY_ERR_TRUNCATED before it arrived. */
int precopy_decoder_header(const precopy_decoder_t *decoder, precopy_stream_header_t *header);

/* PRECOPY_OK if the stream ended right after its completion frame; else the decoder's
 * error, PRECOPY_ERR_TRUNCATED (ends inside a unit) or PRECOPY_ERR_STREAM (no
 * completion frame). */
int precopy_decoder_finish(const precopy_decoder_t *decoder);

/* What precopy_decoder_finish reports, for an operator ("frame 1832 (byte 7405568):
 * checksum mismatch ..."; empty when complete), into buf (*len bytes, NUL-terminated);
 * *len = its full length. buf NULL: a length query (PRECOPY_ERR_BUFFER_TOO_SMALL). */
int precopy_decoder_error_message(const precopy_decoder_t *decoder, char *buf, size_t *len);

/* ---- Engines over caller memory: source, coordinator, destination ----------------- */
/*
 * A migration: one bitmap, one source engine per stream (precopy_source_*), one
 * coordinator deciding for all streams (precopy_coordinator_*), one applier per
 * destination stream (precopy_applier_*). The host owns guest memory (reached through
 * a precopy_page_memory_t of callbacks), the storage of every engine (sized by
 * precopy_storage_needs or each engine's _storage_size), the threads and the links.
 *
 * The loop, per stream i: precopy_source_poll_transmit -> send the bytes; then
 * precopy_source_poll_event until NONE: ROUND_MEASURED, PAUSE_GUEST and COMPLETE go to
 * precopy_coordinator_handle_source_event(i) (before a round's last ROUND_MEASURED,
 * optionally precopy_coordinator_note_pending_pages with the bitmap's dirty count);
 * SYNC_DIRTY_LOG is the host's (bring KVM's log into the bitmap, then
 * precopy_source_dirty_log_synced). Then
 * precopy_coordinator_poll_event until NONE: DECIDE -> precopy_source_decide on every
 * stream; PAUSE_GUEST -> pause the guest, precopy_coordinator_guest_paused;
 * GUEST_PAUSED -> precopy_source_guest_paused on every stream; FINAL_ROUND -> give each
 * destination's verdict (precopy_coordinator_verdict); DONE: resume at the
 * destination; FAILED: precopy_source_abort every stream, resume at the source.
 * A call in the wrong state is PRECOPY_ERR_OUT_OF_ORDER; after an engine ended,
 * PRECOPY_ERR_ENDED.
 */

#define PRECOPY_ERR_OUT_OF_ORDER (-25)       /* answer the pending event first */
#define PRECOPY_ERR_MEMORY (-26)             /* a page-memory callback failed */
#define PRECOPY_ERR_DIGEST_MISMATCH (-27)    /* destination memory differs */
#define PRECOPY_ERR_ENDED (-28)              /* the engine ended: no more calls */
#define PRECOPY_ERR_NOT_CONVERGING (-29)     /* the scheduler gave up */
#define PRECOPY_ERR_STREAM_FAILED (-30)      /* a stream failed or was refused */

/* Copies page `page` into buf (len bytes, one page); returns 0, or non-zero to fail. */
typedef int (*precopy_read_page_fn_t)(void *ctx, uint64_t page, uint8_t *buf, size_t len);
/* Overwrites page `page` with buf (len bytes); returns 0, or non-zero to fail. */
typedef int (*precopy_write_page_fn_t)(void *ctx, uint64_t page, const uint8_t *buf,
                                       size_t len);

/* Guest memory the host owns, as the engines see it (copied at _init). */
typedef struct precopy_page_memory {
    void *ctx;                          /* passed to every callback */
    precopy_read_page_fn_t read_page;   /* required */
    precopy_write_page_fn_t write_page; /* required by an applier; may be NULL at a source */
    uint64_t page_size;                 /* the layout's */
    uint64_t total_pages;               /* the layout's */
} precopy_page_memory_t;

/* Bytes of storage each part of a migration needs (8-byte aligned each). */
typedef struct precopy_storage_needs {
    uint64_t bitmap_bytes;        /* the bitmap's words, one bitmap for all streams */
    uint64_t source_bytes;        /* the largest stream's source engine (stream 0) */
    uint64_t sources_total_bytes; /* every stream's source engine */
    uint64_t coordinator_bytes;   /* the coordinator */
    uint64_t applier_bytes;       /* each destination stream's applier */
} precopy_storage_needs_t;

/* Storage a migration of the layout over `streams` streams (1 to 255) with a delta
 * cache of cache_bytes per stream needs, per part. */
int precopy_storage_needs(uint64_t page_size, const precopy_region_t *regions,
                          size_t nregions, uint64_t cache_bytes, uint32_t streams,
                          precopy_storage_needs_t *out);

/* Defined with the coordinator below. */
typedef struct precopy_coordinator_event precopy_coordinator_event_t;

#define PRECOPY_SOURCE_SIZE 20480
#define PRECOPY_VERIFY_AFTER_RESUME 0
#define PRECOPY_VERIFY_IN_DOWNTIME 1
#define PRECOPY_SOURCE_EVENT_NONE 0
#define PRECOPY_SOURCE_EVENT_ROUND_MEASURED 1 /* to the coordinator */
#define PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG 2 /* the host's: then _dirty_log_synced */
#define PRECOPY_SOURCE_EVENT_PAUSE_GUEST 3    /* to the coordinator */
#define PRECOPY_SOURCE_EVENT_COMPLETE 4       /* to the coordinator */

/* How a source engine migrates (precopy_source_config_default fills it). */
typedef struct precopy_source_config {
    uint64_t cache_bytes;         /* delta cache budget (0: no deltas) */
    uint64_t max_pages_per_poll;  /* at least 1 */
    uint8_t session_id[16];       /* names the migration in the stream header */
    uint32_t stream_index;        /* below stream_count */
    uint32_t stream_count;        /* 1 to 255 */
    uint32_t defer_redirtied;     /* 0 or 1 */
    uint32_t sync_before_harvest; /* 0 or 1: SYNC_DIRTY_LOG before every harvest */
    uint32_t verify;              /* PRECOPY_VERIFY_* */
    uint32_t lz4;                 /* 0 or 1 */
} precopy_source_config_t;

/* What a source engine reported. */
typedef struct precopy_source_event {
    uint32_t kind;   /* PRECOPY_SOURCE_EVENT_* */
    uint32_t round;  /* ROUND_MEASURED, COMPLETE (1: the bulk round) */
    uint32_t paused; /* SYNC_DIRTY_LOG: 1 for the harvest after the pause */
    uint32_t lz4;    /* LZ4 on at the event */
    uint64_t pages_sent;
    uint64_t wire_bytes;
    uint64_t dirty_pages;    /* ROUND_MEASURED */
    uint64_t deferred_pages; /* ROUND_MEASURED */
    uint64_t predicted_downtime_ns;
    uint64_t digest_lo; /* COMPLETE: the stream's digest */
    uint64_t digest_hi;
    uint64_t digest_pages_read;
    uint64_t digest_pages_folded;
} precopy_source_event_t;

/* A source engine's state (its pages live in the caller's storage). Opaque, 64-byte
 * aligned, not to be copied. */
typedef struct precopy_source {
    PRECOPY_ALIGN64 uint64_t opaque[PRECOPY_SOURCE_SIZE / 8];
} precopy_source_t;

/* The defaults: 64 MiB delta cache, LZ4 on, redirtied pages deferred, one stream. */
int precopy_source_config_default(precopy_source_config_t *config);

/* Bytes of storage precopy_source_init needs for bm's layout and *config. */
int precopy_source_storage_size(const precopy_bitmap_t *bm,
                                const precopy_source_config_t *config, size_t *bytes_out);

/* Starts a source engine of one stream at now_ns over bm (marks made before now are
 * taken: the bulk round sends every page), reading guest memory through *memory, its
 * state in storage (8-byte aligned, storage_bytes at least _storage_size). bm,
 * storage and memory's context stay valid while src is used. src is written whatever
 * it held: init over a source still running forgets the pages it harvested and has
 * not sent; call precopy_source_abort on it first (that puts them back into bm). */
int precopy_source_init(precopy_source_t *src, const precopy_bitmap_t *bm,
                        const precopy_source_config_t *config,
                        const precopy_page_memory_t *memory, uint64_t *storage,
                        size_t storage_bytes, uint64_t now_ns);

/* The smallest buffer precopy_source_poll_transmit takes. */
int precopy_source_min_buffer(precopy_source_t *src, size_t *len_out);

/* Fills out with stream bytes (*written; 0 is no error: check the events). An error
 * ends the engine, its harvested pages back in the bitmap (PRECOPY_ERR_ENDED after). */
int precopy_source_poll_transmit(precopy_source_t *src, uint64_t now_ns, uint8_t *out,
                                 size_t out_len, size_t *written);

/* What happened (kind NONE: nothing); each event wants its answer first. */
int precopy_source_poll_event(precopy_source_t *src, precopy_source_event_t *event);

/* The coordinator's DECIDE event, after ROUND_MEASURED: continue, switch over (a
 * PAUSE_GUEST event follows) or fail (PRECOPY_ERR_NOT_CONVERGING, the engine ends). */
int precopy_source_decide(precopy_source_t *src, const precopy_coordinator_event_t *decide);

/* The guest is paused (the coordinator's GUEST_PAUSED): the final harvest. */
int precopy_source_guest_paused(precopy_source_t *src, uint64_t now_ns);

/* The pre-harvest sync point, after SYNC_DIRTY_LOG: the host cleared its outside log
 * (KVM_CLEAR_DIRTY_LOG, ring reset), then ORed what it took into the bitmap. */
int precopy_source_dirty_log_synced(precopy_source_t *src, uint64_t now_ns);

/* Abandons the stream: pages harvested but not in bytes polled go back into the
 * bitmap; memory was never written. PRECOPY_ERR_ENDED after (and when aborted twice). */
int precopy_source_abort(precopy_source_t *src);

/* Why the engine ended, for an operator (empty while it runs or after an abort), into
 * buf (*len bytes, NUL-terminated); *len = its full length. buf NULL: a length query
 * (PRECOPY_ERR_BUFFER_TOO_SMALL). */
int precopy_source_error_message(const precopy_source_t *src, char *buf, size_t *len);

/* Marks dirty again every page carried by bytes polled but not delivered (len bytes
 * from the start of one poll's output); *pages_out (may be NULL): pages marked. */
int precopy_put_back_undelivered(const precopy_bitmap_t *bm, const uint8_t *bytes,
                                 size_t len, uint64_t *pages_out);

#define PRECOPY_COORDINATOR_SIZE 4096
#define PRECOPY_COORDINATOR_EVENT_NONE 0
#define PRECOPY_COORDINATOR_EVENT_ROUND_DONE 1   /* every stream ended a live round */
#define PRECOPY_COORDINATOR_EVENT_THROTTLE 2     /* throttle vCPUs by throttle_percent */
#define PRECOPY_COORDINATOR_EVENT_DECIDE 3       /* to precopy_source_decide, all streams */
#define PRECOPY_COORDINATOR_EVENT_PAUSE_GUEST 4  /* pause, then _guest_paused */
#define PRECOPY_COORDINATOR_EVENT_GUEST_PAUSED 5 /* precopy_source_guest_paused, all */
#define PRECOPY_COORDINATOR_EVENT_FINAL_ROUND 6  /* give every destination's verdict */
#define PRECOPY_COORDINATOR_EVENT_DONE 7         /* migrated: resume at the destination */
#define PRECOPY_COORDINATOR_EVENT_FAILED 8       /* abort the sources, resume the source */

/* What the coordinator asks for. */
typedef struct precopy_coordinator_event {
    uint32_t kind;             /* PRECOPY_COORDINATOR_EVENT_* */
    uint32_t decision;         /* DECIDE: PRECOPY_DECISION_* */
    uint32_t switch_reason;    /* DECIDE: PRECOPY_SWITCH_* */
    uint32_t throttle_percent; /* THROTTLE, DECIDE */
    uint32_t round;            /* ROUND_DONE, FINAL_ROUND; DONE: all rounds */
    int32_t error;             /* FAILED: PRECOPY_ERR_* */
    uint32_t stream;           /* FAILED: the stream that failed or was refused */
    uint32_t reserved;
    uint64_t pages_sent;
    uint64_t wire_bytes;
    uint64_t dirty_pages;
    uint64_t predicted_downtime_ns;
    uint64_t paused_at_ns; /* DONE */
} precopy_coordinator_event_t;

/* A coordinator's state (its streams live in the caller's storage). Opaque. */
typedef struct precopy_coordinator {
    uint64_t opaque[PRECOPY_COORDINATOR_SIZE / 8];
} precopy_coordinator_t;

/* Bytes of storage a coordinator of `streams` streams needs. */
int precopy_coordinator_storage_size(uint32_t streams, size_t *bytes_out);

/* Starts the coordinator of `streams` streams of a guest of total_pages pages of
 * page_size bytes under *policy at now_ns, its state in storage (8-byte aligned). */
int precopy_coordinator_init(precopy_coordinator_t *coord, const precopy_policy_t *policy,
                             uint64_t total_pages, uint64_t page_size, uint32_t streams,
                             uint64_t *storage, size_t storage_bytes, uint64_t now_ns);

/* Stream `stream`'s ROUND_MEASURED, PAUSE_GUEST or COMPLETE event. Poll the events
 * after each call (more than 4 waiting: PRECOPY_ERR_OUT_OF_ORDER). */
int precopy_coordinator_handle_source_event(precopy_coordinator_t *coord, uint32_t stream,
                                            const precopy_source_event_t *event,
                                            uint64_t now_ns);

/* Pages dirtied since the streams harvested the round now ending (the host's
 * precopy_bitmap_dirty_count after bringing in KVM's log), given just before the
 * round's last ROUND_MEASURED: the prediction counts them (a pause now sends them
 * too). That round's decision only; 0 if not given. */
int precopy_coordinator_note_pending_pages(precopy_coordinator_t *coord, uint64_t pages);

/* The host paused the guest (after PAUSE_GUEST). */
int precopy_coordinator_guest_paused(precopy_coordinator_t *coord, uint64_t now_ns);

/* Destination stream `stream` verified its pages (1) or refused them (0). */
int precopy_coordinator_verdict(precopy_coordinator_t *coord, uint32_t stream,
                                uint32_t verified);

/* Stream `stream` failed (its engine or link): FAILED follows. */
int precopy_coordinator_stream_failed(precopy_coordinator_t *coord, uint32_t stream);

/* The next thing to do (kind NONE: nothing waits). */
int precopy_coordinator_poll_event(precopy_coordinator_t *coord,
                                   precopy_coordinator_event_t *event);

#define PRECOPY_APPLIER_SIZE 2560

/* What a destination stream applied so far. */
typedef struct precopy_apply_progress {
    uint64_t zero_pages;
    uint64_t raw_pages;
    uint64_t lz4_pages;
    uint64_t delta_pages;
    uint64_t rounds;
    uint32_t complete; /* 1: completion arrived and the memory matched the digest */
    int32_t error;     /* the error that stopped the stream, or PRECOPY_OK */
} precopy_apply_progress_t;

/* A destination stream's state (its buffers live in the caller's storage). Opaque,
 * 64-byte aligned, not to be copied. */
typedef struct precopy_applier {
    PRECOPY_ALIGN64 uint64_t opaque[PRECOPY_APPLIER_SIZE / 8];
} precopy_applier_t;

/* Bytes of storage an applier for pages of page_size bytes needs. */
int precopy_applier_storage_size(uint64_t page_size, size_t *bytes_out);

/* Starts a destination stream writing into *memory (read and write callbacks), its
 * buffers in storage (8-byte aligned, at least _storage_size). */
int precopy_applier_init(precopy_applier_t *app, const precopy_page_memory_t *memory,
                         uint64_t *storage, size_t storage_bytes);

/* Applies the next len bytes of the stream (any split); *complete_out (may be NULL):
 * 1 once the memory matched the source's digest. The first error is final. */
int precopy_applier_feed(precopy_applier_t *app, const uint8_t *bytes, size_t len,
                         uint32_t *complete_out);

/* What the stream applied so far. */
int precopy_applier_progress(precopy_applier_t *app, precopy_apply_progress_t *out);

/* The verdict at the end of input: PRECOPY_OK only after a matching digest (to
 * digest_out[0..2], may be NULL), else the error that stopped the stream. */
int precopy_applier_verdict(precopy_applier_t *app, uint64_t *digest_out);

/* What precopy_applier_verdict reports, for an operator ("frame 1832 (byte 7405568):
 * checksum mismatch ..."; empty once verified), into buf (*len bytes, NUL-terminated);
 * *len = its full length. buf NULL: a length query (PRECOPY_ERR_BUFFER_TOO_SMALL). */
int precopy_applier_error_message(const precopy_applier_t *app, char *buf, size_t *len);

/* ---- Layout checks (the Rust side asserts the same sizes) ------------------------- */

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define PRECOPY_STATIC_ASSERT_(cond, msg) _Static_assert(cond, msg)
#elif defined(__cplusplus) && __cplusplus >= 201103L
#define PRECOPY_STATIC_ASSERT_(cond, msg) static_assert(cond, msg)
#else
#define PRECOPY_STATIC_ASSERT_(cond, msg)
#endif
PRECOPY_STATIC_ASSERT_(sizeof(precopy_region_t) == 16, "precopy_region_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_bitmap_t) == PRECOPY_BITMAP_SIZE, "precopy_bitmap_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_kvm_slots_t) == PRECOPY_KVM_SLOTS_SIZE,
                       "precopy_kvm_slots_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_kvm_dirty_gfn_t) == 16, "precopy_kvm_dirty_gfn_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_policy_t) == 168, "precopy_policy_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_round_measurement_t) == 32,
                       "precopy_round_measurement_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_not_converging_t) == 40, "precopy_not_converging_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_round_outcome_t) == 120, "precopy_round_outcome_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_downtime_report_t) == 24, "precopy_downtime_report_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_scheduler_t) == PRECOPY_SCHEDULER_SIZE,
                       "precopy_scheduler_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_lz4_t) == PRECOPY_LZ4_SIZE, "precopy_lz4_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_stream_header_t) == 1056, "precopy_stream_header_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_frame_t) == 64, "precopy_frame_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_digest_t) == PRECOPY_DIGEST_SIZE, "precopy_digest_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_decoder_t) == PRECOPY_DECODER_SIZE, "precopy_decoder_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_event_t) == 72, "precopy_event_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_page_memory_t) == 40, "precopy_page_memory_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_storage_needs_t) == 40, "precopy_storage_needs_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_source_config_t) == 56, "precopy_source_config_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_source_event_t) == 88, "precopy_source_event_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_source_t) == PRECOPY_SOURCE_SIZE, "precopy_source_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_coordinator_event_t) == 72,
                       "precopy_coordinator_event_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_coordinator_t) == PRECOPY_COORDINATOR_SIZE,
                       "precopy_coordinator_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_apply_progress_t) == 48, "precopy_apply_progress_t");
PRECOPY_STATIC_ASSERT_(sizeof(precopy_applier_t) == PRECOPY_APPLIER_SIZE, "precopy_applier_t");

#ifdef __cplusplus
}
#endif

#endif /* PRECOPY_H */
