/* Unit tests for fs/tree.c: the inode table built from listings. Lookups,
 * attributes, readdir positions, inode stability across listing passes,
 * file/directory conflicts, the naming rules and a large directory. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tree.h"

#define ROOT TREE_ROOT_INO
#define MAX_ENTS 64

static struct backend_object mkobj(const char *key, uint64_t size, int64_t mtime,
				   const char *etag)
{
	struct backend_object o;

	memset(&o, 0, sizeof(o));
	o.key = key;
	o.size = size;
	o.mtime = mtime;
	snprintf(o.etag, sizeof(o.etag), "%s", etag);
	return o;
}

static int add_file(struct tree *t, const char *rel, uint64_t size)
{
	struct backend_object o = mkobj(rel, size, 1600000000, "etag");

	return tree_add_key(t, rel, &o);
}

/* Look a slash-separated path up from the root; the inode, or 0. */
static uint64_t ino_of(struct tree *t, const char *path, struct tree_attr *out)
{
	char buf[PATH_MAX], *save = NULL, *seg;
	struct tree_attr a;
	uint64_t ino = ROOT;

	snprintf(buf, sizeof(buf), "%s", path);
	for (seg = strtok_r(buf, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
		if (tree_lookup(t, ino, seg, &a) != 0)
			return 0;
		ino = a.ino;
	}
	if (out && tree_getattr(t, ino, out) != 0)
		return 0;
	return ino;
}

struct ent {
	char name[NAME_MAX + 1];
	uint64_t ino, next;
	int is_dir;
};

struct dirlist {
	struct ent e[MAX_ENTS];
	int n;     /* entries seen (only the first MAX_ENTS are kept) */
	int limit; /* stop after this many (0: no limit) */
};

static int fill(void *arg, const char *name, const struct tree_attr *a, uint64_t next)
{
	struct dirlist *d = arg;

	if (d->n < MAX_ENTS) {
		snprintf(d->e[d->n].name, sizeof(d->e[d->n].name), "%s", name);
		d->e[d->n].ino = a->ino;
		d->e[d->n].is_dir = a->is_dir;
		d->e[d->n].next = next;
	}
	d->n++;
	return d->limit && d->n >= d->limit;
}

static int list_dir(struct tree *t, uint64_t dir, uint64_t pos, struct dirlist *d)
{
	memset(d, 0, sizeof(*d));
	return tree_readdir(t, dir, pos, fill, d);
}

/* The tree most tests start from. */
static struct tree *sample(void)
{
	struct tree *t;
	struct backend_object o;

	if (tree_new(1000, &t) != 0)
		return NULL;
	tree_pass_begin(t);
	o = mkobj("config.json", 10, 5, "e1");
	CHECK(tree_add_key(t, "config.json", &o) == 0);
	o = mkobj("weights/model.bin", 21474836480ULL, 6, "e2-1280");
	CHECK(tree_add_key(t, "weights/model.bin", &o) == 0);
	o = mkobj("weights/shard/part-0", 7, 7, "e3");
	CHECK(tree_add_key(t, "weights/shard/part-0", &o) == 0);
	o = mkobj("docs/", 0, 777, "");
	CHECK(tree_add_key(t, "docs/", &o) == 0);  /* a directory marker */
	CHECK(tree_add_key(t, "tok/", NULL) == 0); /* a common prefix */
	CHECK(tree_add_key(t, "", NULL) == 0);     /* the prefix's own marker */
	o = mkobj("", 0, 9, "");
	CHECK(tree_add_key(t, "/", &o) == 0);      /* ... as an object */
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	return t;
}

static void test_lookup_getattr(void)
{
	struct tree *t = sample();
	struct tree_attr a, b;
	uint64_t weights;

	if (!t) {
		CHECK(0);
		return;
	}
	CHECK(tree_getattr(t, ROOT, &a) == 0);
	CHECK(a.ino == ROOT && a.is_dir && a.mtime == 1000);
	CHECK(a.nlink == 2 + 3); /* weights, docs, tok */

	CHECK(tree_lookup(t, ROOT, "config.json", &a) == 0);
	CHECK(!a.is_dir);
	CHECK(a.size == 10);
	CHECK(a.mtime == 5);
	CHECK(a.nlink == 1);
	CHECK_STR(a.etag, "e1");
	CHECK(a.ino > ROOT);
	CHECK(tree_getattr(t, a.ino, &b) == 0);
	CHECK(b.ino == a.ino && b.size == 10 && strcmp(b.etag, "e1") == 0);

	CHECK(tree_lookup(t, ROOT, "weights", &a) == 0);
	CHECK(a.is_dir);
	CHECK(a.size == 0);
	CHECK(a.nlink == 3); /* shard */
	CHECK(a.mtime == 1000); /* implied directories take the root's time */
	weights = a.ino;
	CHECK(tree_lookup(t, weights, "model.bin", &a) == 0);
	CHECK(a.size == 21474836480ULL);
	CHECK_STR(a.etag, "e2-1280");
	CHECK(tree_lookup(t, weights, "shard", &a) == 0);
	CHECK(a.is_dir && a.nlink == 2);
	CHECK(tree_lookup(t, a.ino, "part-0", &b) == 0);
	CHECK(!b.is_dir && b.size == 7);

	CHECK(tree_lookup(t, ROOT, "docs", &a) == 0);
	CHECK(a.is_dir && a.nlink == 2);
	CHECK(a.mtime == 777); /* a marker's own time */
	CHECK(tree_lookup(t, ROOT, "tok", &a) == 0);
	CHECK(a.is_dir);

	/* nothing was made of the prefix markers */
	CHECK(tree_lookup(t, ROOT, "", &a) == -ENOENT);

	/* misses */
	CHECK(tree_lookup(t, ROOT, "nope", &a) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "Config.json", &a) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "model.bin", &a) == -ENOENT);
	CHECK(tree_lookup(t, weights, "config.json", &a) == -ENOENT);
	CHECK(tree_lookup(t, 999999, "x", &a) == -ENOENT);
	CHECK(tree_lookup(t, 0, "x", &a) == -ENOENT);
	CHECK(tree_getattr(t, 0, &a) == -ENOENT);
	CHECK(tree_getattr(t, 999999, &a) == -ENOENT);

	/* under a file */
	CHECK(tree_lookup(t, ROOT, "config.json", &a) == 0);
	CHECK(tree_lookup(t, a.ino, "x", &b) == -ENOTDIR);
	tree_free(t);
}

