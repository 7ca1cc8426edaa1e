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
#include <limits.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
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

/* The prefetch service of one mount: a queue of files and 4 workers. The
 * mount-time globs and `modelfs prefetch` requests both feed the queue. */
struct fs_prefetch {
	struct fs *fs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pf_file *q;   /* protected by lock */
	size_t qn, qcap, qhead;
	uint64_t bytes_total, bytes_done;
	size_t files_total, files_done, files_failed;
	size_t startup_end;  /* files_total after the mount-time globs; 0: none */
	int ready;           /* the mount-time prefetch is done (or there was none) */
	int stop;
	pthread_t th[PREFETCH_THREADS], waiter;
	int n_th, has_waiter;
	double t0;
	double ready_s;       /* seconds from the start to ready */
	char last_error[256]; /* protected by lock; shown by `modelfs status` */
};

/* Log a prefetch failure and keep it for `modelfs status`: in a container
 * the log may be nowhere the operator looks. */
static void pf_error(struct fs_prefetch *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void pf_error(struct fs_prefetch *p, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_error("%s", line);
	pthread_mutex_lock(&p->lock);
	snprintf(p->last_error, sizeof(p->last_error), "%s", line);
	pthread_mutex_unlock(&p->lock);
}

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

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *pf_worker(void *arg)
{
	struct fs_prefetch *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pf_file f;
		struct cache_object o;
		int err;

		while (!p->stop && p->qhead == p->qn)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop)
			break;
		f = p->q[p->qhead++];
		pthread_mutex_unlock(&p->lock);
		o = (struct cache_object){p->fs->source_ns, f.key, f.etag, f.size};
		err = cache_prefetch(p->fs->cache, &o);
		if (err && err != -ECANCELED)
			pf_error(p, "prefetch of %s failed: %s", f.key,
				 err == -ENOSPC ? "it does not fit in the cache" : strerror(-err));
		free(f.key);
		pthread_mutex_lock(&p->lock);
		if (err) {
			p->files_failed++;
		} else {
			p->files_done++;
			p->bytes_done += f.size;
		}
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct collect_arg {
	struct fs *fs;
	const char *under;   /* "" or "dir/" or an exact file path */
	int exact;
	const char *globs;   /* NULL: all */
	struct pf_file *v;
	size_t n, cap;
	uint64_t bytes;
	int err;
};

static int collect(void *arg, const char *relpath, const struct tree_attr *a)
{
	struct collect_arg *c = arg;
	struct pf_file *f;

	if (c->exact ? strcmp(relpath, c->under) != 0
		     : strncmp(relpath, c->under, strlen(c->under)) != 0)
		return 0;
	if (c->globs && *c->globs && !matches(c->globs, relpath))
		return 0;
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16;
		struct pf_file *nv = realloc(c->v, ncap * sizeof(*nv));
		if (!nv) {
			c->err = -ENOMEM;
			return 1;
		}
		c->v = nv;
		c->cap = ncap;
	}
	f = &c->v[c->n];
	if (asprintf(&f->key, "%s%s", c->fs->prefix, relpath) < 0) {
		c->err = -ENOMEM;
		return 1;
	}
	memcpy(f->etag, a->etag, sizeof(f->etag));
	f->size = a->size;
	c->bytes += a->size;
	c->n++;
	return 0;
}

int fs_prefetch_add(struct fs *fs, const char *under, int exact, const char *globs,
		    size_t *n_files, uint64_t *n_bytes)
{
	struct fs_prefetch *p = fs->pf;
	struct collect_arg c = {.fs = fs, .under = under, .exact = exact, .globs = globs};
	uint64_t quota, usage;
	double high;
	int err = 0;

	*n_files = 0;
	*n_bytes = 0;
	if (!p)
		return -ENODATA;
	if (cache_quota(fs->cache, &quota, &usage, &high) < 0)
		return -ENODATA; /* no disk cache: nothing to warm */
	if (fs->lazy) {
		/* listing=lazy: what the globs can match is listed first */
		char lit[PATH_MAX];
		const char *g = globs && *globs ? globs : "*";
		while (*g) {
			size_t n = strcspn(g, ":"), k = strcspn(g, "*?[");
			if (k > n)
				k = n;
			snprintf(lit, sizeof(lit), "%s%.*s", under, (int)k, g);
			if (exact)
				snprintf(lit, sizeof(lit), "%s", under);
			if ((err = fs_dir_ready_tree(fs, lit)) != 0)
				return err;
			g += n;
			if (*g == ':')
				g++;
		}
	}
	tree_foreach_file(fs->tree, collect, &c);
	if (c.err) {
		err = c.err;
		goto out;
	}
	if ((double)c.bytes > high * (double)quota) {
		pf_error(p, "prefetch: %zu files, %.2f GiB, do not fit in the cache (quota %.2f GiB, "
			    "evicting above %.2f GiB): not prefetching",
			 c.n, (double)c.bytes / (1 << 30), (double)quota / (1 << 30),
			 high * (double)quota / (1 << 30));
		err = -ENOSPC;
		goto out;
	}
	pthread_mutex_lock(&p->lock);
	if (p->qn + c.n > p->qcap) {
		size_t ncap = (p->qn + c.n) * 2;
		struct pf_file *nq = realloc(p->q, ncap * sizeof(*nq));
		if (!nq) {
			pthread_mutex_unlock(&p->lock);
			err = -ENOMEM;
			goto out;
		}
		p->q = nq;
		p->qcap = ncap;
	}
	memcpy(p->q + p->qn, c.v, c.n * sizeof(*c.v));
	p->qn += c.n;
	p->files_total += c.n;
	p->bytes_total += c.bytes;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	log_info("prefetch: %zu files, %.2f GiB queued", c.n, (double)c.bytes / (1 << 30));
	*n_files = c.n;
	*n_bytes = c.bytes;
	c.n = 0; /* the queue owns the keys now */
out:
	for (size_t i = 0; i < c.n; i++)
		free(c.v[i].key);
	free(c.v);
	return err;
}

