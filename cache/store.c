/* Data files, range locks, pins and chunk records: how one chunk is found,
 * checked, written and recorded on disk (the protocols: cache_i.h). */
#include "cache_i.h"
#include "crc32c.h"
#include "evict.h"
#include "log.h"
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>
#include <openssl/sha.h>

uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int objid_of(const struct cache_object *o, uint8_t id[OBJID_LEN])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t ls = strlen(o->source), lk = strlen(o->key), le = strlen(o->etag);
	char *buf = malloc(ls + lk + le + 32);
	int n;

	if (!buf)
		return -ENOMEM;
	/* NULs separate the fields: no two identities hash the same input */
	memcpy(buf, o->source, ls + 1);
	memcpy(buf + ls + 1, o->key, lk + 1);
	memcpy(buf + ls + lk + 2, o->etag, le + 1);
	n = snprintf(buf + ls + lk + le + 3, 29, "%llu", (unsigned long long)o->size);
	SHA256((const unsigned char *)buf, ls + lk + le + 3 + (size_t)n, md);
	free(buf);
	memcpy(id, md, OBJID_LEN);
	return 0;
}

void objid_path(const uint8_t *id, char out[64])
{
	char hex[2 * OBJID_LEN + 1];

	for (int i = 0; i < OBJID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", id[i]);
	snprintf(out, 64, "%.2s/%s", hex, hex);
}

int open_data(struct cache *c, const uint8_t *id, int flags)
{
	char rel[64];
	int fd;

	objid_path(id, rel);
	fd = openat(c->data_fd, rel, flags | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT && (flags & O_CREAT)) {
		char sub[3] = {rel[0], rel[1], '\0'};
		if (mkdirat(c->data_fd, sub, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(c->data_fd, rel, flags | O_CLOEXEC, 0600);
	}
	return fd < 0 ? -errno : fd;
}

/* OFD byte-range lock on [off, off + len) (len 0: to the end of the file). */
int range_lock(int fd, short type, uint64_t off, uint64_t len, int wait)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)off,
			   .l_len = (off_t)len};

	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}


/* Read [a, a + n) of a recorded chunk from its data file, checking every
 * block it touches. @return 0, -EBADMSG (check failed, short, or no file:
 * damaged or evicted), other -errno. */
int blocks_ok(const struct index_chunk *rec, const char *buf, uint32_t b0, uint32_t b1,
	      uint32_t span)
{
	for (uint32_t b = b0; b <= b1; b++) {
		uint32_t bo = (b - b0) * INDEX_BLOCK;
		uint32_t bl = span - bo < INDEX_BLOCK ? span - bo : INDEX_BLOCK;
		if (crc32c(0, buf + bo, bl) != rec->crc[b])
			return 0;
	}
	return 1;
}

static int read_recorded(struct cache *c, const uint8_t *id, uint32_t chunk,
			 const struct index_chunk *rec, uint32_t a, uint32_t n, char *dst, int direct)
{
	uint32_t b0 = a / INDEX_BLOCK, b1 = (a + n - 1) / INDEX_BLOCK;
	uint32_t span_off = b0 * INDEX_BLOCK;
	uint32_t span_end = (b1 + 1) * INDEX_BLOCK < rec->len ? (b1 + 1) * INDEX_BLOCK : rec->len;
	uint32_t span = span_end - span_off;
	char *buf;
	ssize_t r;
	int fd, err = 0;

	if (b1 >= rec->nblocks || a + n > rec->len)
		return -EBADMSG;
	/* A random reader's block-aligned request is read with O_DIRECT into the
	 * caller's buffer: no page cache of the data file is filled for bytes that
	 * are read once (the mount's page cache keeps them), which on a VM is
	 * dearer than the read. Sequential readers keep the kernel's readahead. */
	direct = direct && span_off == a && span == n && n % DIO_ALIGN == 0 &&
		 (uintptr_t)dst % DIO_ALIGN == 0;
	fd = open_data(c, id, O_RDONLY | (direct ? O_DIRECT : 0));
	if (fd == -EINVAL && direct)
		fd = open_data(c, id, O_RDONLY); /* no O_DIRECT here (tmpfs before 6.6) */
	if (fd < 0)
		return fd == -ENOENT ? -EBADMSG : fd; /* recorded, but the file is gone */
	/* A request on block boundaries (the kernel's reads are) goes straight
	 * into the caller's buffer: one copy less. */
	buf = span_off == a && span == n ? dst : malloc(span);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	r = pread(fd, buf, span, (off_t)((uint64_t)chunk * c->chunk_size + span_off));
	err = r < 0 ? -errno : 0;
	close(fd);
	if (err == -EINVAL && direct) /* alignment the filesystem will not take */
		return read_recorded(c, id, chunk, rec, a, n, dst, 0);
	if (r != (ssize_t)span) {
		err = r < 0 ? err : -EBADMSG;
		goto out;
	}
	if (!blocks_ok(rec, buf, b0, b1, span)) {
		err = -EBADMSG;
		goto out;
	}
	if (buf != dst)
		memcpy(dst, buf + (a - span_off), n);
out:
	if (buf != dst)
		free(buf);
	return err;
}

