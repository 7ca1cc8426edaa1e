/* Unit tests for fs/opts.c: defaults, every option of ours, the arguments
 * handed on to libfuse, environment fall-backs and the refusals. What goes
 * to libfuse is checked by parsing it again with fuse_opt, as libfuse will. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "check.h"
#include "opts.h"

#define MAX_ARGS 32

struct result {
	int ret;
	struct fs_opts o;
	struct fuse_args fa;
	char err[512];
};

/* opts_parse on a NULL-terminated list of arguments (argv[0] is added). */
static void parse(struct result *r, ...)
{
	char *argv[MAX_ARGS + 1];
	int argc = 0;
	const char *a;
	va_list ap;

	argv[argc++] = (char *)"modelfs";
	va_start(ap, r);
	while ((a = va_arg(ap, const char *)) != NULL && argc < MAX_ARGS)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	memset(r, 0, sizeof(*r));
	r->fa = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
	r->ret = opts_parse(argc, argv, &r->o, &r->fa, r->err, sizeof(r->err));
}

static void done(struct result *r)
{
	opts_free(&r->o);
	fuse_opt_free_args(&r->fa);
}

/* What libfuse will make of the arguments we hand it. */
struct fuse_view {
	char fsname[256], subtype[64];
	int n_ro, n_allow_other, n_default_permissions, n_max_read, n_nonopt, n_other;
	char other[256];
};

enum { V_FSNAME, V_SUBTYPE, V_RO, V_ALLOW_OTHER, V_DEFPERM, V_MAX_READ };

static const struct fuse_opt view_spec[] = {
	FUSE_OPT_KEY("fsname=", V_FSNAME),
	FUSE_OPT_KEY("subtype=", V_SUBTYPE),
	FUSE_OPT_KEY("ro", V_RO),
	FUSE_OPT_KEY("allow_other", V_ALLOW_OTHER),
	FUSE_OPT_KEY("default_permissions", V_DEFPERM),
	FUSE_OPT_KEY("max_read=", V_MAX_READ),
	FUSE_OPT_END,
};

static int view_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct fuse_view *v = data;

	(void)outargs;
	switch (key) {
	case V_FSNAME:
		snprintf(v->fsname, sizeof(v->fsname), "%s", arg + strlen("fsname="));
		break;
	case V_SUBTYPE:
		snprintf(v->subtype, sizeof(v->subtype), "%s", arg + strlen("subtype="));
		break;
	case V_RO:
		v->n_ro++;
		break;
	case V_ALLOW_OTHER:
		v->n_allow_other++;
		break;
	case V_DEFPERM:
		v->n_default_permissions++;
		break;
	case V_MAX_READ:
		v->n_max_read++;
		break;
	case FUSE_OPT_KEY_NONOPT:
		v->n_nonopt++;
		break;
	default:
		v->n_other++;
		snprintf(v->other + strlen(v->other), sizeof(v->other) - strlen(v->other), "%s ",
			 arg);
		break;
	}
	return 0;
}

static int view(const struct fuse_args *fa, struct fuse_view *v)
{
	struct fuse_args copy = FUSE_ARGS_INIT(fa->argc, fa->argv);
	int ret;

	memset(v, 0, sizeof(*v));
	ret = fuse_opt_parse(&copy, v, view_spec, view_proc);
	fuse_opt_free_args(&copy);
	return ret;
}

/* Does libfuse itself take the arguments (no unknown option)? A session is
 * created and destroyed; nothing is mounted. */
static int fuse_accepts(const struct fuse_args *fa)
{
	struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);
	struct fuse_lowlevel_ops ops;
	struct fuse_session *se;

	memset(&ops, 0, sizeof(ops));
	for (int i = 0; i < fa->argc; i++)
		if (fuse_opt_add_arg(&copy, fa->argv[i]) == -1)
			return 0;
	se = fuse_session_new(&copy, &ops, sizeof(ops), NULL);
	fuse_opt_free_args(&copy);
	if (!se)
		return 0;
	fuse_session_destroy(se);
	return 1;
}

/* Does any argument for libfuse contain @s? */
static int fargs_contain(const struct fuse_args *fa, const char *s)
{
	for (int i = 0; i < fa->argc; i++)
		if (strstr(fa->argv[i], s))
			return 1;
	return 0;
}

/* The backend options collected, joined by '|' in order. */
static const char *bopts(const struct fs_opts *o)
{
	static char buf[1024];
	size_t at = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < o->n_backend_opts && at < sizeof(buf); i++)
		at += (size_t)snprintf(buf + at, sizeof(buf) - at, "%s%s", i ? "|" : "",
				       o->backend_opts[i]);
	return buf;
}

