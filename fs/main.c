/* modelfs: mount an object-store bucket read-only.
 *
 * Start-up does all the checks that can fail (options, mountpoint,
 * credentials, a probe of the bucket, the listing) before mounting, so a bad
 * mount fails in seconds with one line on stderr and a non-zero exit. Without
 * -f the process forks only after the mount is live (fuse_daemonize after
 * fuse_session_mount), so the parent's exit 0 means "mounted".
 */
#include "creds.h"
#include "fs.h"
#include "log.h"
#include "snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MODELFS_VERSION
#define MODELFS_VERSION "0.0.0"
#endif

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("modelfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* One line for a failed probe of the bucket. */
static void die_check(int err, const char *url, const struct backend_source *src,
		      const char *endpoint, const char *detail)
{
	switch (err) {
	case -EACCES:
		die("access denied to %s at %s: check the credentials (%s)", url, endpoint, detail);
	case -ENOENT:
		die("bucket '%s' does not exist at %s (%s)", src->bucket, endpoint, detail);
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ETIMEDOUT:
		die("cannot reach endpoint %s: %s", endpoint, detail);
	case -EPROTO:
		die("TLS or protocol error talking to %s: %s", endpoint, detail);
	case -EINVAL:
		die("the endpoint %s rejected the request: %s", endpoint, detail);
	default:
		die("probing %s at %s failed: %s%s%s", url, endpoint, strerror(-err),
		    *detail ? ": " : "", detail);
	}
}

/* "modelfs cache stat|verify|clear DIR" */
static int cache_command(int argc, char **argv)
{
	int err;

	if (argc != 4) {
		fprintf(stderr, "usage: modelfs cache stat|verify|clear CACHE_DIR\n");
		return 2;
	}
	if (strcmp(argv[2], "stat") == 0)
		err = cache_cmd_stat(argv[3]);
	else if (strcmp(argv[2], "verify") == 0)
		err = cache_cmd_verify(argv[3]);
	else if (strcmp(argv[2], "clear") == 0)
		err = cache_cmd_clear(argv[3]);
	else {
		fprintf(stderr, "modelfs: unknown cache command '%s' (stat, verify, clear)\n",
			argv[2]);
		return 2;
	}
	return err ? 1 : 0;
}

static int transport_error(int err)
{
	return err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT || err == -EIO;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Started from a snapshot with the backend down: list again every 10 s until
 * it answers. The tree takes its own lock; readers go on meanwhile. */
static pthread_mutex_t relist_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t relist_cond = PTHREAD_COND_INITIALIZER;
static int relist_stop; /* protected by relist_lock */

static void *relist_main(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&relist_lock);
	while (!relist_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 10;
		pthread_cond_timedwait(&relist_cond, &relist_lock, &ts);
		if (relist_stop)
			break;
		pthread_mutex_unlock(&relist_lock);
		if (fs_load_listing(fs) == 0) {
			log_info("the backend answers again: listing refreshed");
			atomic_store(&fs->backend_down_ms, 0);
			return NULL;
		}
		pthread_mutex_lock(&relist_lock);
	}
	pthread_mutex_unlock(&relist_lock);
	return NULL;
}

int main(int argc, char **argv)
{
	struct fs_opts o;
	struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
	struct backend_source src;
	struct backend_config bc;
	struct creds cr;
	struct fs fs = {0};
	struct fuse_session *se;
	struct fuse_loop_config *lc;
	struct stat st;
	char msg[1024] = "", endpoint[512];
	uint64_t files, dirs, bytes;
	int err, ret;

	struct cache_config cc = {0};
	char *source_ns = NULL, *snap_id = NULL, *cache_dir = NULL;
	pthread_t relist;
	int offline = 0;

	if (argc >= 2 && strcmp(argv[1], "cache") == 0)
		return cache_command(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "prefetch") == 0)
		return ctl_prefetch(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return ctl_status(argc, argv);
	if (opts_parse(argc, argv, &o, &fargs, msg, sizeof(msg)))
		die("%s", msg);
	if (o.show_help) {
		opts_usage(argv[0]);
		return 0;
	}
	if (o.show_version) {
		printf("modelfs %s (libfuse %s, %s)\n", MODELFS_VERSION, fuse_pkgversion(),
		       backend_schemes());
		return 0;
	}
	log_setup(0, o.debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);

	err = backend_source_parse(o.source, &src);
	if (err == -EPROTONOSUPPORT)
		die("unsupported source '%s': expected %s", o.source, backend_schemes());
	if (err)
		die("bad source '%s': expected s3://BUCKET[/PREFIX]", o.source);
	if (stat(o.mountpoint, &st) < 0)
		die("mountpoint %s: %s", o.mountpoint, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		die("mountpoint %s: not a directory", o.mountpoint);

	if (creds_load(o.creds_file, o.profile, &cr, msg, sizeof(msg)))
		die("%s", msg);
	log_debug("credentials: %s", cr.source);
	if (o.insecure_tls)
		log_warn("insecure_tls: TLS certificates are NOT verified; anyone on the path can "
			 "read and alter the data");

	bc = (struct backend_config){
	    .endpoint = o.endpoint,
	    .region = o.region,
	    .path_style = o.path_style,
	    .access_key = cr.access_key,
	    .secret_key = cr.secret_key,
	    .session_token = cr.session_token,
	    .ca_file = o.ca_file,
	    .insecure_tls = o.insecure_tls,
	    .no_etag_match = o.no_etag_match,
	    .retries = o.retries,
	    .connect_timeout_ms = o.connect_timeout_ms,
	    .request_timeout_ms = o.request_timeout_ms,
	};
	snprintf(endpoint, sizeof(endpoint), "%s",
		 o.endpoint ? o.endpoint : "the AWS endpoint of the region");
	err = src.ops->open(&bc, src.bucket, &fs.be);
	creds_free(&cr);
	if (err == -EINVAL)
		die("bad endpoint '%s': expected http[s]://HOST[:PORT]", endpoint);
	if (err)
		die("cannot set up the %s client: %s", src.ops->scheme, strerror(-err));

	/* The cache directory, and this mount's names in it. */
	if (!o.no_cache) {
		const char *home = getenv("HOME");
		if (o.cache_dir)
			cache_dir = strdup(o.cache_dir);
		else if (geteuid() == 0 || !home)
			cache_dir = strdup("/var/cache/modelfs");
		else if (asprintf(&cache_dir, "%s/.cache/modelfs", home) < 0)
			cache_dir = NULL;
		if (cache_dir && mkdir(cache_dir, 0700) < 0 && errno != EEXIST) {
			log_warn("no disk cache: cannot create %s: %s", cache_dir, strerror(errno));
			free(cache_dir);
			cache_dir = NULL;
		}
	}
	if (asprintf(&source_ns, "%s://%s%s%s", src.ops->scheme, src.bucket, o.endpoint ? "@" : "",
		     o.endpoint ? o.endpoint : "") < 0 ||
	    asprintf(&snap_id, "%s/%s", source_ns, src.prefix) < 0)
		die("out of memory");

	fs.opts = &o;
	fs.prefix = src.prefix;
	fs.source_ns = source_ns;
	fs.cache_dir = cache_dir;
	fs.snap_id = snap_id;
	if (tree_new(time(NULL), &fs.tree))
		die("out of memory");

	msg[0] = '\0';
	err = fs.be->ops->check(fs.be, src.prefix, msg, sizeof(msg));
	if (err == 0)
		err = fs_load_listing(&fs);
	if (err && transport_error(err) && cache_dir) {
		/* The backend is unreachable: a snapshot of an earlier listing lets
		 * the mount start and serve what the cache holds. */
		void *snap;
		size_t len;
		if (snapshot_load(cache_dir, snap_id, &snap, &len) == 0) {
			if (tree_load(fs.tree, snap, len) == 0) {
				log_warn("%s is unreachable (%s): mounting the listing saved in %s; "
					 "serving cached data until it answers",
					 endpoint, *msg ? msg : strerror(-err), cache_dir);
				offline = 1;
				atomic_store(&fs.backend_down_ms, mono_ms());
				err = 0;
			}
			free(snap);
		}
	}
	if (err && *msg)
		die_check(err, o.source, &src, endpoint, msg);
	if (err)
		die("listing %s failed: %s", o.source, strerror(-err));
	tree_counts(fs.tree, &files, &dirs, &bytes);
	if (files == 0 && dirs <= 1)
		log_warn("%s is empty", o.source);

	se = fuse_session_new(&fargs, &fs_ops, sizeof(fs_ops), &fs);
	if (!se)
		exit(1); /* libfuse has said which option it did not take */
	if (fuse_set_signal_handlers(se))
		die("cannot install signal handlers");
	if (fuse_session_mount(se, o.mountpoint))
		die("cannot mount on %s (is it already mounted, and is /dev/fuse usable?)",
		    o.mountpoint);
	if (pt_setup(se, !o.no_passthrough && !o.no_cache, &fs.pt))
		die("out of memory");
	if (fs_find_bdi(o.mountpoint, fs.bdi, sizeof(fs.bdi)))
		fs.bdi[0] = '\0';
	log_info("mounted %s on %s: %llu files, %llu directories, %.1f GiB", o.source,
		 o.mountpoint, (unsigned long long)files, (unsigned long long)dirs - 1,
		 (double)bytes / (1 << 30));
	if (!o.foreground)
		log_setup(1, o.debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	if (fuse_daemonize(o.foreground)) {
		fuse_session_unmount(se);
		die("cannot go to the background");
	}

	/* LMDB and threads do not survive fork(): the cache opens after it. */
	cc.dir = cache_dir;
	cc.quota_bytes = o.cache_size_bytes;
	cc.quota_percent = o.cache_size_pct;
	cc.high = o.cache_high;
	cc.low = o.cache_low;
	cc.chunk_size = o.chunk_size;
	if (cache_open(fs.be, &cc, &fs.cache))
		die("out of memory");
	if (offline && pthread_create(&relist, NULL, relist_main, &fs) != 0)
		offline = 0;
	fs_ready_start(&fs);

	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, 1);
	fuse_loop_cfg_set_max_threads(lc, 64);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	ret = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);

	log_info("unmounting %s", o.mountpoint);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	pt_free(fs.pt);
	fs_ready_stop(&fs);
	if (offline) {
		pthread_mutex_lock(&relist_lock);
		relist_stop = 1;
		pthread_cond_signal(&relist_cond);
		pthread_mutex_unlock(&relist_lock);
		pthread_join(relist, NULL);
	}
	cache_close(fs.cache);
	tree_free(fs.tree);
	fs.be->ops->close(fs.be);
	backend_source_free(&src);
	fuse_opt_free_args(&fargs);
	opts_free(&o);
	free(source_ns);
	free(snap_id);
	free(cache_dir);
	/* a positive value is the signal that ended the loop: a clean exit */
	return ret < 0 ? 1 : 0;
}