/* Try to serve from disk. @return 0, or -ENOENT/-EBADMSG (fetch it). */
int try_disk(struct cache *c, const uint8_t *id, uint32_t chunk, uint32_t clen, uint32_t a,
		    uint32_t n, char *dst, struct index_chunk *rec, int direct)
{
	int err = index_chunk_get(c->ix, id, chunk, rec);

	if (err)
		return err;
	if (rec->len != clen)
		return -EBADMSG;
	return read_recorded(c, id, chunk, rec, a, n, dst, direct);
}


/* May a new chunk of @len bytes be stored? Not past the quota: usage stays
 * within the quota plus the chunks in flight. */
int may_store(struct cache *c, uint32_t len)
{
	struct index_stats st;

	if (now_ms() < atomic_load(&c->store_pause_until_ms))
		return 0;
	if (index_stats(c->ix, &st))
		return 0;
	if (evict_needed(st.usage + len, c->quota, c->high))
		want_eviction(c);
	if (st.usage + len > c->quota) {
		log_once(LOG_LVL_WARN, "cache %s is full (quota %llu MiB): serving from the backend "
			 "without caching until eviction makes room", c->dir,
			 (unsigned long long)(c->quota >> 20));
		return 0;
	}
	return 1;
}

void store_failed(struct cache *c, int err)
{
	atomic_fetch_add(&c->store_errors, 1);
	if (err == -ENOSPC)
		atomic_fetch_add(&c->store_enospc, 1);
	atomic_store(&c->store_pause_until_ms, now_ms() + STORE_PAUSE_MS);
	log_once(LOG_LVL_WARN, "cannot write to the cache in %s (%s): serving from the backend "
		 "without caching for now", c->dir, strerror(-err));
	if (err == -ENOSPC)
		want_eviction(c);
}

/* Fill @rec's length, block count and use time for a chunk of @clen bytes. */
void record_head(struct index_chunk *rec, uint32_t clen)
{
	rec->len = clen;
	rec->nblocks = (clen + INDEX_BLOCK - 1) / INDEX_BLOCK;
	rec->last_use_ms = now_ms();
}

/* Fill @rec for the chunk of @clen bytes in @buf: length, use, checksums. */
void record_of(struct index_chunk *rec, const char *buf, uint32_t clen)
{
	record_head(rec, clen);
	for (uint32_t b = 0; b < rec->nblocks; b++) {
		uint32_t bl = clen - b * INDEX_BLOCK < INDEX_BLOCK ? clen - b * INDEX_BLOCK
								   : INDEX_BLOCK;
		rec->crc[b] = crc32c(0, buf + (size_t)b * INDEX_BLOCK, bl);
	}
}

/* Write a whole chunk from memory to its data file: with O_DIRECT through
 * @dfd where the filesystem takes it (on EINVAL, or @dfd -1, the write is
 * buffered through @fd). Why: the bytes are in memory for their reader
 * already, and filling the data file's page cache as well costs more CPU
 * than the rest of the cold path (allocating those pages, on a VM above
 * all). @return 0 or -errno. */
/* A data file has its object's size from the start: writes never extend
 * it, so that with the chunk allocated first (write_chunk) a direct write
 * takes the file's lock shared and writers of one file work in parallel
 * (ext4, xfs). Holes read as zeros, and only recorded chunks are read. */
void size_data(struct cache *c, int fd, uint64_t size)
{
	struct stat st;

	if (c->prealloc && fstat(fd, &st) == 0 && (uint64_t)st.st_size < size)
		(void)ftruncate(fd, (off_t)size);
}

