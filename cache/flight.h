/* Fetches in flight and fetches that just failed, per object version: what
 * keeps one slow or broken object from taking the whole mount with it.
 *
 * Slots: at most @max_total backend requests at once (the memory bound), and
 * at most a per-call cap of them for one object, so a stalled object can
 * hold only its share and other objects' fetches go on.
 *
 * Failures: a fetch that failed is remembered for FLIGHT_FAIL_MS over the
 * chunks it covered. Readers that waited on it (single flight) and readers
 * that come right after (the kernel asks again for a page whose readahead
 * failed) get the same error at once instead of each paying a whole retry
 * budget; the bound on a read's time to EIO is then one budget.
 *
 * Thread safety: every function may be called from any thread; one mutex
 * and one condvar, owned here.
 */
#ifndef MODELFS_FLIGHT_H
#define MODELFS_FLIGHT_H

#include <stdint.h>

#include "index.h"

#define FLIGHT_FAIL_MS 1000

struct flight;

int flight_open(unsigned max_total, struct flight **out);
void flight_close(struct flight *f);

/* Take a slot for a request on object @id, of which at most @obj_cap may be
 * in flight. @wait 0: @return -EAGAIN at once when one is not free. */
int flight_get(struct flight *f, const uint8_t id[OBJID_LEN], unsigned obj_cap, int wait);
void flight_put(struct flight *f, const uint8_t id[OBJID_LEN]);

/* Remember that fetching chunks [@first, @first + @count) of @id failed with
 * @err (errors that another try at once could not fix: not -ENOMEM,
 * -ECANCELED). */
void flight_fail(struct flight *f, const uint8_t id[OBJID_LEN], uint32_t first, uint32_t count,
		 int err);

/* The error of a failure of @chunk remembered from the last FLIGHT_FAIL_MS,
 * or 0. */
int flight_failed(struct flight *f, const uint8_t id[OBJID_LEN], uint32_t chunk);

#endif
