/* The chunk cache, inside: what its files share (cache.h is the
 * interface).
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

/* Threads, and what each owns:
 *   FUSE workers (the callers): cache_read*, cache_readahead, cache_pin.
 *       They own their struct cache_stream (its own lock, readahead.c) and
 *       take: flight's lock (fetch slots, recent failures), lock (one
 *       touch per hit), wr_lock (pushing a write job), ra_lock (queueing
 *       readahead).
 *   readahead workers, n_ra (ra_main, readahead.c): pop the readahead
 *       queue under ra_lock, then fetch like a reader.
 *   writers, n_wr (wr_main, stream.c): pop the write-behind queue under
 *       wr_lock, write chunks, record them in the index (group commit).
 *   the background thread (bg_main, housekeep.c): waits on bg_cond
 *       (under lock) for an eviction request or a second; writes touches
 *       and counters to the index, runs eviction rounds, queues refills.
 *   prefetch streams (pf_runs_main, readahead.c): PREFETCH_STREAMS threads
 *       per cache_prefetch call, joined before it returns.
 * Locks, one per queue, and the order they nest in: lock -> ra_lock,
 * lock -> wr_lock (no thread holds ra_lock or wr_lock while taking lock).
 *   lock + bg_cond      touch, n_touch, refill, n_refill, evict_wanted, stop
 *   ra_lock + ra_cond   ra_head, ra_tail, ra_queued, ra_stop
 *   wr_lock + wr_cond/wr_done  the write queue, the records to commit
 *   flight (own lock)   fetch slots; mem (own lock) the pool of buffers
 * Counters (hits, misses, bytes, pend_*) are atomics: no lock to count.
 */
#ifndef MODELFS_CACHE_I_H
#define MODELFS_CACHE_I_H

#include "cache.h"
#include "crc32c.h"
#include "evict.h"
#include "flight.h"
#include "index.h"
#include "log.h"
#include "mem.h"
#include "snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

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
	char disk_error[512]; /* why there is no disk tier though one was asked for, or "" */
	int data_fd;        /* dir/data */
	int users_fd, evict_fd;
	uint32_t chunk_size;
	int prealloc;       /* data files sized and chunks allocated before writes (not tmpfs) */
	uint64_t quota;
	double high, low;

	/* lock: the background thread's work (touches, refills, the eviction
	 * request, stop); bg_cond wakes that thread alone */
	pthread_mutex_t lock;
	pthread_cond_t bg_cond;
	struct flight *fl;        /* fetch slots and recent failures (own lock) */
	unsigned max_fetches;
	struct index_touch *touch; /* protected by lock */
	size_t n_touch;           /* protected by lock */
	_Atomic uint64_t pend_hits, pend_misses; /* for the index's counters, taken by bg */
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
	pthread_mutex_t ra_lock;          /* the readahead queue's own */
	pthread_cond_t ra_cond;           /* a job queued, or stopping */
	struct ra_job *ra_head, *ra_tail; /* protected by ra_lock */
	unsigned ra_queued;               /* protected by ra_lock */
	int ra_stop;                      /* protected by ra_lock */
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
	/* for the metrics (cache_counters): counted where they happen */
	_Atomic uint64_t evicted_chunks, evicted_bytes, flight_waits, store_errors, store_enospc;
	_Atomic uint64_t ra_chunks, sweeps;
	_Atomic uint64_t mem_bytes, disk_bytes, store_bytes; /* read bytes served, by origin */
	_Atomic uint32_t ra_window; /* the last sequential window set, in chunks */
	_Atomic uint64_t store_pause_until_ms;
	atomic_int cancelled;
};


/* Write-behind.
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


/* The sequential-read state of one open file (cache.h). */
struct cache_stream {
	pthread_mutex_t lock;
	int seen;
	uint64_t next_off;    /* where a sequential reader goes on */
	uint64_t ahead_until; /* first chunk not yet scheduled */
	uint32_t window;      /* chunks kept ahead: grows while sequential */
	struct cache *counted; /* set while counted as a sequential reader there */
	uint8_t *touched;     /* chunks a random reader has read (a bitmap) */
	uint32_t n_touched;
	int sweeping;         /* ... a quarter of them: the rest is streamed in */
	uint64_t sweep;       /* next chunk of the sweep */
};

/* store.c: data files, range locks, pins, chunk records */
uint64_t mono_ms(void);
uint64_t now_ms(void);
int objid_of(const struct cache_object *o, uint8_t id[OBJID_LEN]);
void objid_path(const uint8_t *id, char out[64]);
/* Do blocks b0..b1 of @rec match @buf, which holds @span bytes from block
 * b0's start (the last block may be short)? Also `modelfs cache verify`. */
int blocks_ok(const struct index_chunk *rec, const char *buf, uint32_t b0, uint32_t b1,
	      uint32_t span);
int open_data(struct cache *c, const uint8_t *id, int flags);
int range_lock(int fd, short type, uint64_t off, uint64_t len, int wait);
int try_disk(struct cache *c, const uint8_t *id, uint32_t chunk, uint32_t clen, uint32_t a,
		    uint32_t n, char *dst, struct index_chunk *rec, int direct);
int may_store(struct cache *c, uint32_t len);
void store_failed(struct cache *c, int err);
void record_head(struct index_chunk *rec, uint32_t clen);
void record_of(struct index_chunk *rec, const char *buf, uint32_t clen);
void size_data(struct cache *c, int fd, uint64_t size);
int write_chunk(struct cache *c, int fd, int dfd, const char *buf, uint64_t coff,
		       uint32_t clen);
int lock_chunk(struct cache *c, int fd, const uint8_t *id, uint32_t chunk, uint32_t a,
		      uint32_t n, char *dst, int *failed);

/* stream.c: stream fetches and the write-behind pool */
void note_fetched(struct cache *c, uint32_t clen);
struct data_files *files_new(int fd, int dfd);
void files_put(struct cache *c, struct data_files *d);
struct wr_job *wr_job_new(const struct cache_object *o);
void wr_push(struct cache *c, struct wr_job *j);
void *wr_main(void *arg);
int fetch_run(struct cache *c, const struct cache_object *o, const uint8_t *id,
		     uint32_t first, uint32_t count, int optional, int keep, unsigned *pending,
		     uint32_t *resume);

/* read.c: the read path and single flight */
unsigned demand_cap(const struct cache *c);
unsigned ra_cap(const struct cache *c);
int fetch_chunk(struct cache *c, const struct cache_object *o, const uint8_t *id,
		       uint32_t chunk, uint32_t clen, uint32_t a, uint32_t n, char *dst,
		       int refetch);
uint32_t chunk_len(const struct cache *c, uint64_t size, uint32_t chunk);

/* readahead.c: readahead streams, the sweep, prefetch */
struct ra_job *ra_job_new(const struct cache_object *o, uint32_t chunk, uint32_t count,
				 int sweep);
void ra_job_free(struct ra_job *j);
void *ra_main(void *arg);
int ra_enqueue(struct cache *c, const struct cache_object *o, uint32_t chunk,
		      uint32_t count, int sweep);

/* housekeep.c: touches, eviction rounds, refills (the background thread) */
void touch_chunk(struct cache *c, const uint8_t *id, uint32_t chunk);
/* A read of @n bytes served from the memory pool or the disk. */
void note_hit(struct cache *c, const uint8_t *id, uint32_t chunk, int from_mem, uint32_t n);
void want_eviction(struct cache *c);
void refill_note(struct cache *c, const struct cache_object *o);
void *bg_main(void *arg);

#endif
