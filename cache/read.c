/* The read path: a chunk from memory, the disk or the store, one fetch per
 * chunk however many readers want it (single flight). */
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

/* What one object may hold of the fetch slots: half of them for reads that
 * someone waits for, and, counted apart, half of the readahead workers for
 * readahead (which skips a run rather than wait), so one stalled object
 * leaves the rest of the mount its fetches and its readahead, and a busy
 * healthy one keeps its readahead. */
unsigned demand_cap(const struct cache *c)
{
	return c->max_fetches / 2 ? c->max_fetches / 2 : 1;
}

unsigned ra_cap(const struct cache *c) { return c->n_ra / 2 ? c->n_ra / 2 : 1; }

/* Fetch chunk @chunk (@clen bytes) into the cache and copy [a, a + n) out. */
int fetch_chunk(struct cache *c, const struct cache_object *o, const uint8_t *id,
		       uint32_t chunk, uint32_t clen, uint32_t a, uint32_t n, char *dst,
		       int refetch)
{
	uint64_t coff = (uint64_t)chunk * c->chunk_size;
	struct index_chunk *rec = malloc(sizeof(*rec));
	struct mem_buf *mb = NULL;
	char *buf = NULL;
	size_t got = 0;
	int fd, err, from_mem, failed = 0;

	if (!rec)
		return -ENOMEM;
	fd = open_data(c, id, O_RDWR | O_CREAT);
	if (fd >= 0)
		size_data(c, fd, o->size);
	if (fd < 0) {
		store_failed(c, fd);
	} else if ((err = lock_chunk(c, fd, id, chunk, a, n, dst, &failed)) == 2) {
		err = failed;
		goto out;
	} else if (err < 0) {
		close(fd);
		fd = -1;
		store_failed(c, err);
	} else if ((from_mem = err == 1 || (dst && c->mem &&
						       mem_read(c->mem, id, chunk, a, n, dst) == 0)) ||
		   (dst ? try_disk(c, id, chunk, clen, a, n, dst, rec, 0) == 0
			: index_chunk_get(c->ix, id, chunk, rec) == 0 && rec->len == clen)) {
		/* another thread or process fetched it while we waited */
		if (dst)
			note_hit(c, id, chunk, from_mem, n);
		err = 0;
		goto out;
	}

	/* whoever held the lock before us may just have failed */
	if ((err = flight_failed(c->fl, id)) != 0)
		goto out;
	/* a pool buffer: the chunk stays in memory for the readers after us */
	mb = c->mem ? mem_take(c->mem) : NULL;
	buf = mb ? mem_data(mb) : malloc(clen);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = flight_get(c->fl, id, FLIGHT_DEMAND, demand_cap(c))) != 0)
		goto out; /* the object failed while we waited for a slot */
	err = backend_read(c->be, &(struct backend_ref){o->key, o->etag, o->size}, coff, clen,
			       buf, &got);
	if (!err && got != clen)
		err = -ESTALE; /* shorter than the listing said: another version */
	/* before the chunk's lock goes: its waiters find the error, not a slot */
	flight_put(c->fl, id, FLIGHT_DEMAND, err);
	if (err)
		goto out;
	note_fetched(c, clen);
	if (dst)
		atomic_fetch_add_explicit(&c->store_bytes, n, memory_order_relaxed);
	if (refetch)
		atomic_fetch_add(&c->refetches, 1);

	if (fd >= 0 && mb && dst && c->n_wr && may_store(c, clen)) {
		/* a reader waits: give it the bytes now, and the write to a writer */
		struct data_files *files = NULL;
		struct wr_job *j = wr_job_new(o);
		int dfd = j ? open_data(c, id, O_WRONLY | O_DIRECT) : -1;
		if (j && !(files = files_new(fd, dfd)) && dfd >= 0)
			close(dfd);
		if (files) {
			record_of(j->rec, buf, clen);
			memcpy(dst, buf + a, n);
			mem_publish(c->mem, mb, id, chunk, clen, 1);
			j->files = files;
			j->fd = files->fd;
			j->dfd = files->dfd;
			j->record = 1;
			memcpy(j->id, id, OBJID_LEN);
			j->osize = o->size;
			j->mb = mb;
			j->chunk = chunk;
			j->clen = clen;
			wr_push(c, j);
			files_put(c, files); /* the job's now */
			free(rec);
			return 0;
		}
		if (j) {
			free(j->rec);
			free(j);
		}
	}
	if (fd >= 0 && may_store(c, clen)) {
		int dfd = mb ? open_data(c, id, O_WRONLY | O_DIRECT) : -1;
		record_of(rec, buf, clen);
		err = write_chunk(c, fd, dfd, buf, coff, clen);
		if (dfd >= 0)
			close(dfd);
		if (!err) {
			char name[1024];
			snprintf(name, sizeof(name), "%s/%s", o->source, o->key);
			err = index_chunk_put(c->ix, id, chunk, rec, name, o->size);
		}
		if (err) {
			/* nothing unrecorded stays allocated */
			fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)coff, clen);
			store_failed(c, err);
		}
		err = 0;
	} else if (fd >= 0) {
		atomic_fetch_add(&c->uncached, 1);
	}
	if (dst)
		memcpy(dst, buf + a, n);
	if (mb) {
		/* readable from memory before the lock that readers wait on goes */
		mem_publish(c->mem, mb, id, chunk, clen, 0);
		mb = NULL;
		buf = NULL;
	}
