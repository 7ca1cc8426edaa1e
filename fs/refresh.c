/* The listing follows the store (list_ttl=, `modelfs refresh`).
 *
 * One thread re-lists the mounted prefix every list_ttl seconds (every
 * REFRESH_OFFLINE_S while the store is unreachable after an offline mount),
 * and at once when `modelfs refresh` asks through the user.modelfs.refresh
 * xattr (answered when that pass is done). A pass adds and updates nodes as
 * the keys come in (lookups see a new key at once), then tree_pass_end marks
 * what it did not see as removed and reports every change; the kernel is told
 * of each, so that long entry_timeout/attr_timeout and the kept page and
 * directory caches do not hide it:
 *   added     the name's negative entry (a miss the kernel keeps) and the
 *             parent's directory cache are dropped;
 *   changed   the file's attributes and pages are dropped (inval_inode): its
 *             next open reads the new version; a file open now keeps its own
 *             (the open file holds its ETag, docs/design.md);
 *   removed   the name is dropped (inval_entry) and the parent's directory
 *             cache: a new open gets ENOENT.
 * A failed pass changes nothing (no pass_end): what was listed stays. The
 * snapshot is saved when a pass changed something.
 *
 * listing=lazy (a bucket's root: millions of keys cannot be listed at
 * mount) lists a directory, one level with the delimiter, when it is first
 * looked in (fs_dir_ready, from a lookup or an opendir: a root of 500 model
 * prefixes is one listing of 500 prefixes); the refresher then re-lists,
 * every list_ttl, the directories looked in during the last
 * LAZY_KEEP_TTLS periods (at least LAZY_KEEP_MIN_S): the cost of a period is
 * what was looked at, never the bucket.
 *
 * Threads: the refresher owns the timed passes; FUSE workers list a
 * directory on demand; pass_lock keeps passes from overlapping (the tree's
 * pass mark is one counter). The xattr handler (a FUSE worker) waits on
 * rf->cond for the pass it asked for. Everything in struct fs_refresh is
 * under rf->lock.
 */
#include "fs.h"
#include "holder.h"
#include "log.h"
#include "snapshot.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REFRESH_OFFLINE_S 10
#define LAZY_KEEP_TTLS 10
#define LAZY_KEEP_MIN_S 600
#define FS_DOWN_RETRY_MS 10000 /* after a failed listing, lookups fail fast this long */

static pthread_mutex_t pass_lock = PTHREAD_MUTEX_INITIALIZER; /* one pass at a time */
static atomic_int snap_dirty; /* a lazy listing added to the tree since the last save */

struct fs_refresh {
	struct fs *fs;
	pthread_t th;
	int started;
	pthread_mutex_t lock;
	pthread_cond_t cond;   /* wakes the thread (asked, stop) and the waiters (done) */
	int stop;
	int offline;           /* the store has not answered since the mount */
	uint64_t asked, done;  /* pass numbers: asked for, finished */
	uint64_t running;      /* the pass listing now, 0: none */
	int last_err;
	size_t last_changes;
};

/* ---- one pass */

/* What a pass changed, told to the kernel once the pass is over and
 * pass_lock released: a notification can wait for a directory's lock that a
 * lookup holds, and that lookup may be waiting for pass_lock. */
struct note {
	enum tree_change what;
	uint64_t parent, ino;
	const char *name; /* the tree's: nodes are never freed */
};

struct pass {
	struct fs *fs;
	size_t changes;
	uint64_t last_parent; /* the directory cache last dropped: once a run */
	struct note *v;
	size_t n, cap;
	int lost; /* no memory to keep a change: the root's caches stand for all */
};

static int listing_cb(void *arg, const char *key, const struct backend_object *obj)
{
	struct fs *fs = arg;
	size_t plen = strlen(fs->prefix);
	int err;

	if (strncmp(key, fs->prefix, plen) != 0)
		return 0; /* not ours (a server that ignores prefix) */
	err = tree_add_key(fs->tree, key + plen, obj);
	return err < 0 ? err : 0;
}

