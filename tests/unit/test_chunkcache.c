/* Unit tests for cache/cache.c: the chunk cache, driven through its public
 * interface over a fake backend.
 *
 * The fake serves objects whose every byte is a function of (key, ETag,
 * offset), so any byte the cache hands out can be checked, and a byte of the
 * wrong version can never pass for the right one. It counts its reads, can
 * sleep in them (to hold a fetch open while other threads arrive), fail them,
 * or answer short.
 *
 * Each test uses its own cache directory, so counters, usage and data files
 * belong to that test alone. The index is only opened directly once the
 * cache using it is closed: LMDB must not be opened twice in one process.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "flight.h"
#include "check.h"
#include "index.h"
#include "log.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char root[] = "/tmp/mfs_test_chunkcache_XXXXXX";

/* ---- content ---- */

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The seed of one object version: another key or ETag is other content. */
static uint64_t content_seed(const char *key, const char *etag)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	h = (h ^ 0xff) * 1099511628211ULL;
	for (const char *p = etag; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

/* Byte i of the version is byte (i % 8) of mix(seed + i / 8). */
static void content(uint64_t seed, uint64_t off, void *dst, size_t n)
{
	unsigned char *p = dst;

	while (n > 0) {
		uint64_t w = mix(seed + off / 8);
		unsigned i = (unsigned)(off % 8);
		for (; i < 8 && n > 0; i++, n--, off++)
			*p++ = (unsigned char)(w >> (8 * i));
	}
}

/* ---- the fake backend ---- */

#define FAKE_OBJS 8

struct fake_obj {
	char key[128];
	char etag[64];
	uint64_t size;
};

struct fake {
	struct backend be; /* first: the cache holds a struct backend * */
	pthread_mutex_t lock;
	struct fake_obj obj[FAKE_OBJS]; /* protected by lock */
	int nobj;
	uint64_t last_off;   /* protected by lock */
	size_t last_len;     /* protected by lock */
	uint32_t align;      /* when set: every read must be one whole chunk */
	atomic_uint_fast64_t reads, bytes;
	atomic_int sleep_ms, fail_err, short_by, misaligned;
	char slow_key[64];  /* set before use: sleep_ms applies to this key only */
	atomic_uint_fast64_t *shared_reads; /* when set: reads of all processes */
};

static int fake_read(struct backend *be, const struct backend_ref *ref, uint64_t off, size_t len,
		     void *buf, size_t *got)
{
	const char *key = ref->key;
	struct fake *f = (struct fake *)be;
	struct fake_obj o;
	int found = 0, err, sl, sh;
	size_t n;

	*got = 0;
	atomic_fetch_add(&f->reads, 1);
	if (f->shared_reads)
		atomic_fetch_add(f->shared_reads, 1);
	sl = atomic_load(&f->sleep_ms);
	if (sl && (!f->slow_key[0] || strcmp(f->slow_key, key) == 0))
		usleep((useconds_t)sl * 1000);
	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nobj; i++) {
		if (strcmp(f->obj[i].key, key) == 0) {
			o = f->obj[i];
			found = 1;
			break;
		}
	}
	f->last_off = off;
	f->last_len = len;
	pthread_mutex_unlock(&f->lock);
	err = atomic_load(&f->fail_err);
	if (err)
		return err;
	if (!found)
		return -ENOENT;
	if (ref->etag[0] && strcmp(ref->etag, o.etag) != 0)
		return -ESTALE; /* as S3 answers a failed If-Match */
	if (f->align && (off % f->align != 0 ||
			 len != (o.size - off < f->align ? o.size - off : f->align)))
		atomic_fetch_add(&f->misaligned, 1);
	n = off >= o.size ? 0 : (o.size - off < len ? (size_t)(o.size - off) : len);
	sh = atomic_load(&f->short_by);
	n = n > (size_t)sh ? n - (size_t)sh : 0;
	content(content_seed(key, o.etag), off, buf, n);
	atomic_fetch_add(&f->bytes, n);
	*got = n;
	return 0;
}

static const struct backend_ops fake_ops = {
	.scheme = "fake",
	.read = fake_read,
};

static void fake_init(struct fake *f, uint32_t align)
{
	memset(f, 0, sizeof(*f));
	f->be.ops = &fake_ops;
	pthread_mutex_init(&f->lock, NULL);
	f->align = align;
}

/* Add or replace (a new version of) @key. */
static void fake_put(struct fake *f, const char *key, const char *etag, uint64_t size)
{
	int i;

	pthread_mutex_lock(&f->lock);
	for (i = 0; i < f->nobj; i++)
		if (strcmp(f->obj[i].key, key) == 0)
			break;
	if (i == f->nobj && f->nobj < FAKE_OBJS)
		f->nobj++;
	if (i < FAKE_OBJS) {
		snprintf(f->obj[i].key, sizeof(f->obj[i].key), "%s", key);
		snprintf(f->obj[i].etag, sizeof(f->obj[i].etag), "%s", etag);
		f->obj[i].size = size;
	}
	pthread_mutex_unlock(&f->lock);
}

static void fake_destroy(struct fake *f)
{
	pthread_mutex_destroy(&f->lock);
}

static uint64_t reads(struct fake *f)
{
	return atomic_load(&f->reads);
}

/* ---- helpers ---- */

static uint64_t rng_state = 0x1234567;

