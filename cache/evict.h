/* The eviction policy, apart from the mechanism so it can be tested alone:
 * least recently used first, from above the high watermark down to the low. */
#ifndef MODELFS_EVICT_H
#define MODELFS_EVICT_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

struct evict_cand {
	uint8_t objid[OBJID_LEN];
	uint32_t chunk;
	uint32_t len;
	uint64_t last_use_ms;
};

/* Should eviction start? usage above high x quota. */
int evict_needed(uint64_t usage, uint64_t quota, double high);

/* Order @c (n entries) oldest first and return how many from the front must go
 * for usage to fall to low x quota or below (all of them if that is not
 * enough). Ties in last use break on (objid, chunk) so the order is stable. */
size_t evict_choose(struct evict_cand *c, size_t n, uint64_t usage, uint64_t quota, double low);

#endif
