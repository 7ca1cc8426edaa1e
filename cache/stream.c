/* Stream fetches (one GET for a run of chunks, cut into chunks as they
 * arrive) and the write-behind pool that writes and records them. */
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

struct stream_fetch {
	struct cache *c;
	const struct cache_object *o;
	const uint8_t *id;
	int fd;
	uint32_t first, count; /* the run */
	uint64_t start, total; /* its bytes in the object */
	uint64_t pos;          /* bytes received in this attempt */
	uint64_t done;         /* bytes of chunks recorded or dropped (any attempt) */
	int dfd;               /* the data file with O_DIRECT, -1: none */
	struct data_files *files; /* fd and dfd, shared with the stream's write jobs */
	int may_drop;          /* its writes may be dropped when the disk is behind */
	unsigned *pending;     /* counts its write jobs (a prefetch waits for them), or NULL */
	struct mem_buf *buf;   /* the chunk being filled in memory, or NULL: */
	char *block;           /* ... the 64 KiB block being filled */
	uint32_t blen;
	int store;             /* the current chunk can still be stored */
	struct index_chunk *rec;
	char name[1024];
};

/* A fetched chunk counts as a miss once, however it is stored. */
void note_fetched(struct cache *c, uint32_t clen)
{
	atomic_fetch_add(&c->misses, 1);
	atomic_fetch_add(&c->backend_bytes, clen);
	atomic_fetch_add(&c->pend_misses, 1);
}

/* Chunk @chunk of the data file @fd is written (or, !@store, not): record it
 * (or punch out what may be there), then release its range lock so that
 * readers waiting on it go on. */
static void chunk_finish(struct cache *c, int fd, const uint8_t *id, const char *name,
			 uint64_t osize, struct index_chunk *rec, uint32_t chunk, uint32_t clen,
			 int store, int record)
{
	uint64_t coff = (uint64_t)chunk * c->chunk_size;
	struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = (off_t)coff,
			   .l_len = c->chunk_size};

	if (record) {
		record_head(rec, clen); /* the block path filled only the checksums */
		if (!store || !may_store(c, clen) ||
		    index_chunk_put(c->ix, id, chunk, rec, name, osize) != 0) {
			fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)coff, clen);
			atomic_fetch_add(&c->uncached, 1);
		}
	}
	fcntl(fd, F_OFD_SETLK, &fl);
}

struct data_files *files_new(int fd, int dfd)
{
	struct data_files *d = malloc(sizeof(*d));

	if (d)
		*d = (struct data_files){fd, dfd, 1};
	return d;
}

void files_put(struct cache *c, struct data_files *d)
{
	unsigned left;

	pthread_mutex_lock(&c->wr_lock);
	left = --d->refs;
	pthread_mutex_unlock(&c->wr_lock);
	if (left)
		return;
	if (d->dfd >= 0)
		close(d->dfd);
	close(d->fd); /* releases what is still locked */
	free(d);
}

struct wr_job *wr_job_new(const struct cache_object *o)
{
	size_t ls = strlen(o->source) + 1, lk = strlen(o->key) + 1, le = strlen(o->etag) + 1;
	struct wr_job *j = calloc(1, sizeof(*j) + ls + lk + ls + lk + le);
	char *p;

	if (!j)
		return NULL;
	if (!(j->rec = malloc(sizeof(*j->rec)))) {
		free(j);
		return NULL;
	}
	snprintf(j->name, ls + lk, "%s/%s", o->source, o->key);
	p = j->name + ls + lk;
	j->source = memcpy(p, o->source, ls);
	j->key = memcpy(p + ls, o->key, lk);
	j->etag = memcpy(p + ls + lk, o->etag, le);
	j->osize = o->size;
	j->fd = j->dfd = -1;
	return j;
}

void wr_push(struct cache *c, struct wr_job *j)
{
	pthread_mutex_lock(&c->wr_lock);
	j->files->refs++;
	j->queued_ms = mono_ms();
	if (j->pending)
		(*j->pending)++;
	if (c->wr_tail)
		c->wr_tail->next = j;
	else
		c->wr_head = j;
	c->wr_tail = j;
	c->wr_queued++;
	pthread_cond_signal(&c->wr_cond);
	pthread_mutex_unlock(&c->wr_lock);
}

