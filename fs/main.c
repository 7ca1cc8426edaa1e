/* modelfs: mount a model store read-only.
 *
 * Start-up does all the checks that can fail (options, mountpoint,
 * credentials, a probe of the bucket, the listing) before mounting, so a bad
 * mount fails in seconds with one line on stderr and a non-zero exit. Without
 * -f the process forks once the mount is live (background() after
 * fuse_session_mount), and the parent waits for the child to say that the
 * rest of the start (the cache, which cannot cross a fork, the metrics, the
 * threads) went well: its exit 0 means "mounted and serving"; an error of
 * the child's start is the parent's one line and exit 1, and leaves no
 * mount behind.
 */
#include "fs.h"
#include "channel.h"
#include "handle.h"
#include "holder.h"
#include "keep.h"
#include "jsonlist.h"
#include "metrics.h"
#include "log.h"
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MODELFS_VERSION
#define MODELFS_VERSION "0.0.0"
#endif

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static int detached; /* after background(): stderr is gone, say it in the log */
static int start_fd = -1; /* the child's end of the pipe its parent waits on */
static int kept_stderr = -1; /* the child logs to the stderr it was started with */
static int json_log; /* log_format=json: every line, this one too, is JSON */
static struct fuse_session *live_se; /* mounted: a later die() unmounts first */
static int upgrade_ctl = -1; /* an upgrade's new daemon: die() tells the holder why */
/* modelfs's exit status on a failed start, for whoever runs it (the CSI
 * plugin maps it to a gRPC code): 1 any failure, 2 a bad option or SOURCE,
 * 3 the bucket or prefix does not exist, 4 access denied, 5 the store cannot
 * be reached. */
static int die_status = 1;

static void die(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (start_fd >= 0 && kept_stderr >= 0)
		; /* the parent says it on that same stderr: once is enough */
	else if (detached || json_log)
		log_error("%s", line);
	else
		fprintf(stderr, "modelfs: %s\n", line);
	if (live_se)
		fuse_session_unmount(live_se); /* never leave a dead mount behind */
	if (upgrade_ctl >= 0)
		holder_failed(upgrade_ctl, line); /* the old daemon goes on */
	if (start_fd >= 0) {
		/* the parent says it on the stderr we were started with */
		char msg[1100];
		int n = snprintf(msg, sizeof(msg), "%dmodelfs: %s\n", die_status, line);
		if (write(start_fd, msg, (size_t)n) < 0)
			_exit(1);
		close(start_fd); /* the parent goes now, whatever exit() does */
		start_fd = -1;
	}
	exit(die_status);
}

/* Go to the background, as fuse_daemonize() does (fork, setsid, "/",
 * /dev/null for the standard streams), but the parent stays until the child
 * calls started() or dies: then it exits 0, or with the child's line and 1. */
static void background(void)
{
	int p[2], nul;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) != 0)
		die("cannot go to the background: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("cannot go to the background: %s", strerror(errno));
	if (pid > 0) {
		static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
		char buf[1200];
		size_t got = 0;
		ssize_t n;
		/* the session's handlers would only flag it: Ctrl-C, timeout(1)
		 * must be able to stop a start that hangs */
		for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], SIG_DFL);
		close(p[1]);
		while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got) &&
		       (n = read(p[0], buf + got, sizeof(buf) - 1 - got)) != 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				break;
			got += (size_t)n;
			if (buf[0] == '0')
				_exit(0);
		}
		buf[got] = '\0';
		if (got > 1 && buf[0] >= '1' && buf[0] <= '9') {
			fputs(buf + 1, stderr);
			_exit(buf[0] - '0');
		} else {
			/* died without a word (killed, crashed): no dead mount left */
			if (live_se)
				fuse_session_unmount(live_se);
			fprintf(stderr, "modelfs: the daemon ended while starting (its log says why)\n");
		}
		_exit(1);
	}
	close(p[0]);
	start_fd = p[1];
	setsid();
	if (chdir("/") != 0)
		die("cannot go to the background: /: %s", strerror(errno));
	nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul >= 0) {
		dup2(nul, STDIN_FILENO);
		dup2(nul, STDOUT_FILENO);
		dup2(nul, STDERR_FILENO);
		if (nul > STDERR_FILENO)
			close(nul);
	}
}

/* The start is done: the parent exits 0. */
static void started(void)
{
	if (start_fd < 0)
		return;
	if (write(start_fd, "0", 1) < 0)
		log_warn("cannot tell the parent process that the mount is up: %s", strerror(errno));
	close(start_fd);
	start_fd = -1;
}

