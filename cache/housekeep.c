/* The background thread: touches and hit counters to the index, eviction
 * rounds between the watermarks, refills of chunks dropped earlier. */
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

/* Mark a chunk used now (its LRU time, written to the index in batches). */
void touch_chunk(struct cache *c, const uint8_t *id, uint32_t chunk)
{
	pthread_mutex_lock(&c->lock);
	if (c->n_touch > 0) {
		struct index_touch *last = &c->touch[c->n_touch - 1];
		if (last->chunk == chunk && memcmp(last->objid, id, OBJID_LEN) == 0) {
			last->when_ms = now_ms();
			pthread_mutex_unlock(&c->lock);
			return;
		}
	}
	if (c->n_touch < TOUCH_MAX) {
		memcpy(c->touch[c->n_touch].objid, id, OBJID_LEN);
		c->touch[c->n_touch].chunk = chunk;
		c->touch[c->n_touch].when_ms = now_ms();
		c->n_touch++;
	}
	pthread_mutex_unlock(&c->lock);
}

void note_hit(struct cache *c, const uint8_t *id, uint32_t chunk, int from_mem, uint32_t n)
{
	atomic_fetch_add(&c->hits, 1);
	if (from_mem)
		atomic_fetch_add(&c->mem_hits, 1);
	atomic_fetch_add_explicit(from_mem ? &c->mem_bytes : &c->disk_bytes, n,
				  memory_order_relaxed);
	atomic_fetch_add(&c->pend_hits, 1);
	touch_chunk(c, id, chunk); /* the one lock a hit takes */
}

void want_eviction(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->evict_wanted = 1;
	pthread_cond_signal(&c->bg_cond);
	pthread_mutex_unlock(&c->lock);
}

struct cand_list {
	struct evict_cand *v;
	size_t n, cap;
	int err;
};

static int collect_cand(void *arg, const uint8_t *id, uint32_t chunk, const struct index_chunk *rec)
{
	struct cand_list *l = arg;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 1024;
		struct evict_cand *nv = realloc(l->v, ncap * sizeof(*nv));
		if (!nv) {
			l->err = -ENOMEM;
			return 1;
		}
		l->v = nv;
		l->cap = ncap;
	}
	memcpy(l->v[l->n].objid, id, OBJID_LEN);
	l->v[l->n].chunk = chunk;
	l->v[l->n].len = rec->len;
	l->v[l->n].last_use_ms = rec->last_use_ms;
	l->n++;
	return 0;
}

struct emptied_list {
	uint8_t (*ids)[OBJID_LEN];
	size_t n;
};

static void on_emptied(void *arg, const uint8_t *id)
{
	struct emptied_list *e = arg;

	memcpy(e->ids[e->n++], id, OBJID_LEN);
}

/* Remove an object's data file once no chunk of it is recorded, unless
 * someone holds a lock in it (a fetch in progress). */
static void unlink_if_idle(struct cache *c, const uint8_t *id)
{
	char rel[64];
	int fd = open_data(c, id, O_RDWR);

	if (fd < 0)
		return;
	if (range_lock(fd, F_WRLCK, 0, 0, 0) == 0) {
		objid_path(id, rel);
		unlinkat(c->data_fd, rel, 0);
	}
	close(fd);
}

static void evict_round(struct cache *c)
{
	struct cand_list l = {0};
	struct index_stats st;
	uint64_t freed_total = 0, before;
	size_t k, done = 0, skipped = 0;

	if (flock(c->evict_fd, LOCK_EX | LOCK_NB) < 0)
		return; /* another process is evicting */
	if (index_stats(c->ix, &st) || !evict_needed(st.usage, c->quota, c->high))
		goto out;
	before = st.usage;
	index_scan_chunks(c->ix, collect_cand, &l);
	if (l.err)
		goto out;
	k = evict_choose(l.v, l.n, st.usage, c->quota, c->low);

	for (size_t i = 0; i < k;) {
		uint8_t ids[EVICT_BATCH][OBJID_LEN];
		uint8_t empty_ids[EVICT_BATCH][OBJID_LEN];
		struct emptied_list em = {empty_ids, 0};
		uint32_t chunks[EVICT_BATCH];
		int fds[EVICT_BATCH], owned[EVICT_BATCH];
		size_t nb = 0;
		uint64_t freed = 0;

		for (; i < k && nb < EVICT_BATCH; i++) {
			struct evict_cand *v = &l.v[i];
			uint64_t coff = (uint64_t)v->chunk * c->chunk_size;
			int fd = -1, own = 1;
			/* One descriptor per object in a batch: the pin lock it holds
			 * would otherwise shut out the batch's next chunk of the
			 * same object (OFD locks of two descriptors conflict even
			 * in one process). */
			for (size_t j = 0; j < nb && fd < 0; j++)
				if (fds[j] >= 0 && memcmp(ids[j], v->objid, OBJID_LEN) == 0) {
					fd = fds[j];
					own = 0;
				}
			if (own)
				fd = open_data(c, v->objid, O_RDWR);
			if (fd >= 0 && (range_lock(fd, F_WRLCK, coff, c->chunk_size, 0) != 0 ||
					(own && range_lock(fd, F_WRLCK, PIN_OFF, 1, 0) != 0))) {
				if (own)
					close(fd); /* being fetched, or pinned: leave it */
				skipped++;
				continue;
			}
			if (fd >= 0)
				fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)coff,
					  v->len);
			memcpy(ids[nb], v->objid, OBJID_LEN);
			chunks[nb] = v->chunk;
			owned[nb] = own;
			fds[nb++] = fd;
		}
		index_chunks_del(c->ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, nb, &freed,
				 on_emptied, &em);
		for (size_t j = 0; j < nb; j++)
			if (fds[j] >= 0 && owned[j])
				close(fds[j]);
		for (size_t j = 0; j < em.n; j++)
			unlink_if_idle(c, empty_ids[j]);
		freed_total += freed;
		done += nb;
		atomic_fetch_add(&c->evicted_chunks, nb);
		atomic_fetch_add(&c->evicted_bytes, freed);
	}
	index_stats(c->ix, &st);
	log_info("cache eviction: %zu chunks (%llu KiB) removed, %zu skipped in use; usage %llu -> "
		 "%llu KiB (quota %llu KiB, high %.2f, low %.2f)",
		 done, (unsigned long long)(freed_total >> 10), skipped,
		 (unsigned long long)(before >> 10), (unsigned long long)(st.usage >> 10),
		 (unsigned long long)(c->quota >> 10), c->high, c->low);
