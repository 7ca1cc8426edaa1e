/* The file backend: a local or network directory (NFS, CPFS, a NAS mount, a
 * hostPath) as a store of keys, so a slow share gets the local cache tier.
 *
 * SOURCE is file:///ABSOLUTE/DIR; the keys are the paths of the regular
 * files below it ("a/b.safetensors"), every directory also listed as a
 * marker ("a/") so empty ones show. Every path is opened relative to one
 * descriptor of the root with openat2(RESOLVE_BENEATH): a symlink is
 * followed while it stays inside the tree, and one that leaves it (or is
 * absolute) is skipped in listings and refused on reads, without a race
 * between a check and the open. Sockets, fifos and devices are skipped.
 *
 * The root is opened anew by every operation, not kept: a share remounted
 * under a live mount is the new share at the next read, not the old one.
 *
 * A version of a file is (inode, size, mtime in ns), written as its ETag. A
 * read checks it before and after reading: a file replaced or changed under
 * an open reader gives -ESTALE, never bytes of two versions. (A change that
 * keeps size and mtime, e.g. a write followed by utimensat, is invisible
 * here as it is to rsync and make.) Not the device: NFS and FUSE number it
 * anew at every mount, which would make the whole cache stale after a
 * reboot; a file keeps its inode number across remounts of a share.
 *
 * Listing errors below the root fail the listing (an EIO in one directory
 * of a share must not save a tree without it), except what is a fact about
 * the tree: an entry that vanished, a symlink out of it, one we may not read.
 */
#include "backend.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#define FILE_DEPTH_MAX 64         /* directories below the root */
#define FILE_KEYS_MAX 5000000u    /* as an S3 listing's bound */
#define FILE_STREAM_PIECE (1u << 20)

struct file_be {
	struct backend base; /* must be first */
	char *dir;           /* the root: an absolute path, as given */
	char url[PATH_MAX + 8];
	atomic_int cancelled;
};

/* errno of a failed file operation -> the backend's (backend.h): a share
 * that went away is an outage (-EIO), not a missing file */
static int map_errno(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return -ENOENT;
	case EACCES:
	case EPERM:
		return -EACCES;
	case EXDEV:
	case ELOOP:
		return -ENOENT; /* a symlink out of the tree: not part of it */
	case ENOMEM:
		return -ENOMEM;
	case ETIMEDOUT:
		return -ETIMEDOUT;
	default:
		return -EIO; /* EIO, ENOTCONN, ESTALE (NFS), EHOSTDOWN, ... */
	}
}

