/* The mountpoint before a mount: what is mounted there already, and clearing
 * a dead modelfs mount (its daemon killed) so that a restart can mount again.
 *
 * Read from /proc/self/mountinfo, whose paths escape ' ', '\t', '\n' and
 * '\\' as octal. A path that cannot be stat()ed (ENOTCONN under a dead FUSE
 * mount) is made absolute from its parent's real path, which still works.
 */
#include "fs.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Undo mountinfo's octal escapes in place. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

/* @path made absolute without stat()ing its last component. */
static int abs_path(const char *path_in, char *out, size_t len)
{
	char path[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
	const char *slash, *base;
	size_t n = strlen(path_in);

	if (realpath(path_in, out))
		return 0;
	/* "/mnt/x/" is "/mnt/x" (tab completion leaves the slash) */
	while (n > 1 && path_in[n - 1] == '/')
		n--;
	if (n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, path_in, n);
	path[n] = '\0';
	slash = strrchr(path, '/');
	if (slash) {
		n = (size_t)(slash - path);
		if (n == 0)
			n = 1; /* "/x" */
		if (n >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, n);
		dir[n] = '\0';
		base = slash + 1;
	} else {
		snprintf(dir, sizeof(dir), ".");
		base = path;
	}
	if (!realpath(dir, real))
		return -errno;
	if ((size_t)snprintf(out, len, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int fs_abs_path(const char *path, char *out, size_t len) { return abs_path(path, out, len); }

int fs_mount_at(const char *mountpoint, char *fstype, size_t type_len, char *source,
		size_t source_len)
{
	char want[PATH_MAX], line[16384];
	FILE *f;
	int err = abs_path(mountpoint, want, sizeof(want));

	if (err)
		return err;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	err = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		/* id parent maj:min root MOUNTPOINT opts [optional...] - TYPE SOURCE ... */
		char mp[PATH_MAX], type[256], src[PATH_MAX];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(dash + 3, "%255s %4095s", type, src) != 2)
			continue;
		unescape(mp);
		if (strcmp(mp, want) != 0)
			continue;
		/* the last line wins: the mount on top */
		unescape(src);
		snprintf(fstype, type_len, "%s", type);
		snprintf(source, source_len, "%s", src);
		err = 0;
	}
	fclose(f);
	return err;
}

int fs_clear_dead_mount(const char *mountpoint)
{
	char path[PATH_MAX];
	int err = abs_path(mountpoint, path, sizeof(path));
	pid_t pid;
	int st;

	if (err)
		return err;
	if (umount2(path, MNT_DETACH) == 0)
		return 0;
	if (errno != EPERM)
		return -errno;
	/* not root: the setuid helper may unmount a FUSE mount of ours */
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "-q", path, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EPERM;
}

int fs_dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

unsigned fs_fuse_max_pages(unsigned want)
{
	static const char sysctl[] = "/proc/sys/fs/fuse/max_pages_limit";
	unsigned limit = 256; /* FUSE_MAX_MAX_PAGES: kernels without the sysctl */
	FILE *f = fopen(sysctl, "re");

	if (!f)
		return want < limit ? want : limit;
	if (fscanf(f, "%u", &limit) != 1)
		limit = 256;
	fclose(f);
	if (limit < want) {
		/* only ever raised: it is a ceiling for every FUSE mount, and each
		 * asks for what it wants below it */
		FILE *w = fopen(sysctl, "we");
		int ok = w && fprintf(w, "%u\n", want) > 0;
		if (w && fclose(w) != 0)
			ok = 0;
		if (ok) {
			log_info("raised %s from %u to %u pages", sysctl, limit, want);
			limit = want;
		}
	}
	if (limit < want)
		log_debug("FUSE requests of at most %u pages (%s)", limit, sysctl);
	return want < limit ? want : limit;
}
