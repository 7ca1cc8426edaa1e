/* Unit tests for backends/creds.c: the shared-credentials reader and the
 * lookup order (environment, given file, $AWS_SHARED_CREDENTIALS_FILE,
 * ~/.aws/credentials, anonymous). Files live in a mkdtemp directory that is
 * removed at the end; the AWS_* environment is cleared first. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "creds.h"
#include "keys.h"

static char tmpdir[] = "/tmp/modelfs-test-creds-XXXXXX";
static char home[300], home_aws[320], home_file[340], shared_file[300], given_file[300];

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void clear_env(void)
{
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	setenv("HOME", home, 1);
}

static const char ini[] =
	"# written by aws configure\n"
	"aws_access_key_id = BEFORE_ANY_SECTION\n"
	"\n"
	"[default]\n"
	"aws_access_key_id = AKIADEFAULT\n"
	"aws_secret_access_key=secret/Default+x=\n"
	"region = us-east-1\n"
	"\n"
	"; a comment\n"
	"# aws_session_token = COMMENTED\n"
	"[profile dev]\n"
	"   aws_access_key_id   =   AKIADEV   \n"
	"\taws_secret_access_key\t=\tsecret-dev\t\n"
	"aws_session_token = token//dev==\n"
	"[developer]\n"
	"aws_access_key_id = AKIADEVELOPER\n"
	"aws_secret_access_key = secret-developer\n"
	"[prod]\n"
	"aws_access_key_id = AKIAPROD\n"
	"[ crlf ]\r\n"
	"aws_access_key_id = AKIACRLF\r\n"
	"aws_secret_access_key = secret-crlf\r\n"
	"[empty-secret]\n"
	"aws_access_key_id = AKIAEMPTY\n"
	"aws_secret_access_key =\n"
	"[split]\n"
	"aws_access_key_id = AKIASPLIT\n"
	"[other]\n"
	"aws_secret_access_key = secret-other\n";

static void test_parse(void)
{
	struct creds c;

	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "default", &c) == 0);
	CHECK_STR(c.access_key, "AKIADEFAULT");
	CHECK_STR(c.secret_key, "secret/Default+x=");
	CHECK(c.session_token == NULL);
	creds_free(&c);
	CHECK(c.access_key == NULL && c.secret_key == NULL && c.session_token == NULL);

	/* "[profile x]" form, blanks and tabs around names, '=' and values */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "dev", &c) == 0);
	CHECK_STR(c.access_key, "AKIADEV");
	CHECK_STR(c.secret_key, "secret-dev");
	CHECK_STR(c.session_token, "token//dev==");
	creds_free(&c);

	/* "dev" is not a prefix match for "developer" */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "developer", &c) == 0);
	CHECK_STR(c.access_key, "AKIADEVELOPER");
	CHECK(c.session_token == NULL);
	creds_free(&c);

	/* CRLF line ends, blanks inside the brackets */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "crlf", &c) == 0);
	CHECK_STR(c.access_key, "AKIACRLF");
	CHECK_STR(c.secret_key, "secret-crlf");
	creds_free(&c);

	/* profile without both keys: -EINVAL, nothing left allocated */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "prod", &c) == -EINVAL);
	CHECK(c.access_key == NULL && c.secret_key == NULL);
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "empty-secret", &c) == -EINVAL);
	CHECK(c.access_key == NULL && c.secret_key == NULL);
	/* keys of the next section do not complete this one */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "split", &c) == -EINVAL);
	CHECK(c.access_key == NULL);

	/* missing profiles */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "nope", &c) == -ENOENT);
	CHECK(c.access_key == NULL);
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse(ini, "profile", &c) == -ENOENT);
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse("", "default", &c) == -ENOENT);
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse("aws_access_key_id = A\naws_secret_access_key = B\n", "default", &c) ==
	      -ENOENT);
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse("# [default]\naws_access_key_id = A\n", "default", &c) == -ENOENT);

	/* a file without a final newline, and a value holding '=' */
	memset(&c, 0, sizeof(c));
	CHECK(creds_parse("[default]\naws_secret_access_key=a=b\naws_access_key_id=AK", "default",
			  &c) == 0);
	CHECK_STR(c.access_key, "AK");
	CHECK_STR(c.secret_key, "a=b");
	creds_free(&c);
}

