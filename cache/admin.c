/* "modelfs cache stat|verify|clear DIR": offline views of a cache directory.
 * stat and verify can run while mounts use the cache (LMDB readers do not
 * block; a chunk evicted while verify reads it is reported damaged and its
 * record, already gone, is not touched); clear
 * refuses while any modelfs process holds the directory. */
#include "cache_i.h"
#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_existing(const char *dir, struct index **ix, uint32_t *cs)
{
	char path[4096], msg[512];
	struct stat st;
	int err;

	snprintf(path, sizeof(path), "%s/index/data.mdb", dir);
	if (stat(path, &st) < 0) {
		fprintf(stderr, "modelfs: %s is not a modelfs cache directory (no index)\n", dir);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "%s/index", dir);
	err = index_open(path, 0, CACHE_DEFAULT_CHUNK, cs, ix, msg, sizeof(msg));
	if (err == -EBADMSG)
		fprintf(stderr, "modelfs: %s: the next mount sets it aside and starts an empty "
			"cache (or: modelfs cache clear %s)\n", msg, dir);
	else if (err)
		fprintf(stderr, "modelfs: %s\n", msg);
	return err;
}

static void human(uint64_t b, char *out, size_t len)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)b;
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(out, len, i ? "%.2f %s" : "%.0f %s", v, u[i]);
}

static uint64_t data_bytes; /* nftw has no user argument */

static int add_blocks(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)p;
	(void)f;
	if (flag == FTW_F)
		data_bytes += (uint64_t)st->st_blocks * 512;
	return 0;
}

int cache_cmd_stat(const char *dir)
{
	struct index *ix;
	struct index_stats st;
	char u[32], q[32], h[32], l[32], d[32], path[4096];
	uint32_t cs;
	int err = open_existing(dir, &ix, &cs);

	if (err)
		return err;
	err = index_stats(ix, &st);
	index_close(ix);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/data", dir);
	data_bytes = 0;
	nftw(path, add_blocks, 16, FTW_PHYS);
	human(st.usage, u, sizeof(u));
	human(st.quota, q, sizeof(q));
	human((uint64_t)(st.high * (double)st.quota), h, sizeof(h));
	human((uint64_t)(st.low * (double)st.quota), l, sizeof(l));
	human(data_bytes, d, sizeof(d));
	printf("cache_dir   %s\n", dir);
	printf("usage       %s (%llu bytes, %.1f%% of quota)\n", u, (unsigned long long)st.usage,
	       st.quota ? 100.0 * (double)st.usage / (double)st.quota : 0);
	printf("quota       %s (%llu bytes)\n", q, (unsigned long long)st.quota);
	printf("watermarks  high %.2f (%s), low %.2f (%s)\n", st.high, h, st.low, l);
	printf("objects     %llu\n", (unsigned long long)st.objects);
	printf("chunks      %llu of %u KiB\n", (unsigned long long)st.chunks, st.chunk_size >> 10);
	/* Two counts, not a ratio: a chunk just fetched is then read from the
	 * cache in many pieces, so hits / (hits + fetches) says little. */
	printf("reads       %llu chunk reads served from the cache\n",
	       (unsigned long long)st.hits);
	printf("fetches     %llu chunks fetched from the store\n", (unsigned long long)st.misses);
	printf("disk        %s allocated in data files\n", d);
	return 0;
}

struct verify_state {
	const char *dir;
	int data_fd;
	uint32_t chunk_size;
	uint64_t checked, bytes;
	size_t n_bad, cap_bad;
	uint8_t (*bad_ids)[OBJID_LEN];
	uint32_t *bad_chunks;
	char *buf;
};

static int verify_one(void *arg, const uint8_t *id, uint32_t chunk, const struct index_chunk *rec)
{
	struct verify_state *v = arg;
	char rel[64];
	int fd, bad = 0;

	objid_path(id, rel);
	fd = openat(v->data_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		bad = 1;
	} else {
		ssize_t r = pread(fd, v->buf, rec->len, (off_t)((uint64_t)chunk * v->chunk_size));
		if (r != (ssize_t)rec->len) {
			bad = 1;
		} else {
			bad = rec->nblocks && !blocks_ok(rec, v->buf, 0, rec->nblocks - 1, rec->len);
		}
		close(fd);
	}
	v->checked++;
	v->bytes += rec->len;
	if (bad) {
		if (v->n_bad == v->cap_bad) {
			size_t ncap = v->cap_bad ? v->cap_bad * 2 : 64;
			void *a = realloc(v->bad_ids, ncap * OBJID_LEN);
			void *b = a ? realloc(v->bad_chunks, ncap * sizeof(uint32_t)) : NULL;
			if (!a || !b)
				return 1;
			v->bad_ids = a;
			v->bad_chunks = b;
			v->cap_bad = ncap;
		}
		memcpy(v->bad_ids[v->n_bad], id, OBJID_LEN);
		v->bad_chunks[v->n_bad++] = chunk;
	}
	return 0;
}

int cache_cmd_verify(const char *dir)
{
	struct verify_state v = {.dir = dir};
	struct index *ix;
	char path[4096], b[32];
	uint64_t freed = 0;
	int err = open_existing(dir, &ix, &v.chunk_size);

	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/data", dir);
	v.data_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	v.buf = malloc(v.chunk_size);
	if (v.data_fd < 0 || !v.buf) {
		fprintf(stderr, "modelfs: cannot open %s\n", path);
		err = -EIO;
		goto out;
	}
	index_scan_chunks(ix, verify_one, &v);
	if (v.n_bad)
		err = index_chunks_del(ix, (const uint8_t(*)[OBJID_LEN])v.bad_ids, v.bad_chunks,
				       v.n_bad, &freed, NULL, NULL);
	human(v.bytes, b, sizeof(b));
	printf("verified %llu chunks (%s): %zu damaged%s\n", (unsigned long long)v.checked, b,
	       v.n_bad, v.n_bad ? ", dropped from the index (they will be fetched again)" : "");
	if (!err && v.n_bad)
		err = -EIO;
out:
	if (v.data_fd >= 0)
		close(v.data_fd);
	index_close(ix);
	free(v.buf);
	free(v.bad_ids);
	free(v.bad_chunks);
	return err;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	if (flag == FTW_DP)
		return rmdir(p) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(p) < 0 && errno != ENOENT ? -1 : 0;
}

int cache_cmd_clear(const char *dir)
{
	char path[4096];
	const char *parts[] = {"data", "index", "meta"};
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/users.lock", dir);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "modelfs: %s is not a modelfs cache directory\n", dir);
		return -ENOENT;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "modelfs: %s is in use by a running modelfs: unmount first\n", dir);
		close(fd);
		return -EBUSY;
	}
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, parts[i]);
		if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) {
			fprintf(stderr, "modelfs: cannot remove %s: %s\n", path, strerror(errno));
			err = -errno;
		}
	}
	close(fd);
	if (!err)
		printf("cleared %s\n", dir);
	return err;
}
