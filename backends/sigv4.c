/* Signature Version 4, AWS's and OSS's (sigv4.h).
 *
 * Canonical request -> string to sign -> HMAC chain (date, region, service,
 * terminator) -> signature. Everything is formatted into caller buffers;
 * the only allocation is the header table copy used for sorting.
 */
#include "sigv4.h"
#include "uri.h"

const struct sigv4_dialect sigv4_aws = {"AWS4-HMAC-SHA256", "AWS4", "aws4_request", 0};
const struct sigv4_dialect sigv4_oss = {"OSS4-HMAC-SHA256", "aliyun_v4", "aliyun_v4_request", 1};

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* A bounded string builder: every append checks room; overflow is sticky. */
struct sb {
	char *buf;
	size_t len, cap;
	int overflow;
};

static void sb_putn(struct sb *b, const char *s, size_t n)
{
	if (b->overflow || b->len + n + 1 > b->cap) {
		b->overflow = 1;
		return;
	}
	memcpy(b->buf + b->len, s, n);
	b->len += n;
	b->buf[b->len] = '\0';
}

static void sb_puts(struct sb *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_putc(struct sb *b, char c) { sb_putn(b, &c, 1); }

static int is_unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static void sb_encode(struct sb *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (is_unreserved(c)) {
			sb_putc(b, (char)c);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};
			sb_putn(b, e, 3);
		}
	}
}


struct qparam {
	char *name, *value; /* encoded canonical forms */
	int has_value;      /* "name=..." rather than "name" */
};

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	return r ? r : strcmp(x->value, y->value);
}

/* Encode one decoded component into a fresh string. */
static char *encode_dup(const char *raw, size_t n)
{
	size_t cap = n * 3 + 1;
	char *out = malloc(cap);
	struct sb b = {out, 0, cap, 0};

	if (!out)
		return NULL;
	out[0] = '\0';
	sb_encode(&b, raw, n);
	return out;
}

static char *canon_component(const char *s, size_t n, int *err)
{
	char *tmp = malloc(n + 1), *res;
	size_t dn;

	if (!tmp) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = uri_decode(s, n, tmp, n + 1, &dn);
	if (*err) {
		free(tmp);
		return NULL;
	}
	res = encode_dup(tmp, dn);
	free(tmp);
	if (!res)
		*err = -ENOMEM;
	return res;
}

int sigv4_canonical_query(const char *query, char *out, size_t out_len)
{
	return sigv4_canonical_query_d(query, 0, out, out_len);
}

int sigv4_canonical_query_d(const char *query, int bare_empty, char *out, size_t out_len)
{
	struct qparam *ps = NULL;
	size_t np = 0, cap = 0;
	struct sb b = {out, 0, out_len, 0};
	const char *p = query;
	int err = 0;

	if (!out || out_len == 0)
		return -ENAMETOOLONG;
	out[0] = '\0';
	if (!query || !*query)
		return 0;

	while (*p) {
		const char *amp = strchr(p, '&');
		size_t seg = amp ? (size_t)(amp - p) : strlen(p);
		const char *eq = memchr(p, '=', seg);
		size_t nlen = eq ? (size_t)(eq - p) : seg;

		if (seg > 0) {
			if (np == cap) {
				size_t ncap = cap ? cap * 2 : 8;
				struct qparam *n = realloc(ps, ncap * sizeof(*ps));
				if (!n) {
					err = -ENOMEM;
					goto out;
				}
				ps = n;
				cap = ncap;
			}
			ps[np].name = canon_component(p, nlen, &err);
			if (!ps[np].name)
				goto out;
			ps[np].value = eq ? canon_component(eq + 1, seg - nlen - 1, &err)
					  : canon_component("", 0, &err);
			ps[np].has_value = eq && seg - nlen - 1 > 0;
			if (!ps[np].value) {
				free(ps[np].name);
				goto out;
			}
			np++;
		}
		p += seg;
		if (*p == '&')
			p++;
	}
	if (np > 1)
		qsort(ps, np, sizeof(*ps), qparam_cmp);
	for (size_t i = 0; i < np; i++) {
		if (i)
			sb_putc(&b, '&');
		sb_puts(&b, ps[i].name);
		if (!bare_empty || ps[i].has_value) {
			sb_putc(&b, '=');
			sb_puts(&b, ps[i].value);
		}
	}
	if (b.overflow)
		err = -ENAMETOOLONG;
out:
	for (size_t i = 0; i < np; i++) {
		free(ps[i].name);
		free(ps[i].value);
	}
	free(ps);
	if (err)
		out[0] = '\0';
	return err;
}

void sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(data, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int olen = 32;

	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &olen);
}

struct hdr {
	char name[64];
	const char *value;
};

static int hdr_cmp(const void *a, const void *b)
{
	return strcmp(((const struct hdr *)a)->name, ((const struct hdr *)b)->name);
}

/* Append a header value trimmed, with inner runs of blanks folded to one
 * (AWS) or kept (OSS, @fold 0). */
static void sb_put_trimmed(struct sb *b, const char *v, int fold)
{
	const char *e;

	while (*v == ' ' || *v == '\t')
		v++;
	e = v + strlen(v);
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	for (; v < e; v++) {
		if (fold && (*v == ' ' || *v == '\t')) {
			while (v + 1 < e && (v[1] == ' ' || v[1] == '\t'))
				v++;
			sb_putc(b, ' ');
			continue;
		}
		sb_putc(b, *v);
	}
}