/* A job is done with: its buffer back to the pool, its files let go. */
static void wr_release(struct cache *c, struct wr_job *j)
{
	if (j->mb)
		mem_put(c->mem, j->mb);
	if (j->pending) {
		pthread_mutex_lock(&c->wr_lock);
		(*j->pending)--;
		pthread_cond_broadcast(&c->wr_done);
		pthread_mutex_unlock(&c->wr_lock);
	}
	files_put(c, j->files);
	free(j->rec);
	free(j);
}

/* Group commit: a written chunk joins the list of chunks to record; the
 * first writer to find nobody recording records the whole list in one
 * transaction (one sync of the index for many chunks: a commit per chunk
 * would cap the cache at the disk's sync rate), and again while more came
 * meanwhile. Each chunk's range lock goes only after its record is in. */
static void commit_add(struct cache *c, struct wr_job *j)
{
	struct index_put puts[64];
	struct wr_job *batch[64];

	pthread_mutex_lock(&c->wr_lock);
	j->next = NULL;
	if (c->rec_tail)
		c->rec_tail->next = j;
	else
		c->rec_head = j;
	c->rec_tail = j;
	c->rec_pending++;
	if (c->committing) {
		pthread_mutex_unlock(&c->wr_lock);
		return; /* the writer recording now takes it in its next round */
	}
	c->committing = 1;
	while (c->rec_head) {
		size_t n = 0;
		int err;
		while (c->rec_head && n < sizeof(batch) / sizeof(batch[0])) {
			struct wr_job *k = c->rec_head;
			c->rec_head = k->next;
			batch[n] = k;
			puts[n] = (struct index_put){k->id, k->chunk, k->rec, k->name, k->osize};
			n++;
		}
		if (!c->rec_head)
			c->rec_tail = NULL;
		pthread_mutex_unlock(&c->wr_lock);
		err = index_chunk_put_many(c->ix, puts, n);
		for (size_t i = 0; i < n; i++) {
			struct wr_job *k = batch[i];
			uint64_t coff = (uint64_t)k->chunk * c->chunk_size;
			struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET,
					   .l_start = (off_t)coff, .l_len = c->chunk_size};
			if (err) {
				fallocate(k->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)coff,
					  k->clen);
				atomic_fetch_add(&c->uncached, 1);
			}
			fcntl(k->fd, F_OFD_SETLK, &fl);
			wr_release(c, k);
		}
		if (err)
			store_failed(c, err);
		pthread_mutex_lock(&c->wr_lock);
		c->rec_pending -= (unsigned)n;
		pthread_cond_broadcast(&c->wr_done);
	}
	c->committing = 0;
	pthread_mutex_unlock(&c->wr_lock);
}

/* Write (or, !@store, drop) one queued chunk and finish it. */
static void wr_run(struct cache *c, struct wr_job *j, int store)
{
	int err;

	if (store && (err = write_chunk(c, j->fd, j->dfd, mem_data(j->mb),
					(uint64_t)j->chunk * c->chunk_size, j->clen))) {
		store_failed(c, err);
		store = -1;
	}
	if (!store) {
		atomic_fetch_add(&c->dropped, 1);
		refill_note(c, &(struct cache_object){j->source, j->key, j->etag, j->osize});
	}
	if (store == 1 && j->record && may_store(c, j->clen)) {
		record_head(j->rec, j->clen);
		/* the bytes are on the disk: the buffer goes back to the pool now,
		 * not after the group commit's sync (a reader that misses it in
		 * the pool waits on the chunk's range lock, then finds the record) */
		mem_put(c->mem, j->mb);
		j->mb = NULL;
		commit_add(c, j);
		return;
	}
	chunk_finish(c, j->fd, j->id, j->name, j->osize, j->rec, j->chunk, j->clen, store == 1,
		     j->record);
	wr_release(c, j);
}

void *wr_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->wr_lock);
	for (;;) {
		struct wr_job *j;
		while (!c->wr_head && !c->wr_stop)
			pthread_cond_wait(&c->wr_cond, &c->wr_lock);
		if (!c->wr_head)
			break; /* stopping, and nothing left */
		j = c->wr_head;
		c->wr_head = j->next;
		if (!c->wr_head)
			c->wr_tail = NULL;
		c->wr_queued--;
		c->wr_busy++;
		pthread_mutex_unlock(&c->wr_lock);
		wr_run(c, j, 1);
		pthread_mutex_lock(&c->wr_lock);
		c->wr_busy--;
		pthread_cond_broadcast(&c->wr_done);
	}
	pthread_mutex_unlock(&c->wr_lock);
	return NULL;
}