out:
	if (fd >= 0)
		close(fd); /* releases the range lock */
	if (mb)
		mem_drop(c->mem, mb);
	else
		free(buf);
	free(rec);
	return err;
}

uint32_t chunk_len(const struct cache *c, uint64_t size, uint32_t chunk)
{
	uint64_t coff = (uint64_t)chunk * c->chunk_size;

	return size - coff < c->chunk_size ? (uint32_t)(size - coff) : c->chunk_size;
}

static int read_chunk(struct cache *c, const struct cache_object *o, const uint8_t *id,
		      uint32_t chunk, uint32_t a, uint32_t n, char *dst, int direct)
{
	uint32_t clen = chunk_len(c, o->size, chunk);
	struct index_chunk rec; /* ~4 KiB on the stack: no allocation per read */
	int err;

	if (c->mem && mem_read(c->mem, id, chunk, a, n, dst) == 0) {
		note_hit(c, id, chunk, 1, n);
		return 0;
	}
	err = try_disk(c, id, chunk, clen, a, n, dst, &rec, direct);
	if (err == 0) {
		note_hit(c, id, chunk, 0, n);
		return 0;
	}
	if (err == -EBADMSG)
		log_info("cached chunk %u of %s/%s failed its check (damaged or evicted): "
			 "fetching it again", chunk, o->source, o->key);
	else if ((err = flight_failed(c->fl, id)) != 0)
		return err; /* failed a moment ago: fail fast, not a whole budget again */
	return fetch_chunk(c, o, id, chunk, clen, a, n, dst, err == -EBADMSG);
}

static int read_range(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
		      void *buf, size_t *got, int direct)
{
	uint8_t id[OBJID_LEN];
	size_t want, done = 0;
	int err = 0;

	*got = 0;
	if (off >= obj->size || len == 0)
		return 0;
	want = obj->size - off < len ? (size_t)(obj->size - off) : len;
	err = objid_of(obj, id);
	if (err)
		return err;
	if (!c->ix) {
		if ((err = flight_failed(c->fl, id)) != 0)
			return err;
		err = backend_read(c->be, &(struct backend_ref){obj->key, obj->etag, obj->size},
				       off, want, buf, got);
		if (!err && *got != want)
			err = -ESTALE; /* the object is shorter than its listing said */
		if (!err)
			atomic_fetch_add_explicit(&c->store_bytes, *got, memory_order_relaxed);
		flight_fail(c->fl, id, err);
		return err;
	}
	while (done < want) {
		uint64_t pos = off + done;
		uint32_t chunk = (uint32_t)(pos / c->chunk_size);
		uint32_t a = (uint32_t)(pos % c->chunk_size);
		uint32_t n = c->chunk_size - a < want - done ? c->chunk_size - a : (uint32_t)(want - done);
		err = read_chunk(c, obj, id, chunk, a, n, (char *)buf + done, direct);
		if (err)
			return err;
		done += n;
	}
	*got = done;
	return 0;
}

int cache_read(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
	       void *buf, size_t *got)
{
	return read_range(c, obj, off, len, buf, got, 0);
}

int cache_read_random(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
		      void *buf, size_t *got)
{
	return read_range(c, obj, off, len, buf, got, 1);
}

int cache_read_inplace(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
		       int (*fn)(void *arg, const struct iovec *iov, int count), void *arg, int *ret)
{
	struct iovec iov[CACHE_INPLACE_MAX];
	struct mem_buf *ref[CACHE_INPLACE_MAX];
	uint8_t id[OBJID_LEN];
	uint64_t pos, end;
	int k = 0, all = 1;

	if (!c->mem || off >= obj->size || len == 0 || objid_of(obj, id))
		return 0;
	end = obj->size - off < len ? obj->size : off + len;
	for (pos = off; pos < end && all; k++) {
		uint32_t chunk = (uint32_t)(pos / c->chunk_size);
		uint32_t a = (uint32_t)(pos % c->chunk_size);
		uint32_t n = end - pos < c->chunk_size - a ? (uint32_t)(end - pos) : c->chunk_size - a;
		const char *p = k < CACHE_INPLACE_MAX ? mem_get(c->mem, id, chunk, a, n, &ref[k]) : NULL;
		if (!p) {
			all = 0;
			break;
		}
		iov[k] = (struct iovec){(void *)p, n};
		pos += n;
	}
	if (all) {
		for (int i = 0; i < k; i++)
			note_hit(c, id, (uint32_t)(off / c->chunk_size) + (uint32_t)i, 1,
				 (uint32_t)iov[i].iov_len);
		*ret = fn(arg, iov, k);
	}
	for (int i = 0; i < k; i++)
		mem_put(c->mem, ref[i]);
	return all;
}

/* Streaming fetch of a run of chunks (readahead).
 *
 * One GET for many chunks: object stores (and s3rver above all) serve one
 * long ranged GET much faster than many short ones. The bytes go to the data
 * file block by block as they arrive (64 KiB of memory, whatever the run's
 * length); each chunk is recorded and its range lock released as soon as it
 * is complete, so a reader waiting on it goes on at once. */
