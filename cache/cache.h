/* The chunk cache: wraps a backend's reads with a persistent cache of fixed
 * size chunks on local disk (see docs/design.md, "Chunk cache").
 *
 * Objects are named by identity (source, key, ETag, size): another version of
 * a key is another object, so the cache can never hand out another version's
 * bytes. Every block served from disk is checked against the CRC-32C recorded
 * when it was fetched; a block that does not match is fetched again.
 * Several processes may share one cache directory (one index, one quota).
 *
 * Thread safety: every function may be called from any thread.
 * Knows nothing of FUSE.
 */
#ifndef MODELFS_CACHE_H
#define MODELFS_CACHE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "backend.h"

struct cache;

/* The identity of one object version. */
struct cache_object {
	const char *source; /* the backend's name for its source (backend.h) */
	const char *key;    /* full backend key */
	const char *etag;   /* "" when the backend gave none */
	uint64_t size;
};

struct cache_config {
	const char *dir;      /* NULL: no disk cache, reads go to the backend */
	uint64_t quota_bytes; /* 0: the default (half of the cache filesystem) */
	double quota_percent; /* > 0: quota as a percentage of the cache filesystem */
	double high, low;     /* watermarks, fractions of the quota */
	uint32_t chunk_size;  /* power of two; used when the cache is created */
	unsigned max_fetches; /* chunk fetches in flight at once (memory bound) */
	int disk_required;    /* the caller fails without the disk tier and says why
			       * (cache_disk_error): no warning here */
};

#define CACHE_DEFAULT_CHUNK (4u << 20)
#define CACHE_DEFAULT_HIGH 0.95
#define CACHE_DEFAULT_LOW 0.70

/* Open the cache over @be. If the cache directory cannot be used, the cache
 * runs without a disk tier (said once in the log, unless disk_required) and
 * this still returns 0.
 * @return 0 or -ENOMEM. */
int cache_open(struct backend *be, const struct cache_config *cfg, struct cache **out);
void cache_close(struct cache *c);

/* Read up to @len bytes at @off of @obj into @buf; *@got is short only at the
 * end of the object. @return 0, or the backend's -errno (-ESTALE when the
 * object is no longer this version). */
int cache_read(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
	       void *buf, size_t *got);
/* cache_read for a random reader (cache_readahead said so): cached bytes are
 * read from disk with O_DIRECT when @buf and the range are block-aligned, so
 * no page cache of the data file is filled for bytes read once. */
int cache_read_random(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
		      void *buf, size_t *got);

/* Serve [off, off + len) of @obj in place when all of it is held in memory
 * (just fetched), in up to CACHE_INPLACE_MAX chunks: calls @fn with the
 * pieces, which stay valid during the call only. @return 1 when served
 * (@fn's result in *@ret), 0 when not (use cache_read). */
#define CACHE_INPLACE_MAX 64
int cache_read_inplace(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
		       int (*fn)(void *arg, const struct iovec *iov, int count), void *arg, int *ret);

/* Sequential-read state of one open file, owned by the caller (one per open
 * file; its own lock, so concurrent reads of one file are fine). */
struct cache_stream;
/* @return NULL when out of memory. */
struct cache_stream *cache_stream_new(void);
void cache_stream_free(struct cache_stream *s);

/* Note a read of [off, off + len) of @obj and, while its reader is
 * sequential, schedule the chunks ahead of it (a window that doubles up to 16
 * chunks, 32 while it is the only sequential reader, and drops to none on a
 * random read). A random reader that has read a
 * quarter of the object's chunks gets the rest swept in, one run of 16 chunks
 * per read while the workers have room. Fetches run in background workers
 * that take at most half of the fetch slots; chunks already on disk are
 * handed to the kernel's readahead of the data file instead. @return 1 when
 * this read is a random one (no window), else 0. */
int cache_readahead(struct cache *c, const struct cache_object *obj, struct cache_stream *s,
		    uint64_t off, size_t len);

/* Bring all of @obj into the disk cache now, in runs of 16 chunks (one
 * streaming GET each), taking one fetch slot at a time, so reads that users
 * wait for go first. @return 0 when every byte is cached and checked,
 * -ENODATA without a disk tier, -ENOSPC when it could not all be stored
 * (quota), or the backend's error. */
int cache_prefetch(struct cache *c, const struct cache_object *obj);

/* If every byte of @obj is in the disk cache, open its data file read-only
 * and pin it: eviction leaves the object alone until cache_unpin. The caller
 * may then hand the file to the kernel to read directly; those reads skip the
 * per-block check (see docs/design.md, "Passthrough"). @return the fd,
 * -ENOENT when not all of it is cached, -ENODATA without a disk tier, or
 * another -errno. */
int cache_pin(struct cache *c, const struct cache_object *obj);

/* Unpin what cache_pin returned and close @fd; its chunks count as used now. */
void cache_unpin(struct cache *c, const struct cache_object *obj, int fd);

/* Wait until every chunk handed to the writers so far is written (or
 * dropped) and recorded. */
void cache_sync(struct cache *c);

/* Make running and later cache_prefetch calls return -ECANCELED at their next
 * run boundary (the daemon is unmounting). */
void cache_cancel(struct cache *c);

/* Why the disk tier asked for could not be opened (cache_open went on
 * without it), or "". */
const char *cache_disk_error(const struct cache *c);

/* The quota in force and the usage now. @return 0, -ENODATA without a disk tier. */
int cache_quota(struct cache *c, uint64_t *quota, uint64_t *usage, double *high);

/* Bytes of @obj held in the disk cache. @return 0, -ENODATA without a disk tier. */
int cache_cached_bytes(struct cache *c, const struct cache_object *obj, uint64_t *bytes);

/* Counters of this process since cache_open. */
struct cache_counters {
	uint64_t hits, misses;          /* chunk reads served from the cache / fetched */
	uint64_t mem_hits;              /* ... of the hits, those served from the memory pool */
	uint64_t backend_bytes;         /* bytes fetched from the backend */
	uint64_t refetches;             /* damaged or vanished chunks fetched again */
	uint64_t uncached;              /* fetches not stored (quota, disk full or behind) */
	uint64_t dropped;               /* ... of them, left out because the disk was behind */
	uint64_t evicted_chunks, evicted_bytes; /* by this process's eviction rounds */
	uint64_t flight_waits;          /* reads that waited for another's fetch of their chunk */
	uint64_t store_errors;          /* writes to the cache disk that failed ... */
	uint64_t store_enospc;          /* ... of them, with ENOSPC */
	uint64_t ra_chunks;             /* chunks queued ahead of readers */
	uint64_t sweeps;                /* random readers swept whole */
	uint32_t ra_window;             /* the last sequential window, chunks */
	uint64_t mem_bytes, disk_bytes; /* bytes of reads served from the pool / the disk */
	uint64_t store_bytes;           /* ... and by a fetch from the store made for them */
	uint64_t objects, chunks;       /* what the cache holds (all its mounts) */
};
void cache_counters(struct cache *c, struct cache_counters *out);

/* Offline tools for "modelfs cache stat|verify|clear DIR" (print to stdout).
 * @return 0, or -errno (and a message on stderr). */
int cache_cmd_stat(const char *dir);
int cache_cmd_verify(const char *dir); /* -EIO when damaged chunks were found (and dropped) */
int cache_cmd_clear(const char *dir);

/* Parse "100G", "512M", "1.5T", "80%": bytes (*pct 0) or a percentage. */
int cache_parse_size(const char *s, uint64_t *bytes, double *pct);

#endif
