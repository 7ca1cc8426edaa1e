/* Fluid's config.json into modelfs command lines (config.h).
 *
 * Options of a mount come from five places, merged in this order, a later
 * one overriding an earlier one's value for the same modelfs option (or
 * variable): $MOUNT_OPTIONS (the profile's and the runtime's fuse.options),
 * "runtimeOptions" (the runtime's fuse.options), -o of the command line
 * (the runtime's fuse.args), the mount's "options", its "encryptOptions".
 * Two spellings of one option in one place (endpoint and fs.oss.endpoint)
 * are refused: which one was meant cannot be known.
 *
 * A value is a secret when it came from encryptOptions or from a file
 * under the secrets directory (Fluid writes such a path in "options" for
 * each of the Dataset's encryptOptions). Credentials always go to the
 * daemon's environment (where modelfs's backends read them); a secret that
 * is some other option goes there only where modelfs reads that option
 * from a variable (s3's endpoint and region, hf's endpoint), and is refused
 * otherwise: it would show in ps. Options that name a file the daemon
 * reads (token_file=, creds_dir=, ...) keep a secret's path as it is, so
 * that a rotated Secret is seen.
 *
 * Everything is checked here, before anything is mounted: a bad config
 * fails with one line and leaves nothing behind.
 */
#include "config.h"
#include "optmap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

/* more than a node runs: a config that asks for more is broken */
#define MOUNTS_MAX 256

#define CONFIG_MAX_BYTES (16u << 20)
#define SECRET_MAX_BYTES (64u << 10)
#define TERM_GRACE_DEFAULT_S 25

/* Where an option came from, lowest precedence first. */
enum layer { L_DEFAULT, L_ENV, L_RUNTIME, L_CLI, L_OWN, L_ENCRYPT, L_COUNT };
static const char *const layer_name[L_COUNT] = {
    "(default)", "MOUNT_OPTIONS", "runtimeOptions", "-o", "options", "encryptOptions",
};

/* One option of one mount, resolved: an -o item or a variable. */
struct item {
	char *canon;   /* "o:NAME" (an -o option) or "e:VAR" (a variable) */
	char *key;     /* as written, for messages */
	char *value;   /* NULL: a flag; a variable's value is a secret */
	enum layer layer;
	int dropped;   /* a flag given as false: off, whatever a lower layer said */
};

struct items {
	struct item *v;
	size_t n, cap;
};

/* A raw option as the config gives it. */
struct raw {
	const char *key;
	const char *value; /* NULL: JSON true, or no "=" */
	int off;           /* JSON false, or "false" */
	int secret;        /* from encryptOptions */
};

struct ctx {
	const struct fluid_inputs *in;
	size_t secrets_len;
	char *msg;
	size_t msg_len;
};

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->msg, c->msg_len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void items_free(struct items *it)
{
	for (size_t i = 0; i < it->n; i++) {
		free(it->v[i].canon);
		free(it->v[i].key);
		wipe_free(it->v[i].value);
	}
	free(it->v);
	memset(it, 0, sizeof(*it));
}

static struct item *item_find(struct items *it, const char *canon)
{
	for (size_t i = 0; i < it->n; i++)
		if (strcmp(it->v[i].canon, canon) == 0)
			return &it->v[i];
	return NULL;
}

/* Add @canon = @value (taken over, also on failure) from @layer. A later
 * layer replaces what an earlier one set, in its place; one layer giving
 * it under two keys is refused. */
static int item_set(struct ctx *c, struct items *it, const char *canon, const char *key,
		    char *value, enum layer layer, int dropped)
{
	struct item *old = item_find(it, canon);
	char *ccopy = NULL, *kcopy = NULL;

	if (old && old->layer == layer && strcmp(old->key, key) != 0) {
		wipe_free(value);
		if (canon[0] == 'e')
			return fail(c, "%s: options '%s' and '%s' both give %s", layer_name[layer],
				    old->key, key, canon + 2);
		return fail(c, "%s: options '%s' and '%s' both set modelfs's %s", layer_name[layer],
			    old->key, key, canon + 2);
	}
	if (!(kcopy = strdup(key)) || (!old && !(ccopy = strdup(canon))))
		goto nomem;
	if (old) {
		free(old->key);
		wipe_free(old->value);
	} else {
		if (it->n == it->cap) {
			size_t cap = it->cap ? it->cap * 2 : 16;
			struct item *v = realloc(it->v, cap * sizeof(*v));
			if (!v)
				goto nomem;
			it->v = v;
			it->cap = cap;
		}
		old = &it->v[it->n++];
		old->canon = ccopy;
	}
	old->key = kcopy;
	old->value = value;
	old->layer = layer;
	old->dropped = dropped;
	return 0;
nomem:
	free(ccopy);
	free(kcopy);
	wipe_free(value);
	snprintf(c->msg, c->msg_len, "out of memory");
	return -ENOMEM;
}