static uint64_t rnd(void)
{
	return mix(rng_state += 0x9e3779b97f4a7c15ULL);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static void dir_of(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", root, name);
}

static struct cache *open_cache(struct fake *f, const char *name, uint32_t chunk, uint64_t quota,
				double high, double low)
{
	char dir[256];
	struct cache_config cfg = {0};
	struct cache *c = NULL;

	dir_of(dir, sizeof(dir), name);
	cfg.dir = dir;
	cfg.chunk_size = chunk;
	cfg.quota_bytes = quota;
	cfg.high = high;
	cfg.low = low;
	CHECK(cache_open(&f->be, &cfg, &c) == 0);
	return c;
}

/* Read [off, off + len) of @o and compare with the version's content.
 * @return 1 when the call succeeded with exactly the right bytes and count. */
static int read_ok(struct cache *c, const struct cache_object *o, uint64_t off, size_t len)
{
	size_t want = off >= o->size ? 0 : (o->size - off < len ? (size_t)(o->size - off) : len);
	char *buf = malloc(len + 1), *exp = malloc(want + 1);
	size_t got = 12345;
	int rc, ok;

	if (!buf || !exp) {
		free(buf);
		free(exp);
		return 0;
	}
	content(content_seed(o->key, o->etag), off, exp, want);
	rc = cache_read(c, o, off, len, buf, &got);
	ok = rc == 0 && got == want && memcmp(buf, exp, want) == 0;
	if (!ok)
		fprintf(stderr, "  read %s@%s [%llu, +%zu): rc %d, got %zu of %zu, bytes %s\n",
			o->key, o->etag, (unsigned long long)off, len, rc, got, want,
			rc == 0 && got == want ? "differ" : "-");
	free(buf);
	free(exp);
	return ok;
}

static uint64_t cached(struct cache *c, const struct cache_object *o)
{
	uint64_t b = UINT64_MAX;

	cache_sync(c); /* reads hand their writes to the writer threads */
	if (cache_cached_bytes(c, o, &b) != 0)
		return UINT64_MAX;
	return b;
}

/* The data files of a cache directory (data/XX/ID). */
static char found[16][512];
static int n_found;
static blkcnt_t found_blocks;

static int find_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)f;
	if (flag == FTW_F) {
		if (n_found < 16)
			snprintf(found[n_found], sizeof(found[0]), "%s", path);
		n_found++;
		found_blocks += st->st_blocks;
	}
	return 0;
}

static int data_files(const char *name)
{
	char dir[256], path[300];

	dir_of(dir, sizeof(dir), name);
	snprintf(path, sizeof(path), "%s/data", dir);
	n_found = 0;
	found_blocks = 0;
	nftw(path, find_cb, 8, FTW_PHYS);
	return n_found;
}

static int flip_byte(const char *path, off_t off)
{
	unsigned char b;
	int fd = open(path, O_RDWR), ok;

	if (fd < 0)
		return -1;
	ok = pread(fd, &b, 1, off) == 1;
	b ^= 0x01;
	ok = ok && pwrite(fd, &b, 1, off) == 1;
	close(fd);
	return ok ? 0 : -1;
}

/* Open the index of a closed cache directly (see the header comment). */
static struct index *open_index(const char *name)
{
	char dir[256], path[300], msg[256];
	struct index *ix = NULL;
	uint32_t cs;

	dir_of(dir, sizeof(dir), name);
	snprintf(path, sizeof(path), "%s/index", dir);
	if (index_open(path, 0, 65536, &cs, &ix, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "  index_open %s: %s\n", path, msg);
		return NULL;
	}
	return ix;
}

struct scan_sum {
	uint64_t bytes, chunks;
	uint64_t chunk_bits; /* chunk numbers < 64 seen */
};

static int sum_cb(void *arg, const uint8_t *objid, uint32_t chunk, const struct index_chunk *rec)
{
	struct scan_sum *s = arg;

	(void)objid;
	s->bytes += rec->len;
	s->chunks++;
	if (chunk < 64)
		s->chunk_bits |= 1ULL << chunk;
	return 0;
}

/* ---- reads of arbitrary ranges ---- */

static void test_ranges(void)
{
	struct fake f;
	struct cache_counters cc;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "models/ranges.bin", "etag-r", 3 * MiB + 12345};
	uint64_t nchunks = (o.size + chunk - 1) / chunk;
	struct cache *c;
	int bad = 0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "ranges", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;

	/* edges: chunk boundaries, the tail, past the end, nothing */
	CHECK(read_ok(c, &o, 0, 1));
	CHECK(read_ok(c, &o, chunk - 1, 2));
	CHECK(read_ok(c, &o, chunk - 100, 200));
	CHECK(read_ok(c, &o, 5 * chunk, chunk));
	CHECK(read_ok(c, &o, 7 * chunk - 1, 2 * chunk + 2)); /* three chunks */
	CHECK(read_ok(c, &o, o.size - 1, 1));
	CHECK(read_ok(c, &o, o.size - 10, 100)); /* short: the end of the object */
	CHECK(read_ok(c, &o, o.size, 10));
	CHECK(read_ok(c, &o, o.size + 5, 10));
	CHECK(read_ok(c, &o, 1000, 0));
	{
		char b[4];
		size_t got = 99;
		CHECK(cache_read(c, &o, o.size + 1, sizeof(b), b, &got) == 0 && got == 0);
	}
	for (int i = 0; i < 400; i++) {
		uint64_t off = rnd() % (o.size + 1000);
		size_t len = (size_t)(rnd() % 4 == 0 ? rnd() % 16 : rnd() % (5 * chunk));
		bad += !read_ok(c, &o, off, len);
	}
	CHECK(bad == 0);
	CHECK(read_ok(c, &o, 0, o.size + 1000)); /* the whole object in one call */

	/* every chunk fetched once, as one whole-chunk read, and all of it kept */
	CHECK(atomic_load(&f.misaligned) == 0);
	CHECK(reads(&f) == nchunks);
	cache_counters(c, &cc);
	CHECK(cc.misses == nchunks);
	CHECK(cc.backend_bytes == o.size);
	CHECK(cc.refetches == 0 && cc.uncached == 0);
	CHECK(cc.hits > 400);
	CHECK(cached(c, &o) == o.size);
	CHECK(atomic_load(&f.bytes) == o.size);
	cache_close(c);
	CHECK(data_files("ranges") == 1); /* one sparse file per object version */
	fake_destroy(&f);
}

/* ---- hits ---- */

static void test_hits(void)
{
	struct fake f;
	struct cache_counters a, b;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "hits.bin", "e", 1 * MiB};
	struct cache *c;
	uint64_t r0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "hits", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	CHECK(cached(c, &o) == 0); /* nothing yet */

	/* [100000, 150000) covers chunks 1 and 2 */
	CHECK(read_ok(c, &o, 100000, 50000));
	CHECK(reads(&f) == 2);
	cache_counters(c, &a);
	CHECK(a.misses == 2 && a.hits == 0);
	CHECK(cached(c, &o) == 2 * chunk);
	CHECK(cached(c, &o) == a.backend_bytes);

	/* the same range again: from disk, no backend read */
	r0 = reads(&f);
	CHECK(read_ok(c, &o, 100000, 50000));
	CHECK(reads(&f) == r0);
	cache_counters(c, &b);
	CHECK(b.hits == a.hits + 2);
	CHECK(b.misses == a.misses);
	CHECK(b.backend_bytes == a.backend_bytes);

	/* any part of a cached chunk is a hit, a neighbour is a miss */
	CHECK(read_ok(c, &o, chunk + 7, 3));
	CHECK(read_ok(c, &o, 3 * chunk - 1, 1));
	CHECK(reads(&f) == r0);
	CHECK(read_ok(c, &o, 3 * chunk, 1));
	CHECK(reads(&f) == r0 + 1);
	CHECK(cached(c, &o) == 3 * chunk);
	cache_counters(c, &b);
	CHECK(cached(c, &o) == b.backend_bytes);
	cache_close(c);
	fake_destroy(&f);
}