/* The pool is full: is the disk behind (the oldest queued write has waited
 * WR_LAG_MS)? If not, wait up to @ms for a write to end. */
static int wr_behind(struct cache *c, unsigned ms)
{
	struct timespec ts;
	int behind;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&c->wr_lock);
	behind = c->wr_head && mono_ms() - c->wr_head->queued_ms >= WR_LAG_MS;
	if (!behind)
		pthread_cond_timedwait(&c->wr_done, &c->wr_lock, &ts);
	pthread_mutex_unlock(&c->wr_lock);
	return behind;
}

/* The disk is behind and the pool is full: drop the oldest queued write that
 * may be dropped. @return 1 when one was dropped (a buffer may be free now). */
static int wr_drop_oldest(struct cache *c)
{
	struct wr_job **p, *j = NULL, *prev = NULL;

	pthread_mutex_lock(&c->wr_lock);
	for (p = &c->wr_head; *p; prev = *p, p = &(*p)->next) {
		if (!(*p)->keep) {
			j = *p;
			*p = j->next;
			if (c->wr_tail == j)
				c->wr_tail = prev;
			c->wr_queued--;
			break;
		}
	}
	if (j)
		c->wr_busy++; /* for cache_sync, as a writer's job */
	pthread_mutex_unlock(&c->wr_lock);
	if (!j)
		return 0;
	wr_run(c, j, 0);
	pthread_mutex_lock(&c->wr_lock);
	c->wr_busy--;
	pthread_cond_broadcast(&c->wr_done);
	pthread_mutex_unlock(&c->wr_lock);
	return 1;
}

void cache_sync(struct cache *c)
{
	pthread_mutex_lock(&c->wr_lock);
	while (c->wr_head || c->wr_busy || c->rec_pending)
		pthread_cond_wait(&c->wr_done, &c->wr_lock);
	pthread_mutex_unlock(&c->wr_lock);
}


static void stream_reset(void *arg)
{
	struct stream_fetch *f = arg;

	f->pos = 0;
	f->blen = 0;
	f->store = 1;
	if (f->buf) {
		mem_drop(f->c->mem, f->buf);
		f->buf = NULL;
	}
}

/* Is this the first attempt to complete the chunk ending at @end of the run?
 * (A retried GET starts the run again; chunks done before are not recorded
 * twice.) */
static int first_completion(struct stream_fetch *f, uint32_t chunk, uint32_t clen)
{
	uint64_t end = (uint64_t)chunk * f->c->chunk_size + clen - f->start;

	if (end <= f->done)
		return 0;
	f->done = end;
	note_fetched(f->c, clen);
	return 1;
}

static void stream_chunk_done(struct stream_fetch *f, uint32_t chunk, uint32_t clen)
{
	chunk_finish(f->c, f->fd, f->id, f->name, f->o->size, f->rec, chunk, clen, f->store,
		     first_completion(f, chunk, clen));
}

/* The memory path of stream_sink: a chunk is gathered in a pool buffer,
 * checksummed, published and queued for a writer. @return bytes taken; 0
 * when this chunk goes the block path (no buffer was free at its start). */
