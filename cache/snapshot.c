/* Snapshot files: "MFSSNAP1", u64 raw length, u32 CRC-32C of the raw bytes,
 * then one zstd frame. Small models give small snapshots; a prefix with a
 * million keys gives a few MB instead of ~100 MB. */
#include "snapshot.h"
#include "crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <openssl/sha.h>

#define SNAP_MAGIC "MFSSNAP1"
#define SNAP_MAX (1ULL << 32)

struct snap_hdr {
	char magic[8];
	uint64_t raw_len;
	uint32_t crc;
	uint32_t pad;
};

static void snap_path(const char *dir, const char *source_id, char *out, size_t len,
		      const char *suffix)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char hex[33];

	SHA256((const unsigned char *)source_id, strlen(source_id), md);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(out, len, "%s/meta/%s.zst%s", dir, hex, suffix);
}

int snapshot_save(const char *dir, const char *source_id, const void *data, size_t len)
{
	char path[4096], tmp[4200], mdir[4096];
	struct snap_hdr h = {SNAP_MAGIC, len, crc32c(0, data, len), 0};
	size_t bound = ZSTD_compressBound(len), clen;
	void *cbuf;
	int fd, err = 0;

	snprintf(mdir, sizeof(mdir), "%s/meta", dir);
	if (mkdir(mdir, 0700) < 0 && errno != EEXIST)
		return -errno;
	snap_path(dir, source_id, path, sizeof(path), "");
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	cbuf = malloc(bound);
	if (!cbuf)
		return -ENOMEM;
	clen = ZSTD_compress(cbuf, bound, data, len, 3);
	if (ZSTD_isError(clen)) {
		free(cbuf);
		return -EIO;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(cbuf);
		return -errno;
	}
	if (write(fd, &h, sizeof(h)) != (ssize_t)sizeof(h) ||
	    write(fd, cbuf, clen) != (ssize_t)clen || fsync(fd) < 0)
		err = errno ? -errno : -EIO;
	close(fd);
	free(cbuf);
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

int snapshot_load(const char *dir, const char *source_id, void **data, size_t *len)
{
	char path[4096];
	struct snap_hdr h;
	struct stat st;
	void *cbuf = NULL, *raw = NULL;
	size_t got;
	int fd, err = -EPROTO;

	*data = NULL;
	*len = 0;
	snap_path(dir, source_id, path, sizeof(path), "");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(h) ||
	    read(fd, &h, sizeof(h)) != (ssize_t)sizeof(h) || memcmp(h.magic, SNAP_MAGIC, 8) ||
	    h.raw_len > SNAP_MAX)
		goto out;
	cbuf = malloc((size_t)st.st_size - sizeof(h) + 1);
	raw = malloc(h.raw_len + 1);
	if (!cbuf || !raw) {
		err = -ENOMEM;
		goto out;
	}
	if (read(fd, cbuf, (size_t)st.st_size - sizeof(h)) != (ssize_t)(st.st_size - sizeof(h)))
		goto out;
	got = ZSTD_decompress(raw, h.raw_len, cbuf, (size_t)st.st_size - sizeof(h));
	if (ZSTD_isError(got) || got != h.raw_len || crc32c(0, raw, got) != h.crc)
		goto out;
	*data = raw;
	*len = got;
	raw = NULL;
	err = 0;
out:
	close(fd);
	free(cbuf);
	free(raw);
	return err;
}
