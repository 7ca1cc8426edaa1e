/* The holder (holder.h).
 *
 * Control sockets (SOCK_SEQPACKET: one message per send; an fd rides along
 * with SCM_RIGHTS), one between the holder and each daemon it knows:
 *   holder -> daemon: 'S' stop (an upgrade), 'G' go (+ the tree's fd)
 *   daemon -> holder: 'q' ending for good, 's' stopped (+ the tree's fd),
 *                     't' + the tree's fd (kept for a crash's next daemon),
 *                     'w' waiting for 'G', 'r' serving, 'f' + text: failed
 * and one per `modelfs upgrade` client on the holder's listening socket:
 *   client -> holder: 'U' + the new binary's path (+ its fd: the holder opens
 *                     the path itself and checks it is that file)
 *   holder -> client: '0' + text (done) or '1' + text (failed)
 *
 * An upgrade: the new daemon is started (MODELFS_ADOPT=upgrade ...) and
 * gets ready (options, store, cache, metrics) while the old one serves;
 * it says 'w'; the old one is told 'S': it stops taking requests, waits
 * for those in flight (at most DRAIN_MS), sends its tree and ends; then
 * the new one gets 'G' and serves. Readers wait meanwhile, no request is
 * failed: the stall is the old one's drain and the tree's hand-over. If
 * the new one fails before 'G', the old one goes on.
 *
 * A crash: the daemon ended without 'q'. A new one is started
 * (MODELFS_ADOPT=crash ...) at once, three times; then, while they keep
 * crashing within a minute of their start, after 1, 2, 4 ... 30 s.
 *
 * The holder ends when the daemon ends after 'q', or the connection is
 * gone (unmounted) and no daemon runs.
 */
#include "holder.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define ADOPT_ENV "MODELFS_ADOPT"
#define XATTR_HOLDER "user.modelfs.holder"
#define STANDBY_MS 120000 /* the new daemon's start: the store, the cache */
#define STOP_MS 15000     /* the old daemon's drain (channel: 5 s) and hand-over */

extern char **environ;

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

union cmsg_buf {
	char b[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

static int send_msg(int sock, const void *buf, size_t len, int fd)
{
	union cmsg_buf cb;
	char *cbuf = cb.b;
	struct iovec iov = {(void *)buf, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;
		memset(&cb, 0, sizeof(cb));
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cb.b);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* @return the message's length (0: the peer is gone) or -errno; *@fd the
 * fd that came with it, or -1. */
static ssize_t recv_msg(int sock, char *buf, size_t len, int *fd)
{
	union cmsg_buf cb;
	struct iovec iov = {buf, len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
			   .msg_controllen = sizeof(cb.b)};
	ssize_t n;

	*fd = -1;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0)
		if (errno != EINTR)
			return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return n;
}

/* ---- the daemon's side ---- */

static int bye_fd = -1; /* the control socket 'q' goes on */

void holder_keep_tree(const char *buf, size_t len)
{
	int fd;

	if (bye_fd < 0)
		return;
	fd = memfd_create("modelfs-tree", MFD_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, buf, len) == (ssize_t)len)
		send_msg(bye_fd, "t", 1, fd);
	close(fd);
}

void holder_bye(void)
{
	int fd = bye_fd;

	bye_fd = -1;
	if (fd >= 0)
		send_msg(fd, "q", 1, -1);
}

int holder_adopting(struct holder_adopt *a, char *msg, size_t len)
{
	const char *e = getenv(ADOPT_ENV);
	char mode[16];

	memset(a, 0, sizeof(*a));
	a->fuse_fd = a->keep_fd = a->metrics_fd = a->ctl_fd = a->tree_fd = -1;
	if (!e)
		return 0;
	if (sscanf(e, "%15s %d %d %d %d %d %d %107s", mode, &a->fuse_fd, &a->keep_fd,
		   &a->metrics_fd, &a->ctl_fd, &a->tree_fd, &a->crashes, a->name) != 8 ||
	    (strcmp(mode, "crash") != 0 && strcmp(mode, "upgrade") != 0) || a->fuse_fd < 0 ||
	    a->keep_fd < 0 || a->ctl_fd < 0 || fcntl(a->fuse_fd, F_GETFD) < 0 ||
	    fcntl(a->keep_fd, F_GETFD) < 0 || fcntl(a->ctl_fd, F_GETFD) < 0) {
		snprintf(msg, len, "%s is malformed (it is set by modelfs's holder only)", ADOPT_ENV);
		return -EINVAL;
	}
	a->mode = strcmp(mode, "crash") == 0 ? HOLDER_CRASH : HOLDER_UPGRADE;
	/* not for what this daemon may start */
	unsetenv(ADOPT_ENV);
	fcntl(a->fuse_fd, F_SETFD, FD_CLOEXEC);
	fcntl(a->keep_fd, F_SETFD, FD_CLOEXEC);
	fcntl(a->ctl_fd, F_SETFD, FD_CLOEXEC);
	if (a->metrics_fd >= 0)
		fcntl(a->metrics_fd, F_SETFD, FD_CLOEXEC);
	if (a->tree_fd >= 0 && fcntl(a->tree_fd, F_SETFD, FD_CLOEXEC) < 0)
		a->tree_fd = -1;
	/* no 'q' at exit(): a daemon that fails to start on the mount is a
	 * crash for the holder (it tries again, then gives up); main() says
	 * 'q' before an unmount */
	bye_fd = a->ctl_fd;
	return 1;
}

int holder_start(int fuse_fd, int keep_fd, int metrics_fd, int cwd, char **argv,
		 struct holder_adopt *a)
{
	int sv[2], n = 0;
	pid_t pid;
	char **args, num[6][16];
	struct pollfd p;

