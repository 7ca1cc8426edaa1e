/* FUSE passthrough, through the channel's I/O hooks (channel.c).
 *
 * Only two messages are touched, both in place before they are written:
 * the INIT reply (the passthrough flag and the stacking depth; and
 * max_pages, which libfuse 3.14 fixes at 256 pages) and OPEN replies that
 * pt_reply_open marks from the same thread. Everything else passes through
 * the hooks unchanged. The protocol constants below are the kernel's stable
 * ABI (include/uapi/linux/fuse.h, protocol 7.40), which Debian 12's headers
 * predate.
 */
#include "passthrough.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define PT_OP_INIT            26
#define PT_INIT_EXT           (1u << 30) /* FUSE_INIT_EXT: flags2 is valid */
#define PT_FLAGS2_PASSTHROUGH (1u << 5)  /* FUSE_PASSTHROUGH is bit 37 */
#define PT_FOPEN_PASSTHROUGH  (1u << 7)
#define PT_MAX_PAGES          (1u << 22) /* FUSE_MAX_PAGES: max_pages is valid */
#define PT_FOPEN_KEEP_CACHE   (1u << 1)
#define PT_IN_HEADER          40 /* struct fuse_in_header */
#define PT_OUT_HEADER         16 /* struct fuse_out_header */
#define PT_INIT_OUT_MIN       40 /* struct fuse_init_out up to max_stack_depth */
#define PT_OPEN_OUT           16 /* struct fuse_open_out */
/* Backing files may sit on a filesystem of stacking depth 0 (ext4, xfs,
 * tmpfs); the mount itself then counts as depth 1 for anything stacked on
 * it. */
#define PT_MAX_STACK_DEPTH 1

struct pt_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define PT_DEV_IOC_BACKING_OPEN  _IOW(229, 1, struct pt_backing_map)
#define PT_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

#define PT_BUCKETS 256

/* One inode that has opens. */
struct pt_inode {
	struct pt_inode *next;
	fuse_ino_t ino;
	unsigned n_pt, n_daemon; /* opens in each mode (only one is non-zero) */
	int via_daemon;          /* was read through the daemon in this mount */
	int32_t backing_id;
	int fd; /* the pinned data file while n_pt > 0 */
	char *version;
};

struct pt {
	struct fuse_session *se;
	int enable;
	unsigned max_pages;           /* to ask for in the INIT reply, 0: libfuse's */
	_Atomic uint64_t init_unique; /* the INIT request's id, 0 before it */
	atomic_int kernel_offers;     /* the kernel's INIT offered passthrough */
	atomic_int active;            /* ... and we took it */
	atomic_int init_done;
	pthread_mutex_t lock;
	struct pt_inode *tab[PT_BUCKETS];
};

/* The backing id to put in the OPEN reply this thread writes next. */
static _Thread_local int32_t reply_backing;

static uint32_t get32(const void *p, size_t off)
{
	uint32_t v;
	memcpy(&v, (const char *)p + off, 4);
	return v;
}

static void put32(void *p, size_t off, uint32_t v)
{
	memcpy((char *)p + off, &v, 4);
}

void pt_saw_request(struct pt *pt, const void *buf, size_t r)
{
	if (r >= PT_IN_HEADER + 20 && !atomic_load(&pt->init_unique) &&
	    get32(buf, 4) == PT_OP_INIT) {
		uint64_t unique;
		memcpy(&unique, (char *)buf + 8, 8);
		/* fuse_init_in: major, minor, max_readahead, flags, flags2 */
		if ((get32(buf, PT_IN_HEADER + 12) & PT_INIT_EXT) &&
		    (get32(buf, PT_IN_HEADER + 16) & PT_FLAGS2_PASSTHROUGH))
			atomic_store(&pt->kernel_offers, 1);
		atomic_store(&pt->init_unique, unique);
	}
}