static void test_readdir(void)
{
	static const char *const want[] = {".", "..", "config.json", "weights", "docs", "tok"};
	const int n_want = 6;
	struct tree *t = sample();
	struct dirlist d, r;
	struct tree_attr a;

	if (!t) {
		CHECK(0);
		return;
	}
	CHECK(list_dir(t, ROOT, 0, &d) == 0);
	CHECK(d.n == n_want);
	for (int i = 0; i < d.n && i < n_want; i++) {
		CHECK_STR(d.e[i].name, want[i]);
		CHECK(d.e[i].next == (uint64_t)i + 1);
	}
	CHECK(d.e[0].ino == ROOT && d.e[0].is_dir);
	CHECK(d.e[1].ino == ROOT && d.e[1].is_dir); /* the root is its own parent */
	CHECK(d.e[2].ino == ino_of(t, "config.json", NULL) && !d.e[2].is_dir);
	CHECK(d.e[3].ino == ino_of(t, "weights", NULL) && d.e[3].is_dir);

	/* resuming from any position gives exactly the rest */
	for (int p = 0; p <= n_want + 2; p++) {
		int ok = list_dir(t, ROOT, (uint64_t)p, &r) == 0;
		int rest = p < n_want ? n_want - p : 0;
		ok = ok && r.n == rest;
		for (int i = 0; ok && i < r.n; i++)
			ok = strcmp(r.e[i].name, want[p + i]) == 0 &&
			     r.e[i].next == d.e[p + i].next;
		if (!ok)
			fprintf(stderr, "readdir from %d: %d entries, want %d\n", p, r.n, rest);
		CHECK(ok);
	}
	/* resuming from each entry's next position */
	CHECK(list_dir(t, ROOT, d.e[3].next, &r) == 0);
	CHECK(r.n == 2 && strcmp(r.e[0].name, "docs") == 0);

	/* fill asking to stop */
	memset(&r, 0, sizeof(r));
	r.limit = 1;
	CHECK(tree_readdir(t, ROOT, 0, fill, &r) == 0);
	CHECK(r.n == 1);
	memset(&r, 0, sizeof(r));
	r.limit = 3;
	CHECK(tree_readdir(t, ROOT, 1, fill, &r) == 0);
	CHECK(r.n == 3 && strcmp(r.e[2].name, "weights") == 0);

	/* a subdirectory: "." is itself, ".." its parent */
	CHECK(tree_lookup(t, ROOT, "weights", &a) == 0);
	CHECK(list_dir(t, a.ino, 0, &r) == 0);
	CHECK(r.n == 4);
	CHECK(r.e[0].ino == a.ino);
	CHECK(r.e[1].ino == ROOT);
	CHECK_STR(r.e[2].name, "model.bin");
	CHECK_STR(r.e[3].name, "shard");
	CHECK(r.e[3].is_dir && !r.e[2].is_dir);
	{
		uint64_t weights = a.ino;
		CHECK(tree_lookup(t, weights, "shard", &a) == 0);
		CHECK(list_dir(t, a.ino, 0, &r) == 0);
		CHECK(r.n == 3 && r.e[1].ino == weights);
	}
	/* an empty directory */
	CHECK(tree_lookup(t, ROOT, "docs", &a) == 0);
	CHECK(list_dir(t, a.ino, 0, &r) == 0);
	CHECK(r.n == 2);

	/* not directories */
	CHECK(tree_lookup(t, ROOT, "config.json", &a) == 0);
	CHECK(list_dir(t, a.ino, 0, &r) == -ENOTDIR);
	CHECK(r.n == 0);
	CHECK(list_dir(t, 999999, 0, &r) == -ENOENT);
	CHECK(list_dir(t, 0, 0, &r) == -ENOENT);
	tree_free(t);
}

