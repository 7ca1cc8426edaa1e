/* The cache index: LMDB under CACHE_DIR/index, shared by every modelfs process
 * that uses the same cache directory (LMDB is multi-process: one writer at a
 * time across processes, readers never block).
 *
 * Records (all integers little-endian, in host order on one machine):
 *   chunks:  objid[16] + chunk number (u32 big-endian, so an object's chunks
 *            sort together) -> struct index_chunk header + one CRC-32C per
 *            INDEX_BLOCK bytes of the chunk
 *   objects: objid[16] -> size, cached bytes, cached chunks, "bucket/key"
 *   meta:    "usage" (bytes of all chunks), "chunk_size", "quota", "hits",
 *            "misses", "version"
 * A chunk record is written only after its data is in the data file, in the
 * same transaction that adds its length to "usage", so usage is exact and a
 * record never points at data that was not written (see docs/design.md).
 *
 * Thread safety: all functions may be called from any thread (MDB_NOTLS).
 * Errors: 0 or -errno; LMDB's own errors map to -EIO (logged), full map to
 * -ENOSPC.
 */
#ifndef MODELFS_INDEX_H
#define MODELFS_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define INDEX_BLOCK (64u << 10)   /* checksum granularity */
#define INDEX_MAX_BLOCKS 1024     /* chunk_size <= 64 MiB */
#define OBJID_LEN 16

struct index;

struct index_chunk {
	uint32_t len;          /* bytes of data in this chunk */
	uint32_t nblocks;      /* ceil(len / INDEX_BLOCK) */
	uint64_t last_use_ms;  /* wall clock, shared between processes */
	uint32_t crc[INDEX_MAX_BLOCKS];
};

struct index_touch {
	uint8_t objid[OBJID_LEN];
	uint32_t chunk;
	uint64_t when_ms;
};

struct index_object {
	uint64_t size;
	uint64_t cached_bytes;
	uint32_t cached_chunks;
	char name[1024]; /* "bucket/key", for reports */
};

#define INDEX_OPEN_RESET 1u /* set a damaged index aside and start an empty one */

/* Open (creating if needed) the index in @dir (a directory). @chunk_size is
 * recorded on creation; an existing index keeps its own (returned in
 * *@chunk_size_out).
 *
 * The first process to open the index (no other holds it open) checks it
 * first with index_check(); later openers trust that check and only compare
 * the file's size with its meta page. A damaged index is never mapped for
 * use: with INDEX_OPEN_RESET and as the only opener, data.mdb is renamed to
 * data.mdb.damaged-YYYYmmddTHHMMSSZ (one warning line says so), lock.mdb is
 * removed and an empty index is created: see index_was_reset().
 * @return 0, or -errno with a line in @msg; -EBADMSG: the index is damaged
 * (without INDEX_OPEN_RESET, or in use by another process), -EPROTO: another
 * format version. */
int index_open(const char *dir, unsigned flags, uint32_t chunk_size, uint32_t *chunk_size_out,
	       struct index **out, char *msg, size_t msg_len);
void index_close(struct index *ix);

/* 1 when this open set a damaged index aside: nothing of the cache is
 * recorded any more, so every data file is unreachable and not counted in
 * usage. The caller removes them, then calls index_reset_done(): until then
 * (or index_close) other processes wait in index_open, so none of them can
 * write a data file that is about to be removed. */
int index_was_reset(const struct index *ix);
void index_reset_done(struct index *ix);

/* Check the index in @dir without using it: data.mdb's size against the last
 * page its meta page names (before any page is touched: a short file would
 * SIGBUS), then a read-only walk of every database (free list included) that
 * reads every record and checks its format, and the page count of all trees
 * plus the free list against the file. The walk runs in a forked child, so
 * garbage that makes LMDB assert or fault only means "damaged". Run it only
 * while no process writes the index (index_open does: as the first opener).
 * @return 0: sound; -ENOENT: no index; -EBADMSG: damaged, @why says how;
 * -EIO: the check could not finish (killed, out of memory, over its time),
 * @why says why: nothing is known of the index; -errno: fork or pipe failed. */
int index_check(const char *dir, char *why, size_t why_len);

/* @return 0 and the record, or -ENOENT. */
int index_chunk_get(struct index *ix, const uint8_t *objid, uint32_t chunk, struct index_chunk *out);

/* Record a chunk whose data is on disk, creating the object record if needed.
 * If the chunk is already recorded only its checksums are refreshed (usage
 * unchanged). @return 0, -ENOSPC (index full), -EIO. */
int index_chunk_put(struct index *ix, const uint8_t *objid, uint32_t chunk,
		    const struct index_chunk *rec, const char *name, uint64_t obj_size);

/* index_chunk_put of @n chunks in one transaction (one commit, one sync):
 * all are recorded, or none. */
struct index_put {
	const uint8_t *objid;
	uint32_t chunk;
	const struct index_chunk *rec;
	const char *name;
	uint64_t obj_size;
};
int index_chunk_put_many(struct index *ix, const struct index_put *puts, size_t n);

/* Remove chunk records (one transaction). *@freed gets the bytes removed.
 * For each object left with no chunk, @emptied (may be NULL) is called with
 * its objid after the commit. */
int index_chunks_del(struct index *ix, const uint8_t (*objids)[OBJID_LEN], const uint32_t *chunks,
		     size_t n, uint64_t *freed,
		     void (*emptied)(void *arg, const uint8_t *objid), void *arg);

/* Apply a batch of last-use updates and counter increments (one transaction;
 * chunks no longer recorded are ignored). */
int index_touch(struct index *ix, const struct index_touch *t, size_t n, uint64_t hits,
		uint64_t misses);

struct index_stats {
	uint64_t usage, quota, hits, misses, objects, chunks;
	uint32_t chunk_size;
	double high, low; /* watermarks last set (0 when never) */
};
int index_stats(struct index *ix, struct index_stats *out);
/* Record the quota and watermarks in force (the last mount to start sets them). */
int index_set_quota(struct index *ix, uint64_t quota, double high, double low);

/* Call @cb for every chunk (objid, chunk, len, last use). A non-zero return
 * stops the scan. One read transaction: a consistent view. */
int index_scan_chunks(struct index *ix,
		      int (*cb)(void *arg, const uint8_t *objid, uint32_t chunk,
				const struct index_chunk *rec),
		      void *arg);

int index_object_get(struct index *ix, const uint8_t *objid, struct index_object *out);

#endif