/* Is @v a path under the secrets directory? */
static int secret_path(const struct ctx *c, const char *v)
{
	return v && strncmp(v, c->in->secrets_dir, c->secrets_len) == 0 &&
	       v[c->secrets_len] == '/' && v[c->secrets_len + 1];
}

/* The one line of a secret's file at @path (a Secret's key: its trailing
 * newlines dropped). @return 0 with *@out (a secret), or -errno with
 * @msg, which names the file and never says what is in it. */
static int read_secret(struct ctx *c, const char *what, const char *path, char **out)
{
	char *buf = NULL;
	struct stat st;
	ssize_t got;
	size_t len;
	int fd = -1, err;

	if (strstr(path, "/../") || strstr(path, "/./")) {
		err = fail(c, "%s: the secret's path %s has '.' or '..' in it", what, path);
		goto out;
	}
	/* a Secret's keys are symlinks into ..data; O_NONBLOCK: a FIFO does not hang us */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) != 0) {
		err = -errno;
		fail(c, "%s: cannot read the secret %s: %s", what, path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > SECRET_MAX_BYTES) {
		err = fail(c, "%s: the secret %s is %s", what, path,
			   S_ISREG(st.st_mode) ? "larger than 64 KiB" : "not a file");
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		err = -ENOMEM;
		snprintf(c->msg, c->msg_len, "out of memory");
		goto out;
	}
	len = 0;
	while (len < (size_t)st.st_size &&
	       (got = read(fd, buf + len, (size_t)st.st_size - len)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			err = -errno;
			fail(c, "%s: cannot read the secret %s: %s", what, path, strerror(errno));
			goto out;
		}
		len += (size_t)got;
	}
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	if (!len || memchr(buf, '\n', len) || memchr(buf, '\r', len) || strlen(buf) != len) {
		err = fail(c, "%s: the secret %s is %s", what, path,
			   !len ? "empty" : "more than one line");
		goto out;
	}
	*out = buf;
	buf = NULL;
	err = 0;
out:
	if (buf) {
		explicit_bzero(buf, (size_t)st.st_size);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return err;
}

/* The value of a credential or secret option: a secret's file read, else
 * the value itself (Fluid's "secret" storage puts plain values in). */
static int secret_value(struct ctx *c, const char *what, const char *v, char **out)
{
	if (secret_path(c, v))
		return read_secret(c, what, v, out);
	if (!(*out = strdup(v))) {
		snprintf(c->msg, c->msg_len, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Is @r's shape right for its kind (a flag without a value, an option
 * with one)? Checked for every layer before any mount is looked at. */
static int check_shape(struct ctx *c, const char *where, const struct raw *r)
{
	const struct optmap_entry *e = optmap_find(r->key);

	if (!e)
		return fail(c, "%s: unknown option '%s' (modelfs's -o names, or the fs.oss.*, "
			       "fs.s3.*, aws.* spellings `modelfs fluid --help` lists)",
			    where, r->key);
	if (e->kind == OPTMAP_FLAG) {
		if (r->value && *r->value && strcmp(r->value, "true") != 0 &&
		    strcmp(r->value, "false") != 0)
			return fail(c, "%s: option '%s' takes no value (\"\", true or false)", where,
				    r->key);
		return 0;
	}
	if (r->off || !r->value || !*r->value)
		return fail(c, "%s: option '%s' needs a value", where, r->key);
	return 0;
}

/* Resolve one option of a mount whose source is of @scheme into @it. */
static int add_opt(struct ctx *c, struct items *it, const char *scheme, enum layer layer,
		   const struct raw *r)
{
	const struct optmap_entry *e = optmap_find(r->key);
	char what[300], canon[160], *val = NULL;
	const char *var;
	int secret = r->secret || secret_path(c, r->value), err;

	snprintf(what, sizeof(what), "%s: option '%s'", layer_name[layer], r->key);
	if ((err = check_shape(c, layer_name[layer], r)))
		return err;
	switch (e->kind) {
	case OPTMAP_FLAG:
		if (secret_path(c, r->value))
			return fail(c, "%s takes no value, not a secret", what);
		snprintf(canon, sizeof(canon), "o:%s", e->name);
		return item_set(c, it, canon, r->key, NULL, layer,
				r->off || (r->value && strcmp(r->value, "false") == 0));
	case OPTMAP_PATH:
		/* a secret's path stays a path: the daemon reads the file. Not a
		 * path: perhaps the secret itself (Fluid's "secret" storage puts
		 * values in): never on the command line, never quoted */
		if (r->value[0] != '/')
			return fail(c, "%s names a file: give its absolute path (a secret's: "
				       "%s/SECRET/KEY)", what, c->in->secrets_dir);
		snprintf(canon, sizeof(canon), "o:%s", e->name);
		if (!(val = strdup(r->value)))
			break;
		return item_set(c, it, canon, r->key, val, layer, 0);
	case OPTMAP_VALUE:
		if (!secret) {
			snprintf(canon, sizeof(canon), "o:%s", e->name);
			if (!(val = strdup(r->value)))
				break;
			return item_set(c, it, canon, r->key, val, layer, 0);
		}
		if (!(var = optmap_secret_var(e->name, scheme)))
			return fail(c, "%s comes from a secret, and modelfs takes %s= of %s:// sources "
				       "only on its command line (seen in ps): give it in options",
				    what, e->name, scheme);
		snprintf(canon, sizeof(canon), "e:%s", var);
		if ((err = secret_value(c, what, r->value, &val)))
			return err;
		return item_set(c, it, canon, r->key, val, layer, 0);
	case OPTMAP_KEY_ID:
	case OPTMAP_KEY_SECRET:
	case OPTMAP_KEY_TOKEN:
	case OPTMAP_ENV:
		var = e->kind == OPTMAP_ENV ? e->name : optmap_key_var(e->kind, scheme);
		if (!var)
			return fail(c, "%s: %s:// sources take no keys (hf://: a token, option 'token' "
				       "or token_file=PATH)", what, scheme);
		snprintf(canon, sizeof(canon), "e:%s", var);
		if ((err = secret_value(c, what, r->value, &val)))
			return err;
		return item_set(c, it, canon, r->key, val, layer, 0);
	case OPTMAP_TOKEN:
		if (strcmp(scheme, "hf") != 0 && strcmp(scheme, "http") != 0 &&
		    strcmp(scheme, "https") != 0)
			return fail(c, "%s: %s:// sources take no token", what, scheme);
		if (secret_path(c, r->value)) {
			/* the file itself: re-read when the Secret is rotated */
			if (!(val = strdup(r->value)))
				break;
			return item_set(c, it, "o:token_file", r->key, val, layer, 0);
		}
		if (strcmp(scheme, "hf") != 0)
			return fail(c, "%s: %s:// sources read a token from a file only: give the "
				       "secret's path, or token_file=PATH", what, scheme);
		if ((err = secret_value(c, what, r->value, &val)))
			return err;
		return item_set(c, it, "e:HF_TOKEN", r->key, val, layer, 0);
	}
	snprintf(c->msg, c->msg_len, "out of memory");
	return -ENOMEM;
}

/* The number a JSON value says, as text, for an option's value. */
static const char *json_text(json_t *v, char *buf, size_t len)
{
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v))
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
	else
		snprintf(buf, len, "%.15g", json_real_value(v));
	return buf;
}

/* The options of a JSON object (a mount's "options", "runtimeOptions"):
 * string values, as Fluid writes them; numbers and booleans as a person
 * might. @fn is called with each. */
typedef int (*raw_fn)(struct ctx *c, void *arg, const struct raw *r);
static int each_json_opt(struct ctx *c, const char *where, json_t *obj, int secret, raw_fn fn,
			 void *arg)
{
	const char *key;
	json_t *v;
	char num[64];
	int err;

	if (!obj || json_is_null(obj))
		return 0;
	if (!json_is_object(obj))
		return fail(c, "%s is not an object of options", where);
	json_object_foreach(obj, key, v) {
		struct raw r = {key, NULL, 0, secret};
		if (json_is_string(v) || json_is_number(v))
			r.value = json_text(v, num, sizeof(num));
		else if (json_is_false(v))
			r.off = 1;
		else if (!json_is_true(v))
			return fail(c, "%s: option '%s' is not a string", where, key);
		if ((err = fn(c, arg, &r)))
			return err;
	}
	return 0;
}

/* Options as text, "k=v,k2" ($MOUNT_OPTIONS), for @fn. */
static int each_text_opt(struct ctx *c, const char *text, raw_fn fn, void *arg)
{
	char *copy, *save = NULL, *tok;
	int err = 0;

	if (!text)
		return 0;
	if (!(copy = strdup(text))) {
		snprintf(c->msg, c->msg_len, "out of memory");
		return -ENOMEM;
	}
	for (tok = strtok_r(copy, ",", &save); tok && !err; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		struct raw r = {tok, NULL, 0, 0};
		if (eq) {
			*eq = '\0';
			r.value = eq + 1;
		}
		err = fn(c, arg, &r);
	}
	explicit_bzero(copy, strlen(text));
	free(copy);
	return err;
}

/* -o items of the command line ("k=v" or "k"), for @fn. */
static int each_cli_opt(struct ctx *c, raw_fn fn, void *arg)
{
	int err = 0;

	for (size_t i = 0; i < c->in->n_cli_opts && !err; i++) {
		char *copy = strdup(c->in->cli_opts[i]), *eq;
		struct raw r = {copy, NULL, 0, 0};
		if (!copy) {
			snprintf(c->msg, c->msg_len, "out of memory");
			return -ENOMEM;
		}
		if ((eq = strchr(copy, '='))) {
			*eq = '\0';
			r.value = eq + 1;
		}
		err = fn(c, arg, &r);
		free(copy);
	}
	return err;
}

/* encryptOptions of a mount, as CacheRuntime writes them ({"NAME":
 * "/etc/fluid/secrets/SECRET/KEY"}) or as a Dataset has them ([{"name":
 * NAME, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": KEY}}}]). */
static int each_encrypt_opt(struct ctx *c, const char *where, json_t *enc, raw_fn fn, void *arg)
{
	size_t i;
	json_t *e;

	if (!enc || json_is_null(enc) || json_is_object(enc))
		return each_json_opt(c, where, enc, 1, fn, arg);
	if (!json_is_array(enc))
		return fail(c, "%s is neither a list nor an object", where);
	json_array_foreach(enc, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *ref = json_object_get(json_object_get(e, "valueFrom"), "secretKeyRef");
		const char *sname = json_string_value(json_object_get(ref, "name"));
		const char *skey = json_string_value(json_object_get(ref, "key"));
		char *path;
		int err;

		if (!name || !*name)
			return fail(c, "%s[%zu] has no name", where, i);
		if (!sname || !*sname || !skey || !*skey || strchr(sname, '/') || strchr(skey, '/'))
			return fail(c, "%s[%zu] ('%s'): valueFrom.secretKeyRef needs a name and a key",
				    where, i, name);
		if (asprintf(&path, "%s/%s/%s", c->in->secrets_dir, sname, skey) < 0) {
			snprintf(c->msg, c->msg_len, "out of memory");
			return -ENOMEM;
		}
		err = fn(c, arg, &(struct raw){name, path, 0, 1});
		free(path);
		if (err)
			return err;
	}
	return 0;
}

static int shape_cb(struct ctx *c, void *arg, const struct raw *r)
{
	return check_shape(c, arg, r);
}

struct add_arg {
	struct items *it;
	const char *scheme;
	enum layer layer;
};

static int add_cb(struct ctx *c, void *arg, const struct raw *r)
{
	struct add_arg *a = arg;

	return add_opt(c, a->it, a->scheme, a->layer, r);
}

/* modelfs's SOURCE for Fluid's @mp; @scheme gets its scheme. */
static int parse_source(struct ctx *c, const char *where, const char *mp, char **source,
			char *scheme, size_t scheme_len)
{
	static const char *const known[] = {"s3", "oss", "file", "http", "https", "hf", NULL};
	const char *sep = strstr(mp, "://");
	size_t n = sep ? (size_t)(sep - mp) : 0;
	int i;

	if (!sep || !n || n >= scheme_len)
		return fail(c, "%s: mountPoint '%.200s' has no scheme (s3://BUCKET/PREFIX, "
			       "oss://..., hf://ORG/MODEL, https://..., file:///DIR, local:///DIR)",
			    where, mp);
	memcpy(scheme, mp, n);
	scheme[n] = '\0';
	{
		/* a password in the URL would go on the daemon's command line */
		size_t auth = strcspn(sep + 3, "/?#");
		if (memchr(sep + 3, '@', auth))
			return fail(c, "%s: mountPoint has a user or password in it (%s://USER@...): "
				       "give credentials as options from a Secret", where, scheme);
	}
	if (strcmp(scheme, "local") == 0) {
		/* Fluid's name for a directory of the FUSE container (a hostPath) */
		strcpy(scheme, "file");
		if (asprintf(source, "file://%s", sep + 3) < 0)
			goto nomem;
		return 0;
	}
	for (i = 0; known[i] && strcmp(known[i], scheme) != 0; i++)
		;
	if (!known[i]) {
		if (strcmp(scheme, "pvc") == 0)
			return fail(c, "%s: pvc:// mounts are not modelfs's: give the store the PV "
				       "reads (s3://, oss://, ...) as the mountPoint", where);
		return fail(c, "%s: mountPoint scheme '%s://' is not one modelfs reads (s3, oss, hf, "
			       "http, https, file, local)", where, scheme);
	}
	if (!sep[3])
		return fail(c, "%s: mountPoint '%s' names nothing after %s://", where, mp, scheme);
	if (!(*source = strdup(mp)))
		goto nomem;
	return 0;
nomem:
	snprintf(c->msg, c->msg_len, "out of memory");
	return -ENOMEM;
}

/* @p as "a/b" (no empty, "." or ".." parts), "" for the root. */
static int clean_rel(const char *p, char **out)
{
	char *o = malloc(strlen(p) + 1), *w = o;

	if (!o)
		return -ENOMEM;
	while (*p) {
		size_t n;
		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (!n)
			break;
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
			free(o);
			return -EINVAL;
		}
		if (w != o)
			*w++ = '/';
		memcpy(w, p, n);
		w += n;
		p += n;
	}
	*w = '\0';
	*out = o;
	return 0;
}