/* ---- single flight ---- */

struct sf_arg {
	struct cache *c;
	const struct cache_object *o;
	pthread_barrier_t *bar;
	uint64_t off;
	size_t len;
	int ok;
};

static void *sf_main(void *p)
{
	struct sf_arg *a = p;

	pthread_barrier_wait(a->bar);
	a->ok = read_ok(a->c, a->o, a->off, a->len);
	return NULL;
}

static void run_threads(struct sf_arg *args, int n)
{
	pthread_t th[32];
	int started = 0;

	for (int i = 0; i < n; i++)
		if (pthread_create(&th[i], NULL, sf_main, &args[i]) == 0)
			started++;
	CHECK(started == n);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
}

static void test_single_flight(void)
{
	enum { N = 16 };
	struct fake f;
	struct sf_arg args[N];
	struct cache_counters cc;
	pthread_barrier_t bar;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "sf.bin", "e", 10 * chunk + 5};
	struct cache *c;
	int ok = 0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "sf", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	/* a slow backend: every thread arrives while the first fetch is open */
	atomic_store(&f.sleep_ms, 50);

	pthread_barrier_init(&bar, NULL, N);
	for (int i = 0; i < N; i++)
		args[i] = (struct sf_arg){c, &o, &bar, 5 * chunk + 1000, 3000, 0};
	run_threads(args, N);
	for (int i = 0; i < N; i++)
		ok += args[i].ok;
	CHECK(ok == N);
	CHECK(reads(&f) == 1);
	cache_counters(c, &cc);
	CHECK(cc.misses == 1);
	CHECK(cc.hits == N - 1);

	/* different ranges over the same two cold chunks (7 and 8): two reads */
	for (int i = 0; i < N; i++)
		args[i] = (struct sf_arg){c, &o, &bar, 8 * chunk - 1000 + (uint64_t)i * 100, 2000,
					  0};
	run_threads(args, N);
	ok = 0;
	for (int i = 0; i < N; i++)
		ok += args[i].ok;
	CHECK(ok == N);
	CHECK(reads(&f) == 1 + 2);

	/* the tail chunk (5 bytes) as well */
	for (int i = 0; i < N; i++)
		args[i] = (struct sf_arg){c, &o, &bar, 10 * chunk + (uint64_t)(i % 5), 100, 0};
	run_threads(args, N);
	ok = 0;
	for (int i = 0; i < N; i++)
		ok += args[i].ok;
	CHECK(ok == N);
	CHECK(reads(&f) == 1 + 2 + 1);
	CHECK(cached(c, &o) == 3 * chunk + 5);
	pthread_barrier_destroy(&bar);
	cache_close(c);
	fake_destroy(&f);
}

/* Two processes sharing one cache directory fetch a cold chunk once: the
 * range lock is taken on the data file, so it holds across processes. */
static void test_two_processes(void)
{
	struct fake f;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "two.bin", "t", 8 * chunk};
	atomic_uint_fast64_t *shared;
	int ready[2], go[2], status = -1;
	struct cache *c;
	pid_t pid;
	char b;

	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		      -1, 0);
	if (shared == MAP_FAILED || pipe(ready) || pipe(go)) {
		CHECK(0); /* no shared memory or pipes */
		return;
	}
	atomic_store(shared, 0);
	/* fork before any cache is open: LMDB handles do not cross fork */
	pid = fork();
	if (pid == 0) {
		int ok;
		fake_init(&f, chunk);
		fake_put(&f, o.key, o.etag, o.size);
		f.shared_reads = shared;
		atomic_store(&f.sleep_ms, 100);
		c = open_cache(&f, "twoproc", chunk, 1ULL << 30, 0.9, 0.5);
		ok = c && write(ready[1], "r", 1) == 1 && read(go[0], &b, 1) == 1 &&
		     read_ok(c, &o, 3 * chunk + 10, 1000);
		cache_close(c);
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	f.shared_reads = shared;
	atomic_store(&f.sleep_ms, 100);
	c = open_cache(&f, "twoproc", chunk, 1ULL << 30, 0.9, 0.5);
	CHECK(pid > 0 && read(ready[0], &b, 1) == 1);
	CHECK(write(go[1], "g", 1) == 1);
	if (c) {
		CHECK(read_ok(c, &o, 3 * chunk + 500, 1000));
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(atomic_load(shared) == 1);
	if (c) {
		CHECK(cached(c, &o) == chunk); /* one shared index, one usage */
		cache_close(c);
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	munmap(shared, sizeof(*shared));
	fake_destroy(&f);
}

/* ---- damage on disk ----
 *
 * Chunks just fetched are served from memory, which disk damage cannot
 * touch; so after each damage the cache is reopened (as after a restart),
 * and the reads that follow meet the disk. Counters start again at 0. */

static struct cache *reopen(struct cache *c, struct fake *f, uint32_t chunk)
{
	cache_close(c);
	return open_cache(f, "corrupt", chunk, 1ULL << 30, 0.9, 0.5);
}

static void test_corruption(void)
{
	struct fake f;
	struct cache_counters a, b;
	const uint32_t chunk = 256 * KiB; /* four checked blocks per chunk */
	struct cache_object o = {"s3://bucket", "dmg.bin", "e", 4 * 256 * KiB + 1000};
	struct cache *c;
	char file[512];
	uint64_t r0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "corrupt", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == 5);
	CHECK(data_files("corrupt") == 1);
	if (n_found != 1) {
		cache_close(c);
		return;
	}
	snprintf(file, sizeof(file), "%s", found[0]);

	/* a flipped byte in block 3 of chunk 1 */
	CHECK(flip_byte(file, chunk + 3 * 65536 + 5) == 0);
	if (!(c = reopen(c, &f, chunk)))
		return;
	cache_counters(c, &a);
	r0 = reads(&f);
	/* block 0 of that chunk is intact and is all this read checks */
	CHECK(read_ok(c, &o, chunk, 100));
	CHECK(reads(&f) == r0);
	/* block 3: the check fails, the chunk is fetched again, right bytes */
	CHECK(read_ok(c, &o, chunk + 3 * 65536, 100));
	CHECK(reads(&f) == r0 + 1);
	cache_counters(c, &b);
	CHECK(b.refetches == a.refetches + 1);
	/* and the refetch repaired it on disk: a hit now */
	CHECK(read_ok(c, &o, chunk + 3 * 65536, 100));
	CHECK(reads(&f) == r0 + 1);

	/* the short tail chunk */
	CHECK(flip_byte(file, 4 * chunk + 999) == 0);
	if (!(c = reopen(c, &f, chunk)))
		return;
	cache_counters(c, &b);
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == r0 + 2);
	cache_counters(c, &a);
	CHECK(a.refetches == b.refetches + 1);

	/* the data file deleted: a vanished chunk, fetched again */
	CHECK(unlink(file) == 0);
	if (!(c = reopen(c, &f, chunk)))
		return;
	cache_counters(c, &a);
	r0 = reads(&f);
	CHECK(read_ok(c, &o, 10, 100));
	CHECK(reads(&f) == r0 + 1);
	cache_counters(c, &b);
	CHECK(b.refetches == a.refetches + 1);
	if (b.refetches != a.refetches + 1)
		fprintf(stderr, "  data file deleted: refetches +%llu, want +1\n",
			(unsigned long long)(b.refetches - a.refetches));
	/* the other chunks are holes in the new file now: fetched again too */
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == r0 + 5);
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == r0 + 5);

	/* truncated in the middle of chunk 1, once the refetched chunks are
	 * written (a queued write would land after the truncate) */
	cache_sync(c);
	CHECK(data_files("corrupt") == 1);
	CHECK(truncate(found[0], chunk + 100) == 0);
	if (!(c = reopen(c, &f, chunk)))
		return;
	r0 = reads(&f);
	cache_counters(c, &a);
	CHECK(read_ok(c, &o, 0, chunk)); /* chunk 0 is whole */
	CHECK(reads(&f) == r0);
	CHECK(read_ok(c, &o, chunk + 50, 100));
	CHECK(reads(&f) == r0 + 1);
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == r0 + 4);
	cache_counters(c, &b);
	CHECK(b.refetches == a.refetches + 4);

	/* the usage of a refetched chunk is counted once */
	CHECK(cached(c, &o) == o.size);
	cache_close(c);
	fake_destroy(&f);
}

