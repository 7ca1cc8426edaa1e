/* Metrics and health endpoints (metrics.h). libmicrohttpd rather than an
 * HTTP server of our own: Prometheus scrapes from the pod network, and a
 * parser of requests from a network is what a well-kept library is for
 * (docs/design.md). One internal thread serves every connection (a scrape
 * is a few kilobytes), at most METRICS_CONNECTIONS at once, each bounded in
 * time.
 *
 * Threads: the server's thread (answers from atomics and the cache's
 * counters; takes no lock of the read path), the heartbeat thread (a statfs
 * of the mount each second: it passes through the kernel and one of the
 * session's workers, so a wedged session stops it) and the textfile thread
 * (metrics_dir=: writes the text every METRICS_DIR_PERIOD_S). The model
 * table (metrics_per_model) grows under model_lock, taken at open only; its
 * counters are atomics.
 */
#include "metrics.h"
#include "cache.h"
#include "fs.h"
#include "log.h"
#include "stats.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
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
#define METRICS_BODY_MAX (4u << 20) /* 1,024 models of long names fit */
#define MODEL_LABEL_MAX 256         /* bytes of a model's name in its label */
#define HEARTBEAT_MS 1000
#define HEALTHY_MS 5000 /* /healthz fails once the last statfs is older */

static const char *const op_names[MOP_N] = {"lookup",  "getattr", "open",   "read",  "release",
					    "opendir", "readdir", "statfs", "xattr", "other"};

/* The errnos FUSE answers are counted by (a bounded label); the rest: other. */
static const struct {
	int e;
	const char *name;
} errnos[] = {{ENOENT, "ENOENT"}, {EIO, "EIO"},       {ESTALE, "ESTALE"}, {EACCES, "EACCES"},
	      {EROFS, "EROFS"},   {EBADF, "EBADF"},   {EINVAL, "EINVAL"}, {ENOMEM, "ENOMEM"},
	      {ENODATA, "ENODATA"}, {ERANGE, "ERANGE"}, {ENOTSUP, "ENOTSUP"}, {EPERM, "EPERM"},
	      {ENOSPC, "ENOSPC"}, {ENFILE, "ENFILE"}, {0, "other"}};
#define N_ERRNOS (sizeof(errnos) / sizeof(errnos[0]))

/* Process-wide: written by FUSE workers with relaxed atomics, read by the
 * server's thread. */
static struct {
	_Atomic uint64_t bytes;
	_Atomic uint64_t by_errno[N_ERRNOS];
	struct stats_hist h;
} ops[MOP_N];

struct model {
	char *name;
	_Atomic uint64_t opens, passthrough_opens, reads, bytes;
};

struct metrics {
	struct MHD_Daemon *d;
	struct fs *fs;
	char *mountpoint;
	char labels[1100];         /* mount="...",source="..." */
	pthread_t hb, tf;
	int hb_started, tf_started;
	pthread_mutex_t stop_lock; /* with stop_cond: ends the threads' sleeps */
	pthread_cond_t stop_cond;
	int stop;                  /* under stop_lock */
	_Atomic uint64_t beat_ms;  /* CLOCK_MONOTONIC of the last statfs answered */
	double t_start;
	char *file, *tmp;          /* metrics_dir=: DIR/modelfs-ID.prom and its temporary */
	_Atomic uint64_t passthrough_opens;
	int per_model;
	pthread_mutex_t model_lock; /* n_models grows under it; entries never move */
	atomic_uint n_models;
	struct model models[METRICS_MODELS_MAX]; /* [0]: "/other" */
};

uint64_t metrics_now_ns(void)
{
	return stats_now_ns();
}