void pt_amend_reply(struct pt *pt, struct iovec *iov, int count)
{
	if (count >= 2 && iov[0].iov_len >= PT_OUT_HEADER && get32(iov[0].iov_base, 4) == 0) {
		uint64_t unique;
		memcpy(&unique, (char *)iov[0].iov_base + 8, 8);
		if (reply_backing && iov[1].iov_len == PT_OPEN_OUT) {
			/* fuse_open_out: fh, open_flags, backing_id */
			uint32_t fl = get32(iov[1].iov_base, 8);
			put32(iov[1].iov_base, 8,
			      (fl & ~PT_FOPEN_KEEP_CACHE) | PT_FOPEN_PASSTHROUGH);
			put32(iov[1].iov_base, 12, (uint32_t)reply_backing);
			reply_backing = 0;
		} else if (!atomic_load(&pt->init_done) && unique &&
		           unique == atomic_load(&pt->init_unique)) {
			/* fuse_init_out: flags at 12, max_pages (16 bits) at 28;
			 * libfuse set the flag when the kernel offered it, and the
			 * kernel caps the value at fs.fuse.max_pages_limit */
			if (pt->max_pages && iov[1].iov_len >= PT_INIT_OUT_MIN &&
			    (get32(iov[1].iov_base, 12) & PT_MAX_PAGES)) {
				uint16_t mp = (uint16_t)pt->max_pages;
				memcpy((char *)iov[1].iov_base + 28, &mp, 2);
			}
			if (!pt->enable) {
				/* no passthrough wanted */
			} else if (atomic_load(&pt->kernel_offers) && iov[1].iov_len >= PT_INIT_OUT_MIN) {
				/* fuse_init_out: flags at 12, flags2 at 32,
				 * max_stack_depth at 36 */
				put32(iov[1].iov_base, 12,
				      get32(iov[1].iov_base, 12) | PT_INIT_EXT);
				put32(iov[1].iov_base, 32,
				      get32(iov[1].iov_base, 32) | PT_FLAGS2_PASSTHROUGH);
				put32(iov[1].iov_base, 36, PT_MAX_STACK_DEPTH);
				atomic_store(&pt->active, 1);
				log_info(
				    "kernel passthrough on: fully cached files are read by the "
				    "kernel from the cache");
			} else {
				log_info(
				    "the kernel has no FUSE passthrough (Linux >= 6.9): cached "
				    "files are read through the daemon");
			}
			atomic_store(&pt->init_done, 1);
		}
	}
}

int pt_setup(struct fuse_session *se, int enable, unsigned max_pages, struct pt **out)
{
	struct pt *pt = calloc(1, sizeof(*pt));

	if (!pt)
		return -ENOMEM;
	pt->se = se;
	pt->enable = enable;
	pt->max_pages = max_pages > 65535 ? 65535 : max_pages;
	pthread_mutex_init(&pt->lock, NULL);
	*out = pt;
	return 0;
}

void pt_free(struct pt *pt)
{
	if (!pt)
		return;
	for (size_t b = 0; b < PT_BUCKETS; b++) {
		while (pt->tab[b]) {
			struct pt_inode *e = pt->tab[b];
			pt->tab[b] = e->next;
			free(e->version);
			free(e);
		}
	}
	pthread_mutex_destroy(&pt->lock);
	free(pt);
}

int pt_active(const struct pt *pt)
{
	return pt && atomic_load(&pt->active);
}

static struct pt_inode **slot_of(struct pt *pt, fuse_ino_t ino)
{
	struct pt_inode **p = &pt->tab[ino % PT_BUCKETS];