static void test_load_anonymous(void)
{
	struct creds c;
	char msg[256] = "";

	clear_env();
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK(c.access_key == NULL);
	CHECK(c.secret_key == NULL);
	CHECK(c.session_token == NULL);
	CHECK(strstr(c.source, "anonymous") != NULL);
	creds_free(&c);

	/* half the environment pair is not credentials */
	setenv("AWS_ACCESS_KEY_ID", "AKIAHALF", 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK(c.access_key == NULL);
	creds_free(&c);
	setenv("AWS_SECRET_ACCESS_KEY", "", 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK(c.access_key == NULL);
	creds_free(&c);

	/* no HOME at all */
	clear_env();
	unsetenv("HOME");
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK(c.access_key == NULL);
	creds_free(&c);
	clear_env();
}

static void test_load_order(void)
{
	struct creds c;
	char msg[256];

	clear_env();
	write_file(home_file, "[default]\naws_access_key_id = AKIAHOME\n"
		   "aws_secret_access_key = secret-home\n"
		   "[dev]\naws_access_key_id = AKIAHOMEDEV\naws_secret_access_key = s\n"
		   "[broken]\naws_access_key_id = AKIABROKEN\n", 0600);
	write_file(shared_file, "[default]\naws_access_key_id = AKIASHARED\n"
		   "aws_secret_access_key = secret-shared\n", 0600);
	write_file(given_file, "[default]\naws_access_key_id = AKIAGIVEN\n"
		   "aws_secret_access_key = secret-given\naws_session_token = tok-given\n"
		   "[profile dev]\naws_access_key_id = AKIAGIVENDEV\n"
		   "aws_secret_access_key = secret-given-dev\n"
		   "[broken]\naws_secret_access_key = only-secret\n", 0600);

	/* ~/.aws/credentials */
	msg[0] = '\0';
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAHOME");
	CHECK_STR(c.secret_key, "secret-home");
	CHECK(strstr(c.source, home_file) != NULL);
	CHECK(strstr(c.source, "default") != NULL);
	creds_free(&c);

	/* profile from the argument, then from AWS_PROFILE */
	CHECK(creds_load(NULL, "dev", &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAHOMEDEV");
	creds_free(&c);
	setenv("AWS_PROFILE", "dev", 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAHOMEDEV");
	creds_free(&c);
	CHECK(creds_load(NULL, "", &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAHOMEDEV");
	creds_free(&c);
	CHECK(creds_load(NULL, "default", &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAHOME");
	creds_free(&c);
	unsetenv("AWS_PROFILE");

	/* a profile missing from the default file: anonymous, not an error */
	CHECK(creds_load(NULL, "nope", &c, msg, sizeof(msg)) == 0);
	CHECK(c.access_key == NULL);
	creds_free(&c);
	/* a profile with one key only in the default file is an error */
	msg[0] = '\0';
	CHECK(creds_load(NULL, "broken", &c, msg, sizeof(msg)) == -EINVAL);
	CHECK(c.access_key == NULL);
	CHECK(msg[0] != '\0');
	creds_free(&c);

	/* $AWS_SHARED_CREDENTIALS_FILE instead of ~/.aws/credentials */
	setenv("AWS_SHARED_CREDENTIALS_FILE", shared_file, 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIASHARED");
	CHECK_STR(c.secret_key, "secret-shared");
	CHECK(strstr(c.source, shared_file) != NULL);
	creds_free(&c);

	/* ... and when it names no file, anonymous (no fall-back to HOME) */
	{
		char gone[400];
		snprintf(gone, sizeof(gone), "%s/no-such-file", tmpdir);
		setenv("AWS_SHARED_CREDENTIALS_FILE", gone, 1);
		CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
		CHECK(c.access_key == NULL);
		creds_free(&c);
		setenv("AWS_SHARED_CREDENTIALS_FILE", shared_file, 1);
	}

	/* a given creds_file wins over both */
	CHECK(creds_load(given_file, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAGIVEN");
	CHECK_STR(c.secret_key, "secret-given");
	CHECK_STR(c.session_token, "tok-given");
	CHECK(strstr(c.source, given_file) != NULL);
	creds_free(&c);
	CHECK(creds_load(given_file, "dev", &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAGIVENDEV");
	CHECK(c.session_token == NULL);
	creds_free(&c);

	/* the environment wins over everything */
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
	CHECK(creds_load(given_file, "dev", &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAENV");
	CHECK_STR(c.secret_key, "secret-env");
	CHECK(c.session_token == NULL);
	CHECK_STR(c.source, "environment");
	creds_free(&c);
	setenv("AWS_SESSION_TOKEN", "tok-env", 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAENV");
	CHECK_STR(c.session_token, "tok-env");
	creds_free(&c);
	/* an empty session token is none */
	setenv("AWS_SESSION_TOKEN", "", 1);
	CHECK(creds_load(NULL, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK(c.session_token == NULL);
	creds_free(&c);
	/* the environment even wins over a given file that does not exist */
	CHECK(creds_load("/nonexistent/modelfs/creds", NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAENV");
	creds_free(&c);
	clear_env();

	/* a world-readable file still works (with a warning in the log) */
	chmod(given_file, 0644);
	CHECK(creds_load(given_file, NULL, &c, msg, sizeof(msg)) == 0);
	CHECK_STR(c.access_key, "AKIAGIVEN");
	creds_free(&c);
	chmod(given_file, 0600);
}

static void test_load_errors(void)
{
	struct creds c;
	char msg[512], gone[400];

	clear_env();
	snprintf(gone, sizeof(gone), "%s/missing-credentials", tmpdir);

	/* a given file that cannot be read */
	msg[0] = '\0';
	CHECK(creds_load(gone, NULL, &c, msg, sizeof(msg)) == -ENOENT);
	CHECK(c.access_key == NULL);
	CHECK(strstr(msg, gone) != NULL);
	creds_free(&c);

	msg[0] = '\0';
	CHECK(creds_load(tmpdir, NULL, &c, msg, sizeof(msg)) < 0); /* a directory */
	CHECK(c.access_key == NULL);
	CHECK(strstr(msg, tmpdir) != NULL);
	creds_free(&c);

	/* a given file without read permission (root reads anything: skipped) */
	if (geteuid() != 0) {
		chmod(given_file, 0);
		msg[0] = '\0';
		CHECK(creds_load(given_file, NULL, &c, msg, sizeof(msg)) == -EACCES);
		CHECK(c.access_key == NULL);
		CHECK(strstr(msg, given_file) != NULL);
		creds_free(&c);
		chmod(given_file, 0600);
	}

	/* a given file without the profile */
	msg[0] = '\0';
	CHECK(creds_load(given_file, "nope", &c, msg, sizeof(msg)) == -ENOENT);
	CHECK(c.access_key == NULL);
	CHECK(strstr(msg, "nope") != NULL);
	creds_free(&c);
	setenv("AWS_PROFILE", "also-nope", 1);
	msg[0] = '\0';
	CHECK(creds_load(given_file, NULL, &c, msg, sizeof(msg)) == -ENOENT);
	CHECK(strstr(msg, "also-nope") != NULL);
	creds_free(&c);
	unsetenv("AWS_PROFILE");

	/* a given file whose profile lacks a key */
	msg[0] = '\0';
	CHECK(creds_load(given_file, "broken", &c, msg, sizeof(msg)) == -EINVAL);
	CHECK(c.access_key == NULL && c.secret_key == NULL);
	CHECK(strstr(msg, "broken") != NULL);
	creds_free(&c);

	/* a message that does not fit is cut, not overflowed */
	{
		char small[8];
		memset(small, 'x', sizeof(small));
		CHECK(creds_load(gone, NULL, &c, small, sizeof(small)) == -ENOENT);
		CHECK(strlen(small) == sizeof(small) - 1);
		creds_free(&c);
	}
}

/* A scripted key source: each fetch gives "AK<n>" living @life_ms, or fails
 * while @down, or says "unchanged" while @same. */
struct script {
	int n, down, same;
	int64_t life_ms;
};

static int64_t now_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int script_fetch(void *arg, struct creds *out, int64_t *expires, char *msg, size_t len)
{
	struct script *s = arg;
	char ak[32];

	if (s->down) {
		snprintf(msg, len, "the STS is down");
		return -ECONNREFUSED;
	}
	if (s->same)
		return 1;
	snprintf(ak, sizeof(ak), "AK%d", ++s->n);
	out->access_key = strdup(ak);
	out->secret_key = strdup("sk");
	*expires = s->life_ms ? now_wall_ms() + s->life_ms : 0;
	return 0;
}

static void test_keyring(void)
{
	struct script sc = {.life_ms = 600};
	struct key_source src = {"script", script_fetch, NULL, &sc, 0};
	struct keyring *r;
	const struct keyset *k, *held;
	char msg[256] = "";

	/* a third of the lifetime ahead, at most 5 minutes */
	CHECK(keys_refresh_at(0, 6000) == 4000);
	CHECK(keys_refresh_at(0, 3600000) == 3600000 - 300000);
	CHECK(keys_refresh_at(1000, 500) == 500); /* expired already: now */

	CHECK(keyring_open(&src, &r, msg, sizeof(msg)) == 0);
	held = keyring_get(r);
	CHECK_STR(held->access_key, "AK1");
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK1"); /* not due: no fetch */
	keyring_put(r, k);
	CHECK(sc.n == 1);
	usleep(450 * 1000); /* past 2/3 of the life: due */
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK2");
	keyring_put(r, k);
	CHECK_STR(held->access_key, "AK1"); /* a signer's keys stay whole until put */
	keyring_put(r, held);

	/* the source down: the keys in hand go on until they expire */
	sc.down = 1;
	usleep(450 * 1000);
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK2");
	keyring_put(r, k);
	sc.down = 0;
	usleep(1100 * 1000); /* the retry after a failure: 1 s */
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK3");
	keyring_put(r, k);
	keyring_close(r);

	/* a file source: looked at again every recheck_ms, "unchanged" keeps them */
	sc = (struct script){0};
	src.recheck_ms = 50;
	CHECK(keyring_open(&src, &r, msg, sizeof(msg)) == 0);
	sc.same = 1;
	usleep(80 * 1000);
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK1");
	keyring_put(r, k);
	sc.same = 0;
	usleep(80 * 1000);
	k = keyring_get(r);
	CHECK_STR(k->access_key, "AK2");
	keyring_put(r, k);
	keyring_close(r);

	/* the first fetch must work */
	sc.down = 1;
	CHECK(keyring_open(&src, &r, msg, sizeof(msg)) == -ECONNREFUSED);
	CHECK(strstr(msg, "down") != NULL);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(home, sizeof(home), "%s/home", tmpdir);
	snprintf(home_aws, sizeof(home_aws), "%s/.aws", home);
	snprintf(home_file, sizeof(home_file), "%s/credentials", home_aws);
	snprintf(shared_file, sizeof(shared_file), "%s/shared", tmpdir);
	snprintf(given_file, sizeof(given_file), "%s/given", tmpdir);
	if (mkdir(home, 0700) || mkdir(home_aws, 0700)) {
		perror("mkdir");
		return 2;
	}

	test_parse();
	test_load_anonymous();
	test_load_order();
	test_load_errors();
	test_keyring();

	unlink(home_file);
	unlink(shared_file);
	unlink(given_file);
	rmdir(home_aws);
	rmdir(home);
	if (rmdir(tmpdir))
		perror(tmpdir);
	return check_done();
}
