/* LMDB-backed cache index (see index.h for the record layout).
 *
 * The environment is opened with MDB_NOTLS (FUSE worker threads start and end
 * read transactions on any thread) and MDB_NOMETASYNC: every commit reaches
 * the disk's data pages, the meta page is synced with the next commit, so a
 * machine crash loses at most the last transaction and never corrupts the
 * index; a killed process loses nothing that was committed.
 *
 * Damage (a truncated data.mdb, garbage over its pages) is what LMDB does not
 * survive: it maps the file, so a page past the end of a short file is a
 * SIGBUS and a garbage page an assert or a SIGSEGV, long after the mount went
 * live. So the first process to open the index checks it before using it
 * (index_check): the size against the meta page before any other page is
 * touched, then a walk of every tree in a forked child, where a crash only
 * means "damaged". "First" is decided by open.lock: every opener holds
 * flock(LOCK_SH) on it while the index is open; whoever gets LOCK_EX
 * instead is alone, checks, sets a damaged index aside, then downgrades. Later
 * openers wait for that and compare the size only: the walk of a file that
 * other processes write could read a page they are reusing.
 */
#include "index.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INDEX_MAP_SIZE (8ULL << 30) /* address space only; the file grows as used */
#define INDEX_VERSION 1
#define NUM_METAS 2          /* LMDB's two meta pages, pages 0 and 1 */
#define FREE_DBI 0           /* LMDB's free list: readable by read-only cursors */
#define CHECK_TIMEOUT_S 120  /* a walk that takes longer is killed: "damaged" */

struct index {
	MDB_env *env;
	MDB_dbi chunks, objects, meta;
	int lock_fd; /* open.lock, flock(LOCK_SH) while open */
	int reset;   /* this open set a damaged index aside */
};

/* On-disk object record: fixed header then the name (not NUL-terminated). */
struct obj_rec {
	uint64_t size;
	uint64_t cached_bytes;
	uint32_t cached_chunks;
	uint32_t name_len;
};

static int map_mdb(int rc, const char *what)
{
	if (rc == 0)
		return 0;
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc == MDB_MAP_FULL)
		return -ENOSPC;
	if (rc > 0)
		return -rc; /* an errno */
	log_once(LOG_LVL_ERROR, "cache index: %s: %s", what, mdb_strerror(rc));
	return -EIO;
}

static void chunk_key(uint8_t key[OBJID_LEN + 4], const uint8_t *objid, uint32_t chunk)
{
	memcpy(key, objid, OBJID_LEN);
	key[OBJID_LEN] = (uint8_t)(chunk >> 24);
	key[OBJID_LEN + 1] = (uint8_t)(chunk >> 16);
	key[OBJID_LEN + 2] = (uint8_t)(chunk >> 8);
	key[OBJID_LEN + 3] = (uint8_t)chunk;
}

static uint32_t key_chunk(const uint8_t *key)
{
	return (uint32_t)key[OBJID_LEN] << 24 | (uint32_t)key[OBJID_LEN + 1] << 16 |
	       (uint32_t)key[OBJID_LEN + 2] << 8 | key[OBJID_LEN + 3];
}

static size_t chunk_rec_size(uint32_t nblocks)
{
	return offsetof(struct index_chunk, crc) + nblocks * sizeof(uint32_t);
}

/* The fixed part of a stored chunk record. LMDB aligns values to 2 bytes
 * only, so a record is never read in place through a struct pointer. */
struct rec_head {
	uint32_t len, nblocks;
	uint64_t last_use_ms;
};

static int rec_head_get(const MDB_val *d, struct rec_head *h)
{
	if (d->mv_size < chunk_rec_size(0))
		return -1;
	memcpy(&h->len, (const char *)d->mv_data + offsetof(struct index_chunk, len), 4);
	memcpy(&h->nblocks, (const char *)d->mv_data + offsetof(struct index_chunk, nblocks), 4);
	memcpy(&h->last_use_ms, (const char *)d->mv_data + offsetof(struct index_chunk, last_use_ms),
	       8);
	if (h->nblocks > INDEX_MAX_BLOCKS || d->mv_size != chunk_rec_size(h->nblocks))
		return -1;
	return 0;
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v)
{
	MDB_val k = {strlen(name), (void *)name}, d;
	int rc = mdb_get(txn, dbi, &k, &d);

	*v = 0;
	if (rc == 0 && d.mv_size == sizeof(*v))
		memcpy(v, d.mv_data, sizeof(*v));
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v)
{
	MDB_val k = {strlen(name), (void *)name}, d = {sizeof(v), &v};

	return mdb_put(txn, dbi, &k, &d, 0);
}

