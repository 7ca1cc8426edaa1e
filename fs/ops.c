/* FUSE low-level operations over the inode table and the cache layer.
 *
 * Every operation replies exactly once. Errors from the layers below arrive
 * as -errno and are mapped here, at the FUSE boundary: a read that fails in
 * transport is EIO (what read(2) callers expect from a device), an object
 * that changed or vanished under an open file is ESTALE, access refusal is
 * EACCES. Every operation that would modify the tree answers EROFS.
 */
#include "fs.h"
#include "handle.h"
#include "metrics.h"
#include "log.h"
#include "snapshot.h"
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* What an open file reads: the object version it was opened on. */
struct open_file {
	fuse_ino_t ino;
	int pt; /* 1: the kernel reads the cache file directly (passthrough.h) */
	unsigned model; /* metrics_model's */
	struct cache_object obj;
	struct cache_stream *stream;
	char key[PATH_MAX];
	char etag[BACKEND_ETAG_MAX];
};

/* What the next daemon needs to go on serving an open file (handle.h,
 * keep.h): the version it was opened on, and how. */
struct open_rec {
	uint64_t ino, size;
	int64_t mtime;
	int32_t pt, backing_id; /* passthrough.h's mode and the kernel's id */
	uint32_t model, unused;
	char etag[BACKEND_ETAG_MAX];
	char key[PATH_MAX];
};

const size_t fs_handle_rec_size = sizeof(struct open_rec);

#define XATTR_CACHED "user.modelfs.cached"
#define XATTR_STATUS "user.modelfs.status"
#define XATTR_PREFETCH "user.modelfs.prefetch"
#define XATTR_METRICS "user.modelfs.metrics"
#define XATTR_REFRESH "user.modelfs.refresh"
#define XATTR_HOLDER "user.modelfs.holder"
#define REFRESH_WAIT_MS 120000
#define FS_BACKEND_DOWN_MS 30000


/* What the operation now answering replied, for its metrics (metrics.h):
 * set by reply_err and the read paths, read by the wrappers below. Every
 * operation replies in the thread that runs it. */
static __thread int tl_err;
static __thread uint64_t tl_bytes;

static int reply_err(fuse_req_t req, int err)
{
	tl_err = err;
	return fuse_reply_err(req, err);
}

static struct fs *fs_of(fuse_req_t req) { return fuse_req_userdata(req); }

static void to_stat(const struct fs *fs, const struct tree_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->is_dir ? (S_IFDIR | (0555 & ~fs->opts->umask))
				: (S_IFREG | (0444 & ~fs->opts->umask));
	st->st_nlink = a->nlink;
	st->st_uid = fs->opts->uid;
	st->st_gid = fs->opts->gid;
	st->st_size = (off_t)a->size;
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_mtim.tv_sec = a->mtime;
	st->st_ctim.tv_sec = a->mtime;
	st->st_atim.tv_sec = a->mtime;
}

static void fill_entry(const struct fs *fs, const struct tree_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->generation = 1;
	e->attr_timeout = fs->opts->attr_timeout_s;
	e->entry_timeout = fs->opts->entry_timeout_s;
	to_stat(fs, a, &e->attr);
}

/* Map a lower layer's error for a data read. */
static int read_errno(int err)
{
	switch (err) {
	case -EACCES:
	case -ESTALE:
	case -ENOMEM:
		return -err;
	case -ENOENT:
		return ESTALE; /* the object went away under an open file */
	default:
		return EIO;
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Several reads of one file in flight at once: the kernel's readahead
	 * and our chunk fetches overlap. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
}

int fs_find_bdi(const char *mountpoint, char *out, size_t len)
{
	char line[8192], mp[4096];
	FILE *f = fopen("/proc/self/mountinfo", "r");
	int err = -ENOENT;

	if (!f)
		return -errno;
	/* as given (main made it absolute before mounting): no realpath, whose
	 * stat of the mount would wait for an INIT that this thread answers */
	snprintf(mp, sizeof(mp), "%s", mountpoint);
	while (fgets(line, sizeof(line), f)) {
		char dev[32], path[4096];
		/* id parent major:minor root mountpoint ...; the last match wins
		 * (a mount stacked on an older one) */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, path) == 2 && strcmp(path, mp) == 0 &&
		    strstr(line, " - fuse.modelfs ")) {
			snprintf(out, len, "%s", dev);
			err = 0;
		}
	}
	fclose(f);
	return err;
}

