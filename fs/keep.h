/* What outlives the daemon: one shared memory file (a memfd) that the
 * daemon writes as it runs and that the holder (holder.h) keeps open, so
 * that the next daemon on the same FUSE connection (an upgrade, or a
 * restart after a crash) finds it as it was:
 *   - the kernel's INIT request, which the next daemon replays to libfuse
 *     (the kernel does INIT once per connection);
 *   - the inode numbers given out so far (the next daemon numbers above);
 *   - the requests read and not yet answered (a kernel without
 *     FUSE_NOTIFY_RESEND: the next daemon fails them with EIO);
 *   - the open-file handles (handle.h keeps its slots here).
 * Written by the daemon's threads without locks (atomics, a slot at a
 * time); read by the next daemon only once the last one is gone.
 */
#ifndef MODELFS_KEEP_H
#define MODELFS_KEEP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct keep;

/* A new state file for handles of @rec_size bytes, at most @n_handles.
 * @return 0 or -errno. */
int keep_create(size_t rec_size, unsigned n_handles, struct keep **out);
/* The state file @fd that another daemon left (the fd is kept). @return 0,
 * or -EPROTO with @msg set when it is of another layout. */
int keep_adopt(int fd, size_t rec_size, unsigned n_handles, struct keep **out, char *msg,
	       size_t len);
void keep_free(struct keep *k);
int keep_fd(const struct keep *k);

/* The kernel's INIT request, as read from /dev/fuse (at most 256 bytes). */
void keep_set_init(struct keep *k, const void *req, size_t len);
/* @return its length (0: none yet), copied to @buf. */
size_t keep_get_init(struct keep *k, void *buf, size_t len);

/* The next inode number never given: the tree keeps it here. */
_Atomic uint64_t *keep_ino_next(struct keep *k);

/* Requests read and not answered yet, by their unique id. */
void keep_inflight_add(struct keep *k, uint64_t unique);
void keep_inflight_del(struct keep *k, uint64_t unique);
unsigned keep_inflight_count(struct keep *k);
/* Copy the ids in flight to @out (at most @n). @return how many. */
size_t keep_inflight_list(struct keep *k, uint64_t *out, size_t n);
/* Forget them all (the next daemon, once it has dealt with them). */
void keep_inflight_clear(struct keep *k);

/* The handles' slots: 8 + @n_handles x (8 + @rec_size) bytes, zeroed at
 * first (handle.h). */
void *keep_handles(struct keep *k);

#endif
