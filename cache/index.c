/* LMDB-backed cache index (see index.h for the record layout).
 *
 * The environment is opened with MDB_NOTLS (FUSE worker threads start and end
 * read transactions on any thread) and MDB_NOMETASYNC: every commit reaches
 * the disk's data pages, the meta page is synced with the next commit, so a
 * machine crash loses at most the last transaction and never corrupts the
 * index; a killed process loses nothing that was committed.
 */
#include "index.h"
#include "log.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define INDEX_MAP_SIZE (8ULL << 30) /* address space only; the file grows as used */
#define INDEX_VERSION 1

struct index {
	MDB_env *env;
	MDB_dbi chunks, objects, meta;
};

/* On-disk object record: fixed header then the name (not NUL-terminated). */
struct obj_rec {
	uint64_t size;
	uint64_t cached_bytes;
	uint32_t cached_chunks;
	uint32_t name_len;
};

static int map_mdb(int rc, const char *what)
{
	if (rc == 0)
		return 0;
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc == MDB_MAP_FULL)
		return -ENOSPC;
	if (rc > 0)
		return -rc; /* an errno */
	log_once(LOG_LVL_ERROR, "cache index: %s: %s", what, mdb_strerror(rc));
	return -EIO;
}

static void chunk_key(uint8_t key[OBJID_LEN + 4], const uint8_t *objid, uint32_t chunk)
{
	memcpy(key, objid, OBJID_LEN);
	key[OBJID_LEN] = (uint8_t)(chunk >> 24);
	key[OBJID_LEN + 1] = (uint8_t)(chunk >> 16);
	key[OBJID_LEN + 2] = (uint8_t)(chunk >> 8);
	key[OBJID_LEN + 3] = (uint8_t)chunk;
}

static uint32_t key_chunk(const uint8_t *key)
{
	return (uint32_t)key[OBJID_LEN] << 24 | (uint32_t)key[OBJID_LEN + 1] << 16 |
	       (uint32_t)key[OBJID_LEN + 2] << 8 | key[OBJID_LEN + 3];
}

static size_t chunk_rec_size(uint32_t nblocks)
{
	return offsetof(struct index_chunk, crc) + nblocks * sizeof(uint32_t);
}

/* The fixed part of a stored chunk record. LMDB aligns values to 2 bytes
 * only, so a record is never read in place through a struct pointer. */
struct rec_head {
	uint32_t len, nblocks;
	uint64_t last_use_ms;
};

static int rec_head_get(const MDB_val *d, struct rec_head *h)
{
	if (d->mv_size < chunk_rec_size(0))
		return -1;
	memcpy(&h->len, (const char *)d->mv_data + offsetof(struct index_chunk, len), 4);
	memcpy(&h->nblocks, (const char *)d->mv_data + offsetof(struct index_chunk, nblocks), 4);
	memcpy(&h->last_use_ms, (const char *)d->mv_data + offsetof(struct index_chunk, last_use_ms),
	       8);
	if (h->nblocks > INDEX_MAX_BLOCKS || d->mv_size != chunk_rec_size(h->nblocks))
		return -1;
	return 0;
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v)
{
	MDB_val k = {strlen(name), (void *)name}, d;
	int rc = mdb_get(txn, dbi, &k, &d);

	*v = 0;
	if (rc == 0 && d.mv_size == sizeof(*v))
		memcpy(v, d.mv_data, sizeof(*v));
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
	MDB_val k = {strlen(name), (void *)name}, d = {sizeof(v), &v};

	return mdb_put(txn, dbi, &k, &d, 0);
}

int index_open(const char *dir, uint32_t chunk_size, uint32_t *chunk_size_out,
	       struct index **out, char *msg, size_t msg_len)
{
	struct index *ix = calloc(1, sizeof(*ix));
	MDB_txn *txn = NULL;
	uint64_t cs = 0, ver = 0;
	int rc;