/* Where mount @i of @n goes: Fluid's rule (its UFSPathBuilder): the
 * mount's path if it has one, else the root for a lone mount, else /NAME. */
static int mount_target(struct ctx *c, const char *where, const char *target_path,
			const char *name, const char *path, size_t n, char **out)
{
	char *rel = NULL;
	int err;

	if (path && *path) {
		if ((err = clean_rel(path, &rel)) == -EINVAL)
			return fail(c, "%s: path '%s' has '.' or '..' in it", where, path);
		if (err)
			goto nomem;
	} else if (n > 1) {
		if (!name || !*name)
			return fail(c, "%s: several mounts: each needs a name or a path", where);
		if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			return fail(c, "%s: name '%s' cannot be a directory's name (give a path)",
				    where, name);
		if (!(rel = strdup(name)))
			goto nomem;
	}
	if (!rel || !*rel) {
		if (n > 1) {
			free(rel);
			return fail(c, "%s: path '/' is the whole targetPath, and there are other mounts",
				    where);
		}
		err = (*out = strdup(target_path)) ? 0 : -ENOMEM;
	} else {
		err = asprintf(out, "%s/%s", target_path, rel) < 0 ? -ENOMEM : 0;
	}
	free(rel);
	if (!err)
		return 0;
nomem:
	snprintf(c->msg, c->msg_len, "out of memory");
	return -ENOMEM;
}