void metrics_op(enum metrics_op op, uint64_t t0_ns, int err, uint64_t bytes)
{
	uint64_t now = stats_now_ns();

	if ((unsigned)op >= MOP_N)
		op = MOP_OTHER;
	stats_hist_add(&ops[op].h, now > t0_ns ? now - t0_ns : 0);
	if (bytes)
		atomic_fetch_add_explicit(&ops[op].bytes, bytes, memory_order_relaxed);
	if (err) {
		size_t k = 0;
		while (k + 1 < N_ERRNOS && errnos[k].e != err)
			k++;
		atomic_fetch_add_explicit(&ops[op].by_errno[k], 1, memory_order_relaxed);
	}
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

int metrics_dir_check(const char *dir, char *msg, size_t msg_len)
{
	char probe[4096];
	int fd, err;

	if ((size_t)snprintf(probe, sizeof(probe), "%s/.modelfs-probe.%ld", dir, (long)getpid()) >=
	    sizeof(probe)) {
		snprintf(msg, msg_len, "metrics_dir %s: name too long", dir);
		return -ENAMETOOLONG;
	}
	fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		snprintf(msg, msg_len, "metrics_dir %s cannot be written: %s", dir, strerror(errno));
		return err;
	}
	close(fd);
	unlink(probe);
	return 0;
}

/* ---- the text */