/* OSS signs content-type, content-md5 and x-oss-* by default; any other
 * signed header is named in AdditionalHeaders. */
static int oss_default_signed(const char *lower)
{
	return strcmp(lower, "content-type") == 0 || strcmp(lower, "content-md5") == 0 ||
	       strncmp(lower, "x-oss-", 6) == 0;
}

int sigv4_sign(const struct sigv4_request *req, char *out, size_t out_len,
	       char *canonical_out, size_t canonical_len)
{
	char creq[8192], cquery[4096], sts[512], signed_hdrs[1024], hash[65];
	char scope[128], kdate_key[128];
	unsigned char k[32], sig[32];
	struct sb c = {creq, 0, sizeof(creq), 0};
	struct sb sh = {signed_hdrs, 0, sizeof(signed_hdrs), 0};
	struct hdr *hs;
	int err;

	const struct sigv4_dialect *d = req && req->dialect ? req->dialect : &sigv4_aws;

	if (!req || !req->method || !req->path || !req->amz_date || strlen(req->amz_date) != 16 ||
	    !req->region || !req->service || !req->access_key || !req->secret_key ||
	    !req->payload_hash || req->n_headers == 0 || req->n_headers > 64)
		return -EINVAL;

	signed_hdrs[0] = '\0'; /* OSS may list none */
	err = sigv4_canonical_query_d(req->query, d->oss, cquery, sizeof(cquery));
	if (err)
		return err;

	hs = calloc(req->n_headers, sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	for (size_t i = 0; i < req->n_headers; i++) {
		size_t n = strlen(req->headers[i].name);
		if (n == 0 || n >= sizeof(hs[i].name)) {
			free(hs);
			return -EINVAL;
		}
		for (size_t j = 0; j <= n; j++)
			hs[i].name[j] = (char)tolower((unsigned char)req->headers[i].name[j]);
		hs[i].value = req->headers[i].value ? req->headers[i].value : "";
	}
	qsort(hs, req->n_headers, sizeof(*hs), hdr_cmp);

	sb_puts(&c, req->method);
	sb_putc(&c, '\n');
	sb_puts(&c, req->path);
	sb_putc(&c, '\n');
	sb_puts(&c, cquery);
	sb_putc(&c, '\n');
	for (size_t i = 0; i < req->n_headers; i++) {
		sb_puts(&c, hs[i].name);
		sb_putc(&c, ':');
		sb_put_trimmed(&c, hs[i].value, !d->oss);
		sb_putc(&c, '\n');
		if (d->oss && oss_default_signed(hs[i].name))
			continue; /* AdditionalHeaders: the others only */
		if (sh.len)
			sb_putc(&sh, ';');
		sb_puts(&sh, hs[i].name);
	}
	free(hs);
	sb_putc(&c, '\n');
	sb_puts(&c, signed_hdrs);
	sb_putc(&c, '\n');
	sb_puts(&c, req->payload_hash);
	if (c.overflow || sh.overflow)
		return -ENAMETOOLONG;
	if (canonical_out) {
		if (strlen(creq) + 1 > canonical_len)
			return -ENAMETOOLONG;
		memcpy(canonical_out, creq, strlen(creq) + 1);
	}

	if (snprintf(scope, sizeof(scope), "%.8s/%s/%s/%s", req->amz_date, req->region,
		     req->service, d->terminator) >= (int)sizeof(scope))
		return -ENAMETOOLONG;
	sigv4_sha256_hex(creq, strlen(creq), hash);
	if (snprintf(sts, sizeof(sts), "%s\n%s\n%s\n%s", d->algorithm, req->amz_date, scope,
		     hash) >= (int)sizeof(sts))
		return -ENAMETOOLONG;

	if (snprintf(kdate_key, sizeof(kdate_key), "%s%s", d->key_prefix, req->secret_key) >=
	    (int)sizeof(kdate_key))
		return -EINVAL;
	{
		char date[9];
		memcpy(date, req->amz_date, 8);
		date[8] = '\0';
		hmac(kdate_key, strlen(kdate_key), date, k);
	}
	OPENSSL_cleanse(kdate_key, sizeof(kdate_key));
	hmac(k, 32, req->region, k);
	hmac(k, 32, req->service, k);
	hmac(k, 32, d->terminator, k);
	hmac(k, 32, sts, sig);
	OPENSSL_cleanse(k, sizeof(k));

	{
		char sighex[65];
		for (int i = 0; i < 32; i++)
			snprintf(sighex + 2 * i, 3, "%02x", sig[i]);
		int n = d->oss ? snprintf(out, out_len, "%s Credential=%s/%s%s%s,Signature=%s",
					  d->algorithm, req->access_key, scope,
					  *signed_hdrs ? ",AdditionalHeaders=" : "", signed_hdrs,
					  sighex)
			       : snprintf(out, out_len, "%s Credential=%s/%s, SignedHeaders=%s, "
							"Signature=%s",
					  d->algorithm, req->access_key, scope, signed_hdrs, sighex);
		if (n < 0 || n >= (int)out_len)
			return -ENAMETOOLONG;
	}
	return 0;
}