int write_chunk(struct cache *c, int fd, int dfd, const char *buf, uint64_t coff,
		       uint32_t clen)
{
	uint32_t head = dfd >= 0 ? clen & ~(DIO_ALIGN - 1) : 0;
	ssize_t w;

	if (head && c->prealloc)
		(void)fallocate(dfd, 0, (off_t)coff, head); /* a hint: the write says if it fails */
	if (head) {
		w = pwrite(dfd, buf, head, (off_t)coff);
		if (w < 0 && errno == EINVAL) {
			head = 0;
		} else if (w != (ssize_t)head) {
			return w < 0 ? -errno : -ENOSPC;
		}
	}
	if (clen > head) {
		w = pwrite(fd, buf + head, clen - head, (off_t)(coff + head));
		if (w != (ssize_t)(clen - head))
			return w < 0 ? -errno : -ENOSPC;
	}
	return 0;
}

/* Take the fetch lock of chunk @chunk. A reader (@dst) stops waiting as soon
 * as the chunk shows up in memory: its stream publishes it before the write
 * to disk that the lock outlasts; or as soon as the fetch it waits on fails.
 * @return 0 locked, 1 read from memory into @dst, 2 that fetch failed (its
 * error in *@failed), or -errno. */
int lock_chunk(struct cache *c, int fd, const uint8_t *id, uint32_t chunk, uint32_t a,
		      uint32_t n, char *dst, int *failed)
{
	uint64_t coff = (uint64_t)chunk * c->chunk_size;
	int err;

	for (int waited = 0;; waited = 1) {
		err = range_lock(fd, F_WRLCK, coff, c->chunk_size, 0);
		if (err != -EAGAIN && err != -EACCES)
			return err;
		if (!waited && dst)
			atomic_fetch_add(&c->flight_waits, 1); /* a reader waits: another fetches it */
		if (!dst || !c->mem)
			return range_lock(fd, F_WRLCK, coff, c->chunk_size, 1);
		if (mem_wait_read(c->mem, id, chunk, a, n, dst, 10) == 0)
			return 1;
		/* the fetch we wait on failed: its error is ours, now */
		if ((*failed = flight_failed(c->fl, id)) != 0)
			return 2;
	}
}

int cache_cached_bytes(struct cache *c, const struct cache_object *obj, uint64_t *bytes)
{
	uint8_t id[OBJID_LEN];
	struct index_object io;
	int err;

	*bytes = 0;
	if (!c->ix)
		return -ENODATA;
	err = objid_of(obj, id);
	if (!err)
		err = index_object_get(c->ix, id, &io);
	if (err == -ENOENT)
		return 0;
	if (!err)
		*bytes = io.cached_bytes;
	return err;
}

int cache_pin(struct cache *c, const struct cache_object *obj)
{
	uint8_t id[OBJID_LEN];
	struct index_object io;
	struct stat st;
	off_t hole;
	int fd, err;

	if (!c->ix)
		return -ENODATA;
	if (obj->size == 0)
		return -ENOENT; /* nothing to read: not worth a data file */
	err = objid_of(obj, id);
	if (err)
		return err;
	fd = open_data(c, id, O_RDONLY);
	if (fd < 0)
		return fd;
	/* Pin first, then look: once pinned nothing can be evicted, so what the
	 * index says next stays true while the pin is held. */
	err = range_lock(fd, F_RDLCK, PIN_OFF, 1, 1);
	if (!err)
		err = index_object_get(c->ix, id, &io);
	if (!err && io.cached_bytes != obj->size)
		err = -ENOENT;
	/* The index says complete; the file must agree (a data file truncated
	 * or punched behind our back would read as zeros, not fail). */
	if (!err && fstat(fd, &st) < 0)
		err = -errno;
	if (!err && (uint64_t)st.st_size < obj->size)
		err = -ENOENT;
	if (!err && (hole = lseek(fd, 0, SEEK_HOLE)) >= 0 && (uint64_t)hole < obj->size)
		err = -ENOENT;
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

void cache_unpin(struct cache *c, const struct cache_object *obj, int fd)
{
	uint8_t id[OBJID_LEN];

	close(fd);
	if (!c->ix || objid_of(obj, id))
		return;
	/* Reads of a pinned file never came through here: count them as one
	 * use now, so a model in use is not the first thing evicted. */
	for (uint32_t k = 0; (uint64_t)k * c->chunk_size < obj->size; k++)
		touch_chunk(c, id, k);
}