/* ---- quota and eviction ---- */

static uint64_t usage_now(struct cache *c, const struct cache_object *o, int n)
{
	uint64_t u = 0;

	for (int i = 0; i < n; i++) {
		uint64_t b = cached(c, &o[i]);
		if (b == UINT64_MAX)
			return UINT64_MAX;
		u += b;
	}
	return u;
}

static void test_quota(void)
{
	struct fake f;
	struct cache_counters cc;
	const uint32_t chunk = 256 * KiB;
	const uint64_t quota = 2 * MiB;
	struct cache_object o[2] = {
		{"s3://bucket", "small.bin", "s", 100 * KiB},
		{"s3://bucket", "big.bin", "b", 8 * MiB},
	};
	struct index_stats st;
	struct scan_sum sum = {0};
	struct index *ix;
	struct cache *c;
	uint64_t max_usage = 0, u = 0;
	int bad = 0;

	fake_init(&f, chunk);
	fake_put(&f, o[0].key, o[0].etag, o[0].size);
	fake_put(&f, o[1].key, o[1].etag, o[1].size);
	c = open_cache(&f, "quota", chunk, quota, 0.9, 0.5);
	if (!c)
		return;
	/* the small object first: the oldest, so the first to go */
	CHECK(read_ok(c, &o[0], 0, o[0].size));
	CHECK(cached(c, &o[0]) == o[0].size);
	sleep_ms(5);
	for (uint64_t off = 0; off < o[1].size; off += chunk) {
		bad += !read_ok(c, &o[1], off, chunk);
		u = usage_now(c, o, 2);
		if (u > max_usage)
			max_usage = u;
	}
	CHECK(bad == 0);
	CHECK(max_usage <= quota + chunk);
	if (max_usage > quota + chunk)
		fprintf(stderr, "  usage reached %llu, quota %llu\n", (unsigned long long)max_usage,
			(unsigned long long)quota);

	/* the background eviction brings it under the high watermark */
	for (int i = 0; i < 100; i++) {
		u = usage_now(c, o, 2);
		if (u <= (uint64_t)(0.9 * (double)quota))
			break;
		sleep_ms(100);
	}
	CHECK(u <= (uint64_t)(0.9 * (double)quota));
	CHECK(u > 0);
	/* the least recently used went first: the small object, whole, and
	 * its data file with it */
	CHECK(cached(c, &o[0]) == 0);
	CHECK(data_files("quota") == 1);
	/* evicted chunks are punched out: the disk holds about what is counted */
	CHECK((uint64_t)found_blocks * 512 <= cached(c, &o[1]) + 64 * KiB);
	if ((uint64_t)found_blocks * 512 > cached(c, &o[1]) + 64 * KiB)
		fprintf(stderr, "  data file holds %llu bytes, %llu counted\n",
			(unsigned long long)found_blocks * 512,
			(unsigned long long)cached(c, &o[1]));

	/* everything still reads right, evicted or not */
	CHECK(read_ok(c, &o[1], 0, o[1].size));
	CHECK(read_ok(c, &o[0], 0, o[0].size));
	cache_counters(c, &cc);
	CHECK(cc.misses >= o[1].size / chunk + 1);
	cache_close(c);

	/* the usage recorded is exactly the chunks recorded, within the quota */
	ix = open_index("quota");
	if (!ix)
		goto out;
	CHECK(index_stats(ix, &st) == 0);
	CHECK(index_scan_chunks(ix, sum_cb, &sum) == 0);
	CHECK(st.usage == sum.bytes);
	CHECK(st.chunks == sum.chunks);
	CHECK(st.usage <= quota + chunk);
	CHECK(st.quota == quota);
	index_close(ix);
out:
	fake_destroy(&f);
}

/* Several readers at once past the quota: right bytes, and the quota is
 * exceeded by at most the chunks in flight. */
struct qr_arg {
	struct cache *c;
	const struct cache_object *o;
	uint64_t from, to;
	uint32_t step;
	uint64_t max_usage;
	int bad;
};

