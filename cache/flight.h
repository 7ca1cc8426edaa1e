/* Fetches in flight and fetches that just failed, per object version: what
 * keeps one slow or broken object from taking the whole mount with it.
 *
 * Slots: at most @max_total backend requests at once (the memory bound), and
 * at most a per-call cap of them for one object, so a stalled object can
 * hold only its share and other objects' fetches go on.
 *
 * Failures: a fetch that failed (after its retries) is remembered for
 * FLIGHT_FAIL_MS, for its whole object. Readers that waited on it (single
 * flight), readers of other chunks of it, and readers that come right after
 * (the kernel asks again for a page whose readahead failed) get the same
 * error at once instead of each paying a whole retry budget: a read's time
 * to EIO is one budget. The object, not the chunk: a store that is slow or
 * broken for one chunk of an object is so for the rest of it, and an object
 * that changed (ESTALE) changed everywhere.
 *
 * Thread safety: every function may be called from any thread; one mutex
 * and one condvar, owned here.
 */
#ifndef MODELFS_FLIGHT_H
#define MODELFS_FLIGHT_H

#include <stdint.h>

#include "index.h"

#define FLIGHT_FAIL_MS 1000
#define FLIGHT_RA_WAIT_MS 20 /* the longest a readahead request waits for a slot */

struct flight;

int flight_open(unsigned max_total, struct flight **out);
void flight_close(struct flight *f);

/* How a slot is asked for. */
enum flight_kind {
	FLIGHT_DEMAND,    /* someone waits for the bytes: wait for a slot */
	FLIGHT_READAHEAD, /* an extra: waits FLIGHT_RA_WAIT_MS at most; counted apart */
};

/* Take a slot for a request on object @id, of which at most @obj_cap of
 * @kind may be in flight. @return 0, -EAGAIN (readahead: none free soon enough), or
 * the error of a failure of @id remembered now (then no slot is taken): a
 * fetch that waited for a slot must not try again what just failed. */
int flight_get(struct flight *f, const uint8_t id[OBJID_LEN], enum flight_kind kind,
	       unsigned obj_cap);

/* Give the slot back; @err: how the request ended. A failure is remembered
 * (not -ENOMEM or -ECANCELED, which say nothing of the object) in the same
 * step, so that no fetch waiting for the slot can start before it sees it. */
void flight_put(struct flight *f, const uint8_t id[OBJID_LEN], enum flight_kind kind, int err);

/* Remember that fetching from @id failed with @err, without a slot. */
void flight_fail(struct flight *f, const uint8_t id[OBJID_LEN], int err);

/* The error of a failure of @id remembered from the last FLIGHT_FAIL_MS, or 0. */
int flight_failed(struct flight *f, const uint8_t id[OBJID_LEN]);

#endif
