/* Fuzz target: fs/tree.c's snapshot reader, tree_load().
 *
 * The input is the body of a metadata snapshot after decompression (records
 * of kind, path length, path, size, mtime, ETag; see tree_serialize). A
 * snapshot file lives on local disk, but it may be truncated, corrupted or
 * written by another build, so it is treated as untrusted.
 *
 * After loading into a fresh tree, every inode is visited: getattr, readdir
 * (with a lookup of every entry and the nlink count checked against the
 * subdirectories listed), a resumed readdir, relpath for files. Then the tree
 * is serialized, loaded into a second tree and serialized again: a snapshot
 * of a loaded tree must load cleanly and reproduce itself byte for byte.
 * Last, two listing passes over the same tree (tree_pass_begin/end) re-add
 * the records of the first half of the input, then all of them, so that
 * nodes are removed and revived and files and directories change places;
 * the walk is repeated after each, with removed inodes allowed.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "log.h"
#include "tree.h"

struct dirwalk {
	struct tree *t;
	uint64_t dir;
	uint64_t last_pos; /* next_pos must increase */
	size_t entries;    /* not counting "." and ".." */
	uint32_t subdirs;
	uint64_t second_pos; /* next_pos after the first child entry, or 0 */
};

static int on_entry(void *arg, const char *name, const struct tree_attr *a, uint64_t next_pos)
{
	struct dirwalk *w = arg;
	struct tree_attr b;

	FUZZ_CHECK(next_pos > w->last_pos);
	w->last_pos = next_pos;
	FUZZ_CHECK(a->ino != 0);
	if (strcmp(name, ".") == 0) {
		FUZZ_CHECK(a->ino == w->dir);
		return 0;
	}
	if (strcmp(name, "..") == 0)
		return 0;
	FUZZ_CHECK(name[0] != '\0' && strchr(name, '/') == NULL);
	FUZZ_CHECK(strlen(name) <= NAME_MAX);
	FUZZ_CHECK(tree_lookup(w->t, w->dir, name, &b) == 0);
	FUZZ_CHECK(b.ino == a->ino && b.is_dir == a->is_dir);
	if (a->is_dir)
		w->subdirs++;
	else
		FUZZ_CHECK(a->nlink == 1);
	if (w->entries++ == 0)
		w->second_pos = next_pos;
	return 0;
}

static int count_entry(void *arg, const char *name, const struct tree_attr *a, uint64_t next_pos)
{
	size_t *n = arg;

	(void)name;
	(void)a;
	(void)next_pos;
	(*n)++;
	return 0;
}

/* Visit inodes 1..@n_inodes (and one past: -ENOENT). With @all_live every
 * one must be live. Every live node must be listed by exactly one live
 * directory: the entries counted over all readdirs, plus the root, must equal
 * tree_counts' files + dirs (an orphan under a removed parent would break it). */
static void walk(struct tree *t, uint64_t n_inodes, int all_live)
{
	uint64_t files, dirs, bytes, listed = 1;
	static char path[PATH_MAX + 2];

	tree_counts(t, &files, &dirs, &bytes);
	FUZZ_CHECK(dirs >= 1); /* the root */
	FUZZ_CHECK(files + dirs <= n_inodes);
	for (uint64_t ino = TREE_ROOT_INO; ino <= n_inodes + 1; ino++) {
		struct tree_attr a;
		int err = tree_getattr(t, ino, &a);

		if (ino == n_inodes + 1 || (!all_live && err == -ENOENT)) {
			FUZZ_CHECK(err == -ENOENT);
			FUZZ_CHECK(tree_relpath(t, ino, path, sizeof(path)) == -ENOENT);
			continue;
		}
		FUZZ_CHECK(err == 0 && a.ino == ino);
		FUZZ_CHECK(strnlen(a.etag, sizeof(a.etag)) < sizeof(a.etag));
		if (a.is_dir) {
			struct dirwalk w = {.t = t, .dir = ino};
			FUZZ_CHECK(tree_readdir(t, ino, 0, on_entry, &w) == 0);
			FUZZ_CHECK(a.nlink == 2 + w.subdirs);
			FUZZ_CHECK(tree_relpath(t, ino, path, sizeof(path)) == -EISDIR);
			listed += w.entries;
			if (w.second_pos) { /* resume after the first child */
				size_t n = 0;
				FUZZ_CHECK(tree_readdir(t, ino, w.second_pos, count_entry, &n) == 0);
				FUZZ_CHECK(n == w.entries - 1);
			}
		} else {
			size_t n = 0;
			FUZZ_CHECK(a.nlink == 1);
			FUZZ_CHECK(tree_readdir(t, ino, 0, count_entry, &n) == -ENOTDIR);
			FUZZ_CHECK(tree_relpath(t, ino, path, sizeof(path)) == 0);
			FUZZ_CHECK(path[0] != '\0' && path[0] != '/');
			FUZZ_CHECK(tree_relpath(t, ino, path, 1) == -ENAMETOOLONG);
		}
	}
	FUZZ_CHECK(listed == files + dirs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(0, LOG_LVL_ERROR); /* skipped keys log warnings: keep quiet */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_dup(data, size);
	struct tree *t = NULL, *t2 = NULL;
	char *s1 = NULL, *s2 = NULL;
	size_t l1 = 0, l2 = 0;
	uint64_t f1, d1, b1, f2, d2, b2, n_inodes;
	int err;

	if (tree_new(1600000000, &t))
		abort();
	err = tree_load(t, buf, size);
	FUZZ_CHECK(err == 0 || err == -EPROTO || err == -ENOMEM);
	/* Nothing is removed in a fresh tree: inodes 1..files+dirs are all live
	 * (v1; a v2 snapshot keeps its numbers, with holes between) */
	tree_counts(t, &f1, &d1, &b1);
	n_inodes = f1 + d1;
	walk(t, n_inodes, size < 8 || memcmp(data, "MFSTREE2", 8) != 0);

	/* Round trip: what we write must read back as the same tree. */
	FUZZ_CHECK(tree_serialize(t, &s1, &l1) == 0);
	FUZZ_CHECK(l1 >= 8 && memcmp(s1, "MFSTREE2", 8) == 0);
	if (tree_new(1600000000, &t2))
		abort();
	FUZZ_CHECK(tree_load(t2, s1, l1) == 0);
	FUZZ_CHECK(tree_serialize(t2, &s2, &l2) == 0);
	FUZZ_CHECK(l1 == l2 && memcmp(s1, s2, l1) == 0);
	tree_counts(t2, &f2, &d2, &b2);
	FUZZ_CHECK(f1 == f2 && d1 == d2 && b1 == b2);

	/* A refresh that sees only the keys of the first half of the input (as a
	 * listing pass would), then one that sees them all again. Both add no
	 * key the tree lacks, so no inode is created; the rest is removed, then
	 * revived. */
	tree_pass_begin(t);
	tree_load(t, buf, size / 2);
	tree_pass_end(t, NULL, NULL);
	walk(t, n_inodes, 0);
	tree_pass_begin(t);
	tree_load(t, buf, size);
	tree_pass_end(t, NULL, NULL);
	walk(t, n_inodes, 0);
	tree_counts(t, &f2, &d2, &b2);
	FUZZ_CHECK(f2 + d2 <= n_inodes);

	free(buf);
	free(s1);
	free(s2);
	tree_free(t2);
	tree_free(t);
	return 0;
}
