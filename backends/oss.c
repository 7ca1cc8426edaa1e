/* The Alibaba OSS backend: oss://BUCKET[/PREFIX].
 *
 * OSS speaks S3's REST shape (ListObjectsV2 with list-type=2, HEAD, ranged
 * GET with If-Match, the <Error> XML), so the requests, bounds and checks
 * are s3.c's (s3core.h); this file owns what is OSS's: the endpoints as
 * users write them, the region, the signatures (V4, OSS4-HMAC-SHA256, by
 * default; V1, HMAC-SHA1, with sigv=1 for old endpoints and OSS-compatible
 * stores) and the credential chain. Ranged GETs send
 * x-oss-range-behavior: standard, or OSS answers a range past the end with
 * the whole object and 200.
 *
 * Credentials, first found wins, never from argv, never logged:
 * OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET [/ OSS_SESSION_TOKEN] (ossutil,
 * ossfs 2); ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET
 * [/ ALIBABA_CLOUD_SECURITY_TOKEN] (Alibaba's SDKs); an ossfs passwd file,
 * lines "BUCKET:AK:SK" or "AK:SK": one named by passwd_file=PATH wins over
 * the environment (as with ossfs) and must be readable by its owner only;
 * /etc/passwd-ossfs, after the environment, may be group-readable (0640, as
 * ossfs documents it); creds_dir=DIR (a mounted Kubernetes secret), which
 * wins too and is re-read when its files change.
 * None: anonymous requests (public-read buckets).
 */
#include "backend.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3core.h"
#include "sigv4.h"
#include "tempcreds.h"
#include "uri.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define OSS_PASSWD_DEFAULT "/etc/passwd-ossfs"
#define OSS_REFUSE "credentials are not accepted on the command line (they would show in ps): " \
		   "use OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET or -o passwd_file=PATH"

static const struct backend_option oss_options[] = {
    {"endpoint=", NULL},
    {"url=", NULL}, /* ossfs's spelling */
    {"region=", NULL},
    {"sigv=", NULL},
    {"passwd_file=", NULL},
    {"creds_dir=", NULL},
    {"path_style", NULL},
    {"virtual_host", NULL},
    {"akId=", OSS_REFUSE},
    {"akSecret=", OSS_REFUSE},
    {"access_key=", BACKEND_REFUSE_KEYS},
    {"secret_key=", BACKEND_REFUSE_KEYS},
    {NULL, NULL},
};

struct oss_args {
	const char *endpoint, *region, *passwd_file, *creds_dir;
	int sigv, path_style;
};

static int oss_args(const struct backend_config *cfg, struct oss_args *a, char *msg,
		    size_t msg_len)
{
	const char *v;

	*a = (struct oss_args){.sigv = 4, .path_style = -1};
	for (size_t i = 0; i < cfg->n_opts; i++) {
		const char *o = cfg->opts[i];
		if (backend_opt_is(o, "endpoint=", &v) || backend_opt_is(o, "url=", &v))
			a->endpoint = v;
		else if (backend_opt_is(o, "region=", &v))
			a->region = v;
		else if (backend_opt_is(o, "passwd_file=", &v))
			a->passwd_file = v;
		else if (backend_opt_is(o, "creds_dir=", &v) && *v)
			a->creds_dir = v;
		else if (backend_opt_is(o, "path_style", &v))
			a->path_style = 1;
		else if (backend_opt_is(o, "virtual_host", &v))
			a->path_style = 0;
		else if (backend_opt_is(o, "sigv=", &v)) {
			if (strcmp(v, "1") != 0 && strcmp(v, "4") != 0) {
				snprintf(msg, msg_len, "bad value for option sigv: '%s' (1 or 4)", v);
				return -EINVAL;
			}
			a->sigv = atoi(v);
		} else {
			snprintf(msg, msg_len, "option '%s' is not used by oss:// sources", o);
			return -EINVAL;
		}
	}
	if (a->passwd_file && a->creds_dir) {
		snprintf(msg, msg_len, "give passwd_file= or creds_dir=, not both");
		return -EINVAL;
	}
	return 0;
}

