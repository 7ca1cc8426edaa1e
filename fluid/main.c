/* modelfs-fluid: the FUSE container's entrypoint for Fluid's ThinRuntime
 * (also `modelfs fluid ...`, which runs it).
 *
 *   modelfs fluid [-o OPT[,OPT...]]... [--modelfs PATH] [--dry-run] [CONFIG]
 *
 * It reads Fluid's config (CONFIG, default /etc/fluid/config/config.json;
 * config.h), mounts every mount with the modelfs binary beside it, stays
 * in the foreground while they serve, and on SIGTERM takes them down and
 * exits 0. The container's PID 1, it outlives the daemons: each mount's
 * daemon runs with -f as its child, in a process group of its own, and the
 * daemon's holder (which starts a new daemon when one crashes, or for
 * `modelfs upgrade`) is re-parented here when the first daemon goes
 * (PR_SET_CHILD_SUBREAPER), not to whatever is above.
 *
 * What tells how a mount is doing: every process of a mount (the daemon,
 * its holder, the daemons the holder starts) writes to one pipe, its
 * stderr, which is read here. A daemon's exit alone means nothing (its
 * holder may start the next); the pipe's end means every process of the
 * mount is gone: then a mount still on the path is dead (exit 1, so
 * Kubernetes restarts the container), and none is an unmount from outside
 * (Fluid's preStop `umount`: exit 0 once the others are down). A mount is
 * up when a statfs of its path, made in a child (it waits until the
 * daemon's session answers), says FUSE on a new device: by then modelfs
 * has done all of its start. What the daemons write is held back until
 * every mount is up, so a failed start says one line, its own; then it is
 * passed on to stderr (kubectl logs), each line whole.
 */
#include "config.h"
#include "optmap.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#ifndef MODELFS_VERSION
#define MODELFS_VERSION "0.0.0"
#endif

#define DEFAULT_CONFIG "/etc/fluid/config/config.json"
#define OLD_CONFIG "/etc/fluid/config.json" /* Fluid before v1.1 */
#define DEFAULT_SECRETS "/etc/fluid/secrets"
#define FUSE_SUPER_MAGIC 0x65735546
#define HELD_MAX (1u << 20)  /* a mount's lines held back during the start */
#define DETACH_WAIT_MS 10000 /* SIGTERM: a daemon takes its mount off its path at once */

extern char **environ;

/* One mount being served. */
struct mnt {
	const struct fluid_mount *fm;
	char *path;           /* fm->target with its directory resolved */
	pid_t pid;            /* the daemon started here; 0 once reaped */
	int status;           /* its wait status, once reaped (exited) */
	int exited;
	pid_t pgid;           /* it, its holder, the daemons the holder starts */
	int out_fd;           /* the pipe they all write to; -1 once they are all gone */
	char part[4096];      /* a line not ended yet */
	size_t part_len;
	char last[1024];      /* the last line: its error, when it fails */
	char *held;           /* lines held back while mounts start */
	size_t held_len, held_cap;
	int held_dropped;
	dev_t dev_before;     /* the path's device before the mount */
	int up;
	int told;             /* a signal was passed on to its group */
	pid_t probe_pid;      /* the child making a statfs of the path */
	int probe_fd;
};

/* The one context, passed down. */
struct sup {
	struct mnt *m;
	size_t n;
	int sfd;              /* signalfd: SIGCHLD, SIGTERM, SIGINT, SIGHUP */
	int holding;          /* the start: lines are held */
	int prefix;           /* several mounts: a text line says whose */
	int term, intr;       /* signals seen, not yet acted on */
	const char *modelfs;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	/* one line, whatever a name in the config had in it */
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20)
			line[i] = '?';
	line[n++] = '\n';
	/* one write: a line never mixes with a daemon's */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The keys of @kind (for OPTMAP_VALUE: the aliases of @name), wrapped. */