out:
	free(l.v);
	flock(c->evict_fd, LOCK_UN);
}

static void flush_touches(struct cache *c)
{
	struct index_touch *t;
	size_t n;
	uint64_t h, m;

	pthread_mutex_lock(&c->lock);
	n = c->n_touch;
	t = malloc(n ? n * sizeof(*t) : 1);
	if (t) {
		memcpy(t, c->touch, n * sizeof(*t));
		c->n_touch = 0;
	}
	pthread_mutex_unlock(&c->lock);
	if (!t)
		return;
	h = atomic_exchange(&c->pend_hits, 0);
	m = atomic_exchange(&c->pend_misses, 0);
	if (n == 0 && h == 0 && m == 0) {
		free(t);
		return;
	}
	if (t) {
		index_touch(c->ix, t, n, h, m);
		free(t);
	}
}

/* Chunks of @o were dropped: remember it for a refill (once). */
void refill_note(struct cache *c, const struct cache_object *o)
{
	struct ra_job *j = ra_job_new(o, 0, 0, RA_REFILL), *e;

	if (!j)
		return;
	pthread_mutex_lock(&c->lock);
	for (e = c->refill; e; e = e->next)
		if (strcmp(e->key, o->key) == 0 && strcmp(e->etag, o->etag) == 0 &&
		    strcmp(e->source, o->source) == 0)
			break;
	if (!e && c->n_refill < REFILL_MAX) {
		j->next = c->refill;
		c->refill = j;
		c->n_refill++;
		j = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (j)
		ra_job_free(j);
}

/* Background thread: while nothing else is fetched or written, queue the
 * missing chunks of one remembered object, in runs, for the readahead
 * workers. Called with c->lock held. */
static void refill_some(struct cache *c)
{
	struct ra_job *j = c->refill;
	unsigned busy;
	uint32_t n;

	if (!j)
		return;
	pthread_mutex_lock(&c->ra_lock);
	busy = c->ra_queued;
	pthread_mutex_unlock(&c->ra_lock);
	if (busy)
		return;
	pthread_mutex_lock(&c->wr_lock);
	busy = c->wr_queued + c->wr_busy;
	pthread_mutex_unlock(&c->wr_lock);
	if (busy)
		return;
	c->refill = j->next;
	c->n_refill--;
	pthread_mutex_unlock(&c->lock);
	n = (uint32_t)((j->size + c->chunk_size - 1) / c->chunk_size);
	for (uint32_t k = 0; k < n; k += RA_RUN) {
		struct cache_object o = {j->source, j->key, j->etag, j->size};
		if (ra_enqueue(c, &o, k, n - k < RA_RUN ? n - k : RA_RUN, RA_REFILL) != 0) {
			refill_note(c, &o); /* the queue is full: the rest another time */
			break;
		}
	}
	ra_job_free(j);
	pthread_mutex_lock(&c->lock);
}

void *bg_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		struct timespec ts;
		int evict;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (!c->evict_wanted)
			pthread_cond_timedwait(&c->bg_cond, &c->lock, &ts);
		evict = c->evict_wanted;
		c->evict_wanted = 0;
		pthread_mutex_unlock(&c->lock);

		flush_touches(c);
		{
			struct index_stats st;
			if (evict || (index_stats(c->ix, &st) == 0 &&
				      evict_needed(st.usage, c->quota, c->high)))
				evict_round(c);
		}
		if (c->mem)
			mem_trim(c->mem, MEM_IDLE_S);
		pthread_mutex_lock(&c->lock);
		refill_some(c);
	}
	pthread_mutex_unlock(&c->lock);
	flush_touches(c);
	return NULL;
}