	for (char **v = argv; *v; v++)
		n++;
	if (!(args = calloc((size_t)n + 10, sizeof(*args))))
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		free(args);
		return -errno;
	}
	snprintf(num[0], 16, "%d", fuse_fd);
	snprintf(num[1], 16, "%d", keep_fd);
	snprintf(num[2], 16, "%d", metrics_fd);
	snprintf(num[3], 16, "%d", sv[1]);
	snprintf(num[4], 16, "%d", (int)getpid());
	snprintf(num[5], 16, "%d", cwd);
	args[0] = argv[0];
	args[1] = (char *)"__holder";
	for (int i = 0; i < 6; i++)
		args[2 + i] = num[i];
	args[8] = (char *)"--";
	for (int i = 0; i < n; i++)
		args[9 + i] = argv[i];
	pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		free(args);
		return err;
	}
	if (pid == 0) {
		int fds[] = {fuse_fd, keep_fd, metrics_fd, sv[1], cwd};
		for (size_t i = 0; i < 5; i++)
			if (fds[i] >= 0)
				fcntl(fds[i], F_SETFD, 0);
		execv("/proc/self/exe", args);
		_exit(127);
	}
	free(args);
	close(sv[1]);
	/* its socket's name, once it listens */
	p = (struct pollfd){sv[0], POLLIN, 0};
	if (poll(&p, 1, 5000) == 1) {
		char buf[sizeof(a->name)];
		int fd;
		ssize_t r = recv_msg(sv[0], buf, sizeof(buf) - 1, &fd);
		if (fd >= 0)
			close(fd);
		if (r > 1 && buf[0] == 'n') {
			buf[r] = '\0';
			memcpy(a->name, buf + 1, (size_t)r);
			a->ctl_fd = sv[0];
			a->holder_pid = (int)pid;
			bye_fd = sv[0];
			atexit(holder_bye); /* this daemon's die() unmounts: no new one */
			return 0;
		}
	}
	close(sv[0]);
	kill(pid, SIGKILL); /* a holder that starts late must not hold the mount */
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return -EPROTO;
}

struct link {
	int ctl;
	holder_stop_fn stop;
	void *arg;
};