/* "oss-cn-beijing.aliyuncs.com", "oss-cn-beijing-internal.aliyuncs.com"
 * -> "cn-beijing"; anything else (a custom domain, an IP): NULL. */
static char *region_of_host(const char *host)
{
	const char *dot = strchr(host, '.');
	size_t n;

	if (!dot || strncmp(host, "oss-", 4) != 0 || strcmp(dot, ".aliyuncs.com") != 0)
		return NULL;
	n = (size_t)(dot - host) - 4;
	if (n > 9 && strncmp(host + 4 + n - 9, "-internal", 9) == 0)
		n -= 9;
	if (n == 0 || strncmp(host + 4, "accelerate", 10) == 0)
		return NULL; /* the acceleration endpoints carry no region */
	return strndup(host + 4, n);
}

/* The ossfs passwd file: "BUCKET:AK:SK" lines (this bucket's first) or an
 * "AK:SK" line for every bucket. */
static int passwd_load(const char *path, int given, const char *bucket, struct creds *c,
		       char *msg, size_t msg_len)
{
	char line[1024], *any_ak = NULL, *any_sk = NULL;
	struct stat st;
	FILE *f;
	int err = 0;

	if (stat(path, &st) != 0) {
		if (!given)
			return 0; /* the default file is optional */
		snprintf(msg, msg_len, "passwd_file %s: %s", path, strerror(errno));
		return -ENOENT;
	}
	/* ossfs's rule: /etc/passwd-ossfs may be group-readable (640, group
	 * root), any other file only by its owner */
	if (st.st_mode & (given ? 077 : 007)) {
		snprintf(msg, msg_len, "passwd_file %s has mode %04o: others may read the keys "
				       "(chmod %s it)", path, (unsigned)(st.st_mode & 07777),
			 given ? "600" : "640");
		return -EACCES;
	}
	f = fopen(path, "re");
	if (!f) {
		snprintf(msg, msg_len, "passwd_file %s: %s", path, strerror(errno));
		return -EACCES;
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *c1, *c2;
		line[strcspn(line, "\r\n")] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (!*p || *p == '#')
			continue;
		c1 = strchr(p, ':');
		c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c1)
			continue;
		*c1 = '\0';
		if (c2) { /* BUCKET:AK:SK */
			*c2 = '\0';
			if (strcmp(p, bucket) == 0 && !c->access_key) {
				c->access_key = strdup(c1 + 1);
				c->secret_key = strdup(c2 + 1);
			}
		} else if (!any_ak) { /* AK:SK */
			any_ak = strdup(p);
			any_sk = strdup(c1 + 1);
		}
	}
	fclose(f);
	if (!c->access_key && any_ak) {
		c->access_key = any_ak;
		c->secret_key = any_sk;
		any_ak = any_sk = NULL;
	}
	if (any_sk)
		memset(any_sk, 0, strlen(any_sk));
	free(any_ak);
	free(any_sk);
	if (c->access_key && (!c->secret_key || !*c->access_key || !*c->secret_key)) {
		snprintf(msg, msg_len, "passwd_file %s: a line without both keys", path);
		err = -EINVAL;
	} else if (!c->access_key && given) {
		snprintf(msg, msg_len, "passwd_file %s: no line for bucket '%s' and no AK:SK line",
			 path, bucket);
		err = -ENOENT;
	}
	OPENSSL_cleanse(line, sizeof(line));
	return err;
}

/* creds_dir=DIR: a mounted Kubernetes secret, one file per key, under the
 * names the Fluid and ossfs CSI secrets use. */
static const char *const dir_ak[] = {"fs.oss.accessKeyId", "akId", NULL};
static const char *const dir_sk[] = {"fs.oss.accessKeySecret", "akSecret", NULL};
static const char *const dir_tok[] = {"fs.oss.securityToken", "securityToken", NULL};

/* The first of @names in the directory: its text, trimmed (heap), and its
 * identity appended to @seen. NULL when none is there. */