/* ---- checking an index before use (see the top of this file) ---- */

/* data.mdb must hold every page up to the last one its meta page names:
 * LMDB never shrinks the file, and writes a transaction's pages before the
 * meta page that names them, so this holds even while others write. */
static int check_size(MDB_env *env, char *why, size_t why_len)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat sb;
	uint64_t need;
	int fd;

	if (mdb_env_info(env, &info) || mdb_env_stat(env, &st) || mdb_env_get_fd(env, &fd) ||
	    fstat(fd, &sb) < 0) {
		snprintf(why, why_len, "its meta page cannot be read");
		return -1;
	}
	need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	if ((uint64_t)sb.st_size < need) {
		snprintf(why, why_len, "truncated: %lld bytes, its meta page names %llu pages "
			 "(%llu bytes)", (long long)sb.st_size,
			 (unsigned long long)info.me_last_pgno + 1, (unsigned long long)need);
		return -1;
	}
	return 0;
}

/* The format of one record of database @name; reads every byte of it, so an
 * overflow page past the file or unmapped faults here, in the checker. */
static int check_record(const char *name, const MDB_val *k, const MDB_val *d, uint64_t last_pgno,
			uint64_t *free_pages)
{
	const unsigned char *p = d->mv_data;
	volatile unsigned sum = 0;

	for (size_t i = 0; i < d->mv_size; i++)
		sum += p[i];
	for (size_t i = 0; i < k->mv_size; i++)
		sum += ((const unsigned char *)k->mv_data)[i];
	if (!name) { /* the free list: txnid -> count, page numbers */
		size_t n, pg;
		if (k->mv_size != sizeof(size_t) || d->mv_size < sizeof(size_t))
			return -1;
		memcpy(&n, p, sizeof(n));
		if (n > d->mv_size / sizeof(size_t) || d->mv_size != (n + 1) * sizeof(size_t))
			return -1;
		for (size_t i = 1; i <= n; i++) {
			memcpy(&pg, p + i * sizeof(size_t), sizeof(pg));
			if (pg < NUM_METAS || pg > last_pgno)
				return -1;
		}
		*free_pages += n;
		return 0;
	}
	if (strcmp(name, "(main)") == 0) /* a named database: its MDB_db */
		return d->mv_size == 2 * sizeof(uint32_t) + 5 * sizeof(size_t) ? 0 : -1;
	if (strcmp(name, "chunks") == 0) {
		struct rec_head h;
		return k->mv_size == OBJID_LEN + 4 && rec_head_get(d, &h) == 0 ? 0 : -1;
	}
	if (strcmp(name, "objects") == 0) {
		struct obj_rec o;
		if (k->mv_size != OBJID_LEN || d->mv_size < sizeof(o))
			return -1;
		memcpy(&o, p, sizeof(o));
		return sizeof(o) + o.name_len == d->mv_size ? 0 : -1;
	}
	return d->mv_size == sizeof(uint64_t) ? 0 : -1; /* meta */
}

/* Walk one database with a cursor; add its pages to *@pages. */
static int check_db(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t last_pgno,
		    uint64_t *pages, uint64_t *free_pages, char *why, size_t why_len)
{
	MDB_cursor *cur;
	MDB_stat st;
	MDB_val k, d;
	uint64_t n = 0;
	int rc;

	rc = mdb_stat(txn, dbi, &st);
	if (!rc)
		rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc) {
		snprintf(why, why_len, "database %s: %s", name ? name : "(free list)",
			 mdb_strerror(rc));
		return -1;
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT), n++)
		if (check_record(name, &k, &d, last_pgno, free_pages) < 0)
			break;
	mdb_cursor_close(cur);
	if (rc == 0 || (rc == MDB_NOTFOUND && n != st.ms_entries)) {
		snprintf(why, why_len, "database %s: record %llu of %llu is malformed",
			 name ? name : "(free list)", (unsigned long long)n,
			 (unsigned long long)st.ms_entries);
		return -1;
	}
	if (rc != MDB_NOTFOUND) {
		snprintf(why, why_len, "database %s: %s", name ? name : "(free list)",
			 mdb_strerror(rc));
		return -1;
	}
	*pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	return 0;
}

