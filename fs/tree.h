/* The inode table: the mounted prefix's keys seen as a directory tree.
 *
 * Built from a listing (tree_add_key per key, tree_add_dir per common prefix
 * or "dir/" marker). Inode numbers are assigned on first sight and never
 * reused or renumbered for the life of the tree, so they are stable within a
 * mount, across listing refreshes too; a key that a refresh finds to be
 * another version (size, mtime or ETag) gets a new node, so that files open
 * on the old one keep it (and the kernel's pages of it). Nodes are never freed before
 * tree_free(); a node whose key vanished in a refresh is marked removed and
 * no longer found by lookups.
 *
 * Naming rules (docs/design.md): a key maps to a path by splitting on '/';
 * keys with an empty, "." or ".." segment, or a segment longer than NAME_MAX,
 * are skipped with one log line. When "a" is both an object and a prefix
 * ("a" and "a/b"), the directory wins and the object is hidden (logged).
 *
 * Locking: one rwlock inside the tree. Readers copy what they need out in
 * tree_lookup/tree_getattr/tree_readdir; writers are the listing code.
 * Knows nothing of FUSE.
 */
#ifndef MODELFS_TREE_H
#define MODELFS_TREE_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"

#define TREE_ROOT_INO 1

struct tree;

/* A copy of one node's attributes. */
struct tree_attr {
	uint64_t ino;
	int is_dir;
	uint64_t size;
	int64_t mtime;
	uint32_t nlink;
	char etag[BACKEND_ETAG_MAX];
};

int tree_new(int64_t root_mtime, struct tree **out);
void tree_free(struct tree *t);

/* Start a new listing pass: keys added from now on are "seen". */
void tree_pass_begin(struct tree *t);

/* What a pass did to one name, for the kernel's caches. */
enum tree_change {
	TREE_ADDED = 1, /* a new name (or one back after a removal) in @parent */
	TREE_CHANGED,   /* what @ino shows changed (only the root, for "everything") */
	TREE_REPLACED,  /* @name turned from a file into a directory or back */
	TREE_REMOVED,   /* @name is gone from @parent */
};
/* @name stays valid as long as the tree (nodes are never freed). */
typedef void (*tree_change_fn)(void *arg, enum tree_change what, uint64_t parent,
			       const char *name, uint64_t ino);

/* Mark every file or directory not seen in this pass as removed, then (with
 * no lock held: @cb may block) call @cb, if not NULL, for every name the
 * pass added, changed, replaced or removed (short of memory: a TREE_CHANGED
 * of the root, parent 0, stands for all). @return the number removed. */
size_t tree_pass_end(struct tree *t, tree_change_fn cb, void *arg);

/* Add or update the object at @relpath (relative to the mounted prefix;
 * a trailing '/' makes it a directory marker). @obj may be NULL for a common
 * prefix. @return 0 when added or updated, 1 when skipped (logged), -ENOMEM. */
int tree_add_key(struct tree *t, const char *relpath, const struct backend_object *obj);

/* Lazy listing (listing=lazy): a directory's children are known once it has
 * been listed (one level, with a delimiter). A listing of @dir is a pass:
 * tree_pass_begin, tree_add_key of what the level holds (files and common
 * prefixes), then tree_dir_pass_end, which sweeps @dir's children only,
 * reports the changes as tree_pass_end does and records @now_ms as the
 * listing's time. @return the number removed. Passes must not overlap. */
size_t tree_dir_pass_end(struct tree *t, uint64_t dir, uint64_t now_ms, tree_change_fn cb,
			 void *arg);
/* When directory @ino was listed (*@listed_ms; 0: never; 1: from a
 * snapshot). @return 0, -ENOENT, -ENOTDIR. */
int tree_dir_listed(struct tree *t, uint64_t ino, uint64_t *listed_ms);
/* Every directory unlisted again (a snapshot's are old news at a mount). */
void tree_forget_listed(struct tree *t);
/* Someone looked in directory @ino (a lookup, a readdir) at @now_ms. */
void tree_dir_used(struct tree *t, uint64_t ino, uint64_t now_ms);
/* The listed directories used since @since_ms (refreshing them costs what
 * was looked at), and the live subdirectories of @dir: malloc'd arrays of
 * inodes. @return 0, -ENOMEM (-ENOENT, -ENOTDIR). */
