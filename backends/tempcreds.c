/* Temporary credentials from a token or an instance (tempcreds.h). Written
 * from the vendors' API documents: STS's AssumeRoleWithWebIdentity (a form
 * POST, unsigned, XML answer), Alibaba STS's AssumeRoleWithOIDC (RPC style,
 * unsigned, JSON answer), EC2's IMDSv2 and ECS's metadata service (a token
 * PUT, then the role and its keys as JSON). */
#include "tempcreds.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "backend.h"
#include "log.h"
#include "s3xml.h"
#include "uri.h"

#define METADATA_CONNECT_MS 1000
#define METADATA_TIMEOUT_MS 2000
#define TOKEN_MAX (16 << 10)
#define SESSION_SECONDS 3600

struct tc {
	enum tempcreds_kind kind;
	struct http *http;
	char *url;        /* STS endpoint, or the metadata service's base URL */
	char *token_file; /* the pod's projected token (STS kinds) */
	char *role_arn, *provider_arn, *session;
	char *role;       /* the instance's role, once known (metadata kinds) */
	int asked;        /* a first fetch was made: later ones get retries */
	char what[600];
};

static void tc_free(void *arg)
{
	struct tc *t = arg;

	if (!t)
		return;
	http_close(t->http);
	free(t->url);
	free(t->token_file);
	free(t->role_arn);
	free(t->provider_arn);
	free(t->session);
	free(t->role);
	free(t);
}

/* A token file's text, trimmed; the caller cleanses and frees it. */
static int read_token(const char *path, char **out, char *msg, size_t msg_len)
{
	FILE *f = fopen(path, "re");
	char *buf, *s, *e;
	size_t n;

	if (!f) {
		int err = -errno;
		snprintf(msg, msg_len, "token file %s: %s", path, strerror(-err));
		return err;
	}
	if (!(buf = malloc(TOKEN_MAX + 1))) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, TOKEN_MAX + 1, f);
	fclose(f);
	buf[n > TOKEN_MAX ? TOKEN_MAX : n] = '\0';
	for (s = buf; isspace((unsigned char)*s); s++)
		;
	for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]);)
		*--e = '\0';
	if (n > TOKEN_MAX || !*s) {
		snprintf(msg, msg_len, "token file %s: %s", path, n > TOKEN_MAX ? "too long" : "empty");
		OPENSSL_cleanse(buf, TOKEN_MAX + 1);
		free(buf);
		return -EINVAL;
	}
	memmove(buf, s, strlen(s) + 1);
	*out = buf;
	return 0;
}

/* "&name=value", the value form-encoded, appended to @body (heap). */
static int form_add(char **body, const char *name, const char *value)
{
	size_t have = *body ? strlen(*body) : 0, need = strlen(value) * 3 + strlen(name) + 3;
	char *b = realloc(*body, have + need);

	if (!b)
		return -ENOMEM;
	*body = b;
	snprintf(b + have, need, "%s%s=", have ? "&" : "", name);
	return uri_encode(value, 0, b + strlen(b), have + need - strlen(b)) < 0 ? -ENAMETOOLONG : 0;
}

struct hdrs {
	const char *v[3];
};

static int add_hdrs(void *arg, struct http_headers *h)
{
	const struct hdrs *x = arg;

	for (size_t i = 0; x && i < 3 && x->v[i]; i++)
		snprintf(h->v[h->n++], HTTP_HEADER_MAX, "%s", x->v[i]);
	return 0;
}

/* One request; 0 with @resp (status and body) or -errno with @msg. */
static int ask(struct tc *t, const char *method, const char *url, const char *body,
	       const struct hdrs *h, struct http_response *resp, char *msg, size_t msg_len)
{
	int metadata = t->kind == TC_AWS_IMDS || t->kind == TC_ALI_ECS;
	struct http_request q = {
	    .method = method,
	    .url = url,
	    .body = body,
	    .prepare = add_hdrs,
	    .prepare_arg = (void *)h,
	    .body_max = 64 << 10,
	    .timeout_ms = metadata ? METADATA_TIMEOUT_MS : 0,
	};
	int err = http_perform(t->http, &q, metadata && !t->asked ? 1 : 0, resp);

	if (err)
		snprintf(msg, msg_len, "%s: %s", t->what, resp->error[0] ? resp->error : strerror(-err));
	return err;
}

