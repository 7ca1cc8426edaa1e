/* Prefetch at mount and the readiness signal.
 *
 * With prefetch=GLOBS the daemon warms every matching file into the disk
 * cache right after the mount is live, 4 files at a time, each in runs of 64
 * MiB (one streaming GET each); reads that users wait for go first (the cache
 * gives prefetching at most its share of the fetch slots). When every byte is
 * cached and recorded, the model is ready: ready_file is created and systemd
 * gets READY=1 (NOTIFY_SOCKET, Type=notify). Without prefetch the mount is
 * ready as soon as it is live. A model larger than the cache quota is refused
 * before fetching, not after thrashing the cache.
 */
#include "fs.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PREFETCH_THREADS 4

struct pf_file {
	char *key;
	char etag[BACKEND_ETAG_MAX];
	uint64_t size;
};

struct pf {
	struct fs *fs;
	struct pf_file *files;
	size_t n, cap;
	_Atomic size_t next, done_files;
	_Atomic uint64_t done_bytes;
	atomic_int failed;
	uint64_t total;
	int err;
};

void fs_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len;
	int fd;

	if (!path || !*path || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sa.sun_path))
		return;
	len = strlen(path);
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		log_debug("NOTIFY_SOCKET %s: %s", path, strerror(errno));
	close(fd);
}

static void mark_ready(struct fs *fs, const char *status)
{
	char msg[512];

	if (fs->opts->ready_file) {
		int fd = open(fs->opts->ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			log_error("cannot create ready_file %s: %s", fs->opts->ready_file,
				  strerror(errno));
		} else {
			if (write(fd, "ready\n", 6) != 6)
				log_error("cannot write ready_file %s", fs->opts->ready_file);
			close(fd);
		}
	}
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
	fs_notify(msg);
}

static int matches(const char *patterns, const char *relpath)
{
	const char *p = patterns;

	while (*p) {
		const char *e = strchr(p, ':');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char pat[1024];
		if (n > 0 && n < sizeof(pat)) {
			memcpy(pat, p, n);
			pat[n] = '\0';
			if (fnmatch(pat, relpath, 0) == 0)
				return 1;
		}
		p += n + (e ? 1 : 0);
	}
	return 0;
}

static int collect(void *arg, const char *relpath, const struct tree_attr *a)
{
	struct pf *pf = arg;
	struct pf_file *f;

	if (!matches(pf->fs->opts->prefetch, relpath))
		return 0;
	if (pf->n == pf->cap) {
		size_t ncap = pf->cap ? pf->cap * 2 : 16;
		struct pf_file *nf = realloc(pf->files, ncap * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		pf->files = nf;
		pf->cap = ncap;
	}
	f = &pf->files[pf->n];
	if (asprintf(&f->key, "%s%s", pf->fs->prefix, relpath) < 0)
		return -ENOMEM;
	memcpy(f->etag, a->etag, sizeof(f->etag));
	f->size = a->size;
	pf->total += a->size;
	pf->n++;
	return 0;
}

static void *pf_worker(void *arg)
{
	struct pf *pf = arg;
	size_t i;

	while ((i = atomic_fetch_add(&pf->next, 1)) < pf->n) {
		struct pf_file *f = &pf->files[i];
		struct cache_object o = {pf->fs->source_ns, f->key, f->etag, f->size};
		int err = cache_prefetch(pf->fs->cache, &o);
		if (err) {
			log_error("prefetch of %s failed: %s", f->key,
				  err == -ENOSPC ? "it does not fit in the cache" : strerror(-err));
			atomic_store(&pf->failed, 1);
			continue;
		}
		atomic_fetch_add(&pf->done_bytes, f->size);
		atomic_fetch_add(&pf->done_files, 1);
	}
	return NULL;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *pf_main(void *arg)
{
	struct fs *fs = arg;
	struct pf pf = {.fs = fs};
	pthread_t th[PREFETCH_THREADS];
	uint64_t quota, usage;
	double high, t0 = mono_s(), t;
	int n_th = 0, err;
	char status[256];

	err = tree_foreach_file(fs->tree, collect, &pf);
	if (err) {
		log_error("prefetch: %s", strerror(-err));
		goto out;
	}
	if (cache_quota(fs->cache, &quota, &usage, &high) < 0) {
		log_error("prefetch needs a disk cache (cache_dir); nothing was prefetched");
		fs_notify("STATUS=prefetch impossible: no disk cache");
		goto out;
	}
	if ((double)pf.total > high * (double)quota) {
		log_error("prefetch: %zu files, %.2f GiB, do not fit in the cache (quota %.2f GiB, "
			  "evicting above %.2f GiB): not prefetching",
			  pf.n, (double)pf.total / (1 << 30), (double)quota / (1 << 30),
			  high * (double)quota / (1 << 30));
		fs_notify("STATUS=prefetch refused: the model does not fit in the cache quota");
		goto out;
	}
	log_info("prefetch: %zu files, %.2f GiB", pf.n, (double)pf.total / (1 << 30));
	for (; n_th < PREFETCH_THREADS && (size_t)n_th < pf.n; n_th++)
		if (pthread_create(&th[n_th], NULL, pf_worker, &pf) != 0)
			break;
	/* progress every 5 s while the workers run */
	while (atomic_load(&pf.next) < pf.n + (size_t)n_th) {
		struct timespec ts = {0, 200 * 1000 * 1000};
		static double last;
		nanosleep(&ts, NULL);
		t = mono_s();
		if (t - last >= 5) {
			uint64_t b = atomic_load(&pf.done_bytes);
			last = t;
			snprintf(status, sizeof(status), "STATUS=prefetch %.2f of %.2f GiB, %zu of %zu files",
				 (double)b / (1 << 30), (double)pf.total / (1 << 30),
				 atomic_load(&pf.done_files), pf.n);
			log_info("%s", status + 7);
			fs_notify(status);
		}
		if (atomic_load(&pf.next) >= pf.n)
			break;
	}
	for (int i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	t = mono_s() - t0;
	if (atomic_load(&pf.failed)) {
		log_error("prefetch incomplete: %zu of %zu files cached; not ready",
			  atomic_load(&pf.done_files), pf.n);
		fs_notify("STATUS=prefetch failed");
		goto out;
	}
	snprintf(status, sizeof(status), "prefetched %zu files, %.2f GiB in %.1f s (%.0f MB/s): ready",
		 pf.n, (double)pf.total / (1 << 30), t, t > 0 ? (double)pf.total / 1e6 / t : 0);
	log_info("%s", status);
	mark_ready(fs, status);
out:
	for (size_t i = 0; i < pf.n; i++)
		free(pf.files[i].key);
	free(pf.files);
	return NULL;
}

int fs_ready_start(struct fs *fs, pthread_t *th)
{
	if (fs->opts->ready_file)
		unlink(fs->opts->ready_file); /* not ready until said so */
	if (!fs->opts->prefetch || !*fs->opts->prefetch) {
		mark_ready(fs, "mounted");
		return 0;
	}
	fs_notify("STATUS=prefetching");
	return pthread_create(th, NULL, pf_main, fs) == 0 ? 1 : -EAGAIN;
}