/* One line for a failed probe of the bucket. */
static void die_check(int err, const char *url, const struct backend *be,
		      const char *endpoint, const char *detail)
{
	die_status = err == -EACCES ? 4 : err == -ENOENT ? 3
		   : err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT ? 5 : 1;
	switch (err) {
	case -EACCES:
		die("access denied to %s at %s: check the credentials (%s)", url, endpoint, detail);
	case -ENOENT:
		die("%s does not exist at %s (%s)", be->what, endpoint, detail);
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
		die("cannot reach endpoint %s: %s", endpoint, detail);
	case -ETIMEDOUT:
		die("endpoint %s did not answer in time: %s", endpoint, detail);
	case -EADDRNOTAVAIL:
		die("endpoint %s: %s", endpoint, detail);
	case -EPROTO:
		die("unexpected answer from %s (TLS, protocol or format): %s", endpoint, detail);
	case -EINVAL:
		die("the endpoint %s rejected the request: %s", endpoint, detail);
	default:
		die("probing %s at %s failed: %s%s%s", url, endpoint, strerror(-err),
		    *detail ? ": " : "", detail);
	}
}

/* Load the snapshot of @snap_id into the (empty) tree. @return 0, or -errno
 * with the tree empty again. */
static int seed_tree(struct fs *fs, const char *cache_dir, const char *snap_id)
{
	void *snap;
	size_t len;
	int err = snapshot_load(cache_dir, snap_id, &snap, &len);

	if (err)
		return err;
	err = tree_load(fs->tree, snap, len);
	free(snap);
	if (err) {
		tree_free(fs->tree);
		if (tree_new(time(NULL), &fs->tree))
			die("out of memory");
	}
	return err;
}

/* An upgrade's hand-over (the holder's link thread): stop taking requests,
 * wait for those in flight, and give the tree to the new daemon. @return
 * a memfd with the tree's snapshot, or -1. */
static int stop_for_upgrade(void *arg)
{
	struct fs *fs = arg;
	unsigned left = chan_stop(fs->chan, 5000);
	char *buf;
	size_t len;
	int fd;

	if (left && !chan_kernel_resends(fs->chan))
		chan_fail_inflight(fs->chan); /* EIO now, rather than a reader waiting for ever */
	else if (left)
		log_info("upgrade: %u requests still in flight: the new daemon has them sent again",
			 left);
	if (tree_serialize(fs->tree, &buf, &len) != 0)
		return -1;
	fd = memfd_create("modelfs-tree", MFD_CLOEXEC);
	if (fd >= 0 && (write(fd, buf, len) != (ssize_t)len || lseek(fd, 0, SEEK_SET) != 0)) {
		close(fd);
		fd = -1;
	}
	free(buf);
	return fd;
}

