/* Readahead: per-open-file streams, the random reader's sweep, the workers
 * that run their jobs, and prefetch of whole objects. */
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

/* A job for chunks [chunk, chunk + count) of @o, or NULL: no memory. */
struct ra_job *ra_job_new(const struct cache_object *o, uint32_t chunk, uint32_t count,
				 int sweep)
{
	size_t ls = strlen(o->source) + 1, lk = strlen(o->key) + 1, le = strlen(o->etag) + 1;
	struct ra_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->source = malloc(ls + lk + le))) {
		free(j);
		return NULL;
	}
	memcpy(j->source, o->source, ls);
	j->key = memcpy(j->source + ls, o->key, lk);
	j->etag = memcpy(j->source + ls + lk, o->etag, le);
	j->chunk = chunk;
	j->count = count;
	j->sweep = sweep;
	j->size = o->size;
	return j;
}

void ra_job_free(struct ra_job *j)
{
	free(j->source);
	free(j);
}

/* Bring one chunk in ahead of its reader: fetch it when missing, or ask the
 * kernel to read a cached one from disk into the page cache. */
static void ra_run(struct cache *c, const struct ra_job *j)
{
	struct cache_object o = {j->source, j->key, j->etag, j->size};
	struct index_chunk *rec = malloc(sizeof(*rec));
	uint8_t id[OBJID_LEN];
	uint32_t missing = 0;
	int fd;

	if (!rec || objid_of(&o, id)) {
		free(rec);
		return;
	}
	/* cached chunks: have the kernel read them from disk ahead of the reader
	 * (a sweep has no reader at its position: it leaves them on disk) */
	fd = j->sweep ? -1 : open_data(c, id, O_RDONLY);
	for (uint32_t k = j->chunk; k < j->chunk + j->count; k++) {
		uint32_t clen = chunk_len(c, o.size, k);
		if (index_chunk_get(c->ix, id, k, rec) == 0 && rec->len == clen) {
			if (fd >= 0)
				posix_fadvise(fd, (off_t)((uint64_t)k * c->chunk_size), clen,
					      POSIX_FADV_WILLNEED);
		} else {
			missing++;
		}
	}
	if (fd >= 0)
		close(fd);
	free(rec);
	if (missing == 0)
		return;
	if (c->be->ops->read_stream) {
		uint32_t resume;
		/* the object's other runs hold its slots: this one goes back in
		 * the queue, behind the other readers' runs */
		if (fetch_run(c, &o, id, j->chunk, j->count, 1, j->sweep == RA_REFILL, NULL,
			      &resume) == -EAGAIN)
			ra_enqueue(c, &o, resume, j->chunk + j->count - resume, j->sweep);
	} else {
		for (uint32_t k = j->chunk; k < j->chunk + j->count; k++)
			fetch_chunk(c, &o, id, k, chunk_len(c, o.size, k), 0, 0, NULL, 0);
	}
}

void *ra_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->ra_lock);
	for (;;) {
		struct ra_job *j;
		while (!c->ra_stop && !c->ra_head)
			pthread_cond_wait(&c->ra_cond, &c->ra_lock);
		if (c->ra_stop)
			break;
		j = c->ra_head;
		c->ra_head = j->next;
		if (!c->ra_head)
			c->ra_tail = NULL;
		c->ra_queued--;
		pthread_mutex_unlock(&c->ra_lock);
		ra_run(c, j);
		ra_job_free(j);
		pthread_mutex_lock(&c->ra_lock);
	}
	pthread_mutex_unlock(&c->ra_lock);
	return NULL;
}

/* Queue a readahead job. A sweep job is queued only while the workers are
 * about to run out of work, so it takes their idle time, and sequential
 * readers' jobs never wait behind a whole file. @return 0 when queued. */
int ra_enqueue(struct cache *c, const struct cache_object *o, uint32_t chunk,
		      uint32_t count, int sweep)
{
	unsigned max = sweep == RA_SWEEP ? c->n_ra / 2 : RA_QUEUE_MAX;
	struct ra_job *j;
	int full;

	/* a sweep asks on every read of its reader: mostly "no", without an
	 * allocation */
	pthread_mutex_lock(&c->ra_lock);
	full = c->ra_queued >= max || c->ra_stop;
	pthread_mutex_unlock(&c->ra_lock);
	if (full)
		return -EBUSY;
	if (!(j = ra_job_new(o, chunk, count, sweep)))
		return -ENOMEM;
	pthread_mutex_lock(&c->ra_lock);
	if (c->ra_queued >= max || c->ra_stop) {
		pthread_mutex_unlock(&c->ra_lock);
		ra_job_free(j);
		return -EBUSY;
	}
	if (c->ra_tail)
		c->ra_tail->next = j;
	else
		c->ra_head = j;
	c->ra_tail = j;
	c->ra_queued++;
	pthread_cond_signal(&c->ra_cond); /* one job: one worker */
	pthread_mutex_unlock(&c->ra_lock);
	atomic_fetch_add_explicit(&c->ra_chunks, count, memory_order_relaxed);
	return 0;
}

