/* Unit tests for cache/index.c: the LMDB index of cached chunks.
 *
 * Every test works in its own index directory under one mkdtemp() directory,
 * removed at the end, so tests do not see each other's usage or counters.
 * The two-handle test forks: LMDB forbids opening one environment twice in
 * one process (closing either handle would drop the other's file locks), and
 * several modelfs processes sharing a cache directory is the case it models.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "index.h"
#include "log.h"

static char root[] = "/tmp/mfs_test_index_XXXXXX";

/* ---- helpers ---- */

static void make_id(uint8_t id[OBJID_LEN], unsigned n)
{
	/* distinct ids whose first bytes differ, so objects sort by n */
	memset(id, 0xa5, OBJID_LEN);
	id[0] = (uint8_t)(n >> 8);
	id[1] = (uint8_t)n;
}

/* A chunk record of @len bytes whose CRCs are derived from @seed, so a record
 * read back can be told apart from any other. Heap: the struct is 4 KiB. */
static struct index_chunk *make_rec(uint32_t len, uint64_t last_use, uint32_t seed)
{
	struct index_chunk *r = calloc(1, sizeof(*r));

	if (!r)
		abort();
	r->len = len;
	r->nblocks = (len + INDEX_BLOCK - 1) / INDEX_BLOCK;
	r->last_use_ms = last_use;
	for (uint32_t b = 0; b < r->nblocks; b++)
		r->crc[b] = seed * 2654435761u + b * 40503u + 1;
	return r;
}

static int rec_equal(const struct index_chunk *a, const struct index_chunk *b)
{
	if (a->len != b->len || a->nblocks != b->nblocks || a->last_use_ms != b->last_use_ms)
		return 0;
	return memcmp(a->crc, b->crc, a->nblocks * sizeof(uint32_t)) == 0;
}

static struct index *open_at(const char *name, uint32_t chunk_size, uint32_t *cs_out)
{
	char path[256], msg[512] = "";
	struct index *ix = NULL;
	uint32_t cs = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", root, name);
	rc = index_open(path, 0, chunk_size, &cs, &ix, msg, sizeof(msg));
	CHECK(rc == 0);
	if (rc) {
		fprintf(stderr, "index_open %s: %d %s\n", path, rc, msg);
		return NULL;
	}
	if (cs_out)
		*cs_out = cs;
	return ix;
}

static uint64_t usage_of(struct index *ix)
{
	struct index_stats st;

	if (index_stats(ix, &st))
		return UINT64_MAX;
	return st.usage;
}

static int put(struct index *ix, unsigned obj, uint32_t chunk, uint32_t len, uint64_t last_use,
	       const char *name, uint64_t size)
{
	uint8_t id[OBJID_LEN];
	struct index_chunk *r = make_rec(len, last_use, obj * 1000 + chunk);
	int rc;

	make_id(id, obj);
	rc = index_chunk_put(ix, id, chunk, r, name, size);
	free(r);
	return rc;
}

static int has_chunk(struct index *ix, unsigned obj, uint32_t chunk)
{
	uint8_t id[OBJID_LEN];
	struct index_chunk *r = malloc(sizeof(*r));
	int rc;

	make_id(id, obj);
	rc = index_chunk_get(ix, id, chunk, r);
	free(r);
	return rc == 0;
}

/* ---- open and chunk_size ---- */

static void test_open(void)
{
	char path[256];
	struct index_stats st;
	struct stat sb;
	uint32_t cs = 0;
	struct index *ix = open_at("open", 256u << 10, &cs);

	if (!ix)
		return;
	CHECK(cs == 256u << 10);
	snprintf(path, sizeof(path), "%s/open/data.mdb", root);
	CHECK(stat(path, &sb) == 0); /* open creates the environment */
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.chunk_size == 256u << 10);
	CHECK(st.usage == 0 && st.chunks == 0 && st.objects == 0);
	CHECK(st.hits == 0 && st.misses == 0 && st.quota == 0);
	index_close(ix);

	/* an existing index keeps the chunk size it was created with: chunk
	 * offsets in the data files depend on it */
	ix = open_at("open", 4u << 20, &cs);
	if (!ix)
		return;
	CHECK(cs == 256u << 10);
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.chunk_size == 256u << 10);
	index_close(ix);

	/* a path that cannot be a directory fails with a message, no crash */
	{
		char msg[512] = "";
		struct index *bad = NULL;
		int rc = index_open("/proc/version/index", 0, 65536, &cs, &bad, msg, sizeof(msg));
		CHECK(rc < 0);
		CHECK(msg[0] != '\0');
	}
	index_close(NULL); /* harmless */
}