static char *dir_key(const char *dir, const char *const *names, char *seen, size_t seen_len,
		     int *err)
{
	for (size_t i = 0; names[i]; i++) {
		char path[4096], buf[4096];
		struct stat st;
		size_t n, at = strlen(seen);
		FILE *f;
		char *v;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fstat(fileno(f), &st) != 0) {
			fclose(f);
			continue;
		}
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		while (n && isspace((unsigned char)buf[n - 1]))
			buf[--n] = '\0';
		v = buf;
		while (isspace((unsigned char)*v))
			v++;
		snprintf(seen + at, seen_len - at, "%lu.%ld.%ld.%ld;", (unsigned long)st.st_ino,
			 (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)st.st_size);
		if (!*v || strpbrk(v, "\r\n")) {
			*err = -EINVAL;
			OPENSSL_cleanse(buf, sizeof(buf));
			return NULL;
		}
		v = strdup(v);
		OPENSSL_cleanse(buf, sizeof(buf));
		if (!v)
			*err = -ENOMEM;
		return v;
	}
	return NULL;
}

/* creds_dir as a key source: read again once a second, new keys when the
 * files' identities changed (kubelet swaps a secret's files at once, by a
 * symlink; until the new pair is whole the old keys stay). */
struct dir_src {
	char *dir;
	char seen[256]; /* the files' identities when last read */
	char what[300];
};

static int dir_fetch(void *arg, struct creds *out, int64_t *expires, char *msg, size_t msg_len)
{
	struct dir_src *d = arg;
	char seen[sizeof(d->seen)] = "";
	int err = 0, first = !d->seen[0];
	char *ak = dir_key(d->dir, dir_ak, seen, sizeof(seen), &err);
	char *sk = err ? NULL : dir_key(d->dir, dir_sk, seen, sizeof(seen), &err);
	char *tok = err ? NULL : dir_key(d->dir, dir_tok, seen, sizeof(seen), &err);

	*expires = 0;
	if (!err && (!ak || !sk))
		err = -ENOENT;
	if (err) {
		snprintf(msg, msg_len, "creds_dir %s: %s", d->dir,
			 err == -ENOENT ? "no fs.oss.accessKeyId (or akId) and "
					  "fs.oss.accessKeySecret (or akSecret) files"
			 : err == -EINVAL ? "a key file that is empty or not one line"
					  : strerror(-err));
		goto out;
	}
	if (strcmp(seen, d->seen) == 0) {
		err = 1; /* read again, and the same */
		goto out;
	}
	out->access_key = ak;
	out->secret_key = sk;
	out->session_token = tok;
	ak = sk = tok = NULL;
	memcpy(d->seen, seen, sizeof(seen));
	if (!first)
		log_info("creds_dir %s changed: signing with the keys now there", d->dir);
out:
	free(ak);
	if (sk)
		OPENSSL_cleanse(sk, strlen(sk));
	free(sk);
	free(tok);
	return err;
}

static void dir_release(void *arg)
{
	struct dir_src *d = arg;

	free(d->dir);
	free(d);
}

/* The keys, most explicit first: creds_dir=, passwd_file=, the OSS_* and
 * ALIBABA_CLOUD_* keys, a pod's OIDC token (RRSA), /etc/passwd-ossfs, the
 * ECS instance's RAM role; none of those: anonymous requests. */
