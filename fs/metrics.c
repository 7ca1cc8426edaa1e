/* Metrics and health endpoints (metrics.h). libmicrohttpd rather than an
 * HTTP server of our own: Prometheus scrapes from the pod network, and a
 * parser of requests from a network is what a well-kept library is for
 * (docs/design.md). One internal thread serves every connection (a scrape
 * is a few kilobytes), at most METRICS_CONNECTIONS at once, each bounded in
 * time.
 *
 * Threads: the server's thread (answers from atomics and the cache's
 * counters; takes no lock of the read path) and the heartbeat thread (a
 * statfs of the mount each second: it passes through the kernel and one of
 * the session's workers, so a wedged session stops it).
 */
#include "metrics.h"
#include "cache.h"
#include "fs.h"
#include "log.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define METRICS_CONNECTIONS 16
#define METRICS_CONN_TIMEOUT_S 10
#define METRICS_BODY_MAX (64u << 10)
#define HEARTBEAT_MS 1000
#define HEALTHY_MS 5000 /* /healthz fails once the last statfs is older */

/* Latency buckets, seconds: 50 us to 60 s, enough to resolve P50-P99 of
 * page-cache-fast and store-slow reads alike. */
static const double bucket_s[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
				  0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
				  2.5,     5,      10,      30,     60};
#define N_BUCKETS (sizeof(bucket_s) / sizeof(bucket_s[0]))

static const char *const op_names[MOP_N] = {"lookup",  "getattr", "open",   "read",  "release",
					    "opendir", "readdir", "statfs", "xattr", "other"};

/* Process-wide: written by FUSE workers with relaxed atomics, read by the
 * server's thread. */
static struct {
	_Atomic uint64_t count, errors, sum_ns, bytes;
	_Atomic uint64_t bucket[N_BUCKETS]; /* not cumulative: summed when written out */
} ops[MOP_N];

struct metrics {
	struct MHD_Daemon *d;
	struct fs *fs;
	char *mountpoint;
	char labels[1100];         /* mount="...",source="..." */
	pthread_t hb;
	int hb_started;
	atomic_int stop;
	_Atomic uint64_t beat_ms;  /* CLOCK_MONOTONIC of the last statfs answered */
	_Atomic uint64_t beats, beat_failures;
	double t_start;
};

uint64_t metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void metrics_op(enum metrics_op op, uint64_t t0_ns, int err, uint64_t bytes)
{
	uint64_t dt = metrics_now_ns() - t0_ns;
	double s = (double)dt / 1e9;
	size_t b = 0;

	if ((unsigned)op >= MOP_N)
		op = MOP_OTHER;
	while (b < N_BUCKETS && s > bucket_s[b])
		b++;
	atomic_fetch_add_explicit(&ops[op].count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ops[op].sum_ns, dt, memory_order_relaxed);
	if (bytes)
		atomic_fetch_add_explicit(&ops[op].bytes, bytes, memory_order_relaxed);
	if (err)
		atomic_fetch_add_explicit(&ops[op].errors, 1, memory_order_relaxed);
	if (b < N_BUCKETS)
		atomic_fetch_add_explicit(&ops[op].bucket[b], 1, memory_order_relaxed);
}

int metrics_listen(const char *addr, int port, char *msg, size_t msg_len)
{
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int v6 = strchr(addr, ':') != NULL, fd, one = 1, err;

	if (v6 ? inet_pton(AF_INET6, addr, &sa6.sin6_addr) != 1
	       : inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		snprintf(msg, msg_len, "metrics_addr '%s' is not an IP address", addr);
		return -EINVAL;
	}
	fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if ((v6 ? bind(fd, (struct sockaddr *)&sa6, sizeof(sa6))
		: bind(fd, (struct sockaddr *)&sa, sizeof(sa))) != 0 ||
	    listen(fd, 64) != 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	snprintf(msg, msg_len, "metrics_port %d on %s cannot be used: %s", port, addr,
		 strerror(errno));
	if (fd >= 0)
		close(fd);
	return err;
}

/* ---- the text */

struct out {
	char *buf;
	size_t len, cap;
	int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		if (n < 0 || o->cap >= METRICS_BODY_MAX * 16) {
			o->failed = 1;
			return;
		}
		char *nb = realloc(o->buf, o->cap * 2);
		if (!nb) {
			o->failed = 1;
			return;
		}
		o->buf = nb;
		o->cap *= 2;
	}
}