static void usage_keys(FILE *f, const char *title, enum optmap_kind kind, const char *name)
{
	unsigned n, col;
	const struct optmap_entry *t = optmap_all(&n);

	fprintf(f, "  %s\n   ", title);
	col = 3;
	for (unsigned i = 0; i < n; i++) {
		size_t len = strlen(t[i].key);
		if (t[i].kind != kind || (name && (strcmp(t[i].name, name) != 0 ||
						   strcmp(t[i].key, name) == 0)))
			continue;
		if (col + len + 1 > 79) {
			fprintf(f, "\n   ");
			col = 3;
		}
		fprintf(f, " %s", t[i].key);
		col += (unsigned)len + 1;
	}
	fprintf(f, "\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: modelfs fluid [-o OPT[,OPT...]]... [--modelfs PATH] [--dry-run] [CONFIG]\n"
		"The entrypoint of Fluid ThinRuntime's FUSE container: mounts every mount of\n"
		"CONFIG (default %s) with modelfs, stays in the\n"
		"foreground, unmounts them on SIGTERM and exits 0; exits 1 when a mount dies.\n"
		"  -o OPT[,OPT...]   options for every mount (the ThinRuntime's fuse.args)\n"
		"  --modelfs PATH    the modelfs binary (default: beside this one)\n"
		"  --dry-run         check CONFIG and print each mount's command line\n"
		"                    (secrets: their variables' names only)\n"
		"Options come from $MOUNT_OPTIONS, runtimeOptions, -o, then each mount's options\n"
		"and encryptOptions, a later one winning. Keys: modelfs's -o names (modelfs\n"
		"--help; a flag's value is \"\", true or false), and these spellings:\n",
		DEFAULT_CONFIG);
	usage_keys(f, "endpoint=:", OPTMAP_VALUE, "endpoint");
	usage_keys(f, "region=:", OPTMAP_VALUE, "region");
	usage_keys(f, "the access key id (OSS_ACCESS_KEY_ID for oss://, AWS_ACCESS_KEY_ID for s3://):",
		   OPTMAP_KEY_ID, NULL);
	usage_keys(f, "its secret (OSS_ACCESS_KEY_SECRET, AWS_SECRET_ACCESS_KEY):", OPTMAP_KEY_SECRET,
		   NULL);
	usage_keys(f, "a session token (OSS_SESSION_TOKEN, AWS_SESSION_TOKEN):", OPTMAP_KEY_TOKEN,
		   NULL);
	usage_keys(f, "the variables themselves:", OPTMAP_ENV, NULL);
	fprintf(f,
		"  token: a bearer token for hf:// and http(s)://: its secret's path becomes\n"
		"    token_file= (re-read when the Secret changes); a plain value HF_TOKEN (hf://)\n"
		"A value that is a path under $MODELFS_FLUID_SECRETS_DIR (default %s)\n"
		"is read from that file. Credentials go to modelfs's environment, never to its\n"
		"command line or a log. Exit status: 0 stopped by SIGTERM/SIGINT, or unmounted\n"
		"from outside; 1 a mount died; 2 a bad config or option; 3-5 modelfs's (no such\n"
		"bucket, access denied, store unreachable).\n",
		DEFAULT_SECRETS);
}

/* modelfs beside this binary: one image, one version of both. */
static char *beside_me(void)
{
	char self[PATH_MAX], *slash, *out = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return strdup("/usr/bin/modelfs");
	self[n] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	if (asprintf(&out, "%s/modelfs", self) < 0)
		return NULL;
	return out;
}

/* Split "a,b\,c" into -o items ("a", "b,c"). @return 0 or -ENOMEM. */
static int add_cli_opts(const char *text, char ***v, size_t *n)
{
	const char *p = text;

	while (*p) {
		char *item = malloc(strlen(p) + 1), *w = item, **grown;
		if (!item)
			return -ENOMEM;
		for (; *p && *p != ','; p++) {
			if (*p == '\\' && p[1])
				p++;
			*w++ = *p;
		}
		*w = '\0';
		if (*p == ',')
			p++;
		if (!*item) {
			free(item);
			continue;
		}
		if (!(grown = realloc(*v, (*n + 1) * sizeof(*grown)))) {
			free(item);
			return -ENOMEM;
		}
		grown[(*n)++] = item;
		*v = grown;
	}
	return 0;
}

