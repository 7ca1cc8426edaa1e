/* The client side of the control channel: "modelfs prefetch" and "modelfs
 * status" talk to the daemon serving a mount through its xattrs (see
 * control_xattr in ops.c), so they need no socket, find the right daemon by
 * the path alone, and are subject to the kernel's view of the caller. */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

struct ctl_file {
	char *path;
	uint64_t size;
};

static struct ctl_file *files;
static size_t n_files, cap_files;

static int add_file(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)f;
	if (flag != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (n_files == cap_files) {
		size_t ncap = cap_files ? cap_files * 2 : 64;
		struct ctl_file *nf = realloc(files, ncap * sizeof(*nf));
		if (!nf)
			return -1;
		files = nf;
		cap_files = ncap;
	}
	files[n_files].path = strdup(path);
	files[n_files].size = (uint64_t)st->st_size;
	return files[n_files++].path ? 0 : -1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long status_field(const char *path, const char *field)
{
	char buf[1024], *p;
	ssize_t n = getxattr(path, "user.modelfs.status", buf, sizeof(buf) - 1);

	if (n < 0)
		return -1;
	buf[n] = '\0';
	p = strstr(buf, field);
	return p ? strtol(p + strlen(field) + 1, NULL, 10) : -1;
}

static int say_error(const char *path, int e)
{
	switch (e) {
	case EPERM:
		fprintf(stderr, "modelfs: %s: only root or the mount's owner may prefetch\n", path);
		break;
	case ENOSPC:
		fprintf(stderr, "modelfs: %s: does not fit in the cache quota (see the daemon's log; "
				"raise cache_size)\n", path);
		break;
	case ENOTSUP:
	case ENODATA:
		fprintf(stderr, "modelfs: %s: not on a modelfs mount with a disk cache\n", path);
		break;
	default:
		fprintf(stderr, "modelfs: %s: %s\n", path, strerror(e));
	}
	return 1;
}

int ctl_prefetch(int argc, char **argv)
{
	int wait = 0, memory = 0, quiet = 0, tty = isatty(STDERR_FILENO), i, ret = 0;
	uint64_t total = 0;
	long failed0 = 0;
	char *first = NULL;

	for (i = 2; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--memory") == 0)
			memory = wait = 1;
		else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0)
			quiet = 1;
		else {
			fprintf(stderr, "usage: modelfs prefetch [--wait] [--memory] [--quiet] PATH...\n");
			return 2;
		}
	}
	if (i == argc) {
		fprintf(stderr, "usage: modelfs prefetch [--wait] [--memory] [--quiet] PATH...\n");
		return 2;
	}
	/* PATHs, and globs the shell did not expand (quoted ones) */
	{
		glob_t g = {0};
		int flags = 0;
		for (; i < argc; i++) {
			if (glob(argv[i], flags | GLOB_NOCHECK, NULL, &g) != 0) {
				fprintf(stderr, "modelfs: %s: cannot expand\n", argv[i]);
				return 1;
			}
			flags = GLOB_APPEND;
		}
		first = g.gl_pathc ? strdup(g.gl_pathv[0]) : NULL;
		failed0 = first ? status_field(first, "files_failed") : 0;
		for (size_t k = 0; k < g.gl_pathc; k++) {
			const char *path = g.gl_pathv[k];
			char buf[512];
			struct stat st;
			ssize_t n;

			if (stat(path, &st) < 0) {
				fprintf(stderr, "modelfs: %s: %s\n", path, strerror(errno));
				globfree(&g);
				free(first);
				return 1;
			}
			n = getxattr(path, "user.modelfs.prefetch", buf, sizeof(buf) - 1);
			if (n < 0) {
				ret = say_error(path, errno);
				globfree(&g);
				free(first);
				return ret;
			}
			buf[n] = '\0';
			if (!quiet)
				fprintf(stderr, "%s: %s", path, buf);
			if (S_ISDIR(st.st_mode))
				nftw(path, add_file, 16, FTW_PHYS);
			else
				add_file(path, &st, FTW_F, NULL);
		}
		globfree(&g);
	}
	for (size_t k = 0; k < n_files; k++)
		total += files[k].size;
	if (!wait)
		goto out;

	{
		double t0 = now_s(), last = 0;
		uint64_t cached0 = UINT64_MAX; /* already cached at the start */
		for (;;) {
			uint64_t cached = 0;
			size_t done = 0;
			double t = now_s();
			for (size_t k = 0; k < n_files; k++) {
				char v[64];
				ssize_t n = getxattr(files[k].path, "user.modelfs.cached", v, sizeof(v) - 1);
				unsigned long long c = 0;
				if (n > 0) {
					v[n] = '\0';
					c = strtoull(v, NULL, 10);
				}
				cached += c;
				done += c >= files[k].size;
			}
			if (cached0 == UINT64_MAX)
				cached0 = cached;
			if (!quiet && (tty || t - last >= 5 || done == n_files)) {
				/* the rate of what this run fetched, not of what was
				 * cached before it; no ETA until something moves */
				double rate = t - t0 > 0.1 && cached > cached0
						  ? (double)(cached - cached0) / 1e6 / (t - t0)
						  : 0;
				int bar = total ? (int)(30.0 * (double)cached / (double)total) : 30;
				char eta[32];
				if (done == n_files)
					snprintf(eta, sizeof(eta), "done");
				else if (rate > 0)
					snprintf(eta, sizeof(eta), "ETA %.0f s",
						 (double)(total - cached) / 1e6 / rate);
				else
					snprintf(eta, sizeof(eta), "ETA -");
				fprintf(stderr, "%s[%.*s%*s] %.2f/%.2f GiB  %zu/%zu files  %.0f MB/s  "
						"%s%s",
					tty ? "\r" : "", bar, "##############################",
					30 - bar, "", (double)cached / (1 << 30),
					(double)total / (1 << 30), done, n_files, rate, eta,
					tty ? "  " : "\n");
				last = t;
			}
			if (done == n_files)
				break;
			if (status_field(first, "files_failed") > failed0) {
				if (!quiet && tty)
					fputc('\n', stderr);
				fprintf(stderr, "modelfs: prefetch failed (see the daemon's log)\n");
				ret = 1;
				goto out;
			}
			usleep(200 * 1000);
		}
		if (!quiet && tty)
			fputc('\n', stderr);
	}
	if (memory) {
		/* pull every file through the page cache so the first read is hot */
		char *buf = malloc(1 << 20);
		for (size_t k = 0; buf && k < n_files; k++) {
			int fd = open(files[k].path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			/* plain reads: with passthrough they fill the cache file's
			 * pages, which is what later reads use (a WILLNEED would
			 * fill the mount's own pages through the daemon) */
			while (read(fd, buf, 1 << 20) > 0)
				;
			close(fd);
		}
		free(buf);
	}
out:
	for (size_t k = 0; k < n_files; k++)
		free(files[k].path);
	free(files);
	free(first);
	return ret;
}

int ctl_status(int argc, char **argv)
{
	int ready_only = 0, i = 2;
	char buf[1024];
	ssize_t n;

	if (i < argc && strcmp(argv[i], "--ready") == 0) {
		ready_only = 1;
		i++;
	}
	if (i + 1 != argc) {
		fprintf(stderr, "usage: modelfs status [--ready] MOUNTPOINT\n");
		return 2;
	}
	n = getxattr(argv[i], "user.modelfs.status", buf, sizeof(buf) - 1);
	if (n < 0) {
		if (!ready_only)
			fprintf(stderr, "modelfs: %s: not a modelfs mount (%s)\n", argv[i],
				strerror(errno));
		return 2;
	}
	buf[n] = '\0';
	if (!ready_only)
		fputs(buf, stdout);
	return strstr(buf, "ready=1") ? 0 : 1;
}

int ctl_refresh(int argc, char **argv)
{
	char buf[256];
	ssize_t n;
	int ret = 0;

	if (argc < 3 || argv[2][0] == '-') {
		fprintf(stderr, "usage: modelfs refresh MOUNTPOINT[/PATH]...\n");
		return 2;
	}
	/* the daemon re-lists its whole source (a path names the mount) */
	for (int i = 2; i < argc; i++) {
		n = getxattr(argv[i], "user.modelfs.refresh", buf, sizeof(buf) - 1);
		if (n < 0) {
			if (errno == EPERM)
				fprintf(stderr, "modelfs: %s: only root or the mount's owner may refresh\n",
					argv[i]);
			else if (errno == ENOTSUP || errno == ENODATA)
				fprintf(stderr, "modelfs: %s: not on a modelfs mount\n", argv[i]);
			else
				fprintf(stderr, "modelfs: %s: refresh failed: %s\n", argv[i],
					strerror(errno));
			ret = 1;
			continue;
		}
		buf[n] = '\0';
		printf("%s: %s", argv[i], buf);
	}
	return ret;
}