static size_t stream_to_mem(struct stream_fetch *f, const char *data, size_t n)
{
	struct cache *c = f->c;
	uint64_t at = f->start + f->pos;
	uint32_t chunk = (uint32_t)(at / c->chunk_size);
	uint32_t within = (uint32_t)(at % c->chunk_size);
	uint32_t clen = chunk_len(c, f->o->size, chunk);
	size_t take = clen - within < n ? clen - within : n;
	struct wr_job *j;
	char *buf;
	int err;

	if (f->pos >= f->total)
		return 0; /* the block path says so */
	if (within == 0 && f->blen == 0 && !f->buf && c->mem) {
		f->buf = mem_take(c->mem);
		/* while the writers keep up, the next write to end frees one;
		 * when the oldest queued write has waited WR_LAG_MS the disk is
		 * behind, and it goes. Tries are bounded: the buffer a write
		 * frees may be taken by another stream. */
		for (int k = 0; !f->buf && f->may_drop && k < 50; k++) {
			if (wr_behind(c, 20))
				wr_drop_oldest(c);
			f->buf = mem_take(c->mem);
		}
		f->store = 1;
	}
	if (!f->buf)
		return 0;
	buf = mem_data(f->buf);
	memcpy(buf + within, data, take);
	f->pos += take;
	if (within + take < clen)
		return take;
	/* readable from memory at once, before the write and before the lock
	 * that readers wait on goes */
	j = c->n_wr ? wr_job_new(f->o) : NULL;
	if (!j) {
		record_of(f->rec, buf, clen);
		mem_publish(c->mem, f->buf, f->id, chunk, clen, 0);
		f->buf = NULL;
		if (f->store &&
		    (err = write_chunk(c, f->fd, f->dfd, buf, (uint64_t)chunk * c->chunk_size, clen))) {
			store_failed(c, err);
			f->store = 0;
		}
		stream_chunk_done(f, chunk, clen);
		return take;
	}
	record_of(j->rec, buf, clen);
	mem_publish(c->mem, f->buf, f->id, chunk, clen, 1);
	j->files = f->files;
	j->fd = f->fd;
	j->dfd = f->dfd;
	j->keep = !f->may_drop;
	j->pending = f->pending;
	j->record = first_completion(f, chunk, clen);
	memcpy(j->id, f->id, OBJID_LEN);
	j->osize = f->o->size;
	j->mb = f->buf;
	j->chunk = chunk;
	j->clen = clen;
	f->buf = NULL;
	wr_push(c, j);
	return take;
}

static int stream_sink(void *arg, const char *data, size_t n)
{
	struct stream_fetch *f = arg;
	struct cache *c = f->c;

	while (n > 0) {
		size_t took;
		/* a retried GET starts the run again: the chunks completed in an
		 * earlier attempt are with their writers (whose locks they are),
		 * so their bytes are passed over */
		if (f->pos < f->done) {
			took = f->done - f->pos < n ? (size_t)(f->done - f->pos) : n;
			f->pos += took;
			data += took;
			n -= took;
			continue;
		}
		took = stream_to_mem(f, data, n);
		if (took) {
			data += took;
			n -= took;
			continue;
		}
		uint64_t at = f->start + f->pos;
		uint32_t chunk = (uint32_t)(at / c->chunk_size);
		uint32_t within = (uint32_t)(at % c->chunk_size);
		uint32_t clen = chunk_len(c, f->o->size, chunk);
		uint32_t b = within / INDEX_BLOCK;
		uint32_t blk = clen - b * INDEX_BLOCK < INDEX_BLOCK ? clen - b * INDEX_BLOCK
								    : INDEX_BLOCK;
		size_t take = blk - f->blen < n ? blk - f->blen : n;

		if (f->pos >= f->total)
			return -EMSGSIZE; /* more than we asked for */
		if (within == 0 && f->blen == 0)
			f->store = 1;
		memcpy(f->block + f->blen, data, take);
		f->blen += (uint32_t)take;
		f->pos += take;
		data += take;
		n -= take;
		if (f->blen < blk)
			continue;
		f->rec->crc[b] = crc32c(0, f->block, blk);
		if (f->store && pwrite(f->fd, f->block, blk,
				       (off_t)((uint64_t)chunk * c->chunk_size + b * INDEX_BLOCK)) !=
				    (ssize_t)blk) {
			store_failed(c, errno ? -errno : -ENOSPC);
			f->store = 0;
		}
		f->blen = 0;
		if (b * INDEX_BLOCK + blk == clen)
			stream_chunk_done(f, chunk, clen);
	}
	return 0;
}

/* Fetch the missing chunks of [first, first + count) of @o, one streaming
 * GET per run of missing chunks. @return 0, or (@optional) -EAGAIN when the
 * object had no readahead slot free: chunks from *@resume on are left for
 * later. */