/* The tree an upgrade's old daemon sent. @return 0 or -errno. */
static int load_tree_fd(struct fs *fs, int fd)
{
	struct stat st;
	char *buf;
	int err;

	if (fstat(fd, &st) != 0 || st.st_size <= 0)
		return -EINVAL;
	buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (buf == MAP_FAILED)
		return -errno;
	err = tree_load(fs->tree, buf, (size_t)st.st_size);
	munmap(buf, (size_t)st.st_size);
	return err;
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

/* Failures that can be an outage of the store, so that mounting its saved
 * listing is right. A setting that cannot work (a bucket host name that does
 * not resolve, TLS, 4xx) is not one of them: it must fail the mount. */
static int outage_error(int err)
{
	return err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ETIMEDOUT || err == -EIO;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Shutdown. libfuse's own handlers only flag the session; its loop then
 * joins workers that may be inside backend requests, which with a stalled
 * store took (retries + 1) x request_timeout. Ours also wake a thread that
 * cancels every backend request, so that SIGINT (or SIGTERM with
 * term_grace=0, or nothing open) ends the daemon within about a second
 * (curl checks for the cancel once a second).
 *
 * SIGTERM with a grace (the pod or unit is stopping, model servers may still
 * read): the thread takes the mount off its path (a lazy unmount: new opens
 * find the directory below; open files and mappings go on), serves the
 * files open until the last is closed or term_grace passes, then ends as
 * above. A second SIGTERM, or SIGINT, ends it at once. */
static struct fuse_session *sig_se;
static int sig_pipe[2] = {-1, -1};
static pthread_t main_thread;
static unsigned term_grace_s;
/* 0: running; 1: SIGTERM seen, the thread detaches and waits; 2: ending */
static volatile sig_atomic_t term_phase;

static void on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	/* The thread ends the session (phase 2: it has quiesced the refresher
	 * and sends this signal again); until then the loop goes on. */
	if (term_phase == 2 && sig_se)
		fuse_session_exit(sig_se);
	else if (sig == SIGTERM && term_grace_s && term_phase == 0)
		term_phase = 1; /* and the grace, first */
	if (sig_pipe[1] >= 0 && write(sig_pipe[1], &c, 1) < 0) {
		/* the pipe is full: a cancel is pending anyway */
	}
	errno = saved;
}

/* Is @path a mount point (its device differs from its parent's)? */
static int path_is_mounted(const char *path)
{
	char parent[PATH_MAX];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* Take the mount off its path, keeping the session: umount2(MNT_DETACH)
 * as root, else fusermount3 -u -z (setuid). @return 0 or -1. */
static int detach_mount(const char *mnt)
{
	char a0[] = "fusermount3", a1[] = "-u", a2[] = "-z", a3[] = "-q", a4[] = "--";
	char *const args[] = {a0, a1, a2, a3, a4, (char *)mnt, NULL};
	extern char **environ;
	pid_t pid;
	int st;

	if (geteuid() == 0)
		return umount2(mnt, MNT_DETACH) == 0 ? 0 : -1;
	if (posix_spawnp(&pid, "fusermount3", NULL, NULL, args, environ) != 0)
		return -1;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* SIGTERM's grace: off the path, then wait for the open files to close.
 * @return 1 when main() ended meanwhile (the kernel let the session go),
 * else 0: the caller ends the daemon now. */
static int term_grace(struct fs *fs)
{
	int open = (int)handles_count(fs->handles);
	uint64_t until = mono_ms() + (uint64_t)term_grace_s * 1000;

	if (open <= 0)
		return 0; /* nothing to wait for */
	{
		/* what is on the path must be this mount, not one stacked on it */
		unsigned maj, mnr;
		struct stat st;
		if (sscanf(fs->bdi, "%u:%u", &maj, &mnr) == 2 &&
		    (stat(fs->opts->mountpoint, &st) != 0 || st.st_dev != makedev(maj, mnr))) {
			log_warn("SIGTERM: %s is not this mount's top: unmounting now",
				 fs->opts->mountpoint);
			return 0;
		}
	}
	if (detach_mount(fs->opts->mountpoint) != 0) {
		log_warn("SIGTERM: cannot take %s off its path (%s): unmounting now",
			 fs->opts->mountpoint, strerror(errno));
		return 0;
	}
	atomic_store(&fs->detached, 1);
	log_info("SIGTERM: %s is off its path (no new opens); serving %d open files for up to "
		 "%u s (term_grace)", fs->opts->mountpoint, open, term_grace_s);
	for (;;) {
		struct pollfd p = {sig_pipe[0], POLLIN, 0};
		char c;
		if ((open = (int)handles_count(fs->handles)) <= 0) {
			log_info("SIGTERM: the last open file is closed");
			return 0;
		}
		if (mono_ms() >= until) {
			log_warn("SIGTERM: term_grace (%u s) is over with %d files open: ending",
				 term_grace_s, open);
			return 0;
		}
		if (poll(&p, 1, 100) == 1 && read(sig_pipe[0], &c, 1) == 1) {
			if (c == 0)
				return 1; /* main() is done */
			log_info("%s during SIGTERM's grace: ending now", strsignal(c));
			return 0;
		}
	}
}

static void *sig_main(void *arg)
{
	struct fs *fs = arg;
	sigset_t all;
	int cancelled = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		char c;
		ssize_t n = read(sig_pipe[0], &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != 1 || c == 0)
			break; /* 0: main() is done */
		if (cancelled)
			continue;
		if (term_phase == 1 && term_grace(fs))
			break;
		cancelled = 1;
		log_info("%s: unmounting, cancelling the backend requests in flight", strsignal(c));
		fs->be->ops->cancel(fs->be);
		/* the refresher's listing fails at once now; its notifications
		 * end while the workers still answer the lookups they may wait on */
		fs_refresh_halt(fs);
		term_phase = 2;
		fuse_session_exit(sig_se);
		/* The loop sees the flag only when a signal interrupts one of
		 * its threads, which this one may have been: make sure. */
		pthread_kill(main_thread, c);
	}
	return NULL;
}

static int signals_start(struct fs *fs, struct fuse_session *se, pthread_t *th)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wake the loop */

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	/* the reader blocks; the handler's writes must never */
	fcntl(sig_pipe[0], F_SETFL, 0);
	main_thread = pthread_self();
	sig_se = se;
	term_grace_s = fs->opts->term_grace_s;
	if (pthread_create(th, NULL, sig_main, fs) != 0)
		return -EAGAIN;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	return 0;
}

/* After the loop: the thread goes first (it may be about to signal the main
 * thread), then the signals are ignored, not reset: the default action of a
 * late SIGTERM would end us before the unmount and leave a dead mount. */
static void signals_stop(pthread_t th)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
	struct sigaction sa = {.sa_handler = SIG_IGN};
	char c = 0;
	int fd;

	while (write(sig_pipe[1], &c, 1) < 0 && (errno == EAGAIN || errno == EINTR))
		usleep(1000);
	pthread_join(th, NULL);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	sig_se = NULL;
	fd = sig_pipe[1];
	sig_pipe[1] = -1;
	close(fd);
	close(sig_pipe[0]);
}

/* The mountpoint: clear a dead modelfs mount there (a killed daemon), then
 * refuse a live FUSE mount or a non-empty directory unless -o nonempty.
 * Dead is told by statfs, which always asks the daemon: stat() of the root
 * may still be answered from the kernel's attribute cache. */