static void test_relpath_counts(void)
{
	struct tree *t = sample();
	struct tree_attr a;
	uint64_t files, dirs, bytes, ino;
	char buf[64];
	size_t need = strlen("weights/shard/part-0") + 1;

	if (!t) {
		CHECK(0);
		return;
	}
	ino = ino_of(t, "weights/shard/part-0", &a);
	CHECK(ino != 0);
	CHECK(tree_relpath(t, ino, buf, sizeof(buf)) == 0);
	CHECK_STR(buf, "weights/shard/part-0");
	CHECK(tree_relpath(t, ino, buf, need) == 0);
	CHECK_STR(buf, "weights/shard/part-0");
	CHECK(tree_relpath(t, ino, buf, need - 1) == -ENAMETOOLONG);
	CHECK(tree_relpath(t, ino_of(t, "config.json", NULL), buf, sizeof(buf)) == 0);
	CHECK_STR(buf, "config.json");
	CHECK(tree_relpath(t, ino_of(t, "weights/shard", NULL), buf, sizeof(buf)) == -EISDIR);
	CHECK(tree_relpath(t, ROOT, buf, sizeof(buf)) == -EISDIR);
	CHECK(tree_relpath(t, 999999, buf, sizeof(buf)) == -ENOENT);
	CHECK(tree_relpath(t, 0, buf, sizeof(buf)) == -ENOENT);

	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 3);
	CHECK(dirs == 5); /* the root, weights, weights/shard, docs, tok */
	CHECK(bytes == 10 + 21474836480ULL + 7);
	tree_free(t);

	CHECK(tree_new(0, &t) == 0);
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 0 && dirs == 1 && bytes == 0);
	tree_free(t);
}

/* What tree_pass_end reported: "+name" added, "~name" changed, "!name"
 * replaced, "-name" removed, in one string. */
struct changes {
	char s[512];
};

static void record_change(void *arg, enum tree_change what, uint64_t parent, const char *name,
			  uint64_t ino)
{
	struct changes *c = arg;
	size_t l = strlen(c->s);
	const char *sym = what == TREE_ADDED     ? "+"
			  : what == TREE_CHANGED ? "~"
			  : what == TREE_REPLACED ? "!"
						 : "-";

	(void)parent, (void)ino;
	snprintf(c->s + l, sizeof(c->s) - l, "%s%s%s", l ? " " : "", sym, name);
}

