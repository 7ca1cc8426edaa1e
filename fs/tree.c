/* The inode table (see tree.h).
 *
 * Nodes live in an array of pointers indexed by inode number, so lookup by
 * inode is O(1) and a node's address never changes. Children are found
 * through one open-addressing hash of (parent, name); each directory also
 * keeps its children in insertion order, which gives readdir stable offsets
 * even when a refresh appends new entries.
 */
#include "tree.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct node {
	uint64_t ino, parent;
	char *name;    /* last path component ("" for the root) */
	char *relpath; /* path below the mounted prefix, no leading '/' */
	int is_dir;
	int removed;
	int superseded; /* a newer version of the key has its own node: never found again */
	uint8_t change; /* enum tree_change of the pass running, 0: none */
	uint64_t pass;  /* the listing pass that last saw it */
	uint64_t size;
	int64_t mtime;
	char etag[BACKEND_ETAG_MAX];
	uint64_t validated_ms; /* CLOCK_MONOTONIC: when the backend last confirmed it */
	uint64_t listed_ms;    /* directories, listing=lazy: when listed; 0: never */
	_Atomic uint64_t used_ms; /* directories: last looked in (any lock: a hint) */
	_Atomic uint64_t nlookup; /* the kernel's references (lookups less forgets) */
	uint32_t n_subdirs;
	uint64_t *kids; /* directories: children in insertion order */
	size_t n_kids, cap_kids;
};

struct tree {
	pthread_rwlock_t lock;
	struct node **nodes; /* nodes[ino]; nodes[0] unused */
	size_t n_nodes, cap_nodes;
	uint64_t *hash;      /* open addressing over (parent, name) -> ino; 0 = empty */
	size_t hash_cap;     /* power of two */
	uint64_t pass;
	int64_t root_mtime;
	int loading; /* adding from a snapshot: nothing is validated */
	_Atomic uint64_t *ino_next; /* kept for the next daemon (keep.h), or NULL */
	uint64_t counted_from; /* nodes below: another daemon's, their count unknown */
};

/* What the inode numbers between a snapshot's live ones point to (names
 * removed then): one node for all, never found, never freed. */