static void check_mountpoint(const struct fs_opts *o)
{
	char type[256], msrc[4096];
	struct statvfs sv;
	struct stat st;

	if (fs_mount_at(o->mountpoint, type, sizeof(type), msrc, sizeof(msrc)) == 0 &&
	    strncmp(type, "fuse", 4) == 0) {
		if (statvfs(o->mountpoint, &sv) < 0 && errno == ENOTCONN) {
			if (strcmp(type, "fuse.modelfs") != 0)
				die("mountpoint %s: a dead %s mount of %s is there (%s): unmount it "
				    "first", o->mountpoint, type, msrc, strerror(ENOTCONN));
			if (fs_clear_dead_mount(o->mountpoint) != 0)
				die("mountpoint %s: a dead modelfs mount of %s is there and cannot be "
				    "cleared (run fusermount3 -uz %s as root)", o->mountpoint, msrc,
				    o->mountpoint);
			log_warn("cleared a dead modelfs mount of %s on %s (its daemon was gone)",
				 msrc, o->mountpoint);
		} else if (!o->nonempty) {
			die("mountpoint %s is already mounted (%s %s): unmount it first, or -o "
			    "nonempty to mount over it", o->mountpoint, type, msrc);
		}
	}
	if (stat(o->mountpoint, &st) < 0)
		die("mountpoint %s: %s", o->mountpoint, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		die("mountpoint %s: not a directory", o->mountpoint);
	if (!o->nonempty && fs_dir_is_empty(o->mountpoint) == 0)
		die("mountpoint %s is not empty: -o nonempty mounts over its contents",
		    o->mountpoint);
}

/* fuse_daemonize() goes to "/": a relative path given on the command line
 * would name another file afterwards (or, for the mountpoint, make the
 * unmount at exit miss). Also canonical ("/mnt/x/" is "/mnt/x"): after the
 * mount, nothing may resolve the mountpoint again before the session runs. */
static void make_absolute(char **path)
{
	char abs[4096];

	if (!*path || fs_abs_path(*path, abs, sizeof(abs)) != 0)
		return; /* a path that cannot be resolved fails clearly where it is used */
	free(*path);
	*path = strdup(abs);
	if (!*path)
		die("out of memory");
}

/* Can the cache live in @dir? Creates it (one level), then writes a file. */
static int cache_dir_usable(const char *dir, char *msg, size_t len)
{
	char probe[4200];
	struct stat st;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(msg, len, "cannot create it: %s", strerror(errno));
		return -errno;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(msg, len, "not a directory");
		return -ENOTDIR;
	}
	snprintf(probe, sizeof(probe), "%s/.modelfs-probe.%ld", dir, (long)getpid());
	fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, "x", 1) != 1) {
		int e = fd < 0 ? errno : EIO;
		snprintf(msg, len, "cannot write in it: %s", strerror(e));
		if (fd >= 0) {
			close(fd);
			unlink(probe);
		}
		return -e;
	}
	close(fd);
	unlink(probe);
	return 0;
}

/* The cache directory: an explicit cache_dir that cannot be used fails the
 * mount; only the default falls back to no disk cache, with a warning.
 * @return the directory (malloc'd) or NULL for no disk cache. */
static char *choose_cache_dir(const struct fs_opts *o)
{
	const char *home = getenv("HOME");
	char *dir = NULL, msg[256];

	if (o->no_cache)
		return NULL;
	if (o->cache_dir)
		dir = strdup(o->cache_dir);
	else if (geteuid() == 0 || !home)
		dir = strdup("/var/cache/modelfs");
	else if (asprintf(&dir, "%s/.cache/modelfs", home) < 0)
		dir = NULL;
	if (!dir)
		die("out of memory");
	if (cache_dir_usable(dir, msg, sizeof(msg)) == 0) {
		make_absolute(&dir);
		return dir;
	}
	if (o->cache_dir)
		die("cache_dir %s cannot be used: %s", dir, msg);
	log_warn("no disk cache: the default cache_dir %s cannot be used (%s); every read goes "
		 "to the store (set -o cache_dir=DIR, or no_cache to say so)", dir, msg);
	free(dir);
	return NULL;
}

/* modelfs manifest [--sha256] DIR: the listing of an http(s):// source,
 * written for the server that serves DIR. */
static int manifest_command(int argc, char **argv)
{
	int sha = argc == 4 && strcmp(argv[2], "--sha256") == 0;
	char msg[1024] = "";

	if (argc != 3 + sha || argv[argc - 1][0] == '-') {
		fprintf(stderr, "usage: modelfs manifest [--sha256] DIR > DIR/%s\n",
			JSONLIST_MANIFEST_NAME);
		return 2;
	}
	if (jsonlist_write_manifest(argv[argc - 1], stdout, sha, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "modelfs manifest: %s\n", msg);
		return 1;
	}
	return 0;
}

