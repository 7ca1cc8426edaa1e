/* The CSI Node service's work (node.h). */
#include "node.h"
#include "scope.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define FUSE_MAGIC 0x65735546
#define TMPFS_MAGIC_ 0x01021994
#define RAMFS_MAGIC_ 0x858458f6
/* a daemon that does not answer a statfs in this long is hung, not dead */
#define PROBE_MS 5000
/* modelfs's start: its store probe (5 s), a listing, the cache's opening */
#define START_MS 120000
/* modelfs's first process waits this long to be let go: scope_join's
 * three steps of 5 s, with room */
#define GO_MS 30000

extern char **environ;

/* One lock per volume: a call mounts, binds and writes the state of its
 * volume under it, so a slow store holds up that volume's calls only. */
struct vlock {
	char id[65];
	pthread_mutex_t m;
	unsigned refs;     /* calls holding or waiting for m (node's lock) */
	unsigned fails;    /* reconcile's repairs failed in a row (m) */
	time_t next_try;   /* reconcile tries again after this, CLOCK_MONOTONIC (m) */
	struct vlock *next; /* (node's lock) */
};

struct node {
	char *node_id, *state_dir, *run_dir, *modelfs, *cache_dir;
	char *systemd;         /* bus address for the daemons' scopes, or NULL */
	int lock_fd;           /* STATE_DIR/.lock, held while this plugin runs */
	pthread_mutex_t lock;  /* the list of volume locks, only */
	struct vlock *vlocks;
};

/* A list of strings, owned. */
struct strv {
	char **v;
	size_t n, cap;
};

static int strv_add(struct strv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int strv_add(struct strv *s, const char *fmt, ...)
{
	va_list ap;
	char *str;
	int r;

	if (s->n + 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	va_start(ap, fmt);
	r = vasprintf(&str, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	s->v[s->n++] = str;
	s->v[s->n] = NULL;
	return 0;
}

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++) {
		OPENSSL_cleanse(s->v[i], strlen(s->v[i])); /* env lines hold secrets */
		free(s->v[i]);
	}
	free(s->v);
	*s = (struct strv){0};
}

static int strv_has(const struct strv *s, const char *str)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], str) == 0)
			return 1;
	return 0;
}

/* What the plugin keeps of one staged volume (STATE_DIR/VOL.json). */
struct vol {
	char id[65]; /* SHA-256 of the volume id, hex: the files' name */
	char *volume_id, *staging;
	struct strv args;    /* modelfs's arguments: SOURCE STAGING -o ... */
	char fingerprint[65]; /* of the arguments and the secrets */
	struct strv targets; /* published at */
};

static void vol_free(struct vol *v)
{
	free(v->volume_id);
	free(v->staging);
	strv_free(&v->args);
	strv_free(&v->targets);
	memset(v, 0, sizeof(*v));
}

static void hex_sha256(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static void vol_path(const struct node *n, const char *id, const char *ext, char *buf,
		     size_t len)
{
	snprintf(buf, len, "%s/%s.%s", strcmp(ext, "env") == 0 ? n->run_dir : n->state_dir, id,
		 ext);
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	time_t t = time(NULL);
	struct tm tm;
	char ts[32];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s modelfs-csi: %s\n", ts, line);
}

/* Write @len bytes to @path through a temporary file, fsync'd, then
 * renamed: a crash leaves the old file or the new one. */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode)
{
	char tmp[4200];
	int fd, err = 0;
	size_t off = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			err = -errno;
			break;
		}
		off += (size_t)w;
	}
	if (!err && fsync(fd) != 0)
		err = -errno;
	close(fd);
	if (!err && rename(tmp, path) != 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

static int vol_save(const struct node *n, const struct vol *v)
{
	json_t *o = json_object(), *args = json_array(), *targets = json_array();
	char path[4200], *text = NULL;
	int err = -ENOMEM;

	if (!o || !args || !targets)
		goto out;
	for (size_t i = 0; i < v->args.n; i++)
		json_array_append_new(args, json_string(v->args.v[i]));
	for (size_t i = 0; i < v->targets.n; i++)
		json_array_append_new(targets, json_string(v->targets.v[i]));
	json_object_set_new(o, "volume_id", json_string(v->volume_id));
	json_object_set_new(o, "staging", json_string(v->staging));
	json_object_set_new(o, "fingerprint", json_string(v->fingerprint));
	json_object_set(o, "args", args);
	json_object_set(o, "targets", targets);
	if (!(text = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS)))
		goto out;
	vol_path(n, v->id, "json", path, sizeof(path));
	err = write_atomic(path, text, strlen(text), 0600);
out:
	free(text);
	json_decref(args);
	json_decref(targets);
	json_decref(o);
	return err;
}

static int json_strv(json_t *a, struct strv *out)
{
	size_t i;
	json_t *e;

	if (!json_is_array(a))
		return -EINVAL;
	json_array_foreach(a, i, e) {
		if (!json_is_string(e) || strv_add(out, "%s", json_string_value(e)))
			return -EINVAL;
	}
	return 0;
}

/* @return 0, -ENOENT (never staged, or unstaged), -EINVAL (a broken file) */
static int vol_load(const struct node *n, const char *id, struct vol *v)
{
	char path[4200];
	json_error_t je;
	json_t *o;
	const char *vid, *staging, *fp;
	int err = -EINVAL;

	memset(v, 0, sizeof(*v));
	vol_path(n, id, "json", path, sizeof(path));
	if (!(o = json_load_file(path, 0, &je)))
		return access(path, F_OK) == 0 ? -EINVAL : -ENOENT;
	vid = json_string_value(json_object_get(o, "volume_id"));
	staging = json_string_value(json_object_get(o, "staging"));
	fp = json_string_value(json_object_get(o, "fingerprint"));
	if (!vid || !staging || !fp || strlen(fp) != 64)
		goto out;
	snprintf(v->id, sizeof(v->id), "%s", id);
	memcpy(v->fingerprint, fp, 65);
	v->volume_id = strdup(vid);
	v->staging = strdup(staging);
	if (!v->volume_id || !v->staging || json_strv(json_object_get(o, "args"), &v->args) ||
	    json_strv(json_object_get(o, "targets"), &v->targets) || v->args.n < 2)
		goto out;
	err = 0;
out:
	json_decref(o);
	if (err)
		vol_free(v);
	return err;
}

static void vol_remove(const struct node *n, const char *id)
{
	char path[4200];

	vol_path(n, id, "env", path, sizeof(path));
	unlink(path);
	vol_path(n, id, "json", path, sizeof(path));
	unlink(path);
}

/* ---- the plugin's children
 *
 * modelfs's first processes (spawn) and statfs probes (mount_state) are
 * waited for by the thread that forked them; the daemons a plugin that is
 * its container's init inherits are reaped by node_reconcile. One table,
 * under its own lock, makes the two agree: a child is entered in it in the
 * same hold of the lock as its fork, so the reaper's waitpid(-1) keeps the
 * status for the thread waiting on it instead of losing it. A probe stuck
 * in the kernel (a FUSE request its daemon has read and never answers is
 * not even killable) is abandoned there and reaped whenever it ends. */

