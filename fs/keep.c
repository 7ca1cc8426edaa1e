/* The state that outlives the daemon (keep.h). Layout of the file, all in
 * this machine's byte order (it never leaves the machine):
 *   header (one page): magic, the layout's sizes, the INIT request, the
 *     next inode number, the requests in flight (an open-addressing table
 *     of unique ids, 0 = free);
 *   the handles' slots, from the second page on.
 * The file is sparse: pages of slots never used take no memory.
 */
#include "keep.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEEP_MAGIC "MFSKEEP1"
#define KEEP_INIT_MAX 256
#define KEEP_INFLIGHT 512 /* > the loop's 64 workers, whose requests these are */
#define KEEP_HEADER 8192

struct keep_header {
	char magic[8];
	uint32_t rec_size, n_handles;
	uint32_t init_len;
	unsigned char init[KEEP_INIT_MAX];
	_Atomic uint64_t ino_next;
	_Atomic uint64_t inflight[KEEP_INFLIGHT];
	atomic_uint n_inflight;
};

_Static_assert(sizeof(struct keep_header) <= KEEP_HEADER, "header fits its pages");

struct keep {
	int fd;
	size_t size;
	struct keep_header *h;
};

static size_t keep_size(size_t rec_size, unsigned n_handles)
{
	return KEEP_HEADER + 8 + (size_t)n_handles * (8 + rec_size);
}

static int map(int fd, size_t size, struct keep **out)
{
	struct keep *k = calloc(1, sizeof(*k));
	void *p;

	if (!k)
		return -ENOMEM;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		free(k);
		return -errno;
	}
	k->fd = fd;
	k->size = size;
	k->h = p;
	*out = k;
	return 0;
}

int keep_create(size_t rec_size, unsigned n_handles, struct keep **out)
{
	size_t size = keep_size(rec_size, n_handles);
	int fd = memfd_create("modelfs-state", MFD_CLOEXEC), err;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) != 0 || (err = map(fd, size, out)) != 0) {
		err = -errno;
		close(fd);
		return err ? err : -ENOMEM;
	}
	memcpy((*out)->h->magic, KEEP_MAGIC, 8);
	(*out)->h->rec_size = (uint32_t)rec_size;
	(*out)->h->n_handles = n_handles;
	atomic_store(&(*out)->h->ino_next, 0);
	return 0;
}

int keep_adopt(int fd, size_t rec_size, unsigned n_handles, struct keep **out, char *msg,
	       size_t len)
{
	size_t size = keep_size(rec_size, n_handles);
	struct stat st;
	int err;

	if (fstat(fd, &st) != 0)
		return -errno;
	if ((size_t)st.st_size != size) {
		snprintf(msg, len, "the state the last daemon kept is %lld bytes, this modelfs "
			 "keeps %zu: another layout", (long long)st.st_size, size);
		return -EPROTO;
	}
	if ((err = map(fd, size, out)) != 0)
		return err;
	if (memcmp((*out)->h->magic, KEEP_MAGIC, 8) != 0 || (*out)->h->rec_size != rec_size ||
	    (*out)->h->n_handles != n_handles) {
		snprintf(msg, len, "the state the last daemon kept is of another layout");
		munmap((*out)->h, size);
		free(*out);
		*out = NULL;
		return -EPROTO;
	}
	return 0;
}

void keep_free(struct keep *k)
{
	if (!k)
		return;
	munmap(k->h, k->size);
	close(k->fd);
	free(k);
}

int keep_fd(const struct keep *k) { return k->fd; }

void keep_set_init(struct keep *k, const void *req, size_t len)
{
	if (len > KEEP_INIT_MAX)
		len = KEEP_INIT_MAX;
	memcpy(k->h->init, req, len);
	k->h->init_len = (uint32_t)len;
}

size_t keep_get_init(struct keep *k, void *buf, size_t len)
{
	size_t n = k->h->init_len;

	if (n > len || n > KEEP_INIT_MAX)
		return 0;
	memcpy(buf, k->h->init, n);
	return n;
}

_Atomic uint64_t *keep_ino_next(struct keep *k) { return &k->h->ino_next; }

/* Unique ids go up in steps of 2; a resent request has bit 63 set. */
static size_t home(uint64_t unique) { return (size_t)((unique >> 1) % KEEP_INFLIGHT); }

void keep_inflight_add(struct keep *k, uint64_t unique)
{
	size_t i = home(unique);

	for (size_t n = 0; n < KEEP_INFLIGHT; n++, i = (i + 1) % KEEP_INFLIGHT) {
		uint64_t zero = 0;
		if (atomic_compare_exchange_strong(&k->h->inflight[i], &zero, unique)) {
			atomic_fetch_add(&k->h->n_inflight, 1);
			return;
		}
	}
	/* full: not kept (its reader gets what the kernel does with it) */
}

void keep_inflight_del(struct keep *k, uint64_t unique)
{
	size_t i = home(unique);

	for (size_t n = 0; n < KEEP_INFLIGHT; n++, i = (i + 1) % KEEP_INFLIGHT) {
		uint64_t u = unique;
		if (atomic_compare_exchange_strong(&k->h->inflight[i], &u, 0)) {
			atomic_fetch_sub(&k->h->n_inflight, 1);
			return;
		}
	}
}

unsigned keep_inflight_count(struct keep *k) { return atomic_load(&k->h->n_inflight); }

size_t keep_inflight_list(struct keep *k, uint64_t *out, size_t n)
{
	size_t got = 0;

	for (size_t i = 0; i < KEEP_INFLIGHT && got < n; i++) {
		uint64_t u = atomic_load(&k->h->inflight[i]);
		if (u)
			out[got++] = u;
	}
	return got;
}

void keep_inflight_clear(struct keep *k)
{
	for (size_t i = 0; i < KEEP_INFLIGHT; i++)
		atomic_store(&k->h->inflight[i], 0);
	atomic_store(&k->h->n_inflight, 0);
}

void *keep_handles(struct keep *k) { return (char *)k->h + KEEP_HEADER; }
