/* The chunk cache.
 *
 * Layout under the cache directory:
 *   index/          LMDB (index.c): chunk records, objects, usage, counters
 *   data/XX/ID      one sparse file per object version; chunk i at offset
 *                   i x chunk_size; evicted chunks are punched out
 *   meta/           listing snapshots (snapshot.c)
 *   users.lock      flock(LOCK_SH) by every process using the cache
 *   evict.lock      flock(LOCK_EX) by the one process evicting right now
 *
 * Fetch: take an OFD write lock on the chunk's byte range of its data file
 * (this is the single-flight: threads of this process and other processes
 * sharing the directory queue on it, and a killed holder releases it), look
 * the chunk up again, else GET it, write it, then record it in the index. A
 * record is only ever added after its data was written, so a crash leaves at
 * worst unrecorded bytes (never served: invisible to the index).
 *
 * Hit: look the chunk up, read the blocks that cover the request, check each
 * against its CRC-32C. No lock: if eviction punched the chunk out meanwhile,
 * or the disk flipped a bit, the check fails and the chunk is fetched again.
 *
 * Evict: in a background thread, when usage passes high x quota, oldest
 * chunks first down to low x quota; a chunk whose range lock is held (being
 * fetched) is skipped, and so is every chunk of a pinned object; punch the
 * hole, then drop the record.
 *
 * Pin: a read lock on one byte far past any data (PIN_OFF), held while the
 * kernel reads a complete data file directly (passthrough). Evicting a chunk
 * takes the write lock on that byte first, so the two exclude each other
 * without ever making a fetch wait for a pinned file.
 */
#include "cache.h"
#include "crc32c.h"
#include "evict.h"
#include "flight.h"
#include "index.h"
#include "log.h"
#include "mem.h"
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

#define TOUCH_MAX 65536
#define EVICT_BATCH 64
#define STORE_PAUSE_MS 10000
#define CACHE_RA_THREADS_MAX 32
#define CACHE_WR_THREADS_MAX 8
#define RA_QUEUE_MAX 512
#define RA_WINDOW_MIN 2  /* chunks ahead once a reader looks sequential */
#define RA_WINDOW_MAX 64 /* 256 MiB at 4 MiB chunks; less when the pool is small */
#define RA_RUN 16        /* chunks per prefetch or sweep GET */
#define RA_SWEEP 1       /* ra_job.sweep: a random reader's sweep */
#define RA_REFILL 2      /* ... chunks dropped before: its writes are kept */
#define REFILL_MAX 64    /* objects remembered for a refill */
#define SWEEP_AFTER_DIV 4   /* a random reader of a quarter of an object's chunks... */
#define SWEEP_MIN_CHUNKS 16 /* ... of an object of 16 chunks or more: sweep the rest */
#define PIN_OFF (1ULL << 62) /* the pin byte: past any object's data */
#define MEM_MIN (128ull << 20) /* the memory pool: 1/32 of memory, 64 MiB per CPU, */
#define MEM_MAX (2ull << 30)   /* ... within these */
#define MEM_PER_CPU (64ull << 20)
#define MEM_IDLE_S 30 /* pool buffers unused this long are freed */
#define DIO_ALIGN 4096
/* A write queued this long: the cache disk is behind, and a stream that finds
 * no pool buffer drops the oldest queued write rather than wait. It bounds how
 * long a reader can be held up by the disk; 200 ms measured 0.82-0.91x of a
 * cache in RAM on the GPU node, 50 ms 0.93-0.99x (docs/design.md). */
#define WR_LAG_MS 50

struct ra_job {
	struct ra_job *next;
	uint32_t chunk, count; /* chunks [chunk, chunk + count) */
	int sweep;             /* RA_SWEEP, RA_REFILL: fetch what is missing, nothing more */
	uint64_t size;
	char *source, *key, *etag; /* one allocation: source\0key\0etag\0 */
};

struct cache {
	struct backend *be; /* not owned */
	struct index *ix;   /* NULL: no disk tier */
	char *dir;
	int data_fd;        /* dir/data */
	int users_fd, evict_fd;
	uint32_t chunk_size;
	int prealloc;       /* data files sized and chunks allocated before writes (not tmpfs) */
	uint64_t quota;
	double high, low;