enum kid_state { KID_FREE, KID_RUNNING, KID_DONE, KID_ABANDONED };

static struct {
	pthread_mutex_t lock;
	struct {
		pid_t pid;
		int status;
		enum kid_state state;
	} v[256];
} kids = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* fork(), the child entered in the table; -1 when the table is full. */
static pid_t kid_fork(void)
{
	pid_t pid = -1;
	int slot = -1;

	pthread_mutex_lock(&kids.lock);
	for (int i = 0; i < (int)(sizeof(kids.v) / sizeof(kids.v[0])) && slot < 0; i++)
		if (kids.v[i].state == KID_FREE)
			slot = i;
	if (slot < 0) {
		errno = EAGAIN;
		goto out;
	}
	pid = fork();
	if (pid > 0) {
		kids.v[slot].pid = pid;
		kids.v[slot].state = KID_RUNNING;
	}
out:
	if (pid != 0)
		pthread_mutex_unlock(&kids.lock);
	return pid;
}

static int kid_slot(pid_t pid)
{
	for (int i = 0; i < (int)(sizeof(kids.v) / sizeof(kids.v[0])); i++)
		if (kids.v[i].state != KID_FREE && kids.v[i].pid == pid)
			return i;
	return -1;
}

/* Wait up to @ms for child @pid: 0 with *@status, or -ETIMEDOUT. */
static int kid_wait(pid_t pid, int *status, int ms)
{
	for (int waited = 0;; waited += 10) {
		int st = 0, slot, done = 0;
		pid_t w = waitpid(pid, &st, WNOHANG);

		pthread_mutex_lock(&kids.lock);
		slot = kid_slot(pid);
		if (w == pid || (w < 0 && errno == ECHILD)) {
			if (w != pid && slot >= 0 && kids.v[slot].state == KID_DONE)
				st = kids.v[slot].status; /* the reaper had it */
			if (slot >= 0)
				kids.v[slot].state = KID_FREE;
			done = 1;
		}
		pthread_mutex_unlock(&kids.lock);
		if (done) {
			if (status)
				*status = st;
			return 0;
		}
		if (waited >= ms)
			return -ETIMEDOUT;
		usleep(10000);
	}
}

/* Give up on @pid (killed, and still not gone): the reaper ends it. */
static void kid_abandon(pid_t pid)
{
	pthread_mutex_lock(&kids.lock);
	int slot = kid_slot(pid);
	if (slot >= 0)
		kids.v[slot].state = KID_ABANDONED;
	pthread_mutex_unlock(&kids.lock);
}

/* Reap every child that ended: kept for its waiter, freed if abandoned,
 * dropped if it is not ours (an inherited daemon). */
static void kids_reap(void)
{
	int st;
	pid_t w;

	pthread_mutex_lock(&kids.lock);
	while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
		int slot = kid_slot(w);
		if (slot < 0)
			continue;
		if (kids.v[slot].state == KID_ABANDONED) {
			kids.v[slot].state = KID_FREE;
		} else {
			kids.v[slot].state = KID_DONE;
			kids.v[slot].status = st;
		}
	}
	pthread_mutex_unlock(&kids.lock);
}

/* ---- what is mounted where */

enum mstate { M_NONE, M_LIVE, M_DEAD, M_HUNG };

struct mount_info {
	dev_t dev;
	struct statfs sf;
};

/* Is @path a mount point (/proc/self/mountinfo's fifth field, with its
 * octal escapes)? */
static int is_mount_point(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return 0;
	while (!found && getline(&line, &cap, f) > 0) {
		char mp[4096], *o = mp, *p = line;

		for (int field = 0; field < 4 && p; field++)
			if ((p = strchr(p, ' ')))
				p++;
		if (!p)
			continue;
		while (*p && *p != ' ' && o < mp + sizeof(mp) - 1) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 4;
			} else {
				*o++ = *p++;
			}
		}
		*o = '\0';
		found = strcmp(mp, path) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

/* statfs @path in a child, bounded: a FUSE daemon that is alive but stuck
 * would otherwise stop the plugin with it. @info (may be NULL) gets the
 * mount's device and statfs when it is live. */
static enum mstate mount_state(const char *path, struct mount_info *info)
{
	int p[2];
	pid_t pid;
	struct {
		int err;
		struct mount_info mi;
	} r = {0};
	struct pollfd pfd;
	enum mstate s;
	int got;