/* ---- put / get ---- */

static void test_put_get(void)
{
	uint8_t id[OBJID_LEN], other[OBJID_LEN];
	struct index_chunk *in = make_rec(200000, 123456789, 7); /* 4 blocks, last one short */
	struct index_chunk *out = calloc(1, sizeof(*out));
	struct index *ix = open_at("putget", 256u << 10, NULL);

	if (!ix || !out)
		goto out;
	make_id(id, 1);
	make_id(other, 2);
	CHECK(in->nblocks == 4);
	CHECK(index_chunk_put(ix, id, 3, in, "s3://b/model.bin", 1000000) == 0);
	CHECK(index_chunk_get(ix, id, 3, out) == 0);
	CHECK(rec_equal(in, out));
	CHECK(out->crc[0] != out->crc[3]); /* the CRCs are distinct, so order counts */

	/* misses: another chunk of the same object, another object */
	CHECK(index_chunk_get(ix, id, 2, out) == -ENOENT);
	CHECK(index_chunk_get(ix, id, 4, out) == -ENOENT);
	CHECK(index_chunk_get(ix, other, 3, out) == -ENOENT);

	/* a chunk number differing only in a high byte is another key */
	CHECK(index_chunk_get(ix, id, 3 | (1u << 24), out) == -ENOENT);

	/* the largest record: INDEX_MAX_BLOCKS checksums */
	{
		struct index_chunk *big = make_rec(INDEX_MAX_BLOCKS * INDEX_BLOCK, 5, 99);
		CHECK(big->nblocks == INDEX_MAX_BLOCKS);
		CHECK(index_chunk_put(ix, other, 0, big, "s3://b/big", 1ULL << 30) == 0);
		memset(out, 0, sizeof(*out));
		CHECK(index_chunk_get(ix, other, 0, out) == 0);
		CHECK(rec_equal(big, out));
		free(big);
	}
	index_close(ix);
out:
	free(in);
	free(out);
}

/* ---- usage and object records ---- */

static void test_usage_and_objects(void)
{
	uint8_t id[OBJID_LEN], id2[OBJID_LEN];
	struct index_object o;
	struct index_stats st;
	struct index_chunk *r, *got = calloc(1, sizeof(*got));
	struct index *ix = open_at("usage", 65536, NULL);
	char longname[2000];

	if (!ix || !got) {
		free(got);
		return;
	}
	make_id(id, 10);
	make_id(id2, 11);
	CHECK(usage_of(ix) == 0);
	CHECK(index_object_get(ix, id, &o) == -ENOENT);

	CHECK(put(ix, 10, 0, 65536, 1, "s3://bucket/a/b.bin", 150000) == 0);
	CHECK(usage_of(ix) == 65536);
	CHECK(put(ix, 10, 2, 18928, 1, "s3://bucket/a/b.bin", 150000) == 0);
	CHECK(usage_of(ix) == 65536 + 18928);

	/* re-put of a recorded chunk (a refetch after a failed check): usage
	 * and the object's counts stay, the checksums are the new ones */
	r = make_rec(65536, 2, 4242);
	CHECK(index_chunk_put(ix, id, 0, r, "s3://bucket/a/b.bin", 150000) == 0);
	CHECK(usage_of(ix) == 65536 + 18928);
	CHECK(index_chunk_get(ix, id, 0, got) == 0);
	CHECK(got->crc[0] == r->crc[0]);
	free(r);

	CHECK(index_object_get(ix, id, &o) == 0);
	CHECK(o.size == 150000);
	CHECK(o.cached_bytes == 65536 + 18928);
	CHECK(o.cached_chunks == 2);
	CHECK_STR(o.name, "s3://bucket/a/b.bin");

	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.chunks == 2 && st.objects == 1);

	/* a second object is counted apart */
	CHECK(put(ix, 11, 5, 1000, 1, "s3://bucket/other", 5 * 65536 + 1000) == 0);
	CHECK(index_object_get(ix, id2, &o) == 0);
	CHECK(o.cached_bytes == 1000 && o.cached_chunks == 1);
	CHECK(o.size == 5 * 65536 + 1000);
	CHECK_STR(o.name, "s3://bucket/other");
	CHECK(index_object_get(ix, id, &o) == 0);
	CHECK(o.cached_chunks == 2); /* untouched by the other object */
	CHECK(usage_of(ix) == 65536 + 18928 + 1000);

	/* a name longer than the record's buffer is cut, still terminated */
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CHECK(put(ix, 12, 0, 10, 1, longname, 10) == 0);
	{
		uint8_t id3[OBJID_LEN];
		make_id(id3, 12);
		CHECK(index_object_get(ix, id3, &o) == 0);
		CHECK(strlen(o.name) == sizeof(o.name) - 1);
		CHECK(o.name[0] == 'x');
	}
	free(got);
	index_close(ix);
}