struct out {
	char *buf;
	size_t len, cap;
	int failed;
	const char *L;   /* the mount's labels, or "" */
	const char *pfx; /* "" or "modelfs_" before process_* (the textfile) */
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
		if (n < 0 || o->cap >= METRICS_BODY_MAX) {
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

/* One sample: NAME{L,EXTRA} VALUE, either part of the labels possibly empty. */
static void sample(struct out *o, const char *name, const char *extra, const char *value)
{
	int has_l = *o->L != '\0', has_x = extra && *extra;

	put(o, "%s%s%s%s%s%s %s\n", name, has_l || has_x ? "{" : "", o->L,
	    has_l && has_x ? "," : "", has_x ? extra : "", has_l || has_x ? "}" : "", value);
}

static void sample_u(struct out *o, const char *name, const char *extra, uint64_t v)
{
	char s[32];

	snprintf(s, sizeof(s), "%llu", (unsigned long long)v);
	sample(o, name, extra, s);
}

static void sample_d(struct out *o, const char *name, const char *extra, double v)
{
	char s[48];

	snprintf(s, sizeof(s), "%.9g", v);
	sample(o, name, extra, s);
}

/* The length of the UTF-8 sequence at @s (1-4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3
				 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;

	if (n == 2 && s[0] < 0xc2)
		return 0; /* overlong */
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* A label value: backslash, double quote and newline escaped; a byte that
 * is not UTF-8 (a key of some store) is '?', since Prometheus refuses the
 * whole text for one; cut at @cap on a character's boundary. */
static void label_escape(char *out, size_t cap, const char *s)
{
	size_t o = 0;

	while (*s && o + 5 < cap) {
		size_t n = utf8_len((const unsigned char *)s);
		if (*s == '\\' || *s == '"') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if (*s == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (n == 0) {
			out[o++] = '?';
			n = 1;
		} else {
			memcpy(out + o, s, n);
			o += n;
		}
		s += n ? n : 1;
	}
	out[o] = '\0';
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram: NAME_bucket/_sum/_count with @extra labels. */
static void histogram(struct out *o, const char *name, const char *extra,
		      const struct stats_hist *h)
{
	char n[128], x[256];
	uint64_t cum = 0, count;

	snprintf(n, sizeof(n), "%s_bucket", name);
	for (size_t b = 0; b < STATS_BUCKETS; b++) {
		cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
		snprintf(x, sizeof(x), "%s%sle=\"%g\"", extra ? extra : "", extra ? "," : "",
			 stats_bucket_s[b]);
		sample_u(o, n, x, cum);
	}
	/* +Inf is the count, read last: never below a bucket */
	count = atomic_load(&h->count);
	if (count < cum)
		count = cum;
	snprintf(x, sizeof(x), "%s%sle=\"+Inf\"", extra ? extra : "", extra ? "," : "");
	sample_u(o, n, x, count);
	snprintf(n, sizeof(n), "%s_sum", name);
	sample_d(o, n, extra, (double)atomic_load(&h->sum_ns) / 1e9);
	snprintf(n, sizeof(n), "%s_count", name);
	sample_u(o, n, extra, count);
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

static void render_fuse(struct out *o)
{
	char x[64];

	head(o, "modelfs_fuse_operations_total", "counter", "FUSE operations answered, by op.");
	for (int i = 0; i < MOP_N; i++) {
		snprintf(x, sizeof(x), "op=\"%s\"", op_names[i]);
		sample_u(o, "modelfs_fuse_operations_total", x, atomic_load(&ops[i].h.count));
	}
	head(o, "modelfs_fuse_errors_total", "counter",
	     "FUSE operations answered with an error, by op and errno.");
	for (int i = 0; i < MOP_N; i++)
		for (size_t k = 0; k < N_ERRNOS; k++) {
			snprintf(x, sizeof(x), "op=\"%s\",errno=\"%s\"", op_names[i], errnos[k].name);
			sample_u(o, "modelfs_fuse_errors_total", x, atomic_load(&ops[i].by_errno[k]));
		}
	head(o, "modelfs_fuse_operation_duration_seconds", "histogram",
	     "Time from a FUSE request to its answer.");
	for (int i = 0; i < MOP_N; i++) {
		snprintf(x, sizeof(x), "op=\"%s\"", op_names[i]);
		histogram(o, "modelfs_fuse_operation_duration_seconds", x, &ops[i].h);
	}
	head(o, "modelfs_fuse_read_bytes_total", "counter",
	     "Bytes the daemon answered to reads (passthrough reads are the kernel's).");
	sample_u(o, "modelfs_fuse_read_bytes_total", NULL, atomic_load(&ops[MOP_READ].bytes));
}

static void render_backend(struct out *o)
{
	const struct stats_backend *b = &stats_backend;
	char x[96];
	uint64_t bytes = 0;

	head(o, "modelfs_backend_operations_total", "counter",
	     "Store operations (a read, a stat, a whole listing), by op and how they ended.");
	for (int i = 0; i < SB_OTHER; i++)
		for (int r = 0; r < SR_N; r++) {
			snprintf(x, sizeof(x), "op=\"%s\",result=\"%s\"", stats_bop_name[i],
				 stats_result_name[r]);
			sample_u(o, "modelfs_backend_operations_total", x,
				 atomic_load(&b->op[i].result[r]));
		}
	head(o, "modelfs_backend_operation_duration_seconds", "histogram",
	     "Time of a store operation, retries included.");
	for (int i = 0; i < SB_OTHER; i++) {
		snprintf(x, sizeof(x), "op=\"%s\"", stats_bop_name[i]);
		histogram(o, "modelfs_backend_operation_duration_seconds", x, &b->op[i].seconds);
		bytes += atomic_load(&b->op[i].bytes);
	}
	head(o, "modelfs_backend_bytes_total", "counter", "Bytes the store's reads returned.");
	sample_u(o, "modelfs_backend_bytes_total", NULL, bytes);
	head(o, "modelfs_backend_http_requests_total", "counter",
	     "HTTP attempts, by operation and the answer's status class (none: no answer).");
	for (int i = 0; i < SB_N; i++)
		for (int k = 0; k < SH_N; k++) {
			snprintf(x, sizeof(x), "op=\"%s\",status_class=\"%s\"", stats_bop_name[i],
				 stats_http_name[k]);
			sample_u(o, "modelfs_backend_http_requests_total", x,
				 atomic_load(&b->http[i][k]));
		}
	head(o, "modelfs_backend_retries_total", "counter", "HTTP attempts after a request's first.");
	sample_u(o, "modelfs_backend_retries_total", NULL, atomic_load(&b->retries));
	head(o, "modelfs_backend_http_received_bytes_total", "counter",
	     "Body bytes received over HTTP, every attempt.");
	sample_u(o, "modelfs_backend_http_received_bytes_total", NULL, atomic_load(&b->http_bytes));
	head(o, "modelfs_backend_requests_in_flight", "gauge", "HTTP requests being performed.");
	{
		int64_t f = atomic_load(&b->in_flight);
		sample_u(o, "modelfs_backend_requests_in_flight", NULL, f > 0 ? (uint64_t)f : 0);
	}
}

static void render_cache(struct metrics *m, struct out *o)
{
	struct cache_counters cc = {0};
	uint64_t quota = 0, usage = 0;
	double high = 0, low = 0;

	if (m->fs->cache)
		cache_counters(m->fs->cache, &cc);
	head(o, "modelfs_read_bytes_total", "counter",
	     "Bytes of reads served, by origin: the memory pool, the cache disk, or a fetch "
	     "from the store made for the read.");
	sample_u(o, "modelfs_read_bytes_total", "origin=\"memory\"", cc.mem_bytes);
	sample_u(o, "modelfs_read_bytes_total", "origin=\"disk\"", cc.disk_bytes);
	sample_u(o, "modelfs_read_bytes_total", "origin=\"store\"", cc.store_bytes);
	head(o, "modelfs_passthrough_opens_total", "counter",
	     "Opens the kernel reads from the cache file itself (no daemon reads).");
	sample_u(o, "modelfs_passthrough_opens_total", NULL, atomic_load(&m->passthrough_opens));
	head(o, "modelfs_cache_chunk_reads_total", "counter",
	     "Chunk reads served from the cache (hits), by where the chunk was.");
	sample_u(o, "modelfs_cache_chunk_reads_total", "origin=\"memory\"", cc.mem_hits);
	sample_u(o, "modelfs_cache_chunk_reads_total", "origin=\"disk\"",
		 cc.hits > cc.mem_hits ? cc.hits - cc.mem_hits : 0);
	head(o, "modelfs_cache_misses_total", "counter", "Chunks fetched from the store.");
	sample_u(o, "modelfs_cache_misses_total", NULL, cc.misses);
	head(o, "modelfs_cache_fetched_bytes_total", "counter",
	     "Bytes of chunks fetched from the store (readahead and prefetch too).");
	sample_u(o, "modelfs_cache_fetched_bytes_total", NULL, cc.backend_bytes);
	head(o, "modelfs_cache_refetches_total", "counter",
	     "Damaged or vanished chunks (checksum failures) fetched again.");
	sample_u(o, "modelfs_cache_refetches_total", NULL, cc.refetches);
	head(o, "modelfs_cache_uncached_total", "counter",
	     "Fetched chunks not stored (quota, disk full or behind).");
	sample_u(o, "modelfs_cache_uncached_total", NULL, cc.uncached);
	head(o, "modelfs_cache_dropped_total", "counter",
	     "Fetched chunks left out because the cache disk was behind.");
	sample_u(o, "modelfs_cache_dropped_total", NULL, cc.dropped);
	head(o, "modelfs_cache_flight_waits_total", "counter",
	     "Reads that waited for another's fetch of their chunk (single flight).");
	sample_u(o, "modelfs_cache_flight_waits_total", NULL, cc.flight_waits);
	head(o, "modelfs_cache_store_errors_total", "counter",
	     "Writes to the cache disk that failed, by errno (ENOSPC or other).");
	sample_u(o, "modelfs_cache_store_errors_total", "errno=\"ENOSPC\"", cc.store_enospc);
	sample_u(o, "modelfs_cache_store_errors_total", "errno=\"other\"",
		 cc.store_errors > cc.store_enospc ? cc.store_errors - cc.store_enospc : 0);
	head(o, "modelfs_cache_evicted_chunks_total", "counter",
	     "Chunks this daemon's eviction rounds removed.");
	sample_u(o, "modelfs_cache_evicted_chunks_total", NULL, cc.evicted_chunks);
	head(o, "modelfs_cache_evicted_bytes_total", "counter",
	     "Bytes this daemon's eviction rounds removed.");
	sample_u(o, "modelfs_cache_evicted_bytes_total", NULL, cc.evicted_bytes);
	head(o, "modelfs_readahead_chunks_total", "counter", "Chunks queued ahead of readers.");
	sample_u(o, "modelfs_readahead_chunks_total", NULL, cc.ra_chunks);
	head(o, "modelfs_readahead_window_chunks", "gauge",
	     "The last sequential readahead window set, in chunks.");
	sample_u(o, "modelfs_readahead_window_chunks", NULL, cc.ra_window);
	head(o, "modelfs_readahead_sweeps_total", "counter",
	     "Random readers (an mmap of a shard) taken to read a whole file: swept in.");
	sample_u(o, "modelfs_readahead_sweeps_total", NULL, cc.sweeps);
	if (m->fs->cache && cache_quota(m->fs->cache, &quota, &usage, &high) == 0) {
		low = m->fs->opts ? m->fs->opts->cache_low : 0;
		head(o, "modelfs_cache_usage_bytes", "gauge", "Bytes the cache holds (all its mounts).");
		sample_u(o, "modelfs_cache_usage_bytes", NULL, usage);
		head(o, "modelfs_cache_objects", "gauge", "Objects the cache holds chunks of (all its mounts).");
		sample_u(o, "modelfs_cache_objects", NULL, cc.objects);
		head(o, "modelfs_cache_chunks", "gauge", "Chunks the cache holds (all its mounts).");
		sample_u(o, "modelfs_cache_chunks", NULL, cc.chunks);
		head(o, "modelfs_cache_quota_bytes", "gauge", "The cache's quota.");
		sample_u(o, "modelfs_cache_quota_bytes", NULL, quota);
		head(o, "modelfs_cache_high_watermark_bytes", "gauge", "Eviction starts above this.");
		sample_u(o, "modelfs_cache_high_watermark_bytes", NULL, (uint64_t)((double)quota * high));
		if (low > 0) {
			head(o, "modelfs_cache_low_watermark_bytes", "gauge", "Eviction stops below this.");
			sample_u(o, "modelfs_cache_low_watermark_bytes", NULL,
				 (uint64_t)((double)quota * low));
		}
	}
}

static void render_models(struct metrics *m, struct out *o)
{
	unsigned n = atomic_load(&m->n_models);
	char x[MODEL_LABEL_MAX + 16], e[MODEL_LABEL_MAX];
	static const char *const what[] = {"modelfs_model_opens_total",
					   "modelfs_model_read_operations_total",
					   "modelfs_model_read_bytes_total"};
	static const char *const help[] = {"Opens of the model's files.",
					   "Reads the daemon answered for the model's files.",
					   "Bytes the daemon answered for the model's files."};

	if (!m->per_model)
		return;
	for (int w = 0; w < 3; w++) {
		head(o, what[w], "counter", help[w]);
		for (unsigned i = 0; i < n; i++) {
			const struct model *md = &m->models[i];
			label_escape(e, sizeof(e), md->name);
			snprintf(x, sizeof(x), "model=\"%s\"", e);
			sample_u(o, what[w], x,
				 atomic_load(w == 0 ? &md->opens : w == 1 ? &md->reads : &md->bytes));
		}
	}
}

static void render(struct metrics *m, struct out *o, int with_models)
{
	char st[1024], n[64];
	uint64_t now_ms = metrics_now_ns() / 1000000, beat = atomic_load(&m->beat_ms);
	struct rusage ru;
	char x[128];

	head(o, "modelfs_build_info", "gauge", "The daemon's version.");
	snprintf(x, sizeof(x), "version=\"%s\"", MODELFS_VERSION);
	sample_u(o, "modelfs_build_info", x, 1);
	render_fuse(o);
	render_cache(m, o);
	render_backend(o);
	if (with_models)
		render_models(m, o);

	fs_prefetch_status(m->fs, st, sizeof(st));
	head(o, "modelfs_ready", "gauge", "1 once the prefetch is done (ready_file's condition).");
	sample_d(o, "modelfs_ready", NULL, status_value(st, "ready"));
	head(o, "modelfs_ready_seconds", "gauge",
	     "Seconds from the daemon's start to ready (0 until then).");
	sample_d(o, "modelfs_ready_seconds", NULL, status_value(st, "ready_s"));
	head(o, "modelfs_prefetch_bytes", "gauge", "Prefetch progress in bytes, by state.");
	sample_d(o, "modelfs_prefetch_bytes", "state=\"done\"", status_value(st, "bytes_done"));
	sample_d(o, "modelfs_prefetch_bytes", "state=\"total\"", status_value(st, "bytes_total"));
	head(o, "modelfs_prefetch_files", "gauge", "Prefetch progress in files, by state.");
	sample_d(o, "modelfs_prefetch_files", "state=\"done\"", status_value(st, "files_done"));
	sample_d(o, "modelfs_prefetch_files", "state=\"failed\"", status_value(st, "files_failed"));
	sample_d(o, "modelfs_prefetch_files", "state=\"total\"", status_value(st, "files_total"));

	if (m->hb_started) { /* metrics_port or metrics_dir: else there is none */
		head(o, "modelfs_fuse_heartbeat_age_seconds", "gauge",
		     "Seconds since a statfs of the mount was last answered (the /healthz test).");
		sample_d(o, "modelfs_fuse_heartbeat_age_seconds", NULL,
			 now_ms > beat ? (double)(now_ms - beat) / 1000 : 0.0);
	}

	getrusage(RUSAGE_SELF, &ru);
#define PROC(name) (snprintf(n, sizeof(n), "%sprocess_" name, o->pfx), n)
	head(o, PROC("cpu_seconds_total"), "counter", "User and system CPU time of the daemon.");
	sample_d(o, n, NULL,
		 (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
			 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	head(o, PROC("resident_memory_bytes"), "gauge", "Resident memory of the daemon.");
	sample_u(o, n, NULL, proc_field("/proc/self/status", "VmRSS:") * 1024);
	head(o, PROC("threads"), "gauge", "Threads of the daemon.");
	sample_u(o, n, NULL, proc_field("/proc/self/status", "Threads:"));
	head(o, PROC("open_fds"), "gauge", "Open file descriptors of the daemon.");
	sample_u(o, n, NULL, open_fds());
	head(o, PROC("start_time_seconds"), "gauge", "When the daemon started, since the epoch.");
	sample_d(o, n, NULL, m->t_start);
#undef PROC
}

/* The text in a malloc'd buffer: @labels, or none; process_* as @pfx says. */
static int text(struct metrics *m, const char *labels, const char *pfx, int with_models,
		char **out, size_t *len)
{
	struct out o = {.cap = 16384, .L = labels, .pfx = pfx};

	if (!(o.buf = malloc(o.cap)))
		return -ENOMEM;
	render(m, &o, with_models);
	if (o.failed) {
		free(o.buf);
		return -ENOMEM;
	}
	*out = o.buf;
	*len = o.len;
	return 0;
}

int metrics_text(struct metrics *m, char **out, size_t *len)
{
	/* an xattr holds 64 KiB: no per-model series there */
	return text(m, "", "", 0, out, len);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	struct metrics *m = cls;
	struct MHD_Response *r;
	struct out o = {.cap = 1024, .L = "", .pfx = ""};
	unsigned status = MHD_HTTP_OK;
	const char *type = "text/plain; charset=utf-8";
	enum MHD_Result ret;

	(void)version, (void)upload, (void)upload_len, (void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return MHD_NO; /* closes the connection */
	if (strcmp(url, "/metrics") == 0 && text(m, m->labels, "", 1, &o.buf, &o.len) == 0) {
		type = "text/plain; version=0.0.4; charset=utf-8";
	} else if (!(o.buf = malloc(o.cap))) {
		return MHD_NO;
	} else if (strcmp(url, "/metrics") == 0) {
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		put(&o, "the metrics text could not be made (memory)\n");
		return MHD_NO;
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

/* Sleep @ms, or less when stopped. @return 1 when stopped. */
static int nap(struct metrics *m, unsigned ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->stop_lock);
	while (!m->stop && pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &ts) == 0)
		;
	stop = m->stop;
	pthread_mutex_unlock(&m->stop_lock);
	return stop;
}

static void *heartbeat_main(void *arg)
{
	struct metrics *m = arg;

	do {
		struct statfs sf;
		/* blocks while the session is wedged: then beat_ms ages */
		if (statfs(m->mountpoint, &sf) == 0 && sf.f_type == 0x65735546 /* FUSE */)
			atomic_store(&m->beat_ms, metrics_now_ns() / 1000000);
	} while (!nap(m, HEARTBEAT_MS));
	return NULL;
}

/* Write the textfile: a temporary, then rename (node_exporter reads either
 * the old file or the new one, never half of one). */
static void write_textfile(struct metrics *m)
{
	char *buf;
	size_t len, off = 0;
	int fd;

	if (text(m, m->labels, "modelfs_", 1, &buf, &len)) {
		/* no figures rather than old ones that look live */
		log_once(LOG_LVL_WARN, "metrics_dir: the metrics text could not be made (memory)");
		unlink(m->file);
		return;
	}
	/* a name others could plant a link at, in a directory they may write */
	unlink(m->tmp);
	fd = open(m->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_once(LOG_LVL_WARN, "metrics_dir: cannot write %s: %s", m->tmp, strerror(errno));
		free(buf);
		return;
	}
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	free(buf);
	if (close(fd) != 0 || off < len || rename(m->tmp, m->file) != 0) {
		log_once(LOG_LVL_WARN, "metrics_dir: cannot write %s: %s", m->file, strerror(errno));
		unlink(m->tmp);
	}
}

static void *textfile_main(void *arg)
{
	struct metrics *m = arg;

	do
		write_textfile(m);
	while (!nap(m, METRICS_DIR_PERIOD_S * 1000));
	return NULL;
}

/* DIR/modelfs-ID.prom: ID names the mount point (readable, and the same
 * after a restart, so that a new daemon replaces a dead one's file) and a
 * hash of it (two mount points that read alike stay apart). */
static int textfile_names(struct metrics *m, const char *dir)
{
	char id[96];
	uint32_t h = 2166136261u;
	size_t k = 0;

	for (const char *p = m->mountpoint; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	for (const char *p = m->mountpoint; *p && k + 1 < 64; p++) {
		if (*p == '/' && k == 0)
			continue;
		id[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
						 (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
					 ? *p
					 : '_');
	}
	id[k] = '\0';
	if (asprintf(&m->file, "%s/modelfs-%s%s%08x.prom", dir, id, k ? "-" : "", h) < 0) {
		m->file = NULL;
		return -ENOMEM;
	}
	if (asprintf(&m->tmp, "%s/.modelfs-%s%s%08x.prom.tmp", dir, id, k ? "-" : "", h) < 0) {
		m->tmp = NULL;
		return -ENOMEM;
	}
	return 0;
}

int metrics_start(const struct metrics_config *cfg, struct fs *fs, const char *mountpoint,
		  const char *source, struct metrics **out, char *msg, size_t msg_len)
{
	struct metrics *m = calloc(1, sizeof(*m));
	char em[512], es[512];

	*out = NULL;
	if (!m || !(m->mountpoint = strdup(mountpoint)) ||
	    !(m->models[0].name = strdup("/other"))) {
		if (m)
			free(m->mountpoint);
		free(m);
		snprintf(msg, msg_len, "out of memory");
		return -ENOMEM;
	}
	m->fs = fs;
	m->t_start = (double)time(NULL);
	m->per_model = cfg->per_model;
	atomic_store(&m->n_models, 1);
	pthread_mutex_init(&m->model_lock, NULL);
	pthread_mutex_init(&m->stop_lock, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->stop_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	atomic_store(&m->beat_ms, metrics_now_ns() / 1000000); /* mounted: it answered */
	label_escape(em, sizeof(em), mountpoint);
	label_escape(es, sizeof(es), source);
	snprintf(m->labels, sizeof(m->labels), "mount=\"%s\",source=\"%s\"", em, es);
	*out = m;
	if (cfg->listen_fd >= 0) {
		m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
					answer, m, MHD_OPTION_LISTEN_SOCKET, cfg->listen_fd,
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS,
					MHD_OPTION_CONNECTION_TIMEOUT,
					(unsigned)METRICS_CONN_TIMEOUT_S, MHD_OPTION_END);
		if (!m->d) {
			snprintf(msg, msg_len, "the metrics server did not start");
			goto fail;
		}
	}
	if (cfg->dir) {
		if (textfile_names(m, cfg->dir)) {
			snprintf(msg, msg_len, "out of memory");
			goto fail;
		}
		m->tf_started = pthread_create(&m->tf, NULL, textfile_main, m) == 0;
	}
	if (cfg->listen_fd >= 0 || cfg->dir)
		m->hb_started = pthread_create(&m->hb, NULL, heartbeat_main, m) == 0;
	return 0;
fail:
	metrics_stop(m);
	*out = NULL;
	return -EIO;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->stop_lock);
	m->stop = 1;
	pthread_cond_broadcast(&m->stop_cond);
	pthread_mutex_unlock(&m->stop_lock);
	if (m->d)
		MHD_stop_daemon(m->d);
	/* the heartbeat may sit in a statfs of a mount being torn down: the
	 * kernel answers it (ENOTCONN) once the session is gone */
	if (m->hb_started)
		pthread_join(m->hb, NULL);
	if (m->tf_started)
		pthread_join(m->tf, NULL);
	if (m->file) {
		unlink(m->file); /* a mount that is gone has no figures */
		unlink(m->tmp);
	}
	for (unsigned i = 0; i < atomic_load(&m->n_models); i++)
		free(m->models[i].name);
	pthread_mutex_destroy(&m->model_lock);
	pthread_mutex_destroy(&m->stop_lock);
	pthread_cond_destroy(&m->stop_cond);
	free(m->file);
	free(m->tmp);
	free(m->mountpoint);
	free(m);
}

unsigned metrics_model(struct metrics *m, const char *relpath)
{
	/* the reserved names hold a '/': no path component can be one */
	const char *slash = strchr(relpath, '/');
	size_t len = slash ? (size_t)(slash - relpath) : 5;
	const char *name = slash ? relpath : "/root";
	unsigned n, found = 0;

	if (!m || !m->per_model)
		return 0;
	pthread_mutex_lock(&m->model_lock);
	n = atomic_load(&m->n_models);
	for (unsigned i = 1; i < n && !found; i++)
		if (strlen(m->models[i].name) == len && memcmp(m->models[i].name, name, len) == 0)
			found = i;
	if (!found && n < METRICS_MODELS_MAX && (m->models[n].name = strndup(name, len))) {
		found = n;
		/* the entry is whole before the renderer may read it */
		atomic_store(&m->n_models, n + 1);
	}
	pthread_mutex_unlock(&m->model_lock);
	return found; /* 0: the table is full, "/other" */
}

void metrics_model_open(struct metrics *m, unsigned model, int passthrough)
{
	if (!m)
		return;
	if (passthrough)
		atomic_fetch_add_explicit(&m->passthrough_opens, 1, memory_order_relaxed);
	if (m->per_model && model < METRICS_MODELS_MAX)
		atomic_fetch_add_explicit(&m->models[model].opens, 1, memory_order_relaxed);
}

void metrics_model_read(struct metrics *m, unsigned model, uint64_t bytes)
{
	if (!m || !m->per_model || model >= METRICS_MODELS_MAX)
		return;
	atomic_fetch_add_explicit(&m->models[model].reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->models[model].bytes, bytes, memory_order_relaxed);
}