static int oss_keys(const struct oss_args *a, const struct backend_config *cfg, struct s3 *s,
		    char *msg, size_t msg_len)
{
	static const char *const chains[][4] = {
	    {"OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN", "OSS_*"},
	    {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
	     "ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_*"},
	};
	struct http_config hc = {cfg->ca_file, cfg->insecure_tls, cfg->retries,
				 cfg->connect_timeout_ms, cfg->request_timeout_ms};
	struct key_source src;
	struct creds c = {0};
	const char *from = OSS_PASSWD_DEFAULT;
	int err;

	/* a secret directory or a passwd file named on the command line wins */
	if (a->creds_dir) {
		struct dir_src *d = calloc(1, sizeof(*d));
		if (!d || !(d->dir = strdup(a->creds_dir))) {
			free(d);
			return -ENOMEM;
		}
		snprintf(d->what, sizeof(d->what), "creds_dir %s", a->creds_dir);
		src = (struct key_source){d->what, dir_fetch, dir_release, d, 1000};
		return keyring_open(&src, &s->keys, msg, msg_len);
	}
	if (a->passwd_file) {
		if ((err = passwd_load(a->passwd_file, 1, s->bucket, &c, msg, msg_len)))
			goto fail;
		log_debug("credentials: %s", a->passwd_file);
		return keyring_fixed(&c, &s->keys);
	}
	for (size_t i = 0; i < sizeof(chains) / sizeof(chains[0]); i++) {
		const char *ak = backend_getenv(chains[i][0]), *sk = backend_getenv(chains[i][1]);
		const char *tok = backend_getenv(chains[i][2]);
		if (!ak && !sk)
			continue;
		if (!ak || !sk) {
			snprintf(msg, msg_len, "%s is set without %s", ak ? chains[i][0] : chains[i][1],
				 ak ? chains[i][1] : chains[i][0]);
			return -EINVAL;
		}
		c.access_key = strdup(ak);
		c.secret_key = strdup(sk);
		c.session_token = tok ? strdup(tok) : NULL;
		if (!c.access_key || !c.secret_key || (tok && !c.session_token)) {
			err = -ENOMEM;
			goto fail;
		}
		log_debug("credentials: %s", chains[i][3]);
		return keyring_fixed(&c, &s->keys);
	}
	if ((err = tempcreds_source(TC_ALI_OIDC, &hc, &src, msg, msg_len)) != 1)
		return err ? err : keyring_open(&src, &s->keys, msg, msg_len);
	if ((err = passwd_load(from, 0, s->bucket, &c, msg, msg_len)))
		goto fail;
	if (!c.access_key && (err = tempcreds_source(TC_ALI_ECS, &hc, &src, msg, msg_len)) != 1) {
		char why[512] = "";
		if (err)
			return err;
		if (keyring_open(&src, &s->keys, why, sizeof(why)) == 0)
			return 0;
		log_debug("no ECS RAM role (%s)", why); /* off ECS: a public bucket */
	}
	log_debug("credentials: %s", c.access_key ? from : "none (anonymous requests)");
	return keyring_fixed(&c, &s->keys);
fail:
	creds_free(&c);
	return err;
}

static void iso_now(char out[17])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* The resource OSS signs: "/bucket/key" whatever the host style; a
 * bucket-level request is "/bucket/". @path is what is sent (encoded). */
static int signed_path(const struct s3 *s, const char *path, char *out, size_t len)
{
	const char *rest = path;
	size_t bl = strlen(s->bucket);
	int n;

	if (s->path_style && strncmp(path, "/", 1) == 0 && strncmp(path + 1, s->bucket, bl) == 0 &&
	    (path[1 + bl] == '/' || path[1 + bl] == '\0'))
		rest = path + 1 + bl;
	n = snprintf(out, len, "/%s%s", s->bucket, *rest ? rest : "/");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int oss_sign_v4(struct s3 *s, const struct s3_req *r, const struct keyset *k,
		       struct http_headers *h)
{
	char date[17], authz[1024], path[4200];
	struct sigv4_header sh[4];
	size_t n = 0;
	int err;

	iso_now(date);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-oss-date: %s", date);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-oss-content-sha256: UNSIGNED-PAYLOAD");
	if (!k)
		return 0;
	sh[n++] = (struct sigv4_header){"x-oss-date", date};
	sh[n++] = (struct sigv4_header){"x-oss-content-sha256", "UNSIGNED-PAYLOAD"};
	if (r->ranged)
		sh[n++] = (struct sigv4_header){"x-oss-range-behavior", "standard"};
	if (k->session_token) {
		sh[n++] = (struct sigv4_header){"x-oss-security-token", k->session_token};
		if (snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-oss-security-token: %s",
			     k->session_token) >= HTTP_HEADER_MAX)
			return -ENAMETOOLONG;
	}
	if ((err = signed_path(s, r->path, path, sizeof(path))) != 0)
		return err;
	{
		struct sigv4_request req = {
		    .dialect = &sigv4_oss,
		    .method = r->method,
		    .path = path,
		    .query = r->query,
		    .headers = sh,
		    .n_headers = n,
		    .payload_hash = "UNSIGNED-PAYLOAD",
		    .amz_date = date,
		    .region = s->region,
		    .service = "oss",
		    .access_key = k->access_key,
		    .secret_key = k->secret_key,
		};
		err = sigv4_sign(&req, authz, sizeof(authz), NULL, 0);
		if (err)
			return err;
	}
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "Authorization: %s", authz);
	return 0;
}

