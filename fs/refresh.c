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
 * Threads: the refresher owns the passes; the xattr handler (a FUSE worker)
 * waits on rf->cond for the pass it asked for. Everything in struct
 * fs_refresh is under rf->lock.
 */
#include "fs.h"
#include "log.h"
#include "snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REFRESH_OFFLINE_S 10

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

struct pass {
	struct fs *fs;
	size_t changes;
	uint64_t last_parent; /* the directory cache last dropped: once a run */
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

/* A change of the pass: tell the kernel (a name it never looked up gets
 * -ENOENT from it, which is fine). */
static void tell_kernel(void *arg, enum tree_change what, uint64_t parent, const char *name,
			uint64_t ino)
{
	struct pass *p = arg;

	p->changes++;
	if (!p->fs->se)
		return;
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

/* List the prefix into the tree. @changes (may be NULL) gets the count. */
static int load(struct fs *fs, int tell, size_t *changes)
{
	struct pass p = {fs, 0, 0};
	int err;

	tree_pass_begin(fs->tree);
	err = backend_list(fs->be, fs->prefix, NULL, listing_cb, fs);
	if (err)
		return err; /* keep what we had: no pass_end */
	tree_pass_end(fs->tree, tell ? tell_kernel : NULL, &p);
	if (changes)
		*changes = p.changes;
	if (fs->cache_dir && (!tell || p.changes)) {
		char *buf;
		size_t len;
		if (tree_serialize(fs->tree, &buf, &len) == 0) {
			err = snapshot_save(fs->cache_dir, fs->snap_id, buf, len);
			if (err)
				log_once(LOG_LVL_WARN, "cannot save the listing snapshot in %s: %s",
					 fs->cache_dir, strerror(-err));
			free(buf);
		}
	}
	return 0;
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
		while (!rf->stop && rf->asked == rf->done &&
		       pthread_cond_timedwait(&rf->cond, &rf->lock, &ts) == 0)
			;
		if (rf->stop)
			break;
		if (rf->asked == rf->done && !every)
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

void fs_refresh_stop(struct fs *fs)
{
	struct fs_refresh *rf = fs->rf;

	if (!rf)
		return;
	pthread_mutex_lock(&rf->lock);
	rf->stop = 1;
	pthread_cond_broadcast(&rf->cond);
	pthread_mutex_unlock(&rf->lock);
	if (rf->started)
		pthread_join(rf->th, NULL);
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

	if (!rf || !rf->started)
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