/* ',' and '\' escaped, as fuse_opt reads an -o item. */
static char *escape_opt(const char *s)
{
	char *out = malloc(strlen(s) * 2 + 1), *p = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	return out;
}

static int strv_push(char ***v, size_t *n, char *s)
{
	char **grown;

	if (!s)
		return -ENOMEM;
	if (!(grown = realloc(*v, (*n + 2) * sizeof(*grown)))) {
		wipe_free(s);
		return -ENOMEM;
	}
	grown[(*n)++] = s;
	grown[*n] = NULL;
	*v = grown;
	return 0;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		wipe_free(v[i]);
	free(v);
}

/* The credential families: a pair that goes together, and the token that
 * goes with them. One given here takes the whole family out of the
 * inherited environment (a pod's stale session token must not be signed
 * with the Dataset's keys). */
static const char *const families[][3] = {
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
    {"OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"},
    {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
     "ALIBABA_CLOUD_SECURITY_TOKEN"},
};

static int env_given(struct items *it, const char *var)
{
	char canon[160];
	struct item *x;

	snprintf(canon, sizeof(canon), "e:%s", var);
	x = item_find(it, canon);
	return x && !x->dropped;
}

/* The merged options of mount @idx of @n into @m. */
static int finish_mount(struct ctx *c, struct items *it, size_t idx, size_t n,
			struct fluid_mount *m)
{
	struct item *x;
	int err;