static void drop_dir(struct pass *p, uint64_t dir)
{
	if (dir == p->last_parent)
		return;
	p->last_parent = dir;
	fuse_lowlevel_notify_inval_inode(p->fs->se, dir, 0, 0);
}

/* A change of the pass, kept for tell(). */
static void note_change(void *arg, enum tree_change what, uint64_t parent, const char *name,
			uint64_t ino)
{
	struct pass *p = arg;

	p->changes++;
	if (p->n == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 64;
		struct note *nv = realloc(p->v, nc * sizeof(*nv));
		if (!nv) {
			p->lost = 1;
			return;
		}
		p->v = nv;
		p->cap = nc;
	}
	p->v[p->n++] = (struct note){what, parent, ino, name};
}

static void tell_one(struct pass *p, enum tree_change what, uint64_t parent, const char *name,
		     uint64_t ino);

/* Tell the kernel what the pass changed (a name it never looked up gets
 * -ENOENT from it, which is fine). With no lock held. */
static void tell(struct pass *p)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->fs->se)
			tell_one(p, p->v[i].what, p->v[i].parent, p->v[i].name, p->v[i].ino);
	if (p->lost && p->fs->se)
		fuse_lowlevel_notify_inval_inode(p->fs->se, TREE_ROOT_INO, 0, 0);
	free(p->v);
	p->v = NULL;
	p->n = p->cap = 0;
	p->lost = 0;
}

