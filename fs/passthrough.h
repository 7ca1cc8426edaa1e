/* FUSE passthrough: the kernel reads a fully cached file straight from its
 * data file in the cache, with no request to the daemon (Linux >= 6.9).
 *
 * libfuse 3.14 (Debian 12) predates passthrough, so this module speaks the
 * few bits of protocol it needs through the channel's I/O hooks: it sets
 * FUSE_PASSTHROUGH in the INIT reply when the kernel offers it, registers
 * data files with the FUSE_DEV_IOC_BACKING_OPEN ioctl, and sets
 * FOPEN_PASSTHROUGH and the backing id in the OPEN replies it is asked to.
 *
 * The kernel's rules it keeps (fs/fuse/iomode.c): a passthrough open may not
 * carry FOPEN_KEEP_CACHE; all passthrough opens of one inode at a time use
 * one backing file; an inode open through the page cache cannot also be
 * open in passthrough, and the other way round. So an inode's mode is
 * chosen at its first open and kept while any open of it lasts; an inode
 * once read through the daemon stays so for the mount's life (its pages are
 * in the mount's page cache, which passthrough opens would not use).
 */
#ifndef MODELFS_PASSTHROUGH_H
#define MODELFS_PASSTHROUGH_H

#include <fuse_lowlevel.h>

#include <stdint.h>
#include <sys/uio.h>

struct pt;

/* For session @se. @enable 0: never pass through. @max_pages: the largest
 * FUSE request, in pages, to ask the kernel for (0: libfuse's 256).
 * @return 0 or -ENOMEM. */
int pt_setup(struct fuse_session *se, int enable, unsigned max_pages, struct pt **out);
void pt_free(struct pt *pt);

/* The channel's hooks (channel.c): every request read (the INIT tells
 * what the kernel offers), every reply before it is written (the INIT and
 * OPEN replies are amended in place). */
void pt_saw_request(struct pt *pt, const void *buf, size_t len);
void pt_amend_reply(struct pt *pt, struct iovec *iov, int count);

/* The backing id of @ino while it is open in passthrough, else 0. */
int32_t pt_backing_id(struct pt *pt, fuse_ino_t ino);
/* An open another daemon made on this connection (an upgrade, a crash):
 * @mode as pt_open returned, @backing_id the kernel's (mode 1; the kernel's
 * reference to the data file still holds the pin). @return 0 or -ENOMEM. */
int pt_adopt(struct pt *pt, fuse_ino_t ino, const char *version, int mode, int32_t backing_id);

/* Opens a complete data file for @arg, pinned: fd >= 0, or -errno (not all
 * cached, no cache...). */
typedef int (*pt_pin_fn)(void *arg);

/* Choose how an open of @ino (object version @version) goes: 1 pass through
 * (reply with pt_reply_open), 0 through the daemon, -ESTALE when another
 * version of the inode is open in passthrough (the kernel cannot mix them;
 * this clears when those opens close). @pin runs only when the inode is not
 * open yet. */
int pt_open(struct pt *pt, fuse_ino_t ino, const char *version, pt_pin_fn pin, void *arg);

/* Reply to an open that pt_open passed through (clears keep_cache, which the
 * kernel refuses with passthrough). @return what fuse_reply_open returns;
 * on failure (interrupted) call pt_release as for a release. */
int pt_reply_open(struct pt *pt, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* The release of an open that pt_open returned @mode for. @return the pinned
 * fd, for the caller to unpin, when this was the inode's last passthrough
 * open; else -1. */
int pt_release(struct pt *pt, fuse_ino_t ino, int mode);

/* Whether the kernel took passthrough at INIT (known after the first request). */
int pt_active(const struct pt *pt);

#endif