/* V1: "OSS AK:base64(HMAC-SHA1(SK, VERB\n\n\nDate\n x-oss-headers resource))",
 * the resource the raw "/bucket/key" and, of our query, only the signed
 * sub-resource continuation-token. */
static int oss_sign_v1(struct s3 *s, const struct s3_req *r, const struct keyset *k,
		       struct http_headers *h)
{
	char date[64], path[4200], res[8400], sts[9000], tok[2048] = "";
	unsigned char mac[20];
	unsigned int mlen = sizeof(mac);
	char b64[64];
	const char *q;
	time_t t = time(NULL);
	struct tm tm;
	int err, n;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "Date: %s", date);
	if (!k)
		return 0;
	if ((err = signed_path(s, r->path, path, sizeof(path))) != 0 ||
	    (err = uri_decode(path, strlen(path), res, sizeof(res) - 2100, NULL)) != 0)
		return err;
	q = r->query ? strstr(r->query, "continuation-token=") : NULL;
	if (q && (q == r->query || q[-1] == '&')) {
		const char *v = q + strlen("continuation-token="), *e = strchr(v, '&');
		if ((err = uri_decode(v, e ? (size_t)(e - v) : strlen(v), tok, sizeof(tok), NULL)) != 0)
			return err;
		strcat(res, "?continuation-token=");
		strcat(res, tok);
	}
	if (k->session_token)
		snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-oss-security-token: %s", k->session_token);
	n = snprintf(sts, sizeof(sts), "%s\n\n\n%s\n%s%s%s%s%s", r->method, date,
		     r->ranged ? "x-oss-range-behavior:standard\n" : "",
		     k->session_token ? "x-oss-security-token:" : "",
		     k->session_token ? k->session_token : "", k->session_token ? "\n" : "", res);
	if (n < 0 || (size_t)n >= sizeof(sts))
		return -ENAMETOOLONG;
	HMAC(EVP_sha1(), k->secret_key, (int)strlen(k->secret_key), (unsigned char *)sts,
	     (size_t)n, mac, &mlen);
	EVP_EncodeBlock((unsigned char *)b64, mac, (int)mlen);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "Authorization: OSS %s:%s", k->access_key, b64);
	return 0;
}

static int oss_sign(struct s3 *s, const struct s3_req *r, const struct keyset *k,
		    struct http_headers *h)
{
	return s->sigv1 ? oss_sign_v1(s, r, k, h) : oss_sign_v4(s, r, k, h);
}

static const struct s3_flavor oss_flavor = {"oss", oss_sign, "x-oss-range-behavior: standard",
					    .url_listing = 1};