static void tell_one(struct pass *p, enum tree_change what, uint64_t parent, const char *name,
		     uint64_t ino)
{
	switch (what) {
	case TREE_ADDED: /* a miss the kernel keeps (a negative entry) goes too */
		fuse_lowlevel_notify_inval_entry(p->fs->se, parent, name, strlen(name));
		drop_dir(p, parent);
		break;
	case TREE_CHANGED:
		fuse_lowlevel_notify_inval_inode(p->fs->se, ino, 0, 0);
		break;
	case TREE_REPLACED:
	case TREE_REMOVED:
		if (parent)
			fuse_lowlevel_notify_inval_entry(p->fs->se, parent, name, strlen(name));
		drop_dir(p, parent);
		break;
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void save_snapshot(struct fs *fs)
{
	fs_save_tree(fs);
}

void fs_save_tree(struct fs *fs)
{
	static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER; /* one temporary file */
	char *buf;
	size_t len;
	int err = 0;

	if ((!fs->cache_dir && !fs->holder) || tree_serialize(fs->tree, &buf, &len) != 0)
		return;
	/* this mount's own, for the daemon after a crash (holder.h) */
	holder_keep_tree(buf, len);
	pthread_mutex_lock(&save_lock);
	if (fs->cache_dir)
		err = snapshot_save(fs->cache_dir, fs->snap_id, buf, len);
	pthread_mutex_unlock(&save_lock);
	if (err)
		log_once(LOG_LVL_WARN, "cannot save the listing snapshot in %s: %s", fs->cache_dir,
			 strerror(-err));
	free(buf);
}

/* One level of directory @ino (listing=lazy), its changes into @p (NULL:
 * not kept). With pass_lock held. */
static int list_dir(struct fs *fs, uint64_t ino, struct pass *p)
{
	char rel[PATH_MAX], *prefix;
	int err = tree_dirpath(fs->tree, ino, rel, sizeof(rel));

	if (err)
		return err;
	if (asprintf(&prefix, "%s%s", fs->prefix, rel) < 0)
		return -ENOMEM;
	tree_pass_begin(fs->tree);
	err = backend_list(fs->be, prefix, "/", listing_cb, fs);
	free(prefix);
	if (err)
		return err; /* keep what we had: no pass_end */
	{
		struct pass mine = {.fs = fs};
		uint64_t was = 0;
		tree_dir_listed(fs->tree, ino, &was);
		/* changes are kept in @p for the kernel, or counted in @mine */
		tree_dir_pass_end(fs->tree, ino, now_ms(), note_change, p ? p : &mine);
		if (was <= 1 || (p ? p->n : mine.n) || (p ? p->lost : mine.lost))
			atomic_store(&snap_dirty, 1); /* first listed, or changed */
		free(mine.v);
	}
	return 0;
}

/* The root and every directory looked in lately, listed again
 * (listing=lazy); the root's error is the pass's (an outage). */
/* The memory bound of listing=lazy: directories nobody looked in for as
 * long as the refresher keeps them fresh, and whose entries the kernel
 * forgot, drop their children (listed again when looked in).
 * MODELFS_FORGET_MS shortens the wait, for tests. */
static void forget_idle(struct fs *fs, uint64_t now, uint64_t keep_ms)
{
	const char *e = getenv("MODELFS_FORGET_MS");
	uint64_t *dirs;
	size_t n, dropped;

	if (e && atoll(e) > 0)
		keep_ms = (uint64_t)atoll(e);
	if (now <= keep_ms)
		return;
	pthread_mutex_lock(&pass_lock);
	dropped = tree_forget(fs->tree, now - keep_ms, &dirs, &n);
	pthread_mutex_unlock(&pass_lock);
	for (size_t i = 0; i < n; i++) /* its cached pages name the numbers dropped */
		fuse_lowlevel_notify_inval_inode(fs->se, dirs[i], 0, 0);
	if (dropped) {
		log_info("listing: %zu entries of %zu directories nobody used for %llu s forgotten",
			 dropped, n, (unsigned long long)(keep_ms / 1000));
		atomic_store(&snap_dirty, 1);
	}
	free(dirs);
}

static int list_dirs_in_use(struct fs *fs, size_t *changes)
{
	struct pass p = {.fs = fs};
	uint64_t keep_ms = (uint64_t)LAZY_KEEP_TTLS * fs->opts->list_ttl_s * 1000, now = now_ms();
	uint64_t *dirs = NULL;
	size_t n = 0;
	int err, first_err = 0;

	if (keep_ms < LAZY_KEEP_MIN_S * 1000ull)
		keep_ms = LAZY_KEEP_MIN_S * 1000ull;
	/* the kernel answers lookups itself for entry_timeout: no use seen */
	if (keep_ms < (uint64_t)(fs->opts->entry_timeout_s * 1000))
		keep_ms = (uint64_t)(fs->opts->entry_timeout_s * 1000);
	if (keep_ms < (uint64_t)(fs->opts->attr_timeout_s * 1000))
		keep_ms = (uint64_t)(fs->opts->attr_timeout_s * 1000);
	pthread_mutex_lock(&pass_lock);
	first_err = list_dir(fs, TREE_ROOT_INO, &p);
	pthread_mutex_unlock(&pass_lock);
	tell(&p);
	if (first_err)
		return first_err;
	/* at least 1: a directory never used (from a snapshot) is not in use */
	err = tree_dirs_in_use(fs->tree, now > keep_ms + 1 ? now - keep_ms : 1, &dirs, &n);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		if (dirs[i] == TREE_ROOT_INO)
			continue;
		pthread_mutex_lock(&pass_lock);
		err = list_dir(fs, dirs[i], &p);
		pthread_mutex_unlock(&pass_lock);
		tell(&p);
		if (err && err != -ENOENT && !first_err)
			first_err = err; /* ENOENT: gone meanwhile, its parent's listing said so */
	}
	free(dirs);
	*changes = p.changes;
	forget_idle(fs, now, keep_ms);
	return first_err;
}

/* List the prefix into the tree: all of it, or (lazy) the root and the
 * directories in use. @changes (may be NULL) gets the count. */
static int load(struct fs *fs, int notify, size_t *changes)
{
	struct pass p = {.fs = fs};
	size_t lazy_changes = 0;
	int err;

	if (fs->lazy) {
		if (!notify) { /* the mount: its root */
			pthread_mutex_lock(&pass_lock);
			err = list_dir(fs, TREE_ROOT_INO, NULL);
			pthread_mutex_unlock(&pass_lock);
			tree_dir_used(fs->tree, TREE_ROOT_INO, now_ms());
		} else {
			err = list_dirs_in_use(fs, &lazy_changes);
		}
		if (changes)
			*changes = lazy_changes;
		if (atomic_exchange(&snap_dirty, 0))
			save_snapshot(fs);
		return err;
	}
	pthread_mutex_lock(&pass_lock);
	tree_pass_begin(fs->tree);
	err = backend_list(fs->be, fs->prefix, NULL, listing_cb, fs);
	if (!err)
		tree_pass_end(fs->tree, notify ? note_change : NULL, &p);
	pthread_mutex_unlock(&pass_lock);
	if (err)
		return err; /* keep what we had: no pass_end */
	tell(&p);
	if (changes)
		*changes = p.changes;
	if (!notify || p.changes)
		save_snapshot(fs);
	return 0;
}

int fs_dir_ready(struct fs *fs, uint64_t ino)
{
	uint64_t listed = 0;
	int err;

	if (!fs->lazy)
		return 0;
	uint64_t down;

	/* used first: a forget (tree_forget) between the two would see it
	 * idle and leave this worker with a stale `listed` */
	tree_dir_used(fs->tree, ino, now_ms());
	err = tree_dir_listed(fs->tree, ino, &listed);
	if (err)
		return err == -ENOTDIR ? 0 : err;
	down = atomic_load(&fs->backend_down_ms);
	/* listed: the refresher keeps it; 1: only a snapshot's, listed again
	 * once the store answers (with it down, the snapshot's is what there is) */
	if (listed > 1 || (listed == 1 && down))
		return 0;
	/* the store failed a moment ago: fail now, not a whole timeout per
	 * lookup, one after another on pass_lock */
	if (down && now_ms() - down < FS_DOWN_RETRY_MS)
		return listed ? 0 : -EIO;
	pthread_mutex_lock(&pass_lock);
	/* another worker may have listed it while we waited. Nothing to tell
	 * the kernel: it has asked us of every name in a directory never
	 * listed (and this worker's lookup holds the directory's lock); a
	 * snapshot's directory was read by the kernel, but at mount, from us */
	if (tree_dir_listed(fs->tree, ino, &listed) == 0 && listed <= 1)
		err = list_dir(fs, ino, NULL);
	pthread_mutex_unlock(&pass_lock);
	if (err) {
		atomic_store(&fs->backend_down_ms, now_ms());
		log_once(LOG_LVL_WARN, "listing a directory of %s failed (%s): it looks empty until "
			 "the store answers", fs->opts->source, strerror(-err));
		if (listed == 1)
			return 0; /* the snapshot's, then */
	}
	return err;
}

int fs_dir_ready_tree(struct fs *fs, const char *rel)
{
	char part[PATH_MAX];
	uint64_t ino = TREE_ROOT_INO, *queue = NULL;
	size_t qn = 0, qcap = 0, qi = 0;
	const char *p = rel;
	int err = 0;

	if (!fs->lazy)
		return 0;
	/* down to @rel's directory, one level at a time */
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		struct tree_attr a;
		if (!slash)
			break; /* the last part is a name in that directory, or a glob */
		if (n == 0 || n >= sizeof(part)) {
			p = slash + 1;
			continue;
		}
		memcpy(part, p, n);
		part[n] = '\0';
		if ((err = fs_dir_ready(fs, ino)) != 0)
			return err;
		if (tree_lookup(fs->tree, ino, part, &a) != 0 || !a.is_dir)
			return 0; /* nothing there: nothing to list */
		ino = a.ino;
		p = slash + 1;
	}
	/* and every directory below it */
	for (;;) {
		uint64_t *kids;
		size_t nk;
		if ((err = fs_dir_ready(fs, ino)) != 0)
			break;
		if (tree_subdirs(fs->tree, ino, &kids, &nk) == 0) {
			if (qn + nk > qcap) {
				size_t nc = (qn + nk) * 2;
				uint64_t *nq = realloc(queue, nc * sizeof(*nq));
				if (!nq) {
					free(kids);
					err = -ENOMEM;
					break;
				}
				queue = nq;
				qcap = nc;
			}
			if (nk)
				memcpy(queue + qn, kids, nk * sizeof(*kids));
			qn += nk;
			free(kids);
		}
		if (qi == qn)
			break;
		ino = queue[qi++];
	}
	free(queue);
	if (atomic_exchange(&snap_dirty, 0))
		save_snapshot(fs);
	return err;
}