	if (!ix)
		return -ENOMEM;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = errno;
		snprintf(msg, msg_len, "cannot create %s: %s", dir, strerror(rc));
		free(ix);
		return -rc;
	}
	rc = mdb_env_create(&ix->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(ix->env, 4);
	if (!rc)
		rc = mdb_env_set_mapsize(ix->env, INDEX_MAP_SIZE);
	if (!rc)
		rc = mdb_env_set_maxreaders(ix->env, 1024);
	if (!rc)
		rc = mdb_env_open(ix->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600);
	if (rc) {
		snprintf(msg, msg_len, "cannot open the cache index in %s: %s", dir,
			 mdb_strerror(rc));
		goto out_err;
	}
	/* a reader slot left by a killed process would pin old pages forever */
	mdb_reader_check(ix->env, NULL);
	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (!rc)
		rc = mdb_dbi_open(txn, "chunks", MDB_CREATE, &ix->chunks);
	if (!rc)
		rc = mdb_dbi_open(txn, "objects", MDB_CREATE, &ix->objects);
	if (!rc)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ix->meta);
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "version", &ver);
	if (!rc && ver != 0 && ver != INDEX_VERSION) {
		snprintf(msg, msg_len, "the cache index in %s has format %llu, this modelfs reads %d "
			 "(modelfs cache clear it)", dir, (unsigned long long)ver, INDEX_VERSION);
		mdb_txn_abort(txn);
		mdb_env_close(ix->env);
		free(ix);
		return -EPROTO;
	}
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "chunk_size", &cs);
	if (!rc && cs == 0) {
		cs = chunk_size;
		rc = meta_put_u64(txn, ix->meta, "chunk_size", cs);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "version", INDEX_VERSION);
	}
	if (!rc)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc) {
		snprintf(msg, msg_len, "cannot initialise the cache index in %s: %s", dir,
			 mdb_strerror(rc));
		goto out_err;
	}
	*chunk_size_out = (uint32_t)cs;
	*out = ix;
	return 0;
out_err:
	mdb_env_close(ix->env);
	free(ix);
	return rc > 0 ? -rc : -EIO;
}

void index_close(struct index *ix)
{
	if (!ix)
		return;
	mdb_env_close(ix->env);
	free(ix);
}

int index_chunk_get(struct index *ix, const uint8_t *objid, uint32_t chunk, struct index_chunk *out)
{
	uint8_t key[OBJID_LEN + 4];
	MDB_val k = {sizeof(key), key}, d;
	MDB_txn *txn;
	int rc;

	chunk_key(key, objid, chunk);
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	rc = mdb_get(txn, ix->chunks, &k, &d);
	if (rc == 0) {
		struct rec_head h;
		if (rec_head_get(&d, &h) < 0)
			rc = MDB_NOTFOUND; /* a damaged record is a miss */
		else
			memcpy(out, d.mv_data, d.mv_size);
	}
	mdb_txn_abort(txn);
	return map_mdb(rc, "read");
}

int index_chunk_put(struct index *ix, const uint8_t *objid, uint32_t chunk,
		    const struct index_chunk *rec, const char *name, uint64_t obj_size)
{
	uint8_t key[OBJID_LEN + 4];
	MDB_val k = {sizeof(key), key}, d = {chunk_rec_size(rec->nblocks), (void *)rec};
	MDB_val ok = {OBJID_LEN, (void *)objid}, od;
	MDB_txn *txn;
	struct obj_rec *orec = NULL;
	size_t name_len = strlen(name);
	uint64_t usage;
	uint32_t old_len;
	int rc, existed;

	chunk_key(key, objid, chunk);
	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc)
		return map_mdb(rc, "write");
	{
		MDB_val old;
		struct rec_head h = {0};
		existed = mdb_get(txn, ix->chunks, &k, &old) == 0 && rec_head_get(&old, &h) == 0;
		old_len = existed ? h.len : 0;
	}
	rc = mdb_put(txn, ix->chunks, &k, &d, 0);
	if (rc || (existed && old_len == rec->len))
		goto out;

	/* a new chunk (or a new length): count it in usage and in its object */
	rc = meta_get_u64(txn, ix->meta, "usage", &usage);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "usage", usage - old_len + rec->len);
	if (rc)
		goto out;
	if (name_len > 1023)
		name_len = 1023;
	orec = calloc(1, sizeof(*orec) + name_len);
	if (!orec) {
		rc = ENOMEM;
		goto out;
	}
	if (mdb_get(txn, ix->objects, &ok, &od) == 0 && od.mv_size >= sizeof(*orec)) {
		memcpy(orec, od.mv_data, sizeof(*orec));
	} else {
		orec->size = obj_size;
	}
	orec->cached_bytes = orec->cached_bytes - old_len + rec->len;
	if (!existed)
		orec->cached_chunks++;
	orec->name_len = (uint32_t)name_len;
	memcpy(orec + 1, name, name_len);
	od.mv_size = sizeof(*orec) + name_len;
	od.mv_data = orec;
	rc = mdb_put(txn, ix->objects, &ok, &od, 0);