static void test_passes(void)
{
	struct tree *t = sample();
	struct tree_attr a;
	struct dirlist d;
	uint64_t cfg, weights, model, model2, part, docs, tok, files, dirs, bytes;
	struct backend_object o;

	if (!t) {
		CHECK(0);
		return;
	}
	cfg = ino_of(t, "config.json", NULL);
	weights = ino_of(t, "weights", NULL);
	model = ino_of(t, "weights/model.bin", NULL);
	part = ino_of(t, "weights/shard/part-0", NULL);
	docs = ino_of(t, "docs", NULL);
	tok = ino_of(t, "tok", NULL);
	CHECK(cfg && weights && model && part && docs && tok);

	/* the same listing again: nothing removed, same inodes, nothing to say */
	tree_pass_begin(t);
	o = mkobj("config.json", 10, 5, "e1");
	CHECK(tree_add_key(t, "config.json", &o) == 0);
	o = mkobj("weights/model.bin", 21474836480ULL, 6, "e2-1280");
	CHECK(tree_add_key(t, "weights/model.bin", &o) == 0);
	o = mkobj("weights/shard/part-0", 7, 7, "e3");
	CHECK(tree_add_key(t, "weights/shard/part-0", &o) == 0);
	CHECK(tree_add_key(t, "docs/", NULL) == 0);
	CHECK(tree_add_key(t, "tok/", NULL) == 0);
	{
		struct changes c = {""};
		CHECK(tree_pass_end(t, record_change, &c) == 0);
		CHECK_STR(c.s, "");
	}
	CHECK(ino_of(t, "config.json", NULL) == cfg);
	CHECK(ino_of(t, "weights", NULL) == weights);
	CHECK(ino_of(t, "weights/model.bin", NULL) == model);
	CHECK(ino_of(t, "weights/shard/part-0", NULL) == part);
	CHECK(ino_of(t, "docs", NULL) == docs);
	CHECK(ino_of(t, "tok", NULL) == tok);

	/* config.json and docs/ gone; a new file appears; model.bin is another
	 * version: a new inode, the old one gone */
	tree_pass_begin(t);
	o = mkobj("weights/model.bin", 123, 42, "new-etag");
	CHECK(tree_add_key(t, "weights/model.bin", &o) == 0);
	o = mkobj("weights/shard/part-0", 7, 7, "e3");
	CHECK(tree_add_key(t, "weights/shard/part-0", &o) == 0);
	CHECK(tree_add_key(t, "tok/", NULL) == 0);
	CHECK(add_file(t, "new.txt", 3) == 0);
	{
		struct changes c = {""};
		CHECK(tree_pass_end(t, record_change, &c) == 2);
		/* in inode order: config.json, model.bin (its old version), docs,
		 * then the new nodes: model.bin's new version, new.txt */
		CHECK_STR(c.s, "-config.json -model.bin -docs +model.bin +new.txt");
	}
	CHECK(tree_lookup(t, ROOT, "config.json", &a) == -ENOENT);
	CHECK(tree_getattr(t, cfg, &a) == -ENOENT);
	CHECK(tree_relpath(t, cfg, (char[64]){0}, 64) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "docs", &a) == -ENOENT);
	CHECK(list_dir(t, docs, 0, &d) == -ENOENT);
	CHECK(tree_getattr(t, model, &a) == -ENOENT);
	model2 = ino_of(t, "weights/model.bin", &a);
	CHECK(model2 > model && model2 != part);
	CHECK(a.size == 123 && a.mtime == 42 && strcmp(a.etag, "new-etag") == 0);
	CHECK(ino_of(t, "new.txt", &a) > model2);
	CHECK(list_dir(t, weights, 0, &d) == 0 && d.n == 4); /* ., .., shard, model.bin */

	/* readdir skips the removed, and positions of the others do not move */
	CHECK(list_dir(t, ROOT, 0, &d) == 0);
	CHECK(d.n == 5);
	if (d.n == 5) {
		CHECK_STR(d.e[2].name, "weights");
		CHECK(d.e[2].next == 4); /* as in the first listing */
		CHECK_STR(d.e[3].name, "tok");
		CHECK(d.e[3].next == 6);
		CHECK_STR(d.e[4].name, "new.txt");
	}
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 3 && dirs == 4 && bytes == 123 + 7 + 3);

	/* they come back later, the same versions, with their old inodes */
	tree_pass_begin(t);
	o = mkobj("config.json", 10, 5, "e1");
	CHECK(tree_add_key(t, "config.json", &o) == 0);
	o = mkobj("weights/model.bin", 123, 42, "new-etag");
	CHECK(tree_add_key(t, "weights/model.bin", &o) == 0);
	o = mkobj("weights/shard/part-0", 7, 7, "e3");
	CHECK(tree_add_key(t, "weights/shard/part-0", &o) == 0);
	CHECK(add_file(t, "docs/readme", 1) == 0);
	CHECK(tree_add_key(t, "tok/", NULL) == 0);
	CHECK(add_file(t, "new.txt", 3) == 0);
	{
		struct changes c = {""};
		CHECK(tree_pass_end(t, record_change, &c) == 0);
		CHECK_STR(c.s, "+config.json +docs +readme");
	}
	CHECK(ino_of(t, "config.json", &a) == cfg);
	CHECK(a.size == 10 && !a.is_dir);
	CHECK(ino_of(t, "weights/model.bin", NULL) == model2);
	CHECK(ino_of(t, "docs", &a) == docs);
	CHECK(a.is_dir);
	CHECK(ino_of(t, "docs/readme", NULL) != 0);

	/* a whole subtree goes: the directory and everything under it */
	tree_pass_begin(t);
	o = mkobj("config.json", 10, 5, "e1");
	CHECK(tree_add_key(t, "config.json", &o) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 8); /* weights, model, shard, part, docs, readme, tok, new */
	CHECK(tree_getattr(t, weights, &a) == -ENOENT);
	CHECK(tree_getattr(t, model2, &a) == -ENOENT);
	CHECK(tree_getattr(t, part, &a) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "weights", &a) == -ENOENT);
	CHECK(list_dir(t, ROOT, 0, &d) == 0);
	CHECK(d.n == 3 && strcmp(d.e[2].name, "config.json") == 0);
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 1 && dirs == 1 && bytes == 10);

	/* one file of it back: its directories come back, the rest stays gone;
	 * the same version keeps its inode, another gets a new one */
	tree_pass_begin(t);
	o = mkobj("config.json", 11, 5, "e1b");
	CHECK(tree_add_key(t, "config.json", &o) == 0);
	o = mkobj("weights/shard/part-0", 7, 7, "e3");
	CHECK(tree_add_key(t, "weights/shard/part-0", &o) == 0);
	{
		struct changes c = {""};
		CHECK(tree_pass_end(t, record_change, &c) == 0);
		CHECK_STR(c.s, "-config.json +weights +shard +part-0 +config.json");
	}
	CHECK(ino_of(t, "weights/shard/part-0", &a) == part);
	CHECK(a.size == 7);
	CHECK(ino_of(t, "config.json", &a) > cfg && a.size == 11);
	CHECK(tree_getattr(t, cfg, &a) == -ENOENT);
	CHECK(ino_of(t, "weights", NULL) == weights);
	CHECK(tree_getattr(t, model, &a) == -ENOENT);
	CHECK(tree_lookup(t, weights, "model.bin", &a) == -ENOENT);
	tree_free(t);
}