/* Raise the mount's kernel readahead (it starts at 128 KiB, which makes the
 * kernel send 128 KiB reads although it allows 1 MiB). The INIT reply caps
 * it, so this runs at the first open, after INIT. Needs root; harmless
 * without. */
static void tune_bdi(struct fs *fs)
{
	char path[96];
	FILE *f;

	if (!fs->bdi[0] || atomic_exchange(&fs->bdi_tuned, 1))
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", fs->bdi);
	f = fopen(path, "w");
	if (!f) {
		log_debug("cannot raise %s: %s", path, strerror(errno));
		return;
	}
	fprintf(f, "%u\n", fs->read_ahead_kb);
	fclose(f);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct tree_attr a;
	int err = fs_dir_ready(fs, parent);

	if (err && err != -ENOENT) {
		reply_err(req, EIO); /* a directory never listed, and the store does not answer */
		return;
	}
	err = tree_lookup(fs->tree, parent, name, &a);

	if (err) {
		if (err == -ENOENT) {
			/* cache the miss too, as long as the listing stands (a
			 * refresh that adds the name also drops it) */
			memset(&e, 0, sizeof(e));
			e.entry_timeout = fs->opts->entry_timeout_s;
			if (fs->opts->list_ttl_s && e.entry_timeout > fs->opts->list_ttl_s)
				e.entry_timeout = fs->opts->list_ttl_s;
			fuse_reply_entry(req, &e);
			return;
		}
		reply_err(req, -err);
		return;
	}
	fill_entry(fs, &a, &e);
	/* counted before the answer: the kernel holds it from then until its
	 * FORGET, and our count may never be below its */
	tree_ref(fs->tree, a.ino);
	if (fuse_reply_entry(req, &e) != 0)
		tree_unref(fs->tree, a.ino, 1);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	tree_unref(fs_of(req)->tree, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		tree_unref(fs_of(req)->tree, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct tree_attr a;
	struct stat st;
	/* a file open on a version the listing dropped: the kernel asks for its
	 * attributes on reads once attr_timeout is over (auto_inval_data) */
	int err = tree_getattr_kept(fs->tree, ino, &a);

	(void)fi;
	if (err == -ENOENT) {
		/* a file an earlier daemon of this mount opened on a version the
		 * tree it handed over did not name: its handle's record has it */
		for (uint64_t fh = handles_next(fs->handles, 0); fh && err;
		     fh = handles_next(fs->handles, fh)) {
			const struct open_rec *r = handle_rec(fs->handles, fh);
			if (r && r->ino == ino) {
				a = (struct tree_attr){.ino = ino, .size = r->size, .mtime = r->mtime};
				err = 0;
			}
		}
	}
	if (err) {
		/* a number the kernel holds and the tree does not know (another
		 * daemon's, the last listing dropped it): ESTALE has the kernel
		 * look the name up again */
		reply_err(req, err == -ENOENT ? ESTALE : -err);
		return;
	}
	to_stat(fs, &a, &st);
	fuse_reply_attr(req, &st, fs->opts->attr_timeout_s);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Confirm file @ino's identity with a HEAD when the listing is older than
 * metadata_ttl. @return 1 when the object changed: the tree has a new node
 * for the name and @ino is removed, so the open answers ESTALE and the
 * kernel, which retries an open once with the path looked up again, opens
 * the new inode (pages of two versions never share one); 0 when not or when
 * the backend cannot be asked (the cached identity stays: the disk cache can
 * still serve it), -ENOENT when the object is gone. */
static int revalidate(struct fs *fs, fuse_ino_t ino, const char *key)
{
	struct backend_object o;
	uint64_t seen;
	int err;

	if (tree_validated_ms(fs->tree, ino, &seen) < 0)
		return -ENOENT;
	if (seen && mono_ms() - seen < (uint64_t)(fs->opts->metadata_ttl_s * 1000))
		return 0;
	/* While the backend is down, do not make every open wait for retries. */
	if (atomic_load(&fs->backend_down_ms) &&
	    mono_ms() - atomic_load(&fs->backend_down_ms) < FS_BACKEND_DOWN_MS)
		return 0;
	err = backend_stat(fs->be, key, &o);
	if (err == -ENOENT)
		return -ENOENT;
	if (err) {
		atomic_store(&fs->backend_down_ms, mono_ms());
		log_once(LOG_LVL_WARN, "cannot confirm objects with the backend (%s): serving the "
			 "versions last seen", strerror(-err));
		return 0;
	}
	err = tree_update_file(fs->tree, ino, &o);
	if (err == 1) {
		log_info("%s changed (ETag %s, %llu bytes): new opens read the new version", key,
			 o.etag, (unsigned long long)o.size);
		/* the new number goes into the saved tree now: a daemon after a
		 * crash must know it (a version change at an open is rare) */
		fs_save_tree(fs);
	}
	return err;
}

struct pin_arg {
	struct cache *cache;
	const struct cache_object *obj;
};

static int pin_file(void *arg)
{
	struct pin_arg *p = arg;

	return cache_pin(p->cache, p->obj);
}

static void release_file(struct fs *fs, fuse_ino_t ino, struct open_file *of)
{
	int fd = pt_release(fs->pt, ino, of->pt);

	if (fd >= 0)
		cache_unpin(fs->cache, &of->obj, fd);
	cache_stream_free(of->stream);
	free(of);
}

/* The open file of handle @fh: this process's, or made from the record
 * another daemon kept (an upgrade, a crash). NULL: not a live handle. */
static struct open_file *open_file_of(struct fs *fs, uint64_t fh)
{
	struct open_file *of = handle_get(fs->handles, fh), *have;
	const struct open_rec *r;

	if (of || !(r = handle_rec(fs->handles, fh)))
		return of;
	if (!(of = calloc(1, sizeof(*of))) || !(of->stream = cache_stream_new())) {
		free(of);
		return NULL;
	}
	of->ino = r->ino;
	of->pt = r->pt;
	of->model = r->model;
	memcpy(of->key, r->key, sizeof(of->key));
	memcpy(of->etag, r->etag, sizeof(of->etag));
	of->key[sizeof(of->key) - 1] = of->etag[sizeof(of->etag) - 1] = '\0';
	of->obj = (struct cache_object){fs->source_ns, of->key, of->etag, r->size};
	if ((have = handle_attach(fs->handles, fh, of)) != of) {
		cache_stream_free(of->stream);
		free(of);
	}
	return have;
}

int fs_adopt_handles(struct fs *fs)
{
	for (uint64_t fh = handles_next(fs->handles, 0); fh; fh = handles_next(fs->handles, fh)) {
		const struct open_rec *r = handle_rec(fs->handles, fh);
		if (r && pt_adopt(fs->pt, r->ino, r->etag, r->pt, r->backing_id) != 0)
			return -ENOMEM;
	}
	return 0;
}

void fs_release_all(struct fs *fs)
{
	struct open_file *of;
	uint64_t fh;

	while ((fh = handles_next(fs->handles, 0)) != 0) {
		if ((of = open_file_of(fs, fh)) == NULL || handle_del(fs->handles, fh) != of)
			break; /* out of memory at exit: the process ends anyway */
		release_file(fs, of->ino, of);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct open_file *of;
	struct tree_attr a;
	char rel[PATH_MAX];
	int err, changed = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		reply_err(req, EROFS);
		return;
	}
	tune_bdi(fs);
	of = calloc(1, sizeof(*of));
	if (!of) {
		reply_err(req, ENOMEM);
		return;
	}
	err = tree_relpath(fs->tree, ino, rel, sizeof(rel));
	if (err == -ENOENT)
		err = -ESTALE; /* a number the tree no longer knows: look the name up again */
	if (!err && (size_t)snprintf(of->key, sizeof(of->key), "%s%s", fs->prefix, rel) >=
			    sizeof(of->key))
		err = -ENAMETOOLONG;
	if (!err)
		err = changed = revalidate(fs, ino, of->key);
	if (err >= 0)
		err = tree_getattr(fs->tree, ino, &a);
	if (err < 0) {
		free(of);
		reply_err(req, err == -ENOENT && changed ? ESTALE : -err);
		return;
	}
	memcpy(of->etag, a.etag, sizeof(of->etag));
	of->obj.source = fs->source_ns;
	of->obj.key = of->key;
	of->obj.etag = of->etag;
	of->obj.size = a.size;
	of->stream = cache_stream_new();
	if (!of->stream) {
		free(of);
		reply_err(req, ENOMEM);
		return;
	}
	/* Pages the kernel holds stay valid while the object is the same
	 * version; a new version drops them. */
	fi->keep_cache = !changed;
	struct pin_arg pa = {fs->cache, &of->obj};
	of->pt = pt_open(fs->pt, ino, of->etag, pin_file, &pa);
	if (of->pt < 0) {
		log_warn("%s changed while a process holds the old version open: opening it "
			 "fails (ESTALE) until that process closes it", of->key);
		cache_stream_free(of->stream);
		free(of);
		reply_err(req, ESTALE);
		return;
	}
	of->model = metrics_model(fs->metrics, rel);
	of->ino = ino;
	{
		struct open_rec r = {.ino = ino, .size = a.size, .mtime = a.mtime, .pt = of->pt,
				     .model = of->model};
		r.backing_id = of->pt ? pt_backing_id(fs->pt, ino) : 0;
		memcpy(r.etag, of->etag, sizeof(r.etag));
		memcpy(r.key, of->key, sizeof(r.key));
		fi->fh = handle_add(fs->handles, of, &r);
	}
	if (!fi->fh) {
		release_file(fs, ino, of);
		reply_err(req, ENFILE);
		return;
	}
	/* counted before the answer: once answered, a release may free @of */
	metrics_model_open(fs->metrics, of->model, of->pt > 0);
	err = of->pt ? pt_reply_open(fs->pt, req, ino, fi) : fuse_reply_open(req, fi);
	if (err == -ENOENT && handle_del(fs->handles, fi->fh))
		release_file(fs, ino, of); /* interrupted: release will not come */
}

static int reply_iov(void *req, const struct iovec *iov, int count)
{
	for (int i = 0; i < count; i++)
		tl_bytes += iov[i].iov_len;
	return fuse_reply_iov(req, iov, count);
}

/* One reply buffer per worker thread, kept: a fresh 1 MiB malloc per read
 * is an mmap, and touching its new pages costs more than the copy. Page
 * aligned, so the cache can read into it with O_DIRECT. */
#define RBUF_ALIGN 4096
static pthread_key_t rbuf_key;
static pthread_once_t rbuf_once = PTHREAD_ONCE_INIT;
static void rbuf_init(void) { pthread_key_create(&rbuf_key, free); }

static char *reply_buffer(size_t size)
{
	struct rbuf {
		size_t cap;
	} *b;
	void *p = NULL;

	pthread_once(&rbuf_once, rbuf_init);
	b = pthread_getspecific(rbuf_key);
	if (!b || b->cap < size) {
		free(b);
		b = posix_memalign(&p, RBUF_ALIGN, RBUF_ALIGN + size) == 0 ? p : NULL;
		pthread_setspecific(rbuf_key, b);
		if (!b)
			return NULL;
		b->cap = size;
	}
	return (char *)b + RBUF_ALIGN; /* the header has the first page */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct open_file *of = open_file_of(fs, fi->fh);
	size_t got = 0;
	char *buf;
	int err, random;

	(void)ino;
	if (!of) {
		reply_err(req, EBADF);
		return;
	}
	if (off < 0) {
		reply_err(req, EINVAL);
		return;
	}
	if ((uint64_t)off >= of->obj.size || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	random = cache_readahead(fs->cache, &of->obj, of->stream, (uint64_t)off, size);
	/* just fetched: straight from the fetch's memory, no copy of ours */
	if (cache_read_inplace(fs->cache, &of->obj, (uint64_t)off, size, reply_iov, req, &err))
		return;
	buf = reply_buffer(size);
	if (!buf) {
		reply_err(req, ENOMEM);
		return;
	}
	err = (random ? cache_read_random : cache_read)(fs->cache, &of->obj, (uint64_t)off, size,
							buf, &got);
	if (err) {
		reply_err(req, read_errno(err));
	} else {
		tl_bytes = got;
		fuse_reply_buf(req, buf, got);
	}
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct open_file *of = open_file_of(fs, fi->fh);

	if (of && handle_del(fs->handles, fi->fh) != of)
		of = NULL;
	if (of)
		release_file(fs, ino, of);
	reply_err(req, of ? 0 : EBADF);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct tree_attr a;
	int err = fs_dir_ready(fs, ino);

	if (err && err != -ENOENT) {
		reply_err(req, EIO);
		return;
	}
	err = tree_getattr(fs->tree, ino, &a);

	if (!err && !a.is_dir)
		err = -ENOTDIR;
	if (err) {
		reply_err(req, -err);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		reply_err(req, EROFS);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

struct dir_fill {
	fuse_req_t req;
	struct fs *fs;
	char *buf;
	size_t size, used;
	int plus;
	uint64_t *refs; /* readdirplus: the entries the kernel will hold */
	size_t n_refs;
};

static int dir_fill_one(void *arg, const char *name, const struct tree_attr *a, uint64_t next)
{
	struct dir_fill *d = arg;
	size_t need;

	if (d->plus) {
		struct fuse_entry_param e;
		fill_entry(d->fs, a, &e);
		need = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e,
					      (off_t)next);
	} else {
		struct stat st;
		to_stat(d->fs, a, &st);
		need = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, &st,
					 (off_t)next);
	}
	if (need > d->size - d->used)
		return 1; /* full: the kernel comes back with @next */
	d->used += need;
	if (d->plus && d->refs && strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
		d->refs[d->n_refs++] = a->ino;
	return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct dir_fill d = {req, fs_of(req), NULL, size, 0, plus, NULL, 0};
	int err;

	d.buf = malloc(size);
	/* an entry of readdirplus takes more than 64 bytes of the buffer */
	if (!d.buf || (plus && !(d.refs = malloc((size / 64 + 1) * sizeof(*d.refs))))) {
		free(d.buf);
		reply_err(req, ENOMEM);
		return;
	}
	/* a directory being read is in use: not forgotten under its reader */
	tree_dir_used(d.fs->tree, ino, mono_ms());
	err = tree_readdir(d.fs->tree, ino, (uint64_t)off, dir_fill_one, &d);
	if (err) {
		reply_err(req, -err);
	} else {
		for (size_t i = 0; i < d.n_refs; i++) /* before the answer, as lookups */
			tree_ref(d.fs->tree, d.refs[i]);
		if (fuse_reply_buf(req, d.buf, d.used) != 0)
			for (size_t i = 0; i < d.n_refs; i++)
				tree_unref(d.fs->tree, d.refs[i], 1);
	}
	free(d.refs);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, 1);
}

/* df: the model's bytes are "used" and the room left in the cache quota is
 * "available", so Use% says how much more the node's cache could take (a
 * 100% that never changes would only page someone). */
static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct statvfs sv;
	uint64_t files, dirs, bytes, quota, usage, avail = 0;
	double high;

	(void)ino;
	tree_counts(fs->tree, &files, &dirs, &bytes);
	if (cache_quota(fs->cache, &quota, &usage, &high) == 0 && quota > usage)
		avail = quota - usage;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (bytes + 4095) / 4096 + avail / 4096;
	sv.f_bfree = avail / 4096;
	sv.f_bavail = avail / 4096;
	sv.f_files = files + dirs;
	sv.f_namemax = NAME_MAX;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

static void reply_xattr_text(fuse_req_t req, const char *val, size_t n, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, n);
	else if (size < n)
		reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, n);
}

/* The control channel of `modelfs prefetch` and `modelfs status`: reading
 * user.modelfs.status gives the prefetch state; reading user.modelfs.prefetch
 * of a file or directory queues it for prefetch and answers what was queued.
 * An xattr rather than setxattr or a socket: the VFS refuses setxattr on a
 * read-only mount, and the mount itself names the daemon, with the kernel's
 * own credentials of the caller. Only root and the mount's owner may queue. */
static void control_xattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char val[1024], rel[PATH_MAX];
	struct tree_attr a;
	size_t files;
	uint64_t bytes;
	int n, err;

	if (strcmp(name, XATTR_METRICS) == 0) {
		char *text;
		size_t len;
		if (!fs->metrics || metrics_text(fs->metrics, &text, &len) != 0) {
			reply_err(req, ENOMEM);
			return;
		}
		if (len > 65536) { /* the kernel's largest xattr value */
			free(text);
			reply_err(req, E2BIG);
			return;
		}
		reply_xattr_text(req, text, len, size);
		free(text);
		return;
	}
	if (strcmp(name, XATTR_STATUS) == 0) {
		n = fs_prefetch_status(fs, val, sizeof(val));
		if (n >= (int)sizeof(val))
			n = (int)sizeof(val) - 1;
		reply_xattr_text(req, val, (size_t)n, size);
		return;
	}
	if (ctx->uid != 0 && ctx->uid != getuid()) {
		reply_err(req, EPERM);
		return;
	}
	if (size == 0) { /* a size probe must not queue anything */
		fuse_reply_xattr(req, 128);
		return;
	}
	if (strcmp(name, XATTR_REFRESH) == 0) {
		size_t changes = 0;
		err = fs_refresh_now(fs, REFRESH_WAIT_MS, &changes);
		if (err) {
			reply_err(req, -err);
			return;
		}
		n = snprintf(val, sizeof(val), "refreshed: %zu names changed\n", changes);
		reply_xattr_text(req, val, (size_t)n, size);
		return;
	}
	err = tree_getattr(fs->tree, ino, &a);
	if (!err && a.is_dir) {
		err = ino == TREE_ROOT_INO ? 0 : tree_dirpath(fs->tree, ino, rel, sizeof(rel));
		if (ino == TREE_ROOT_INO)
			rel[0] = '\0';
	} else if (!err) {
		err = tree_relpath(fs->tree, ino, rel, sizeof(rel));
	}
	if (!err)
		err = fs_prefetch_add(fs, rel, !a.is_dir, NULL, &files, &bytes);
	if (err) {
		reply_err(req, err == -ENODATA ? ENOTSUP : -err);
		return;
	}
	n = snprintf(val, sizeof(val), "queued %zu files, %llu bytes\n", files,
		     (unsigned long long)bytes);
	reply_xattr_text(req, val, (size_t)n, size);
}

/* user.modelfs.cached: "CACHED_BYTES/SIZE" of a file in the disk cache. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	struct cache_object obj;
	struct tree_attr a;
	char key[PATH_MAX], rel[PATH_MAX], val[64];
	uint64_t cached;
	int err, n;

	if (strcmp(name, XATTR_STATUS) == 0 || strcmp(name, XATTR_PREFETCH) == 0 ||
	    strcmp(name, XATTR_METRICS) == 0 || strcmp(name, XATTR_REFRESH) == 0) {
		control_xattr(req, ino, name, size);
		return;
	}
	if (strcmp(name, XATTR_HOLDER) == 0) {
		/* the holder's socket, for `modelfs upgrade` (holder.h) */
		if (!fs->holder || ino != TREE_ROOT_INO)
			reply_err(req, ENODATA);
		else
			reply_xattr_text(req, fs->holder, strlen(fs->holder), size);
		return;
	}
	if (strcmp(name, XATTR_CACHED) != 0) {
		reply_err(req, ENODATA);
		return;
	}
	err = tree_getattr(fs->tree, ino, &a);
	if (!err && a.is_dir)
		err = -ENODATA;
	if (!err)
		err = tree_relpath(fs->tree, ino, rel, sizeof(rel));
	if (err) {
		reply_err(req, -err);
		return;
	}
	snprintf(key, sizeof(key), "%s%s", fs->prefix, rel);
	obj = (struct cache_object){fs->source_ns, key, a.etag, a.size};
	err = cache_cached_bytes(fs->cache, &obj, &cached);
	if (err) {
		reply_err(req, err == -ENODATA ? ENODATA : -err);
		return;
	}
	n = snprintf(val, sizeof(val), "%llu/%llu", (unsigned long long)cached,
		     (unsigned long long)a.size);
	if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if (size < (size_t)n)
		reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, (size_t)n);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	struct tree_attr a;
	size_t n = sizeof(XATTR_CACHED);

	if (tree_getattr(fs->tree, ino, &a) < 0 || a.is_dir)
		n = 0;
	if (size == 0)
		fuse_reply_xattr(req, n);
	else if (size < n)
		reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, XATTR_CACHED, n);
}

