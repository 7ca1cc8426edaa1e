/* Lock-free figures (stats.h). */
#include "stats.h"

#include <errno.h>
#include <time.h>

const double stats_bucket_s[STATS_BUCKETS] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
					      0.0025,  0.005,  0.01,    0.025,  0.05,
					      0.1,     0.25,   0.5,     1,      2.5,
					      5,       10,     30,      60};

const char *const stats_bop_name[SB_N] = {"list", "stat", "read", "check", "other"};
__thread enum stats_bop stats_cur_op = SB_OTHER;
const char *const stats_result_name[SR_N] = {"ok",      "not_found",   "denied",    "stale",
					     "timeout", "unreachable", "cancelled", "error"};
const char *const stats_http_name[SH_N] = {"2xx", "3xx", "4xx", "5xx", "other", "none"};

struct stats_backend stats_backend;

uint64_t stats_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void stats_hist_add(struct stats_hist *h, uint64_t ns)
{
	double s = (double)ns / 1e9;
	unsigned b = 0;

	if (!STATS_ON)
		return;
	while (b < STATS_BUCKETS && s > stats_bucket_s[b])
		b++;
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
	if (b < STATS_BUCKETS)
		atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
}

enum stats_result stats_result_of(int err)
{
	switch (-err) {
	case 0:
		return SR_OK;
	case ENOENT:
		return SR_NOT_FOUND;
	case EACCES:
	case EPERM:
		return SR_DENIED;
	case ESTALE:
		return SR_STALE;
	case ETIMEDOUT:
		return SR_TIMEOUT;
	case ECONNREFUSED:
	case EHOSTUNREACH:
		return SR_UNREACHABLE;
	case ECANCELED:
		return SR_CANCELLED;
	default:
		return SR_ERROR;
	}
}

void stats_backend_op(enum stats_bop op, uint64_t t0_ns, int err, uint64_t bytes)
{
	uint64_t now;

	if (!STATS_ON)
		return;
	now = stats_now_ns();
	atomic_fetch_add_explicit(&stats_backend.op[op].result[stats_result_of(err)], 1,
				  memory_order_relaxed);
	if (bytes)
		atomic_fetch_add_explicit(&stats_backend.op[op].bytes, bytes, memory_order_relaxed);
	stats_hist_add(&stats_backend.op[op].seconds, now > t0_ns ? now - t0_ns : 0);
}