	if (pipe2(p, O_CLOEXEC) != 0)
		return M_HUNG;
	pid = kid_fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return M_HUNG;
	}
	if (pid == 0) {
		struct stat st;

		/* a hung mount may keep this child for good: it keeps none of
		 * the plugin's files (its lock, kubelet's socket), only the pipe */
		if (dup2(p[1], STDOUT_FILENO) < 0)
			_exit(1);
		close_range(3, ~0U, 0);
		if (statfs(path, &r.mi.sf) != 0 || stat(path, &st) != 0)
			r.err = errno;
		else
			r.mi.dev = st.st_dev;
		if (write(STDOUT_FILENO, &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	pfd = (struct pollfd){.fd = p[0], .events = POLLIN};
	do
		got = poll(&pfd, 1, PROBE_MS);
	while (got < 0 && errno == EINTR);
	if (got == 1 && read(p[0], &r, sizeof(r)) == (ssize_t)sizeof(r)) {
		if (r.err == ENOTCONN || r.err == ECONNABORTED)
			s = M_DEAD;
		else if (r.err == ENOENT || r.err == ENOTDIR)
			s = M_NONE;
		else if (r.err)
			/* a mount that answers with an error is not ours to
			 * mount over; one that is no mount is nothing */
			s = is_mount_point(path) ? M_HUNG : M_NONE;
		else
			s = r.mi.sf.f_type == FUSE_MAGIC ? M_LIVE : M_NONE;
		if (info && s == M_LIVE)
			*info = r.mi;
	} else {
		kill(pid, SIGKILL);
		s = M_HUNG;
	}
	close(p[0]);
	if (kid_wait(pid, NULL, 200) != 0)
		kid_abandon(pid);
	return s;
}

/* Take whatever is mounted on @path off it (a dead FUSE mount, an old bind). */
static void unmount_all(const char *path)
{
	for (int i = 0; i < 8; i++)
		if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
			break;
}

/* ---- from a request to modelfs's command line */

static const char *kv_get(const struct kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0)
			return kv[i].value;
	return NULL;
}

/* Options as users write them in otherOpts / mountOptions: "-o a,b -o c",
 * "-oa", or "a,b". Each item becomes its own -o. */
static enum csi_code add_opts(struct strv *args, const char *what, const char *text, char *msg,
			      size_t msg_len)
{
	char *copy = strdup(text), *save = NULL, *tok;
	int want_list = 0;
	enum csi_code code = CSI_OK;

	if (!copy)
		return CSI_RESOURCE_EXHAUSTED;
	for (tok = strtok_r(copy, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		char *item, *isave = NULL;

		if (!want_list && strcmp(tok, "-o") == 0) {
			want_list = 1;
			continue;
		}
		if (!want_list && strncmp(tok, "-o", 2) == 0)
			tok += 2;
		else if (!want_list && tok[0] == '-') {
			snprintf(msg, msg_len, "%s: '%s' is not an option (write -o NAME[=VALUE])",
				 what, tok);
			code = CSI_INVALID_ARGUMENT;
			break;
		}
		want_list = 0;
		for (item = strtok_r(tok, ",", &isave); item; item = strtok_r(NULL, ",", &isave))
			if (strv_add(args, "-o") || strv_add(args, "%s", item)) {
				code = CSI_RESOURCE_EXHAUSTED;
				goto out;
			}
	}
	if (code == CSI_OK && want_list) {
		snprintf(msg, msg_len, "%s: -o without options after it", what);
		code = CSI_INVALID_ARGUMENT;
	}
out:
	free(copy);
	return code;
}

static const char *const known_attrs[] = {"source", "bucket", "path",   "url",
					  "otherOpts", "mountOptions", "prefetch", NULL};

/* The attributes, the PV's mountOptions and the plugin's own options as
 * modelfs's arguments: SOURCE STAGING -o ... */
static enum csi_code build_args(const struct node *n, const struct node_req *r, const char *id,
				struct strv *args, char *msg, size_t msg_len)
{
	const char *source = kv_get(r->context, r->n_context, "source");
	const char *bucket = kv_get(r->context, r->n_context, "bucket");
	const char *path = kv_get(r->context, r->n_context, "path");
	const char *url = kv_get(r->context, r->n_context, "url");
	const char *v;
	enum csi_code code;

	for (size_t i = 0; i < r->n_context; i++) {
		size_t k;
		const char *key = r->context[i].key;

		/* what Kubernetes adds itself (podInfoOnMount, the provisioner) */
		if (strncmp(key, "csi.storage.k8s.io/", 19) == 0 ||
		    strncmp(key, "storage.kubernetes.io/", 22) == 0)
			continue;
		for (k = 0; known_attrs[k] && strcmp(known_attrs[k], key) != 0; k++)
			;
		if (!known_attrs[k]) {
			snprintf(msg, msg_len,
				 "volume attribute '%s' is not known here (source, or bucket + path "
				 "+ url; otherOpts, mountOptions, prefetch)",
				 key);
			return CSI_INVALID_ARGUMENT;
		}
	}
	if (source && bucket) {
		snprintf(msg, msg_len, "volume attributes 'source' and 'bucket' both given: one names "
				       "the source");
		return CSI_INVALID_ARGUMENT;
	}
	if (source && (path || url)) {
		snprintf(msg, msg_len, "volume attribute '%s' goes with 'bucket' (ossfs's spelling), "
				       "not 'source'", path ? "path" : "url");
		return CSI_INVALID_ARGUMENT;
	}
	if (!source && !bucket) {
		snprintf(msg, msg_len, "volume attributes need 'source' (s3://BUCKET/PREFIX, "
				       "oss://..., hf://..., https://...) or ossfs's 'bucket'");
		return CSI_INVALID_ARGUMENT;
	}
	if (source && !*source) {
		snprintf(msg, msg_len, "volume attribute 'source' is empty");
		return CSI_INVALID_ARGUMENT;
	}
	if (bucket) {
		while (path && *path == '/')
			path++;
		if (!*bucket || strpbrk(bucket, "/ ")) {
			snprintf(msg, msg_len, "volume attribute 'bucket' is not a bucket name: '%s'",
				 bucket);
			return CSI_INVALID_ARGUMENT;
		}
		if (strv_add(args, "oss://%s%s%s", bucket, path && *path ? "/" : "",
			     path ? path : ""))
			return CSI_RESOURCE_EXHAUSTED;
	} else if (strv_add(args, "%s", source)) {
		return CSI_RESOURCE_EXHAUSTED;
	}
	if (strv_add(args, "%s", r->staging))
		return CSI_RESOURCE_EXHAUSTED;
	/* the plugin's own: pods run as any user; one cache for the node;
	 * the daemon's log beside the state (there is no terminal) */
	if (strv_add(args, "-o") || strv_add(args, "allow_other") || strv_add(args, "-o") ||
	    strv_add(args, "log_file=%s/%s.log", n->state_dir, id))
		return CSI_RESOURCE_EXHAUSTED;
	if (n->cache_dir && (strv_add(args, "-o") || strv_add(args, "cache_dir=%s", n->cache_dir)))
		return CSI_RESOURCE_EXHAUSTED;
	if (url && (strv_add(args, "-o") || strv_add(args, "url=%s", url)))
		return CSI_RESOURCE_EXHAUSTED;
	for (size_t i = 0; i < r->n_mount_flags; i++)
		if ((code = add_opts(args, "the PV's mountOptions", r->mount_flags[i], msg, msg_len)))
			return code;
	if ((v = kv_get(r->context, r->n_context, "otherOpts")) &&
	    (code = add_opts(args, "volume attribute otherOpts", v, msg, msg_len)))
		return code;
	if ((v = kv_get(r->context, r->n_context, "mountOptions")) &&
	    (code = add_opts(args, "volume attribute mountOptions", v, msg, msg_len)))
		return code;
	if ((v = kv_get(r->context, r->n_context, "prefetch")) &&
	    (strv_add(args, "-o") || strv_add(args, "prefetch=%s", v)))
		return CSI_RESOURCE_EXHAUSTED;
	return CSI_OK;
}

/* Secrets under the names users put in them, as the variables modelfs's
 * backends read. ossfs's names mean the source's keys: OSS for oss://,
 * AWS's for anything else (an S3-compatible store). */
static const struct secret_name {
	const char *key;
	const char *oss, *other; /* the variable; NULL: the same as key */
} secret_names[] = {
    {"akId", "OSS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"},
    {"akSecret", "OSS_ACCESS_KEY_SECRET", "AWS_SECRET_ACCESS_KEY"},
    {"fs.oss.accessKeyId", "OSS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"},
    {"fs.oss.accessKeySecret", "OSS_ACCESS_KEY_SECRET", "AWS_SECRET_ACCESS_KEY"},
    {"fs.oss.securityToken", "OSS_SESSION_TOKEN", "AWS_SESSION_TOKEN"},
    {"AWS_ACCESS_KEY_ID", NULL, NULL},
    {"AWS_SECRET_ACCESS_KEY", NULL, NULL},
    {"AWS_SESSION_TOKEN", NULL, NULL},
    {"OSS_ACCESS_KEY_ID", NULL, NULL},
    {"OSS_ACCESS_KEY_SECRET", NULL, NULL},
    {"OSS_SESSION_TOKEN", NULL, NULL},
    {"ALIBABA_CLOUD_ACCESS_KEY_ID", NULL, NULL},
    {"ALIBABA_CLOUD_ACCESS_KEY_SECRET", NULL, NULL},
    {"ALIBABA_CLOUD_SECURITY_TOKEN", NULL, NULL},
    {"HF_TOKEN", NULL, NULL},
};

/* The pairs that make no sense alone. */
static const char *const secret_pairs[][2] = {
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    {"OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"},
    {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"},
};

static int env_has(const struct strv *env, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < env->n; i++)
		if (strncmp(env->v[i], name, len) == 0 && env->v[i][len] == '=')
			return 1;
	return 0;
}

/* KEY=VALUE lines for the daemon's environment. Never logs a value. */
static enum csi_code build_env(const struct node_req *r, const char *source, struct strv *env,
			       char *msg, size_t msg_len)
{
	int oss = strncmp(source, "oss://", 6) == 0;

	for (size_t i = 0; i < r->n_secrets; i++) {
		const char *key = r->secrets[i].key, *val = r->secrets[i].value, *var = NULL;
		size_t k;

		for (k = 0; k < sizeof(secret_names) / sizeof(secret_names[0]); k++)
			if (strcmp(secret_names[k].key, key) == 0)
				break;
		if (k == sizeof(secret_names) / sizeof(secret_names[0])) {
			log_line("volume %s: secret key '%s' is not one modelfs reads: ignored",
				 r->volume_id, key);
			continue;
		}
		var = oss ? secret_names[k].oss : secret_names[k].other;
		if (!var)
			var = key;
		if (!*val || strpbrk(val, "\r\n")) {
			snprintf(msg, msg_len, "secret '%s' is empty or more than one line", key);
			return CSI_INVALID_ARGUMENT;
		}
		if (env_has(env, var)) {
			snprintf(msg, msg_len, "secret '%s' gives %s a second time (two spellings of "
					       "one key)", key, var);
			return CSI_INVALID_ARGUMENT;
		}
		if (strv_add(env, "%s=%s", var, val))
			return CSI_RESOURCE_EXHAUSTED;
	}
	for (size_t i = 0; i < sizeof(secret_pairs) / sizeof(secret_pairs[0]); i++)
		if (env_has(env, secret_pairs[i][0]) != env_has(env, secret_pairs[i][1])) {
			int a = env_has(env, secret_pairs[i][0]);
			snprintf(msg, msg_len,
				 "the secrets give %s but not %s (akId and akSecret go together)",
				 secret_pairs[i][a ? 0 : 1], secret_pairs[i][a ? 1 : 0]);
			return CSI_INVALID_ARGUMENT;
		}
	return CSI_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* @env sorted: a map's entries come in any order (each client's hash seed). */
static void fingerprint(const struct strv *args, const struct strv *env, char out[65])
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned char md[32];
	unsigned int mdlen = 0;

	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	for (size_t i = 0; i < args->n; i++)
		EVP_DigestUpdate(c, args->v[i], strlen(args->v[i]) + 1);
	EVP_DigestUpdate(c, "--", 3);
	for (size_t i = 0; i < env->n; i++)
		EVP_DigestUpdate(c, env->v[i], strlen(env->v[i]) + 1);
	EVP_DigestFinal_ex(c, md, &mdlen);
	EVP_MD_CTX_free(c);
	for (unsigned i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static int env_save(const struct node *n, const char *id, const struct strv *env)
{
	char path[4200], *text;
	size_t len = 0, at = 0;
	int err;

	for (size_t i = 0; i < env->n; i++)
		len += strlen(env->v[i]) + 1;
	if (!(text = malloc(len + 1)))
		return -ENOMEM;
	for (size_t i = 0; i < env->n; i++)
		at += (size_t)sprintf(text + at, "%s\n", env->v[i]);
	vol_path(n, id, "env", path, sizeof(path));
	err = write_atomic(path, text, at, 0600);
	OPENSSL_cleanse(text, len);
	free(text);
	return err;
}

static int env_load(const struct node *n, const char *id, struct strv *env)
{
	char path[4200], *line = NULL;
	size_t cap = 0;
	FILE *f;
	int err = 0;

	vol_path(n, id, "env", path, sizeof(path));
	if (!(f = fopen(path, "re")))
		return errno == ENOENT ? 0 : -errno;
	/* getline: a line as long as the secret (a session token is kilobytes) */
	while (getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		if (*line && strchr(line, '=') && strv_add(env, "%s", line)) {
			err = -ENOMEM;
			break;
		}
	}
	if (line)
		OPENSSL_cleanse(line, cap);
	free(line);
	fclose(f);
	return err;
}

/* ---- running modelfs */

static enum csi_code code_of_exit(int status)
{
	switch (status) {
	case 2:
		return CSI_INVALID_ARGUMENT; /* a bad option or source */
	case 3:
		return CSI_NOT_FOUND; /* no such bucket or prefix */
	case 4:
		return CSI_PERMISSION_DENIED; /* the store refused the credentials */
	case 5:
		return CSI_UNAVAILABLE; /* the store cannot be reached */
	default:
		return CSI_INTERNAL;
	}
}

/* Plain ASCII: what a D-Bus string (UTF-8) always takes. */
static int printable(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return 0;
	return 1;
}

/* Mount @v: run modelfs with the volume's secrets in its environment (the
 * plugin's own environment beneath them, for pod credentials). modelfs's
 * first process exits once the mount is up or with one line of why not;
 * its daemon lives on in a session of its own, not the plugin's child.
 * With systemd's bus, the child waits on @go until it is in a scope of its
 * own, so that the daemon it forks is never in the plugin's cgroup. */
static enum csi_code spawn(const struct node *n, const struct vol *v, char *msg, size_t msg_len)
{
	struct strv argv = {0}, envp = {0}, secrets = {0};
	enum csi_code code = CSI_RESOURCE_EXHAUSTED;
	char line[1200] = "";
	int p[2] = {-1, -1}, go[2] = {-1, -1}, status = 0;
	pid_t pid;
	ssize_t got;

	if (env_load(n, v->id, &secrets) != 0) {
		snprintf(msg, msg_len, "cannot read the volume's secrets in %s", n->run_dir);
		return CSI_INTERNAL;
	}
	if (strv_add(&argv, "%s", n->modelfs))
		goto out;
	for (size_t i = 0; i < v->args.n; i++)
		if (strv_add(&argv, "%s", v->args.v[i]))
			goto out;
	for (size_t i = 0; i < secrets.n; i++)
		if (strv_add(&envp, "%s", secrets.v[i]))
			goto out;
	for (char **e = environ; *e; e++) {
		const char *eq = strchr(*e, '=');
		char name[256];

		if (!eq || (size_t)(eq - *e) >= sizeof(name))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
		if (!env_has(&secrets, name) && strv_add(&envp, "%s", *e))
			goto out;
	}
	if (pipe2(p, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0)
		goto out;
	pid = kid_fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		static const char cannot[] = "modelfs: cannot run the modelfs binary\n";
		struct pollfd go_in = {.fd = STDIN_FILENO, .events = POLLIN};
		sigset_t none;
		char b = 0;
		int nul, r;

		/* only async-signal-safe calls here: the plugin has threads. First
		 * of all, keep none of the plugin's files (its lock, kubelet's
		 * socket, another spawn's pipes) while waiting: the go pipe as
		 * stdin, the answer pipe as stderr */
		if (dup2(go[0], STDIN_FILENO) < 0 || dup2(p[1], STDERR_FILENO) < 0)
			_exit(1);
		close_range(3, ~0U, 0);
		signal(SIGTERM, SIG_DFL); /* not the plugin's handlers, which only set a flag */
		signal(SIGINT, SIG_DFL);
		signal(SIGPIPE, SIG_DFL); /* execve keeps an ignored signal ignored */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* bounded: a plugin gone before its 'g' leaves no child waiting */
		while ((r = poll(&go_in, 1, GO_MS)) < 0 && errno == EINTR)
			;
		if (r != 1 || read(STDIN_FILENO, &b, 1) != 1 || b != 'g')
			_exit(1); /* the plugin could not put us in a scope, or died */
		if ((nul = open("/dev/null", O_RDWR)) >= 0) {
			dup2(nul, STDIN_FILENO);
			dup2(nul, STDOUT_FILENO);
			if (nul > STDERR_FILENO)
				close(nul);
		}
		execve(n->modelfs, argv.v, envp.v);
		if (write(STDERR_FILENO, cannot, sizeof(cannot) - 1) < 0)
			_exit(1);
		_exit(1);
	}
	close(p[1]);
	close(go[0]);
	p[1] = go[0] = -1;
	if (n->systemd) {
		char unit[64], desc[300];

		snprintf(unit, sizeof(unit), "modelfs-%.12s-%d.scope", v->id, (int)pid);
		snprintf(desc, sizeof(desc), "modelfs: the CSI volume staged at %s",
			 printable(v->staging) ? v->staging : v->id);
		if (scope_join(n->systemd, pid, unit, desc, msg, msg_len) != 0) {
			kill(pid, SIGKILL);
			if (kid_wait(pid, &status, 1000) != 0)
				kid_abandon(pid);
			code = CSI_UNAVAILABLE;
			goto out;
		}
	}
	if (write(go[1], "g", 1) != 1) {
		/* it is gone already: its status says how */
	}
	close(go[1]);
	go[1] = -1;
	if (kid_wait(pid, &status, START_MS) != 0) {
		kill(pid, SIGKILL);
		if (kid_wait(pid, &status, 1000) != 0)
			kid_abandon(pid);
		unmount_all(v->staging);
		snprintf(msg, msg_len, "modelfs did not mount %s within %d s", v->args.v[0],
			 START_MS / 1000);
		code = CSI_DEADLINE_EXCEEDED;
		goto out;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	got = read(p[0], line, sizeof(line) - 1);
	line[got > 0 ? got : 0] = '\0';
	line[strcspn(line, "\n")] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		code = CSI_OK;
		goto out;
	}
	code = WIFEXITED(status) ? code_of_exit(WEXITSTATUS(status)) : CSI_INTERNAL;
	snprintf(msg, msg_len, "mounting %s: %s", v->args.v[0],
		 *line ? (strncmp(line, "modelfs: ", 9) == 0 ? line + 9 : line)
		       : "modelfs failed without a word");
out:
	if (code == CSI_RESOURCE_EXHAUSTED && !*msg)
		snprintf(msg, msg_len, "cannot run modelfs: %s", strerror(errno));
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	if (go[0] >= 0)
		close(go[0]);
	if (go[1] >= 0)
		close(go[1]);
	strv_free(&argv);
	strv_free(&envp);
	strv_free(&secrets);
	return code;
}

/* Bind the live staging mount to @target, read-only. */
static int bind_target(const char *staging, const char *target)
{
	if (mkdir(target, 0750) != 0 && errno != EEXIST)
		return -errno;
	if (mount(staging, target, NULL, MS_BIND, NULL) != 0)
		return -errno;
	if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
		  NULL) != 0) {
		int err = -errno;
		umount2(target, MNT_DETACH);
		return err;
	}
	return 0;
}

/* Make @v's mounts right: the staging mount live (mounted again if it is
 * dead or gone), each target bound to it. *@changed: the state changed. */
static enum csi_code repair(struct node *n, struct vol *v, int *repaired, char *msg,
			    size_t msg_len)
{
	struct mount_info sm = {0}, tm;
	enum mstate s = mount_state(v->staging, &sm);
	enum csi_code code;
	struct strv keep = {0};
	int changed = 0;

	*repaired = 0;
	if (s == M_HUNG) {
		snprintf(msg, msg_len, "the mount at %s does not answer (left alone)", v->staging);
		return CSI_UNAVAILABLE;
	}
	if (s != M_LIVE) {
		if (s == M_DEAD)
			unmount_all(v->staging);
		if (mkdir(v->staging, 0750) != 0 && errno != EEXIST) {
			snprintf(msg, msg_len, "staging path %s: %s", v->staging, strerror(errno));
			return CSI_INTERNAL;
		}
		if ((code = spawn(n, v, msg, msg_len)))
			return code;
		if (mount_state(v->staging, &sm) != M_LIVE) {
			snprintf(msg, msg_len, "modelfs said it mounted %s, but it is not there",
				 v->staging);
			return CSI_INTERNAL;
		}
		*repaired = 1;
	}
	for (size_t i = 0; i < v->targets.n; i++) {
		const char *t = v->targets.v[i];
		struct stat st;
		enum mstate ts = mount_state(t, &tm);

		if (ts == M_LIVE && tm.dev == sm.dev) {
			strv_add(&keep, "%s", t);
			continue;
		}
		if (ts == M_NONE && lstat(t, &st) != 0 && errno == ENOENT) {
			changed = 1; /* the pod and its directory are gone */
			continue;
		}
		if (ts != M_NONE)
			unmount_all(t);
		if (bind_target(v->staging, t) != 0) {
			log_line("volume %s: cannot bind %s again: %s", v->volume_id, t,
				 strerror(errno));
			changed = 1;
			continue;
		}
		strv_add(&keep, "%s", t);
		*repaired = 1;
	}
	if (changed || *repaired) {
		strv_free(&v->targets);
		v->targets = keep;
		keep = (struct strv){0};
		vol_save(n, v);
	}
	strv_free(&keep);
	return CSI_OK;
}

/* ---- the service */

static struct vlock *vol_lock(struct node *n, const char *id)
{
	struct vlock *l;

	pthread_mutex_lock(&n->lock);
	for (l = n->vlocks; l && strcmp(l->id, id) != 0; l = l->next)
		;
	if (!l && (l = calloc(1, sizeof(*l)))) {
		snprintf(l->id, sizeof(l->id), "%s", id);
		pthread_mutex_init(&l->m, NULL);
		l->next = n->vlocks;
		n->vlocks = l;
	}
	if (l)
		l->refs++;
	pthread_mutex_unlock(&n->lock);
	if (l)
		pthread_mutex_lock(&l->m);
	return l;
}

/* Let go of @l; forgotten when nobody waits for it and it has no backoff. */
static void vol_unlock(struct node *n, struct vlock *l)
{
	int forget = !l->fails;

	pthread_mutex_unlock(&l->m);
	pthread_mutex_lock(&n->lock);
	if (--l->refs == 0 && forget) {
		struct vlock **pp = &n->vlocks;
		while (*pp != l)
			pp = &(*pp)->next;
		*pp = l->next;
		pthread_mutex_destroy(&l->m);
		free(l);
	}
	pthread_mutex_unlock(&n->lock);
}


static int abs_path(const char *p)
{
	return p && p[0] == '/' && !strstr(p, "/../") && strlen(p) < 4000;
}

static enum csi_code check_capability(const struct node_req *r, char *msg, size_t msg_len)
{
	if (!r->has_capability) {
		snprintf(msg, msg_len, "volume_capability is missing");
		return CSI_INVALID_ARGUMENT;
	}
	if (r->block) {
		snprintf(msg, msg_len, "modelfs volumes are filesystems: block access is not served");
		return CSI_INVALID_ARGUMENT;
	}
	/* 2 SINGLE_NODE_READER_ONLY, 3 MULTI_NODE_READER_ONLY */
	if (r->access_mode != 2 && r->access_mode != 3) {
		snprintf(msg, msg_len,
			 "modelfs volumes are read-only: access mode %d is not served (give the "
			 "PV accessModes: [ReadOnlyMany])",
			 r->access_mode);
		return CSI_INVALID_ARGUMENT;
	}
	return CSI_OK;
}

enum csi_code node_stage(struct node *n, const struct node_req *r, char *msg, size_t msg_len)
{
	struct vol v = {0}, old;
	struct strv env = {0};
	enum csi_code code;
	int have, repaired, err;
	struct vlock *l;

	if (!r->volume_id || !*r->volume_id) {
		snprintf(msg, msg_len, "volume_id is missing");
		return CSI_INVALID_ARGUMENT;
	}
	if (!abs_path(r->staging)) {
		snprintf(msg, msg_len, "staging_target_path is missing or not an absolute path");
		return CSI_INVALID_ARGUMENT;
	}
	if ((code = check_capability(r, msg, msg_len)))
		return code;
	hex_sha256(r->volume_id, strlen(r->volume_id), v.id);
	if ((code = build_args(n, r, v.id, &v.args, msg, msg_len)) ||
	    (code = build_env(r, v.args.v[0], &env, msg, msg_len)))
		goto out_free;
	if (env.n)
		qsort(env.v, env.n, sizeof(env.v[0]), cmp_str);
	fingerprint(&v.args, &env, v.fingerprint);
	if (!(v.volume_id = strdup(r->volume_id)) || !(v.staging = strdup(r->staging))) {
		code = CSI_RESOURCE_EXHAUSTED;
		goto out_free;
	}

	if (!(l = vol_lock(n, v.id))) {
		code = CSI_RESOURCE_EXHAUSTED;
		goto out_free;
	}
	have = vol_load(n, v.id, &old);
	if (have == 0) {
		if (strcmp(old.staging, r->staging) != 0) {
			snprintf(msg, msg_len, "volume %s is staged at %s already", r->volume_id,
				 old.staging);
			code = CSI_ALREADY_EXISTS;
		} else if (strcmp(old.fingerprint, v.fingerprint) != 0 &&
			   mount_state(r->staging, NULL) == M_LIVE) {
			snprintf(msg, msg_len, "volume %s is staged at %s with other attributes or "
					       "secrets: unstage it first", r->volume_id, r->staging);
			code = CSI_ALREADY_EXISTS;
		} else {
			/* the same again: done, or made right if its daemon died.
			 * The secrets are the request's (a reboot emptied the
			 * tmpfs; kubelet may give rotated ones), and so is the
			 * command line when nothing is mounted */
			if ((err = env_save(n, v.id, &env))) {
				snprintf(msg, msg_len, "cannot keep the volume's secrets: %s",
					 strerror(-err));
				code = CSI_INTERNAL;
				vol_free(&old);
				goto out_unlock;
			}
			if (strcmp(old.fingerprint, v.fingerprint) != 0) {
				strv_free(&old.args);
				old.args = v.args;
				v.args = (struct strv){0};
				memcpy(old.fingerprint, v.fingerprint, sizeof(old.fingerprint));
				vol_save(n, &old);
			}
			code = repair(n, &old, &repaired, msg, msg_len);
			if (repaired)
				log_line("volume %s: its mount at %s was dead: mounted again",
					 r->volume_id, r->staging);
		}
		vol_free(&old);
		goto out_unlock;
	}
	/* mkdir, not stat: it does not call into a mount there (a hung one) */
	if (mkdir(r->staging, 0750) != 0 && errno != EEXIST) {
		snprintf(msg, msg_len, "staging path %s: %s", r->staging, strerror(errno));
		code = CSI_FAILED_PRECONDITION;
		goto out_unlock;
	}
	switch (mount_state(r->staging, NULL)) {
	case M_LIVE:
		snprintf(msg, msg_len, "staging path %s has a mount that is not this volume's",
			 r->staging);
		code = CSI_ALREADY_EXISTS;
		goto out_unlock;
	case M_DEAD:
		unmount_all(r->staging);
		break;
	case M_HUNG:
		snprintf(msg, msg_len, "staging path %s has a mount that does not answer",
			 r->staging);
		code = CSI_UNAVAILABLE;
		goto out_unlock;
	case M_NONE:
		break;
	}
	/* state first: a crash from here on leaves a file reconcile knows */
	if ((err = env_save(n, v.id, &env)) || (err = vol_save(n, &v))) {
		snprintf(msg, msg_len, "cannot keep the volume's state: %s", strerror(-err));
		vol_remove(n, v.id);
		code = CSI_INTERNAL;
		goto out_unlock;
	}
	if ((code = spawn(n, &v, msg, msg_len))) {
		vol_remove(n, v.id); /* nothing half-made: modelfs leaves no mount */
		goto out_unlock;
	}
	log_line("volume %s: staged at %s (%s)", r->volume_id, r->staging, v.args.v[0]);
out_unlock:
	if (code == CSI_OK)
		l->fails = 0;
	vol_unlock(n, l);
out_free:
	strv_free(&env);
	vol_free(&v);
	return code;
}

enum csi_code node_unstage(struct node *n, const char *volume_id, const char *staging, char *msg,
			   size_t msg_len)
{
	char id[65];
	struct vol v;
	enum csi_code code = CSI_OK;
	enum mstate s;
	struct vlock *l;

	if (!volume_id || !*volume_id) {
		snprintf(msg, msg_len, "volume_id is missing");
		return CSI_INVALID_ARGUMENT;
	}
	if (!abs_path(staging)) {
		snprintf(msg, msg_len, "staging_target_path is missing or not an absolute path");
		return CSI_INVALID_ARGUMENT;
	}
	hex_sha256(volume_id, strlen(volume_id), id);
	if (!(l = vol_lock(n, id))) {
		snprintf(msg, msg_len, "out of memory");
		return CSI_RESOURCE_EXHAUSTED;
	}
	if (vol_load(n, id, &v) == 0) {
		if (strcmp(v.staging, staging) != 0) {
			/* not staged there: nothing to do there, and the
			 * volume's own mount is not this call's to take */
			log_line("volume %s: unstage from %s, but it is staged at %s: left alone",
				 volume_id, staging, v.staging);
			vol_free(&v);
			goto out;
		}
		for (size_t i = 0; i < v.targets.n; i++) {
			enum mstate ts = mount_state(v.targets.v[i], NULL);
			if (ts != M_NONE) {
				snprintf(msg, msg_len, "volume %s is still published at %s: "
						       "unpublish it first", volume_id, v.targets.v[i]);
				code = CSI_FAILED_PRECONDITION;
				vol_free(&v);
				goto out;
			}
		}
		vol_free(&v);
	}
	s = mount_state(staging, NULL);
	if (s != M_NONE && umount2(staging, UMOUNT_NOFOLLOW) != 0)
		unmount_all(staging); /* busy or dead: off the tree now, gone when let go */
	if (mount_state(staging, NULL) == M_LIVE) {
		snprintf(msg, msg_len, "cannot unmount %s", staging);
		code = CSI_INTERNAL;
		goto out;
	}
	vol_remove(n, id);
	l->fails = 0;
	if (s != M_NONE)
		log_line("volume %s: unstaged from %s", volume_id, staging);
out:
	vol_unlock(n, l);
	return code;
}

enum csi_code node_publish(struct node *n, const struct node_req *r, char *msg, size_t msg_len)
{
	char id[65];
	struct vol v;
	enum csi_code code;
	struct mount_info sm = {0}, tm = {0};
	enum mstate ts;
	int repaired, err, made = 0, added = 0;
	struct stat st;
	struct vlock *l;

	if (!r->volume_id || !*r->volume_id) {
		snprintf(msg, msg_len, "volume_id is missing");
		return CSI_INVALID_ARGUMENT;
	}
	if (!abs_path(r->staging)) {
		snprintf(msg, msg_len, "staging_target_path is missing (the plugin stages volumes)");
		return CSI_FAILED_PRECONDITION;
	}
	if (!abs_path(r->target)) {
		snprintf(msg, msg_len, "target_path is missing or not an absolute path");
		return CSI_INVALID_ARGUMENT;
	}
	if ((code = check_capability(r, msg, msg_len)))
		return code;
	hex_sha256(r->volume_id, strlen(r->volume_id), id);
	if (!(l = vol_lock(n, id))) {
		snprintf(msg, msg_len, "out of memory");
		return CSI_RESOURCE_EXHAUSTED;
	}
	if (vol_load(n, id, &v) != 0) {
		snprintf(msg, msg_len, "volume %s is not staged on this node", r->volume_id);
		code = CSI_FAILED_PRECONDITION;
		goto out_unlock;
	}
	if (strcmp(v.staging, r->staging) != 0) {
		snprintf(msg, msg_len, "volume %s is staged at %s, not %s", r->volume_id, v.staging,
			 r->staging);
		code = CSI_FAILED_PRECONDITION;
		goto out;
	}
	if ((code = repair(n, &v, &repaired, msg, msg_len)))
		goto out;
	mount_state(v.staging, &sm);
	ts = mount_state(r->target, &tm);
	if (ts == M_LIVE && tm.dev == sm.dev) {
		code = CSI_OK; /* published there already */
		if (!strv_has(&v.targets, r->target) && strv_add(&v.targets, "%s", r->target) == 0)
			vol_save(n, &v);
		goto out;
	}
	if (ts == M_LIVE || ts == M_HUNG) {
		snprintf(msg, msg_len, "target %s has another mount", r->target);
		code = CSI_ALREADY_EXISTS;
		goto out;
	}
	if (ts == M_DEAD)
		unmount_all(r->target);
	made = lstat(r->target, &st) != 0;
	/* the target is in the state before it is mounted: reconcile and
	 * unpublish then know it, whatever happens next */
	if (!strv_has(&v.targets, r->target)) {
		if (strv_add(&v.targets, "%s", r->target) || vol_save(n, &v)) {
			snprintf(msg, msg_len, "cannot keep the volume's state");
			code = CSI_INTERNAL;
			goto out;
		}
		added = 1;
	}
	if ((err = bind_target(v.staging, r->target))) {
		snprintf(msg, msg_len, "bind mount of %s at %s: %s", v.staging, r->target,
			 strerror(-err));
		if (made)
			rmdir(r->target);
		if (added) { /* not published: not in the state either */
			free(v.targets.v[--v.targets.n]);
			v.targets.v[v.targets.n] = NULL;
			vol_save(n, &v);
		}
		code = CSI_INTERNAL;
		goto out;
	}
	log_line("volume %s: published at %s", r->volume_id, r->target);
out:
	vol_free(&v);
out_unlock:
	vol_unlock(n, l);
	return code;
}

enum csi_code node_unpublish(struct node *n, const char *volume_id, const char *target,
			     char *msg, size_t msg_len)
{
	char id[65];
	struct vol v;
	enum csi_code code = CSI_OK;
	enum mstate ts;
	struct vlock *l;

	if (!volume_id || !*volume_id) {
		snprintf(msg, msg_len, "volume_id is missing");
		return CSI_INVALID_ARGUMENT;
	}
	if (!abs_path(target)) {
		snprintf(msg, msg_len, "target_path is missing or not an absolute path");
		return CSI_INVALID_ARGUMENT;
	}
	hex_sha256(volume_id, strlen(volume_id), id);
	if (!(l = vol_lock(n, id))) {
		snprintf(msg, msg_len, "out of memory");
		return CSI_RESOURCE_EXHAUSTED;
	}
	ts = mount_state(target, NULL);
	if (ts != M_NONE && umount2(target, UMOUNT_NOFOLLOW) != 0)
		unmount_all(target);
	if (mount_state(target, NULL) != M_NONE) {
		snprintf(msg, msg_len, "cannot unmount %s", target);
		code = CSI_INTERNAL;
		goto out;
	}
	if (rmdir(target) != 0 && errno != ENOENT && errno != ENOTDIR) {
		snprintf(msg, msg_len, "cannot remove %s: %s", target, strerror(errno));
		code = CSI_INTERNAL;
		goto out;
	}
	if (vol_load(n, id, &v) == 0) {
		struct strv keep = {0};
		for (size_t i = 0; i < v.targets.n; i++)
			if (strcmp(v.targets.v[i], target) != 0)
				strv_add(&keep, "%s", v.targets.v[i]);
		strv_free(&v.targets);
		v.targets = keep;
		vol_save(n, &v);
		vol_free(&v);
	}
	if (ts != M_NONE)
		log_line("volume %s: unpublished from %s", volume_id, target);
out:
	vol_unlock(n, l);
	return code;
}

enum csi_code node_stats(struct node *n, const char *volume_id, const char *path,
			 struct node_usage *out, char *msg, size_t msg_len)
{
	struct mount_info mi = {0};
	enum mstate s;

	memset(out, 0, sizeof(*out));
	if (!volume_id || !*volume_id || !abs_path(path)) {
		snprintf(msg, msg_len, "volume_id and an absolute volume_path are needed");
		return CSI_INVALID_ARGUMENT;
	}
	s = mount_state(path, &mi);
	if (s == M_DEAD || s == M_HUNG) {
		out->abnormal = 1;
		snprintf(out->condition, sizeof(out->condition),
			 s == M_DEAD ? "the modelfs daemon of this mount is gone (the plugin mounts "
				       "it again)"
				     : "the modelfs daemon of this mount does not answer");
		return CSI_OK;
	}
	if (s == M_NONE) {
		snprintf(msg, msg_len, "%s is not a modelfs mount", path);
		return CSI_NOT_FOUND;
	}
	/* the probe's statfs: a second call here could be the one that hangs */
	out->bytes_total = (int64_t)(mi.sf.f_blocks * mi.sf.f_frsize);
	out->bytes_available = (int64_t)(mi.sf.f_bavail * mi.sf.f_frsize);
	out->bytes_used = (int64_t)((mi.sf.f_blocks - mi.sf.f_bfree) * mi.sf.f_frsize);
	out->inodes_total = (int64_t)mi.sf.f_files;
	out->inodes_available = (int64_t)mi.sf.f_ffree;
	out->inodes_used = (int64_t)(mi.sf.f_files - mi.sf.f_ffree);
	return CSI_OK;
}

/* a volume whose repair failed is tried again after 10, 20, 40 ... 300 s:
 * a store that is down is not asked every tick, one mount start at a time */
#define RETRY_MIN_S 10
#define RETRY_MAX_S 300

void node_reconcile(struct node *n, int verbose)
{
	DIR *d;
	struct dirent *e;

	kids_reap(); /* ended daemons, when the plugin is its container's init */
	if (!(d = opendir(n->state_dir)))
		return;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		char id[65], msg[1024] = "";
		struct vlock *l;
		struct timespec now;
		struct vol v;
		int repaired = 0;
		enum csi_code code;

		if (len != 64 + 5 || strcmp(e->d_name + 64, ".json") != 0)
			continue;
		snprintf(id, sizeof(id), "%.64s", e->d_name);
		if (!(l = vol_lock(n, id)))
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (l->fails && now.tv_sec < l->next_try)
			goto next;
		if (vol_load(n, id, &v) != 0) {
			/* gone meanwhile (unstaged), or unreadable */
			if (faccessat(dirfd(d), e->d_name, F_OK, 0) == 0)
				log_line("state file %s/%s cannot be read: left alone", n->state_dir,
					 e->d_name);
			goto next;
		}
		code = repair(n, &v, &repaired, msg, sizeof(msg));
		if (code) {
			unsigned wait = RETRY_MIN_S << (l->fails < 5 ? l->fails : 5);
			if (wait > RETRY_MAX_S)
				wait = RETRY_MAX_S;
			l->fails++;
			l->next_try = now.tv_sec + wait;
			log_line("volume %s: cannot repair its mount at %s: %s (again in %u s)",
				 v.volume_id, v.staging, msg, wait);
		} else {
			l->fails = 0;
			if (repaired)
				log_line("volume %s: repaired: %s mounted again, %zu target(s) bound",
					 v.volume_id, v.staging, v.targets.n);
			else if (verbose)
				log_line("volume %s: healthy at %s, %zu target(s)", v.volume_id,
					 v.staging, v.targets.n);
		}
		vol_free(&v);
	next:
		vol_unlock(n, l);
	}
	closedir(d);
}