/* The index promises an exact usage (index.h): whatever a re-put does to a
 * recorded chunk, removing the chunk afterwards must bring usage back to
 * where it was before the chunk was first recorded. */
static void test_reput_other_len_keeps_usage_exact(void)
{
	uint8_t id[OBJID_LEN];
	uint64_t freed = 0, before;
	struct index *ix = open_at("reput", 65536, NULL);
	uint32_t chunk = 0;

	if (!ix)
		return;
	make_id(id, 1);
	CHECK(put(ix, 9, 0, 100, 1, "s3://b/k", 1000) == 0); /* something else cached */
	before = usage_of(ix);
	CHECK(put(ix, 1, 0, 65536, 1, "s3://b/k2", 65536) == 0);
	CHECK(put(ix, 1, 0, 4096, 2, "s3://b/k2", 65536) == 0); /* same chunk, other len */
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])id, &chunk, 1, &freed, NULL,
			       NULL) == 0);
	CHECK(usage_of(ix) == before);
	if (usage_of(ix) != before)
		fprintf(stderr, "  re-put with another len: usage %llu after delete, want %llu\n",
			(unsigned long long)usage_of(ix), (unsigned long long)before);
	index_close(ix);
}

/* ---- delete ---- */

static void set_del(uint8_t ids[][OBJID_LEN], uint32_t *chunks, int i, const uint8_t *id,
		    uint32_t chunk)
{
	memcpy(ids[i], id, OBJID_LEN);
	chunks[i] = chunk;
}

struct emptied_log {
	uint8_t ids[8][OBJID_LEN];
	int n;
};

static void on_emptied(void *arg, const uint8_t *objid)
{
	struct emptied_log *l = arg;

	if (l->n < 8)
		memcpy(l->ids[l->n], objid, OBJID_LEN);
	l->n++;
}

static void test_chunks_del(void)
{
	uint8_t ids[6][OBJID_LEN], a[OBJID_LEN], b[OBJID_LEN];
	uint32_t chunks[6];
	struct emptied_log log = {0};
	struct index_object o;
	uint64_t freed = 12345, u;
	struct index *ix = open_at("del", 65536, NULL);

	if (!ix)
		return;
	make_id(a, 1);
	make_id(b, 2);
	/* object 1: chunks 0, 1, 2; object 2: chunk 7 */
	CHECK(put(ix, 1, 0, 65536, 1, "s3://b/one", 3 * 65536) == 0);
	CHECK(put(ix, 1, 1, 65536, 1, "s3://b/one", 3 * 65536) == 0);
	CHECK(put(ix, 1, 2, 30000, 1, "s3://b/one", 3 * 65536) == 0);
	CHECK(put(ix, 2, 7, 5000, 1, "s3://b/two", 7 * 65536 + 5000) == 0);
	u = usage_of(ix);
	CHECK(u == 65536 * 2 + 30000 + 5000);

	/* one of object 1 (not its last), object 2's only chunk, a missing one,
	 * and the same chunk twice in one batch: each is freed once */
	set_del(ids, chunks, 0, a, 2);
	set_del(ids, chunks, 1, b, 7);
	set_del(ids, chunks, 2, a, 99);
	set_del(ids, chunks, 3, a, 2);
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, 4, &freed, on_emptied,
			       &log) == 0);
	CHECK(freed == 30000 + 5000);
	CHECK(log.n == 1);
	CHECK(log.n >= 1 && memcmp(log.ids[0], b, OBJID_LEN) == 0);
	CHECK(usage_of(ix) == u - 35000);
	CHECK(!has_chunk(ix, 1, 2) && !has_chunk(ix, 2, 7));
	CHECK(has_chunk(ix, 1, 0) && has_chunk(ix, 1, 1));
	CHECK(index_object_get(ix, b, &o) == -ENOENT); /* its record went with its last chunk */
	CHECK(index_object_get(ix, a, &o) == 0);
	CHECK(o.cached_chunks == 2 && o.cached_bytes == 2 * 65536);

	/* the rest of object 1: emptied exactly once, for it */
	log.n = 0;
	set_del(ids, chunks, 0, a, 0);
	set_del(ids, chunks, 1, a, 1);
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, 2, &freed, on_emptied,
			       &log) == 0);
	CHECK(freed == 2 * 65536);
	CHECK(log.n == 1);
	CHECK(log.n >= 1 && memcmp(log.ids[0], a, OBJID_LEN) == 0);
	CHECK(usage_of(ix) == 0);
	CHECK(index_object_get(ix, a, &o) == -ENOENT);

	/* deleting what is gone: nothing freed, no callback, usage stays 0 */
	log.n = 0;
	freed = 777;
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, 2, &freed, on_emptied,
			       &log) == 0);
	CHECK(freed == 0);
	CHECK(log.n == 0);
	CHECK(usage_of(ix) == 0);

	/* an empty batch, and a NULL callback */
	freed = 777;
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, 0, &freed, NULL,
			       NULL) == 0);
	CHECK(freed == 0);
	CHECK(put(ix, 3, 0, 100, 1, "s3://b/three", 100) == 0);
	make_id(ids[0], 3);
	chunks[0] = 0;
	CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])ids, chunks, 1, &freed, NULL,
			       NULL) == 0);
	CHECK(freed == 100);
	CHECK(usage_of(ix) == 0);

	/* a chunk put again after its object was emptied starts a fresh record */
	CHECK(put(ix, 1, 1, 65536, 1, "s3://b/one", 3 * 65536) == 0);
	CHECK(index_object_get(ix, a, &o) == 0);
	CHECK(o.cached_chunks == 1 && o.cached_bytes == 65536);
	index_close(ix);
}

