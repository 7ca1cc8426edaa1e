/* Unit tests for cache/snapshot.c: listing snapshots stored in the cache
 * directory.
 *
 * A snapshot is what lets a restart mount while the backend is down, so a
 * damaged one must be refused (-EPROTO, never a crash, never wrong bytes) and
 * a replaced one must be replaced whole: a reader sees the old or the new
 * snapshot, nothing in between, and no temporary file is left in meta/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "snapshot.h"

static char root[] = "/tmp/mfs_test_snapshot_XXXXXX";

/* ---- helpers ---- */

static uint64_t rng_state = 12345;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void fill_random(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)rnd();
}

/* Something like a serialized listing: keys that repeat a lot. */
static void fill_listing(char *p, size_t n)
{
	size_t i = 0;
	unsigned k = 0;

	while (i < n) {
		char line[128];
		int l = snprintf(line, sizeof(line), "models/llama/shard-%05u-of-99999.safetensors "
				 "%u 1700000000 \"etag%08x\"\n", k, k * 4096, k * 2654435761u);
		for (int j = 0; j < l && i < n; j++)
			p[i++] = line[j];
		k++;
	}
}

static void cache_dir(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", root, name);
	mkdir(out, 0700);
}

/* Names of the regular files in DIR/meta: count, and the first one's path. */
static int meta_files(const char *dir, char *first, size_t first_len, int *tmp_files)
{
	char path[300];
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (tmp_files)
		*tmp_files = 0;
	snprintf(path, sizeof(path), "%s/meta", dir);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (de->d_name[0] == '.')
			continue;
		if (n == 0 && first)
			snprintf(first, first_len, "%s/%.200s", path, de->d_name);
		if (tmp_files && (l < 4 || strcmp(de->d_name + l - 4, ".zst") != 0))
			(*tmp_files)++;
		n++;
	}
	closedir(d);
	return n;
}