int fs_load_listing(struct fs *fs)
{
	return load(fs, 0, NULL);
}

/* ---- the thread */

static void *refresh_main(void *arg)
{
	struct fs_refresh *rf = arg;
	struct fs *fs = rf->fs;

	pthread_mutex_lock(&rf->lock);
	while (!rf->stop) {
		unsigned every = rf->offline ? REFRESH_OFFLINE_S : fs->opts->list_ttl_s;
		struct timespec ts;
		uint64_t pass;
		size_t changes = 0;
		int err;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += every ? every : 3600;
		/* timed passes move done past asked: asked for is asked > done */
		while (!rf->stop && rf->asked <= rf->done &&
		       pthread_cond_timedwait(&rf->cond, &rf->lock, &ts) == 0)
			;
		if (rf->stop)
			break;
		if (rf->asked <= rf->done && !every)
			continue; /* list_ttl=0: only when asked */
		pass = rf->asked > rf->done ? rf->asked : rf->done + 1;
		rf->running = pass;
		pthread_mutex_unlock(&rf->lock);

		err = load(fs, 1, &changes);
		if (err == 0 && rf->offline) {
			log_info("the backend answers again: listing refreshed");
			atomic_store(&fs->backend_down_ms, 0);
		} else if (err && !rf->offline) {
			log_warn("refreshing the listing of %s failed (%s): keeping the one there is",
				 fs->opts->source, strerror(-err));
		} else if (changes) {
			log_info("listing refreshed: %zu names changed", changes);
		}

		pthread_mutex_lock(&rf->lock);
		if (err == 0)
			rf->offline = 0;
		rf->last_err = err;
		rf->last_changes = changes;
		if (pass > rf->done)
			rf->done = pass;
		rf->running = 0;
		pthread_cond_broadcast(&rf->cond);
	}
	pthread_mutex_unlock(&rf->lock);
	return NULL;
}