/* A directory's nlink is 2 + its live subdirectories: removed ones do not
 * count. */
static void test_nlink_after_removal(void)
{
	struct tree *t;
	struct tree_attr a;

	CHECK(tree_new(0, &t) == 0);
	tree_pass_begin(t);
	CHECK(add_file(t, "d/x", 1) == 0);
	CHECK(add_file(t, "e/y", 1) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	CHECK(tree_getattr(t, ROOT, &a) == 0 && a.nlink == 4);

	tree_pass_begin(t);
	CHECK(add_file(t, "d/x", 1) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 2);
	CHECK(tree_getattr(t, ROOT, &a) == 0);
	if (a.nlink != 3)
		fprintf(stderr, "root nlink %u after removing e/, want 3\n", a.nlink);
	CHECK(a.nlink == 3);

	/* and back */
	tree_pass_begin(t);
	CHECK(add_file(t, "d/x", 1) == 0);
	CHECK(add_file(t, "e/y", 1) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	CHECK(tree_getattr(t, ROOT, &a) == 0 && a.nlink == 4);
	tree_free(t);
}

static void test_conflicts(void)
{
	struct tree *t;
	struct tree_attr a;
	uint64_t files, dirs, bytes, a_ino;
	char buf[64];

	/* file first, then a key below it: the directory wins */
	CHECK(tree_new(0, &t) == 0);
	tree_pass_begin(t);
	CHECK(add_file(t, "a", 100) == 0);
	CHECK(add_file(t, "a/b", 5) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	a_ino = ino_of(t, "a", &a);
	CHECK(a_ino != 0);
	CHECK(a.is_dir);
	CHECK(a.size == 0);
	CHECK(a.nlink == 2);
	CHECK(tree_relpath(t, a_ino, buf, sizeof(buf)) == -EISDIR);
	CHECK(ino_of(t, "a/b", &a) != 0);
	CHECK(!a.is_dir && a.size == 5);
	CHECK(tree_getattr(t, ROOT, &a) == 0 && a.nlink == 3);
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 1 && dirs == 2 && bytes == 5);

	/* the same listing again (keys in order: "a" before "a/b"): a
	 * directory again at the end of the pass, same inode */
	tree_pass_begin(t);
	CHECK(add_file(t, "a", 100) >= 0);
	CHECK(add_file(t, "a/b", 5) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	CHECK(ino_of(t, "a", &a) == a_ino);
	CHECK(a.is_dir);
	tree_free(t);

	/* key below first, then the file: the file is skipped */
	CHECK(tree_new(0, &t) == 0);
	CHECK(add_file(t, "a/b", 5) == 0);
	CHECK(add_file(t, "a", 100) == 1);
	CHECK(ino_of(t, "a", &a) != 0);
	CHECK(a.is_dir && a.size == 0);
	CHECK(ino_of(t, "a/b", &a) != 0 && a.size == 5);
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 1 && dirs == 2 && bytes == 5);
	tree_free(t);

	/* a directory marker or a common prefix against a file */
	CHECK(tree_new(0, &t) == 0);
	CHECK(add_file(t, "m", 1) == 0);
	CHECK(tree_add_key(t, "m/", NULL) == 0);
	CHECK(ino_of(t, "m", &a) != 0 && a.is_dir);
	CHECK(add_file(t, "m", 1) == 1);
	CHECK(ino_of(t, "m", &a) != 0 && a.is_dir);
	/* deeper: a file in the middle of a path */
	CHECK(add_file(t, "x/y", 1) == 0);
	CHECK(add_file(t, "x/y/z", 2) == 0);
	CHECK(ino_of(t, "x/y", &a) != 0 && a.is_dir && a.nlink == 2);
	CHECK(ino_of(t, "x", &a) != 0 && a.nlink == 3);
	CHECK(ino_of(t, "x/y/z", &a) != 0 && a.size == 2);
	tree_free(t);
}

/* When the keys below "a" are deleted, the object "a" is no longer hidden. */
static void test_conflict_resolved(void)
{
	struct tree *t;
	struct tree_attr a;

	CHECK(tree_new(0, &t) == 0);
	tree_pass_begin(t);
	CHECK(add_file(t, "a", 100) == 0);
	CHECK(add_file(t, "a/b", 5) == 0);
	CHECK(tree_pass_end(t, NULL, NULL) == 0);

	tree_pass_begin(t);
	add_file(t, "a", 100); /* "a/b" was deleted from the bucket */
	tree_pass_end(t, NULL, NULL);
	if (tree_lookup(t, ROOT, "a", &a) != 0) {
		fprintf(stderr, "object 'a' missing after 'a/b' was deleted\n");
		CHECK(0);
	} else {
		CHECK(!a.is_dir);
		CHECK(a.size == 100);
	}
	tree_free(t);
}

static void test_invalid_keys(void)
{
	static const char *const bad[] = {
		"a//b", "//a", "/a", "../x", "a/../b", "a/..", "a/./b", "./a", "a/.", ".", "..",
		"",
	};
	struct tree *t;
	struct tree_attr a;
	uint64_t files, dirs, bytes;
	char name[NAME_MAX + 2], key[NAME_MAX + 8];

	CHECK(tree_new(0, &t) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = add_file(t, bad[i], 1);
		if (r != 1)
			fprintf(stderr, "tree_add_key(\"%s\") = %d, want 1\n", bad[i], r);
		CHECK(r == 1);
	}
	/* as directories too */
	CHECK(tree_add_key(t, "a//b/", NULL) == 1);
	CHECK(tree_add_key(t, "../", NULL) == 1);
	CHECK(tree_add_key(t, "x/./", NULL) == 1);

	/* NAME_MAX is fine, one more is not */
	memset(name, 'n', NAME_MAX);
	name[NAME_MAX] = '\0';
	snprintf(key, sizeof(key), "d/%s", name);
	CHECK(add_file(t, key, 1) == 0);
	CHECK(ino_of(t, key, &a) != 0);
	name[NAME_MAX] = 'n';
	name[NAME_MAX + 1] = '\0';
	CHECK(add_file(t, name, 1) == 1);
	snprintf(key, sizeof(key), "%s/f", name);
	CHECK(add_file(t, key, 1) == 1);
	CHECK(tree_add_key(t, key, NULL) == 1);

	/* only the good key made anything */
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == 1 && dirs == 2 && bytes == 1);
	CHECK(tree_lookup(t, ROOT, "a", &a) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "..", &a) == -ENOENT);
	CHECK(tree_lookup(t, ROOT, "x", &a) == -ENOENT);

	/* odd but valid names */
	CHECK(add_file(t, "...", 1) == 0);
	CHECK(add_file(t, ".hidden", 1) == 0);
	CHECK(add_file(t, "sp ace/+%=&~/\xC3\xA9", 1) == 0);
	CHECK(ino_of(t, "sp ace/+%=&~/\xC3\xA9", &a) != 0 && !a.is_dir);
	tree_free(t);
}

