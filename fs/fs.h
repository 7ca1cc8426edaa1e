/* The FUSE front end: the low-level operations table and the context it
 * serves from. Only fs/ includes fuse_lowlevel.h. */
#ifndef MODELFS_FS_H
#define MODELFS_FS_H

#include <fuse_lowlevel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backend.h"
#include "cache.h"
#include "opts.h"
#include "passthrough.h"
#include "tree.h"

/* Everything the operations need, passed as the session's userdata.
 * Immutable while the session runs, but for the tree (its own lock). */
struct fs {
	const struct fs_opts *opts;
	struct backend *be;
	struct cache *cache;
	struct tree *tree;
	const char *prefix;    /* "" or "dir/": prepended to tree paths to get keys */
	const char *source_ns; /* the source's identity in the cache (the backend's name) */
	const char *cache_dir; /* NULL: no snapshots */
	const char *snap_id;   /* names this mount's snapshot in the cache dir */
	_Atomic uint64_t backend_down_ms; /* CLOCK_MONOTONIC of the last failed HEAD */
	char bdi[32];          /* "0:N", the mount's backing device in /sys/class/bdi */
	struct fs_prefetch *pf; /* prefetch.c */
	struct pt *pt;          /* passthrough.c */
	atomic_int bdi_tuned;
	unsigned read_ahead_kb; /* the mount's kernel readahead, set at the first open */
	struct metrics *metrics; /* metrics.c; set before the session loop starts */
	struct fuse_session *se; /* for the kernel's notifications (refresh.c) */
	struct fs_refresh *rf;   /* refresh.c */
	struct handles *handles; /* open files (handle.h): fuse_file_info.fh */
	struct keep *keep;       /* what outlives this process (keep.h) */
	struct chan *chan;       /* the /dev/fuse channel's hooks (channel.h) */
	const char *holder;      /* the holder's socket name (holder.h), NULL: none */
	int adopted;             /* took the mount over from another daemon */
	atomic_int detached;     /* SIGTERM took the mount off its path: no unmount at the end */
	int lazy;                /* listing=lazy: directories listed when first looked in */
};

/* The largest FUSE request asked for, in pages: 4 MiB, one chunk (see
 * docs/design.md, "Request size": a no_cache read is one GET per request,
 * and 1 MiB requests made four such readers 2-6x slower). The kernel grants
 * less where fs.fuse.max_pages_limit is lower and cannot be raised.
 * MODELFS_MAX_PAGES overrides it, for benchmarks. */
#define FS_MAX_PAGES 1024

/* Make requests of @want pages possible: raise fs.fuse.max_pages_limit
 * (Linux >= 6.13; root) when it is lower. @return the pages the kernel
 * will grant, at most @want. */
unsigned fs_fuse_max_pages(unsigned want);

/* Prefetch (prefetch=, `modelfs prefetch`) and readiness (ready_file=,
 * systemd READY=1, `modelfs status`): started once the mount is live and the
 * cache open, stopped before the cache closes. @return 0 or -errno (the
 * mount-time prefetch could not start: said in the log; the mount goes on). */
int fs_ready_start(struct fs *fs);
void fs_ready_stop(struct fs *fs);

/* Queue every file whose path below the mount is @under (@exact) or starts
 * with @under, and matches @globs (NULL: all). @return 0, -ENODATA (no disk
 * cache), -ENOSPC (larger than the cache quota: nothing queued), -ENOMEM. */
int fs_prefetch_add(struct fs *fs, const char *under, int exact, const char *globs,
		    size_t *n_files, uint64_t *n_bytes);

/* "key=value" lines: ready, files and bytes done/total, rate. @return length. */
int fs_prefetch_status(struct fs *fs, char *buf, size_t len);

/* "modelfs prefetch ..." and "modelfs status ..." (control.c). @return the exit code. */
int ctl_prefetch(int argc, char **argv);
int ctl_status(int argc, char **argv);
/* "modelfs stats ..." (ctl_stats.c). */
int ctl_stats(int argc, char **argv);

/* Send a state line to systemd's NOTIFY_SOCKET, if there is one. */
void fs_notify(const char *state);

/* Find the mount's "major:minor" in /proc/self/mountinfo; @mountpoint as mounted
 * (absolute, canonical: it is not resolved again). @return 0 or -ENOENT. */
int fs_find_bdi(const char *mountpoint, char *out, size_t len);

/* The mountpoint before mounting (mnt.c). fs_mount_at: the type
 * ("fuse.modelfs", ...) and source of the mount on top at @mountpoint;
 * @return 0, -ENOENT when nothing is mounted there, or -errno.
 * fs_clear_dead_mount: lazily unmount it (root: umount2; others:
 * fusermount3 -uz). fs_dir_is_empty: @return 1, 0, or -errno. */
int fs_mount_at(const char *mountpoint, char *fstype, size_t type_len, char *source,
		size_t source_len);
int fs_clear_dead_mount(const char *mountpoint);
int fs_dir_is_empty(const char *dir);
/* @path made absolute, following links but for a last component that cannot
 * be reached (a dead mount). @return 0 or -errno. */
int fs_abs_path(const char *path, char *out, size_t len);

extern const struct fuse_lowlevel_ops fs_ops;

/* After the session: release the files whose RELEASE never came (a mount
 * that SIGTERM detached ends when its last file is closed, and the kernel
 * may drop that file's RELEASE with the connection). */
void fs_release_all(struct fs *fs);

/* The size of an open file's record in the handle table (ops.c). */
extern const size_t fs_handle_rec_size;
/* A daemon that took over the connection: the passthrough state of the
 * files the last one left open (their handles were adopted). @return 0
 * or -ENOMEM. */
int fs_adopt_handles(struct fs *fs);

/* List the whole mounted prefix into @fs->tree (one listing pass) and save
 * the snapshot: the mount's first listing. @return 0 or the backend's -errno. */
int fs_load_listing(struct fs *fs);

/* listing=lazy: list directory @ino (one level) if it never was, and note
 * that it is in use (the refresher keeps it fresh). @return 0 (also when
 * the mount is not lazy or @ino is a file) or the listing's -errno. */
int fs_dir_ready(struct fs *fs, uint64_t ino);
/* listing=lazy: the directories down to @rel's (a path below the mount;
 * its last component is a name or a glob) and every one below that,
 * listed: before a prefetch walks the tree. @return 0 or -errno. */
int fs_dir_ready_tree(struct fs *fs, const char *rel);

/* The listing refresher (refresh.c): every list_ttl seconds, every 10 s
 * while @offline (the store has not answered yet), and when asked. */
int fs_refresh_start(struct fs *fs, int offline);
void fs_refresh_stop(struct fs *fs);
/* The thread ended (while the session still answers: its notifications
 * must not wait on a lookup that no worker will answer); waiters of
 * fs_refresh_now get -ECANCELED. */
void fs_refresh_halt(struct fs *fs);
/* Ask for a pass that starts after this call and wait for it, at most
 * @timeout_ms. @return 0 with *@changes set, the listing's -errno,
 * -ETIMEDOUT, -ENOTSUP (no refresher). */
int fs_refresh_now(struct fs *fs, unsigned timeout_ms, size_t *changes);
/* Save the tree: the snapshot in the cache directory, and the holder's
 * copy (holder.h). */
void fs_save_tree(struct fs *fs);
/* "modelfs refresh PATH..." (control.c). @return the exit code. */
int ctl_refresh(int argc, char **argv);

#endif