static int status_err(long status)
{
	return status == 401 || status == 403 ? -EACCES
	       : status == 404		      ? -ENOENT
	       : status >= 400 && status < 500 ? -EINVAL
					      : -EIO;
}

/* The text of the first <@tag> after @from in @xml, entities decoded. */
static int xml_text(const char *xml, const char *from, const char *tag, char *out, size_t len)
{
	char open[64], close[64];
	const char *s = from ? strstr(xml, from) : xml, *e;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	if (!s || !(s = strstr(s, open)) || !(e = strstr(s += strlen(open), close)))
		return -ENOENT;
	for (; s < e && o + 1 < len; o++) {
		static const char *const ent[][2] = {
		    {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}};
		size_t i;
		for (i = 0; i < 5; i++)
			if (strncmp(s, ent[i][0], strlen(ent[i][0])) == 0)
				break;
		out[o] = i < 5 ? ent[i][1][0] : *s;
		s += i < 5 ? strlen(ent[i][0]) : 1;
	}
	out[o] = '\0';
	return s == e ? 0 : -ENAMETOOLONG;
}

static int set_creds(struct creds *out, const char *ak, const char *sk, const char *tok)
{
	if (!ak || !sk || !*ak || !*sk)
		return -EPROTO;
	out->access_key = strdup(ak);
	out->secret_key = strdup(sk);
	out->session_token = tok && *tok ? strdup(tok) : NULL;
	if (!out->access_key || !out->secret_key || (tok && *tok && !out->session_token)) {
		creds_free(out);
		return -ENOMEM;
	}
	return 0;
}

static int64_t expiry_ms(const char *iso)
{
	long long t = s3xml_parse_time(iso);

	return t > 0 ? (int64_t)t * 1000 : -1;
}

/* What a token exchange held: the pod's token, the form that carried it and
 * the answer with the keys, wiped before they are freed. */
static void scrub(char *token, char *body, struct http_response *resp)
{
	if (token)
		OPENSSL_cleanse(token, strlen(token));
	free(token);
	if (body)
		OPENSSL_cleanse(body, strlen(body));
	free(body);
	if (resp->body)
		OPENSSL_cleanse(resp->body, resp->body_len);
	http_response_free(resp);
}

/* ---- AWS STS AssumeRoleWithWebIdentity */

static int aws_sts_fetch(void *arg, struct creds *out, int64_t *expires, char *msg,
			 size_t msg_len)
{
	struct tc *t = arg;
	char *token = NULL, *body = NULL, ak[256], sk[256], tok[4096], exp[64];
	static const struct hdrs h = {{"Accept: application/xml"}};
	struct http_response resp = {0};
	int err;

	if ((err = read_token(t->token_file, &token, msg, msg_len)))
		return err;
	if ((err = form_add(&body, "Action", "AssumeRoleWithWebIdentity")) ||
	    (err = form_add(&body, "Version", "2011-06-15")) ||
	    (err = form_add(&body, "RoleArn", t->role_arn)) ||
	    (err = form_add(&body, "RoleSessionName", t->session)) ||
	    (err = form_add(&body, "DurationSeconds", "3600")) ||
	    (err = form_add(&body, "WebIdentityToken", token)))
		goto out;
	if ((err = ask(t, "POST", t->url, body, &h, &resp, msg, msg_len)))
		goto out;
	if (resp.status != 200) {
		char code[128] = "", text[256] = "";
		const char *b = resp.body ? resp.body : "";
		xml_text(b, NULL, "Code", code, sizeof(code));
		xml_text(b, NULL, "Message", text, sizeof(text));
		snprintf(msg, msg_len, "%s: HTTP %ld%s%s%s%s", t->what, resp.status, *code ? " " : "",
			 code, *text ? ": " : "", text);
		err = status_err(resp.status);
		goto out;
	}
	if (!resp.body || xml_text(resp.body, "<Credentials>", "AccessKeyId", ak, sizeof(ak)) ||
	    xml_text(resp.body, "<Credentials>", "SecretAccessKey", sk, sizeof(sk)) ||
	    xml_text(resp.body, "<Credentials>", "SessionToken", tok, sizeof(tok)) ||
	    xml_text(resp.body, "<Credentials>", "Expiration", exp, sizeof(exp)) ||
	    (*expires = expiry_ms(exp)) < 0 || (err = set_creds(out, ak, sk, tok))) {
		snprintf(msg, msg_len, "%s: an answer without Credentials", t->what);
		err = err ? err : -EPROTO;
	}
	OPENSSL_cleanse(sk, sizeof(sk));
	OPENSSL_cleanse(tok, sizeof(tok));
out:
	scrub(token, body, &resp);
	return err;
}