/* "a//" is "a/" with an empty segment after it: skipped like "a//b". */
static void test_invalid_marker(void)
{
	struct tree *t;
	struct tree_attr a;

	CHECK(tree_new(0, &t) == 0);
	CHECK(tree_add_key(t, "a//", NULL) == 1);
	CHECK(tree_lookup(t, ROOT, "a", &a) == -ENOENT);
	tree_free(t);
}

static void test_big_dir(void)
{
	enum { N = 6000 };
	struct tree *t;
	struct tree_attr a;
	struct dirlist d;
	uint64_t big, files, dirs, bytes;
	uint64_t *inos = calloc(N, sizeof(*inos));
	char key[64];
	int missing = 0, moved = 0, dup = 0;

	CHECK(tree_new(0, &t) == 0);
	if (!inos || !t) {
		free(inos);
		return;
	}
	tree_pass_begin(t);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "big/f%05d", i);
		if (add_file(t, key, (uint64_t)i) != 0)
			missing++;
	}
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "big/d%03d/", i);
		if (tree_add_key(t, key, NULL) != 0)
			missing++;
	}
	CHECK(tree_pass_end(t, NULL, NULL) == 0);
	CHECK(missing == 0);

	big = ino_of(t, "big", &a);
	CHECK(big != 0);
	CHECK(a.nlink == 2 + 100);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "f%05d", i);
		if (tree_lookup(t, big, key, &a) != 0 || a.size != (uint64_t)i || a.is_dir) {
			missing++;
			continue;
		}
		inos[i] = a.ino;
		if (i > 0 && inos[i] <= inos[i - 1])
			dup++;
	}
	CHECK(missing == 0);
	CHECK(dup == 0);
	memset(&d, 0, sizeof(d));
	CHECK(tree_readdir(t, big, 0, fill, &d) == 0);
	CHECK(d.n == N + 100 + 2);
	tree_counts(t, &files, &dirs, &bytes);
	CHECK(files == N);
	CHECK(dirs == 1 + 1 + 100);
	CHECK(bytes == (uint64_t)N * (N - 1) / 2);

	/* a second pass over all of them keeps every inode */
	tree_pass_begin(t);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "big/f%05d", i);
		add_file(t, key, (uint64_t)i);
	}
	CHECK(tree_pass_end(t, NULL, NULL) == 100); /* the subdirectories were not listed */
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "f%05d", i);
		if (tree_lookup(t, big, key, &a) != 0 || a.ino != inos[i])
			moved++;
	}
	CHECK(moved == 0);
	CHECK(tree_lookup(t, big, "d000", &a) == -ENOENT);
	CHECK(tree_lookup(t, big, "f06000", &a) == -ENOENT);
	free(inos);
	tree_free(t);
}