/* Is @path a mount point (/proc/self/mountinfo's fifth field, octal
 * escapes undone)? Reads no file of the mount: a dead or hung one too. */
static int is_mount_point(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return 0;
	while (!found && getline(&line, &cap, f) > 0) {
		char mp[PATH_MAX], *o = mp, *p = line;

		for (int field = 0; field < 4 && p; field++)
			if ((p = strchr(p, ' ')))
				p++;
		if (!p)
			continue;
		while (*p && *p != ' ' && o < mp + sizeof(mp) - 1) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 4;
			} else {
				*o++ = *p++;
			}
		}
		*o = '\0';
		found = strcmp(mp, path) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

/* mkdir -p @path. @return 0 or -errno. */
static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;
			*p = '\0';
			/* EEXIST: a directory, or a mount on it (a dead one answers
			 * nothing else) */
			if (mkdir(buf, 0755) != 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				break;
		}
	}
	return 0;
}

/* @target with its directory's symlinks resolved, as mountinfo shows it
 * (the last part is not looked at: it may be a dead mount). */
static char *resolve_target(const char *target)
{
	char dir[PATH_MAX], real[PATH_MAX], *slash, *out = NULL;

	snprintf(dir, sizeof(dir), "%s", target);
	slash = strrchr(dir, '/');
	if (!slash || !slash[1])
		return strdup(target);
	*slash = '\0';
	if (!realpath(*dir ? dir : "/", real))
		return strdup(target);
	if (asprintf(&out, "%s/%s", strcmp(real, "/") == 0 ? "" : real, slash + 1) < 0)
		return NULL;
	return out;
}

/* ---- the daemons' lines */

static void held_add(struct mnt *m, const char *line, size_t len)
{
	if (m->held_len + len > HELD_MAX) {
		m->held_dropped++;
		return;
	}
	if (m->held_len + len > m->held_cap) {
		size_t cap = m->held_cap ? m->held_cap : 8192;
		char *b;
		while (cap < m->held_len + len)
			cap *= 2;
		if (!(b = realloc(m->held, cap))) {
			m->held_dropped++;
			return;
		}
		m->held = b;
		m->held_cap = cap;
	}
	memcpy(m->held + m->held_len, line, len);
	m->held_len += len;
}

/* A whole line of @m's (with its '\n'): kept as the last, then held or
 * passed on. Several mounts: a text line starts with the mount's name (a
 * JSON line already names its mount). */
static void line_out(struct sup *s, struct mnt *m, const char *line, size_t len)
{
	char buf[sizeof(m->part) + 600];
	size_t n = 0;

	snprintf(m->last, sizeof(m->last), "%.*s", (int)(len && line[len - 1] == '\n' ? len - 1 : len),
		 line);
	if (s->prefix && line[0] != '{')
		n = (size_t)snprintf(buf, sizeof(buf), "[%s] ", m->fm->label);
	if (n + len > sizeof(buf))
		len = sizeof(buf) - n;
	memcpy(buf + n, line, len);
	n += len;
	if (s->holding)
		held_add(m, buf, n);
	else if (write(STDERR_FILENO, buf, n) < 0) {
		/* our stderr is gone: nothing to do */
	}
}

/* Read what @m's processes wrote; at the end (all of them gone) the fd
 * is closed and -1. */
static void mnt_read(struct sup *s, struct mnt *m)
{
	char buf[8192];
	ssize_t got;

	while (m->out_fd >= 0) {
		got = read(m->out_fd, buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0 && errno == EAGAIN)
			return;
		if (got <= 0) {
			if (m->part_len) {
				m->part[m->part_len++] = '\n';
				line_out(s, m, m->part, m->part_len);
				m->part_len = 0;
			}
			close(m->out_fd);
			m->out_fd = -1;
			return;
		}
		for (ssize_t i = 0; i < got; i++) {
			m->part[m->part_len++] = buf[i];
			if (buf[i] == '\n' || m->part_len == sizeof(m->part) - 1) {
				if (buf[i] != '\n')
					m->part[m->part_len++] = '\n';
				line_out(s, m, m->part, m->part_len);
				m->part_len = 0;
			}
		}
	}
}