static void *link_main(void *arg)
{
	struct link *l = arg;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		char c;
		int fd;
		ssize_t r = recv_msg(l->ctl, &c, 1, &fd);
		if (fd >= 0)
			close(fd);
		if (r <= 0) {
			log_warn("the holder is gone: a crash of this daemon now ends the mount");
			break;
		}
		if (c == 'S') {
			int tree = l->stop(l->arg);
			send_msg(l->ctl, "s", 1, tree);
			log_info("handed the mount over to the new daemon");
			_exit(0);
		}
	}
	free(l);
	return NULL;
}

int holder_link_start(int ctl, holder_stop_fn stop, void *arg)
{
	struct link *l = malloc(sizeof(*l));
	pthread_t th;

	if (!l)
		return -ENOMEM;
	*l = (struct link){ctl, stop, arg};
	if (pthread_create(&th, NULL, link_main, l) != 0) {
		free(l);
		return -EAGAIN;
	}
	pthread_detach(th);
	return 0;
}

int holder_standby(int ctl)
{
	char c;
	int fd;
	ssize_t r;

	if (send_msg(ctl, "w", 1, -1) != 0)
		return -EPIPE;
	r = recv_msg(ctl, &c, 1, &fd);
	if (r == 1 && c == 'G')
		return fd;
	if (fd >= 0)
		close(fd);
	return -EPIPE;
}

void holder_serving(int ctl)
{
	send_msg(ctl, "r", 1, -1);
}

void holder_failed(int ctl, const char *why)
{
	char buf[600];
	int n = snprintf(buf, sizeof(buf), "f%s", why);

	send_msg(ctl, buf, (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1), -1);
}

/* ---- the holder ---- */

struct daemon {
	pid_t pid;
	int pidfd, ctl, exe; /* exe: the binary it runs (-1: the holder's) */
	int child;           /* ours to reap */
	uint64_t started_ms;
};

static int pidfd_of(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void daemon_clear(struct daemon *d)
{
	if (d->pidfd >= 0)
		close(d->pidfd);
	if (d->ctl >= 0)
		close(d->ctl);
	if (d->child)
		while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
			;
	d->pid = 0;
	d->pidfd = d->ctl = -1;
	d->child = 0;
}

struct holder {
	int fuse, keep, metrics, exe, cwd;
	int tree; /* the last tree the daemon kept, -1 */
	int streak; /* daemons that crashed in a row */
	char name[108];
	char **argv; /* the daemon's */
};

/* Start a daemon from @exe on the connection. @return 0 or -errno. */
static int spawn(struct holder *h, int exe, const char *mode, struct daemon *d)
{
	int sv[2];
	pid_t pid;
	char env[256];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return -errno;
	/* an upgrade starts a new streak: its daemon did not crash */
	snprintf(env, sizeof(env), "%s %d %d %d %d %d %d %s", mode, h->fuse, h->keep, h->metrics,
		 sv[1], h->tree, strcmp(mode, "upgrade") == 0 ? 0 : h->streak, h->name);
	pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		return err;
	}
	if (pid == 0) {
		int fds[] = {h->fuse, h->keep, h->metrics, sv[1], h->tree};
		for (size_t i = 0; i < 5; i++)
			if (fds[i] >= 0)
				fcntl(fds[i], F_SETFD, 0);
		setenv(ADOPT_ENV, env, 1);
		if (h->cwd >= 0 && fchdir(h->cwd) != 0)
			_exit(127);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		fexecve(exe, h->argv, environ);
		_exit(127);
	}
	close(sv[1]);
	*d = (struct daemon){pid, pidfd_of(pid), sv[0], exe, 1, mono_ms()};
	return 0;
}

static void reply(int *client, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int *client, const char *fmt, ...)
{
	char buf[700];
	va_list ap;
	int n;

	if (*client < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	send_msg(*client, buf, (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1), -1);
	close(*client);
	*client = -1;
}

/* The directory of holders' sockets: /run/modelfs for root, else the
 * user's runtime directory; only its owner may enter it. @return 0 or -1. */
static int socket_dir(char *dir, size_t len)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (geteuid() == 0)
		snprintf(dir, len, "/run/modelfs");
	else if (rt && *rt == '/')
		snprintf(dir, len, "%s/modelfs", rt);
	else
		snprintf(dir, len, "/tmp/modelfs-%u", (unsigned)geteuid());
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077)) {
		errno = EPERM; /* another's, or open to others: not ours to trust */
		return -1;
	}
	return 0;
}