/* ---- touch, counters, quota ---- */

static void set_touch(struct index_touch *t, unsigned obj, uint32_t chunk, uint64_t when)
{
	make_id(t->objid, obj);
	t->chunk = chunk;
	t->when_ms = when;
}

static void test_touch_and_stats(void)
{
	struct index_touch t[3];
	struct index_chunk *r = calloc(1, sizeof(*r));
	struct index_stats st;
	struct index *ix = open_at("touch", 65536, NULL);

	if (!ix || !r) {
		free(r);
		return;
	}
	CHECK(put(ix, 1, 0, 65536, 1000, "s3://b/t", 65536 * 2) == 0);
	CHECK(put(ix, 1, 1, 65536, 1000, "s3://b/t", 65536 * 2) == 0);

	memset(t, 0, sizeof(t));
	set_touch(&t[0], 1, 0, 2000);
	set_touch(&t[1], 1, 1, 3000);
	set_touch(&t[2], 5, 0, 9000); /* not recorded: ignored */
	CHECK(index_touch(ix, t, 3, 3, 5) == 0);
	CHECK(index_chunk_get(ix, t[0].objid, 0, r) == 0 && r->last_use_ms == 2000);
	CHECK(index_chunk_get(ix, t[0].objid, 1, r) == 0 && r->last_use_ms == 3000);
	CHECK(!has_chunk(ix, 5, 0)); /* a touch never creates a chunk */
	CHECK(r->len == 65536 && r->nblocks == 1); /* the rest of the record is kept */

	/* last use only moves forward: a late batch from another process
	 * carrying an older time does not make a chunk look colder */
	t[0].when_ms = 1500;
	t[1].when_ms = 3001;
	CHECK(index_touch(ix, t, 2, 1, 0) == 0);
	CHECK(index_chunk_get(ix, t[0].objid, 0, r) == 0 && r->last_use_ms == 2000);
	CHECK(index_chunk_get(ix, t[0].objid, 1, r) == 0 && r->last_use_ms == 3001);

	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.hits == 4);
	CHECK(st.misses == 5);
	CHECK(st.usage == 2 * 65536); /* a touch is not a put */

	/* counters alone, no touches */
	CHECK(index_touch(ix, NULL, 0, 10, 20) == 0);
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.hits == 14 && st.misses == 25);

	/* quota and watermarks round trip */
	CHECK(st.quota == 0 && st.high == 0 && st.low == 0); /* never set */
	CHECK(index_set_quota(ix, 500ULL << 30, 0.95, 0.7) == 0);
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.quota == 500ULL << 30);
	CHECK(st.high > 0.95 - 1e-6 && st.high < 0.95 + 1e-6);
	CHECK(st.low > 0.7 - 1e-6 && st.low < 0.7 + 1e-6);
	/* the last mount to start sets them */
	CHECK(index_set_quota(ix, 2ULL << 20, 0.9, 0.5) == 0);
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.quota == 2ULL << 20);
	CHECK(st.high > 0.9 - 1e-6 && st.high < 0.9 + 1e-6);
	CHECK(st.low > 0.5 - 1e-6 && st.low < 0.5 + 1e-6);
	CHECK(st.hits == 14); /* untouched by set_quota */
	free(r);
	index_close(ix);
}