static void held_flush(struct sup *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct mnt *m = &s->m[i];
		if (m->held_len && write(STDERR_FILENO, m->held, m->held_len) < 0) {
			/* our stderr is gone */
		}
		if (m->held_dropped)
			say("modelfs fluid: %s: %d lines of its start not shown (more than 1 MiB)",
			    m->fm->label, m->held_dropped);
		free(m->held);
		m->held = NULL;
		m->held_len = m->held_cap = 0;
	}
	s->holding = 0;
}

/* ---- children */

static void reap(struct sup *s)
{
	pid_t pid;
	int st;

	/* everything: our daemons, probes, and the holders and daemons
	 * re-parented to us (subreaper) */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
		for (size_t i = 0; i < s->n; i++) {
			if (pid == s->m[i].pid) {
				s->m[i].status = st;
				s->m[i].exited = 1;
				s->m[i].pid = 0;
			}
			if (pid == s->m[i].probe_pid)
				s->m[i].probe_pid = 0;
		}
}

/* Wait up to @ms for something: a signal, a line, a probe's answer. */
static void pump(struct sup *s, int ms)
{
	struct pollfd p[1 + 2 * s->n];
	struct mnt *who[1 + 2 * s->n];
	int np = 0, r;

	p[np] = (struct pollfd){s->sfd, POLLIN, 0};
	who[np++] = NULL;
	for (size_t i = 0; i < s->n; i++) {
		if (s->m[i].out_fd >= 0) {
			p[np] = (struct pollfd){s->m[i].out_fd, POLLIN, 0};
			who[np++] = &s->m[i];
		}
		if (s->m[i].probe_fd >= 0) {
			p[np] = (struct pollfd){s->m[i].probe_fd, POLLIN, 0};
			who[np++] = &s->m[i];
		}
	}
	r = poll(p, (nfds_t)np, ms);
	if (r <= 0)
		return;
	if (p[0].revents) {
		struct signalfd_siginfo si;
		while (read(s->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGCHLD)
				reap(s);
			else if (si.ssi_signo == SIGINT)
				s->intr++;
			else
				s->term++; /* SIGTERM, SIGHUP */
		}
	}
	for (int i = 1; i < np; i++) {
		struct mnt *m = who[i];
		if (!p[i].revents)
			continue;
		if (p[i].fd == m->out_fd) {
			mnt_read(s, m);
		} else if (p[i].fd == m->probe_fd) {
			struct {
				int err;
				long type;
				dev_t dev;
			} res = {0};
			if (read(m->probe_fd, &res, sizeof(res)) == (ssize_t)sizeof(res) && !res.err &&
			    res.type == FUSE_SUPER_MAGIC && res.dev != m->dev_before)
				m->up = 1;
			close(m->probe_fd);
			m->probe_fd = -1;
		}
	}
}

/* A statfs of @m's path in a child: it waits until the daemon answers
 * (or dies), which must not stop us. */
static void probe_start(struct mnt *m)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) != 0)
		return;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		struct {
			int err;
			long type;
			dev_t dev;
		} res = {0};
		struct statfs sf;
		struct stat st;
		if (statfs(m->path, &sf) != 0 || stat(m->path, &st) != 0)
			res.err = errno;
		else {
			res.type = (long)sf.f_type;
			res.dev = st.st_dev;
		}
		_exit(write(p[1], &res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 1);
	}
	close(p[1]);
	m->probe_pid = pid;
	m->probe_fd = p[0];
}

static void probe_stop(struct mnt *m)
{
	if (m->probe_pid > 0)
		kill(m->probe_pid, SIGKILL); /* reaped with the others */
	if (m->probe_fd >= 0)
		close(m->probe_fd);
	m->probe_fd = -1;
}

/* Is a variable named in @names (NULL-ended, "NAME" or "NAME=...")? */
static int env_named(char *const *names, size_t n, const char *var)
{
	size_t len = strcspn(var, "=");

	for (size_t i = 0; i < n; i++)
		if (strncmp(names[i], var, len) == 0 && (names[i][len] == '=' || !names[i][len]))
			return 1;
	return 0;
}

