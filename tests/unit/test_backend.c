/* Unit tests for backends/backend.c and the sources' own parsing: the scheme
 * registry, SOURCE syntax, each backend's options and environment, and the
 * names a backend gives itself (the cache's namespace). Nothing is sent:
 * open creates a client only. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "http.h"
#include "jsonlist.h"

static void clear_env(void)
{
	static const char *const vars[] = {
	    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
	    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
	};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/modelfs-test", 1);
}

/* backend_open with options given as a NULL-terminated list. */
static int open_with(const char *source, struct backend **be, char *msg, size_t len, ...)
{
	const char *opts[16];
	size_t n = 0;
	va_list ap;
	struct backend_config cfg = {.retries = 0, .connect_timeout_ms = 1000,
				     .request_timeout_ms = 1000};

	va_start(ap, len);
	while (n < 16 && (opts[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	cfg.opts = opts;
	cfg.n_opts = n;
	return backend_open(source, &cfg, be, msg, len);
}

static void closebe(struct backend *be)
{
	if (be)
		be->ops->close(be);
}

static void test_registry(void)
{
	struct backend *be = NULL;
	char msg[512];
	size_t n;
	const struct backend_ops *const *all = backend_registry(&n);

	CHECK(n >= 1);
	for (size_t i = 0; i < n; i++) {
		CHECK(all[i]->scheme && all[i]->syntax && all[i]->help && all[i]->options);
		CHECK(strncmp(all[i]->syntax, all[i]->scheme, strlen(all[i]->scheme)) == 0);
		CHECK(strstr(backend_schemes(), all[i]->scheme) != NULL);
	}
	/* an unknown scheme: the line lists every syntax there is */
	CHECK(open_with("gs://models", &be, msg, sizeof(msg), NULL) == -EPROTONOSUPPORT);
	CHECK(be == NULL);
	CHECK(strstr(msg, "unsupported source 'gs://models'") != NULL);
	for (size_t i = 0; i < n; i++)
		CHECK(strstr(msg, all[i]->syntax) != NULL);
	CHECK(open_with("models", &be, msg, sizeof(msg), NULL) == -EPROTONOSUPPORT);
	CHECK(open_with("s3:/models", &be, msg, sizeof(msg), NULL) == -EPROTONOSUPPORT);
}

static void test_split(void)
{
	char *a, *p;

	CHECK(backend_split_path("b", &a, &p) == 0);
	CHECK_STR(a, "b");
	CHECK_STR(p, "");
	free(a), free(p);
	CHECK(backend_split_path("b/x//y", &a, &p) == -EINVAL); /* empty segment */
	CHECK(backend_split_path("b/x/y/", &a, &p) == 0);
	CHECK_STR(a, "b");
	CHECK_STR(p, "x/y/");
	free(a), free(p);
	CHECK(backend_split_path("", &a, &p) == -EINVAL);
	CHECK(a == NULL && p == NULL);
	CHECK(backend_split_path("/x", &a, &p) == -EINVAL);
	CHECK(backend_split_path("b/../x", &a, &p) == -EINVAL);
	CHECK(backend_split_path("b/./x", &a, &p) == -EINVAL);
	CHECK(backend_split_path("b/x/..", &a, &p) == -EINVAL);
	{
		char long_name[300];
		memset(long_name, 'b', sizeof(long_name) - 1);
		long_name[sizeof(long_name) - 1] = '\0';
		CHECK(backend_split_path(long_name, &a, &p) == -EINVAL);
	}
}

static void test_s3(void)
{
	struct backend *be = NULL;
	char msg[512];

	clear_env();
	CHECK(open_with("s3://b/p/q", &be, msg, sizeof(msg), "endpoint=http://127.0.0.1:9000",
			NULL) == 0);
	if (be) {
		CHECK_STR(be->prefix, "p/q/");
		CHECK_STR(be->name, "s3://b@http://127.0.0.1:9000");
		CHECK_STR(be->what, "bucket 'b'");
		CHECK_STR(be->ops->endpoint(be), "http://127.0.0.1:9000"); /* path style: an IP */
	}
	closebe(be);

	/* no endpoint: AWS's, in the region, virtual host; the name has no '@' */
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "region=eu-west-1", NULL) == 0);
	if (be) {
		CHECK_STR(be->ops->endpoint(be), "https://b.s3.eu-west-1.amazonaws.com");
		CHECK_STR(be->name, "s3://b");
		CHECK_STR(be->prefix, "");
	}
	closebe(be);

	/* the last of path_style / virtual_host wins */
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "endpoint=http://localhost:1",
			"path_style", "virtual_host", NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "http://b.localhost:1");
	closebe(be);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "endpoint=https://s3.example.com",
			"virtual_host", "use_path_request_style", NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "https://s3.example.com");
	closebe(be);

	/* the environment, as the AWS tools read it */
	setenv("AWS_ENDPOINT_URL", "http://general:1", 1);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), NULL) == 0);
	if (be)
		CHECK_STR(be->name, "s3://b@http://general:1");
	closebe(be);
	setenv("AWS_ENDPOINT_URL_S3", "http://specific:2", 1);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), NULL) == 0);
	if (be)
		CHECK_STR(be->name, "s3://b@http://specific:2");
	closebe(be);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "endpoint=http://opt:3", NULL) == 0);
	if (be)
		CHECK_STR(be->name, "s3://b@http://opt:3");
	closebe(be);
	clear_env();
	setenv("AWS_DEFAULT_REGION", "env-default", 1);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "https://b.s3.env-default.amazonaws.com");
	closebe(be);
	setenv("AWS_REGION", "env-region", 1);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "https://b.s3.env-region.amazonaws.com");
	closebe(be);
	/* empty variables are unset ones */
	setenv("AWS_REGION", "", 1);
	setenv("AWS_DEFAULT_REGION", "", 1);
	setenv("AWS_ENDPOINT_URL", "", 1);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), NULL) == 0);
	if (be) {
		CHECK_STR(be->ops->endpoint(be), "https://b.s3.us-east-1.amazonaws.com");
		CHECK_STR(be->name, "s3://b");
	}
	closebe(be);
	clear_env();

	/* each failure its own line */
	be = NULL;
	CHECK(open_with("s3://", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(strstr(msg, "bad source 's3://': expected s3://BUCKET[/PREFIX]") != NULL);
	CHECK(be == NULL);
	CHECK(open_with("s3://b/../x", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(strstr(msg, "bad source") != NULL);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "endpoint=ftp://x", NULL) == -EINVAL);
	CHECK(strstr(msg, "bad endpoint 'ftp://x'") != NULL);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "sigv=1", NULL) == -EINVAL);
	CHECK(strstr(msg, "option 'sigv=1' is not used by s3:// sources") != NULL);
	CHECK(open_with("s3://b", &be, msg, sizeof(msg), "creds_file=/nonexistent/creds",
			NULL) < 0);
	CHECK(strstr(msg, "/nonexistent/creds") != NULL);
	CHECK(be == NULL);
}