/* listing=lazy: a directory's pass sweeps its own children only, records
 * when it was listed, and the listed state survives a snapshot. */
static void test_dir_passes(void)
{
	struct tree *t, *t2;
	struct tree_attr a;
	uint64_t a_ino, b_ino, listed = 9, *dirs = NULL;
	size_t n = 0, len;
	char *buf;

	CHECK(tree_new(0, &t) == 0);
	/* the root, one level: two prefixes and a file */
	tree_pass_begin(t);
	CHECK(tree_add_key(t, "a/", NULL) == 0);
	CHECK(tree_add_key(t, "b/", NULL) == 0);
	CHECK(add_file(t, "top", 1) == 0);
	tree_dir_pass_end(t, ROOT, 100, NULL, NULL);
	a_ino = ino_of(t, "a", NULL);
	b_ino = ino_of(t, "b", NULL);
	CHECK(tree_dir_listed(t, ROOT, &listed) == 0 && listed == 100);
	CHECK(tree_dir_listed(t, a_ino, &listed) == 0 && listed == 0);
	CHECK(tree_dir_listed(t, ino_of(t, "top", NULL), &listed) == -ENOTDIR);
	/* a/, one level */
	tree_pass_begin(t);
	CHECK(add_file(t, "a/x", 1) == 0);
	CHECK(add_file(t, "a/y", 1) == 0);
	CHECK(tree_add_key(t, "a/sub/", NULL) == 0);
	tree_dir_pass_end(t, a_ino, 200, NULL, NULL);
	/* b/ has one file; a later listing of a/ without y must not touch b/ */
	tree_pass_begin(t);
	CHECK(add_file(t, "b/z", 1) == 0);
	tree_dir_pass_end(t, b_ino, 300, NULL, NULL);
	tree_pass_begin(t);
	CHECK(add_file(t, "a/x", 1) == 0);
	CHECK(tree_add_key(t, "a/sub/", NULL) == 0);
	{
		struct changes c = {""};
		CHECK(tree_dir_pass_end(t, a_ino, 400, record_change, &c) == 1);
		CHECK_STR(c.s, "-y");
	}
	CHECK(ino_of(t, "a/y", NULL) == 0);
	CHECK(ino_of(t, "b/z", NULL) != 0);
	CHECK(ino_of(t, "top", NULL) != 0);
	CHECK(tree_dir_listed(t, a_ino, &listed) == 0 && listed == 400);
	CHECK(tree_subdirs(t, a_ino, &dirs, &n) == 0 && n == 1 && dirs[0] == ino_of(t, "a/sub", NULL));
	free(dirs);
	/* in use: only what was looked in since */
	tree_dir_used(t, a_ino, 1000);
	tree_dir_used(t, b_ino, 10);
	CHECK(tree_dirs_in_use(t, 500, &dirs, &n) == 0 && n == 1 && dirs[0] == a_ino);
	free(dirs);
	/* a snapshot keeps the inode numbers: the ones between are never found */
	{
		struct tree *t3;
		uint64_t z = ino_of(t, "b/z", NULL), x = ino_of(t, "a/x", NULL);
		CHECK(tree_serialize(t, &buf, &len) == 0);
		CHECK(tree_new(0, &t3) == 0);
		CHECK(tree_load(t3, buf, len) == 0);
		CHECK(ino_of(t3, "b/z", NULL) == z && ino_of(t3, "a/x", NULL) == x);
		CHECK(ino_of(t3, "a", NULL) == a_ino && ino_of(t3, "a/y", NULL) == 0);
		CHECK(tree_getattr(t3, ino_of(t, "a/x", NULL) - 1, &a) != 0 ||
		      a.ino == ino_of(t, "a/x", NULL) - 1);
		/* y's number (removed) is a hole: never found, not even kept */
		tree_free(t3);
		free(buf);
	}
	/* a snapshot keeps what was listed (as listed long ago), not the rest */
	CHECK(tree_serialize(t, &buf, &len) == 0);
	CHECK(tree_new(0, &t2) == 0);
	CHECK(tree_load(t2, buf, len) == 0);
	CHECK(tree_dir_listed(t2, TREE_ROOT_INO, &listed) == 0 && listed == 1);
	CHECK(tree_lookup(t2, ROOT, "a", &a) == 0);
	CHECK(tree_dir_listed(t2, a.ino, &listed) == 0 && listed == 1);
	CHECK(ino_of(t2, "a/sub", &a) != 0 && a.is_dir);
	CHECK(tree_dir_listed(t2, a.ino, &listed) == 0 && listed == 0);
	CHECK(ino_of(t2, "b/z", NULL) != 0);
	free(buf);
	tree_free(t2);
	tree_free(t);
}

int main(void)
{
	test_lookup_getattr();
	test_readdir();
	test_relpath_counts();
	test_passes();
	test_nlink_after_removal();
	test_conflicts();
	test_conflict_resolved();
	test_invalid_keys();
	test_invalid_marker();
	test_big_dir();
	test_dir_passes();
	return check_done();
}
