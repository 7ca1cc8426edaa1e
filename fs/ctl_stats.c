/* "modelfs stats MOUNT [--watch [SEC]] [-n COUNT]": the mount's metrics in a
 * terminal, for people without Prometheus. The daemon hands its Prometheus
 * text (without labels) through the user.modelfs.metrics xattr of the mount
 * (the control channel of control.c: no port, no socket); this side parses
 * it and prints totals, or with --watch one line of rates per interval,
 * quantiles of the interval's reads included. */
#include "fs.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define XATTR_TEXT_MAX (64u << 10) /* the kernel's largest xattr value */

struct sample {
	char *key; /* name{labels} as written */
	double v;
};

struct figures {
	struct sample *s;
	size_t n;
	char *text;
};

static void figures_free(struct figures *f)
{
	free(f->s);
	free(f->text);
	memset(f, 0, sizeof(*f));
}

/* Parse the text in place: every line that is not a comment is KEY VALUE. */
static int figures_read(const char *mnt, struct figures *f)
{
	ssize_t n;
	size_t cap = 0;
	char *line, *save = NULL;

	memset(f, 0, sizeof(*f));
	if (!(f->text = malloc(XATTR_TEXT_MAX + 1)))
		return -ENOMEM;
	n = getxattr(mnt, "user.modelfs.metrics", f->text, XATTR_TEXT_MAX);
	if (n < 0) {
		int err = -errno;
		figures_free(f);
		return err;
	}
	f->text[n] = '\0';
	for (line = strtok_r(f->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strrchr(line, ' ');
		if (line[0] == '#' || !sp)
			continue;
		*sp = '\0';
		if (f->n == cap) {
			size_t nc = cap ? cap * 2 : 512;
			struct sample *ns = realloc(f->s, nc * sizeof(*ns));
			if (!ns) {
				figures_free(f);
				return -ENOMEM;
			}
			f->s = ns;
			cap = nc;
		}
		f->s[f->n++] = (struct sample){line, strtod(sp + 1, NULL)};
	}
	return 0;
}

static double get(const struct figures *f, const char *key)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->s[i].key, key) == 0)
			return f->s[i].v;
	return 0;
}

/* The sum of every sample whose key starts with @prefix. */
static double sum(const struct figures *f, const char *prefix)
{
	size_t l = strlen(prefix);
	double t = 0;

	for (size_t i = 0; i < f->n; i++)
		if (strncmp(f->s[i].key, prefix, l) == 0)
			t += f->s[i].v;
	return t;
}

/* The @q quantile of histogram @name{@sel,le=...} from its buckets (as
 * Prometheus's histogram_quantile: linear within a bucket), of the counts
 * in @now less those in @then (NULL: all). NAN when there are none. */
static double quantile(const struct figures *now, const struct figures *then, const char *name,
		       const char *sel, double q)
{
	char pfx[256];
	size_t l;
	double total, prev_le = 0, prev_c = 0;

	snprintf(pfx, sizeof(pfx), "%s_bucket{%s,le=\"", name, sel);
	l = strlen(pfx);
	{
		char inf[300];
		snprintf(inf, sizeof(inf), "%s+Inf\"}", pfx);
		total = get(now, inf) - (then ? get(then, inf) : 0);
	}
	if (total <= 0)
		return NAN;
	for (size_t i = 0; i < now->n; i++) {
		const char *k = now->s[i].key;
		double le, c;
		if (strncmp(k, pfx, l) != 0 || strncmp(k + l, "+Inf", 4) == 0)
			continue;
		le = strtod(k + l, NULL);
		c = now->s[i].v - (then ? get(then, k) : 0);
		if (c >= q * total) {
			if (c <= prev_c)
				return le;
			return prev_le + (le - prev_le) * (q * total - prev_c) / (c - prev_c);
		}
		prev_le = le;
		prev_c = c;
	}
	return prev_le; /* beyond the last bound */
}

static const char *human(double b, char *buf, size_t len)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;

	while (b >= 1024 && u < 4) {
		b /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
	return buf;
}

static const char *ms(double s, char *buf, size_t len)
{
	if (isnan(s))
		snprintf(buf, len, "-");
	else if (s < 0.001)
		snprintf(buf, len, "%.0f us", s * 1e6);
	else if (s < 1)
		snprintf(buf, len, "%.1f ms", s * 1e3);
	else
		snprintf(buf, len, "%.2f s", s);
	return buf;
}

#define FUSE_LAT "modelfs_fuse_operation_duration_seconds"
#define STORE_LAT "modelfs_backend_operation_duration_seconds"