static void test_oss(void)
{
	struct backend *be = NULL;
	char msg[512];

	clear_env();
	unsetenv("OSS_ACCESS_KEY_ID");
	unsetenv("OSS_ACCESS_KEY_SECRET");
	unsetenv("ALIBABA_CLOUD_ACCESS_KEY_ID");
	unsetenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET");
	/* endpoints as users write them: a host is https, virtual host */
	CHECK(open_with("oss://b/p", &be, msg, sizeof(msg), "endpoint=oss-cn-beijing.aliyuncs.com",
			NULL) == 0);
	if (be) {
		CHECK_STR(be->ops->endpoint(be), "https://b.oss-cn-beijing.aliyuncs.com");
		CHECK_STR(be->name, "oss://b@https://oss-cn-beijing.aliyuncs.com");
		CHECK_STR(be->prefix, "p/");
		CHECK_STR(be->what, "bucket 'b'");
	}
	closebe(be);
	/* the region alone names the endpoint; ossfs's url= is endpoint= */
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "region=oss-cn-shanghai", NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "https://b.oss-cn-shanghai.aliyuncs.com");
	closebe(be);
	CHECK(open_with("oss://b", &be, msg, sizeof(msg),
			"url=http://oss-cn-hangzhou-internal.aliyuncs.com", NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "http://b.oss-cn-hangzhou-internal.aliyuncs.com");
	closebe(be);
	/* an IP: path style; V4 needs a region then, V1 does not */
	be = NULL;
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "endpoint=http://127.0.0.1:9", NULL) ==
	      -EINVAL);
	CHECK(strstr(msg, "set -o region=NAME") != NULL);
	CHECK(be == NULL);
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "endpoint=http://127.0.0.1:9", "sigv=1",
			NULL) == 0);
	if (be)
		CHECK_STR(be->ops->endpoint(be), "http://127.0.0.1:9");
	closebe(be);
	be = NULL;
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(strstr(msg, "needs -o endpoint=HOST") != NULL);
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "region=x", "sigv=2", NULL) == -EINVAL);
	CHECK(strstr(msg, "sigv") != NULL);
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "region=x", "profile=p", NULL) == -EINVAL);
	CHECK(strstr(msg, "option 'profile=p' is not used by oss:// sources") != NULL);
	/* half a key pair is an error, not anonymous */
	setenv("OSS_ACCESS_KEY_ID", "ak", 1);
	CHECK(open_with("oss://b", &be, msg, sizeof(msg), "region=x", NULL) == -EINVAL);
	CHECK(strstr(msg, "OSS_ACCESS_KEY_ID is set without OSS_ACCESS_KEY_SECRET") != NULL);
	unsetenv("OSS_ACCESS_KEY_ID");
	CHECK(be == NULL);
}