/* ---- scan ---- */

struct scan_state {
	unsigned nobj;
	uint32_t nchunk;
	unsigned char *seen; /* nobj x nchunk */
	int visits, dups, strangers, out_of_order, stop_after;
	uint64_t bytes;
	uint8_t last_key[OBJID_LEN + 4];
	int have_last;
};

static int scan_cb(void *arg, const uint8_t *objid, uint32_t chunk, const struct index_chunk *rec)
{
	struct scan_state *s = arg;
	uint8_t key[OBJID_LEN + 4];
	unsigned obj = (unsigned)objid[0] << 8 | objid[1];

	/* keys in the order LMDB keeps them: objid, then chunk big-endian */
	memcpy(key, objid, OBJID_LEN);
	key[OBJID_LEN] = (uint8_t)(chunk >> 24);
	key[OBJID_LEN + 1] = (uint8_t)(chunk >> 16);
	key[OBJID_LEN + 2] = (uint8_t)(chunk >> 8);
	key[OBJID_LEN + 3] = (uint8_t)chunk;
	if (s->have_last && memcmp(s->last_key, key, sizeof(key)) >= 0)
		s->out_of_order++;
	memcpy(s->last_key, key, sizeof(key));
	s->have_last = 1;

	s->visits++;
	s->bytes += rec->len;
	if (obj >= s->nobj || chunk >= s->nchunk)
		s->strangers++;
	else if (s->seen[obj * s->nchunk + chunk]++)
		s->dups++;
	if (s->stop_after && s->visits == s->stop_after)
		return 7;
	return 0;
}

static void test_scan(void)
{
	struct scan_state s = {0};
	struct index *ix = open_at("scan", 65536, NULL);
	uint32_t order[] = {65536, 1, 256, 255, 0}; /* put out of order */
	int rc;

	if (!ix)
		return;
	/* chunk numbers that straddle byte boundaries: the scan must come
	 * back in numeric order (big-endian keys) */
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		CHECK(put(ix, 1, order[i], 100, 1, "s3://b/s", 1ULL << 40) == 0);
	CHECK(put(ix, 0, 3, 50, 1, "s3://b/z", 1ULL << 20) == 0);

	s.nobj = 2;
	s.nchunk = 65537;
	s.seen = calloc((size_t)s.nobj * s.nchunk, 1);
	if (!s.seen) {
		index_close(ix);
		return;
	}
	rc = index_scan_chunks(ix, scan_cb, &s);
	CHECK(rc == 0);
	CHECK(s.visits == 6);
	CHECK(s.dups == 0 && s.strangers == 0);
	CHECK(s.out_of_order == 0);
	CHECK(s.bytes == 5 * 100 + 50);
	CHECK(s.bytes == usage_of(ix));
	CHECK(s.seen[0 * s.nchunk + 3] == 1 && s.seen[1 * s.nchunk + 65536] == 1);
	CHECK(s.seen[1 * s.nchunk + 255] == 1 && s.seen[1 * s.nchunk + 256] == 1);

	/* a non-zero return stops the scan and is returned */
	memset(s.seen, 0, (size_t)s.nobj * s.nchunk);
	s.visits = 0;
	s.have_last = 0;
	s.stop_after = 3;
	rc = index_scan_chunks(ix, scan_cb, &s);
	CHECK(rc == 7);
	CHECK(s.visits == 3);
	free(s.seen);
	index_close(ix);

	/* an empty index: no visit, 0 */
	ix = open_at("scan-empty", 65536, NULL);
	if (!ix)
		return;
	memset(&s, 0, sizeof(s));
	CHECK(index_scan_chunks(ix, scan_cb, &s) == 0);
	CHECK(s.visits == 0);
	index_close(ix);
}