static void *qr_main(void *p)
{
	struct qr_arg *a = p;

	for (uint64_t off = a->from; off < a->to; off += a->step) {
		uint64_t u;
		a->bad += !read_ok(a->c, a->o, off, a->step);
		u = cached(a->c, a->o);
		if (u != UINT64_MAX && u > a->max_usage)
			a->max_usage = u;
	}
	return NULL;
}

static void test_quota_parallel(void)
{
	enum { N = 4 };
	struct fake f;
	const uint32_t chunk = 256 * KiB;
	const uint64_t quota = 2 * MiB;
	struct cache_object o = {"s3://bucket", "par.bin", "p", 8 * MiB + 777};
	struct qr_arg args[N];
	pthread_t th[N];
	struct cache *c;
	uint64_t part = o.size / N, max_usage = 0, u = 0;
	int bad = 0, started = 0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "quota-par", chunk, quota, 0.9, 0.5);
	if (!c)
		return;
	for (int i = 0; i < N; i++) {
		args[i] = (struct qr_arg){c, &o, part * (uint64_t)i,
					  i == N - 1 ? o.size : part * (uint64_t)(i + 1),
					  100 * KiB, 0, 0};
		started += pthread_create(&th[i], NULL, qr_main, &args[i]) == 0;
	}
	CHECK(started == N);
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		bad += args[i].bad;
		if (args[i].max_usage > max_usage)
			max_usage = args[i].max_usage;
	}
	CHECK(bad == 0);
	CHECK(max_usage <= quota + N * chunk);
	for (int i = 0; i < 100; i++) {
		u = cached(c, &o);
		if (u <= (uint64_t)(0.9 * (double)quota))
			break;
		sleep_ms(100);
	}
	CHECK(u <= (uint64_t)(0.9 * (double)quota));
	cache_close(c);
	fake_destroy(&f);
}

/* Least recently used, not least recently fetched: chunks read again stay. */
static void test_lru(void)
{
	struct fake f;
	const uint32_t chunk = 256 * KiB;
	const uint64_t quota = 2 * MiB; /* 8 chunks; high 7.2, low 4 */
	struct cache_object o = {"s3://bucket", "lru.bin", "l", 8 * 256 * KiB};
	struct scan_sum sum = {0};
	struct index *ix;
	struct cache *c;
	uint64_t u = 0, r0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "lru", chunk, quota, 0.9, 0.5);
	if (!c)
		return;
	for (uint64_t i = 0; i < 7; i++) {
		CHECK(read_ok(c, &o, i * chunk, chunk));
		sleep_ms(5);
	}
	CHECK(cached(c, &o) == 7 * chunk); /* 1.75 MiB: not above high yet */
	/* chunks 0 and 1 used again: now the most recent but for chunk 7 */
	r0 = reads(&f);
	CHECK(read_ok(c, &o, 0, 2 * chunk));
	CHECK(reads(&f) == r0);
	sleep_ms(5);
	CHECK(read_ok(c, &o, 7 * chunk, chunk)); /* 2 MiB: eviction down to 1 MiB */
	for (int i = 0; i < 100; i++) {
		u = cached(c, &o);
		if (u <= (uint64_t)(0.9 * (double)quota))
			break;
		sleep_ms(100);
	}
	CHECK(u == 4 * chunk); /* evicted down to low x quota exactly, not further */
	cache_close(c);

	ix = open_index("lru");
	if (!ix)
		goto out;
	CHECK(index_scan_chunks(ix, sum_cb, &sum) == 0);
	/* 2..5 were the least recently used */
	CHECK(sum.chunk_bits == (1u << 0 | 1u << 1 | 1u << 6 | 1u << 7));
	if (sum.chunk_bits != (1u << 0 | 1u << 1 | 1u << 6 | 1u << 7))
		fprintf(stderr, "  chunks left: 0x%llx\n", (unsigned long long)sum.chunk_bits);
	index_close(ix);
out:
	fake_destroy(&f);
}

/* ---- no disk tier ---- */

static void test_no_cache(void)
{
	struct fake f;
	struct cache_config cfg = {0};
	struct cache_counters cc;
	struct cache_object o = {"s3://bucket", "nc.bin", "n", 3 * MiB + 1};
	struct cache *c = NULL;
	uint64_t b = 7;

	fake_init(&f, 0);
	fake_put(&f, o.key, o.etag, o.size);
	cfg.dir = NULL;
	CHECK(cache_open(&f.be, &cfg, &c) == 0);
	if (!c)
		return;
	/* exactly the range asked for: no chunk rounding, no readahead */
	CHECK(read_ok(c, &o, 1000, 5000));
	CHECK(reads(&f) == 1);
	CHECK(f.last_off == 1000 && f.last_len == 5000);
	/* clamped to the object */
	CHECK(read_ok(c, &o, o.size - 10, 100));
	CHECK(reads(&f) == 2);
	CHECK(f.last_off == o.size - 10 && f.last_len == 10);
	/* past the end: no request at all */
	CHECK(read_ok(c, &o, o.size, 100));
	CHECK(reads(&f) == 2);
	/* one large read is one request */
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(reads(&f) == 3);
	CHECK(f.last_off == 0 && f.last_len == o.size);
	/* nothing is kept: the same range goes to the backend again */
	CHECK(read_ok(c, &o, 1000, 5000));
	CHECK(reads(&f) == 4);
	CHECK(cache_cached_bytes(c, &o, &b) == -ENODATA);
	CHECK(b == 0);
	cache_counters(c, &cc);
	CHECK(cc.hits == 0);
	/* a short answer means another version */
	atomic_store(&f.short_by, 1);
	{
		char buf[100];
		size_t got;
		CHECK(cache_read(c, &o, 0, sizeof(buf), buf, &got) == -ESTALE);
	}
	atomic_store(&f.short_by, 0);
	cache_close(c);
	fake_destroy(&f);

	/* a cache directory that cannot be used: still works, without a disk */
	fake_init(&f, 0);
	fake_put(&f, o.key, o.etag, o.size);
	cfg.dir = "/proc/version/cache";
	c = NULL;
	CHECK(cache_open(&f.be, &cfg, &c) == 0);
	if (c) {
		CHECK(read_ok(c, &o, 10, 10));
		CHECK(reads(&f) == 1 && f.last_len == 10);
		CHECK(cache_cached_bytes(c, &o, &b) == -ENODATA);
		cache_close(c);
	}
	fake_destroy(&f);
}