/* The checker's side of index_check, in the child: 0 sound, -1 damaged. */
static int check_walk(MDB_env *env, const char *dir, char *why, size_t why_len)
{
	static const char *const names[] = {"chunks", "objects", "meta"};
	MDB_envinfo info;
	MDB_txn *txn = NULL;
	MDB_dbi dbi;
	uint64_t pages = 0, free_pages = 0;
	int rc;

	rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0600);
	if (rc) {
		snprintf(why, why_len, "%s", mdb_strerror(rc));
		return -1;
	}
	if (check_size(env, why, why_len) < 0)
		return -1;
	mdb_env_info(env, &info);
	rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		snprintf(why, why_len, "%s", mdb_strerror(rc));
		return -1;
	}
	rc = check_db(txn, FREE_DBI, NULL, info.me_last_pgno, &pages, &free_pages, why, why_len);
	if (rc < 0)
		return -1;
	rc = mdb_dbi_open(txn, NULL, 0, &dbi);
	if (rc || check_db(txn, dbi, "(main)", info.me_last_pgno, &pages, &free_pages, why,
			   why_len) < 0) {
		if (rc)
			snprintf(why, why_len, "the main database: %s", mdb_strerror(rc));
		return -1;
	}
	/* the main database holds exactly our named databases (a new index:
	 * none yet); check_db of it only saw well-formed 48-byte records */
	{
		MDB_stat st;
		size_t found = 0;
		if (mdb_stat(txn, dbi, &st) == 0 && st.ms_entries > 3) {
			snprintf(why, why_len, "the main database has %llu entries",
				 (unsigned long long)st.ms_entries);
			return -1;
		}
		for (size_t i = 0; i < 3; i++) {
			MDB_dbi sub;
			rc = mdb_dbi_open(txn, names[i], 0, &sub);
			if (rc == MDB_NOTFOUND)
				continue;
			found++;
			if (rc) {
				snprintf(why, why_len, "database %s: %s", names[i], mdb_strerror(rc));
				return -1;
			}
			if (check_db(txn, sub, names[i], info.me_last_pgno, &pages, &free_pages, why,
				     why_len) < 0)
				return -1;
		}
		if (found != st.ms_entries) {
			snprintf(why, why_len, "the main database names unknown databases");
			return -1;
		}
	}
	/* every page is in exactly one tree or on the free list (the audit
	 * LMDB itself runs at each commit in its debug builds) */
	if (pages + free_pages + NUM_METAS != (uint64_t)info.me_last_pgno + 1) {
		snprintf(why, why_len, "its trees hold %llu pages and its free list %llu, the file "
			 "has %llu", (unsigned long long)pages, (unsigned long long)free_pages,
			 (unsigned long long)info.me_last_pgno + 1 - NUM_METAS);
		return -1;
	}
	return 0;
}

static void check_assert(MDB_env *env, const char *msg)
{
	int *fd = mdb_env_get_userctx(env);
	char line[512];
	int n = snprintf(line, sizeof(line), "LMDB: %s", msg);

	if (write(*fd, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
		_exit(3);
	_exit(2);
}

/* In the child: no stderr (LMDB's assert text, a sanitizer's report of the
 * fault we are looking for), default actions for the faults, a time limit. */
static void check_child(const char *dir, int fd)
{
	static const int sigs[] = {SIGBUS, SIGSEGV, SIGABRT, SIGALRM};
	char why[512] = "";
	MDB_env *env;
	sigset_t set;
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (null >= 0)
		dup2(null, STDERR_FILENO);
	/* hold nothing of the parent's (/dev/fuse, open.lock, sockets): a
	 * parent killed during a long check must not live on in its child */
	if (fd != 3) {
		dup2(fd, 3);
		fd = 3;
	}
	close_range(4, ~0U, 0);
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		signal(sigs[i], SIG_DFL);
		sigaddset(&set, sigs[i]);
	}
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	alarm(CHECK_TIMEOUT_S);
	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) ||
	    mdb_env_set_mapsize(env, INDEX_MAP_SIZE))
		_exit(3);
	mdb_env_set_userctx(env, &fd);
	mdb_env_set_assert(env, check_assert);
	if (check_walk(env, dir, why, sizeof(why)) == 0)
		_exit(0);
	if (write(fd, why, strlen(why)) < 0)
		_exit(3);
	_exit(2);
}