static void test_many_chunks(void)
{
	enum { NOBJ = 50, NCH = 100 }; /* 5000 chunks */
	struct scan_state s = {0};
	struct index_stats st;
	struct index *ix = open_at("many", 65536, NULL);
	uint64_t want = 0;
	int put_errors = 0;

	if (!ix)
		return;
	for (unsigned o = 0; o < NOBJ; o++) {
		for (uint32_t c = 0; c < NCH; c++) {
			uint32_t len = 1 + (o * 131 + c * 17) % 65536;
			put_errors += put(ix, o, c, len, o * NCH + c, "s3://b/many",
					  100ULL * 65536) != 0;
			want += len;
		}
	}
	CHECK(put_errors == 0);
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.chunks == NOBJ * NCH);
	CHECK(st.objects == NOBJ);
	CHECK(st.usage == want);

	s.nobj = NOBJ;
	s.nchunk = NCH;
	s.seen = calloc(NOBJ * NCH, 1);
	if (!s.seen)
		goto out;
	CHECK(index_scan_chunks(ix, scan_cb, &s) == 0);
	CHECK(s.visits == NOBJ * NCH);
	CHECK(s.dups == 0 && s.strangers == 0 && s.out_of_order == 0);
	CHECK(s.bytes == want);
	{
		int missing = 0;
		for (int i = 0; i < NOBJ * NCH; i++)
			missing += s.seen[i] != 1;
		CHECK(missing == 0);
	}
	free(s.seen);
out:
	index_close(ix);
}

/* ---- persistence ---- */

static void test_persistence(void)
{
	uint8_t id[OBJID_LEN];
	struct index_chunk *want = make_rec(123456, 42, 1000 * 4 + 2);
	struct index_chunk *got = calloc(1, sizeof(*got));
	struct index_object o;
	struct index_stats st;
	uint32_t cs = 0;
	struct index *ix = open_at("persist", 131072, NULL);

	if (!ix || !got)
		goto out;
	make_id(id, 4);
	CHECK(index_chunk_put(ix, id, 2, want, "s3://b/p", 999999) == 0);
	CHECK(index_touch(ix, NULL, 0, 11, 22) == 0);
	CHECK(index_set_quota(ix, 1ULL << 30, 0.8, 0.6) == 0);
	index_close(ix);

	ix = open_at("persist", 65536, &cs);
	if (!ix)
		goto out;
	CHECK(cs == 131072);
	CHECK(index_chunk_get(ix, id, 2, got) == 0);
	CHECK(rec_equal(want, got));
	CHECK(index_object_get(ix, id, &o) == 0);
	CHECK(o.size == 999999 && o.cached_bytes == 123456 && o.cached_chunks == 1);
	CHECK_STR(o.name, "s3://b/p");
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.usage == 123456 && st.chunks == 1 && st.objects == 1);
	CHECK(st.hits == 11 && st.misses == 22);
	CHECK(st.quota == 1ULL << 30);
	CHECK(st.high > 0.8 - 1e-6 && st.high < 0.8 + 1e-6);
	index_close(ix);
out:
	free(want);
	free(got);
}

/* ---- two processes ---- */

static int wait_byte(int fd)
{
	char b;

	return read(fd, &b, 1) == 1 ? 0 : -1;
}

static int send_byte(int fd)
{
	return write(fd, "x", 1) == 1 ? 0 : -1;
}

/* The child's side: opens its own handle while the parent holds one. Every
 * expectation is a bit of the exit status, so the parent can report which
 * one failed. Leaves with _exit: the parent's LMDB handle must not be
 * touched from here (LMDB handles do not survive fork). */
static void child_side(int to_parent, int from_parent, const char *dir)
{
	char msg[512];
	struct index *ix = NULL;
	struct index_chunk *r = calloc(1, sizeof(*r));
	uint8_t id[OBJID_LEN];
	uint32_t cs;
	int bad = 0;

	if (!r || index_open(dir, 0, 65536, &cs, &ix, msg, sizeof(msg)) != 0)
		_exit(0x80);
	make_id(id, 1);
	if (index_chunk_get(ix, id, 0, r) != 0 || r->len != 1000)
		bad |= 1; /* the parent's commit before the fork */
	if (put(ix, 2, 0, 2000, 5, "s3://b/child", 2000) != 0)
		bad |= 2;
	if (send_byte(to_parent) || wait_byte(from_parent))
		bad |= 4;
	if (!has_chunk(ix, 1, 1)) /* the parent's commit after ours */
		bad |= 8;
	if (usage_of(ix) != 1000 + 2000 + 3000)
		bad |= 16;
	/* checked: the parent may start writing (before this it raced our reads) */
	if (send_byte(to_parent))
		bad |= 4;
	/* both sides now write at once: the writer lock must serialize them */
	for (uint32_t c = 0; c < 300; c++)
		if (put(ix, 3, c, 10, 1, "s3://b/race-child", 3000) != 0)
			bad |= 32;
	index_close(ix);
	free(r);
	_exit(bad);
}

