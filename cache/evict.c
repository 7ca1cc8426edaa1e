/* LRU victim selection. Sorting every chunk is O(n log n) per round, and a
 * round runs only when usage crosses the high watermark; for 500 GB of 4 MiB
 * chunks (128k entries) that is a few milliseconds. */
#include "evict.h"

#include <stdlib.h>
#include <string.h>

int evict_needed(uint64_t usage, uint64_t quota, double high)
{
	return quota > 0 && (double)usage > high * (double)quota;
}

static int cand_cmp(const void *a, const void *b)
{
	const struct evict_cand *x = a, *y = b;
	int r;

	if (x->last_use_ms != y->last_use_ms)
		return x->last_use_ms < y->last_use_ms ? -1 : 1;
	r = memcmp(x->objid, y->objid, OBJID_LEN);
	if (r)
		return r;
	return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

size_t evict_choose(struct evict_cand *c, size_t n, uint64_t usage, uint64_t quota, double low)
{
	uint64_t target = (uint64_t)(low * (double)quota);
	size_t k = 0;

	qsort(c, n, sizeof(*c), cand_cmp);
	while (k < n && usage > target) {
		usage = usage > c[k].len ? usage - c[k].len : 0;
		k++;
	}
	return k;
}