int fs_refresh_start(struct fs *fs, int offline)
{
	struct fs_refresh *rf = calloc(1, sizeof(*rf));
	pthread_condattr_t ca;

	if (!rf)
		return -ENOMEM;
	rf->fs = fs;
	rf->offline = offline;
	pthread_mutex_init(&rf->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rf->cond, &ca);
	pthread_condattr_destroy(&ca);
	fs->rf = rf;
	rf->started = pthread_create(&rf->th, NULL, refresh_main, rf) == 0;
	return rf->started ? 0 : -EAGAIN;
}

void fs_refresh_halt(struct fs *fs)
{
	struct fs_refresh *rf = fs->rf;

	if (!rf)
		return;
	pthread_mutex_lock(&rf->lock);
	rf->stop = 1;
	pthread_cond_broadcast(&rf->cond);
	pthread_mutex_unlock(&rf->lock);
	if (rf->started) {
		pthread_join(rf->th, NULL);
		rf->started = 0;
	}
}

void fs_refresh_stop(struct fs *fs)
{
	struct fs_refresh *rf = fs->rf;

	if (!rf)
		return;
	fs_refresh_halt(fs);
	pthread_mutex_destroy(&rf->lock);
	pthread_cond_destroy(&rf->cond);
	fs->rf = NULL;
	free(rf);
}

int fs_refresh_now(struct fs *fs, unsigned timeout_ms, size_t *changes)
{
	struct fs_refresh *rf = fs->rf;
	struct timespec ts;
	uint64_t want;
	int err;

	if (!rf)
		return -ENOTSUP;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&rf->lock);
	/* a pass running now may have listed before what the caller knows of:
	 * the one after it */
	want = (rf->running ? rf->running : rf->done) + 1;
	if (rf->asked < want)
		rf->asked = want;
	pthread_cond_broadcast(&rf->cond);
	err = 0;
	while (!rf->stop && rf->done < want && err == 0)
		err = pthread_cond_timedwait(&rf->cond, &rf->lock, &ts);
	if (rf->done >= want) {
		err = rf->last_err;
		*changes = rf->last_changes;
	} else {
		err = rf->stop ? -ECANCELED : -ETIMEDOUT;
	}
	pthread_mutex_unlock(&rf->lock);
	return err;
}