int tree_dirs_in_use(struct tree *t, uint64_t since_ms, uint64_t **out, size_t *n);
int tree_subdirs(struct tree *t, uint64_t dir, uint64_t **out, size_t *n);

/* Look @name up in directory @parent. @return 0, -ENOENT, -ENOTDIR. */
int tree_lookup(struct tree *t, uint64_t parent, const char *name, struct tree_attr *out);
int tree_getattr(struct tree *t, uint64_t ino, struct tree_attr *out);
/* The same, and also for a node removed or superseded since (its last
 * attributes, nlink 0): what the kernel asks of a file still open on it. */
int tree_getattr_kept(struct tree *t, uint64_t ino, struct tree_attr *out);

/* The full key of file @ino (relative path joined to the prefix by the
 * caller) into @buf. @return 0, -ENOENT, -EISDIR, -ENAMETOOLONG. */
int tree_relpath(struct tree *t, uint64_t ino, char *buf, size_t len);

/* The path of directory @ino below the prefix, with a trailing '/' ("" for
 * the root). @return 0, -ENOENT, -ENOTDIR, -ENAMETOOLONG. */
int tree_dirpath(struct tree *t, uint64_t ino, char *buf, size_t len);

/* Directory entries of @dir from position @pos (0 = first; "." and ".." are
 * 0 and 1). Calls @fill with each entry and the position of the next one
 * until @fill returns non-zero. @return 0, -ENOENT, -ENOTDIR. */
typedef int (*tree_fill_fn)(void *arg, const char *name, const struct tree_attr *attr,
			    uint64_t next_pos);
int tree_readdir(struct tree *t, uint64_t dir, uint64_t pos, tree_fill_fn fill, void *arg);

/* File @ino's identity after a HEAD (size, mtime, ETag). Another version
 * (size or ETag) gets a new node for the name, as a listing would make it:
 * @ino is then removed (files open on it keep it). @return 1 when it was
 * another version, 0 when not, -ENOENT, -EISDIR, -ENOMEM. */
int tree_update_file(struct tree *t, uint64_t ino, const struct backend_object *obj);

/* When file @ino's metadata was last confirmed by the backend (ms, CLOCK_MONOTONIC). */
int tree_validated_ms(struct tree *t, uint64_t ino, uint64_t *ms);

/* Serialize every live node (for the metadata snapshot) into a malloc'd
 * buffer, and rebuild a tree from one (keys added as by tree_add_key), into
 * an empty tree: each node gets the inode it had (a new process keeps the
 * numbers; the ones between are never found). @return 0, -ENOMEM, -EPROTO
 * (malformed buffer, or one whose numbers do not fit: start a new tree). */
int tree_serialize(struct tree *t, char **buf, size_t *len);
int tree_load(struct tree *t, const char *buf, size_t len);
/* Number new nodes from *@next on (what earlier daemons of this mount gave
 * out: their numbers may still be in the kernel's hands), and keep *@next
 * up to date from now on (keep.h). @return 0 or -errno. */
int tree_keep_inos(struct tree *t, _Atomic uint64_t *next);

/* The kernel's references to @ino: a LOOKUP or READDIRPLUS entry answered
 * (ref), a FORGET of @n (unref). */
void tree_ref(struct tree *t, uint64_t ino);
void tree_unref(struct tree *t, uint64_t ino, uint64_t n);
/* The nodes there are now came from another daemon: their references are
 * not known, they are never forgotten. */
void tree_counts_unknown(struct tree *t);
/* listing=lazy's memory bound: the children of directories not looked in
 * since @unused_since_ms (CLOCK_MONOTONIC) and that the kernel holds none
 * of go (their numbers stay given: holes); those directories are listed
 * again when next looked in. *@dirs (malloc'd, @n_dirs): those
 * directories, for the kernel to drop its pages of them. @return the nodes
 * dropped. */
size_t tree_forget(struct tree *t, uint64_t unused_since_ms, uint64_t **dirs, size_t *n_dirs);

/* Call @cb for every live file (inode, path below the prefix, attributes)
 * until it returns non-zero. The tree is read-locked meanwhile: @cb must not
 * call back into the tree. */
int tree_foreach_file(struct tree *t,
		      int (*cb)(void *arg, const char *relpath, const struct tree_attr *a),
		      void *arg);

/* Counts for statfs and logs. */
void tree_counts(struct tree *t, uint64_t *files, uint64_t *dirs, uint64_t *bytes);

#endif
