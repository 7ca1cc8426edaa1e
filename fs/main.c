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

#include <errno.h>
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

	msg[0] = '\0';
	err = fs.be->ops->check(fs.be, src.prefix, msg, sizeof(msg));
	if (err)
		die_check(err, o.source, &src, endpoint, msg);

	fs.opts = &o;
	fs.prefix = src.prefix;
	if (tree_new(time(NULL), &fs.tree) || cache_open(fs.be, &fs.cache))
		die("out of memory");
	err = fs_load_listing(&fs);
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
	log_info("mounted %s on %s: %llu files, %llu directories, %.1f GiB", o.source,
		 o.mountpoint, (unsigned long long)files, (unsigned long long)dirs - 1,
		 (double)bytes / (1 << 30));
	if (!o.foreground)
		log_setup(1, o.debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	if (fuse_daemonize(o.foreground)) {
		fuse_session_unmount(se);
		die("cannot go to the background");
	}

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
	cache_close(fs.cache);
	tree_free(fs.tree);
	fs.be->ops->close(fs.be);
	backend_source_free(&src);
	fuse_opt_free_args(&fargs);
	opts_free(&o);
	/* a positive value is the signal that ended the loop: a clean exit */
	return ret < 0 ? 1 : 0;
}
