/* The channel: every byte between libfuse and /dev/fuse passes through
 * these hooks (libfuse's custom I/O). They let passthrough amend its two
 * replies (passthrough.h), keep what the next daemon needs (keep.h: the
 * INIT request, the requests in flight), stop taking requests for an
 * upgrade, and, on a connection another daemon left (adopted), replay the
 * INIT to libfuse and have what was in flight sent again.
 */
#ifndef MODELFS_CHANNEL_H
#define MODELFS_CHANNEL_H

#include <fuse_lowlevel.h>

#include "keep.h"
#include "passthrough.h"

struct chan;

enum { CHAN_NEW, CHAN_ADOPT, CHAN_ADOPT_FAIL };

/* Hook into @se (its fd set, the loop not started). @adopted CHAN_ADOPT:
 * the connection's INIT was answered by another daemon: the one in @keep
 * is replayed to libfuse, its reply kept from the kernel; then the
 * requests that daemon left unanswered are sent again (FUSE_NOTIFY_RESEND,
 * Linux >= 6.9) or, where the kernel cannot, answered EIO. CHAN_ADOPT_FAIL:
 * EIO in any case (daemons crashed in a row: a request may be the cause).
 * @return 0 or -errno. */
int chan_setup(struct fuse_session *se, struct keep *keep, struct pt *pt, int adopted,
	       struct chan **out);
void chan_free(struct chan *c);

/* Take no more requests (the loop's readers wait for ever) and wait until
 * those in flight are answered, at most @timeout_ms. @return how many are
 * left unanswered. */
unsigned chan_stop(struct chan *c, unsigned timeout_ms);
/* Answer the requests in flight with EIO (after chan_stop, where the
 * kernel cannot send them again). */
void chan_fail_inflight(struct chan *c);
/* Does the kernel send requests again when told (FUSE_NOTIFY_RESEND)? */
int chan_kernel_resends(struct chan *c);

#endif