int index_check(const char *dir, char *why, size_t why_len)
{
	char path[4096];
	struct stat sb;
	int fds[2], status;
	ssize_t n, got = 0;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(path, &sb) < 0)
		return -errno;
	if (sb.st_size == 0) {
		snprintf(why, why_len, "empty");
		return -EBADMSG;
	}
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(fds[0]);
		close(fds[1]);
		return err;
	}
	if (pid == 0) {
		close(fds[0]);
		check_child(dir, fds[1]);
	}
	close(fds[1]);
	while (why_len > 1 && (size_t)got < why_len - 1 &&
	       ((n = read(fds[0], why + got, why_len - 1 - (size_t)got)) > 0 ||
		(n < 0 && errno == EINTR)))
		got += n > 0 ? n : 0;
	if (why_len)
		why[got] = '\0';
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	/* Damage is what the walk found (exit 2), or a fault reading the file:
	 * SIGBUS, SIGSEGV, LMDB's abort, or a sanitizer's exit 1 after it caught
	 * the fault. Anything else (out of memory at exit 3, killed, too slow)
	 * says nothing of the index: -EIO, and the caller must not throw a good
	 * cache away for it. */
	if (WIFEXITED(status) && WEXITSTATUS(status) != 3) {
		if (got == 0)
			snprintf(why, why_len, "reading it failed (exit status %d)",
				 WEXITSTATUS(status));
		return -EBADMSG;
	}
	if (WIFSIGNALED(status) && (WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGSEGV ||
				    WTERMSIG(status) == SIGABRT)) {
		if (got == 0)
			snprintf(why, why_len, "reading it faulted: %s", strsignal(WTERMSIG(status)));
		return -EBADMSG;
	}
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		snprintf(why, why_len, "reading it took over %d s", CHECK_TIMEOUT_S);
	else if (WIFSIGNALED(status))
		snprintf(why, why_len, "the check was killed (%s)", strsignal(WTERMSIG(status)));
	else
		snprintf(why, why_len, "the check could not run (out of memory)");
	return -EIO;
}

/* Rename data.mdb aside (lock.mdb only holds reader slots: removed). */
static int set_aside(const char *dir, char *aside, size_t aside_len)
{
	char from[4096], stamp[32];
	struct stat sb;
	struct tm tm;
	time_t t = time(NULL);

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(aside, aside_len, "%s/data.mdb.damaged-%s", dir, stamp);
	for (int i = 1; lstat(aside, &sb) == 0 && i < 100; i++)
		snprintf(aside, aside_len, "%s/data.mdb.damaged-%s.%d", dir, stamp, i);
	snprintf(from, sizeof(from), "%s/data.mdb", dir);
	if (rename(from, aside) < 0)
		return -errno;
	snprintf(from, sizeof(from), "%s/lock.mdb", dir);
	if (unlink(from) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Take open.lock: *@alone is 1 when no other process has the index open
 * (LOCK_EX held: the caller checks, then index_open downgrades). */
static int lock_open(const char *dir, int *alone, char *msg, size_t msg_len)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/open.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = -errno;
		snprintf(msg, msg_len, "cannot open %s: %s", path, strerror(-err));
		return err;
	}
	*alone = flock(fd, LOCK_EX | LOCK_NB) == 0;
	/* another opener: wait while a first opener checks (or resets) it */
	while (!*alone && flock(fd, LOCK_SH) < 0)
		if (errno != EINTR) {
			int err = -errno;
			snprintf(msg, msg_len, "cannot lock %s: %s", path, strerror(-err));
			close(fd);
			return err;
		}
	return fd;
}