out:
	free(orec);
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "write");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}

int index_chunks_del(struct index *ix, const uint8_t (*objids)[OBJID_LEN], const uint32_t *chunks,
		     size_t n, uint64_t *freed,
		     void (*emptied)(void *arg, const uint8_t *objid), void *arg)
{
	uint8_t (*empty)[OBJID_LEN] = calloc(n ? n : 1, OBJID_LEN);
	size_t n_empty = 0;
	uint64_t usage, total = 0;
	MDB_txn *txn;
	int rc;

	*freed = 0;
	if (!empty)
		return -ENOMEM;
	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc) {
		free(empty);
		return map_mdb(rc, "write");
	}
	for (size_t i = 0; i < n && !rc; i++) {
		uint8_t key[OBJID_LEN + 4];
		MDB_val k = {sizeof(key), key}, d, ok = {OBJID_LEN, (void *)objids[i]}, od;
		struct rec_head h = {0};
		uint32_t len;

		chunk_key(key, objids[i], chunks[i]);
		if (mdb_get(txn, ix->chunks, &k, &d) != 0)
			continue; /* already gone */
		rec_head_get(&d, &h);
		len = h.len;
		rc = mdb_del(txn, ix->chunks, &k, NULL);
		if (rc)
			break;
		total += len;
		if (mdb_get(txn, ix->objects, &ok, &od) == 0 && od.mv_size >= sizeof(struct obj_rec)) {
			struct obj_rec o;
			memcpy(&o, od.mv_data, sizeof(o));
			o.cached_bytes = o.cached_bytes > len ? o.cached_bytes - len : 0;
			o.cached_chunks = o.cached_chunks ? o.cached_chunks - 1 : 0;
			if (o.cached_chunks == 0) {
				rc = mdb_del(txn, ix->objects, &ok, NULL);
				memcpy(empty[n_empty++], objids[i], OBJID_LEN);
			} else {
				/* same record with new counts (copied out first: a
				 * put may move the page the old value is on) */
				char *copy = malloc(od.mv_size);
				MDB_val nd = {od.mv_size, copy};
				if (!copy) {
					rc = ENOMEM;
					break;
				}
				memcpy(copy, od.mv_data, od.mv_size);
				memcpy(copy, &o, sizeof(o));
				rc = mdb_put(txn, ix->objects, &ok, &nd, 0);
				free(copy);
			}
		}
	}
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "usage", &usage);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "usage", usage > total ? usage - total : 0);
	if (rc) {
		mdb_txn_abort(txn);
		free(empty);
		return map_mdb(rc, "delete");
	}
	rc = map_mdb(mdb_txn_commit(txn), "commit");
	if (!rc) {
		*freed = total;
		for (size_t i = 0; emptied && i < n_empty; i++)
			emptied(arg, empty[i]);
	}
	free(empty);
	return rc;
}