	while (*p && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

/* Register @fd with the kernel. @return the backing id (> 0) or -errno. */
static int backing_open(struct pt *pt, int fd)
{
	struct pt_backing_map map = {.fd = fd};
	int id = ioctl(fuse_session_fd(pt->se), PT_DEV_IOC_BACKING_OPEN, &map);

	if (id > 0)
		return id;
	return id == 0 ? -EIO : -errno;
}

static void backing_close(struct pt *pt, int32_t id)
{
	uint32_t u = (uint32_t)id;

	ioctl(fuse_session_fd(pt->se), PT_DEV_IOC_BACKING_CLOSE, &u);
}

int pt_open(struct pt *pt, fuse_ino_t ino, const char *version, pt_pin_fn pin, void *arg)
{
	struct pt_inode **p, *e;
	int mode = 0, fd, id;

	pthread_mutex_lock(&pt->lock);
	p = slot_of(pt, ino);
	e = *p;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->version = strdup(version))) {
			free(e);
			pthread_mutex_unlock(&pt->lock);
			return 0; /* no room to track it: through the daemon, always allowed */
		}
		e->ino = ino;
		e->fd = -1;
		*p = e;
	}
	if (e->n_pt) {
		if (strcmp(e->version, version) != 0) {
			pthread_mutex_unlock(&pt->lock);
			return -ESTALE;
		}
		e->n_pt++;
		pthread_mutex_unlock(&pt->lock);
		return 1;
	}
	/* An inode once read through the daemon stays so: its bytes are in the
	 * mount's page cache (keep_cache), which passthrough opens would not
	 * use; a second load on the node should find them there. */
	if (!e->n_daemon && !e->via_daemon && atomic_load(&pt->active) && (fd = pin(arg)) >= 0) {
		id = backing_open(pt, fd);
		/* A new entry (entries go when their last open does), so its
		 * version is this open's. */
		if (id > 0) {
			e->fd = fd;
			e->backing_id = id;
			mode = 1;
		} else {
			close(fd); /* unpins */
			/* EPERM: the daemon lacks CAP_SYS_ADMIN; ELOOP: the cache
			 * sits on a stacked filesystem (overlayfs). */
			log_warn("kernel passthrough refused (%s): cached files are read "
			         "through the daemon",
			         strerror(-id));
			atomic_store(&pt->active, 0);
		}
	}
	if (mode) {
		e->n_pt++;
	} else {
		e->n_daemon++;
		e->via_daemon = 1;
	}
	pthread_mutex_unlock(&pt->lock);
	return mode;
}

int pt_reply_open(struct pt *pt, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pt_inode *e;
	int err;

	pthread_mutex_lock(&pt->lock);
	e = *slot_of(pt, ino);
	reply_backing = e ? e->backing_id : 0;
	pthread_mutex_unlock(&pt->lock);
	fi->keep_cache = 0;
	err = fuse_reply_open(req, fi);
	reply_backing = 0;
	return err;
}

int pt_release(struct pt *pt, fuse_ino_t ino, int mode)
{
	struct pt_inode **p, *e;
	int fd = -1;

	pthread_mutex_lock(&pt->lock);
	p = slot_of(pt, ino);
	e = *p;
	if (e && mode == 1 && e->n_pt && --e->n_pt == 0) {
		backing_close(pt, e->backing_id);
		fd = e->fd;
		e->fd = -1;
		e->backing_id = 0;
	} else if (e && mode == 0 && e->n_daemon) {
		e->n_daemon--;
	}
	if (e && !e->n_pt && !e->n_daemon && !e->via_daemon) {
		*p = e->next;
		free(e->version);
		free(e);
	}
	pthread_mutex_unlock(&pt->lock);
	return fd;
}

int32_t pt_backing_id(struct pt *pt, fuse_ino_t ino)
{
	struct pt_inode *e;
	int32_t id = 0;

	pthread_mutex_lock(&pt->lock);
	if ((e = *slot_of(pt, ino)) != NULL && e->n_pt)
		id = e->backing_id;
	pthread_mutex_unlock(&pt->lock);
	return id;
}

int pt_adopt(struct pt *pt, fuse_ino_t ino, const char *version, int mode, int32_t backing_id)
{
	struct pt_inode **p, *e;

	pthread_mutex_lock(&pt->lock);
	p = slot_of(pt, ino);
	if (!(e = *p)) {
		if (!(e = calloc(1, sizeof(*e))) || !(e->version = strdup(version))) {
			free(e);
			pthread_mutex_unlock(&pt->lock);
			return -ENOMEM;
		}
		e->ino = ino;
		e->fd = -1; /* the kernel's reference to the data file keeps the pin */
		*p = e;
	}
	if (mode == 1) {
		e->n_pt++;
		e->backing_id = backing_id;
	} else {
		e->n_daemon++;
		e->via_daemon = 1;
	}
	pthread_mutex_unlock(&pt->lock);
	return 0;
}