	pthread_mutex_t lock;
	pthread_cond_t cond;      /* bg wakeups, the writer and readahead queues */
	struct flight *fl;        /* fetch slots and recent failures (own lock) */
	unsigned max_fetches;
	struct index_touch *touch; /* protected by lock */
	size_t n_touch;           /* protected by lock */
	uint64_t pend_hits, pend_misses; /* protected by lock */
	int stop, evict_wanted;   /* protected by lock */
	/* objects with chunks dropped (the disk was behind): the background
	 * thread has the readahead workers fetch what they miss once the
	 * writers are idle, so that a cold load ends fully cached */
	struct ra_job *refill;    /* protected by lock */
	unsigned n_refill;        /* protected by lock */
	pthread_t bg;
	int bg_started;

	/* readahead: a FIFO of chunk fetches run by ra_threads workers; they
	 * take at most ra_threads of the max_fetches slots, so reads that a
	 * user waits for always find a free one */
	struct ra_job *ra_head, *ra_tail; /* protected by lock */
	unsigned ra_queued;               /* protected by lock */
	pthread_t ra[CACHE_RA_THREADS_MAX];
	unsigned n_ra, n_ra_want;
	unsigned ra_runs; /* GETs a sequential reader's window is split into */

	struct mem *mem; /* recently fetched chunks, NULL: none */
	/* the write-behind queue: its own lock, taken by streams and demand
	 * fetches (push, drop) and the writer threads (pop) */
	pthread_mutex_t wr_lock;
	pthread_cond_t wr_cond;           /* a job queued, or stopping */
	pthread_cond_t wr_done;           /* a stream's job finished */
	struct wr_job *wr_head, *wr_tail; /* protected by wr_lock */
	unsigned wr_queued;               /* protected by wr_lock */
	unsigned wr_busy;                 /* jobs being written; protected by wr_lock */
	struct wr_job *rec_head, *rec_tail; /* written, to be recorded; protected by wr_lock */
	unsigned rec_pending;             /* ... and being recorded; protected by wr_lock */
	int committing;                   /* a writer records them now; protected by wr_lock */
	pthread_t wr[CACHE_WR_THREADS_MAX];
	unsigned n_wr, n_wr_want;
	unsigned mem_chunks; /* buffers in the pool */
	int wr_stop; /* protected by wr_lock; set once no stream is left */

	atomic_int seq_readers; /* open files read sequentially now */
	uint32_t ra_cap;        /* most chunks a window may hold (the quota's share) */
	_Atomic uint64_t hits, mem_hits, misses, backend_bytes, refetches, uncached, dropped;
	_Atomic uint64_t store_pause_until_ms;
	atomic_int cancelled;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int objid_of(const struct cache_object *o, uint8_t id[OBJID_LEN])
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

static void objid_path(const uint8_t *id, char out[64])
{
	char hex[2 * OBJID_LEN + 1];

	for (int i = 0; i < OBJID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", id[i]);
	snprintf(out, 64, "%.2s/%s", hex, hex);
}

static int open_data(struct cache *c, const uint8_t *id, int flags)
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
static int range_lock(int fd, short type, uint64_t off, uint64_t len, int wait)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)off,
			   .l_len = (off_t)len};

	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* ---- hits ---- */

/* Mark a chunk used now (its LRU time, written to the index in batches). */
static void touch_chunk(struct cache *c, const uint8_t *id, uint32_t chunk)
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

static void note_hit(struct cache *c, const uint8_t *id, uint32_t chunk, int from_mem)
{
	atomic_fetch_add(&c->hits, 1);
	if (from_mem)
		atomic_fetch_add(&c->mem_hits, 1);
	pthread_mutex_lock(&c->lock);
	c->pend_hits++;
	pthread_mutex_unlock(&c->lock);
	touch_chunk(c, id, chunk);
}

