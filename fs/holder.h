/* The holder: a small process that keeps a copy of the mount's /dev/fuse
 * fd and of its kept state (keep.h), so that the mount outlives its
 * daemon. When the daemon dies without saying it is ending (a crash,
 * kill -9, the OOM killer), the holder starts a new daemon on the same
 * connection; `modelfs upgrade MOUNT` has it start the new binary, which
 * takes over once the old one has stopped taking requests.
 *
 * The daemon starts it once the mount is made; it runs the same binary
 * ("modelfs __holder ...", a fresh image: it holds no copy of the
 * daemon's memory) and knows nothing of FUSE but the fd. It listens on a
 * unix socket in a directory only its user can enter (/run/modelfs for
 * root; the socket's path is the mount's user.modelfs.holder xattr) for
 * upgrades, from root or its own user only, and runs only a binary it
 * opens itself that only root or its user can change.
 */
#ifndef MODELFS_HOLDER_H
#define MODELFS_HOLDER_H

#include <stddef.h>

/* How this daemon was started. */
enum holder_mode { HOLDER_FIRST, HOLDER_CRASH, HOLDER_UPGRADE };

struct holder_adopt {
	enum holder_mode mode;
	int fuse_fd, keep_fd, metrics_fd, ctl_fd; /* -1: none */
	int crashes;     /* daemons that crashed in a row before this one */
	int tree_fd;     /* the last tree a daemon of this mount kept (holder_keep_tree), -1 */
	int holder_pid;
	char name[108];  /* the holder's socket: a path */
};

/* A daemon started by a holder: @return 1 with @a filled (from the
 * environment, which is then cleared), 0 for a first start, -EINVAL with
 * @msg set for a malformed one. */
int holder_adopting(struct holder_adopt *a, char *msg, size_t len);

/* First start, the mount made: start the holder with copies of the fds
 * (@metrics_fd -1: none), to start daemons with @argv in directory @cwd
 * (an O_PATH fd; -1: "/"). @return 0 with @a's ctl_fd, holder_pid and name
 * set, or -errno (the mount goes on without one). */
int holder_start(int fuse_fd, int keep_fd, int metrics_fd, int cwd, char **argv,
		 struct holder_adopt *a);

/* The daemon's side, in a thread: on an upgrade, @stop is called; it
 * stops the session and returns an fd with the tree's snapshot (or -1),
 * which is sent to the holder; then the process ends (_exit). */
typedef int (*holder_stop_fn)(void *arg);
int holder_link_start(int ctl, holder_stop_fn stop, void *arg);

/* An upgrade's new daemon, ready but for the tree: say so and wait for the
 * old one to stop. @return the snapshot's fd, -1 when none came (the old
 * one died first), or -errno (the holder is gone). */
int holder_standby(int ctl);
/* The new daemon serves now; or it failed to start, with @why. */
void holder_serving(int ctl);
void holder_failed(int ctl, const char *why);
/* Give the holder this mount's tree (a snapshot, tree_serialize's), for
 * the daemon it starts after a crash: that one must have this mount's
 * inode numbers, not another mount's of the same source (the snapshot in
 * the cache directory is shared). No holder: nothing. */
void holder_keep_tree(const char *buf, size_t len);
/* This daemon ends for good (no new daemon wanted). Also at exit(). */
void holder_bye(void);

/* "modelfs __holder ..." */
int holder_main(int argc, char **argv);
/* "modelfs upgrade MOUNT" */
int ctl_upgrade(int argc, char **argv);

#endif