static void test_two_processes(void)
{
	char dir[256];
	int p2c[2], c2p[2], status = -1;
	struct index_stats st;
	struct index *ix = open_at("shared", 65536, NULL);
	pid_t pid;

	if (!ix)
		return;
	snprintf(dir, sizeof(dir), "%s/shared", root);
	CHECK(put(ix, 1, 0, 1000, 5, "s3://b/parent", 1000000) == 0);
	if (pipe(p2c) || pipe(c2p)) {
		CHECK(0); /* no pipe */
		index_close(ix);
		return;
	}
	pid = fork();
	if (pid == 0) {
		close(p2c[1]);
		close(c2p[0]);
		child_side(c2p[1], p2c[0], dir);
	}
	close(p2c[0]);
	close(c2p[1]);
	CHECK(pid > 0);
	CHECK(wait_byte(c2p[0]) == 0);
	/* the child's commit is visible through a handle opened before it */
	CHECK(has_chunk(ix, 2, 0));
	CHECK(usage_of(ix) == 1000 + 2000);
	CHECK(put(ix, 1, 1, 3000, 5, "s3://b/parent", 1000000) == 0);
	CHECK(send_byte(p2c[1]) == 0);
	CHECK(wait_byte(c2p[0]) == 0); /* the child has checked what it saw */
	{
		int put_errors = 0;
		for (uint32_t c = 0; c < 300; c++)
			put_errors += put(ix, 4, c, 20, 1, "s3://b/race-parent", 6000) != 0;
		CHECK(put_errors == 0);
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "  child status 0x%x\n", status);
	/* no lost update: usage is the exact sum of both sides' puts */
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.usage == 1000 + 2000 + 3000 + 300 * 10 + 300 * 20);
	CHECK(st.chunks == 3 + 600);
	close(p2c[1]);
	close(c2p[0]);
	index_close(ix);
}

/* ---- checking before use (index_check, INDEX_OPEN_RESET) ---- */

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	*len = buf ? (size_t)ftell(f) : 0;
	if (f)
		fclose(f);
	return buf;
}

static int spill(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(buf, 1, len, f) == len;

	if (f)
		ok = fclose(f) == 0 && ok;
	return ok ? 0 : -1;
}

/* Every index the tests before this one left behind is sound. */
static void check_all_sound(void)
{
	const char *names[] = {"open", "putget", "usage", "reput", "del", "touch", "scan", "many",
			       "persist", "shared", "scan-empty"};
	char dir[256], why[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int rc;
		snprintf(dir, sizeof(dir), "%s/%s", root, names[i]);
		if (access(dir, F_OK) != 0)
			continue;
		why[0] = '\0';
		rc = index_check(dir, why, sizeof(why));
		CHECK(rc == 0);
		if (rc)
			fprintf(stderr, "  index_check %s: %d %s\n", names[i], rc, why);
	}
}