/* ---- everything that would change the tree ---- */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	reply_err(req, EROFS);
}

/* Each operation timed from its start to its answer (all answer before
 * they return), counted with its error (metrics.h). */
#define TIMED(op, call)                                                      \
	do {                                                                 \
		uint64_t t0_ = STATS_ON ? metrics_now_ns() : 0;              \
		tl_err = 0;                                                  \
		tl_bytes = 0;                                                \
		call;                                                        \
		if (STATS_ON)                                                \
			metrics_op(op, t0_, tl_err, tl_bytes);               \
	} while (0)

static void t_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TIMED(MOP_LOOKUP, op_lookup(req, parent, name));
}
static void t_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIMED(MOP_GETATTR, op_getattr(req, ino, fi));
}
static void t_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIMED(MOP_OPEN, op_open(req, ino, fi));
}
static void t_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	/* once answered, the request and the open file may be gone (a
	 * release can run before this returns): take what is needed first */
	struct open_file *of = open_file_of(fs_of(req), fi->fh);
	unsigned model = of ? of->model : 0;
	struct metrics *m = fs_of(req)->metrics;

	TIMED(MOP_READ, op_read(req, ino, size, off, fi));
	if (tl_bytes)
		metrics_model_read(m, model, tl_bytes);
}
static void t_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIMED(MOP_RELEASE, op_release(req, ino, fi));
}
static void t_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIMED(MOP_OPENDIR, op_opendir(req, ino, fi));
}
static void t_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	TIMED(MOP_READDIR, op_readdir(req, ino, size, off, fi));
}
static void t_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	TIMED(MOP_READDIR, op_readdirplus(req, ino, size, off, fi));
}
static void t_statfs(fuse_req_t req, fuse_ino_t ino)
{
	TIMED(MOP_STATFS, op_statfs(req, ino));
}
static void t_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	TIMED(MOP_XATTR, op_getxattr(req, ino, name, size));
}
static void t_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	TIMED(MOP_XATTR, op_listxattr(req, ino, size));
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .lookup = t_lookup,
    .getattr = t_getattr,
    .open = t_open,
    .read = t_read,
    .release = t_release,
    .opendir = t_opendir,
    .readdir = t_readdir,
    .readdirplus = t_readdirplus,
    .statfs = t_statfs,
    .getxattr = t_getxattr,
    .listxattr = t_listxattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .create = op_create,
    .write = op_write,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
};