static char hole_name[1];
static struct node hole = {.name = hole_name, .relpath = hole_name, .removed = 1,
			   .superseded = 1};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t hash_key(uint64_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ parent;
	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static void hash_put(uint64_t *h, size_t cap, const struct node *n)
{
	size_t j;

	for (j = hash_key(n->parent, n->name) & (cap - 1); h[j]; j = (j + 1) & (cap - 1))
		;
	h[j] = n->ino;
}

/* Every node but the root and the holes into @h (@cap slots, zeroed). */
static void hash_fill(struct tree *t, uint64_t *h, size_t cap)
{
	for (size_t i = TREE_ROOT_INO + 1; i < t->n_nodes; i++)
		if (t->nodes[i] != &hole)
			hash_put(h, cap, t->nodes[i]);
}

static int hash_grow(struct tree *t)
{
	size_t ncap = t->hash_cap ? t->hash_cap * 2 : 1024;
	uint64_t *nh = calloc(ncap, sizeof(*nh));

	if (!nh)
		return -ENOMEM;
	hash_fill(t, nh, ncap);
	free(t->hash);
	t->hash = nh;
	t->hash_cap = ncap;
	return 0;
}

static struct node *find_child(struct tree *t, uint64_t parent, const char *name)
{
	size_t j;

	if (!t->hash_cap)
		return NULL;
	for (j = hash_key(parent, name) & (t->hash_cap - 1); t->hash[j];
	     j = (j + 1) & (t->hash_cap - 1)) {
		struct node *n = t->nodes[t->hash[j]];
		if (n->parent == parent && !n->superseded && strcmp(n->name, name) == 0)
			return n;
	}
	return NULL;
}

static struct node *node_new(struct tree *t, struct node *parent, const char *name, size_t nlen,
			     const char *relpath, size_t rlen, int is_dir)
{
	struct node *n;

	if (t->n_nodes == t->cap_nodes) {
		size_t ncap = t->cap_nodes * 2;
		struct node **nn = realloc(t->nodes, ncap * sizeof(*nn));
		if (!nn)
			return NULL;
		t->nodes = nn;
		t->cap_nodes = ncap;
	}
	if ((t->n_nodes + 1) * 2 > t->hash_cap && hash_grow(t))
		return NULL;
	if (parent && parent->n_kids == parent->cap_kids) {
		size_t ncap = parent->cap_kids ? parent->cap_kids * 2 : 4;
		uint64_t *nk = realloc(parent->kids, ncap * sizeof(*nk));
		if (!nk)
			return NULL;
		parent->kids = nk;
		parent->cap_kids = ncap;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strndup(name, nlen);
	n->relpath = strndup(relpath, rlen);
	if (!n->name || !n->relpath) {
		free(n->name);
		free(n->relpath);
		free(n);
		return NULL;
	}
	n->ino = t->n_nodes;
	n->is_dir = is_dir;
	n->pass = t->pass;
	n->mtime = t->root_mtime;
	t->nodes[t->n_nodes++] = n;
	if (t->ino_next)
		atomic_store(t->ino_next, t->n_nodes);
	if (parent) {
		n->parent = parent->ino;
		parent->kids[parent->n_kids++] = n->ino;
		if (is_dir)
			parent->n_subdirs++;
		hash_put(t->hash, t->hash_cap, n);
	}
	return n;
}

int tree_new(int64_t root_mtime, struct tree **out)
{
	struct tree *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	pthread_rwlock_init(&t->lock, NULL);
	t->cap_nodes = 64;
	t->nodes = calloc(t->cap_nodes, sizeof(*t->nodes));
	t->n_nodes = 1; /* inode 0 is not valid in FUSE */
	t->root_mtime = root_mtime;
	if (!t->nodes || hash_grow(t) || !node_new(t, NULL, "", 0, "", 0, 1)) {
		tree_free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	for (size_t i = 1; i < t->n_nodes; i++) {
		if (t->nodes[i] == &hole)
			continue;
		free(t->nodes[i]->name);
		free(t->nodes[i]->relpath);
		free(t->nodes[i]->kids);
		free(t->nodes[i]);
	}
	free(t->nodes);
	free(t->hash);
	pthread_rwlock_destroy(&t->lock);
	free(t);
}

void tree_pass_begin(struct tree *t)
{
	pthread_rwlock_wrlock(&t->lock);
	t->pass++;
	t->nodes[TREE_ROOT_INO]->pass = t->pass;
	pthread_rwlock_unlock(&t->lock);
}

static struct node *get_live(struct tree *t, uint64_t ino);

/* A loaded snapshot may not make the table larger than this (8 bytes a
 * number): numbers further apart are not kept (a new tree is started). */
#define TREE_LOAD_MAX_NODES (1u << 22)

/* A change to be reported, copied out under the lock. */
struct change {
	uint8_t what;
	uint64_t parent, ino;
	const char *name;
};

/* Note @what on @n for the pass's report; an addition or a replacement is
 * what the kernel must hear of first, whatever else changed. */
static void mark(struct tree *t, struct node *n, enum tree_change what)
{
	if (t->loading)
		return;
	if (!n->change || what == TREE_ADDED || (what == TREE_REPLACED && n->change != TREE_ADDED))
		n->change = (uint8_t)what;
}

/* A directory removed by a pass of its parent (listing=lazy): what is below
 * it goes too, unreported (the kernel drops the dentries below the one it
 * is told of), and it is listed again if it comes back. */
static void drop_subtree(struct tree *t, struct node *d)
{
	d->listed_ms = 0;
	for (size_t i = 0; i < d->n_kids; i++) {
		struct node *k = t->nodes[d->kids[i]];
		if (k->removed)
			continue;
		k->removed = 1;
		k->change = 0;
		if (k->is_dir) {
			d->n_subdirs--;
			drop_subtree(t, k);
		}
	}
}

/* tree_pass_end of the whole tree (@dir NULL), or of @dir's children. */
static size_t sweep(struct tree *t, struct node *dir, tree_change_fn cb, void *arg)
{
	struct change *ch = NULL;
	size_t n_ch = 0, cap = 0, removed = 0, count;
	int ch_lost = 0;

	count = dir ? dir->n_kids : t->n_nodes - (TREE_ROOT_INO + 1);
	for (size_t i = 0; i < count; i++) {
		struct node *n = t->nodes[dir ? dir->kids[i] : TREE_ROOT_INO + 1 + i];
		if (!n->removed && n->pass != t->pass) {
			n->removed = 1;
			if (n->is_dir) {
				t->nodes[n->parent]->n_subdirs--;
				if (dir)
					drop_subtree(t, n); /* a full pass sees every node itself */
			}
			n->change = TREE_REMOVED;
			removed++;
		}
		if (!n->change)
			continue;
		if (cb && n_ch == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct change *nch = realloc(ch, nc * sizeof(*nch));
			if (nch) {
				ch = nch;
				cap = nc;
			}
		}
		if (cb && n_ch < cap)
			ch[n_ch++] = (struct change){n->change, n->parent, n->ino, n->name};
		else if (cb) /* no memory to say what: the root stands for it all */
			ch_lost = 1;
		n->change = 0;
	}
	pthread_rwlock_unlock(&t->lock);
	for (size_t i = 0; i < n_ch; i++)
		cb(arg, (enum tree_change)ch[i].what, ch[i].parent, ch[i].name, ch[i].ino);
	if (ch_lost)
		cb(arg, TREE_CHANGED, 0, "", TREE_ROOT_INO);
	free(ch);
	return removed;
}

size_t tree_pass_end(struct tree *t, tree_change_fn cb, void *arg)
{
	pthread_rwlock_wrlock(&t->lock);
	return sweep(t, NULL, cb, arg); /* unlocks */
}

size_t tree_dir_pass_end(struct tree *t, uint64_t dir, uint64_t now_ms, tree_change_fn cb,
			 void *arg)
{
	struct node *d;

	pthread_rwlock_wrlock(&t->lock);
	d = get_live(t, dir);
	if (!d || !d->is_dir) {
		pthread_rwlock_unlock(&t->lock);
		return 0;
	}
	d->listed_ms = now_ms ? now_ms : 1;
	return sweep(t, d, cb, arg); /* unlocks */
}

int tree_dir_listed(struct tree *t, uint64_t ino, uint64_t *listed_ms)
{
	struct node *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	n = get_live(t, ino);
	if (!n)
		err = -ENOENT;
	else if (!n->is_dir)
		err = -ENOTDIR;
	else
		*listed_ms = n->listed_ms;
	pthread_rwlock_unlock(&t->lock);
	return err;
}

void tree_dir_used(struct tree *t, uint64_t ino, uint64_t now_ms)
{
	pthread_rwlock_rdlock(&t->lock);
	if (ino < t->n_nodes && t->nodes[ino]->is_dir)
		atomic_store_explicit(&t->nodes[ino]->used_ms, now_ms, memory_order_relaxed);
	pthread_rwlock_unlock(&t->lock);
}

int tree_dirs_in_use(struct tree *t, uint64_t since_ms, uint64_t **out, size_t *n_out)
{
	uint64_t *v = NULL;
	size_t n = 0, cap = 0;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	for (size_t i = TREE_ROOT_INO; i < t->n_nodes && !err; i++) {
		struct node *d = t->nodes[i];
		if (d->removed || !d->is_dir || !d->listed_ms ||
		    atomic_load_explicit(&d->used_ms, memory_order_relaxed) < since_ms)
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			uint64_t *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				err = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		v[n++] = d->ino;
	}
	pthread_rwlock_unlock(&t->lock);
	if (err) {
		free(v);
		return err;
	}
	*out = v;
	*n_out = n;
	return 0;
}

int tree_subdirs(struct tree *t, uint64_t dir, uint64_t **out, size_t *n_out)
{
	struct node *d;
	uint64_t *v;
	size_t n = 0;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	d = get_live(t, dir);
	if (!d || !d->is_dir) {
		pthread_rwlock_unlock(&t->lock);
		return d ? -ENOTDIR : -ENOENT;
	}
	v = malloc((d->n_subdirs ? d->n_subdirs : 1) * sizeof(*v));
	if (!v)
		err = -ENOMEM;
	for (size_t i = 0; v && i < d->n_kids && n < d->n_subdirs; i++) {
		struct node *k = t->nodes[d->kids[i]];
		if (!k->removed && k->is_dir)
			v[n++] = k->ino;
	}
	pthread_rwlock_unlock(&t->lock);
	*out = v;
	*n_out = n;
	return err;
}

/* Check a relative path; @return 0 or a reason it cannot be a path. */
static const char *path_problem(const char *rel, size_t len)
{
	const char *seg = rel, *end = rel + len;

	if (len == 0)
		return "empty name";
	if (rel[len - 1] == '/')
		return "empty path segment";
	while (seg < end) {
		const char *slash = memchr(seg, '/', (size_t)(end - seg));
		size_t n = slash ? (size_t)(slash - seg) : (size_t)(end - seg);
		if (n == 0)
			return "empty path segment";
		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return "'.' or '..' segment";
		if (n > NAME_MAX)
			return "segment longer than NAME_MAX";
		seg += n + 1;
	}
	return NULL;
}

/* Make the node at @rel (@len bytes) a live directory of this pass; creating
 * it and its parents as needed, turning a file into a directory if one is
 * there (the directory wins). Called with the write lock held. */
static struct node *ensure_dir(struct tree *t, const char *rel, size_t len)
{
	struct node *cur = t->nodes[TREE_ROOT_INO];
	size_t pos = 0;

	while (pos < len) {
		const char *seg = rel + pos;
		const char *slash = memchr(seg, '/', len - pos);
		size_t n = slash ? (size_t)(slash - seg) : len - pos;
		char name[NAME_MAX + 1];
		struct node *kid;

		memcpy(name, seg, n);
		name[n] = '\0';
		kid = find_child(t, cur->ino, name);
		if (!kid) {
			kid = node_new(t, cur, seg, n, rel, pos + n, 1);
			if (!kid)
				return NULL;
			mark(t, kid, TREE_ADDED);
		} else if (!kid->is_dir) {
			if (!kid->removed && kid->pass == t->pass)
				log_warn("key '%s' is hidden by directory '%s/' of the same name",
					 kid->relpath, kid->relpath);
			kid->is_dir = 1;
			kid->size = 0;
			kid->etag[0] = '\0';
			if (!kid->removed)
				cur->n_subdirs++;
			mark(t, kid, TREE_REPLACED);
		}
		if (kid->removed) { /* n_subdirs counts live directories only */
			kid->removed = 0;
			kid->mtime = t->root_mtime;
			cur->n_subdirs++;
			mark(t, kid, TREE_ADDED);
		}
		kid->pass = t->pass;
		cur = kid;
		pos += n + 1;
	}
	return cur;
}

int tree_add_key(struct tree *t, const char *rel, const struct backend_object *obj)
{
	size_t len = strlen(rel);
	int is_dir = obj == NULL || (len > 0 && rel[len - 1] == '/');
	const char *why, *slash;
	struct node *parent, *n;
	int ret = 0;

	if (is_dir && len > 0 && rel[len - 1] == '/')
		len--;
	if (is_dir && len == 0)
		return 0; /* the prefix's own marker */
	why = path_problem(rel, len);
	if (why) {
		log_warn("skipping key '%s': %s", rel, why);
		return 1;
	}

	pthread_rwlock_wrlock(&t->lock);
	if (is_dir) {
		n = ensure_dir(t, rel, len);
		if (!n) {
			ret = -ENOMEM;
		} else if (obj && obj->mtime) {
			n->mtime = obj->mtime;
		}
		goto out;
	}
	slash = memrchr(rel, '/', len);
	parent = slash ? ensure_dir(t, rel, (size_t)(slash - rel)) : t->nodes[TREE_ROOT_INO];
	if (!parent) {
		ret = -ENOMEM;
		goto out;
	}
	{
		const char *name = slash ? slash + 1 : rel;
		n = find_child(t, parent->ino, name);
		if (n && n->is_dir && !n->removed && n->pass == t->pass) {
			log_warn("key '%s' is hidden by directory '%s/' of the same name", rel, rel);
			ret = 1;
			goto out;
		}
		if (n && !n->is_dir && !t->loading &&
		    (n->size != obj->size || n->mtime != obj->mtime ||
		     strcmp(n->etag, obj->etag) != 0)) {
			/* Another version: a node (an inode) of its own. The kernel
			 * keeps one page cache per inode; files open on the old
			 * version go on reading its pages, never mixed into the new
			 * one's, and the next open of the name is the new one. */
			if (!n->removed)
				mark(t, n, TREE_REMOVED);
			n->removed = 1;
			n->superseded = 1;
			n = NULL;
		}
		if (!n) {
			n = node_new(t, parent, name, strlen(name), rel, len, 0);
			if (!n) {
				ret = -ENOMEM;
				goto out;
			}
			mark(t, n, TREE_ADDED);
		} else if (n->removed) {
			mark(t, n, TREE_ADDED);
		} else if (n->is_dir) {
			mark(t, n, TREE_REPLACED);
		}
		if (n->is_dir) { /* a directory not seen in this pass becomes a file */
			n->is_dir = 0;
			if (!n->removed)
				parent->n_subdirs--;
		}
		n->removed = 0;
		n->pass = t->pass;
		n->size = obj->size;
		n->mtime = obj->mtime;
		memcpy(n->etag, obj->etag, sizeof(n->etag));
		n->validated_ms = t->loading ? 0 : mono_ms();
	}
out:
	pthread_rwlock_unlock(&t->lock);
	return ret;
}

static void fill_attr(const struct node *n, struct tree_attr *a)
{
	a->ino = n->ino;
	a->is_dir = n->is_dir;
	a->size = n->is_dir ? 0 : n->size;
	a->mtime = n->mtime;
	a->nlink = n->is_dir ? 2 + n->n_subdirs : 1;
	memcpy(a->etag, n->etag, sizeof(a->etag));
}

static struct node *get_live(struct tree *t, uint64_t ino)
{
	if (ino == 0 || ino >= t->n_nodes || t->nodes[ino]->removed)
		return NULL;
	return t->nodes[ino];
}

int tree_lookup(struct tree *t, uint64_t parent, const char *name, struct tree_attr *out)
{
	struct node *p, *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	p = get_live(t, parent);
	if (!p)
		err = -ENOENT;
	else if (!p->is_dir)
		err = -ENOTDIR;
	else if (!(n = find_child(t, parent, name)) || n->removed)
		err = -ENOENT;
	else
		fill_attr(n, out);
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_getattr_kept(struct tree *t, uint64_t ino, struct tree_attr *out)
{
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	if (ino == 0 || ino >= t->n_nodes || t->nodes[ino] == &hole) {
		err = -ENOENT;
	} else {
		fill_attr(t->nodes[ino], out);
		if (t->nodes[ino]->removed)
			out->nlink = 0; /* gone from the tree: only open files hold it */
	}
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_getattr(struct tree *t, uint64_t ino, struct tree_attr *out)
{
	struct node *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	n = get_live(t, ino);
	if (n)
		fill_attr(n, out);
	else
		err = -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_relpath(struct tree *t, uint64_t ino, char *buf, size_t len)
{
	struct node *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	n = get_live(t, ino);
	if (!n)
		err = -ENOENT;
	else if (n->is_dir)
		err = -EISDIR;
	else if (strlen(n->relpath) + 1 > len)
		err = -ENAMETOOLONG;
	else
		memcpy(buf, n->relpath, strlen(n->relpath) + 1);
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_dirpath(struct tree *t, uint64_t ino, char *buf, size_t len)
{
	struct node *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	n = get_live(t, ino);
	if (!n)
		err = -ENOENT;
	else if (!n->is_dir)
		err = -ENOTDIR;
	else if ((size_t)snprintf(buf, len, "%s%s", n->relpath, *n->relpath ? "/" : "") >= len)
		err = -ENAMETOOLONG;
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_readdir(struct tree *t, uint64_t dir, uint64_t pos, tree_fill_fn fill, void *arg)
{
	struct tree_attr a;
	struct node *d;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	d = get_live(t, dir);
	if (!d) {
		err = -ENOENT;
		goto out;
	}
	if (!d->is_dir) {
		err = -ENOTDIR;
		goto out;
	}
	if (pos == 0) {
		fill_attr(d, &a);
		if (fill(arg, ".", &a, 1))
			goto out;
		pos = 1;
	}
	if (pos == 1) {
		fill_attr(t->nodes[d->parent ? d->parent : TREE_ROOT_INO], &a);
		if (fill(arg, "..", &a, 2))
			goto out;
		pos = 2;
	}
	for (uint64_t i = pos - 2; i < d->n_kids; i++) {
		struct node *k = t->nodes[d->kids[i]];
		if (k->removed)
			continue;
		fill_attr(k, &a);
		if (fill(arg, k->name, &a, i + 3))
			break;
	}
out:
	pthread_rwlock_unlock(&t->lock);
	return err;
}

int tree_update_file(struct tree *t, uint64_t ino, const struct backend_object *obj)
{
	struct node *n;
	int ret = 0;

	pthread_rwlock_wrlock(&t->lock);
	n = get_live(t, ino);
	if (!n) {
		ret = -ENOENT;
	} else if (n->is_dir) {
		ret = -EISDIR;
	} else if (n->size != obj->size || strcmp(n->etag, obj->etag) != 0) {
		/* another version: a node of its own, as a listing makes it */
		struct node *nn = node_new(t, t->nodes[n->parent], n->name, strlen(n->name),
					   n->relpath, strlen(n->relpath), 0);
		if (!nn) {
			ret = -ENOMEM;
		} else {
			mark(t, n, TREE_REMOVED);
			n->removed = 1;
			n->superseded = 1;
			nn->pass = n->pass;
			nn->size = obj->size;
			nn->mtime = obj->mtime;
			memcpy(nn->etag, obj->etag, sizeof(nn->etag));
			nn->validated_ms = mono_ms();
			mark(t, nn, TREE_ADDED);
			ret = 1;
		}
	} else {
		n->mtime = obj->mtime;
		n->validated_ms = mono_ms();
	}
	pthread_rwlock_unlock(&t->lock);
	return ret;
}

int tree_validated_ms(struct tree *t, uint64_t ino, uint64_t *ms)
{
	struct node *n;
	int err = 0;

	pthread_rwlock_rdlock(&t->lock);
	n = get_live(t, ino);
	if (n)
		*ms = n->validated_ms;
	else
		err = -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	return err;
}

/* Snapshot records: u8 kind (1 file, 2 dir), u16 path length, path, and for
 * files u64 size, i64 mtime, u8 etag length, etag. Host byte order: a
 * snapshot is read back on the machine that wrote it. */
struct wbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void wput(struct wbuf *w, const void *d, size_t n)
{
	if (w->err)
		return;
	if (w->len + n > w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 4096;
		char *np;
		while (ncap < w->len + n)
			ncap *= 2;
		np = realloc(w->p, ncap);
		if (!np) {
			w->err = -ENOMEM;
			return;
		}
		w->p = np;
		w->cap = ncap;
	}
	memcpy(w->p + w->len, d, n);
	w->len += n;
}

int tree_serialize(struct tree *t, char **buf, size_t *len)
{
	struct wbuf w = {0};

	pthread_rwlock_rdlock(&t->lock);
	/* v2: each record names its inode, so that a new process (a remount,
	 * an upgrade) keeps the numbers of the names it finds again */
	wput(&w, "MFSTREE2", 8);
	for (size_t i = TREE_ROOT_INO; i < t->n_nodes; i++) {
		struct node *n = t->nodes[i];
		/* 1 file, 2 directory, 3 directory listed whole (listing=lazy) */
		uint8_t kind = n->is_dir ? (n->listed_ms ? 3 : 2) : 1;
		uint16_t plen = (uint16_t)strlen(n->relpath);
		uint64_t ino = n->ino;
		if (n->removed || (i == TREE_ROOT_INO && kind != 3))
			continue; /* the root: only to say it was listed */
		wput(&w, &ino, 8);
		wput(&w, &kind, 1);
		wput(&w, &plen, 2);
		wput(&w, n->relpath, plen);
		if (!n->is_dir) {
			uint8_t elen = (uint8_t)strlen(n->etag);
			wput(&w, &n->size, 8);
			wput(&w, &n->mtime, 8);
			wput(&w, &elen, 1);
			wput(&w, n->etag, elen);
		}
	}
	pthread_rwlock_unlock(&t->lock);
	if (w.err) {
		free(w.p);
		return w.err;
	}
	*buf = w.p;
	*len = w.len;
	return 0;
}

/* Nodes that are never found, up to inode @ino: a snapshot's numbers
 * between two live ones were removed names. */
/* A snapshot (untrusted input) may not make the table larger than
 * TREE_LOAD_MAX_NODES; the numbers the daemons of this mount gave out (the
 * kept state: every forget and listing again gives new ones) may go
 * further. */
#define TREE_KEPT_MAX_NODES (1ull << 28)

static int hold_until_max(struct tree *t, uint64_t ino, uint64_t max)
{
	int err = 0;

	if (ino >= max)
		return -EFBIG;
	pthread_rwlock_wrlock(&t->lock);
	if (ino > t->cap_nodes) {
		size_t ncap = t->cap_nodes;
		struct node **nn;
		while (ncap < ino)
			ncap *= 2;
		if ((nn = realloc(t->nodes, ncap * sizeof(*nn))) != NULL) {
			t->nodes = nn;
			t->cap_nodes = ncap;
		} else {
			err = -ENOMEM;
		}
	}
	while (!err && t->n_nodes < ino)
		t->nodes[t->n_nodes++] = &hole;
	if (!err && t->ino_next)
		atomic_store(t->ino_next, t->n_nodes);
	pthread_rwlock_unlock(&t->lock);
	return err;
}

static int hold_until(struct tree *t, uint64_t ino)
{
	return hold_until_max(t, ino, TREE_LOAD_MAX_NODES);
}

int tree_keep_inos(struct tree *t, _Atomic uint64_t *next)
{
	int err = 0;

	if (atomic_load(next) > TREE_ROOT_INO)
		err = hold_until_max(t, atomic_load(next), TREE_KEPT_MAX_NODES);
	if (err)
		return err;
	pthread_rwlock_wrlock(&t->lock);
	t->ino_next = next;
	atomic_store(next, t->n_nodes);
	pthread_rwlock_unlock(&t->lock);
	return 0;
}

void tree_forget_listed(struct tree *t)
{
	pthread_rwlock_wrlock(&t->lock);
	for (size_t i = TREE_ROOT_INO; i < t->n_nodes; i++)
		if (t->nodes[i] != &hole)
			t->nodes[i]->listed_ms = 0;
	pthread_rwlock_unlock(&t->lock);
}

/* The directory at @rel (@len bytes, no '/' at the end; "" the root) was
 * listed, as far as a snapshot says. */
static void mark_listed(struct tree *t, const char *rel, size_t len)
{
	struct node *n;

	pthread_rwlock_wrlock(&t->lock);
	n = len ? ensure_dir(t, rel, len) : t->nodes[TREE_ROOT_INO];
	if (n)
		n->listed_ms = 1;
	pthread_rwlock_unlock(&t->lock);
}

int tree_load(struct tree *t, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;
	char path[PATH_MAX + 2];
	int err = 0, v2;

	if (len < 8 || (memcmp(buf, "MFSTREE1", 8) != 0 && memcmp(buf, "MFSTREE2", 8) != 0))
		return -EPROTO;
	v2 = buf[7] == '2';
	p += 8;
	t->loading = 1;
	while (p < end && !err) {
		struct backend_object o = {0};
		uint64_t ino = 0;
		uint8_t kind, elen;
		uint16_t plen;

		if (v2) {
			if (end - p < 8)
				goto bad;
			memcpy(&ino, p, 8);
			p += 8;
			/* inodes in order, each new one where it was: the numbers
			 * between (removed then) are kept by nodes never found */
			if (ino != TREE_ROOT_INO && (ino < t->n_nodes || hold_until(t, ino) != 0))
				goto bad;
		}
		if (end - p < 3)
			goto bad;
		kind = (uint8_t)*p;
		memcpy(&plen, p + 1, 2);
		p += 3;
		if ((plen == 0 && kind != 3) || plen > PATH_MAX || end - p < plen ||
		    memchr(p, '\0', plen))
			goto bad; /* a NUL in a name: not a snapshot of ours */
		memcpy(path, p, plen);
		path[plen] = '\0';
		p += plen;
		if (kind == 2 || kind == 3) {
			path[plen] = '/';
			path[plen + 1] = '\0';
			err = plen ? tree_add_key(t, path, NULL) : 0;
			if (err > 0) { /* a name that is no path: skipped (logged) */
				err = 0;
				if (v2)
					goto bad;
				continue;
			}
			if (v2 && plen && !err && t->n_nodes != ino + 1)
				goto bad; /* not where it was: another tree */
			if (kind == 3 && !err) /* listed once, long ago */
				mark_listed(t, path, plen);
			continue;
		}
		if (kind != 1 || end - p < 17)
			goto bad;
		memcpy(&o.size, p, 8);
		memcpy(&o.mtime, p + 8, 8);
		elen = (uint8_t)p[16];
		p += 17;
		if (end - p < elen || elen >= sizeof(o.etag))
			goto bad;
		memcpy(o.etag, p, elen);
		o.etag[elen] = '\0';
		p += elen;
		o.key = path;
		err = tree_add_key(t, path, &o);
		if (err > 0)
			err = 0;
		if (v2 && !err && t->n_nodes != ino + 1)
			goto bad;
	}
	t->loading = 0;
	return err < 0 ? err : 0;
bad:
	t->loading = 0;
	return -EPROTO;
}

int tree_foreach_file(struct tree *t,
		      int (*cb)(void *arg, const char *relpath, const struct tree_attr *a),
		      void *arg)
{
	struct tree_attr a;
	int ret = 0;

	pthread_rwlock_rdlock(&t->lock);
	for (size_t i = TREE_ROOT_INO + 1; i < t->n_nodes && !ret; i++) {
		struct node *n = t->nodes[i];
		if (n->removed || n->is_dir)
			continue;
		fill_attr(n, &a);
		ret = cb(arg, n->relpath, &a);
	}
	pthread_rwlock_unlock(&t->lock);
	return ret;
}

void tree_counts(struct tree *t, uint64_t *files, uint64_t *dirs, uint64_t *bytes)
{
	*files = *dirs = *bytes = 0;
	pthread_rwlock_rdlock(&t->lock);
	for (size_t i = 1; i < t->n_nodes; i++) {
		struct node *n = t->nodes[i];
		if (n->removed)
			continue;
		if (n->is_dir) {
			(*dirs)++;
		} else {
			(*files)++;
			*bytes += n->size;
		}
	}
	pthread_rwlock_unlock(&t->lock);
}

void tree_ref(struct tree *t, uint64_t ino)
{
	pthread_rwlock_rdlock(&t->lock);
	if (ino && ino < t->n_nodes && t->nodes[ino] != &hole)
		atomic_fetch_add(&t->nodes[ino]->nlookup, 1);
	pthread_rwlock_unlock(&t->lock);
}

void tree_unref(struct tree *t, uint64_t ino, uint64_t n)
{
	pthread_rwlock_rdlock(&t->lock);
	if (ino && ino < t->n_nodes && t->nodes[ino] != &hole) {
		_Atomic uint64_t *c = &t->nodes[ino]->nlookup;
		uint64_t have = atomic_load(c);
		while (!atomic_compare_exchange_weak(c, &have, have > n ? have - n : 0))
			;
	}
	pthread_rwlock_unlock(&t->lock);
}

void tree_counts_unknown(struct tree *t)
{
	pthread_rwlock_wrlock(&t->lock);
	t->counted_from = t->n_nodes;
	pthread_rwlock_unlock(&t->lock);
}

/* May @d's children go? None is held by the kernel, none is another
 * daemon's, and none has children of its own (those go first). */
static int forgettable(struct tree *t, const struct node *d)
{
	for (size_t i = 0; i < d->n_kids; i++) {
		const struct node *k = t->nodes[d->kids[i]];
		if (k == &hole)
			continue;
		if (k->ino < t->counted_from || atomic_load(&k->nlookup) || k->n_kids)
			return 0;
	}
	return 1;
}

static void node_free(struct node *n)
{
	free(n->name);
	free(n->relpath);
	free(n->kids);
	free(n);
}

size_t tree_forget(struct tree *t, uint64_t unused_since_ms, uint64_t **dirs, size_t *n_dirs)
{
	size_t dropped = 0, cap = 0;

	*dirs = NULL;
	*n_dirs = 0;
	pthread_rwlock_wrlock(&t->lock);
	/* children before parents: a higher number is never an ancestor's
	 * (a node is made after its parent), so one pass from the top peels a
	 * whole idle subtree */
	for (size_t i = t->n_nodes; i-- > TREE_ROOT_INO + 1;) {
		struct node *d = t->nodes[i];
		/* whether listed or not (a snapshot's, a removed subtree): an
		 * unlisted directory is listed before use anyway */
		if (d == &hole || !d->is_dir || !d->n_kids ||
		    atomic_load(&d->used_ms) >= unused_since_ms || !forgettable(t, d))
			continue;
		for (size_t k = 0; k < d->n_kids; k++) {
			struct node *c = t->nodes[d->kids[k]];
			if (c == &hole)
				continue;
			t->nodes[c->ino] = &hole;
			node_free(c);
			dropped++;
		}
		free(d->kids);
		d->kids = NULL;
		d->n_kids = d->cap_kids = 0;
		d->n_subdirs = 0;
		d->listed_ms = 0; /* listed again when looked in */
		if (*n_dirs == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *nd = realloc(*dirs, ncap * sizeof(*nd));
			if (!nd)
				continue; /* not reported: its cached pages stay until they expire */
			*dirs = nd;
			cap = ncap;
		}
		(*dirs)[(*n_dirs)++] = d->ino;
	}
	if (dropped) {
		/* the hash has the dropped numbers: made again without them */
		memset(t->hash, 0, t->hash_cap * sizeof(*t->hash));
		hash_fill(t, t->hash, t->hash_cap);
	}
	pthread_rwlock_unlock(&t->lock);
	return dropped;
}