/* ---- Alibaba STS AssumeRoleWithOIDC */

static int ali_oidc_fetch(void *arg, struct creds *out, int64_t *expires, char *msg,
			  size_t msg_len)
{
	struct tc *t = arg;
	char *token = NULL, *body = NULL, url[1200], now[32];
	static const struct hdrs h = {{"Accept: application/json"}};
	struct http_response resp = {0};
	json_t *j = NULL, *c;
	time_t tt = time(NULL);
	struct tm tm;
	int err;

	gmtime_r(&tt, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H%%3A%M%%3A%SZ", &tm);
	snprintf(url, sizeof(url), "%s/?Action=AssumeRoleWithOIDC&Format=JSON&Version=2015-04-01"
		 "&Timestamp=%s", t->url, now);
	if ((err = read_token(t->token_file, &token, msg, msg_len)))
		return err;
	if ((err = form_add(&body, "RoleArn", t->role_arn)) ||
	    (err = form_add(&body, "OIDCProviderArn", t->provider_arn)) ||
	    (err = form_add(&body, "RoleSessionName", t->session)) ||
	    (err = form_add(&body, "DurationSeconds", "3600")) ||
	    (err = form_add(&body, "OIDCToken", token)))
		goto out;
	if ((err = ask(t, "POST", url, body, &h, &resp, msg, msg_len)))
		goto out;
	j = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
	if (resp.status != 200) {
		const char *code = json_string_value(json_object_get(j, "Code"));
		const char *text = json_string_value(json_object_get(j, "Message"));
		snprintf(msg, msg_len, "%s: HTTP %ld%s%s%s%.200s", t->what, resp.status,
			 code ? " " : "", code ? code : "", text ? ": " : "", text ? text : "");
		err = status_err(resp.status);
		goto out;
	}
	c = json_object_get(j, "Credentials");
	if ((*expires = expiry_ms(json_string_value(json_object_get(c, "Expiration")))) < 0 ||
	    (err = set_creds(out, json_string_value(json_object_get(c, "AccessKeyId")),
			     json_string_value(json_object_get(c, "AccessKeySecret")),
			     json_string_value(json_object_get(c, "SecurityToken"))))) {
		snprintf(msg, msg_len, "%s: an answer without Credentials", t->what);
		err = err ? err : -EPROTO;
	}
out:
	json_decref(j);
	scrub(token, body, &resp);
	return err;
}

/* ---- the instance metadata services: EC2 (IMDSv2) and ECS */

static int md_fetch(void *arg, struct creds *out, int64_t *expires, char *msg, size_t msg_len)
{
	struct tc *t = arg;
	int aws = t->kind == TC_AWS_IMDS;
	const char *list = aws ? "/latest/meta-data/iam/security-credentials/"
			       : "/latest/meta-data/ram/security-credentials/";
	char url[1200], tokhdr[700], mdtok[512];
	struct hdrs ttl = {{aws ? "X-aws-ec2-metadata-token-ttl-seconds: 21600"
				: "X-aliyun-ecs-metadata-token-ttl-seconds: 21600"}};
	struct hdrs with = {{tokhdr}};
	struct http_response resp = {0};
	json_t *j = NULL;
	const char *code;
	int err;

	snprintf(url, sizeof(url), "%s/latest/api/token", t->url);
	if ((err = ask(t, "PUT", url, "", &ttl, &resp, msg, msg_len)))
		goto out;
	if (resp.status != 200 || !resp.body || resp.body_len >= sizeof(mdtok)) {
		snprintf(msg, msg_len, "%s: its session token: HTTP %ld", t->what, resp.status);
		err = status_err(resp.status);
		goto out;
	}
	snprintf(mdtok, sizeof(mdtok), "%.*s", (int)resp.body_len, resp.body);
	mdtok[strcspn(mdtok, "\r\n")] = '\0';
	snprintf(tokhdr, sizeof(tokhdr), "%s: %s",
		 aws ? "X-aws-ec2-metadata-token" : "X-aliyun-ecs-metadata-token", mdtok);
	http_response_free(&resp);
	if (!t->role) {
		snprintf(url, sizeof(url), "%s%s", t->url, list);
		if ((err = ask(t, "GET", url, NULL, &with, &resp, msg, msg_len)))
			goto out;
		if (resp.status != 200 || !resp.body || !resp.body_len) {
			snprintf(msg, msg_len, "%s: no role attached to this instance (HTTP %ld)",
				 t->what, resp.status);
			err = resp.status == 200 ? -ENOENT : status_err(resp.status);
			goto out;
		}
		t->role = strndup(resp.body, strcspn(resp.body, "\r\n"));
		http_response_free(&resp);
		if (!t->role || !*t->role || strchr(t->role, '/')) {
			free(t->role);
			t->role = NULL;
			snprintf(msg, msg_len, "%s: a bad role name", t->what);
			err = -EPROTO;
			goto out;
		}
	}
	snprintf(url, sizeof(url), "%s%s%s", t->url, list, t->role);
	if ((err = ask(t, "GET", url, NULL, &with, &resp, msg, msg_len)))
		goto out;
	j = resp.body ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
	code = json_string_value(json_object_get(j, "Code"));
	if (resp.status != 200 || !code || strcmp(code, "Success") != 0) {
		snprintf(msg, msg_len, "%s: role %s: HTTP %ld%s%s", t->what, t->role, resp.status,
			 code ? " " : "", code ? code : "");
		err = resp.status == 200 ? -EACCES : status_err(resp.status);
		goto out;
	}
	if ((*expires = expiry_ms(json_string_value(json_object_get(j, "Expiration")))) < 0 ||
	    (err = set_creds(out, json_string_value(json_object_get(j, "AccessKeyId")),
			     json_string_value(json_object_get(j, aws ? "SecretAccessKey"
								      : "AccessKeySecret")),
			     json_string_value(json_object_get(j, aws ? "Token" : "SecurityToken"))))) {
		snprintf(msg, msg_len, "%s: role %s: an answer without keys", t->what, t->role);
		err = err ? err : -EPROTO;
	}
out:
	t->asked = 1;
	OPENSSL_cleanse(mdtok, sizeof(mdtok));
	OPENSSL_cleanse(tokhdr, sizeof(tokhdr));
	json_decref(j);
	if (resp.body)
		OPENSSL_cleanse(resp.body, resp.body_len);
	http_response_free(&resp);
	return err;
}

/* ---- setting them up */

static int is_true(const char *v)
{
	return v && strcasecmp(v, "true") == 0;
}

/* http[s]://HOST[:PORT] as given, or a bare host: https. No trailing slash. */
static char *endpoint_url(const char *v)
{
	char *u = NULL;

	if (asprintf(&u, "%s%s", strstr(v, "://") ? "" : "https://", v) < 0)
		return NULL;
	for (size_t n = strlen(u); n && u[n - 1] == '/';)
		u[--n] = '\0';
	return u;
}

int tempcreds_source(enum tempcreds_kind kind, const struct http_config *hc,
		     struct key_source *src, char *msg, size_t msg_len)
{
	struct http_config c = *hc;
	struct tc *t;
	const char *v, *tf = NULL, *arn = NULL, *parn = NULL, *sess = NULL, *ep = NULL;
	char host[300];
	int err = -ENOMEM;

	switch (kind) {
	case TC_AWS_WEB_IDENTITY:
		tf = backend_getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
		arn = backend_getenv("AWS_ROLE_ARN");
		if (!tf && !arn)
			return 1;
		if (!tf || !arn) {
			snprintf(msg, msg_len, "%s is set without %s",
				 tf ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
				 tf ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
			return -EINVAL;
		}
		sess = backend_getenv("AWS_ROLE_SESSION_NAME");
		if (!(ep = backend_getenv("AWS_ENDPOINT_URL_STS"))) {
			if (!(v = backend_getenv("AWS_REGION")))
				v = backend_getenv("AWS_DEFAULT_REGION");
			snprintf(host, sizeof(host), v ? "sts.%s.amazonaws.com" : "sts.amazonaws.com",
				 v);
			ep = host;
		}
		break;
	case TC_ALI_OIDC:
		tf = backend_getenv("ALIBABA_CLOUD_OIDC_TOKEN_FILE");
		arn = backend_getenv("ALIBABA_CLOUD_ROLE_ARN");
		parn = backend_getenv("ALIBABA_CLOUD_OIDC_PROVIDER_ARN");
		if (!tf && !parn)
			return 1; /* a role ARN alone is other tools' (AssumeRole with keys) */
		if (!tf || !arn || !parn) {
			snprintf(msg, msg_len, "RRSA needs ALIBABA_CLOUD_OIDC_TOKEN_FILE, "
					       "ALIBABA_CLOUD_ROLE_ARN and ALIBABA_CLOUD_OIDC_PROVIDER_ARN: "
					       "%s is not set",
				 !tf ? "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
				 : !arn ? "ALIBABA_CLOUD_ROLE_ARN" : "ALIBABA_CLOUD_OIDC_PROVIDER_ARN");
			return -EINVAL;
		}
		sess = backend_getenv("ALIBABA_CLOUD_ROLE_SESSION_NAME");
		if (!(ep = backend_getenv("ALIBABA_CLOUD_STS_ENDPOINT"))) {
			v = backend_getenv("ALIBABA_CLOUD_STS_REGION");
			snprintf(host, sizeof(host), v ? "sts.%s.aliyuncs.com" : "sts.aliyuncs.com", v);
			ep = host;
		}
		break;
	case TC_AWS_IMDS:
		if (is_true(backend_getenv("AWS_EC2_METADATA_DISABLED")))
			return 1;
		if (!(ep = backend_getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")))
			ep = "http://169.254.169.254";
		break;
	case TC_ALI_ECS:
		if (is_true(backend_getenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED")))
			return 1;
		if (!(ep = backend_getenv("ALIBABA_CLOUD_ECS_METADATA_ENDPOINT")))
			ep = "http://100.100.100.200";
		break;
	}
	if (!(t = calloc(1, sizeof(*t))))
		return -ENOMEM;
	t->kind = kind;
	if (kind == TC_AWS_IMDS || kind == TC_ALI_ECS) {
		c.connect_timeout_ms = METADATA_CONNECT_MS;
		v = kind == TC_AWS_IMDS ? NULL : backend_getenv("ALIBABA_CLOUD_ECS_METADATA");
		if (v && !(t->role = strdup(v)))
			goto fail;
		snprintf(t->what, sizeof(t->what), "%s instance metadata at %s",
			 kind == TC_AWS_IMDS ? "EC2" : "ECS", ep);
	} else {
		snprintf(t->what, sizeof(t->what), "%s for %s",
			 kind == TC_AWS_WEB_IDENTITY ? "STS AssumeRoleWithWebIdentity"
						     : "STS AssumeRoleWithOIDC",
			 arn);
		if (!(t->token_file = strdup(tf)) || !(t->role_arn = strdup(arn)) ||
		    (parn && !(t->provider_arn = strdup(parn))) ||
		    !(t->session = strdup(sess ? sess : "modelfs")))
			goto fail;
	}
	if (!(t->url = endpoint_url(ep)))
		goto fail;
	if (strncmp(t->url, "http://", 7) != 0 && strncmp(t->url, "https://", 8) != 0) {
		snprintf(msg, msg_len, "bad endpoint '%s': expected http[s]://HOST[:PORT]", ep);
		err = -EINVAL;
		goto fail;
	}
	if ((err = http_open(&c, &t->http)))
		goto fail;
	*src = (struct key_source){
	    .what = t->what,
	    .fetch = kind == TC_AWS_WEB_IDENTITY ? aws_sts_fetch
		     : kind == TC_ALI_OIDC	 ? ali_oidc_fetch
						 : md_fetch,
	    .release = tc_free,
	    .arg = t,
	};
	return 0;
fail:
	tc_free(t);
	return err;
}