/* A label value: backslash, double quote and newline escaped. */
static void label_escape(char *out, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s && o + 3 < cap; s++) {
		if (*s == '\\' || *s == '"') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if (*s == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t proc_field(const char *path, const char *key)
{
	char line[256];
	size_t kl = strlen(key);
	uint64_t v = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0) {
			v = strtoull(line + kl, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static unsigned open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	if (!d)
		return 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n > 2 ? n - 3 : 0; /* ".", ".." and the directory's own fd */
}

/* key=value of fs_prefetch_status's lines */
static double status_value(const char *st, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\n%s=", key);
	p = strstr(st, k);
	if (!p && strncmp(st, k + 1, strlen(k + 1)) == 0)
		p = st - 1;
	return p ? strtod(p + strlen(k), NULL) : 0;
}

static void render(struct metrics *m, struct out *o)
{
	const char *L = m->labels;
	struct cache_counters cc = {0};
	uint64_t quota = 0, usage = 0, now_ms = metrics_now_ns() / 1000000;
	double high = 0;
	char st[1024];
	struct rusage ru;

	head(o, "modelfs_build_info", "gauge", "The daemon's version.");
	put(o, "modelfs_build_info{%s,version=\"%s\"} 1\n", L, MODELFS_VERSION);

	head(o, "modelfs_fuse_operations_total", "counter", "FUSE operations answered, by op.");
	for (int i = 0; i < MOP_N; i++)
		put(o, "modelfs_fuse_operations_total{%s,op=\"%s\"} %llu\n", L, op_names[i],
		    (unsigned long long)atomic_load(&ops[i].count));
	head(o, "modelfs_fuse_errors_total", "counter", "FUSE operations answered with an error.");
	for (int i = 0; i < MOP_N; i++)
		put(o, "modelfs_fuse_errors_total{%s,op=\"%s\"} %llu\n", L, op_names[i],
		    (unsigned long long)atomic_load(&ops[i].errors));
	head(o, "modelfs_fuse_operation_duration_seconds", "histogram",
	     "Time from a FUSE request to its answer.");
	for (int i = 0; i < MOP_N; i++) {
		uint64_t cum = 0, count = atomic_load(&ops[i].count);
		for (size_t b = 0; b < N_BUCKETS; b++) {
			cum += atomic_load(&ops[i].bucket[b]);
			put(o, "modelfs_fuse_operation_duration_seconds_bucket{%s,op=\"%s\",le=\"%g\"} "
			    "%llu\n", L, op_names[i], bucket_s[b], (unsigned long long)cum);
		}
		/* +Inf is the count, read last: never below a bucket */
		if (count < cum)
			count = cum;
		put(o, "modelfs_fuse_operation_duration_seconds_bucket{%s,op=\"%s\",le=\"+Inf\"} %llu\n",
		    L, op_names[i], (unsigned long long)count);
		put(o, "modelfs_fuse_operation_duration_seconds_sum{%s,op=\"%s\"} %.9f\n", L,
		    op_names[i], (double)atomic_load(&ops[i].sum_ns) / 1e9);
		put(o, "modelfs_fuse_operation_duration_seconds_count{%s,op=\"%s\"} %llu\n", L,
		    op_names[i], (unsigned long long)count);
	}
	head(o, "modelfs_read_bytes_total", "counter",
	     "Bytes answered to reads by the daemon (passthrough reads are the kernel's).");
	put(o, "modelfs_read_bytes_total{%s} %llu\n", L,
	    (unsigned long long)atomic_load(&ops[MOP_READ].bytes));

	if (m->fs->cache)
		cache_counters(m->fs->cache, &cc);
	head(o, "modelfs_cache_chunk_reads_total", "counter",
	     "Chunk reads served from the cache, by where the chunk was.");
	put(o, "modelfs_cache_chunk_reads_total{%s,origin=\"memory\"} %llu\n", L,
	    (unsigned long long)cc.mem_hits);
	put(o, "modelfs_cache_chunk_reads_total{%s,origin=\"disk\"} %llu\n", L,
	    (unsigned long long)(cc.hits - cc.mem_hits));
	head(o, "modelfs_cache_misses_total", "counter", "Chunks fetched from the store.");
	put(o, "modelfs_cache_misses_total{%s} %llu\n", L, (unsigned long long)cc.misses);
	head(o, "modelfs_backend_bytes_total", "counter", "Bytes fetched from the store.");
	put(o, "modelfs_backend_bytes_total{%s} %llu\n", L, (unsigned long long)cc.backend_bytes);
	head(o, "modelfs_cache_refetches_total", "counter",
	     "Damaged or vanished chunks (checksum failures) fetched again.");
	put(o, "modelfs_cache_refetches_total{%s} %llu\n", L, (unsigned long long)cc.refetches);
	head(o, "modelfs_cache_uncached_total", "counter",
	     "Fetched chunks not stored (quota, disk full or behind).");
	put(o, "modelfs_cache_uncached_total{%s} %llu\n", L, (unsigned long long)cc.uncached);
	head(o, "modelfs_cache_dropped_total", "counter",
	     "Fetched chunks left out because the cache disk was behind.");
	put(o, "modelfs_cache_dropped_total{%s} %llu\n", L, (unsigned long long)cc.dropped);
	if (m->fs->cache && cache_quota(m->fs->cache, &quota, &usage, &high) == 0) {
		head(o, "modelfs_cache_usage_bytes", "gauge", "Bytes the cache holds (all its mounts).");
		put(o, "modelfs_cache_usage_bytes{%s} %llu\n", L, (unsigned long long)usage);
		head(o, "modelfs_cache_quota_bytes", "gauge", "The cache's quota.");
		put(o, "modelfs_cache_quota_bytes{%s} %llu\n", L, (unsigned long long)quota);
		head(o, "modelfs_cache_high_watermark_bytes", "gauge", "Eviction starts above this.");
		put(o, "modelfs_cache_high_watermark_bytes{%s} %.0f\n", L, (double)quota * high);
	}

	fs_prefetch_status(m->fs, st, sizeof(st));
	head(o, "modelfs_ready", "gauge", "1 once the prefetch is done (ready_file's condition).");
	put(o, "modelfs_ready{%s} %.0f\n", L, status_value(st, "ready"));
	head(o, "modelfs_prefetch_bytes", "gauge", "Prefetch progress in bytes, by state.");
	put(o, "modelfs_prefetch_bytes{%s,state=\"done\"} %.0f\n", L, status_value(st, "bytes_done"));
	put(o, "modelfs_prefetch_bytes{%s,state=\"total\"} %.0f\n", L,
	    status_value(st, "bytes_total"));
	head(o, "modelfs_prefetch_files", "gauge", "Prefetch progress in files, by state.");
	put(o, "modelfs_prefetch_files{%s,state=\"done\"} %.0f\n", L, status_value(st, "files_done"));
	put(o, "modelfs_prefetch_files{%s,state=\"failed\"} %.0f\n", L,
	    status_value(st, "files_failed"));
	put(o, "modelfs_prefetch_files{%s,state=\"total\"} %.0f\n", L,
	    status_value(st, "files_total"));

	head(o, "modelfs_fuse_heartbeat_age_seconds", "gauge",
	     "Seconds since a statfs of the mount was last answered (the /healthz test).");
	{
		uint64_t beat = atomic_load(&m->beat_ms);
		put(o, "modelfs_fuse_heartbeat_age_seconds{%s} %.3f\n", L,
		    now_ms > beat ? (double)(now_ms - beat) / 1000 : 0.0);
	}

	getrusage(RUSAGE_SELF, &ru);
	head(o, "process_cpu_seconds_total", "counter", "User and system CPU time of the daemon.");
	put(o, "process_cpu_seconds_total{%s} %.3f\n", L,
	    (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	head(o, "process_resident_memory_bytes", "gauge", "Resident memory of the daemon.");
	put(o, "process_resident_memory_bytes{%s} %llu\n", L,
	    (unsigned long long)proc_field("/proc/self/status", "VmRSS:") * 1024);
	head(o, "process_threads", "gauge", "Threads of the daemon.");
	put(o, "process_threads{%s} %llu\n", L,
	    (unsigned long long)proc_field("/proc/self/status", "Threads:"));
	head(o, "process_open_fds", "gauge", "Open file descriptors of the daemon.");
	put(o, "process_open_fds{%s} %u\n", L, open_fds());
	head(o, "process_start_time_seconds", "gauge", "When the daemon started, since the epoch.");
	put(o, "process_start_time_seconds{%s} %.0f\n", L, m->t_start);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	struct metrics *m = cls;
	struct MHD_Response *r;
	struct out o = {0};
	unsigned status = MHD_HTTP_OK;
	const char *type = "text/plain; charset=utf-8";
	enum MHD_Result ret;

	(void)version, (void)upload, (void)upload_len, (void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return MHD_NO; /* closes the connection */
	o.cap = 16384;
	o.buf = malloc(o.cap);
	if (!o.buf)
		return MHD_NO;
	if (strcmp(url, "/metrics") == 0) {
		render(m, &o);
		type = "text/plain; version=0.0.4; charset=utf-8";
	} else if (strcmp(url, "/healthz") == 0) {
		uint64_t beat = atomic_load(&m->beat_ms), now = metrics_now_ns() / 1000000;
		uint64_t age = now > beat ? now - beat : 0;
		if (age > HEALTHY_MS)
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
		put(&o, "%s: the mount answered %.1f s ago\n", status == MHD_HTTP_OK ? "ok" : "wedged",
		    (double)age / 1000);
	} else if (strcmp(url, "/readyz") == 0) {
		char st[1024];
		fs_prefetch_status(m->fs, st, sizeof(st));
		if (status_value(st, "ready") < 1)
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
		put(&o, "%s", st);
	} else {
		status = MHD_HTTP_NOT_FOUND;
		put(&o, "not found: /metrics, /healthz, /readyz\n");
	}
	if (o.failed) {
		free(o.buf);
		return MHD_NO;
	}
	r = MHD_create_response_from_buffer(o.len, o.buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(o.buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void *heartbeat_main(void *arg)
{
	struct metrics *m = arg;

	while (!atomic_load(&m->stop)) {
		struct statfs sf;
		struct timespec ts = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000000L};
		/* blocks while the session is wedged: then beat_ms ages */
		if (statfs(m->mountpoint, &sf) == 0 && sf.f_type == 0x65735546 /* FUSE */) {
			atomic_store(&m->beat_ms, metrics_now_ns() / 1000000);
			atomic_fetch_add(&m->beats, 1);
		} else {
			atomic_fetch_add(&m->beat_failures, 1);
		}
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int metrics_start(int fd, struct fs *fs, const char *mountpoint, const char *source,
		  struct metrics **out, char *msg, size_t msg_len)
{
	struct metrics *m = calloc(1, sizeof(*m));
	char em[512], es[512];

	*out = NULL;
	if (!m || !(m->mountpoint = strdup(mountpoint))) {
		free(m);
		return -ENOMEM;
	}
	m->fs = fs;
	m->t_start = (double)time(NULL);
	atomic_store(&m->beat_ms, metrics_now_ns() / 1000000); /* mounted: it answered */
	label_escape(em, sizeof(em), mountpoint);
	label_escape(es, sizeof(es), source);
	snprintf(m->labels, sizeof(m->labels), "mount=\"%s\",source=\"%s\"", em, es);
	m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
				answer, m, MHD_OPTION_LISTEN_SOCKET, fd,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_CONN_TIMEOUT_S,
				MHD_OPTION_END);
	if (!m->d) {
		snprintf(msg, msg_len, "the metrics server did not start");
		free(m->mountpoint);
		free(m);
		return -EIO;
	}
	m->hb_started = pthread_create(&m->hb, NULL, heartbeat_main, m) == 0;
	*out = m;
	return 0;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	atomic_store(&m->stop, 1);
	MHD_stop_daemon(m->d);
	/* the heartbeat may sit in a statfs of a mount being torn down: the
	 * kernel answers it (ENOTCONN) once the session is gone */
	if (m->hb_started)
		pthread_join(m->hb, NULL);
	free(m->mountpoint);
	free(m);
}