	m->term_grace_s = TERM_GRACE_DEFAULT_S;
	for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		int id = env_given(it, families[f][0]), sk = env_given(it, families[f][1]);
		if (id != sk)
			return fail(c, "%s: the options give %s but not %s (a key id and its secret go "
				       "together)", m->label, families[f][id ? 0 : 1],
				    families[f][id ? 1 : 0]);
		if (id || env_given(it, families[f][2]))
			for (int k = 0; k < 3; k++)
				if (strv_push(&m->env_drop, &m->n_env_drop, strdup(families[f][k])))
					goto nomem;
	}
	if (n > 1 && (x = item_find(it, "o:ready_file")) && x->layer < L_OWN)
		return fail(c, "%s: ready_file= from %s would be one file for %zu mounts: give each "
			       "mount its own in its options", m->label, layer_name[x->layer], n);
	if (n > 1 && (x = item_find(it, "o:metrics_port")) && x->layer < L_OWN) {
		/* one port for the pod's probes, one server per daemon: the
		 * next mounts take the next ports */
		char *e, buf[32];
		long port = strtol(x->value, &e, 10);
		if (!*e && port > 0 && port + (long)idx <= 65535) {
			snprintf(buf, sizeof(buf), "%ld", port + (long)idx);
			wipe_free(x->value);
			if (!(x->value = strdup(buf)))
				goto nomem;
		}
	}
	if ((x = item_find(it, "o:term_grace")) && x->value) {
		char *e;
		unsigned long g = strtoul(x->value, &e, 10);
		if (!*e && g <= 86400)
			m->term_grace_s = (unsigned)g;
	}
	for (size_t i = 0; i < it->n; i++) {
		x = &it->v[i];
		if (x->dropped)
			continue;
		if (x->canon[0] == 'o') {
			char *esc = x->value ? escape_opt(x->value) : NULL, *s = NULL;
			if (x->value && !esc)
				goto nomem;
			err = esc ? asprintf(&s, "%s=%s", x->canon + 2, esc)
				  : asprintf(&s, "%s", x->canon + 2);
			free(esc);
			if (err < 0 || strv_push(&m->opts, &m->n_opts, s))
				goto nomem;
		} else {
			char *s;
			if (asprintf(&s, "%s=%s", x->canon + 2, x->value) < 0 ||
			    strv_push(&m->env, &m->n_env, s))
				goto nomem;
		}
	}
	return 0;