int index_open(const char *dir, unsigned flags, uint32_t chunk_size, uint32_t *chunk_size_out,
	       struct index **out, char *msg, size_t msg_len)
{
	struct index *ix = calloc(1, sizeof(*ix));
	MDB_txn *txn = NULL;
	uint64_t cs = 0, ver = 0;
	char why[512] = "";
	int rc, alone = 0;

	if (!ix)
		return -ENOMEM;
	ix->lock_fd = -1;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = errno;
		snprintf(msg, msg_len, "cannot create %s: %s", dir, strerror(rc));
		free(ix);
		return -rc;
	}
	ix->lock_fd = lock_open(dir, &alone, msg, msg_len);
	if (ix->lock_fd < 0) {
		rc = -ix->lock_fd;
		free(ix);
		return -rc;
	}
	if (alone) {
		rc = index_check(dir, why, sizeof(why));
		if (rc == -EBADMSG && (flags & INDEX_OPEN_RESET)) {
			char aside[4096];
			rc = set_aside(dir, aside, sizeof(aside));
			if (rc) {
				snprintf(msg, msg_len, "the cache index %s/data.mdb is damaged (%s) "
					 "and cannot be set aside: %s", dir, why, strerror(-rc));
				goto out_close;
			}
			log_warn("cache index %s/data.mdb is damaged (%s): set aside as %s, "
				 "starting with an empty cache", dir, why, aside);
			ix->reset = 1;
		} else if (rc == -EBADMSG) {
			snprintf(msg, msg_len, "the cache index %s/data.mdb is damaged (%s)", dir, why);
			goto out_close;
		} else if (rc == -EIO) {
			/* as before there was a check: better than an empty cache */
			log_warn("cache index %s/data.mdb could not be checked (%s): using it as "
				 "it is", dir, why);
		} else if (rc && rc != -ENOENT) {
			snprintf(msg, msg_len, "cannot check the cache index in %s: %s", dir,
				 strerror(-rc));
			goto out_close;
		}
	}
	rc = mdb_env_create(&ix->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(ix->env, 4);
	if (!rc)
		rc = mdb_env_set_mapsize(ix->env, INDEX_MAP_SIZE);
	if (!rc)
		rc = mdb_env_set_maxreaders(ix->env, 1024);
	if (!rc)
		rc = mdb_env_open(ix->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600);
	if (rc) {
		snprintf(msg, msg_len, "cannot open the cache index in %s: %s", dir,
			 mdb_strerror(rc));
		goto out_err;
	}
	/* checked by the first opener; what it checked may have been cut since */
	if (!alone && check_size(ix->env, why, sizeof(why)) < 0) {
		snprintf(msg, msg_len, "the cache index %s/data.mdb is damaged (%s), and in use by "
			 "another modelfs process: not set aside", dir, why);
		mdb_env_close(ix->env);
		rc = -EBADMSG;
		goto out_close;
	}
	/* a reader slot left by a killed process would pin old pages forever */
	mdb_reader_check(ix->env, NULL);
	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (!rc)
		rc = mdb_dbi_open(txn, "chunks", MDB_CREATE, &ix->chunks);
	if (!rc)
		rc = mdb_dbi_open(txn, "objects", MDB_CREATE, &ix->objects);
	if (!rc)
		rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ix->meta);
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "version", &ver);
	if (!rc && ver != 0 && ver != INDEX_VERSION) {
		snprintf(msg, msg_len, "the cache index in %s has format %llu, this modelfs reads %d "
			 "(modelfs cache clear it)", dir, (unsigned long long)ver, INDEX_VERSION);
		mdb_txn_abort(txn);
		mdb_env_close(ix->env);
		rc = -EPROTO;
		goto out_close;
	}
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "chunk_size", &cs);
	if (!rc && cs == 0) {
		cs = chunk_size;
		rc = meta_put_u64(txn, ix->meta, "chunk_size", cs);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "version", INDEX_VERSION);
	}
	if (!rc)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc) {
		snprintf(msg, msg_len, "cannot initialise the cache index in %s: %s", dir,
			 mdb_strerror(rc));
		goto out_err;
	}
	/* checked (or new): later openers may come in (an atomic conversion);
	 * after a reset only once the caller has removed the data files */
	if (alone && !ix->reset)
		flock(ix->lock_fd, LOCK_SH);
	*chunk_size_out = (uint32_t)cs;
	*out = ix;
	return 0;