static void clear_env(void)
{
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_ENDPOINT_URL_S3");
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
}

static void test_defaults(void)
{
	struct result r;
	struct fuse_view v;

	clear_env();
	parse(&r, "s3://bucket/prefix", "/mnt/models", NULL);
	CHECK(r.ret == 0);
	CHECK_STR(r.o.source, "s3://bucket/prefix");
	CHECK_STR(r.o.mountpoint, "/mnt/models");
	CHECK(r.o.n_backend_opts == 0);
	CHECK(r.o.ca_file == NULL);
	CHECK(r.o.insecure_tls == 0);
	CHECK(r.o.no_passthrough == 0);
	CHECK(r.o.uid == getuid());
	CHECK(r.o.gid == getgid());
	CHECK(r.o.umask == 0);
	CHECK(r.o.attr_timeout_s == 300);
	CHECK(r.o.entry_timeout_s == 300);
	CHECK(r.o.retries == 3);
	CHECK(r.o.connect_timeout_ms == 5000);
	CHECK(r.o.request_timeout_ms == 30000);
	CHECK(r.o.foreground == 0 && r.o.debug == 0);
	CHECK(r.o.show_help == 0 && r.o.show_version == 0);

	/* libfuse gets: the program name, read-only, our fsname and subtype */
	CHECK(r.fa.argc >= 2);
	CHECK(r.fa.argc >= 1 && strcmp(r.fa.argv[0], "modelfs") == 0);
	CHECK(view(&r.fa, &v) == 0);
	CHECK_STR(v.fsname, "s3://bucket/prefix");
	CHECK_STR(v.subtype, "modelfs");
	CHECK(v.n_ro == 1);
	CHECK(v.n_allow_other == 0);
	CHECK(v.n_nonopt == 0); /* SOURCE and MOUNTPOINT are ours */
	CHECK(v.n_other == 0);
	CHECK(fuse_accepts(&r.fa));
	done(&r);
	CHECK(r.o.source == NULL && r.fa.argv == NULL);
}