int fs_prefetch_status(struct fs *fs, char *buf, size_t len)
{
	struct fs_prefetch *p = fs->pf;
	double dt;
	int n;

	if (!p)
		return snprintf(buf, len, "ready=1\n");
	pthread_mutex_lock(&p->lock);
	dt = mono_s() - p->t0;
	n = snprintf(buf, len,
		     "ready=%d\nfiles_done=%zu\nfiles_failed=%zu\nfiles_total=%zu\n"
		     "bytes_done=%llu\nbytes_total=%llu\nin_flight_files=%zu\nrate_MBps=%.0f\n"
		     "ready_s=%.3f\n%s%s%s",
		     p->ready, p->files_done, p->files_failed, p->files_total,
		     (unsigned long long)p->bytes_done, (unsigned long long)p->bytes_total,
		     p->files_total - p->files_done - p->files_failed,
		     dt > 0 ? (double)p->bytes_done / 1e6 / dt : 0, p->ready_s,
		     *p->last_error ? "error=" : "", p->last_error, *p->last_error ? "\n" : "");
	pthread_mutex_unlock(&p->lock);
	return n;
}

/* Wait for the mount-time batch, report progress, then say ready. */
static void *pf_waiter(void *arg)
{
	struct fs_prefetch *p = arg;
	double t0 = mono_s(), last = t0;
	char status[256];
	size_t failed;
	uint64_t bytes;

	pthread_mutex_lock(&p->lock);
	while (!p->stop && p->files_done + p->files_failed < p->startup_end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		if (mono_s() - last >= 5) {
			last = mono_s();
			snprintf(status, sizeof(status), "STATUS=prefetch %.2f of %.2f GiB, %zu of %zu files",
				 (double)p->bytes_done / (1 << 30), (double)p->bytes_total / (1 << 30),
				 p->files_done, p->startup_end);
			pthread_mutex_unlock(&p->lock);
			log_info("%s", status + 7);
			fs_notify(status);
			pthread_mutex_lock(&p->lock);
		}
	}
	failed = p->files_failed;
	bytes = p->bytes_done;
	if (p->stop) {
		pthread_mutex_unlock(&p->lock);
		return NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (failed) {
		pf_error(p, "prefetch incomplete: %zu of %zu files failed; not ready", failed,
			 p->startup_end);
		fs_notify("STATUS=prefetch failed");
		return NULL;
	}
	{
		double t = mono_s() - t0;
		snprintf(status, sizeof(status),
			 "prefetched %zu files, %.2f GiB in %.1f s (%.0f MB/s): ready", p->startup_end,
			 (double)bytes / (1 << 30), t, t > 0 ? (double)bytes / 1e6 / t : 0);
	}
	log_info("%s", status);
	pthread_mutex_lock(&p->lock);
	p->ready = 1;
	p->ready_s = mono_s() - p->t0;
	pthread_mutex_unlock(&p->lock);
	mark_ready(p->fs, status);
	return NULL;
}

int fs_ready_start(struct fs *fs)
{
	struct fs_prefetch *p = calloc(1, sizeof(*p));
	size_t n;
	uint64_t bytes;
	int err;

	/* not ready until said so; but a daemon that took the mount over
	 * serves what the last one made ready: readiness must not flap */
	if (fs->opts->ready_file && !fs->adopted)
		unlink(fs->opts->ready_file);
	if (!p)
		return -ENOMEM;
	p->fs = fs;
	p->t0 = mono_s();
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (; p->n_th < PREFETCH_THREADS; p->n_th++)
		if (pthread_create(&p->th[p->n_th], NULL, pf_worker, p) != 0)
			break;
	fs->pf = p;
	if (!fs->opts->prefetch || !*fs->opts->prefetch) {
		p->ready = 1;
		mark_ready(fs, "mounted");
		return 0;
	}
	fs_notify("STATUS=prefetching");
	err = fs_prefetch_add(fs, "", 0, fs->opts->prefetch, &n, &bytes);
	if (err == -ENODATA) {
		pf_error(p, "prefetch needs a disk cache (cache_dir); nothing was prefetched");
		fs_notify("STATUS=prefetch impossible: no disk cache");
		return err;
	}
	if (err) {
		fs_notify("STATUS=prefetch refused: the model does not fit in the cache quota");
		return err;
	}
	p->startup_end = n;
	if (pthread_create(&p->waiter, NULL, pf_waiter, p) == 0)
		p->has_waiter = 1;
	return 0;
}

void fs_ready_stop(struct fs *fs)
{
	struct fs_prefetch *p = fs->pf;

	if (!p)
		return;
	cache_cancel(fs->cache); /* a file in flight stops at its next 64 MiB */
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n_th; i++)
		pthread_join(p->th[i], NULL);
	if (p->has_waiter)
		pthread_join(p->waiter, NULL);
	for (size_t i = p->qhead; i < p->qn; i++)
		free(p->q[i].key);
	free(p->q);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	fs->pf = NULL;
}