out_err:
	mdb_env_close(ix->env);
	rc = rc > 0 ? -rc : -EIO;
out_close:
	close(ix->lock_fd);
	free(ix);
	return rc;
}

void index_close(struct index *ix)
{
	if (!ix)
		return;
	mdb_env_close(ix->env);
	close(ix->lock_fd); /* after: the next first opener must find it closed */
	free(ix);
}

int index_was_reset(const struct index *ix)
{
	return ix && ix->reset;
}

void index_reset_done(struct index *ix)
{
	if (ix && ix->reset)
		flock(ix->lock_fd, LOCK_SH);
}

int index_chunk_get(struct index *ix, const uint8_t *objid, uint32_t chunk, struct index_chunk *out)
{
	uint8_t key[OBJID_LEN + 4];
	MDB_val k = {sizeof(key), key}, d;
	MDB_txn *txn;
	int rc;

	chunk_key(key, objid, chunk);
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	rc = mdb_get(txn, ix->chunks, &k, &d);
	if (rc == 0) {
		struct rec_head h;
		if (rec_head_get(&d, &h) < 0)
			rc = MDB_NOTFOUND; /* a damaged record is a miss */
		else
			memcpy(out, d.mv_data, d.mv_size);
	}
	mdb_txn_abort(txn);
	return map_mdb(rc, "read");
}

/* index_chunk_put's work inside @txn. @return 0 or an LMDB error. */
static int chunk_put_txn(struct index *ix, MDB_txn *txn, const uint8_t *objid, uint32_t chunk,
			 const struct index_chunk *rec, const char *name, uint64_t obj_size)
{
	uint8_t key[OBJID_LEN + 4];
	MDB_val k = {sizeof(key), key}, d = {chunk_rec_size(rec->nblocks), (void *)rec};
	MDB_val ok = {OBJID_LEN, (void *)objid}, od;
	struct obj_rec *orec = NULL;
	size_t name_len = strlen(name);
	uint64_t usage;
	uint32_t old_len;
	int rc, existed;

	chunk_key(key, objid, chunk);
	{
		MDB_val old;
		struct rec_head h = {0};
		existed = mdb_get(txn, ix->chunks, &k, &old) == 0 && rec_head_get(&old, &h) == 0;
		old_len = existed ? h.len : 0;
	}
	rc = mdb_put(txn, ix->chunks, &k, &d, 0);
	if (rc || (existed && old_len == rec->len))
		goto out;

	/* a new chunk (or a new length): count it in usage and in its object */
	rc = meta_get_u64(txn, ix->meta, "usage", &usage);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "usage", usage - old_len + rec->len);
	if (rc)
		goto out;
	if (name_len > 1023)
		name_len = 1023;
	orec = calloc(1, sizeof(*orec) + name_len);
	if (!orec) {
		rc = ENOMEM;
		goto out;
	}
	if (mdb_get(txn, ix->objects, &ok, &od) == 0 && od.mv_size >= sizeof(*orec)) {
		memcpy(orec, od.mv_data, sizeof(*orec));
	} else {
		orec->size = obj_size;
	}
	orec->cached_bytes = orec->cached_bytes - old_len + rec->len;
	if (!existed)
		orec->cached_chunks++;
	orec->name_len = (uint32_t)name_len;
	memcpy(orec + 1, name, name_len);
	od.mv_size = sizeof(*orec) + name_len;
	od.mv_data = orec;
	rc = mdb_put(txn, ix->objects, &ok, &od, 0);
out:
	free(orec);
	return rc;
}

int index_chunk_put(struct index *ix, const uint8_t *objid, uint32_t chunk,
		    const struct index_chunk *rec, const char *name, uint64_t obj_size)
{
	struct index_put one = {objid, chunk, rec, name, obj_size};

	return index_chunk_put_many(ix, &one, 1);
}