nomem:
	snprintf(c->msg, c->msg_len, "out of memory");
	return -ENOMEM;
}

/* Mount @i (@jm) of @n into @m. */
static int load_mount(struct ctx *c, json_t *root, json_t *jm, size_t i, size_t n,
		      const char *target_path, struct fluid_mount *m)
{
	const char *path = c->in->path;
	json_t *jmp = json_object_get(jm, "mountPoint"), *jname = json_object_get(jm, "name");
	json_t *jpath = json_object_get(jm, "path");
	const char *name = json_string_value(jname);
	char scheme[16], where[512], label[160];
	struct items it = {0};
	struct add_arg a = {&it, scheme, L_DEFAULT};
	int err;

	if (name && *name)
		snprintf(label, sizeof(label), "mounts[%zu] (\"%.100s\")", i, name);
	else
		snprintf(label, sizeof(label), "mounts[%zu]", i);
	snprintf(where, sizeof(where), "%.300s: %s", path, label);
	if (!(m->label = strdup(label))) {
		snprintf(c->msg, c->msg_len, "out of memory");
		return -ENOMEM;
	}
	if (!json_is_object(jm))
		return fail(c, "%s is not an object", where);
	if (!jmp || json_is_null(jmp))
		return fail(c, "%s has no mountPoint", where);
	if (!json_is_string(jmp) || !*json_string_value(jmp))
		return fail(c, "%s: mountPoint is not a string (s3://BUCKET/PREFIX, ...)", where);
	if ((jname && !json_is_null(jname) && !json_is_string(jname)) ||
	    (jpath && !json_is_null(jpath) && !json_is_string(jpath)))
		return fail(c, "%s: %s is not a string", where,
			    jname && !json_is_string(jname) ? "name" : "path");
	if ((err = parse_source(c, where, json_string_value(jmp), &m->source, scheme,
				sizeof(scheme))))
		return err;
	if ((err = mount_target(c, where, target_path, name, json_string_value(jpath), n,
				&m->target)))
		return err;

	/* the daemon's own: pods read the mount as any user */
	if ((err = item_set(c, &it, "o:allow_other", "allow_other", NULL, L_DEFAULT, 0)))
		goto out;
	a.layer = L_ENV;
	if ((err = each_text_opt(c, c->in->mount_options, add_cb, &a)))
		goto fail_where;
	a.layer = L_RUNTIME;
	if ((err = each_json_opt(c, "runtimeOptions", json_object_get(root, "runtimeOptions"), 0,
				 add_cb, &a)))
		goto fail_where;
	a.layer = L_CLI;
	if ((err = each_cli_opt(c, add_cb, &a)))
		goto fail_where;
	a.layer = L_OWN;
	if ((err = each_json_opt(c, "options", json_object_get(jm, "options"), 0, add_cb, &a)))
		goto fail_where;
	a.layer = L_ENCRYPT;
	if ((err = each_encrypt_opt(c, "encryptOptions", json_object_get(jm, "encryptOptions"),
				    add_cb, &a)))
		goto fail_where;
	if ((err = finish_mount(c, &it, i, n, m)))
		goto fail_where;
	goto out;
fail_where:
	if (err != -ENOMEM) {
		/* say which mount: the layer's line is mount-blind */
		char line[1024];
		snprintf(line, sizeof(line), "%s", c->msg);
		if (strncmp(line, m->label, strlen(m->label)) == 0)
			snprintf(c->msg, c->msg_len, "%s: %s", path, line);
		else
			snprintf(c->msg, c->msg_len, "%s: %s", where, line);
	}
out:
	items_free(&it);
	return err;
}