static void test_all_options(void)
{
	struct result r;
	struct fuse_view v;

	clear_env();
	parse(&r, "-o",
	      "endpoint=http://127.0.0.1:9000/base,region=eu-west-1,path_style,"
	      "creds_file=/etc/modelfs/creds,profile=dev,ca_file=/etc/ssl/ca.pem,insecure_tls,"
	      "no_passthrough",
	      "-o", "uid=1000,gid=1001,umask=027,attr_timeout=1.5,entry_timeout=0,retries=0",
	      "-oconnect_timeout=2.5,request_timeout=120", "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	if (r.ret)
		fprintf(stderr, "err: %s\n", r.err);
	/* the backend's options, for it to parse, in order */
	CHECK_STR(bopts(&r.o), "endpoint=http://127.0.0.1:9000/base|region=eu-west-1|path_style|"
			       "creds_file=/etc/modelfs/creds|profile=dev");
	CHECK_STR(r.o.ca_file, "/etc/ssl/ca.pem");
	CHECK(r.o.insecure_tls == 1);
	CHECK(r.o.no_passthrough == 1);
	CHECK(r.o.uid == 1000);
	CHECK(r.o.gid == 1001);
	CHECK(r.o.umask == 027);
	CHECK(r.o.attr_timeout_s == 1.5);
	CHECK(r.o.entry_timeout_s == 0);
	CHECK(r.o.retries == 0);
	CHECK(r.o.connect_timeout_ms == 2500);
	CHECK(r.o.request_timeout_ms == 120000);
	/* none of ours reaches libfuse */
	CHECK(view(&r.fa, &v) == 0);
	CHECK(v.n_other == 0);
	if (v.n_other)
		fprintf(stderr, "passed to libfuse: %s\n", v.other);
	CHECK(!fargs_contain(&r.fa, "endpoint"));
	CHECK(!fargs_contain(&r.fa, "uid="));
	CHECK(!fargs_contain(&r.fa, "insecure_tls"));
	CHECK(!fargs_contain(&r.fa, "passthrough"));
	CHECK(fuse_accepts(&r.fa));
	done(&r);

	/* flags of a backend, in the order given (the backend lets the last win) */
	parse(&r, "-o", "virtual_host", "-o", "use_path_request_style", "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK_STR(bopts(&r.o), "virtual_host|use_path_request_style");
	CHECK(!fargs_contain(&r.fa, "virtual_host"));
	done(&r);

	/* bounds that are allowed */
	parse(&r, "-o", "uid=0,gid=0,umask=0777,retries=20,attr_timeout=0,connect_timeout=0.1",
	      "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.uid == 0 && r.o.gid == 0);
	CHECK(r.o.umask == 0777);
	CHECK(r.o.retries == 20);
	CHECK(r.o.attr_timeout_s == 0);
	CHECK(r.o.connect_timeout_ms == 100);
	done(&r);

	/* an option value with an escaped comma */
	parse(&r, "-o", "creds_file=/tmp/a\\,b", "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK_STR(bopts(&r.o), "creds_file=/tmp/a,b");
	done(&r);
}

static void test_flags(void)
{
	struct result r;

	clear_env();
	parse(&r, "-f", "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.foreground == 1 && r.o.debug == 0);
	done(&r);

	parse(&r, "s3://b", "/mnt", "-d", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.debug == 1 && r.o.foreground == 1);
	done(&r);

	parse(&r, "s3://b", "/mnt", "-o", "debug", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.debug == 1 && r.o.foreground == 1);
	done(&r);

	/* help and version need no SOURCE or MOUNTPOINT */
	parse(&r, "-h", NULL);
	CHECK(r.ret == 0 && r.o.show_help == 1);
	done(&r);
	parse(&r, "--help", NULL);
	CHECK(r.ret == 0 && r.o.show_help == 1);
	done(&r);
	parse(&r, "s3://b", "/mnt", "--help", NULL);
	CHECK(r.ret == 0 && r.o.show_help == 1);
	done(&r);
	parse(&r, "--version", NULL);
	CHECK(r.ret == 0 && r.o.show_version == 1 && r.o.show_help == 0);
	done(&r);
	parse(&r, "-V", NULL);
	CHECK(r.ret == 0 && r.o.show_version == 1);
	done(&r);
}

static void test_fuse_passthrough(void)
{
	struct result r;
	struct fuse_view v;

	clear_env();
	parse(&r, "-o", "allow_other,region=us-west-2,max_read=131072", "s3://b/p", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK_STR(bopts(&r.o), "region=us-west-2");
	CHECK(fargs_contain(&r.fa, "allow_other"));
	CHECK(!fargs_contain(&r.fa, "region"));
	CHECK(view(&r.fa, &v) == 0);
	CHECK(v.n_allow_other == 1);
	CHECK(v.n_max_read == 1);
	CHECK(v.n_ro == 1);
	CHECK_STR(v.subtype, "modelfs");
	CHECK_STR(v.fsname, "s3://b/p");
	CHECK(fuse_accepts(&r.fa));
	done(&r);

	/* "ro" given by the user is not doubled; fstab noise is dropped */
	parse(&r, "s3://b", "/mnt", "-o", "ro,_netdev,nofail,defaults,auto,noauto,user,users",
	      NULL);
	CHECK(r.ret == 0);
	CHECK(view(&r.fa, &v) == 0);
	CHECK(v.n_ro == 1);
	CHECK(v.n_other == 0);
	if (v.n_other)
		fprintf(stderr, "passed to libfuse: %s\n", v.other);
	CHECK(!fargs_contain(&r.fa, "_netdev"));
	CHECK(!fargs_contain(&r.fa, "nofail"));
	CHECK(!fargs_contain(&r.fa, "defaults"));
	CHECK(fuse_accepts(&r.fa));
	done(&r);

	/* a SOURCE with commas and a backslash: escaped in the raw argument,
	 * and libfuse reads back exactly SOURCE */
	parse(&r, "s3://bucket/a,b\\c,d", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK(fargs_contain(&r.fa, "fsname=s3://bucket/a\\,b\\\\c\\,d"));
	CHECK(view(&r.fa, &v) == 0);
	CHECK_STR(v.fsname, "s3://bucket/a,b\\c,d");
	CHECK_STR(v.subtype, "modelfs");
	CHECK(v.n_ro == 1);
	CHECK(fuse_accepts(&r.fa));
	done(&r);

	/* the check above can fail: an option libfuse does not know */
	parse(&r, "-o", "no_such_fuse_option", "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK(!fuse_accepts(&r.fa));
	done(&r);
}

/* Expect -EINVAL with a message; the message must not repeat @secret. */
static void check_refused(const char *why, const char *secret, ...)
{
	char *argv[MAX_ARGS + 1];
	struct fs_opts o;
	struct fuse_args fa = FUSE_ARGS_INIT(0, NULL);
	char err[512] = "";
	int argc = 0, ret;
	const char *a;
	va_list ap;

	argv[argc++] = (char *)"modelfs";
	va_start(ap, secret);
	while ((a = va_arg(ap, const char *)) != NULL && argc < MAX_ARGS)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	ret = opts_parse(argc, argv, &o, &fa, err, sizeof(err));
	if (ret != -EINVAL || !err[0])
		fprintf(stderr, "%s: got %d \"%s\", want -EINVAL and a message\n", why, ret, err);
	CHECK(ret == -EINVAL);
	CHECK(err[0] != '\0');
	if (secret)
		CHECK(strstr(err, secret) == NULL);
	opts_free(&o);
	fuse_opt_free_args(&fa);
}

static void test_errors(void)
{
	clear_env();
	check_refused("no arguments", NULL, NULL);
	check_refused("no mountpoint", NULL, "s3://b", NULL);
	check_refused("no mountpoint, options", NULL, "-o", "region=x", "s3://b", NULL);
	check_refused("third positional", NULL, "s3://b", "/mnt", "/extra", NULL);
	check_refused("-o without a value", NULL, "s3://b", "/mnt", "-o", NULL);
	check_refused("uid=abc", NULL, "-o", "uid=abc", "s3://b", "/mnt", NULL);
	check_refused("uid=-1", NULL, "-o", "uid=-1", "s3://b", "/mnt", NULL);
	check_refused("uid=", NULL, "-o", "uid=", "s3://b", "/mnt", NULL);
	check_refused("uid=4294967295", NULL, "-o", "uid=4294967295", "s3://b", "/mnt", NULL);
	check_refused("gid=1x", NULL, "-o", "gid=1x", "s3://b", "/mnt", NULL);
	check_refused("umask=999", NULL, "-o", "umask=999", "s3://b", "/mnt", NULL);
	check_refused("umask=1000", NULL, "-o", "umask=1000", "s3://b", "/mnt", NULL);
	check_refused("umask=-1", NULL, "-o", "umask=-1", "s3://b", "/mnt", NULL);
	check_refused("umask=", NULL, "-o", "umask=", "s3://b", "/mnt", NULL);
	check_refused("attr_timeout=-1", NULL, "-o", "attr_timeout=-1", "s3://b", "/mnt", NULL);
	check_refused("attr_timeout=abc", NULL, "-o", "attr_timeout=abc", "s3://b", "/mnt", NULL);
	check_refused("attr_timeout=", NULL, "-o", "attr_timeout=", "s3://b", "/mnt", NULL);
	check_refused("entry_timeout=1e10", NULL, "-o", "entry_timeout=1e10", "s3://b", "/mnt",
		      NULL);
	check_refused("entry_timeout=inf", NULL, "-o", "entry_timeout=inf", "s3://b", "/mnt",
		      NULL);
	check_refused("retries=100", NULL, "-o", "retries=100", "s3://b", "/mnt", NULL);
	check_refused("retries=21", NULL, "-o", "retries=21", "s3://b", "/mnt", NULL);
	check_refused("retries=-1", NULL, "-o", "retries=-1", "s3://b", "/mnt", NULL);
	check_refused("retries=1.5", NULL, "-o", "retries=1.5", "s3://b", "/mnt", NULL);
	check_refused("connect_timeout=0", NULL, "-o", "connect_timeout=0", "s3://b", "/mnt",
		      NULL);
	check_refused("connect_timeout=601", NULL, "-o", "connect_timeout=601", "s3://b", "/mnt",
		      NULL);
	check_refused("request_timeout=x", NULL, "-o", "request_timeout=x", "s3://b", "/mnt",
		      NULL);
	check_refused("request_timeout=3601", NULL, "-o", "request_timeout=3601", "s3://b",
		      "/mnt", NULL);
	check_refused("log_level=loud", NULL, "-o", "log_level=loud", "s3://b", "/mnt", NULL);
	check_refused("secret_key", "wJalrXUtnFEMI", "-o", "secret_key=wJalrXUtnFEMI", "s3://b",
		      "/mnt", NULL);
	check_refused("access_key", "AKIAIOSFODNN7", "-o", "access_key=AKIAIOSFODNN7", "s3://b",
		      "/mnt", NULL);
	check_refused("aws_secret_access_key", "s3cr3tv4lue", "-o",
		      "region=x,aws_secret_access_key=s3cr3tv4lue", "s3://b", "/mnt", NULL);
	check_refused("secret_access_key", "s3cr3tv4lue", "-o", "secret_access_key=s3cr3tv4lue",
		      "s3://b", "/mnt", NULL);
	check_refused("session_token", "t0k3nv4lue", "-o", "session_token=t0k3nv4lue", "s3://b",
		      "/mnt", NULL);

	/* the message names the problem */
	{
		struct result r;
		parse(&r, "-o", "retries=100", "s3://b", "/mnt", NULL);
		CHECK(r.ret == -EINVAL);
		CHECK(strstr(r.err, "retries") != NULL);
		done(&r);
		parse(&r, "s3://b", "/mnt", "/extra", NULL);
		CHECK(r.ret == -EINVAL);
		CHECK(strstr(r.err, "/extra") != NULL);
		done(&r);
		parse(&r, "-o", "umask=999", "s3://b", "/mnt", NULL);
		CHECK(strstr(r.err, "umask") != NULL);
		done(&r);
	}
}

/* What users of ossfs, s3fs and JindoFuse paste. */
static void test_foreign(void)
{
	struct result r;
	struct fuse_view v;

	clear_env();
	parse(&r, "-o", "kernel_cache,max_stat_cache_size=0,allow_other,attr_timeout=7200",
	      "oss://b", "/mnt", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.metadata_ttl_s == 0);
	CHECK(r.o.attr_timeout_s == 7200);
	CHECK(!fargs_contain(&r.fa, "kernel_cache"));
	CHECK(!fargs_contain(&r.fa, "max_stat_cache_size"));
	CHECK(view(&r.fa, &v) == 0 && v.n_allow_other == 1 && v.n_other == 0);
	CHECK(fuse_accepts(&r.fa));
	done(&r);
	parse(&r, "-o", "max_stat_cache_size=100000", "oss://b", "/mnt", NULL);
	CHECK(r.ret == 0 && r.o.metadata_ttl_s == 60);
	done(&r);
	parse(&r, "-o", "stat_cache_expire=5", "oss://b", "/mnt", NULL);
	CHECK(r.ret == 0 && r.o.metadata_ttl_s == 5);
	done(&r);
	/* the others: one line naming ours */
	parse(&r, "-o", "use_cache=/tmp/c", "oss://b", "/mnt", NULL);
	CHECK(r.ret == -EINVAL && strstr(r.err, "cache_dir=DIR") != NULL);
	done(&r);
	parse(&r, "-o", "dbglevel=debug", "oss://b", "/mnt", NULL);
	CHECK(r.ret == -EINVAL && strstr(r.err, "log_level=LEVEL") != NULL);
	done(&r);
	parse(&r, "-o", "parallel_count=20", "oss://b", "/mnt", NULL);
	CHECK(r.ret == -EINVAL && strstr(r.err, "parallel_count") != NULL);
	done(&r);
}

/* "nan" is a number to strtod but within no range: it must be refused. */
static void test_nan(void)
{
	clear_env();
	check_refused("attr_timeout=nan", NULL, "-o", "attr_timeout=nan", "s3://b", "/mnt", NULL);
	check_refused("entry_timeout=nan", NULL, "-o", "entry_timeout=nan", "s3://b", "/mnt",
		      NULL);
	check_refused("connect_timeout=nan", NULL, "-o", "connect_timeout=nan", "s3://b", "/mnt",
		      NULL);
	check_refused("request_timeout=nan", NULL, "-o", "request_timeout=nan", "s3://b", "/mnt",
		      NULL);
}

/* mount(8) sends "rw" ahead of the user's options: taken, remembered, and
 * the mount stays read-only. Also the other options of the usage fixes. */
static void test_mount8(void)
{
	struct result r;
	struct fuse_view v;

	clear_env();
	parse(&r, "s3://b", "/mnt", "-o", "rw,nonempty,log_level=debug,log_file=/tmp/x.log", NULL);
	CHECK(r.ret == 0);
	CHECK(r.o.rw_asked == 1 && r.o.nonempty == 1);
	CHECK(r.o.log_level == 3);
	CHECK_STR(r.o.log_file, "/tmp/x.log");
	CHECK(view(&r.fa, &v) == 0);
	CHECK(v.n_ro == 1);
	done(&r);

	parse(&r, "s3://b", "/mnt", "-o", "ro,rw", NULL);
	CHECK(r.ret == 0 && r.o.rw_asked == 1);
	CHECK(view(&r.fa, &v) == 0 && v.n_ro == 1);
	done(&r);

	parse(&r, "s3://b", "/mnt", NULL);
	CHECK(r.ret == 0 && r.o.rw_asked == 0 && r.o.nonempty == 0 && r.o.log_level == 2);
	done(&r);

	parse(&r, "--foreground", "s3://b", "/mnt", "-o", "log_level=warn", NULL);
	CHECK(r.ret == 0 && r.o.foreground == 1 && r.o.log_level == 1);
	done(&r);
}

int main(void)
{
	test_defaults();
	test_mount8();
	test_all_options();
	test_flags();
	test_fuse_passthrough();
	test_errors();
	test_nan();
	test_foreign();
	return check_done();
}