static int oss_open(const char *source, const struct backend_config *cfg, struct backend **out,
		    char *msg, size_t msg_len)
{
	struct oss_args a;
	struct s3 *s;
	char *prefix = NULL, *endpoint = NULL;
	int err;

	if ((err = oss_args(cfg, &a, msg, msg_len)))
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &backend_oss;
	s->fl = &oss_flavor;
	s->sigv1 = a.sigv == 1;
	err = backend_split_path(source + strlen("oss://"), &s->bucket, &prefix);
	if (err == -EINVAL)
		snprintf(msg, msg_len, "bad source '%s': expected %s", source, backend_oss.syntax);
	if (err || (err = backend_base_init(&s->base, &backend_oss, prefix)))
		goto out_err;
	/* endpoints as users write them: a host (https), or a URL */
	if (a.endpoint)
		err = asprintf(&endpoint, "%s%s", strstr(a.endpoint, "://") ? "" : "https://",
			       a.endpoint) < 0 ? -ENOMEM : 0;
	else if (a.region)
		err = asprintf(&endpoint, "https://oss-%s.aliyuncs.com",
			       strncmp(a.region, "oss-", 4) == 0 ? a.region + 4 : a.region) < 0
			  ? -ENOMEM : 0;
	else {
		snprintf(msg, msg_len, "oss:// needs -o endpoint=HOST (e.g. "
				       "oss-cn-beijing.aliyuncs.com) or -o region=NAME");
		err = -EINVAL;
	}
	if (err)
		goto out_err;
	err = s3core_setup(s, endpoint, a.path_style, cfg);
	if (!err && s->ep.path[0] && strcmp(s->ep.path, "/") != 0)
		err = -EINVAL; /* OSS signs /bucket/key: an endpoint is a host */
	if (err == -EINVAL)
		snprintf(msg, msg_len, "bad endpoint '%s': expected HOST[:PORT] or "
				       "http[s]://HOST[:PORT], without a path", endpoint);
	if (err)
		goto out_err;
	/* the region: given ("oss-cn-beijing" or "cn-beijing"), else the endpoint's */
	if (a.region)
		s->region = strdup(strncmp(a.region, "oss-", 4) == 0 ? a.region + 4 : a.region);
	else if (!(s->region = region_of_host(s->ep.host)) && !s->sigv1) {
		snprintf(msg, msg_len, "cannot tell the region from endpoint %s (V4 signatures "
				       "name it): set -o region=NAME, e.g. cn-beijing", s->ep.host);
		err = -EINVAL;
		goto out_err;
	}
	if (!s->region && !(s->region = strdup("")))
		err = -ENOMEM;
	if (err || (err = backend_base_name(&s->base, "oss://%s@%s", s->bucket, endpoint)) ||
	    (err = backend_base_what(&s->base, "bucket '%s'", s->bucket)))
		goto out_err;
	if ((err = oss_keys(&a, cfg, s, msg, msg_len)))
		goto out_err;
	free(endpoint);
	free(prefix);
	*out = &s->base;
	return 0;
out_err:
	free(endpoint);
	free(prefix);
	s3core_close(&s->base);
	return err;
}

const struct backend_ops backend_oss = {
    .scheme = "oss",
    .lists_by_dir = 1,
    .syntax = "oss://BUCKET[/PREFIX]",
    .help = "oss://BUCKET[/PREFIX]: Alibaba Cloud OSS (signature V4; V1 with sigv=1)\n"
	    "  endpoint=HOST|URL      e.g. oss-cn-beijing.aliyuncs.com (https), "
	    "...-internal...,\n"
	    "                         a custom domain, http://IP:PORT (path style); also url=\n"
	    "  region=NAME            cn-beijing (default: from the endpoint; the endpoint from it)\n"
	    "  sigv=1|4               signature version (default 4)\n"
	    "  passwd_file=PATH       ossfs passwd file, BUCKET:AK:SK or AK:SK lines, mode 0600;\n"
	    "                         wins over the environment (else /etc/passwd-ossfs, 0640)\n"
	    "  creds_dir=DIR          a mounted secret: files fs.oss.accessKeyId and\n"
	    "                         fs.oss.accessKeySecret (or akId, akSecret), re-read when\n"
	    "                         they change; wins over the environment\n"
	    "  path_style, virtual_host  bucket in the path / the host (path style for IPs)\n"
	    "  Credentials: creds_dir= or passwd_file=, else OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET\n"
	    "  [/OSS_SESSION_TOKEN], else ALIBABA_CLOUD_ACCESS_KEY_ID/..._SECRET\n"
	    "  [/ALIBABA_CLOUD_SECURITY_TOKEN], else a pod's OIDC token (RRSA:\n"
	    "  ALIBABA_CLOUD_OIDC_TOKEN_FILE, ALIBABA_CLOUD_ROLE_ARN, ..._OIDC_PROVIDER_ARN;\n"
	    "  STS at ALIBABA_CLOUD_STS_ENDPOINT or sts.aliyuncs.com), else /etc/passwd-ossfs,\n"
	    "  else the ECS instance's RAM role (ALIBABA_CLOUD_ECS_METADATA names it;\n"
	    "  ALIBABA_CLOUD_ECS_METADATA_DISABLED=true: not asked); none: anonymous.\n"
	    "  Temporary keys are renewed before they expire.\n",
    .options = oss_options,
    .open = oss_open,
    .close = s3core_close,
    .check = s3core_check,
    .list = s3core_list,
    .stat = s3core_stat,
    .read = s3core_read,
    .read_stream = s3core_read_stream,
    .cancel = s3core_cancel,
    .endpoint = s3core_endpoint,
};