/* ---- one slow or failing object ---- */

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A failed fetch answers every reader waiting on it at once: one request,
 * not one retry budget per waiter. */
static void test_shared_failure(void)
{
	enum { N = 8 };
	struct fake f;
	struct sf_arg args[N];
	pthread_barrier_t bar;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "fail.bin", "e", 4 * chunk};
	struct cache *c;
	double t0, dt;
	int ok = 0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "sharedfail", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	atomic_store(&f.sleep_ms, 300);
	atomic_store(&f.fail_err, -EIO);
	pthread_barrier_init(&bar, NULL, N);
	for (int i = 0; i < N; i++)
		args[i] = (struct sf_arg){c, &o, &bar, chunk + (uint64_t)i * 100, 100, 0};
	t0 = mono_now();
	run_threads(args, N);
	dt = mono_now() - t0;
	for (int i = 0; i < N; i++)
		ok += args[i].ok;
	CHECK(ok == 0);
	CHECK(reads(&f) == 1);
	CHECK(dt < 0.9); /* one 300 ms request, not 8 in a row (2.4 s) */
	if (reads(&f) != 1 || dt >= 0.9)
		fprintf(stderr, "  %d waiters of a failing fetch: %llu requests, %.2f s\n", N,
			(unsigned long long)reads(&f), dt);
	atomic_store(&f.fail_err, 0);
	atomic_store(&f.sleep_ms, 0);
	usleep((FLIGHT_FAIL_MS + 100) * 1000);
	CHECK(read_ok(c, &o, chunk, 100));
	pthread_barrier_destroy(&bar);
	cache_close(c);
	fake_destroy(&f);
}

/* One slow object holds at most half of the fetch slots: a cold read of
 * another object does not queue behind two dozen readers of the slow one. */
static void test_slow_object(void)
{
	enum { N = 24 };
	struct fake f;
	struct sf_arg args[N];
	pthread_t th[N];
	pthread_barrier_t bar;
	const uint32_t chunk = 64 * KiB;
	struct cache_object slow = {"s3://bucket", "slow.bin", "s", N * chunk};
	struct cache_object fast = {"s3://bucket", "fast.bin", "f", chunk};
	struct cache *c;
	double t0, dt;
	int started = 0;

	fake_init(&f, chunk);
	fake_put(&f, slow.key, slow.etag, slow.size);
	fake_put(&f, fast.key, fast.etag, fast.size);
	snprintf(f.slow_key, sizeof(f.slow_key), "%s", slow.key);
	c = open_cache(&f, "slowobj", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	atomic_store(&f.sleep_ms, 1500);
	pthread_barrier_init(&bar, NULL, N + 1);
	for (int i = 0; i < N; i++) {
		args[i] = (struct sf_arg){c, &slow, &bar, (uint64_t)i * chunk, 100, 0};
		if (pthread_create(&th[i], NULL, sf_main, &args[i]) == 0)
			started++;
	}
	pthread_barrier_wait(&bar);
	usleep(200 * 1000); /* the slow fetches are in flight */
	t0 = mono_now();
	CHECK(read_ok(c, &fast, 0, 100));
	dt = mono_now() - t0;
	CHECK(dt < 0.5);
	fprintf(stderr, "  a cold read of another object while %d readers wait on a slow one: "
			"%.3f s\n", N, dt);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N; i++)
		CHECK(args[i].ok);
	pthread_barrier_destroy(&bar);
	cache_close(c);
	fake_destroy(&f);
}

/* ---- backend errors ---- */

static void test_backend_error(void)
{
	struct fake f;
	struct cache_counters a, b;
	const uint32_t chunk = 64 * KiB;
	struct cache_object o = {"s3://bucket", "err.bin", "e1", 4 * chunk};
	struct cache_object stale = {"s3://bucket", "err.bin", "e0", 4 * chunk};
	struct cache *c;
	char buf[3 * 65536];
	size_t got;
	uint64_t r0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "err", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	cache_counters(c, &a);
	atomic_store(&f.fail_err, -EIO);
	got = 99;
	CHECK(cache_read(c, &o, 0, 100, buf, &got) == -EIO);
	CHECK(got == 0);
	/* remembered: the same chunk fails again at once, without a request,
	 * even once the backend would answer (a kernel retry of the page) */
	r0 = reads(&f);
	atomic_store(&f.fail_err, 0);
	CHECK(cache_read(c, &o, chunk - 10, 100, buf, &got) == -EIO);
	CHECK(reads(&f) == r0);
	/* ... for FLIGHT_FAIL_MS only */
	usleep((FLIGHT_FAIL_MS + 100) * 1000);
	atomic_store(&f.fail_err, -ETIMEDOUT);
	CHECK(cache_read(c, &o, 0, 100, buf, &got) == -ETIMEDOUT);
	CHECK(reads(&f) == r0 + 1);
	atomic_store(&f.fail_err, 0);
	usleep((FLIGHT_FAIL_MS + 100) * 1000);
	CHECK(cached(c, &o) == 0);
	cache_counters(c, &b);
	CHECK(b.misses == a.misses && b.backend_bytes == a.backend_bytes);
	CHECK(b.hits == a.hits);

	/* the failed chunk was not recorded: the next read fetches it */
	r0 = reads(&f);
	CHECK(read_ok(c, &o, 0, 100));
	CHECK(reads(&f) == r0 + 1);
	CHECK(cached(c, &o) == chunk);

	/* the object changed behind the listing: ESTALE, nothing kept */
	got = 99;
	CHECK(cache_read(c, &stale, 0, 100, buf, &got) == -ESTALE);
	CHECK(cached(c, &stale) == 0);
	/* shorter than the listing said: ESTALE too, nothing kept */
	atomic_store(&f.short_by, 1);
	CHECK(cache_read(c, &o, 2 * chunk, 100, buf, &got) == -ESTALE);
	atomic_store(&f.short_by, 0);
	usleep((FLIGHT_FAIL_MS + 100) * 1000);
	CHECK(cached(c, &o) == chunk);
	r0 = reads(&f);
	CHECK(read_ok(c, &o, 2 * chunk, 100));
	CHECK(reads(&f) == r0 + 1);

	/* an error in the middle of a multi-chunk read is the read's error */
	atomic_store(&f.fail_err, -EIO);
	CHECK(cache_read(c, &o, 0, sizeof(buf), buf, &got) == -EIO);
	atomic_store(&f.fail_err, 0);
	usleep((FLIGHT_FAIL_MS + 100) * 1000);
	CHECK(cached(c, &o) == 2 * chunk);
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(cached(c, &o) == o.size);
	cache_close(c);
	fake_destroy(&f);
}

