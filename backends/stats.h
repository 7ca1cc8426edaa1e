/* Figures for the metrics, counted without a lock: a latency histogram type
 * (shared with the FUSE operations' in fs/metrics.c), and what the backends
 * did. Process-wide: a daemon serves one mount, so one store.
 *
 * Two levels are counted, because they answer different questions:
 *   - operations (backend_list/stat/read/check, the calls the layers above
 *     make): how long a read of the store took, retries and all, and how it
 *     ended, by errno class;
 *   - HTTP attempts (http.c): how the store answers, by status class, how
 *     often we retried, how many requests are out now and how many bytes
 *     came in (error pages and retried bodies too: what the link carried).
 * file:// has operations and no HTTP attempts.
 *
 * Written by any thread with relaxed atomics; read by the metrics thread,
 * which may see one counter a little ahead of another (never a torn value).
 */
#ifndef MODELFS_STATS_H
#define MODELFS_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* 0 only in the benchmark build that measures what this costs
 * (tests/bench/metrics_cost.sh): the call sites test it, the compiler drops
 * what it guards. */
#ifdef MODELFS_BENCH_NO_METRICS
#define STATS_ON 0
#else
#define STATS_ON 1
#endif

/* Latency buckets (upper bounds, seconds): 50 us to 60 s, enough to resolve
 * P50-P99 of page-cache-fast and store-slow requests alike. */
#define STATS_BUCKETS 19
extern const double stats_bucket_s[STATS_BUCKETS];

struct stats_hist {
	_Atomic uint64_t count, sum_ns;
	_Atomic uint64_t bucket[STATS_BUCKETS]; /* not cumulative; past the last: only count */
};

/* CLOCK_MONOTONIC, ns. */
uint64_t stats_now_ns(void);
/* One observation of @ns nanoseconds. */
void stats_hist_add(struct stats_hist *h, uint64_t ns);

/* SB_OTHER: requests made outside an operation (a source's set-up) */
enum stats_bop { SB_LIST, SB_STAT, SB_READ, SB_CHECK, SB_OTHER, SB_N };
enum stats_result {
	SR_OK, SR_NOT_FOUND, SR_DENIED, SR_STALE, SR_TIMEOUT, SR_UNREACHABLE, SR_CANCELLED,
	SR_ERROR, SR_N
};
enum stats_http { SH_2XX, SH_3XX, SH_4XX, SH_5XX, SH_OTHER, SH_NONE, SH_N }; /* NONE: no answer */

extern const char *const stats_bop_name[SB_N];
extern const char *const stats_result_name[SR_N];
extern const char *const stats_http_name[SH_N];

struct stats_backend {
	struct {
		_Atomic uint64_t result[SR_N];
		_Atomic uint64_t bytes; /* reads: bytes handed up */
		struct stats_hist seconds;
	} op[SB_N];
	_Atomic uint64_t http[SB_N][SH_N]; /* attempts by operation and answer */
	_Atomic uint64_t retries;      /* attempts after the first of a request */
	_Atomic uint64_t http_bytes;   /* body bytes received, every attempt */
	_Atomic int64_t in_flight;     /* HTTP requests being performed now */
};

extern struct stats_backend stats_backend;

/* The operation this thread is in (backend.c's wrappers set it), for the
 * HTTP attempts it makes. */
extern __thread enum stats_bop stats_cur_op;

/* The result class of 0 or -errno. */
enum stats_result stats_result_of(int err);
/* A backend operation that began at @t0_ns ended with @err. */
void stats_backend_op(enum stats_bop op, uint64_t t0_ns, int err, uint64_t bytes);

#endif