/* modelfs csi ... / modelfs fluid ...: the CSI node plugin and Fluid's FUSE
 * entrypoint, binaries of their own beside this one (only they link gRPC
 * or read Fluid's config; they run this one for each mount). */
static int exec_beside(char **argv, const char *binary)
{
	char self[4096], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 32);

	if (n <= 0 || !(slash = memrchr(self, '/', (size_t)n))) {
		fprintf(stderr, "modelfs %s: cannot find this binary's directory\n", argv[1]);
		return 1;
	}
	snprintf(slash, sizeof(self) - (size_t)(slash - self), "/%s", binary);
	argv[1] = self;
	execv(self, argv + 1);
	fprintf(stderr, "modelfs: %s: %s\n", self, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	struct fs_opts o;
	struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
	struct backend_config bc;
	struct fs fs = {0};
	struct fuse_session *se;
	unsigned pages;
	struct fuse_loop_config *lc;
	char msg[1024] = "", endpoint[512];
	uint64_t files, dirs, bytes;
	int err, ret;

	struct cache_config cc = {0};
	char *source_ns = NULL, *snap_id = NULL, *cache_dir = NULL;
	pthread_t sig_thread;
	int offline = 0, log_fd = -1, keep_stderr = -1, metrics_fd = -1;
	struct metrics *metrics = NULL;
	uint64_t quota, usage;
	double high;
	struct stat st;
	struct holder_adopt ad;
	int adopting;
	struct keep *keep = NULL;
	/* where relative paths of the command line are, for the daemons the
	 * holder starts (this one goes to "/") */
	int start_cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);

	if (argc >= 2 && strcmp(argv[1], "cache") == 0)
		return cache_command(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "prefetch") == 0)
		return ctl_prefetch(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return ctl_status(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "stats") == 0)
		return ctl_stats(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "refresh") == 0)
		return ctl_refresh(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "manifest") == 0)
		return manifest_command(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "upgrade") == 0)
		return ctl_upgrade(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "csi") == 0)
		return exec_beside(argv, "modelfs-csi");
	if (argc >= 2 && strcmp(argv[1], "fluid") == 0)
		return exec_beside(argv, "modelfs-fluid");
	if (argc >= 2 && strcmp(argv[1], "__holder") == 0)
		return holder_main(argc, argv);
	if (opts_parse(argc, argv, &o, &fargs, msg, sizeof(msg))) {
		die_status = 2;
		die("%s", msg);
	}
	if (o.show_help) {
		opts_usage(argv[0]);
		return 0;
	}
	if (o.show_version) {
		printf("modelfs %s (libfuse %s, %s)\n", MODELFS_VERSION, fuse_pkgversion(),
		       backend_schemes());
		return 0;
	}
	log_setup(0, (enum log_level)o.log_level);
	/* started by the holder on a live connection: an upgrade, or a crash */
	if ((adopting = holder_adopting(&ad, msg, sizeof(msg))) < 0)
		die("%s", msg);
	if (ad.mode == HOLDER_UPGRADE)
		upgrade_ctl = ad.ctl_fd;
	if (o.log_file) {
		log_fd = open(o.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (log_fd < 0)
			die("log_file %s: %s", o.log_file, strerror(errno));
	}
	make_absolute(&o.mountpoint);
	if (o.log_json) {
		log_set_json(o.mountpoint);
		json_log = 1;
	}
	make_absolute(&o.ready_file);
	make_absolute(&o.ca_file);
	make_absolute(&o.metrics_dir);
	if (o.rw_asked)
		log_info("modelfs is read-only: mounting %s read-only ('rw' ignored)",
			 o.mountpoint);

	if (!adopting)
		check_mountpoint(&o);
	if (o.insecure_tls)
		log_warn("insecure_tls: TLS certificates are NOT verified; anyone on the path can "
			 "read and alter the data");
	bc = (struct backend_config){
	    .opts = (const char *const *)o.backend_opts,
	    .n_opts = o.n_backend_opts,
	    .ca_file = o.ca_file,
	    .insecure_tls = o.insecure_tls,
	    .no_etag_match = o.no_etag_match,
	    .retries = o.retries,
	    .connect_timeout_ms = o.connect_timeout_ms,
	    .request_timeout_ms = o.request_timeout_ms,
	};
	if (backend_open(o.source, &bc, &fs.be, msg, sizeof(msg))) {
		die_status = 2; /* the SOURCE, its options or its credentials' files */
		die("%s", msg);
	}
	/* messages name the URL that was tried, not the option */
	snprintf(endpoint, sizeof(endpoint), "%s", fs.be->ops->endpoint(fs.be));

	/* The cache directory, and this mount's names in it. */
	cache_dir = choose_cache_dir(&o);
	if (adopting && chdir("/") != 0) /* the paths are absolute now */
		die("cannot go to /: %s", strerror(errno));
	source_ns = fs.be->name;
	if (asprintf(&snap_id, "%s/%s", source_ns, fs.be->prefix) < 0)
		die("out of memory");

	fs.opts = &o;
	fs.prefix = fs.be->prefix;
	/* a bucket's root may hold millions of keys: list it as it is looked
	 * at; a model's prefix is best listed whole, one consistent snapshot */
	fs.lazy = o.listing == 2 || (o.listing == 0 && !*fs.be->prefix && fs.be->ops->lists_by_dir);
	if (o.listing == 2 && !fs.be->ops->lists_by_dir)
		log_warn("listing=lazy on %s: its listings of one directory cost as much as the "
			 "whole source", fs.be->ops->scheme);
	fs.source_ns = source_ns;
	fs.cache_dir = cache_dir;
	fs.snap_id = snap_id;
	if (tree_new(time(NULL), &fs.tree))
		die("out of memory");
	if (adopting)
		err = keep_adopt(ad.keep_fd, fs_handle_rec_size, HANDLES_MAX, &keep, msg, sizeof(msg));
	else
		err = keep_create(fs_handle_rec_size, HANDLES_MAX, &keep);
	if (err)
		die("%s", *msg ? msg : strerror(-err));
	fs.keep = keep;
	fs.adopted = adopting;

	if (adopting) {
		/* The kernel holds this mount's inode numbers: serve at once from
		 * what the last daemon had (an upgrade: its tree, which comes when
		 * it stops; a crash: its last snapshot), the store looked at later
		 * (the refresher; a store that is down must not stop the restart). */
		if (ad.mode == HOLDER_CRASH) {
			/* the tree the holder kept is this mount's: the snapshot in the
			 * cache directory may be another mount's of the same source,
			 * with other numbers for the same names. Its directories
			 * stay "a snapshot's" (listed again once the store answers;
			 * with it down, they are what there is) */
			int seeded = ad.tree_fd >= 0 && load_tree_fd(&fs, ad.tree_fd) == 0;
			if (ad.tree_fd >= 0 && !seeded) {
				tree_free(fs.tree);
				if (tree_new(time(NULL), &fs.tree))
					die("out of memory");
			}
			/* the numbers the kernel holds and the snapshot does not name
			 * stay unused (ESTALE: looked up again), before any listing */
			if (tree_keep_inos(fs.tree, keep_ino_next(keep)))
				die("out of memory");
			if (!seeded && fs_load_listing(&fs) != 0)
				log_warn("%s: no snapshot and no listing: the mount is empty until the "
					 "store answers", o.source);
			offline = 1;
		}
		goto listed;
	}

	msg[0] = '\0';
	/* The last mount's listing first, so that the names found again keep
	 * their inode numbers (a remount, a restart); the listing then updates
	 * it as a refresh would. A snapshot that does not load is not used. */
	if (cache_dir && seed_tree(&fs, cache_dir, snap_id) == 0 && fs.lazy)
		tree_forget_listed(fs.tree); /* its directories are listed again when used */
	err = backend_check(fs.be, fs.be->prefix, msg, sizeof(msg));
	if (err == 0)
		err = fs_load_listing(&fs);
	if (err && outage_error(err) && cache_dir) {
		/* The backend is unreachable: a snapshot of an earlier listing lets
		 * the mount start and serve what the cache holds. */
		void *snap;
		size_t len;
		tree_free(fs.tree);
		if (tree_new(time(NULL), &fs.tree))
			die("out of memory");
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
		die_check(err, o.source, fs.be, endpoint, msg);
	if (err)
		die("listing %s failed: %s", o.source, strerror(-err));
	tree_counts(fs.tree, &files, &dirs, &bytes);
	if (files == 0 && dirs <= 1)
		log_warn("%s is empty", o.source);
listed:

	se = fuse_session_new(&fargs, &fs_ops, sizeof(fs_ops), &fs);
	if (!se)
		exit(2); /* libfuse has said which option it did not take */
	fs.se = se;
	if (fuse_set_signal_handlers(se))
		die("cannot install signal handlers");
	{
		/* requests of one chunk, and a kernel readahead of two of them: the
		 * cache's readahead goes deeper. Before the mount: the kernel takes
		 * fs.fuse.max_pages_limit when the mount is made. */
		const char *e = getenv("MODELFS_MAX_PAGES"), *k = getenv("MODELFS_READ_AHEAD_KB");
		unsigned want = e && atoi(e) > 0 ? (unsigned)atoi(e) : FS_MAX_PAGES;
		pages = fs_fuse_max_pages(want);
		fs.read_ahead_kb = k && atoi(k) > 0 ? (unsigned)atoi(k)
						  : 2 * pages * (unsigned)(sysconf(_SC_PAGESIZE) >> 10);
		if (fs.read_ahead_kb < 4096)
			fs.read_ahead_kb = 4096;
	}
	/* bound now, so that a port in use fails the mount with its line */
	if (adopting)
		metrics_fd = ad.metrics_fd; /* bound by the first daemon, kept by the holder */
	else if (o.metrics_port &&
	    (metrics_fd = metrics_listen(o.metrics_addr ? o.metrics_addr : "127.0.0.1",
					 o.metrics_port, msg, sizeof(msg))) < 0)
		die("%s", msg);
	if (o.metrics_dir && metrics_dir_check(o.metrics_dir, msg, sizeof(msg)))
		die("%s", msg);
	if (adopting) {
		char dev[32];
		snprintf(dev, sizeof(dev), "/dev/fd/%d", ad.fuse_fd);
		if (fuse_session_mount(se, dev))
			die("cannot take over the connection of %s", o.mountpoint);
	} else {
		if (fuse_session_mount(se, o.mountpoint))
			die("cannot mount on %s (is /dev/fuse usable?)", o.mountpoint);
		live_se = se;
	}
	if (pt_setup(se, !o.no_passthrough && !o.no_cache, pages, &fs.pt))
		die("out of memory");
	if ((err = chan_setup(se, keep, fs.pt,
			      !adopting ? CHAN_NEW : ad.crashes >= 2 ? CHAN_ADOPT_FAIL : CHAN_ADOPT,
			      &fs.chan)) != 0)
		die("cannot set up the FUSE channel: %s", strerror(-err));
	if (fs_find_bdi(o.mountpoint, fs.bdi, sizeof(fs.bdi)))
		fs.bdi[0] = '\0';
	if (log_fd >= 0)
		log_to_fd(log_fd);
	/* In the background: log_file, else syslog, else (a container has no
	 * /dev/log) the stderr we were started with, so nothing is lost. But
	 * not a pipe or socket: whoever runs mount(8) and reads its output to
	 * the end (kubelet, a shell's $(...)) would wait as long as we live. */
	if (!o.foreground && log_fd < 0 && adopting) {
		if (log_syslog_available())
			log_setup(1, (enum log_level)o.log_level);
	} else if (!o.foreground && log_fd < 0) {
		if (log_syslog_available())
			log_setup(1, (enum log_level)o.log_level);
		else if (fstat(STDERR_FILENO, &st) == 0 && !S_ISFIFO(st.st_mode) &&
			 !S_ISSOCK(st.st_mode))
			keep_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
		else
			log_warn("no syslog (/dev/log) and stderr is a pipe: the daemon's log is "
				 "lost after this line; use -f or -o log_file=PATH");
	}
	if (!o.foreground && !adopting)
		background();
	detached = !o.foreground;
	if (!adopting) {
		/* after going to the background: the holder is of the daemon's
		 * session, not of the shell's */
		err = holder_start(fuse_session_fd(se), keep_fd(keep), metrics_fd, start_cwd, argv,
				   &ad);
		if (err) {
			log_warn("no holder for this mount (%s): a crash of the daemon ends it, and "
				 "`modelfs upgrade` cannot be used", strerror(-err));
		} else {
			/* systemd (NotifyAccess=all) follows the holder, which lives
			 * across upgrades and crashes of the daemon */
			char mp[32];
			snprintf(mp, sizeof(mp), "MAINPID=%d", (int)ad.holder_pid);
			fs_notify(mp);
		}
	}
	if (start_cwd >= 0)
		close(start_cwd);
	if (ad.ctl_fd >= 0)
		fs.holder = ad.name;
	if (!adopting && fs.holder)
		fs_save_tree(&fs); /* the holder's copy, for a crash */
	if (getenv("MODELFS_FAULT") && strcmp(getenv("MODELFS_FAULT"), "after_daemonize") == 0)
		die("fault injected after going to the background (MODELFS_FAULT=after_daemonize)");
	if (keep_stderr >= 0)
		log_to_fd(kept_stderr = keep_stderr);

	/* LMDB and threads do not survive fork(): the cache opens after it. */
	cc.dir = cache_dir;
	cc.quota_bytes = o.cache_size_bytes;
	cc.quota_percent = o.cache_size_pct;
	cc.high = o.cache_high;
	cc.low = o.cache_low;
	cc.chunk_size = o.chunk_size;
	cc.disk_required = o.cache_dir != NULL;
	if (cache_open(fs.be, &cc, &fs.cache))
		die("out of memory");
	if (cache_dir && cache_quota(fs.cache, &quota, &usage, &high) != 0) {
		/* the directory looked usable before; the cache says why not */
		if (o.cache_dir)
			die("cache_dir %s cannot be used: %s: unmounting", cache_dir,
			    cache_disk_error(fs.cache));
		log_warn("no disk cache: every read goes to the store");
	}
	if (ad.mode == HOLDER_UPGRADE) {
		/* ready: the old daemon stops now, and sends its tree */
		int tfd = holder_standby(ad.ctl_fd);
		if (tfd == -EPIPE)
			die("the holder is gone: not taking over");
		if (tfd >= 0) {
			if ((err = load_tree_fd(&fs, tfd)) != 0)
				log_warn("the old daemon's tree does not load (%s): its snapshot, then "
					 "the store", strerror(-err));
			close(tfd);
		}
		if (tfd < 0 || err) {
			/* its snapshot, or an empty tree: no listing while nobody
			 * answers the kernel; the refresher lists soon */
			tree_free(fs.tree);
			if (tree_new(time(NULL), &fs.tree))
				die("out of memory");
			if (ad.tree_fd < 0 || load_tree_fd(&fs, ad.tree_fd) != 0) {
				tree_free(fs.tree);
				if (tree_new(time(NULL), &fs.tree))
					die("out of memory");
			}
			offline = 1;
		}
		upgrade_ctl = -1;
	}
	if (ad.tree_fd >= 0)
		close(ad.tree_fd);
	ad.tree_fd = -1;
	if (tree_keep_inos(fs.tree, keep_ino_next(keep)))
		die("out of memory");
	if (adopting)
		tree_counts_unknown(fs.tree); /* the kernel's references are the last daemon's */
	/* the handles last: an upgrade's old daemon opened and released files
	 * until it stopped (it is gone now) */
	if (handles_new(keep_handles(keep), fs_handle_rec_size, adopting, &fs.handles))
		die("out of memory");
	if (adopting && fs_adopt_handles(&fs))
		die("out of memory");
	tree_counts(fs.tree, &files, &dirs, &bytes);
	if (signals_start(&fs, se, &sig_thread))
		die("cannot set up the signal handlers");
	if (fs_refresh_start(&fs, offline))
		log_warn("the listing will not be refreshed: no thread for it");
	fs_ready_start(&fs);
	if (metrics_start(&(struct metrics_config){metrics_fd, o.metrics_dir, o.metrics_per_model},
			  &fs, o.mountpoint, o.source, &metrics, msg, sizeof(msg)))
		die("%s", msg);
	fs.metrics = metrics;

	if (adopting)
		log_info("took over %s on %s (%s, modelfs %s): %llu files, %llu directories",
			 o.source, o.mountpoint, ad.mode == HOLDER_UPGRADE ? "upgrade" : "after a crash",
			 MODELFS_VERSION, (unsigned long long)files, (unsigned long long)dirs - 1);
	else
		log_info("mounted %s on %s: %llu files, %llu directories, %.1f GiB", o.source,
			 o.mountpoint, (unsigned long long)files, (unsigned long long)dirs - 1,
			 (double)bytes / (1 << 30));
	started();
	if (ad.ctl_fd >= 0 && holder_link_start(ad.ctl_fd, stop_for_upgrade, &fs) != 0)
		log_warn("no thread for the holder: `modelfs upgrade` cannot be used");
	if (adopting)
		holder_serving(ad.ctl_fd);
	lc = fuse_loop_cfg_create();
	/* one fd, no clones: a request read by a daemon that dies stays on it,
	 * and the next daemon has the kernel send it again (channel.h); a
	 * clone's requests would be failed when the clone closes */
	fuse_loop_cfg_set_clone_fd(lc, 0);
	fuse_loop_cfg_set_max_threads(lc, 64);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	ret = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);

	log_info("unmounting %s", o.mountpoint);
	holder_bye(); /* no daemon after this one */
	/* whatever ended the loop, the prefetch and the cache's fetches must
	 * not wait on the store now */
	fs.be->ops->cancel(fs.be);
	signals_stop(sig_thread);
	/* Detached by SIGTERM's grace, the path may hold another mount by now:
	 * unmount (which also frees the session's copy of the path) only where
	 * nothing is mounted on it. */
	if (adopting) {
		/* the connection is ours but the mount was another's: unmount
		 * what is on the path only if it is this mount (no stat: nobody
		 * answers it now) */
		char dev[32];
		if (!atomic_load(&fs.detached) && fs.bdi[0] &&
		    fs_find_bdi(o.mountpoint, dev, sizeof(dev)) == 0 && strcmp(dev, fs.bdi) == 0)
			detach_mount(o.mountpoint);
	} else if (!atomic_load(&fs.detached) || !path_is_mounted(o.mountpoint)) {
		fuse_session_unmount(se);
	}
	live_se = NULL;
	/* unmounted: a notification it is making fails at once; the session
	 * it names is freed below */
	fs_refresh_stop(&fs);
	fs_release_all(&fs);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	metrics_stop(metrics); /* the mount is gone: its heartbeat cannot block */
	pt_free(fs.pt);
	fs_ready_stop(&fs);
	cache_close(fs.cache);
	tree_free(fs.tree);
	handles_free(fs.handles);
	chan_free(fs.chan);
	keep_free(keep);
	fs.be->ops->close(fs.be);
	fuse_opt_free_args(&fargs);
	opts_free(&o);

	free(snap_id);
	free(cache_dir);
	/* a positive value is the signal that ended the loop: a clean exit */
	return ret < 0 ? 1 : 0;
}