static void test_check(void)
{
	char dir[256], path[300], why[512], msg[512];
	struct index *ix = open_at("check", 65536, NULL);
	struct index_stats st;
	size_t len = 0;
	char *good = NULL;
	long ps = sysconf(_SC_PAGESIZE);
	uint32_t cs;
	int rc;

	check_all_sound();
	if (!ix)
		return;
	/* records, then half of them deleted: a free list to walk as well */
	for (uint32_t c = 0; c < 2000; c++)
		CHECK(put(ix, c % 7, c, 1 + c * 31 % 65536, c, "s3://b/check", 1ULL << 30) == 0);
	for (uint32_t c = 0; c < 2000; c += 2) {
		uint8_t id[OBJID_LEN];
		uint64_t freed;
		make_id(id, c % 7);
		CHECK(index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])id, &c, 1, &freed, NULL,
				       NULL) == 0);
	}
	index_close(ix);
	snprintf(dir, sizeof(dir), "%s/check", root);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	CHECK(index_check(dir, why, sizeof(why)) == 0);
	good = slurp(path, &len);
	CHECK(good && len > (size_t)ps * 8);
	if (!good || len <= (size_t)ps * 8)
		return;

	/* truncated: found from the size, before any page is read */
	for (int pct = 25; pct <= 75; pct += 25) {
		CHECK(spill(path, good, len * (size_t)pct / 100) == 0);
		why[0] = '\0';
		CHECK(index_check(dir, why, sizeof(why)) == -EBADMSG);
		CHECK(strstr(why, "truncated") != NULL);
	}
	/* garbage over every page after the meta pages, over a single page */
	for (unsigned seed = 1; seed <= 4; seed++) {
		char *bad = malloc(len);
		size_t from = seed <= 2 ? 2 * (size_t)ps : (size_t)ps * (2 + seed * 3);
		size_t to = seed <= 2 ? len : from + (size_t)ps;
		if (!bad)
			abort();
		memcpy(bad, good, len);
		srand(seed);
		for (size_t i = from; i < to && i < len; i++)
			bad[i] = (char)rand();
		CHECK(spill(path, bad, len) == 0);
		free(bad);
		why[0] = '\0';
		rc = index_check(dir, why, sizeof(why));
		/* a single page may be a free one: then the index is sound */
		CHECK(rc == -EBADMSG || (seed > 2 && rc == 0));
		CHECK(rc == 0 || why[0] != '\0');
	}
	/* an empty file, no file */
	CHECK(spill(path, good, 0) == 0);
	CHECK(index_check(dir, why, sizeof(why)) == -EBADMSG);
	snprintf(path, sizeof(path), "%s/nothing-here", root);
	CHECK(index_check(path, why, sizeof(why)) == -ENOENT);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);

	/* without INDEX_OPEN_RESET a damaged index is refused, untouched */
	CHECK(spill(path, good, len / 2) == 0);
	msg[0] = '\0';
	ix = NULL;
	CHECK(index_open(dir, 0, 65536, &cs, &ix, msg, sizeof(msg)) == -EBADMSG);
	CHECK(ix == NULL && strstr(msg, "damaged") != NULL);
	{
		struct stat sb;
		CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == len / 2);
	}
	/* with it: set aside, an empty index in its place */
	rc = index_open(dir, INDEX_OPEN_RESET, 65536, &cs, &ix, msg, sizeof(msg));
	CHECK(rc == 0);
	if (rc)
		goto out;
	CHECK(index_was_reset(ix));
	CHECK(index_stats(ix, &st) == 0 && st.chunks == 0 && st.objects == 0 && st.usage == 0);
	index_reset_done(ix);
	CHECK(put(ix, 1, 0, 100, 1, "s3://b/after", 100) == 0);
	index_close(ix);
	CHECK(index_check(dir, why, sizeof(why)) == 0);
	{
		int n = 0;
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "ls %s/data.mdb.damaged-* 2>/dev/null | wc -l", dir);
		FILE *p = popen(cmd, "r");
		if (p) {
			if (fscanf(p, "%d", &n) != 1)
				n = -1;
			pclose(p);
		}
		CHECK(n == 1);
	}
	/* a sound index is not reset */
	ix = open_at("check", 65536, NULL);
	CHECK(ix && !index_was_reset(ix));
	index_close(ix);
out:
	free(good);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* MODELFS_BENCH_CHECK=N: the cost of the check on an index of N records of
 * 4 MiB chunks (64 CRCs each), warm and with data.mdb dropped from the page
 * cache. A figure, not a test: not run by default (N puts take a while). */
static void bench_check(void)
{
	const char *env = getenv("MODELFS_BENCH_CHECK");
	unsigned long n = env ? strtoul(env, NULL, 10) : 0;
	char dir[256], path[300], why[512];
	struct index *ix;
	struct stat sb;
	double t0, warm, cold;
	int fd;

	if (!n)
		return;
	ix = open_at("bench", 4u << 20, NULL);
	if (!ix)
		return;
	for (unsigned long i = 0; i < n; i++)
		CHECK(put(ix, (unsigned)(i / 1000), (uint32_t)(i % 1000), 4u << 20, i, "s3://b/bench",
			  1000ULL << 22) == 0);
	index_close(ix);
	snprintf(dir, sizeof(dir), "%s/bench", root);
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	t0 = now_s();
	CHECK(index_check(dir, why, sizeof(why)) == 0);
	warm = now_s() - t0;
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		fstat(fd, &sb);
		close(fd);
	}
	t0 = now_s();
	CHECK(index_check(dir, why, sizeof(why)) == 0);
	cold = now_s() - t0;
	printf("figure: index_check of %lu records (%lld MiB): %.1f ms warm, %.1f ms cold\n", n,
	       (long long)sb.st_size >> 20, warm * 1e3, cold * 1e3);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(path);
}

int main(void)
{
	log_setup(0, LOG_LVL_WARN);
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_open();
	test_put_get();
	test_usage_and_objects();
	test_reput_other_len_keeps_usage_exact();
	test_chunks_del();
	test_touch_and_stats();
	test_scan();
	test_many_chunks();
	test_persistence();
	test_two_processes();
	test_check();
	bench_check();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	CHECK(access(root, F_OK) != 0); /* nothing left behind */
	return check_done();
}