/* The file's text, for jansson. */
static int read_file(struct ctx *c, const char *path, char **buf, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), err = 0;
	size_t got = 0;
	ssize_t r;

	*buf = NULL;
	if (fd < 0 || fstat(fd, &st) != 0) {
		err = -errno;
		fail(c, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_BYTES) {
		err = fail(c, "%s is %s", path,
			   S_ISREG(st.st_mode) ? "larger than 16 MiB" : "not a file");
		goto out;
	}
	if (!(*buf = malloc((size_t)st.st_size + 1))) {
		snprintf(c->msg, c->msg_len, "out of memory");
		err = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size && (r = read(fd, *buf + got, (size_t)st.st_size - got))) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			fail(c, "cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		got += (size_t)r;
	}
	*len = got;
out:
	if (fd >= 0)
		close(fd);
	if (err && *buf) {
		free(*buf);
		*buf = NULL;
	}
	return err;
}

/* Check the shared layers once, with their own names in the line. */
static int check_shared(struct ctx *c, json_t *root)
{
	char where[600];
	int err;

	if ((err = each_text_opt(c, c->in->mount_options, shape_cb, (void *)"MOUNT_OPTIONS")))
		return err;
	snprintf(where, sizeof(where), "%s: runtimeOptions", c->in->path);
	if ((err = each_json_opt(c, where, json_object_get(root, "runtimeOptions"), 0, shape_cb,
				 where)))
		return err;
	return each_cli_opt(c, shape_cb, (void *)"-o");
}