/* ---- object identity ---- */

static void test_identity(void)
{
	struct fake f;
	struct cache_counters a, b;
	const uint32_t chunk = 64 * KiB;
	const uint64_t size = 5 * chunk + 100;
	struct cache_object v1 = {"s3://bucket", "w.bin", "e1", size};
	struct cache_object v2 = {"s3://bucket", "w.bin", "e2", size};
	struct cache_object other_src = {"http://127.0.0.1:9000 s3://bucket", "w.bin", "e2", size};
	struct cache_object other_size = {"s3://bucket", "w.bin", "e2", size - 1};
	struct cache_object no_etag = {"s3://bucket", "w.bin", "", size};
	struct cache *c;
	char x[64], y[64];
	uint64_t r0;

	/* the two versions really differ, so a mixup would be seen */
	content(content_seed("w.bin", "e1"), 0, x, sizeof(x));
	content(content_seed("w.bin", "e2"), 0, y, sizeof(y));
	CHECK(memcmp(x, y, sizeof(x)) != 0);

	fake_init(&f, chunk);
	fake_put(&f, v1.key, v1.etag, size);
	c = open_cache(&f, "ident", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	CHECK(read_ok(c, &v1, 0, size));
	CHECK(reads(&f) == 6);

	/* a new version: its own object, nothing served from the old one */
	fake_put(&f, v2.key, v2.etag, size);
	cache_counters(c, &a);
	r0 = reads(&f);
	CHECK(cached(c, &v2) == 0);
	CHECK(read_ok(c, &v2, 0, size));
	CHECK(reads(&f) == r0 + 6);
	cache_counters(c, &b);
	CHECK(b.hits == a.hits);
	CHECK(cached(c, &v2) == size);
	/* the old version's chunks are still its own (an open file of it
	 * reads on from the cache; the backend would now refuse it) */
	r0 = reads(&f);
	CHECK(read_ok(c, &v1, 0, size));
	CHECK(reads(&f) == r0);
	CHECK(cached(c, &v1) == size);

	/* source and size are part of the identity too */
	r0 = reads(&f);
	CHECK(read_ok(c, &other_src, 0, size));
	CHECK(reads(&f) == r0 + 6);
	r0 = reads(&f);
	CHECK(read_ok(c, &other_size, 0, size));
	CHECK(reads(&f) == r0 + 6);
	CHECK(cached(c, &other_size) == size - 1);
	/* an object without an ETag is cached under the empty one */
	r0 = reads(&f);
	CHECK(cache_read(c, &no_etag, 0, 10, x, &(size_t){0}) == 0);
	CHECK(reads(&f) == r0 + 1);
	CHECK(cache_read(c, &no_etag, 0, 10, y, &(size_t){0}) == 0);
	CHECK(reads(&f) == r0 + 1);
	CHECK(memcmp(x, y, 10) == 0);
	cache_close(c);
	fake_destroy(&f);
}

/* ---- across restarts ---- */

static void test_reopen(void)
{
	struct fake f;
	struct cache_counters a, b;
	const uint32_t chunk = 128 * KiB;
	struct cache_object o = {"s3://bucket", "re.bin", "r", 3 * chunk + 3};
	struct index_stats st;
	struct index *ix;
	struct cache *c;
	uint64_t r0;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "reopen", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(read_ok(c, &o, 0, o.size));
	cache_counters(c, &a);
	cache_close(c);

	/* another chunk size asked: the cache keeps its own, and its data */
	r0 = reads(&f);
	c = open_cache(&f, "reopen", 64 * KiB, 1ULL << 30, 0.9, 0.5);
	if (!c)
		goto out;
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(read_ok(c, &o, chunk - 5, 10));
	CHECK(reads(&f) == r0);
	cache_counters(c, &b);
	CHECK(b.misses == 0 && b.hits == 4 + 2);
	CHECK(cached(c, &o) == o.size);
	cache_close(c);

	/* every process's hits and misses reach the shared index by close */
	ix = open_index("reopen");
	if (!ix)
		goto out;
	CHECK(index_stats(ix, &st) == 0);
	CHECK(st.chunk_size == chunk);
	CHECK(st.hits == a.hits + b.hits);
	CHECK(st.misses == a.misses + b.misses);
	CHECK(st.usage == o.size);
	index_close(ix);
out:
	fake_destroy(&f);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(path);
}

/* Wait up to 5 s for @o to be cached to @want bytes; @return the bytes cached. */
static uint64_t wait_cached(struct cache *c, const struct cache_object *o, uint64_t want)
{
	uint64_t b = 0;

	for (int i = 0; i < 500 && (b = cached(c, o)) < want; i++)
		sleep_ms(10);
	return b;
}

/* Readahead: a sequential reader gets chunks fetched ahead of it; a random
 * reader gets only what it reads until it has read a quarter of the
 * object's chunks, and then the rest is swept in behind it. */
static void test_readahead(void)
{
	struct fake f;
	const uint32_t chunk = 64 * KiB, n = 64;
	struct cache_object seq = {"s3://bucket", "seq.bin", "e", (uint64_t)n * chunk};
	struct cache_object rnd_o = {"s3://bucket", "rnd.bin", "e", (uint64_t)n * chunk};
	struct cache_object few = {"s3://bucket", "few.bin", "e", (uint64_t)n * chunk};
	struct cache_stream *s1, *s2, *s3;
	uint32_t order[64];
	uint64_t r0;
	struct cache *c;

	fake_init(&f, chunk);
	fake_put(&f, seq.key, seq.etag, seq.size);
	fake_put(&f, rnd_o.key, rnd_o.etag, rnd_o.size);
	fake_put(&f, few.key, few.etag, few.size);
	c = open_cache(&f, "readahead", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		return;

	/* a random order of the chunks, where no chunk follows the one before
	 * (which would look sequential) */
	for (uint32_t k = 0; k < n; k++)
		order[k] = (k * 37) % n;
	/* random, under a quarter: exactly the chunks read, after a pause in
	 * which readahead could have run */
	s3 = cache_stream_new();
	r0 = reads(&f);
	for (uint32_t k = 0; k < n / 4 - 2; k++) {
		cache_readahead(c, &few, s3, (uint64_t)order[k] * chunk + 5, 100);
		CHECK(read_ok(c, &few, (uint64_t)order[k] * chunk + 5, 100));
	}
	sleep_ms(200);
	CHECK(reads(&f) - r0 == n / 4 - 2);
	CHECK(cached(c, &few) == (uint64_t)(n / 4 - 2) * chunk);
	cache_stream_free(s3);

	/* random, a quarter: the whole object is cached without more reads;
	 * each chunk is fetched once */
	s2 = cache_stream_new();
	r0 = reads(&f);
	for (uint32_t k = 0; k < n / 4; k++) {
		cache_readahead(c, &rnd_o, s2, (uint64_t)order[k] * chunk + 5, 100);
		CHECK(read_ok(c, &rnd_o, (uint64_t)order[k] * chunk + 5, 100));
	}
	/* the sweep goes on as the reader keeps reading (the same chunk) */
	for (int i = 0; i < 500 && cached(c, &rnd_o) < rnd_o.size; i++) {
		cache_readahead(c, &rnd_o, s2, (uint64_t)order[0] * chunk, 100);
		sleep_ms(10);
	}
	CHECK(cached(c, &rnd_o) == rnd_o.size);
	CHECK(reads(&f) - r0 == n);
	CHECK(read_ok(c, &rnd_o, 0, rnd_o.size));
	CHECK(reads(&f) - r0 == n);
	cache_stream_free(s2);

	/* sequential (last: its readahead counts as backend reads): four
	 * chunks read, more than four cached soon after */
	s1 = cache_stream_new();
	for (uint32_t k = 0; k < 4; k++) {
		cache_readahead(c, &seq, s1, (uint64_t)k * chunk, chunk);
		CHECK(read_ok(c, &seq, (uint64_t)k * chunk, chunk));
	}
	CHECK(wait_cached(c, &seq, 8ULL * chunk) >= 8ULL * chunk);
	cache_stream_free(s1);
	cache_close(c);
	fake_destroy(&f);
}

/* No sweep of an object larger than half the quota: it would push the rest of
 * the cache out. */
static void test_no_sweep_over_quota(void)
{
	struct fake f;
	const uint32_t chunk = 64 * KiB, n = 64;
	struct cache_object o = {"s3://bucket", "big.bin", "e", (uint64_t)n * chunk};
	struct cache_stream *s;
	struct cache *c;

	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "nosweep", chunk, 6 * MiB, 0.9, 0.5); /* 4 MiB > 3 MiB */
	if (!c)
		return;
	s = cache_stream_new();
	for (uint32_t k = 0; k < n / 2; k++) {
		cache_readahead(c, &o, s, (uint64_t)((k * 37) % n) * chunk, 100);
		CHECK(read_ok(c, &o, (uint64_t)((k * 37) % n) * chunk, 100));
	}
	sleep_ms(200);
	CHECK(reads(&f) == n / 2);
	cache_stream_free(s);
	cache_close(c);
	fake_destroy(&f);
}

/* Reads of a random reader (cache_read_random): O_DIRECT into an aligned
 * buffer gives the right bytes, still catches a flipped byte (written
 * buffered, so only in the page cache until the O_DIRECT read flushes it),
 * and an unaligned range or buffer goes the buffered way. */
static void test_direct_reads(void)
{
	struct fake f;
	const uint32_t chunk = 256 * KiB;
	struct cache_object o = {"s3://bucket", "dio.bin", "e", 4 * 256 * KiB + 1000};
	uint64_t seed = content_seed(o.key, o.etag), r0;
	char *buf = NULL, *exp = malloc(chunk);
	size_t got = 0;
	struct cache *c;
	char file[512];

	if (!exp || posix_memalign((void **)&buf, 4096, chunk + 4096) != 0) {
		CHECK(0);
		free(exp);
		return;
	}
	fake_init(&f, chunk);
	fake_put(&f, o.key, o.etag, o.size);
	c = open_cache(&f, "dio", chunk, 1ULL << 30, 0.9, 0.5);
	if (!c)
		goto out;
	CHECK(read_ok(c, &o, 0, o.size));
	CHECK(data_files("dio") == 1);
	snprintf(file, sizeof(file), "%s", n_found == 1 ? found[0] : "/nonexistent");
	cache_close(c); /* a fresh cache: nothing in its memory pool */
	if (!(c = open_cache(&f, "dio", chunk, 1ULL << 30, 0.9, 0.5)))
		goto out;
	r0 = reads(&f);

	/* aligned: O_DIRECT, from disk, right bytes */
	content(seed, chunk, exp, 128 * KiB);
	CHECK(cache_read_random(c, &o, chunk, 128 * KiB, buf, &got) == 0 && got == 128 * KiB &&
	      memcmp(buf, exp, got) == 0);
	CHECK(reads(&f) == r0);
	/* an unaligned buffer and an unaligned range: right bytes too */
	content(seed, 2 * chunk + 100, exp, 5000);
	CHECK(cache_read_random(c, &o, 2 * chunk + 100, 5000, buf + 1, &got) == 0 && got == 5000 &&
	      memcmp(buf + 1, exp, got) == 0);
	content(seed, 4 * chunk, exp, 1000); /* the short tail */
	CHECK(cache_read_random(c, &o, 4 * chunk, 4096, buf, &got) == 0 && got == 1000 &&
	      memcmp(buf, exp, got) == 0);
	CHECK(reads(&f) == r0);

	/* a flipped byte in block 1 of chunk 1: caught, fetched again, right bytes */
	CHECK(flip_byte(file, chunk + 65536 + 5) == 0);
	content(seed, chunk, exp, 128 * KiB);
	CHECK(cache_read_random(c, &o, chunk, 128 * KiB, buf, &got) == 0 && got == 128 * KiB &&
	      memcmp(buf, exp, got) == 0);
	CHECK(reads(&f) == r0 + 1);
	cache_close(c);
out:
	fake_destroy(&f);
	free(buf);
	free(exp);
}

int main(void)
{
	log_setup(0, LOG_LVL_WARN);
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_ranges();
	test_hits();
	test_single_flight();
	test_shared_failure();
	test_slow_object();
	test_two_processes();
	test_corruption();
	test_quota();
	test_quota_parallel();
	test_lru();
	test_no_cache();
	test_backend_error();
	test_identity();
	test_reopen();
	test_readahead();
	test_no_sweep_over_quota();
	test_direct_reads();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	CHECK(access(root, F_OK) != 0);
	return check_done();
}