static void test_web_hub(void)
{
	struct backend *be = NULL;
	char msg[512];

	unsetenv("HF_TOKEN");
	unsetenv("HF_TOKEN_PATH");
	unsetenv("HF_ENDPOINT");
	setenv("HF_HOME", "/nonexistent/modelfs-test", 1);
	CHECK(open_with("https://mirror.example/models/llama", &be, msg, sizeof(msg), NULL) == 0);
	if (be) {
		CHECK_STR(be->ops->scheme, "http");
		CHECK_STR(be->name, "https://mirror.example/models/llama/"); /* a directory */
		CHECK_STR(be->prefix, "");
	}
	closebe(be);
	be = NULL;
	CHECK(open_with("http://h/x?q=1", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(open_with("http://h/", &be, msg, sizeof(msg), "token_file=/nonexistent/t", NULL) != 0);
	CHECK(strstr(msg, "token file /nonexistent/t") != NULL);
	CHECK(open_with("http://h/", &be, msg, sizeof(msg), "region=x", NULL) == -EINVAL);
	CHECK(strstr(msg, "not used by http(s):// sources") != NULL);
	/* hf://ORG/MODEL[@REV][/PATH]; a REV with '/' written %2F; the cache
	 * name leaves the revision out (files equal across revisions share) */
	CHECK(open_with("hf://org/model@refs%2Fpr%2F1/sub/dir", &be, msg, sizeof(msg), NULL) == 0);
	if (be) {
		CHECK_STR(be->name, "hf://org/model");
		CHECK_STR(be->prefix, "sub/dir/");
		CHECK_STR(be->what, "model 'org/model' at revision 'refs/pr/1'");
		CHECK_STR(be->ops->endpoint(be), "https://huggingface.co");
	}
	closebe(be);
	setenv("HF_ENDPOINT", "http://127.0.0.1:9/", 1);
	CHECK(open_with("hf://org/model", &be, msg, sizeof(msg), NULL) == 0);
	if (be)
		CHECK_STR(be->name, "hf://org/model@http://127.0.0.1:9");
	closebe(be);
	unsetenv("HF_ENDPOINT");
	be = NULL;
	CHECK(open_with("hf://model", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(open_with("hf://o/m@", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(open_with("hf://o/m@a%0Ab", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(open_with("hf://o/m/../x", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(open_with("hf://datasets/o/m", &be, msg, sizeof(msg), NULL) == -EINVAL);
	CHECK(strstr(msg, "only model repositories") != NULL);
	setenv("HF_TOKEN", "a\nb", 1); /* a token is one line: it goes in a header */
	CHECK(open_with("hf://o/m", &be, msg, sizeof(msg), NULL) == -EINVAL);
	unsetenv("HF_TOKEN");
	CHECK(be == NULL);
}

struct collect {
	char got[512];
};

static int collect_cb(void *arg, const char *key, const struct backend_object *obj)
{
	struct collect *c = arg;
	size_t n = strlen(c->got);

	snprintf(c->got + n, sizeof(c->got) - n, "%s%s%s", n ? " " : "", key, obj ? "" : "(p)");
	return 0;
}

static int count_entry(void *arg, const struct jsonlist_entry *e)
{
	(void)e;
	(*(int *)arg)++;
	return 0;
}

static void test_listing_helpers(void)
{
	struct backend_keylist kl = {0};
	struct collect c = {""};
	char out[256];
	int n = 0;
	static const char manifest[] =
	    "{\"modelfs_manifest\": 1, \"files\": [{\"path\": \"b/x\", \"size\": 1},"
	    "{\"path\": \"a\", \"size\": 2, \"extra\": true}, {\"path\": \"e/\"}]}";

	/* unsorted in, sorted out; one level with prefixes; a key twice once */
	backend_keylist_add(&kl, "m/b/2", 1, 0, "");
	backend_keylist_add(&kl, "m/a", 1, 0, "");
	backend_keylist_add(&kl, "m/b/1", 1, 0, "");
	backend_keylist_add(&kl, "m-x", 1, 0, "");
	backend_keylist_add(&kl, "m/a", 1, 0, "");
	CHECK(backend_keylist_emit(&kl, "m/", "/", collect_cb, &c) == 0);
	CHECK_STR(c.got, "m/a m/b/(p)");
	c.got[0] = '\0';
	CHECK(backend_keylist_emit(&kl, "", NULL, collect_cb, &c) == 0);
	CHECK_STR(c.got, "m-x m/a m/b/1 m/b/2");
	backend_keylist_free(&kl);

	CHECK(jsonlist_path_ok("a/b", 0) && jsonlist_path_ok("d/", 1) && !jsonlist_path_ok("d/", 0));
	CHECK(!jsonlist_path_ok("/a", 0) && !jsonlist_path_ok("a//b", 0) &&
	      !jsonlist_path_ok("a/../b", 0) && !jsonlist_path_ok("./a", 0) &&
	      !jsonlist_path_ok("a\tb", 0) && !jsonlist_path_ok("", 0));
	CHECK(jsonlist_manifest(manifest, strlen(manifest), count_entry, &n, out, sizeof(out)) == 0);
	CHECK(n == 3);
	{
		static const char v2[] = "{\"modelfs_manifest\": 2, \"files\": []}";
		static const char nosize[] = "{\"modelfs_manifest\": 1, \"files\": [{\"path\": \"x\"}]}";
		CHECK(jsonlist_manifest(v2, strlen(v2), count_entry, &n, out, sizeof(out)) == -EPROTO);
		CHECK(jsonlist_manifest(nosize, strlen(nosize), count_entry, &n, out, sizeof(out)) ==
		      -EPROTO);
	}
	CHECK(strstr(out, "no size") != NULL);

	CHECK(http_link_next("<https://h/a?c=1>; rel=\"next\", <https://h/z>; rel=\"last\"", out,
			     sizeof(out)) == 0);
	CHECK_STR(out, "https://h/a?c=1");
	CHECK(http_link_next("<https://h/z>; rel=\"last\", <https://h/b>; rel=next", out,
			     sizeof(out)) == 0);
	CHECK_STR(out, "https://h/b");
	CHECK(http_link_next("<https://h/p>; rel=\"prev\"", out, sizeof(out)) == -ENOENT);
	CHECK(http_link_next("", out, sizeof(out)) == -ENOENT);
	CHECK(http_link_next("<https://h/looooooong>; rel=next", out, 8) == -ENAMETOOLONG);
}

int main(void)
{
	test_web_hub();
	test_listing_helpers();
	test_registry();
	test_split();
	test_s3();
	test_oss();
	return check_done();
}