/* Start @m's daemon: modelfs SOURCE PATH -f -o ..., the mount's secrets
 * in its environment over ours (less the credentials it replaces). */
static int mnt_spawn(struct sup *s, struct mnt *m, char *msg, size_t msg_len)
{
	const struct fluid_mount *fm = m->fm;
	size_t ne = 0, na = 0;
	char **argv = NULL, **envp = NULL;
	int p[2] = {-1, -1}, nul = -1, err = -ENOMEM;
	struct stat st;
	pid_t pid;

	for (char **e = environ; *e; e++)
		ne++;
	if (!(argv = calloc(5 + 2 * fm->n_opts, sizeof(*argv))) ||
	    !(envp = calloc(ne + fm->n_env + 1, sizeof(*envp))))
		goto out;
	argv[na++] = (char *)s->modelfs;
	argv[na++] = fm->source;
	argv[na++] = m->path;
	argv[na++] = (char *)"-f"; /* its child: logs to the pipe, watched here */
	for (size_t i = 0; i < fm->n_opts; i++) {
		argv[na++] = (char *)"-o";
		argv[na++] = fm->opts[i];
	}
	ne = 0;
	for (char **e = environ; *e; e++)
		if (!env_named(fm->env_drop, fm->n_env_drop, *e) && !env_named(fm->env, fm->n_env, *e))
			envp[ne++] = *e;
	for (size_t i = 0; i < fm->n_env; i++)
		envp[ne++] = fm->env[i];
	m->dev_before = stat(m->path, &st) == 0 ? st.st_dev : 0;
	if (pipe2(p, O_CLOEXEC) != 0 || (nul = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		err = -errno;
		snprintf(msg, msg_len, "cannot start modelfs: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		err = -errno;
		snprintf(msg, msg_len, "cannot start modelfs: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		static const char cannot[] = "modelfs fluid: cannot run the modelfs binary\n";
		sigset_t none;

		/* a group of its own: a terminal's Ctrl-C is ours to pass on;
		 * and its holder and later daemons are in it */
		setpgid(0, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(nul, STDIN_FILENO);
		dup2(p[1], STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		close_range(3, ~0U, 0);
		execve(s->modelfs, argv, envp);
		if (write(STDERR_FILENO, cannot, sizeof(cannot) - 1) < 0)
			_exit(127);
		_exit(127);
	}
	setpgid(pid, pid); /* as the child does: whichever runs first */
	m->pid = m->pgid = pid;
	m->out_fd = p[0];
	p[0] = -1;
	fcntl(m->out_fd, F_SETFL, O_NONBLOCK);
	err = 0;
out:
	if (err == -ENOMEM && !*msg)
		snprintf(msg, msg_len, "out of memory");
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	if (nul >= 0)
		close(nul);
	free(argv);
	free(envp);
	return err;
}

/* modelfs's line, without its "modelfs: " (or the message of a JSON one). */
static void daemon_line(const struct mnt *m, char *out, size_t len)
{
	json_t *j;

	if (!*m->last) {
		if (m->exited && WIFSIGNALED(m->status))
			snprintf(out, len, "modelfs was killed by signal %d", WTERMSIG(m->status));
		else if (m->exited)
			snprintf(out, len, "modelfs exited with status %d without a word (log_file= "
				 "says why)", WEXITSTATUS(m->status));
		else
			snprintf(out, len, "modelfs ended without a word");
		return;
	}
	if (m->last[0] == '{' && (j = json_loads(m->last, 0, NULL))) {
		const char *msg = json_string_value(json_object_get(j, "message"));
		snprintf(out, len, "%s", msg ? msg : m->last);
		json_decref(j);
		return;
	}
	snprintf(out, len, "%s", strncmp(m->last, "modelfs: ", 9) == 0 ? m->last + 9 : m->last);
}

/* ---- stopping */

static int any(struct sup *s, int (*pred)(struct mnt *))
{
	for (size_t i = 0; i < s->n; i++)
		if (pred(&s->m[i]))
			return 1;
	return 0;
}

static int alive_on_path(struct mnt *m)
{
	return m->out_fd >= 0 && m->path && is_mount_point(m->path);
}

static int alive(struct mnt *m)
{
	return m->out_fd >= 0;
}

static void tell(struct sup *s, int sig)
{
	for (size_t i = 0; i < s->n; i++) {
		struct mnt *m = &s->m[i];
		probe_stop(m);
		/* SIGTERM once (a second would end the daemon's grace: kubelet
		 * sends one after a preStop hook that sent one already) */
		if (m->out_fd >= 0 && m->pgid > 0 && (sig != SIGTERM || !m->told))
			kill(-m->pgid, sig);
		m->told = 1;
	}
}

/* Take every mount down: @graceful (SIGTERM), each daemon takes its mount
 * off the path at once and serves the files still open for its
 * term_grace; else (SIGINT) the daemons end at once. A mount still on its
 * path after that is unmounted here (lazily if busy), a daemon still there
 * when its time is up is killed, and nothing is left mounted. */
static void stop_all(struct sup *s, int graceful)
{
	uint64_t until;
	unsigned grace_s = 0;

	s->term = s->intr = 0;
	tell(s, graceful ? SIGTERM : SIGINT);
	until = now_ms() + (graceful ? DETACH_WAIT_MS : 2000);
	while (now_ms() < until && any(s, alive_on_path)) {
		pump(s, 200);
		if (s->intr && graceful) {
			graceful = 0;
			tell(s, SIGINT);
		}
	}
	for (size_t i = 0; i < s->n; i++) {
		struct mnt *m = &s->m[i];
		if (m->path && is_mount_point(m->path) && umount2(m->path, UMOUNT_NOFOLLOW) != 0)
			umount2(m->path, MNT_DETACH | UMOUNT_NOFOLLOW);
		if (m->fm->term_grace_s > grace_s)
			grace_s = m->fm->term_grace_s;
	}
	until = now_ms() + (graceful ? grace_s * 1000ull + 5000 : 3000);
	while (now_ms() < until && any(s, alive)) {
		pump(s, 200);
		if (s->intr && graceful) {
			graceful = 0;
			tell(s, SIGINT);
			if (until > now_ms() + 3000)
				until = now_ms() + 3000;
		}
	}
	for (size_t i = 0; i < s->n; i++)
		if (s->m[i].out_fd >= 0 && s->m[i].pgid > 0)
			kill(-s->m[i].pgid, SIGKILL);
	until = now_ms() + 2000;
	while (now_ms() < until && any(s, alive))
		pump(s, 100);
	for (size_t i = 0; i < s->n; i++)
		if (s->m[i].path && is_mount_point(s->m[i].path))
			umount2(s->m[i].path, MNT_DETACH | UMOUNT_NOFOLLOW);
	reap(s);
}

/* ---- starting */

/* Start @m and wait until it serves. @return 0 up, 1 stopped by a
 * signal, or the exit status for its failure (its line in @msg). */
static int mnt_start(struct sup *s, struct mnt *m, char *msg, size_t msg_len)
{
	uint64_t next_probe = 0;
	char line[1200];
	int err;

	if ((err = mkdir_p(m->fm->target)) != 0) {
		snprintf(msg, msg_len, "%s: cannot make %s: %s", m->fm->label, m->fm->target,
			 strerror(-err));
		return 1;
	}
	if (!(m->path = resolve_target(m->fm->target)) || mnt_spawn(s, m, line, sizeof(line))) {
		snprintf(msg, msg_len, "%s: %s", m->fm->label, m->path ? line : "out of memory");
		return 1;
	}
	for (;;) {
		if (m->up) {
			probe_stop(m);
			return 0;
		}
		if (s->term || s->intr)
			return -1;
		/* died by itself (modelfs's exit with its line: nothing of it is
		 * left), or everything of it is gone */
		if ((m->exited && WIFEXITED(m->status)) || m->out_fd < 0) {
			uint64_t until = now_ms() + 2000;
			/* the rest of its lines, and its status (the pipe's end can
			 * come before SIGCHLD) */
			while ((m->out_fd >= 0 || (m->pid && !m->exited)) && now_ms() < until)
				pump(s, 100);
			if (m->exited && WIFEXITED(m->status) && WEXITSTATUS(m->status) == 0)
				snprintf(line, sizeof(line), "modelfs ended before it served (was the path "
					 "unmounted?)");
			else
				daemon_line(m, line, sizeof(line));
			snprintf(msg, msg_len, "%s: %s on %s: %s", m->fm->label, m->fm->source,
				 m->fm->target, line);
			if (m->exited && WIFEXITED(m->status) && WEXITSTATUS(m->status) >= 2 &&
			    WEXITSTATUS(m->status) <= 5)
				return WEXITSTATUS(m->status);
			return 1;
		}
		if (m->probe_fd < 0 && m->probe_pid == 0 && now_ms() >= next_probe) {
			probe_start(m);
			next_probe = now_ms() + 100;
		}
		pump(s, 100);
	}
}

/* ---- serving */

/* Every mount is up: wait for a signal or the end of one. @return the
 * exit status. */
static int serve(struct sup *s)
{
	char line[1200];

	for (;;) {
		if (s->intr || s->term) {
			stop_all(s, !s->intr);
			return 0;
		}
		for (size_t i = 0; i < s->n; i++) {
			struct mnt *m = &s->m[i];
			if (m->out_fd >= 0)
				continue;
			/* every process of this mount is gone */
			daemon_line(m, line, sizeof(line));
			if (is_mount_point(m->path)) {
				say("modelfs fluid: %s: %s on %s died (its daemon and holder are gone; last: "
				    "%s): stopping, for a restart", m->fm->label, m->fm->source, m->path,
				    line);
				stop_all(s, 0);
				return 1;
			}
			if (m->exited && WIFEXITED(m->status) && WEXITSTATUS(m->status) != 0) {
				say("modelfs fluid: %s: %s on %s ended: %s", m->fm->label, m->fm->source,
				    m->path, line);
				stop_all(s, 0);
				return 1;
			}
			say("modelfs fluid: %s: %s was unmounted, not by modelfs fluid: stopping",
			    m->fm->label, m->path);
			stop_all(s, 1);
			return 0;
		}
		pump(s, 1000);
	}
}

static void dry_run(const struct fluid_config *cfg, const char *modelfs)
{
	for (size_t i = 0; i < cfg->n_mounts; i++) {
		const struct fluid_mount *m = &cfg->mounts[i];
		printf("%s\n  target %s\n  run %s %s %s -f", m->label, m->target, modelfs, m->source,
		       m->target);
		for (size_t k = 0; k < m->n_opts; k++)
			printf(" -o %s", m->opts[k]);
		printf("\n  env");
		for (size_t k = 0; k < m->n_env; k++)
			printf(" %.*s", (int)strcspn(m->env[k], "="), m->env[k]);
		printf("\n  env_drop");
		for (size_t k = 0; k < m->n_env_drop; k++)
			printf(" %s", m->env_drop[k]);
		printf("\n  term_grace %u\n", m->term_grace_s);
	}
}

int main(int argc, char **argv)
{
	struct fluid_inputs in = {0};
	struct fluid_config *cfg = NULL;
	struct sup s = {0};
	char **cli = NULL, msg[1500] = "", *secrets = NULL, *modelfs = NULL;
	const char *config = NULL, *sd;
	size_t n_cli = 0;
	int dry = 0, ret = 2, r;
	sigset_t sigs;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			ret = 0;
			goto out;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("modelfs-fluid %s\n", MODELFS_VERSION);
			ret = 0;
			goto out;
		} else if (strcmp(a, "--dry-run") == 0) {
			dry = 1;
		} else if (strcmp(a, "-o") == 0 || strncmp(a, "-o", 2) == 0) {
			const char *v = a[2] ? a + 2 : i + 1 < argc ? argv[++i] : NULL;
			if (!v) {
				say("modelfs fluid: -o needs options after it");
				goto out;
			}
			if (add_cli_opts(v, &cli, &n_cli)) {
				say("modelfs fluid: out of memory");
				goto out;
			}
		} else if (strcmp(a, "--modelfs") == 0 || strncmp(a, "--modelfs=", 10) == 0) {
			const char *v = a[9] == '=' ? a + 10 : i + 1 < argc ? argv[++i] : NULL;
			if (!v || !*v) {
				say("modelfs fluid: --modelfs needs a path");
				goto out;
			}
			free(modelfs);
			modelfs = strdup(v);
		} else if (a[0] == '-' && a[1]) {
			say("modelfs fluid: unknown argument '%s' (modelfs fluid --help)", a);
			goto out;
		} else if (config) {
			say("modelfs fluid: one config file only ('%s' and '%s')", config, a);
			goto out;
		} else {
			config = a;
		}
	}
	if (!config)
		config = access(DEFAULT_CONFIG, F_OK) != 0 && access(OLD_CONFIG, F_OK) == 0
			 ? OLD_CONFIG
			 : DEFAULT_CONFIG;
	if (!modelfs && !(modelfs = beside_me())) {
		say("modelfs fluid: out of memory");
		goto out;
	}
	sd = getenv("MODELFS_FLUID_SECRETS_DIR");
	if (!(secrets = strdup(sd && *sd ? sd : DEFAULT_SECRETS))) {
		say("modelfs fluid: out of memory");
		goto out;
	}
	for (size_t l = strlen(secrets); l > 1 && secrets[l - 1] == '/'; l--)
		secrets[l - 1] = '\0';
	in = (struct fluid_inputs){config, secrets, cli, n_cli, getenv("MOUNT_OPTIONS"),
				   getenv("MOUNT_POINT")};
	if ((r = fluid_config_load(&in, &cfg, msg, sizeof(msg)))) {
		say("modelfs fluid: %s", msg);
		ret = r == -ENOMEM ? 1 : 2;
		goto out;
	}
	if (dry) {
		dry_run(cfg, modelfs);
		ret = 0;
		goto out;
	}
	if (access(modelfs, X_OK) != 0) {
		say("modelfs fluid: cannot run %s: %s (--modelfs PATH)", modelfs, strerror(errno));
		ret = 1;
		goto out;
	}

	/* signals as events of the loop; children start with none blocked */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	signal(SIGPIPE, SIG_IGN);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) != 0 ||
	    (s.sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		say("modelfs fluid: cannot take signals: %s", strerror(errno));
		ret = 1;
		goto out;
	}
	/* the holders and their daemons come to us when a daemon goes */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
		say("modelfs fluid: not a subreaper (%s): a crashed daemon's holder is not reaped here",
		    strerror(errno));
	s.modelfs = modelfs;
	s.n = cfg->n_mounts;
	s.holding = 1;
	s.prefix = cfg->n_mounts > 1;
	if (!(s.m = calloc(s.n, sizeof(*s.m)))) {
		say("modelfs fluid: out of memory");
		ret = 1;
		goto out;
	}
	for (size_t i = 0; i < s.n; i++)
		s.m[i] = (struct mnt){.fm = &cfg->mounts[i], .out_fd = -1, .probe_fd = -1};
	for (size_t i = 0; i < s.n; i++) {
		r = mnt_start(&s, &s.m[i], msg, sizeof(msg));
		if (r == 0)
			continue;
		/* nothing is left mounted, whatever the way out */
		stop_all(&s, r < 0 && !s.intr);
		if (r < 0) {
			ret = 0; /* told to stop while starting */
		} else {
			say("modelfs fluid: %s", msg);
			ret = r;
		}
		goto out;
	}
	held_flush(&s);
	ret = serve(&s);
out:
	if (s.m) {
		for (size_t i = 0; i < s.n; i++) {
			probe_stop(&s.m[i]);
			if (s.m[i].out_fd >= 0)
				close(s.m[i].out_fd);
			free(s.m[i].held);
			free(s.m[i].path);
		}
		free(s.m);
	}
	if (s.sfd > 0)
		close(s.sfd);
	fluid_config_free(cfg);
	for (size_t i = 0; i < n_cli; i++)
		free(cli[i]);
	free(cli);
	free(secrets);
	free(modelfs);
	return ret;
}