int index_chunk_put_many(struct index *ix, const struct index_put *puts, size_t n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);

	if (rc)
		return map_mdb(rc, "write");
	for (size_t i = 0; i < n && !rc; i++)
		rc = chunk_put_txn(ix, txn, puts[i].objid, puts[i].chunk, puts[i].rec, puts[i].name,
				   puts[i].obj_size);
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "write");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}



int index_chunks_del(struct index *ix, const uint8_t (*objids)[OBJID_LEN], const uint32_t *chunks,
		     size_t n, uint64_t *freed,
		     void (*emptied)(void *arg, const uint8_t *objid), void *arg)
{
	uint8_t (*empty)[OBJID_LEN] = calloc(n ? n : 1, OBJID_LEN);
	size_t n_empty = 0;
	uint64_t usage, total = 0;
	MDB_txn *txn;
	int rc;

	*freed = 0;
	if (!empty)
		return -ENOMEM;
	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc) {
		free(empty);
		return map_mdb(rc, "write");
	}
	for (size_t i = 0; i < n && !rc; i++) {
		uint8_t key[OBJID_LEN + 4];
		MDB_val k = {sizeof(key), key}, d, ok = {OBJID_LEN, (void *)objids[i]}, od;
		struct rec_head h = {0};
		uint32_t len;

		chunk_key(key, objids[i], chunks[i]);
		if (mdb_get(txn, ix->chunks, &k, &d) != 0)
			continue; /* already gone */
		rec_head_get(&d, &h);
		len = h.len;
		rc = mdb_del(txn, ix->chunks, &k, NULL);
		if (rc)
			break;
		total += len;
		if (mdb_get(txn, ix->objects, &ok, &od) == 0 && od.mv_size >= sizeof(struct obj_rec)) {
			struct obj_rec o;
			memcpy(&o, od.mv_data, sizeof(o));
			o.cached_bytes = o.cached_bytes > len ? o.cached_bytes - len : 0;
			o.cached_chunks = o.cached_chunks ? o.cached_chunks - 1 : 0;
			if (o.cached_chunks == 0) {
				rc = mdb_del(txn, ix->objects, &ok, NULL);
				memcpy(empty[n_empty++], objids[i], OBJID_LEN);
			} else {
				/* same record with new counts (copied out first: a
				 * put may move the page the old value is on) */
				char *copy = malloc(od.mv_size);
				MDB_val nd = {od.mv_size, copy};
				if (!copy) {
					rc = ENOMEM;
					break;
				}
				memcpy(copy, od.mv_data, od.mv_size);
				memcpy(copy, &o, sizeof(o));
				rc = mdb_put(txn, ix->objects, &ok, &nd, 0);
				free(copy);
			}
		}
	}
	if (!rc)
		rc = meta_get_u64(txn, ix->meta, "usage", &usage);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "usage", usage > total ? usage - total : 0);
	if (rc) {
		mdb_txn_abort(txn);
		free(empty);
		return map_mdb(rc, "delete");
	}
	rc = map_mdb(mdb_txn_commit(txn), "commit");
	if (!rc) {
		*freed = total;
		for (size_t i = 0; emptied && i < n_empty; i++)
			emptied(arg, empty[i]);
	}
	free(empty);
	return rc;
}

int index_touch(struct index *ix, const struct index_touch *t, size_t n, uint64_t hits,
		uint64_t misses)
{
	MDB_txn *txn;
	uint64_t v;
	int rc;

	rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc)
		return map_mdb(rc, "write");
	for (size_t i = 0; i < n && !rc; i++) {
		uint8_t key[OBJID_LEN + 4];
		MDB_val k = {sizeof(key), key}, d;

		chunk_key(key, t[i].objid, t[i].chunk);
		struct rec_head h;
		if (mdb_get(txn, ix->chunks, &k, &d) != 0 || rec_head_get(&d, &h) < 0)
			continue;
		if (h.last_use_ms >= t[i].when_ms)
			continue;
		{
			struct index_chunk *copy = malloc(d.mv_size);
			MDB_val nd = {d.mv_size, copy};
			if (!copy) {
				rc = ENOMEM;
				break;
			}
			memcpy(copy, d.mv_data, d.mv_size);
			copy->last_use_ms = t[i].when_ms;
			rc = mdb_put(txn, ix->chunks, &k, &nd, 0);
			free(copy);
		}
	}
	if (!rc && hits) {
		rc = meta_get_u64(txn, ix->meta, "hits", &v);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "hits", v + hits);
	}
	if (!rc && misses) {
		rc = meta_get_u64(txn, ix->meta, "misses", &v);
		if (!rc)
			rc = meta_put_u64(txn, ix->meta, "misses", v + misses);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "touch");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}