int fetch_run(struct cache *c, const struct cache_object *o, const uint8_t *id,
		     uint32_t first, uint32_t count, int optional, int keep, unsigned *pending,
		     uint32_t *resume)
{
	uint64_t start = (uint64_t)first * c->chunk_size;
	struct stream_fetch f = {.c = c, .o = o, .id = id};
	enum flight_kind kind = optional ? FLIGHT_READAHEAD : FLIGHT_DEMAND;
	uint64_t unlock_from = UINT64_MAX;
	uint32_t i = 0;
	int err, ret = 0;

	f.may_drop = optional && !keep;
	f.pending = pending;
	f.fd = open_data(c, id, O_RDWR | O_CREAT);
	f.dfd = c->mem && f.fd >= 0 ? open_data(c, id, O_WRONLY | O_DIRECT) : -1;
	if (f.fd >= 0 && !(f.files = files_new(f.fd, f.dfd))) {
		if (f.dfd >= 0)
			close(f.dfd);
		close(f.fd);
		f.fd = -1;
	}
	if (f.fd >= 0)
		size_data(c, f.fd, o->size);
	f.block = malloc(INDEX_BLOCK);
	f.rec = malloc(sizeof(*f.rec));
	/* a prefetch locks its whole range, waiting; readahead locks chunk by
	 * chunk and leaves out any that another fetch holds: a reader that got
	 * there first is fetching it, and a wait for the whole range would
	 * last as long as readers keep taking its chunks one by one */
	if (f.fd < 0 || !f.block || !f.rec ||
	    (!optional && range_lock(f.fd, F_WRLCK, start, (uint64_t)count * c->chunk_size, 1) != 0))
		goto out;
	snprintf(f.name, sizeof(f.name), "%s/%s", o->source, o->key);
	while (i < count) {
		uint32_t j = i;
		int held = 0;
		/* a run of chunks not on disk */
		while (j < count) {
			if (optional && range_lock(f.fd, F_WRLCK, (uint64_t)(first + j) * c->chunk_size,
						   c->chunk_size, 0) != 0) {
				held = 1;
				break;
			}
			if (index_chunk_get(c->ix, id, first + j, f.rec) == 0 &&
			    f.rec->len == chunk_len(c, o->size, first + j))
				break;
			j++;
		}
		if (j == i && held) {
			i++;
			continue;
		}
		if (j == i) {
			struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET,
					   .l_start = (off_t)((uint64_t)(first + i) * c->chunk_size),
					   .l_len = c->chunk_size};
			fcntl(f.fd, F_OFD_SETLK, &fl);
			i++;
			continue;
		}
		f.first = first + i;
		f.count = j - i;
		f.start = (uint64_t)f.first * c->chunk_size;
		f.total = (uint64_t)(f.count - 1) * c->chunk_size + chunk_len(c, o->size, first + j - 1);
		f.done = 0;
		/* readahead leaves alone an object that just failed or that holds
		 * its share of the slots: it is an extra, never worth a wait */
		if ((err = flight_get(c->fl, id, kind, optional ? ra_cap(c) : demand_cap(c))) != 0) {
			/* failed just now, or (readahead) the object holds its share */
			if (err == -EAGAIN && resume) {
				*resume = first + i;
				ret = -EAGAIN;
			}
			unlock_from = f.start;
			break;
		}
		err = backend_read_stream(c->be, &(struct backend_ref){o->key, o->etag, o->size},
					      f.start, f.total, stream_sink, stream_reset, &f);
		if (!err && f.pos != f.total)
			err = -ESTALE; /* shorter than the listing said */
		/* a failure is remembered before the locks go, for their waiters */
		flight_put(c->fl, id, kind, err);
		if (err && f.done < f.total) /* bytes written but never recorded */
			fallocate(f.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  (off_t)(f.start + f.done), (off_t)(f.total - f.done));
		if (err) {
			unlock_from = f.start + f.done;
			break; /* the reader will meet the error itself */
		}
		i = j;
	}
out:
	if (f.buf)
		mem_drop(c->mem, f.buf);
	if (f.files) {
		/* what was not fetched is unlocked now; complete chunks are their
		 * write jobs' to unlock, and the files close with the last job */
		if (unlock_from < start + (uint64_t)count * c->chunk_size)
			range_lock(f.fd, F_UNLCK, unlock_from,
				   start + (uint64_t)count * c->chunk_size - unlock_from, 0);
		files_put(c, f.files);
	}
	free(f.block);
	free(f.rec);
	return ret;
}