static int make_dir(const char *path, mode_t mode, char *msg, size_t msg_len, const char *what)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	if (mkdir(buf, mode) != 0 && errno != EEXIST) {
		snprintf(msg, msg_len, "%s %s: %s", what, path, strerror(errno));
		return -errno;
	}
	chmod(buf, mode);
	return 0;
}

int node_open(const struct node_config *cfg, struct node **out, char *msg, size_t msg_len)
{
	struct node *n;
	struct statfs sf;
	char lock_path[4200];

	if (!cfg->node_id || !*cfg->node_id) {
		snprintf(msg, msg_len, "--node-id is needed (the Kubernetes node's name)");
		return -EINVAL;
	}
	if (access(cfg->modelfs, X_OK) != 0) {
		snprintf(msg, msg_len, "--modelfs %s: %s", cfg->modelfs, strerror(errno));
		return -ENOENT;
	}
	if (!abs_path(cfg->state_dir) || !abs_path(cfg->run_dir) ||
	    (cfg->cache_dir && !abs_path(cfg->cache_dir))) {
		snprintf(msg, msg_len, "--state-dir, --run-dir and --cache-dir take absolute paths");
		return -EINVAL;
	}
	if (make_dir(cfg->state_dir, 0700, msg, msg_len, "--state-dir") ||
	    make_dir(cfg->run_dir, 0700, msg, msg_len, "--run-dir"))
		return -EIO;
	if (statfs(cfg->run_dir, &sf) != 0 ||
	    (sf.f_type != TMPFS_MAGIC_ && sf.f_type != RAMFS_MAGIC_)) {
		snprintf(msg, msg_len, "--run-dir %s is not on a tmpfs: the volumes' secrets "
				       "would be written to a disk", cfg->run_dir);
		return -EINVAL;
	}
	if (!(n = calloc(1, sizeof(*n))))
		return -ENOMEM;
	/* one plugin per state dir: a second one (an upgrade's new pod while
	 * the old one ends) waits here, before it binds kubelet's socket */
	snprintf(lock_path, sizeof(lock_path), "%s/.lock", cfg->state_dir);
	n->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (n->lock_fd < 0) {
		snprintf(msg, msg_len, "%s: %s", lock_path, strerror(errno));
		free(n);
		return -EIO;
	}
	if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		log_line("another modelfs-csi holds %s: waiting for it to end", lock_path);
		while (flock(n->lock_fd, LOCK_EX) != 0 && errno == EINTR)
			;
	}
	n->node_id = strdup(cfg->node_id);
	n->state_dir = strdup(cfg->state_dir);
	n->run_dir = strdup(cfg->run_dir);
	n->modelfs = strdup(cfg->modelfs);
	n->cache_dir = cfg->cache_dir ? strdup(cfg->cache_dir) : NULL;
	n->systemd = cfg->systemd ? strdup(cfg->systemd) : NULL;
	pthread_mutex_init(&n->lock, NULL);
	*out = n;
	return 0;
}

void node_close(struct node *n)
{
	if (!n)
		return;
	while (n->vlocks) {
		struct vlock *l = n->vlocks;
		n->vlocks = l->next;
		pthread_mutex_destroy(&l->m);
		free(l);
	}
	pthread_mutex_destroy(&n->lock);
	close(n->lock_fd);
	free(n->node_id);
	free(n->state_dir);
	free(n->run_dir);
	free(n->modelfs);
	free(n->cache_dir);
	free(n->systemd);
	free(n);
}

const char *node_id(const struct node *n)
{
	return n->node_id;
}