static void totals(const char *mnt, const struct figures *f)
{
	char a[32], b[32], c[32], d[32];

	printf("modelfs stats %s\n", mnt);
	printf("  reads     %.0f answered, %s, errors %.0f; latency P50 %s, P90 %s, P99 %s\n",
	       get(f, "modelfs_fuse_operations_total{op=\"read\"}"),
	       human(get(f, "modelfs_fuse_read_bytes_total"), a, sizeof(a)),
	       sum(f, "modelfs_fuse_errors_total{op=\"read\","),
	       ms(quantile(f, NULL, FUSE_LAT, "op=\"read\"", 0.5), b, sizeof(b)),
	       ms(quantile(f, NULL, FUSE_LAT, "op=\"read\"", 0.9), c, sizeof(c)),
	       ms(quantile(f, NULL, FUSE_LAT, "op=\"read\"", 0.99), d, sizeof(d)));
	printf("  served    memory %s, disk %s, store %s; passthrough opens %.0f\n",
	       human(get(f, "modelfs_read_bytes_total{origin=\"memory\"}"), a, sizeof(a)),
	       human(get(f, "modelfs_read_bytes_total{origin=\"disk\"}"), b, sizeof(b)),
	       human(get(f, "modelfs_read_bytes_total{origin=\"store\"}"), c, sizeof(c)),
	       get(f, "modelfs_passthrough_opens_total"));
	printf("  cache     %s of %s (high %s); hits %.0f, misses %.0f, single-flight waits %.0f\n",
	       human(get(f, "modelfs_cache_usage_bytes"), a, sizeof(a)),
	       human(get(f, "modelfs_cache_quota_bytes"), b, sizeof(b)),
	       human(get(f, "modelfs_cache_high_watermark_bytes"), c, sizeof(c)),
	       sum(f, "modelfs_cache_chunk_reads_total"), get(f, "modelfs_cache_misses_total"),
	       get(f, "modelfs_cache_flight_waits_total"));
	printf("            evicted %.0f chunks (%s), refetched %.0f, store errors %.0f "
	       "(ENOSPC %.0f)\n",
	       get(f, "modelfs_cache_evicted_chunks_total"),
	       human(get(f, "modelfs_cache_evicted_bytes_total"), a, sizeof(a)),
	       get(f, "modelfs_cache_refetches_total"),
	       sum(f, "modelfs_cache_store_errors_total"),
	       get(f, "modelfs_cache_store_errors_total{errno=\"ENOSPC\"}"));
	printf("  store     reads %.0f (%s; P50 %s, P99 %s), failed %.0f; HTTP 2xx %.0f, 4xx %.0f, "
	       "5xx %.0f, no answer %.0f; retries %.0f, in flight %.0f\n",
	       sum(f, "modelfs_backend_operations_total{op=\"read\""),
	       human(get(f, "modelfs_backend_bytes_total"), a, sizeof(a)),
	       ms(quantile(f, NULL, STORE_LAT, "op=\"read\"", 0.5), b, sizeof(b)),
	       ms(quantile(f, NULL, STORE_LAT, "op=\"read\"", 0.99), c, sizeof(c)),
	       sum(f, "modelfs_backend_operations_total{op=\"read\"") -
		   get(f, "modelfs_backend_operations_total{op=\"read\",result=\"ok\"}"),
	       get(f, "modelfs_backend_http_requests_total{status_class=\"2xx\"}"),
	       get(f, "modelfs_backend_http_requests_total{status_class=\"4xx\"}"),
	       get(f, "modelfs_backend_http_requests_total{status_class=\"5xx\"}"),
	       get(f, "modelfs_backend_http_requests_total{status_class=\"none\"}"),
	       get(f, "modelfs_backend_retries_total"), get(f, "modelfs_backend_requests_in_flight"));
	printf("  prefetch  %s; files %.0f/%.0f (failed %.0f), %s of %s",
	       get(f, "modelfs_ready") >= 1 ? "ready" : "not ready",
	       get(f, "modelfs_prefetch_files{state=\"done\"}"),
	       get(f, "modelfs_prefetch_files{state=\"total\"}"),
	       get(f, "modelfs_prefetch_files{state=\"failed\"}"),
	       human(get(f, "modelfs_prefetch_bytes{state=\"done\"}"), a, sizeof(a)),
	       human(get(f, "modelfs_prefetch_bytes{state=\"total\"}"), b, sizeof(b)));
	if (get(f, "modelfs_ready") >= 1 && get(f, "modelfs_ready_seconds") > 0)
		printf(", ready after %.1f s", get(f, "modelfs_ready_seconds"));
	printf("\n  daemon    RSS %s, %.0f threads, %.0f fds, CPU %.2f s\n",
	       human(get(f, "process_resident_memory_bytes"), a, sizeof(a)),
	       get(f, "process_threads"), get(f, "process_open_fds"),
	       get(f, "process_cpu_seconds_total"));
}

static volatile sig_atomic_t stop_watch;