int index_set_quota(struct index *ix, uint64_t quota, double high, double low)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);

	if (rc)
		return map_mdb(rc, "write");
	rc = meta_put_u64(txn, ix->meta, "quota", quota);
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "high_ppm", (uint64_t)(high * 1e6));
	if (!rc)
		rc = meta_put_u64(txn, ix->meta, "low_ppm", (uint64_t)(low * 1e6));
	if (rc) {
		mdb_txn_abort(txn);
		return map_mdb(rc, "write");
	}
	return map_mdb(mdb_txn_commit(txn), "commit");
}

int index_stats(struct index *ix, struct index_stats *out)
{
	MDB_txn *txn;
	MDB_stat st;
	uint64_t cs = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	meta_get_u64(txn, ix->meta, "usage", &out->usage);
	meta_get_u64(txn, ix->meta, "quota", &out->quota);
	meta_get_u64(txn, ix->meta, "hits", &out->hits);
	meta_get_u64(txn, ix->meta, "misses", &out->misses);
	meta_get_u64(txn, ix->meta, "chunk_size", &cs);
	out->chunk_size = (uint32_t)cs;
	meta_get_u64(txn, ix->meta, "high_ppm", &cs);
	out->high = (double)cs / 1e6;
	meta_get_u64(txn, ix->meta, "low_ppm", &cs);
	out->low = (double)cs / 1e6;
	if (mdb_stat(txn, ix->chunks, &st) == 0)
		out->chunks = st.ms_entries;
	if (mdb_stat(txn, ix->objects, &st) == 0)
		out->objects = st.ms_entries;
	mdb_txn_abort(txn);
	return 0;
}

int index_scan_chunks(struct index *ix,
		      int (*cb)(void *arg, const uint8_t *objid, uint32_t chunk,
				const struct index_chunk *rec),
		      void *arg)
{
	struct index_chunk *rec = malloc(sizeof(*rec));
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, d;
	int rc, ret = 0;

	if (!rec)
		return -ENOMEM;
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		free(rec);
		return map_mdb(rc, "read");
	}
	rc = mdb_cursor_open(txn, ix->chunks, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		free(rec);
		return map_mdb(rc, "read");
	}
	for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		struct rec_head h;
		if (k.mv_size != OBJID_LEN + 4 || rec_head_get(&d, &h) < 0)
			continue;
		memcpy(rec, d.mv_data, d.mv_size);
		ret = cb(arg, k.mv_data, key_chunk(k.mv_data), rec);
		if (ret)
			break;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(rec);
	return ret;
}

int index_object_get(struct index *ix, const uint8_t *objid, struct index_object *out)
{
	MDB_val k = {OBJID_LEN, (void *)objid}, d;
	MDB_txn *txn;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return map_mdb(rc, "read");
	rc = mdb_get(txn, ix->objects, &k, &d);
	if (rc == 0 && d.mv_size >= sizeof(struct obj_rec)) {
		struct obj_rec o;
		memcpy(&o, d.mv_data, sizeof(o));
		out->size = o.size;
		out->cached_bytes = o.cached_bytes;
		out->cached_chunks = o.cached_chunks;
		if (o.name_len > sizeof(out->name) - 1 || sizeof(o) + o.name_len > d.mv_size)
			o.name_len = 0;
		memcpy(out->name, (const char *)d.mv_data + sizeof(o), o.name_len);
		out->name[o.name_len] = '\0';
	} else if (rc == 0) {
		rc = MDB_NOTFOUND;
	}
	mdb_txn_abort(txn);
	return map_mdb(rc, "read");
}