/* Sockets of holders that were killed (no unlink at their end): nobody
 * listens on them any more. One that answers, or that another namespace's
 * holder may still be about to listen on, is left. */
static void sweep_dead(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd;
		if (strncmp(e->d_name, "holder.", 7) != 0 ||
		    (size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, e->d_name) >=
			    sizeof(sa.sun_path) ||
		    (fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
			continue;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno == ECONNREFUSED)
			unlink(sa.sun_path);
		close(fd);
	}
	closedir(d);
}

static int listen_socket(char *name, size_t len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	unsigned char r[6] = {0};
	char dir[80];
	int fd, rfd;

	if (socket_dir(dir, sizeof(dir)) != 0)
		return -1;
	sweep_dead(dir);
	/* the pid alone may clash: holders of other pid namespaces may share
	 * the directory */
	if ((rfd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) >= 0) {
		if (read(rfd, r, sizeof(r)) != (ssize_t)sizeof(r))
			memset(r, 0, sizeof(r));
		close(rfd);
	}
	if ((size_t)snprintf(name, len, "%s/holder.%d.%02x%02x%02x%02x%02x%02x.sock", dir,
			     (int)getpid(), r[0], r[1], r[2], r[3], r[4], r[5]) >= len ||
	    strlen(name) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", name);
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The binary an upgrade names, opened here: a regular file that only root
 * or this user can change. @return its fd or -1 with @why set. */
static int open_binary(const char *path, int theirs, char *why, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st, ts;

	if (fd < 0) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
		snprintf(why, len, "%s: not a binary that only root or this user can change", path);
		close(fd);
		return -1;
	}
	/* the path is the client's, resolved here: in another mount
	 * namespace it may name another file */
	if (theirs < 0 || fstat(theirs, &ts) != 0 || ts.st_dev != st.st_dev || ts.st_ino != st.st_ino) {
		snprintf(why, len, "%s here is not the binary that asked (run modelfs upgrade in the "
			 "mount's namespace)", path);
		close(fd);
		return -1;
	}
	return fd;
}

static void kill_daemon(struct daemon *d)
{
	/* by its pidfd: the first daemon is not our child, its pid may be reused */
	if (d->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, d->pidfd, SIGKILL, NULL, 0);
}

int holder_main(int argc, char **argv)
{
	struct holder h = {.exe = -1, .tree = -1};
	struct daemon cur = {.pidfd = -1, .ctl = -1, .exe = -1};
	struct daemon next = {.pidfd = -1, .ctl = -1, .exe = -1};
	int lfd, client = -1, final = 0, gone = 0, stopping = 0, tree_fd = -1, streak = 0, failed = 0;
	uint64_t stop_ms = 0, respawn_at = 0, stall_from = 0;
	struct stat st;
	pid_t first;

	/* modelfs __holder FUSE KEEP METRICS CTL PID CWD -- ARGV... */
	if (argc < 10 || strcmp(argv[8], "--") != 0)
		return 2;
	h.fuse = atoi(argv[2]);
	h.keep = atoi(argv[3]);
	h.metrics = atoi(argv[4]);
	cur.ctl = atoi(argv[5]);
	first = (pid_t)atoi(argv[6]);
	h.cwd = atoi(argv[7]);
	h.argv = argv + 9;
	/* its own: never the daemon's copies */
	fcntl(h.fuse, F_SETFD, FD_CLOEXEC);
	fcntl(h.keep, F_SETFD, FD_CLOEXEC);
	fcntl(cur.ctl, F_SETFD, FD_CLOEXEC);
	if (h.metrics >= 0)
		fcntl(h.metrics, F_SETFD, FD_CLOEXEC);
	if (h.cwd >= 0)
		fcntl(h.cwd, F_SETFD, FD_CLOEXEC);
	signal(SIGINT, SIG_IGN); /* the daemon's to act on; we follow it */
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (chdir("/") != 0)
		return 1;
	/* stderr is /dev/null in the background: syslog then */
	log_setup(fstat(STDERR_FILENO, &st) == 0 && S_ISCHR(st.st_mode) &&
			  st.st_rdev == makedev(1, 3) && log_syslog_available(),
		  LOG_LVL_INFO);
	h.exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	cur.pid = first;
	cur.pidfd = pidfd_of(first);
	if (h.exe < 0 || cur.pidfd < 0 || (lfd = listen_socket(h.name, sizeof(h.name))) < 0) {
		log_error("holder: cannot start: %s", strerror(errno));
		return 1;
	}
	{
		char m[120];
		int n = snprintf(m, sizeof(m), "n%s", h.name);
		send_msg(cur.ctl, m, (size_t)n, -1);
	}
	for (;;) {
		struct pollfd p[6];
		int np = 0, i_cur = -1, i_curpid = -1, i_next = -1, i_nextpid = -1, i_l;
		uint64_t now = mono_ms();
		int timeout = 1000;

		/* Is the connection gone (unmounted)? Asked only while no daemon
		 * runs: a poll of the fd for good would wake us at every request
		 * (the kernel wakes all its pollers). */
		if (!cur.pid && !next.pid) {
			struct pollfd q = {h.fuse, 0, 0};
			if (poll(&q, 1, 0) == 1 && (q.revents & (POLLERR | POLLHUP | POLLNVAL)))
				gone = 1;
		}
		if (gone && !cur.pid && !next.pid)
			break;
		if (!cur.pid && !next.pid && respawn_at && now >= respawn_at) {
			respawn_at = 0;
			if (spawn(&h, h.exe, "crash", &cur) != 0) {
				log_error("holder: cannot start a new daemon: %s: the mount ends",
					  strerror(errno));
				failed = 1;
				break;
			}
			log_info("holder: daemon %d started on the mount", (int)cur.pid);
		}
		if (stopping && cur.pid && now > stop_ms + STOP_MS) {
			log_warn("holder: the old daemon %d did not stop in %d s: killed", (int)cur.pid,
				 STOP_MS / 1000);
			kill_daemon(&cur);
		}
		if (next.pid && !stopping && now > next.started_ms + STANDBY_MS) {
			kill_daemon(&next);
			reply(&client, "1the new daemon did not get ready in %d s", STANDBY_MS / 1000);
		}
		if (cur.ctl >= 0)
			p[i_cur = np++] = (struct pollfd){cur.ctl, POLLIN, 0};
		if (cur.pidfd >= 0)
			p[i_curpid = np++] = (struct pollfd){cur.pidfd, POLLIN, 0};
		if (next.ctl >= 0)
			p[i_next = np++] = (struct pollfd){next.ctl, POLLIN, 0};
		if (next.pidfd >= 0)
			p[i_nextpid = np++] = (struct pollfd){next.pidfd, POLLIN, 0};
		p[i_l = np++] = (struct pollfd){lfd, POLLIN, 0};
		if (respawn_at && !cur.pid)
			timeout = respawn_at > now ? (int)(respawn_at - now) : 0;
		if (poll(p, (nfds_t)np, timeout) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (i_cur >= 0 && (p[i_cur].revents & (POLLIN | POLLHUP))) {
			char c;
			int fd;
			ssize_t r = recv_msg(cur.ctl, &c, 1, &fd);
			if (r == 1 && c == 'q')
				final = 1;
			else if (r == 1 && c == 't' && fd >= 0) {
				if (h.tree >= 0)
					close(h.tree);
				h.tree = fd;
				fd = -1;
			} else if (r == 1 && c == 's') {
				if (tree_fd >= 0)
					close(tree_fd);
				tree_fd = fd;
				fd = -1;
			}
			if (fd >= 0)
				close(fd);
			if (r <= 0) {
				close(cur.ctl);
				cur.ctl = -1;
			}
		}
		if (i_curpid >= 0 && (p[i_curpid].revents & POLLIN)) {
			pid_t was = cur.pid;
			daemon_clear(&cur);
			if (final) {
				if (next.pid) {
					kill_daemon(&next);
					daemon_clear(&next);
					reply(&client, "1the mount is ending");
				}
				break;
			}
			if (stopping && next.pid) {
				/* the hand-over: the new one goes now */
				send_msg(next.ctl, "G", 1, tree_fd);
				if (tree_fd >= 0)
					close(tree_fd);
				tree_fd = -1;
				stopping = 2;
			} else if (!gone) {
				uint64_t lived = mono_ms() - cur.started_ms;
				unsigned wait_s;
				streak = lived < 60000 ? streak + 1 : 1;
				h.streak = streak;
				if (streak >= 10) {
					log_error("holder: daemon %d is the 10th in a row to end within a "
						  "minute of its start: giving up (the mount ends)", (int)was);
					failed = 1;
					break;
				}
				wait_s = streak <= 3 ? 0 : 1u << (streak - 4 > 5 ? 5 : streak - 4);
				if (wait_s > 30)
					wait_s = 30;
				log_warn("holder: daemon %d ended without unmounting: starting another "
					 "on the same mount%s",
					 (int)was, wait_s ? " after a pause" : "");
				respawn_at = mono_ms() + (uint64_t)wait_s * 1000 + 1;
			}
		}
		if (i_next >= 0 && (p[i_next].revents & (POLLIN | POLLHUP))) {
			char buf[600];
			int fd;
			ssize_t r = recv_msg(next.ctl, buf, sizeof(buf) - 1, &fd);
			if (fd >= 0)
				close(fd);
			if (r == 1 && buf[0] == 'w' && !stopping && cur.ctl >= 0) {
				stopping = 1;
				stall_from = stop_ms = mono_ms();
				send_msg(cur.ctl, "S", 1, -1);
			} else if (r == 1 && buf[0] == 'w' && !stopping) {
				/* no daemon to stop (it died meanwhile): go */
				send_msg(next.ctl, "G", 1, -1);
				stopping = 2;
				stall_from = mono_ms();
			} else if (r == 1 && buf[0] == 'r') {
				int old = h.exe;
				reply(&client, "0upgraded: daemon %d now serves, %llu ms without answers",
				      (int)next.pid, (unsigned long long)(mono_ms() - stall_from));
				h.exe = next.exe;
				if (old >= 0 && old != h.exe)
					close(old);
				cur = next;
				next = (struct daemon){.pidfd = -1, .ctl = -1, .exe = -1};
				stopping = 0;
				streak = h.streak = 0;
			} else if (r > 1 && buf[0] == 'f') {
				buf[r] = '\0';
				reply(&client, "1the new daemon did not start: %s", buf + 1);
			} else if (r <= 0) {
				close(next.ctl);
				next.ctl = -1;
			}
		}
		if (i_nextpid >= 0 && (p[i_nextpid].revents & POLLIN)) {
			int nexe = next.exe;
			daemon_clear(&next);
			if (stopping == 2) {
				/* it died taking over: the old binary comes back */
				reply(&client, "1the new daemon ended while taking over: the old binary "
				      "is started again");
				if (nexe >= 0 && nexe != h.exe)
					close(nexe);
				respawn_at = mono_ms() + 1;
			} else {
				reply(&client, "1the new daemon ended while starting (its log says why); "
				      "the old one goes on");
				if (nexe >= 0 && nexe != h.exe)
					close(nexe);
			}
			stopping = 0;
		}
		if (p[i_l].revents & POLLIN) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			struct ucred cr;
			socklen_t cl = sizeof(cr);
			char m[PATH_MAX + 2], why[PATH_MAX + 100];
			int fd = -1;
			ssize_t r;
			if (c < 0)
				continue;
			{
				/* its message first: a socket closed with a message unread
				 * resets, and the client would not read the answer */
				struct pollfd q = {c, POLLIN, 0};
				if (poll(&q, 1, 2000) != 1 || (r = recv_msg(c, m, sizeof(m) - 1, &fd)) < 2 ||
				    m[0] != 'U') {
					if (fd >= 0)
						close(fd);
					close(c);
					continue;
				}
				m[r] = '\0';
			}
			if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 ||
			    (cr.uid != 0 && cr.uid != geteuid())) {
				static const char no[] = "1not allowed: root or the mount's owner only";
				send_msg(c, no, sizeof(no) - 1, -1);
				close(c);
				if (fd >= 0)
					close(fd);
				continue;
			}
			if (client >= 0 || next.pid || !cur.pid || gone) {
				const char *no = client >= 0 || next.pid ? "1an upgrade is under way"
							: "1no daemon serves the mount now";
				send_msg(c, no, strlen(no), -1);
				close(c);
				if (fd >= 0)
					close(fd);
				continue;
			}
			{
				int theirs = fd;
				fd = open_binary(m + 1, theirs, why, sizeof(why));
				if (theirs >= 0)
					close(theirs);
			}
			if (fd < 0) {
				client = c;
				reply(&client, "1%s", why);
				continue;
			}
			client = c;
			if (spawn(&h, fd, "upgrade", &next) != 0) {
				reply(&client, "1cannot start the new daemon: %s", strerror(errno));
				close(fd);
			} else {
				log_info("holder: upgrade: new daemon %d starting", (int)next.pid);
			}
		}
	}
	if (client >= 0)
		reply(&client, "1the mount ended");
	unlink(h.name);
	/* given up: a failure (systemd's Restart=on-failure mounts again) */
	return failed ? 1 : 0;
}