/* Open @rel below @root, symlinks followed only inside the tree. */
static int open_beneath(int root, const char *rel, int flags)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd;

	do /* EAGAIN: a rename raced the lookup */
		fd = (int)syscall(SYS_openat2, root, *rel ? rel : ".", &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

/* The root, opened for one operation. @return the fd or -errno. */
static int root_open(struct file_be *f)
{
	int fd = open(f->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

	return fd < 0 ? map_errno(errno) : fd;
}

static void version_of(const struct stat *st, char out[BACKEND_ETAG_MAX])
{
	snprintf(out, BACKEND_ETAG_MAX, "%llx-%llx-%lld.%09ld", (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_size,
		 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
}

static void fill_object(const struct stat *st, struct backend_object *o)
{
	o->size = (uint64_t)st->st_size;
	o->mtime = st->st_mtim.tv_sec;
	version_of(st, o->etag);
}

static const struct backend_option file_options[] = {{NULL, NULL}};

static void file_close(struct backend *be)
{
	struct file_be *f = (struct file_be *)be;

	if (!f)
		return;
	free(f->dir);
	backend_base_free(&f->base);
	free(f);
}

static int file_open(const char *source, const struct backend_config *cfg, struct backend **out,
		     char *msg, size_t msg_len)
{
	const char *path = source + strlen("file://");
	struct file_be *f;
	size_t n;
	int err = -ENOMEM;

	if (cfg->n_opts) {
		snprintf(msg, msg_len, "option '%s' is not used by file:// sources", cfg->opts[0]);
		return -EINVAL;
	}
	n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (path[0] != '/' || n >= PATH_MAX) {
		snprintf(msg, msg_len, "bad source '%s': expected file:///ABSOLUTE/DIRECTORY", source);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->base.ops = &backend_file;
	if (!(f->dir = strndup(path, n)) || backend_base_init(&f->base, &backend_file, "") ||
	    backend_base_name(&f->base, "file://%s", f->dir) ||
	    backend_base_what(&f->base, "directory '%s'", f->dir))
		goto fail;
	snprintf(f->url, sizeof(f->url), "file://%s", f->dir);
	*out = &f->base;
	return 0;
fail:
	file_close(&f->base);
	return err;
}

/* The probe runs in a thread of its own: a hard NFS mount that hangs
 * blocks its stat for ever, and the mount must fail (or go offline) within
 * BACKEND_PROBE_MS all the same. A probe that never returns is left behind. */
struct probe {
	pthread_mutex_t lock;
	pthread_cond_t done_cv;
	int done, refs, err;
	char dir[PATH_MAX], msg[256];
};

static void probe_put(struct probe *p)
{
	int last;

	pthread_mutex_lock(&p->lock);
	last = --p->refs == 0;
	pthread_mutex_unlock(&p->lock);
	if (last) {
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->done_cv);
		free(p);
	}
}

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	struct stat st;
	int fd, err = 0, e;

	if (stat(p->dir, &st) != 0) {
		e = errno;
		snprintf(p->msg, sizeof(p->msg), "%s", strerror(e));
		err = map_errno(e);
	} else if (!S_ISDIR(st.st_mode)) {
		snprintf(p->msg, sizeof(p->msg), "not a directory");
		err = -ENOENT;
	} else if ((fd = open(p->dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		e = errno;
		snprintf(p->msg, sizeof(p->msg), "%s", strerror(e));
		err = map_errno(e);
	} else {
		int d = open_beneath(fd, "", O_RDONLY | O_DIRECTORY);
		e = errno;
		close(fd);
		if (d >= 0) {
			close(d);
		} else if (e == ENOSYS || e == EPERM) {
			/* openat2 is Linux 5.6; an old container seccomp profile
			 * refuses it with EPERM: not a credentials problem */
			snprintf(p->msg, sizeof(p->msg), "openat2 refused (%s): needs Linux >= 5.6 and "
				 "a seccomp profile that allows it", strerror(e));
			err = -EPROTONOSUPPORT;
		} else {
			snprintf(p->msg, sizeof(p->msg), "%s", strerror(e));
			err = map_errno(e);
		}
	}
	pthread_mutex_lock(&p->lock);
	p->err = err;
	p->done = 1;
	pthread_cond_signal(&p->done_cv);
	pthread_mutex_unlock(&p->lock);
	probe_put(p);
	return NULL;
}

static int file_check(struct backend *be, const char *prefix, char *msg, size_t msg_len)
{
	struct file_be *f = (struct file_be *)be;
	struct probe *p = calloc(1, sizeof(*p));
	struct timespec ts;
	pthread_t t;
	int err;

	(void)prefix;
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	p->refs = 2;
	snprintf(p->dir, sizeof(p->dir), "%s", f->dir);
	if (pthread_create(&t, NULL, probe_main, p) != 0) {
		p->refs = 1;
		probe_put(p);
		return -ENOMEM;
	}
	pthread_detach(t);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += BACKEND_PROBE_MS / 1000;
	ts.tv_nsec += (long)(BACKEND_PROBE_MS % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_sec++, ts.tv_nsec -= 1000000000L;
	pthread_mutex_lock(&p->lock);
	while (!p->done && pthread_cond_timedwait(&p->done_cv, &p->lock, &ts) == 0)
		;
	if (p->done) {
		err = p->err;
		if (err && msg)
			snprintf(msg, msg_len, "%s", p->msg);
	} else {
		err = -ETIMEDOUT;
		if (msg)
			snprintf(msg, msg_len, "no answer from %s within %d ms (a hung network "
					       "filesystem?)", f->dir, BACKEND_PROBE_MS);
	}
	pthread_mutex_unlock(&p->lock);
	probe_put(p);
	return err;
}

/* ---- listing: a walk, sorted, then handed out in key order ---- */

struct walk {
	struct file_be *f;
	int root;
	char **keys;           /* "rel" or "rel/" (a directory) */
	struct stat *sts;      /* parallel to keys */
	size_t n, cap;
	dev_t dev[FILE_DEPTH_MAX + 1]; /* the directories on the current path: loops */
	ino_t ino[FILE_DEPTH_MAX + 1];
};

static int walk_add(struct walk *w, const char *key, const struct stat *st)
{
	if (w->n >= FILE_KEYS_MAX)
		return -EFBIG;
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 256;
		char **k = realloc(w->keys, cap * sizeof(*k));
		if (!k)
			return -ENOMEM;
		w->keys = k;
		struct stat *s = realloc(w->sts, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		w->sts = s;
		w->cap = cap;
	}
	if (!(w->keys[w->n] = strdup(key)))
		return -ENOMEM;
	w->sts[w->n++] = *st;
	return 0;
}

/* An error of one entry below the root: a fact about the tree (skip it) or
 * a failure of the store (fail the listing)? */
static int entry_error(const char *path, int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return 0; /* gone meanwhile */
	case EXDEV:
	case ELOOP:
		log_debug("file: skipping %s: it leaves the tree", path);
		return 0;
	case EACCES:
	case EPERM:
		log_warn("file: skipping %s: %s", path, strerror(e));
		return 0;
	default:
		log_warn("file: listing %s: %s", path, strerror(e));
		return map_errno(e);
	}
}

static int walk_dir(struct walk *w, const char *rel, int depth)
{
	int fd = open_beneath(w->root, rel, O_RDONLY | O_DIRECTORY), err = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return depth == 0 ? map_errno(errno) : entry_error(rel, errno);
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	while (!err && (errno = 0, de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;
		int cfd, loop = 0;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "",
				     de->d_name) >= sizeof(path) - 1)
			continue; /* no key that long */
		if (atomic_load(&w->f->cancelled)) {
			err = -ECANCELED;
			break;
		}
		/* through openat2, so that a symlink is judged as a read would */
		cfd = open_beneath(w->root, path, O_PATH);
		if (cfd < 0) {
			err = entry_error(path, errno);
			continue;
		}
		if (fstat(cfd, &st) != 0) {
			err = entry_error(path, errno);
			close(cfd);
			continue;
		}
		close(cfd);
		if (S_ISREG(st.st_mode)) {
			err = walk_add(w, path, &st);
		} else if (S_ISDIR(st.st_mode)) {
			for (int i = 0; i <= depth; i++)
				loop |= w->dev[i] == st.st_dev && w->ino[i] == st.st_ino;
			if (loop || depth + 1 > FILE_DEPTH_MAX) {
				log_debug("file: skipping %s: %s", path,
					  loop ? "a symlink loop" : "too deep");
				continue;
			}
			char key[PATH_MAX + 1];
			snprintf(key, sizeof(key), "%s/", path);
			err = walk_add(w, key, &st);
			w->dev[depth + 1] = st.st_dev;
			w->ino[depth + 1] = st.st_ino;
			if (!err)
				err = walk_dir(w, path, depth + 1);
		}
		/* sockets, fifos, devices: not model files */
	}
	if (!err && errno)
		err = depth == 0 ? map_errno(errno) : entry_error(rel, errno);
	closedir(d);
	return err;
}

static int cmp_idx(const void *a, const void *b, void *keys)
{
	char **k = keys;

	return strcmp(k[*(const size_t *)a], k[*(const size_t *)b]);
}

static int file_list(struct backend *be, const char *prefix, const char *delimiter,
		     backend_list_cb cb, void *arg)
{
	struct file_be *f = (struct file_be *)be;
	struct walk w = {.f = f};
	struct stat st;
	size_t *order = NULL, plen = strlen(prefix);
	int err, fd = root_open(f);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) != 0) {
		err = map_errno(errno);
		close(fd);
		return err;
	}
	w.root = fd;
	w.dev[0] = st.st_dev;
	w.ino[0] = st.st_ino;
	err = walk_dir(&w, "", 0);
	close(fd);
	if (!err && w.n && !(order = malloc(w.n * sizeof(*order))))
		err = -ENOMEM;
	if (!err) {
		for (size_t i = 0; i < w.n; i++)
			order[i] = i;
		qsort_r(order, w.n, sizeof(*order), cmp_idx, w.keys);
	}
	for (size_t i = 0; !err && i < w.n; i++) {
		const char *key = w.keys[order[i]];
		size_t klen = strlen(key);
		struct backend_object o = {.key = key};
		const char *rest, *d;

		if (atomic_load(&f->cancelled)) {
			err = -ECANCELED;
			break;
		}
		if (strncmp(key, prefix, plen) != 0)
			continue;
		rest = key + plen;
		if (delimiter && *delimiter && (d = strstr(rest, delimiter)) != NULL &&
		    d[strlen(delimiter)] != '\0') {
			/* a common prefix, once: the directory marker stands for it */
			continue;
		}
		if (delimiter && *delimiter && klen > plen && key[klen - 1] == '/') {
			err = cb(arg, key, NULL); /* "dir/": a common prefix */
			continue;
		}
		fill_object(&w.sts[order[i]], &o);
		if (key[klen - 1] == '/')
			o.size = 0, o.etag[0] = '\0';
		err = cb(arg, key, &o);
	}
	for (size_t i = 0; i < w.n; i++)
		free(w.keys[i]);
	free(w.keys);
	free(w.sts);
	free(order);
	return err;
}

static int file_stat(struct backend *be, const char *key, struct backend_object *out)
{
	struct file_be *f = (struct file_be *)be;
	struct stat st;
	int fd, root;

	if ((root = root_open(f)) < 0)
		return root;
	fd = open_beneath(root, key, O_PATH);
	close(root);
	if (fd < 0)
		return map_errno(errno);
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return map_errno(e);
	}
	close(fd);
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	fill_object(&st, out);
	return 0;
}

/* Open @obj's version for reading: -ESTALE when the file is another one
 * now (replaced, grown, shrunk, touched). */
static int open_version(struct file_be *f, const struct backend_ref *obj, char *ver)
{
	struct stat st;
	int fd, e, root;

	if (atomic_load(&f->cancelled))
		return -ECANCELED;
	if ((root = root_open(f)) < 0)
		return root;
	/* O_NONBLOCK: a key replaced by a fifo must not block the open */
	fd = open_beneath(root, obj->key, O_RDONLY | O_NONBLOCK);
	e = errno;
	close(root);
	if (fd < 0)
		return map_errno(e);
	if (fstat(fd, &st) != 0) {
		e = errno;
		close(fd);
		return map_errno(e);
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -ENOENT;
	}
	version_of(&st, ver);
	if ((obj->etag && *obj->etag && strcmp(obj->etag, ver) != 0) ||
	    (obj->size && (uint64_t)st.st_size != obj->size)) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* Read up to @n bytes at @off, short only at the end of the file.
 * @return the count, or -errno (ESTALE from NFS: the file was replaced). */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == ESTALE ? -ESTALE : map_errno(errno);
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* After reading: the same version still, or the bytes may be mixed. */
static int same_version(int fd, const char *ver)
{
	struct stat st;
	char now[BACKEND_ETAG_MAX];

	if (fstat(fd, &st) != 0)
		return map_errno(errno);
	version_of(&st, now);
	return strcmp(now, ver) == 0 ? 0 : -ESTALE;
}

static int file_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		     void *buf, size_t *got)
{
	struct file_be *f = (struct file_be *)be;
	char ver[BACKEND_ETAG_MAX];
	int fd = open_version(f, obj, ver), err = 0;
	size_t done = 0;

	*got = 0;
	log_debug("GET %s/%s bytes=%llu-%llu", f->url, obj->key, (unsigned long long)off,
		  (unsigned long long)(off + len - 1));
	if (fd < 0)
		return fd;
	{
		ssize_t r = pread_full(fd, buf, len, off);
		if (r < 0)
			err = (int)r;
		else
			done = (size_t)r;
	}
	if (!err)
		err = same_version(fd, ver);
	close(fd);
	if (!err)
		*got = done;
	return err;
}

static int file_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			    uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			    void (*reset)(void *arg), void *arg)
{
	struct file_be *f = (struct file_be *)be;
	char ver[BACKEND_ETAG_MAX], *buf;
	uint64_t done = 0;
	int fd, err = 0;

	if (len == 0)
		return 0;
	log_debug("GET %s/%s bytes=%llu-%llu", f->url, obj->key, (unsigned long long)off,
		  (unsigned long long)(off + len - 1));
	fd = open_version(f, obj, ver);
	if (fd < 0)
		return fd;
	buf = malloc(FILE_STREAM_PIECE);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	if (reset)
		reset(arg);
	while (!err && done < len) {
		size_t want = len - done < FILE_STREAM_PIECE ? (size_t)(len - done) : FILE_STREAM_PIECE;
		ssize_t r = pread_full(fd, buf, want, off + done);
		if (r < 0) {
			err = (int)r;
			break;
		}
		if (r == 0)
			break;
		/* each piece checked before it leaves: no bytes of a newer version */
		if ((err = same_version(fd, ver)) != 0)
			break;
		if (atomic_load(&f->cancelled)) {
			err = -ECANCELED;
			break;
		}
		err = sink(arg, buf, (size_t)r);
		done += (uint64_t)r;
	}
	free(buf);
	close(fd);
	return err;
}

static void file_cancel(struct backend *be) { atomic_store(&((struct file_be *)be)->cancelled, 1); }

static const char *file_endpoint(struct backend *be) { return ((struct file_be *)be)->url; }

const struct backend_ops backend_file = {
    .scheme = "file",
    .syntax = "file:///DIR",
    .help = "file:///DIR: a local or network directory (NFS, CPFS, a NAS mount, a hostPath)\n"
	    "  no options; symlinks are followed while they stay inside DIR; a file changed\n"
	    "  under an open reader gives ESTALE (its version: inode, size, mtime).\n",
    .options = file_options,
    .open = file_open,
    .close = file_close,
    .check = file_check,
    .list = file_list,
    .stat = file_stat,
    .read = file_read,
    .read_stream = file_read_stream,
    .cancel = file_cancel,
    .endpoint = file_endpoint,
};