int index_touch(struct index *ix, const struct index_touch *t, size_t n, uint64_t hits,
		uint64_t misses)
{
	MDB_txn *txn;
	uint64_t v;
	int rc;

	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc)
		return map_mdb(rc, "write");
	for (size_t i = 0; i < n && !rc; i++) {
		uint8_t key[OBJID_LEN + 4];
		MDB_val k = {sizeof(key), key}, d;

		chunk_key(key, t[i].objid, t[i].chunk);
		struct rec_head h;
		if (mdb_get(txn, ix->chunks, &k, &d) != 0 || rec_head_get(&d, &h) < 0)
			continue;
		if (h.last_use_ms >= t[i].when_ms)
			continue;
		{
			struct index_chunk *copy = malloc(d.mv_size);
			MDB_val nd = {d.mv_size, copy};
			if (!copy) {
				rc = ENOMEM;
				break;
			}
			memcpy(copy, d.mv_data, d.mv_size);
			copy->last_use_ms = t[i].when_ms;
			rc = mdb_put(txn, ix->chunks, &k, &nd, 0);
			free(copy);
		}
	}
	if (!rc && hits) {
		rc = meta_get_u64(txn, ix->meta, "hits", &v);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "hits", v + hits);
	}
	if (!rc && misses) {
		rc = meta_get_u64(txn, ix->meta, "misses", &v);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "misses", v + misses);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "touch");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}

int index_set_quota(struct index *ix, uint64_t quota, double high, double low)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);

	if (rc)
		return map_mdb(rc, "write");
	rc = meta_put_u64(txn, ix->meta, "quota", quota);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "high_ppm", (uint64_t)(high * 1e6));
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "low_ppm", (uint64_t)(low * 1e6));
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "write");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}

int index_stats(struct index *ix, struct index_stats *out)
{
	MDB_txn *txn;
	MDB_stat st;
	uint64_t cs = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	meta_get_u64(txn, ix->meta, "usage", &out->usage);
	meta_get_u64(txn, ix->meta, "quota", &out->quota);
	meta_get_u64(txn, ix->meta, "hits", &out->hits);
	meta_get_u64(txn, ix->meta, "misses", &out->misses);
	meta_get_u64(txn, ix->meta, "chunk_size", &cs);
	out->chunk_size = (uint32_t)cs;
	meta_get_u64(txn, ix->meta, "high_ppm", &cs);
	out->high = (double)cs / 1e6;
	meta_get_u64(txn, ix->meta, "low_ppm", &cs);
	out->low = (double)cs / 1e6;
	if (mdb_stat(txn, ix->chunks, &st) == 0)
		out->chunks = st.ms_entries;
	if (mdb_stat(txn, ix->objects, &st) == 0)
		out->objects = st.ms_entries;
	mdb_txn_abort(txn);
	return 0;
}

int index_scan_chunks(struct index *ix,
		      int (*cb)(void *arg, const uint8_t *objid, uint32_t chunk,
				const struct index_chunk *rec),
		      void *arg)
{
	struct index_chunk *rec = malloc(sizeof(*rec));
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc, ret = 0;

	if (!rec)
		return -ENOMEM;
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		free(rec);
		return map_mdb(rc, "read");
	}
	rc = mdb_cursor_open(txn, ix->chunks, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		free(rec);
		return map_mdb(rc, "read");
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		struct rec_head h;
		if (k.mv_size != OBJID_LEN + 4 || rec_head_get(&d, &h) < 0)
			continue;
		memcpy(rec, d.mv_data, d.mv_size);
		ret = cb(arg, k.mv_data, key_chunk(k.mv_data), rec);
		if (ret)
			break;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(rec);
	return ret;
}

int index_object_get(struct index *ix, const uint8_t *objid, struct index_object *out)
{
	MDB_val k = {OBJID_LEN, (void *)objid}, d;
	MDB_txn *txn;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	rc = mdb_get(txn, ix->objects, &k, &d);
	if (rc == 0 && d.mv_size >= sizeof(struct obj_rec)) {
		struct obj_rec o;
		memcpy(&o, d.mv_data, sizeof(o));
		out->size = o.size;
		out->cached_bytes = o.cached_bytes;
		out->cached_chunks = o.cached_chunks;
		if (o.name_len > sizeof(out->name) - 1 || sizeof(o) + o.name_len > d.mv_size)
			o.name_len = 0;
		memcpy(out->name, (const char *)d.mv_data + sizeof(o), o.name_len);
		out->name[o.name_len] = '\0';
	} else if (rc == 0) {
		rc = MDB_NOTFOUND;
	}
	mdb_txn_abort(txn);
	return map_mdb(rc, "read");
}