struct cache_stream *cache_stream_new(void)
{
	struct cache_stream *s = calloc(1, sizeof(*s));

	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

void cache_stream_free(struct cache_stream *s)
{
	if (!s)
		return;
	if (s->counted)
		atomic_fetch_sub(&s->counted->seq_readers, 1);
	free(s->touched);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* A random reader marks the chunks it reads; once it has read a quarter of
 * the object's chunks, it is taken to be reading the whole object in some
 * order of its own (an mmap of a shard, tensors read out of order), and the
 * rest is streamed in behind it (s->sweep). Called with s->lock held.
 * @return 1 when the sweep starts now. */
static int note_random(struct cache_stream *s, uint64_t first, uint64_t last,
		       uint64_t n_chunks)
{
	if (s->sweeping || n_chunks < SWEEP_MIN_CHUNKS)
		return 0;
	if (!s->touched && !(s->touched = calloc((n_chunks + 7) / 8, 1)))
		return 0;
	for (uint64_t k = first; k <= last; k++) {
		if (s->touched[k / 8] & (1u << (k % 8)))
			continue;
		s->touched[k / 8] |= (uint8_t)(1u << (k % 8));
		s->n_touched++;
	}
	if ((uint64_t)s->n_touched * SWEEP_AFTER_DIV >= n_chunks) {
		s->sweeping = 1;
		s->sweep = 0;
		free(s->touched);
		s->touched = NULL;
		return 1;
	}
	return 0;
}

int cache_readahead(struct cache *c, const struct cache_object *obj, struct cache_stream *s,
		    uint64_t off, size_t len)
{
	uint64_t end = off + len, last_chunk, cur, from, to, run;
	int random;

	if (!c->ix || c->n_ra == 0 || obj->size == 0)
		return 0;
	last_chunk = (obj->size - 1) / c->chunk_size;
	cur = (end ? end - 1 : 0) / c->chunk_size;
	pthread_mutex_lock(&s->lock);
	/* The kernel sends a sequential reader's requests in order, a few at
	 * once (its readahead window, in requests of up to max_pages): within
	 * a chunk or four requests of where the last one ended is sequential. */
	uint64_t skew = 4 * (uint64_t)len > c->chunk_size ? 4 * (uint64_t)len : c->chunk_size;
	if (s->seen && off + skew >= s->next_off && off <= s->next_off + skew) {
		/* The sequential readers share half of the memory pool: each
		 * window holds chunks that wait there for their reader. */
		uint32_t max, readers, lead;
		if (!s->counted) {
			s->counted = c;
			atomic_fetch_add(&c->seq_readers, 1);
		}
		readers = (uint32_t)atomic_load(&c->seq_readers);
		max = c->mem_chunks / (2 * (readers ? readers : 1));
		if (max > RA_WINDOW_MAX)
			max = RA_WINDOW_MAX;
		if (max > c->ra_cap)
			max = c->ra_cap;
		if (max < RA_WINDOW_MIN)
			max = RA_WINDOW_MIN;
		/* start past what the kernel asks for ahead by itself (its
		 * readahead: about four requests), or it meets chunks that no
		 * run has fetched yet and GETs them one by one */
		lead = (uint32_t)(2 * skew / c->chunk_size);
		s->window = s->window ? s->window * 2 : lead > RA_WINDOW_MIN ? lead : RA_WINDOW_MIN;
		if (s->window > max)
			s->window = max;
		atomic_store_explicit(&c->ra_window, s->window, memory_order_relaxed);
	} else {
		if (s->counted) {
			atomic_fetch_sub(&c->seq_readers, 1);
			s->counted = NULL;
		}
		s->window = 0; /* random access: no readahead until it looks sequential */
		s->ahead_until = cur + 1;
		/* never sweep what would push half the cache out */
		if (obj->size <= c->quota / 2 &&
		    note_random(s, off / c->chunk_size, cur, last_chunk + 1))
			atomic_fetch_add(&c->sweeps, 1);
	}
	s->seen = 1;
	random = s->window == 0;
	/* a sweep goes on one run at a time, while the workers have room */
	if (s->sweeping && s->sweep <= last_chunk) {
		uint64_t n = last_chunk - s->sweep + 1 < RA_RUN ? last_chunk - s->sweep + 1 : RA_RUN;
		if (ra_enqueue(c, obj, (uint32_t)s->sweep, (uint32_t)n, RA_SWEEP) == 0)
			s->sweep += n;
	}
	if (end > s->next_off)
		s->next_off = end;
	from = s->ahead_until > cur + 1 ? s->ahead_until : cur + 1;
	to = cur + s->window;
	if (to > last_chunk)
		to = last_chunk;
	/* Refill in runs of at least 1/ra_runs of the window (one GET each),
	 * not a chunk at a time, unless the object ends sooner: ra_runs GETs
	 * in flight per reader (4 on small machines, up to 8 where there are
	 * readahead threads for it). (Half-window runs, two in flight, read
	 * 353-419 MB/s cold from s3rver where quarter-window runs read
	 * 436-493.) */
	if (to < from ||
	    (to - from + 1 < (s->window + c->ra_runs - 1) / c->ra_runs && to < last_chunk)) {
		pthread_mutex_unlock(&s->lock);
		return random;
	}
	s->ahead_until = to + 1;
	run = (s->window + c->ra_runs - 1) / c->ra_runs;
	pthread_mutex_unlock(&s->lock);
	/* a window that just grew goes out as several runs, one GET each */
	for (; from <= to; from += run)
		ra_enqueue(c, obj, (uint32_t)from,
			   (uint32_t)(to - from + 1 < run ? to - from + 1 : run), 0);
	return random;
}

/* The runs of one object being prefetched, taken in turn by PREFETCH_STREAMS
 * threads: one object is fetched over that many streams at once. */
#define PREFETCH_STREAMS 2
struct pf_runs {
	struct cache *c;
	const struct cache_object *o;
	const uint8_t *id;
	uint32_t n_chunks;
	atomic_uint next;
	unsigned pending; /* its chunks with the writers; under c->wr_lock */
};

static void *pf_runs_main(void *arg)
{
	struct pf_runs *r = arg;
	struct cache *c = r->c;
	uint32_t k;

	while ((k = atomic_fetch_add(&r->next, RA_RUN)) < r->n_chunks &&
	       !atomic_load(&c->cancelled)) {
		uint32_t count = r->n_chunks - k < RA_RUN ? r->n_chunks - k : RA_RUN;
		if (c->be->ops->read_stream)
			fetch_run(c, r->o, r->id, k, count, 0, 1, &r->pending, NULL);
		else
			for (uint32_t j = k; j < k + count; j++)
				fetch_chunk(c, r->o, r->id, j, chunk_len(c, r->o->size, j), 0, 0,
					    NULL, 0);
	}
	return NULL;
}

int cache_prefetch(struct cache *c, const struct cache_object *obj)
{
	struct pf_runs runs = {.c = c, .o = obj};
	pthread_t th[PREFETCH_STREAMS - 1];
	uint32_t n_chunks;
	uint8_t id[OBJID_LEN];
	uint64_t cached = 0;
	int err, n_th = 0;

	if (!c->ix)
		return -ENODATA;
	if (obj->size == 0)
		return 0;
	err = objid_of(obj, id);
	if (err)
		return err;
	n_chunks = (uint32_t)((obj->size + c->chunk_size - 1) / c->chunk_size);
	runs.id = id;
	runs.n_chunks = n_chunks;
	for (; n_th < PREFETCH_STREAMS - 1; n_th++)
		if (pthread_create(&th[n_th], NULL, pf_runs_main, &runs) != 0)
			break;
	pf_runs_main(&runs);
	for (int i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	/* its last chunks may still be with the writers */
	pthread_mutex_lock(&c->wr_lock);
	while (runs.pending)
		pthread_cond_wait(&c->wr_done, &c->wr_lock);
	pthread_mutex_unlock(&c->wr_lock);
	if (atomic_load(&c->cancelled))
		return -ECANCELED;
	/* what counts is what is on disk and recorded now */
	err = cache_cached_bytes(c, obj, &cached);
	if (err)
		return err;
	if (cached == obj->size)
		return 0;
	/* Say why: a chunk still missing either fails to fetch (the backend's
	 * error) or was fetched but not stored (no room). */
	for (uint32_t k = 0; k < n_chunks; k++) {
		struct index_chunk *rec = malloc(sizeof(*rec));
		char one;
		size_t got;
		int missing = !rec || index_chunk_get(c->ix, id, k, rec) != 0;
		free(rec);
		if (missing && (err = cache_read(c, obj, (uint64_t)k * c->chunk_size, 1, &one, &got)))
			return err;
	}
	return -ENOSPC;
}