/* Read [a, a + n) of a recorded chunk from its data file, checking every
 * block it touches. @return 0, -EBADMSG (check failed, short, or no file:
 * damaged or evicted), other -errno. */
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
	for (uint32_t b = b0; b <= b1; b++) {
		uint32_t bo = (b - b0) * INDEX_BLOCK;
		uint32_t bl = span - bo < INDEX_BLOCK ? span - bo : INDEX_BLOCK;
		if (crc32c(0, buf + bo, bl) != rec->crc[b]) {
			err = -EBADMSG;
			goto out;
		}
	}
	if (buf != dst)
		memcpy(dst, buf + (a - span_off), n);
out:
	if (buf != dst)
		free(buf);
	return err;
}

/* Try to serve from disk. @return 0, or -ENOENT/-EBADMSG (fetch it). */
static int try_disk(struct cache *c, const uint8_t *id, uint32_t chunk, uint32_t clen, uint32_t a,
		    uint32_t n, char *dst, struct index_chunk *rec, int direct)
{
	int err = index_chunk_get(c->ix, id, chunk, rec);

	if (err)
		return err;
	if (rec->len != clen)
		return -EBADMSG;
	return read_recorded(c, id, chunk, rec, a, n, dst, direct);
}

/* ---- misses ---- */

/* What one object may hold of the fetch slots: half of them for reads that
 * someone waits for, and, counted apart, half of the readahead workers for
 * readahead (which skips a run rather than wait), so one stalled object
 * leaves the rest of the mount its fetches and its readahead, and a busy
 * healthy one keeps its readahead. */
static unsigned demand_cap(const struct cache *c)
{
	return c->max_fetches / 2 ? c->max_fetches / 2 : 1;
}

static unsigned ra_cap(const struct cache *c) { return c->n_ra / 2 ? c->n_ra / 2 : 1; }