int fluid_config_load(const struct fluid_inputs *in, struct fluid_config **out, char *msg,
		      size_t msg_len)
{
	struct ctx c = {in, strlen(in->secrets_dir), msg, msg_len};
	struct fluid_config *cfg = NULL;
	json_t *root = NULL, *mounts, *jt;
	json_error_t jerr;
	char *text = NULL, *near;
	const char *tp;
	size_t len = 0, n, i;
	int err;

	*out = NULL;
	if ((err = read_file(&c, in->path, &text, &len)))
		goto out;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	explicit_bzero(text, len); /* the "secret" storage mode has keys in it */
	if (!root) {
		/* jansson quotes the text near the fault: it may be a secret */
		if ((near = strstr(jerr.text, " near ")))
			*near = '\0';
		err = fail(&c, "%s: not JSON: line %d, column %d: %s", in->path, jerr.line,
			   jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		err = fail(&c, "%s: not a JSON object (Fluid's {\"mounts\": [...], \"targetPath\": ...})",
			   in->path);
		goto out;
	}
	mounts = json_object_get(root, "mounts");
	if (!mounts || !json_is_array(mounts) || !(n = json_array_size(mounts))) {
		err = fail(&c, "%s: no mounts (\"mounts\" is %s)", in->path,
			   !mounts ? "missing" : json_is_array(mounts) ? "empty" : "not a list");
		goto out;
	}
	if (n > MOUNTS_MAX) {
		err = fail(&c, "%s: %zu mounts: at most %d", in->path, n, MOUNTS_MAX);
		goto out;
	}
	jt = json_object_get(root, "targetPath");
	if (jt && !json_is_null(jt) && !json_is_string(jt)) {
		err = fail(&c, "%s: targetPath is not a string", in->path);
		goto out;
	}
	tp = jt && json_is_string(jt) && *json_string_value(jt) ? json_string_value(jt)
								  : in->mount_point;
	if (!tp || !*tp) {
		err = fail(&c, "%s: no targetPath (and no $MOUNT_POINT)", in->path);
		goto out;
	}
	if (tp[0] != '/' || strspn(tp, "/") == strlen(tp) || strstr(tp, "/./") ||
	    strstr(tp, "/../") || (strlen(tp) >= 2 && !strcmp(tp + strlen(tp) - 2, "/.")) ||
	    (strlen(tp) >= 3 && !strcmp(tp + strlen(tp) - 3, "/.."))) {
		err = fail(&c, "%s: targetPath '%.300s' is not an absolute path below / without "
			       "'.' or '..'", in->path, tp);
		goto out;
	}
	if ((err = check_shared(&c, root)))
		goto out;
	if (!(cfg = calloc(1, sizeof(*cfg))) || !(cfg->mounts = calloc(n, sizeof(*cfg->mounts))) ||
	    !(cfg->target_path = strdup(tp)))
		goto nomem;
	/* no trailing '/': targets are compared as strings */
	for (size_t l = strlen(cfg->target_path); l > 1 && cfg->target_path[l - 1] == '/'; l--)
		cfg->target_path[l - 1] = '\0';
	cfg->n_mounts = n;
	for (i = 0; i < n; i++)
		if ((err = load_mount(&c, root, json_array_get(mounts, i), i, n, cfg->target_path,
				      &cfg->mounts[i])))
			goto out;
	for (i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			const char *a = cfg->mounts[i].target, *b = cfg->mounts[j].target;
			size_t la = strlen(a), lb = strlen(b);
			if (strcmp(a, b) == 0 || (la < lb && !strncmp(a, b, la) && b[la] == '/') ||
			    (lb < la && !strncmp(a, b, lb) && a[lb] == '/')) {
				err = fail(&c, "%s: %s and %s would mount %s %s", in->path,
					   cfg->mounts[i].label, cfg->mounts[j].label,
					   strcmp(a, b) == 0 ? "both at" : "one inside the other:",
					   la < lb ? b : a);
				goto out;
			}
		}
	*out = cfg;
	cfg = NULL;
	err = 0;
	goto out;
nomem:
	snprintf(msg, msg_len, "out of memory");
	err = -ENOMEM;
out:
	fluid_config_free(cfg);
	json_decref(root);
	free(text);
	return err;
}

void fluid_config_free(struct fluid_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->mounts && i < c->n_mounts; i++) {
		struct fluid_mount *m = &c->mounts[i];
		free(m->label);
		free(m->source);
		free(m->target);
		strv_free(m->opts, m->n_opts);
		strv_free(m->env, m->n_env);
		strv_free(m->env_drop, m->n_env_drop);
	}
	free(c->mounts);
	free(c->target_path);
	free(c);
}