/* ---- modelfs upgrade MOUNT ---- */

int ctl_upgrade(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[108], buf[800], exe[PATH_MAX + 2];
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	ssize_t n, e;
	int s, fd;

	if (argc != 3 || argv[2][0] == '-') {
		fprintf(stderr, "usage: modelfs upgrade MOUNTPOINT\n");
		return 2;
	}
	n = getxattr(argv[2], XATTR_HOLDER, name, sizeof(name) - 1);
	if (n <= 0) {
		if (n == 0 || errno == ENODATA || errno == ENOTSUP)
			fprintf(stderr, "modelfs upgrade: %s: no holder for this mount (not a modelfs "
				"mount, or made by a modelfs without one): remount it instead\n",
				argv[2]);
		else
			fprintf(stderr, "modelfs upgrade: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	name[n] = '\0';
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", name);
	/* the new binary: this one */
	exe[0] = 'U';
	e = readlink("/proc/self/exe", exe + 1, sizeof(exe) - 2);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (e <= 0 || s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr, "modelfs upgrade: %s: cannot reach its holder (%s): %s\n", argv[2],
			name, strerror(errno));
		return 1;
	}
	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 ||
	    (cr.uid != 0 && cr.uid != geteuid())) {
		fprintf(stderr, "modelfs upgrade: %s: %s is not a holder of root or ours\n", argv[2],
			name);
		return 1;
	}
	/* the path, and the file itself: the holder checks that the path names
	 * this very file where it runs */
	fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	n = send_msg(s, exe, (size_t)e + 1, fd);
	if (fd >= 0)
		close(fd);
	if (n != 0 || (n = recv_msg(s, buf, sizeof(buf) - 1, &fd)) <= 0) {
		fprintf(stderr, "modelfs upgrade: %s: the holder did not answer\n", argv[2]);
		return 1;
	}
	if (fd >= 0)
		close(fd);
	buf[n] = '\0';
	if (buf[0] == '0') {
		printf("modelfs upgrade: %s: %s\n", argv[2], buf + 1);
		return 0;
	}
	fprintf(stderr, "modelfs upgrade: %s: %s\n", argv[2], buf + 1);
	return 1;
}