static void want_eviction(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->evict_wanted = 1;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* May a new chunk of @len bytes be stored? Not past the quota: usage stays
 * within the quota plus the chunks in flight. */
static int may_store(struct cache *c, uint32_t len)
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

static void store_failed(struct cache *c, int err)
{
	atomic_store(&c->store_pause_until_ms, now_ms() + STORE_PAUSE_MS);
	log_once(LOG_LVL_WARN, "cannot write to the cache in %s (%s): serving from the backend "
		 "without caching for now", c->dir, strerror(-err));
	if (err == -ENOSPC)
		want_eviction(c);
}

/* Fill @rec's length, block count and use time for a chunk of @clen bytes. */
static void record_head(struct index_chunk *rec, uint32_t clen)
{
	rec->len = clen;
	rec->nblocks = (clen + INDEX_BLOCK - 1) / INDEX_BLOCK;
	rec->last_use_ms = now_ms();
}

/* Fill @rec for the chunk of @clen bytes in @buf: length, use, checksums. */
static void record_of(struct index_chunk *rec, const char *buf, uint32_t clen)
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
static void size_data(struct cache *c, int fd, uint64_t size)
{
	struct stat st;

	if (c->prealloc && fstat(fd, &st) == 0 && (uint64_t)st.st_size < size)
		(void)ftruncate(fd, (off_t)size);
}

static int write_chunk(struct cache *c, int fd, int dfd, const char *buf, uint64_t coff,
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
static int lock_chunk(struct cache *c, int fd, const uint8_t *id, uint32_t chunk, uint32_t a,
		      uint32_t n, char *dst, int *failed)
{
	uint64_t coff = (uint64_t)chunk * c->chunk_size;
	int err;

	if (!dst || !c->mem)
		return range_lock(fd, F_WRLCK, coff, c->chunk_size, 1);
	for (;;) {
		err = range_lock(fd, F_WRLCK, coff, c->chunk_size, 0);
		if (err != -EAGAIN && err != -EACCES)
			return err;
		if (mem_wait_read(c->mem, id, chunk, a, n, dst, 10) == 0)
			return 1;
		/* the fetch we wait on failed: its error is ours, now */
		if ((*failed = flight_failed(c->fl, id)) != 0)
			return 2;
	}
}

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
static void note_fetched(struct cache *c, uint32_t clen)
{
	atomic_fetch_add(&c->misses, 1);
	atomic_fetch_add(&c->backend_bytes, clen);
	pthread_mutex_lock(&c->lock);
	c->pend_misses++;
	pthread_mutex_unlock(&c->lock);
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

/* ---- write-behind ----
 *
 * A chunk fetched into a pool buffer is published (readers copy it from
 * memory at once) and queued for a writer thread, which writes it to its
 * data file, records it and releases its range lock. Neither the stream nor
 * the reader waits for the disk. When the disk falls behind, the queue holds
 * the pool's buffers; a stream that finds no buffer free drops the oldest
 * queued write instead of waiting (the chunk is left out of the cache,
 * counted in `dropped`, and fetched again by the next read that misses it).
 * A prefetch's writes are never dropped: the cache is its whole point, and it
 * may go at the disk's speed. */
/* A fetch's data file, open twice (fd holds the range locks; dfd has
 * O_DIRECT), shared by the fetch and its write jobs and closed by whichever
 * is done last: a stream never waits for its writes. */
struct data_files {
	int fd, dfd;
	unsigned refs; /* protected by c->wr_lock */
};

static struct data_files *files_new(int fd, int dfd)
{
	struct data_files *d = malloc(sizeof(*d));

	if (d)
		*d = (struct data_files){fd, dfd, 1};
	return d;
}

static void files_put(struct cache *c, struct data_files *d)
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

struct wr_job {
	struct wr_job *next;
	struct data_files *files; /* a reference */
	int fd, dfd;              /* files->fd (its range lock on the chunk) and files->dfd */
	int keep;               /* never dropped (a prefetch, a refill) */
	unsigned *pending;      /* a prefetch's count of its jobs, or NULL; under wr_lock */
	uint64_t queued_ms;     /* CLOCK_MONOTONIC when queued */
	int record;
	uint8_t id[OBJID_LEN];
	uint64_t osize;
	struct mem_buf *mb; /* published, with a reference held until written */
	struct index_chunk *rec;
	uint32_t chunk, clen;
	const char *source, *key, *etag; /* in ids, for a refill when dropped */
	char name[]; /* source/key, then source\0key\0etag\0 */
};

static struct wr_job *wr_job_new(const struct cache_object *o)
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

static void wr_push(struct cache *c, struct wr_job *j)
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

static void refill_note(struct cache *c, const struct cache_object *o);

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

static void *wr_main(void *arg)
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


/* Fetch chunk @chunk (@clen bytes) into the cache and copy [a, a + n) out. */
static int fetch_chunk(struct cache *c, const struct cache_object *o, const uint8_t *id,
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
			note_hit(c, id, chunk, from_mem);
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
	err = c->be->ops->read(c->be, &(struct backend_ref){o->key, o->etag, o->size}, coff, clen,
			       buf, &got);
	if (!err && got != clen)
		err = -ESTALE; /* shorter than the listing said: another version */
	/* before the chunk's lock goes: its waiters find the error, not a slot */
	flight_put(c->fl, id, FLIGHT_DEMAND, err);
	if (err)
		goto out;
	note_fetched(c, clen);
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

static uint32_t chunk_len(const struct cache *c, uint64_t size, uint32_t chunk)
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
		note_hit(c, id, chunk, 1);
		return 0;
	}
	err = try_disk(c, id, chunk, clen, a, n, dst, &rec, direct);
	if (err == 0) {
		note_hit(c, id, chunk, 0);
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
		err = c->be->ops->read(c->be, &(struct backend_ref){obj->key, obj->etag, obj->size},
				       off, want, buf, got);
		if (!err && *got != want)
			err = -ESTALE; /* the object is shorter than its listing said */
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
			note_hit(c, id, (uint32_t)(off / c->chunk_size) + (uint32_t)i, 1);
		*ret = fn(arg, iov, k);
	}
	for (int i = 0; i < k; i++)
		mem_put(c->mem, ref[i]);
	return all;
}

/* ---- streaming fetch of a run of chunks (readahead) ----
 *
 * One GET for many chunks: object stores (and s3rver above all) serve one
 * long ranged GET much faster than many short ones. The bytes go to the data
 * file block by block as they arrive (64 KiB of memory, whatever the run's
 * length); each chunk is recorded and its range lock released as soon as it
 * is complete, so a reader waiting on it goes on at once. */

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
static int fetch_run(struct cache *c, const struct cache_object *o, const uint8_t *id,
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
		err = c->be->ops->read_stream(c->be, &(struct backend_ref){o->key, o->etag, o->size},
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

/* ---- readahead ---- */

static int ra_enqueue(struct cache *c, const struct cache_object *o, uint32_t chunk,
		      uint32_t count, int sweep);

/* A job for chunks [chunk, chunk + count) of @o, or NULL: no memory. */
static struct ra_job *ra_job_new(const struct cache_object *o, uint32_t chunk, uint32_t count,
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

static void ra_job_free(struct ra_job *j)
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

static void *ra_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct ra_job *j;
		while (!c->stop && !c->ra_head)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->stop)
			break;
		j = c->ra_head;
		c->ra_head = j->next;
		if (!c->ra_head)
			c->ra_tail = NULL;
		c->ra_queued--;
		pthread_mutex_unlock(&c->lock);
		ra_run(c, j);
		ra_job_free(j);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Queue a readahead job. A sweep job is queued only while the workers are
 * about to run out of work, so it takes their idle time, and sequential
 * readers' jobs never wait behind a whole file. @return 0 when queued. */
static int ra_enqueue(struct cache *c, const struct cache_object *o, uint32_t chunk,
		      uint32_t count, int sweep)
{
	unsigned max = sweep == RA_SWEEP ? c->n_ra / 2 : RA_QUEUE_MAX;
	struct ra_job *j;
	int full;

	/* a sweep asks on every read of its reader: mostly "no", without an
	 * allocation */
	pthread_mutex_lock(&c->lock);
	full = c->ra_queued >= max || c->stop;
	pthread_mutex_unlock(&c->lock);
	if (full)
		return -EBUSY;
	if (!(j = ra_job_new(o, chunk, count, sweep)))
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	if (c->ra_queued >= max || c->stop) {
		pthread_mutex_unlock(&c->lock);
		ra_job_free(j);
		return -EBUSY;
	}
	if (c->ra_tail)
		c->ra_tail->next = j;
	else
		c->ra_head = j;
	c->ra_tail = j;
	c->ra_queued++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void cache_stream_init(struct cache_stream *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

void cache_stream_destroy(struct cache_stream *s)
{
	if (s->counted)
		atomic_fetch_sub(&s->counted->seq_readers, 1);
	free(s->touched);
	pthread_mutex_destroy(&s->lock);
}

/* A random reader marks the chunks it reads; once it has read a quarter of
 * the object's chunks, it is taken to be reading the whole object in some
 * order of its own (an mmap of a shard, tensors read out of order), and the
 * rest is streamed in behind it (s->sweep). Called with s->lock held. */
static void note_random(struct cache_stream *s, uint64_t first, uint64_t last,
			uint64_t n_chunks)
{
	if (s->sweeping || n_chunks < SWEEP_MIN_CHUNKS)
		return;
	if (!s->touched && !(s->touched = calloc((n_chunks + 7) / 8, 1)))
		return;
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
	}
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
	} else {
		if (s->counted) {
			atomic_fetch_sub(&c->seq_readers, 1);
			s->counted = NULL;
		}
		s->window = 0; /* random access: no readahead until it looks sequential */
		s->ahead_until = cur + 1;
		/* never sweep what would push half the cache out */
		if (obj->size <= c->quota / 2)
			note_random(s, off / c->chunk_size, cur, last_chunk + 1);
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

void cache_cancel(struct cache *c) { atomic_store(&c->cancelled, 1); }

int cache_quota(struct cache *c, uint64_t *quota, uint64_t *usage, double *high)
{
	struct index_stats st;

	if (!c->ix)
		return -ENODATA;
	if (index_stats(c->ix, &st))
		return -EIO;
	*quota = c->quota;
	*usage = st.usage;
	*high = c->high;
	return 0;
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

void cache_counters(struct cache *c, struct cache_counters *out)
{
	out->hits = atomic_load(&c->hits);
	out->mem_hits = atomic_load(&c->mem_hits);
	out->misses = atomic_load(&c->misses);
	out->backend_bytes = atomic_load(&c->backend_bytes);
	out->refetches = atomic_load(&c->refetches);
	out->uncached = atomic_load(&c->uncached);
	out->dropped = atomic_load(&c->dropped);
}

/* ---- eviction ---- */

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
	h = c->pend_hits;
	m = c->pend_misses;
	if (n == 0 && h == 0 && m == 0) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	t = malloc(n ? n * sizeof(*t) : 1);
	if (t) {
		memcpy(t, c->touch, n * sizeof(*t));
		c->n_touch = 0;
		c->pend_hits = c->pend_misses = 0;
	}
	pthread_mutex_unlock(&c->lock);
	if (t) {
		index_touch(c->ix, t, n, h, m);
		free(t);
	}
}

/* Chunks of @o were dropped: remember it for a refill (once). */
static void refill_note(struct cache *c, const struct cache_object *o)
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

	if (!j || c->ra_queued)
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

static void *bg_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		struct timespec ts;
		int evict;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (!c->evict_wanted)
			pthread_cond_timedwait(&c->cond, &c->lock, &ts);
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

/* ---- open / close ---- */

int cache_parse_size(const char *s, uint64_t *bytes, double *pct)
{
	char *end;
	double v;
	uint64_t mult = 1;

	*bytes = 0;
	*pct = 0;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -EINVAL;
	if (strcmp(end, "%") == 0) {
		if (v <= 0 || v > 100)
			return -EINVAL;
		*pct = v;
		return 0;
	}
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default: break;
	}
	if (*end == 'i' && mult > 1)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v * (double)mult > 1.8e19)
		return -EINVAL;
	*bytes = (uint64_t)(v * (double)mult);
	return *bytes ? 0 : -EINVAL;
}

/* A damaged index was set aside (index_was_reset): no chunk is recorded, so
 * every data file is unreachable and uncounted in usage; remove them. No
 * other process uses them: the index is still held exclusively. */
static void clear_data(int data_fd)
{
	int fd = openat(data_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		int sfd;
		DIR *s;
		struct dirent *f;

		if (e->d_name[0] == '.')
			continue;
		sfd = openat(data_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		s = sfd >= 0 ? fdopendir(sfd) : NULL;
		if (!s) {
			if (sfd >= 0)
				close(sfd);
			continue;
		}
		while ((f = readdir(s)))
			if (f->d_name[0] != '.')
				unlinkat(sfd, f->d_name, 0);
		closedir(s);
		unlinkat(data_fd, e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

/* Open the disk tier; on failure the cache runs without it. */
static int open_disk(struct cache *c, const struct cache_config *cfg, char *msg, size_t msg_len)
{
	char path[4096];
	struct statvfs sv;
	int err;

	if (mkdir(cfg->dir, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		snprintf(msg, msg_len, "cannot create %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	snprintf(path, sizeof(path), "%s/data", cfg->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		snprintf(msg, msg_len, "cannot create %.400s: %s", path, strerror(-err));
		return err;
	}
	c->data_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/users.lock", cfg->dir);
	c->users_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	snprintf(path, sizeof(path), "%s/evict.lock", cfg->dir);
	c->evict_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (c->data_fd < 0 || c->users_fd < 0 || c->evict_fd < 0) {
		err = -errno;
		snprintf(msg, msg_len, "cannot open files in %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	flock(c->users_fd, LOCK_SH);
	{
		/* on tmpfs an allocation is the memory itself: no preallocation */
		struct statfs sf;
		c->prealloc = fstatfs(c->data_fd, &sf) == 0 && sf.f_type != TMPFS_MAGIC;
	}
	snprintf(path, sizeof(path), "%s/index", cfg->dir);
	err = index_open(path, INDEX_OPEN_RESET,
			 cfg->chunk_size ? cfg->chunk_size : CACHE_DEFAULT_CHUNK, &c->chunk_size,
			 &c->ix, msg, msg_len);
	if (err)
		return err;
	if (index_was_reset(c->ix)) {
		clear_data(c->data_fd);
		index_reset_done(c->ix);
	}
	if (cfg->chunk_size && cfg->chunk_size != c->chunk_size)
		log_warn("cache %s was created with chunk_size %u KiB: using that, not %u KiB",
			 cfg->dir, c->chunk_size >> 10, cfg->chunk_size >> 10);
	if (statvfs(cfg->dir, &sv) < 0) {
		err = -errno;
		snprintf(msg, msg_len, "statvfs %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	{
		uint64_t fs_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
		double pct = cfg->quota_percent > 0 ? cfg->quota_percent : 50;
		c->quota = cfg->quota_bytes ? cfg->quota_bytes : (uint64_t)(fs_bytes * pct / 100);
	}
	c->high = cfg->high > 0 ? cfg->high : CACHE_DEFAULT_HIGH;
	c->low = cfg->low > 0 ? cfg->low : CACHE_DEFAULT_LOW;
	index_set_quota(c->ix, c->quota, c->high, c->low);
	/* Readahead must not outrun the cache: a window past half of what one
	 * eviction round frees would have chunks evicted before they are read. */
	c->ra_cap = (uint32_t)((c->quota * (c->high - c->low) / 2) / c->chunk_size);
	if (c->ra_cap < RA_WINDOW_MIN)
		c->ra_cap = RA_WINDOW_MIN;
	return 0;
}

/* CPUs this process may run on (a container's cpuset, not the host's). */
static unsigned cpus_here(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* The memory limit of this process's own cgroup (v2 memory.max, v1
 * memory.limit_in_bytes), or UINT64_MAX: none found. */
static uint64_t cgroup_limit(void)
{
	char line[4096], path[4200];
	uint64_t limit = UINT64_MAX;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return limit;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *cg = ctl ? strchr(ctl + 1, ':') : NULL;
		unsigned long long v;
		FILE *m;
		if (!cg)
			continue;
		*cg++ = '\0';
		cg[strcspn(cg, "\n")] = '\0';
		ctl++;
		if (*ctl == '\0') /* "0::/path": the unified hierarchy */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
		else if (strstr(ctl, "memory"))
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
				 cg);
		else
			continue;
		if ((m = fopen(path, "re")) != NULL) {
			if (fscanf(m, "%llu", &v) == 1 && v > 0 && v < limit)
				limit = v; /* "max" does not scan: no limit */
			fclose(m);
		}
	}
	fclose(f);
	return limit;
}

/* Memory this process may use: RAM, or less under a cgroup limit. */
static uint64_t memory_here(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 1ull << 30;
	uint64_t cg = cgroup_limit();

	return cg < ram ? cg : ram;
}

static unsigned clampu(uint64_t v, unsigned lo, unsigned hi)
{
	return v < lo ? lo : v > hi ? hi : (unsigned)v;
}

/* How much of the machine the cache's threads and memory take (see
 * docs/design.md, "Sizing"): fetch streams 4 per CPU (a stream mostly waits
 * on the network), writers one per 2 CPUs, the pool 1/32 of memory but no
 * more than the CPUs can fill (64 MiB each). */
static void size_for_machine(struct cache *c, const struct cache_config *cfg)
{
	unsigned cpus = cpus_here();
	uint64_t pool = memory_here() / 32;

	if (pool > MEM_PER_CPU * cpus)
		pool = MEM_PER_CPU * cpus;
	c->max_fetches = cfg->max_fetches ? cfg->max_fetches : clampu(4ull * cpus, 16, 64);
	pool = pool < MEM_MIN ? MEM_MIN : pool > MEM_MAX ? MEM_MAX : pool;
	c->mem_chunks = clampu(pool / c->chunk_size, 8, 4096);
	c->n_wr_want = clampu(cpus / 2, 4, CACHE_WR_THREADS_MAX);
	c->n_ra_want = clampu(c->max_fetches / 2, 1, CACHE_RA_THREADS_MAX);
	/* a sequential reader's window goes out as up to 8 GETs at once where
	 * its share of the readahead slots allows */
	c->ra_runs = clampu(c->n_ra_want / 2, 1, 8);
	if (c->ra_runs < 4 && c->n_ra_want >= 4)
		c->ra_runs = 4;
}

int cache_open(struct backend *be, const struct cache_config *cfg, struct cache **out)
{
	struct cache *c = calloc(1, sizeof(*c));
	char msg[512] = "";

	if (!c)
		return -ENOMEM;
	c->be = be;
	c->data_fd = c->users_fd = c->evict_fd = -1;
	c->chunk_size = cfg->chunk_size ? cfg->chunk_size : CACHE_DEFAULT_CHUNK;
	size_for_machine(c, cfg);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_mutex_init(&c->wr_lock, NULL);
	pthread_cond_init(&c->wr_cond, NULL);
	pthread_cond_init(&c->wr_done, NULL);
	if (flight_open(c->max_fetches, &c->fl) != 0) {
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return -ENOMEM;
	}
	if (cfg->dir) {
		c->dir = strdup(cfg->dir);
		c->touch = calloc(TOUCH_MAX, sizeof(*c->touch));
		if (!c->dir || !c->touch || open_disk(c, cfg, msg, sizeof(msg))) {
			log_warn("no disk cache: %s", *msg ? msg : "out of memory");
			index_close(c->ix);
			c->ix = NULL;
		}
	}
	if (c->ix) {
		/* the index's chunk size wins over the configured one */
		c->mem_chunks = clampu((uint64_t)c->mem_chunks * (cfg->chunk_size ? cfg->chunk_size
								      : CACHE_DEFAULT_CHUNK) /
					   c->chunk_size,
				       8, 4096);
		if (mem_open(c->mem_chunks, c->chunk_size, &c->mem) != 0)
			c->mem = NULL; /* reads come back from the files */
		while (c->mem && c->n_wr < c->n_wr_want &&
		       pthread_create(&c->wr[c->n_wr], NULL, wr_main, c) == 0)
			c->n_wr++;
		if (pthread_create(&c->bg, NULL, bg_main, c) == 0)
			c->bg_started = 1;
		while (c->n_ra < c->n_ra_want &&
		       pthread_create(&c->ra[c->n_ra], NULL, ra_main, c) == 0)
			c->n_ra++;
		log_info("cache %s: quota %llu MiB, watermarks %.2f/%.2f, chunk %u KiB", c->dir,
			 (unsigned long long)(c->quota >> 20), c->high, c->low, c->chunk_size >> 10);
		log_info("cache: %u fetch streams, %u readahead and %u writer threads, %u MiB of "
			 "memory for chunks in flight",
			 c->max_fetches, c->n_ra, c->n_wr,
			 (unsigned)((uint64_t)c->mem_chunks * c->chunk_size >> 20));
	}
	*out = c;
	return 0;
}

void cache_close(struct cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (c->bg_started)
		pthread_join(c->bg, NULL);
	for (unsigned i = 0; i < c->n_ra; i++)
		pthread_join(c->ra[i], NULL);
	/* the streams are gone (readahead joined; prefetch and FUSE stopped
	 * before this call): the writers drain their queue and end */
	pthread_mutex_lock(&c->wr_lock);
	c->wr_stop = 1;
	pthread_cond_broadcast(&c->wr_cond);
	pthread_mutex_unlock(&c->wr_lock);
	for (unsigned i = 0; i < c->n_wr; i++)
		pthread_join(c->wr[i], NULL);
	while (c->ra_head) {
		struct ra_job *j = c->ra_head;
		c->ra_head = j->next;
		ra_job_free(j);
	}
	while (c->refill) {
		struct ra_job *j = c->refill;
		c->refill = j->next;
		ra_job_free(j);
	}
	if (c->ix)
		log_info("cache: %llu chunk reads from memory, %llu from disk, %llu fetched "
			 "(%llu MiB), %llu not stored (%llu of them dropped: the disk was behind)",
			 (unsigned long long)c->mem_hits, (unsigned long long)(c->hits - c->mem_hits),
			 (unsigned long long)c->misses, (unsigned long long)(c->backend_bytes >> 20),
			 (unsigned long long)c->uncached, (unsigned long long)c->dropped);
	index_close(c->ix);
	mem_close(c->mem);
	if (c->data_fd >= 0)
		close(c->data_fd);
	if (c->users_fd >= 0)
		close(c->users_fd);
	if (c->evict_fd >= 0)
		close(c->evict_fd);
	flight_close(c->fl);
	pthread_cond_destroy(&c->wr_done);
	pthread_cond_destroy(&c->wr_cond);
	pthread_mutex_destroy(&c->wr_lock);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->touch);
	free(c->dir);
	free(c);
}