static int load_equals(const char *dir, const char *id, const void *want, size_t want_len)
{
	void *data = NULL;
	size_t len = 0;
	int rc = snapshot_load(dir, id, &data, &len);
	int ok = rc == 0 && len == want_len && (want_len == 0 || memcmp(data, want, len) == 0);

	if (rc)
		fprintf(stderr, "  snapshot_load(%s): %d\n", id, rc);
	free(data);
	return ok;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- round trips ---- */

static void test_roundtrip(void)
{
	char dir[256], file[512];
	const char *small = "a/b.bin 123 1700000000 \"abc\"\n";
	size_t big = 5u << 20;
	char *text = malloc(big);
	unsigned char *noise = malloc(big);
	int tmp;

	if (!text || !noise)
		goto out;
	cache_dir(dir, sizeof(dir), "rt");
	CHECK(snapshot_save(dir, "s3://bucket/prefix/", small, strlen(small)) == 0);
	CHECK(load_equals(dir, "s3://bucket/prefix/", small, strlen(small)));

	/* an empty listing (an empty prefix) is a valid snapshot */
	CHECK(snapshot_save(dir, "s3://empty/", "", 0) == 0);
	{
		void *data = (void *)1;
		size_t len = 99;
		CHECK(snapshot_load(dir, "s3://empty/", &data, &len) == 0);
		CHECK(len == 0);
		free(data);
	}

	/* ~5 MB of listing text: stored compressed */
	fill_listing(text, big);
	CHECK(snapshot_save(dir, "s3://text/", text, big) == 0);
	CHECK(load_equals(dir, "s3://text/", text, big));

	/* ~5 MB that does not compress: still round trips */
	fill_random(noise, big);
	CHECK(snapshot_save(dir, "s3://noise/", noise, big) == 0);
	CHECK(load_equals(dir, "s3://noise/", noise, big));

	/* four snapshots, four files, all named *.zst, none temporary */
	CHECK(meta_files(dir, NULL, 0, &tmp) == 4);
	CHECK(tmp == 0);

	/* the compressible one is much smaller on disk than its content */
	{
		char only[256];
		cache_dir(only, sizeof(only), "rt-size");
		CHECK(snapshot_save(only, "s3://text/", text, big) == 0);
		CHECK(meta_files(only, file, sizeof(file), NULL) == 1);
		CHECK(file_size(file) > 0 && file_size(file) < (off_t)(big / 4));
	}
out:
	free(text);
	free(noise);
}

static void test_missing_and_ids(void)
{
	char dir[256], none[256];
	void *data = (void *)1;
	size_t len = 99;

	cache_dir(dir, sizeof(dir), "ids");
	/* no meta/ at all, then meta/ without this source */
	CHECK(snapshot_load(dir, "s3://nothing/", &data, &len) == -ENOENT);
	CHECK(data == NULL && len == 0);
	CHECK(snapshot_save(dir, "s3://b/one/", "one", 3) == 0);
	CHECK(snapshot_load(dir, "s3://b/two/", &data, &len) == -ENOENT);
	CHECK(data == NULL);
	snprintf(none, sizeof(none), "%s/does-not-exist", root);
	CHECK(snapshot_load(none, "s3://b/one/", &data, &len) == -ENOENT);

	/* sources that differ only slightly are different files */
	CHECK(snapshot_save(dir, "s3://b/two/", "two", 3) == 0);
	CHECK(snapshot_save(dir, "s3://b/one", "ONE-NO-SLASH", 12) == 0);
	CHECK(snapshot_save(dir, "http://127.0.0.1:9000 s3://b/one/", "other-endpoint", 14) == 0);
	CHECK(load_equals(dir, "s3://b/one/", "one", 3));
	CHECK(load_equals(dir, "s3://b/two/", "two", 3));
	CHECK(load_equals(dir, "s3://b/one", "ONE-NO-SLASH", 12));
	CHECK(load_equals(dir, "http://127.0.0.1:9000 s3://b/one/", "other-endpoint", 14));
	CHECK(meta_files(dir, NULL, 0, NULL) == 4);

	/* a source id that would be a bad file name is hashed, not used */
	CHECK(snapshot_save(dir, "s3://b/../../etc/x/", "dots", 4) == 0);
	CHECK(load_equals(dir, "s3://b/../../etc/x/", "dots", 4));
	CHECK(meta_files(dir, NULL, 0, NULL) == 5);
}

/* ---- damage ---- */

/* Save a fresh snapshot in its own directory and return its file's path. */
static int fresh(const char *name, const void *data, size_t len, char *file, size_t file_len,
		 char *dir, size_t dir_len)
{
	cache_dir(dir, dir_len, name);
	if (snapshot_save(dir, "s3://damage/", data, len) != 0)
		return -1;
	return meta_files(dir, file, file_len, NULL) == 1 ? 0 : -1;
}

static int load_rc(const char *dir)
{
	void *data = (void *)1;
	size_t len = 99;
	int rc = snapshot_load(dir, "s3://damage/", &data, &len);

	/* a refused snapshot hands nothing out */
	if (rc != 0 && (data != NULL || len != 0))
		return -9999;
	free(data);
	return rc;
}

static int patch(const char *file, off_t off, const void *bytes, size_t n)
{
	int fd = open(file, O_WRONLY);
	int ok;

	if (fd < 0)
		return -1;
	ok = pwrite(fd, bytes, n, off) == (ssize_t)n;
	close(fd);
	return ok ? 0 : -1;
}

static int flip(const char *file, off_t off)
{
	unsigned char b;
	int fd = open(file, O_RDWR);
	int ok;

	if (fd < 0)
		return -1;
	ok = pread(fd, &b, 1, off) == 1;
	b ^= 0x40;
	ok = ok && pwrite(fd, &b, 1, off) == 1;
	close(fd);
	return ok ? 0 : -1;
}

static void test_damage(void)
{
	char file[512], dir[256];
	size_t n = 300000;
	char *text = malloc(n);
	unsigned char *noise = malloc(n);
	off_t size;

	if (!text || !noise)
		goto out;
	fill_listing(text, n);
	fill_random(noise, n);

	/* intact first, so the damage is what makes it fail */
	CHECK(fresh("dmg-ok", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(load_rc(dir) == 0);

	/* one flipped bit in the middle of the compressed data */
	CHECK(fresh("dmg-mid", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	size = file_size(file);
	CHECK(flip(file, size / 2) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* same, in incompressible data (stored raw in the frame: only the
	 * checksum can notice) */
	CHECK(fresh("dmg-raw", noise, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	size = file_size(file);
	CHECK(flip(file, size / 2) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* the last byte */
	CHECK(fresh("dmg-last", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(flip(file, file_size(file) - 1) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* the header: magic, length, checksum */
	CHECK(fresh("dmg-magic", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(patch(file, 0, "MFSSNAP2", 8) == 0);
	CHECK(load_rc(dir) == -EPROTO);
	CHECK(fresh("dmg-len", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(flip(file, 8) == 0);
	CHECK(load_rc(dir) == -EPROTO);
	CHECK(fresh("dmg-len-hi", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(flip(file, 8 + 7) == 0); /* an absurd length: refused, not allocated */
	CHECK(load_rc(dir) == -EPROTO);
	/* a length one more than the frame holds, checksum intact: the frame
	 * decompresses fine, but not to the length the header promised */
	CHECK(fresh("dmg-len-plus", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	{
		uint64_t l = n + 1; /* little-endian host, as the file is */
		CHECK(patch(file, 8, &l, sizeof(l)) == 0);
		CHECK(load_rc(dir) == -EPROTO);
	}
	CHECK(fresh("dmg-crc", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(flip(file, 16) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* truncated: to half, into the header, to nothing */
	CHECK(fresh("dmg-trunc", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(truncate(file, file_size(file) / 2) == 0);
	CHECK(load_rc(dir) == -EPROTO);
	CHECK(truncate(file, file_size(file) - 1) == 0);
	CHECK(load_rc(dir) == -EPROTO);
	CHECK(truncate(file, 10) == 0);
	CHECK(load_rc(dir) == -EPROTO);
	CHECK(truncate(file, 0) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* a byte appended after the frame */
	CHECK(fresh("dmg-append", text, n, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(patch(file, file_size(file), "\0", 1) == 0);
	CHECK(load_rc(dir) == -EPROTO);

	/* garbage: random bytes, then random bytes behind a valid magic, then
	 * a valid header whose frame is garbage */
	for (int g = 0; g < 20; g++) {
		unsigned char junk[4096];
		size_t jl = 1 + (size_t)(rnd() % sizeof(junk));
		CHECK(fresh("dmg-junk", "x", 1, file, sizeof(file), dir, sizeof(dir)) == 0);
		fill_random(junk, jl);
		if (g % 2)
			memcpy(junk, "MFSSNAP1", jl < 8 ? jl : 8);
		if (g % 4 == 3 && jl > 24)
			memset(junk + 8 + 3, 0, 5); /* a plausible length, < 16 MiB */
		CHECK(truncate(file, 0) == 0);
		CHECK(patch(file, 0, junk, jl) == 0);
		CHECK(load_rc(dir) == -EPROTO);
	}
	/* a header claiming the largest length allowed over a tiny body:
	 * refused (the body cannot hold it) */
	{
		unsigned char hdr[32] = "MFSSNAP1";
		memset(hdr + 8, 0xff, 4); /* 4 GiB - 1 */
		CHECK(fresh("dmg-huge", "x", 1, file, sizeof(file), dir, sizeof(dir)) == 0);
		CHECK(truncate(file, 0) == 0);
		CHECK(patch(file, 0, hdr, sizeof(hdr)) == 0);
		CHECK(load_rc(dir) == -EPROTO);
	}
	/* a directory where the file should be: an error, not a crash */
	CHECK(fresh("dmg-dir", "x", 1, file, sizeof(file), dir, sizeof(dir)) == 0);
	CHECK(unlink(file) == 0 && mkdir(file, 0700) == 0);
	CHECK(load_rc(dir) < 0);
out:
	free(text);
	free(noise);
}

/* ---- replacement ---- */

static void test_overwrite(void)
{
	char dir[256], file[512];
	char a[1000], b[2000];
	int tmp;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	cache_dir(dir, sizeof(dir), "over");
	CHECK(snapshot_save(dir, "s3://o/", a, sizeof(a)) == 0);
	CHECK(snapshot_save(dir, "s3://o/", b, sizeof(b)) == 0);
	CHECK(load_equals(dir, "s3://o/", b, sizeof(b)));
	/* and back to a shorter one: nothing of the longer one remains */
	CHECK(snapshot_save(dir, "s3://o/", a, 10) == 0);
	CHECK(load_equals(dir, "s3://o/", a, 10));
	CHECK(meta_files(dir, NULL, 0, &tmp) == 1);
	CHECK(tmp == 0);

	/* a save that fails (a directory in the way of the rename) reports it
	 * and leaves no temporary file behind; other sources still save */
	CHECK(meta_files(dir, file, sizeof(file), NULL) == 1);
	CHECK(unlink(file) == 0 && mkdir(file, 0700) == 0);
	CHECK(snapshot_save(dir, "s3://o/", b, sizeof(b)) < 0);
	CHECK(meta_files(dir, NULL, 0, &tmp) == 1); /* only the directory */
	CHECK(tmp == 0);
	CHECK(snapshot_save(dir, "s3://other/", b, sizeof(b)) == 0);
	CHECK(load_equals(dir, "s3://other/", b, sizeof(b)));

	/* cache_dir itself missing: an error (the mount goes on without one) */
	{
		char none[256];
		snprintf(none, sizeof(none), "%s/no/such/dir", root);
		CHECK(snapshot_save(none, "s3://o/", a, 10) == -ENOENT);
	}
}

/* Readers during replacement: every load while another process keeps
 * replacing the snapshot returns one of the versions, whole. */
struct reader_arg {
	const char *dir;
	const unsigned char *v[2];
	size_t len[2];
	int loads, bad, stop;
};

static void *reader_main(void *p)
{
	struct reader_arg *r = p;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		void *data = NULL;
		size_t len = 0;
		int rc = snapshot_load(r->dir, "s3://race/", &data, &len);
		int ok = rc == 0 && ((len == r->len[0] && memcmp(data, r->v[0], len) == 0) ||
				     (len == r->len[1] && memcmp(data, r->v[1], len) == 0));
		if (!ok)
			__atomic_fetch_add(&r->bad, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&r->loads, 1, __ATOMIC_RELAXED);
		free(data);
	}
	return NULL;
}

static void test_replace_under_readers(void)
{
	char dir[256];
	size_t n0 = 200000, n1 = 150000;
	unsigned char *v0 = malloc(n0), *v1 = malloc(n1);
	struct reader_arg r = {0};
	pthread_t th[2];
	int status = -1, tmp, started = 0;
	pid_t pid;

	if (!v0 || !v1)
		goto out;
	fill_random(v0, n0);
	fill_random(v1, n1);
	cache_dir(dir, sizeof(dir), "race");
	CHECK(snapshot_save(dir, "s3://race/", v0, n0) == 0);
	r.dir = dir;
	r.v[0] = v0;
	r.v[1] = v1;
	r.len[0] = n0;
	r.len[1] = n1;
	for (int i = 0; i < 2; i++)
		started += pthread_create(&th[i], NULL, reader_main, &r) == 0;
	/* two writers in other processes (as two mounts of one source would
	 * be), each saving both versions over and over */
	pid = fork();
	if (pid == 0) {
		int bad = 0;
		pid_t p2 = fork();
		for (int i = 0; i < 40; i++)
			bad |= snapshot_save(dir, "s3://race/", i % 2 ? v1 : v0,
					     i % 2 ? n1 : n0) != 0;
		if (p2 > 0) {
			int st2 = -1;
			waitpid(p2, &st2, 0);
			bad |= !WIFEXITED(st2) || WEXITSTATUS(st2) != 0;
		}
		_exit(bad);
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	CHECK(started == 2);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(r.loads > 0);
	CHECK(r.bad == 0);
	if (r.bad)
		fprintf(stderr, "  %d of %d loads during replacement failed\n", r.bad, r.loads);
	CHECK(meta_files(dir, NULL, 0, &tmp) == 1);
	CHECK(tmp == 0); /* no temp files left behind */
out:
	free(v0);
	free(v1);
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
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_roundtrip();
	test_missing_and_ids();
	test_damage();
	test_overwrite();
	test_replace_under_readers();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	CHECK(access(root, F_OK) != 0);
	return check_done();
}