static void on_signal(int sig)
{
	(void)sig;
	stop_watch = 1;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double delta(const struct figures *now, const struct figures *then, const char *key,
		    int prefix)
{
	return prefix ? sum(now, key) - sum(then, key) : get(now, key) - get(then, key);
}

/* One line per interval: rates over it, and its reads' P50/P99. */
static int watch(const char *mnt, double every, long count)
{
	struct figures then, now;
	double t0, t1;
	int err, lines = 0;

	if ((err = figures_read(mnt, &then)) != 0)
		return err;
	t0 = mono_s();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (!stop_watch && count != 0) {
		struct timespec ts = {(time_t)every, (long)((every - (double)(time_t)every) * 1e9)};
		char p50[32], p99[32], tbuf[16], hbuf[16];
		double dt, hits, misses;
		time_t wall = time(NULL);
		nanosleep(&ts, NULL);
		if (stop_watch)
			break;
		if ((err = figures_read(mnt, &now)) != 0) {
			figures_free(&then);
			return err;
		}
		t1 = mono_s();
		dt = t1 - t0 > 0 ? t1 - t0 : 1;
		if (lines++ % 20 == 0)
			printf("%-8s %9s %8s %9s %9s %9s %9s %9s %6s %8s %7s %7s\n", "time", "read MB/s",
			       "reads/s", "P50", "P99", "mem MB/s", "disk MB/s", "store MB/s", "hit%",
			       "GETs/s", "retries", "errors");
		hits = delta(&now, &then, "modelfs_cache_chunk_reads_total", 1);
		misses = delta(&now, &then, "modelfs_cache_misses_total", 0);
		strftime(tbuf, sizeof(tbuf), "%H:%M:%S", localtime(&wall));
		printf("%-8s %9.1f %8.0f %9s %9s %9.1f %9.1f %9.1f %6s %8.0f %7.0f %7.0f\n", tbuf,
		       delta(&now, &then, "modelfs_fuse_read_bytes_total", 0) / 1e6 / dt,
		       delta(&now, &then, "modelfs_fuse_operations_total{op=\"read\"}", 0) / dt,
		       ms(quantile(&now, &then, FUSE_LAT, "op=\"read\"", 0.5), p50, sizeof(p50)),
		       ms(quantile(&now, &then, FUSE_LAT, "op=\"read\"", 0.99), p99, sizeof(p99)),
		       delta(&now, &then, "modelfs_read_bytes_total{origin=\"memory\"}", 0) / 1e6 / dt,
		       delta(&now, &then, "modelfs_read_bytes_total{origin=\"disk\"}", 0) / 1e6 / dt,
		       delta(&now, &then, "modelfs_read_bytes_total{origin=\"store\"}", 0) / 1e6 / dt,
		       hits + misses > 0
			   ? (snprintf(hbuf, sizeof(hbuf), "%.0f", 100 * hits / (hits + misses)), hbuf)
			   : "-",
		       delta(&now, &then, "modelfs_backend_http_requests_total", 1) / dt,
		       delta(&now, &then, "modelfs_backend_retries_total", 0),
		       delta(&now, &then, "modelfs_fuse_errors_total", 1));
		fflush(stdout);
		figures_free(&then);
		then = now;
		t0 = t1;
		if (count > 0)
			count--;
	}
	figures_free(&then);
	return 0;
}

int ctl_stats(int argc, char **argv)
{
	const char *mnt = NULL;
	double every = 0;
	long count = -1;
	struct figures f;
	int err;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--watch") == 0 || strcmp(argv[i], "-w") == 0) {
			every = 1;
			if (i + 1 < argc && strtod(argv[i + 1], NULL) > 0 && !strchr(argv[i + 1], '/'))
				every = strtod(argv[++i], NULL);
			if (!(every >= 0.05 && every <= 86400)) /* NaN too */
				goto usage;
		} else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
			count = strtol(argv[++i], NULL, 10);
			if (count <= 0)
				goto usage;
		} else if (argv[i][0] == '-' || mnt) {
			goto usage;
		} else {
			mnt = argv[i];
		}
	}
	if (!mnt || (count > 0 && every == 0))
		goto usage;
	err = every > 0 ? watch(mnt, every, count) : figures_read(mnt, &f);
	if (err) {
		fprintf(stderr, "modelfs: %s: %s\n", mnt,
			err == -ENODATA || err == -ENOTSUP ? "not a modelfs mount (or one too old "
							      "for stats)"
							    : strerror(-err));
		return 1;
	}
	if (every == 0) {
		totals(mnt, &f);
		figures_free(&f);
	}
	return 0;
usage:
	fprintf(stderr, "usage: modelfs stats MOUNTPOINT [--watch [SECONDS]] [-n COUNT]\n");
	return 2;
}
