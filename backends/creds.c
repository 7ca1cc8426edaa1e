/* Credential lookup (see creds.h for the order). The INI reader accepts what
 * the AWS CLI writes: [section] headers, "key = value" lines, '#' and ';'
 * comments, blanks around names and values. */
#include "creds.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

void creds_free(struct creds *c)
{
	if (c->secret_key)
		memset(c->secret_key, 0, strlen(c->secret_key));
	if (c->session_token)
		memset(c->session_token, 0, strlen(c->session_token));
	free(c->access_key);
	free(c->secret_key);
	free(c->session_token);
	c->access_key = c->secret_key = c->session_token = NULL;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int set_dup(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

int creds_parse(const char *text, const char *profile, struct creds *out)
{
	char *copy = strdup(text), *save = NULL, *line;
	int in_profile = 0, found = 0, err = 0;

	if (!copy)
		return -ENOMEM;
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *l = trim(line), *eq;
		if (*l == '#' || *l == ';' || *l == '\0')
			continue;
		if (*l == '[') {
			char *end = strchr(l, ']');
			if (!end)
				continue;
			*end = '\0';
			l = trim(l + 1);
			if (strncmp(l, "profile ", 8) == 0)
				l = trim(l + 8);
			in_profile = strcmp(l, profile) == 0;
			found |= in_profile;
			continue;
		}
		if (!in_profile || !(eq = strchr(l, '=')))
			continue;
		*eq = '\0';
		{
			char *k = trim(l), *v = trim(eq + 1);
			if (strcmp(k, "aws_access_key_id") == 0)
				err = set_dup(&out->access_key, v);
			else if (strcmp(k, "aws_secret_access_key") == 0)
				err = set_dup(&out->secret_key, v);
			else if (strcmp(k, "aws_session_token") == 0)
				err = set_dup(&out->session_token, v);
			if (err)
				break;
		}
	}
	memset(copy, 0, strlen(text));
	free(copy);
	if (!err && !found)
		err = -ENOENT;
	if (!err && (!out->access_key || !out->secret_key || !*out->access_key ||
		     !*out->secret_key))
		err = -EINVAL;
	if (err)
		creds_free(out);
	return err;
}

static int read_file(const char *path, char **text)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > (1 << 20) || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return -EINVAL;
	}
	buf = malloc((size_t)n + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	buf[n] = '\0';
	fclose(f);
	*text = buf;
	return 0;
}

static int from_file(const char *path, const char *profile, int must_exist, struct creds *out,
		     char *msg, size_t msg_len)
{
	char *text = NULL;
	struct stat st;
	int err = read_file(path, &text);

	if (err) {
		if (!must_exist && err == -ENOENT)
			return 1; /* not there: go on */
		snprintf(msg, msg_len, "cannot read credentials file %s: %s", path, strerror(-err));
		return err;
	}
	if (stat(path, &st) == 0 && (st.st_mode & 077))
		log_warn("credentials file %s is readable by others (mode %03o); chmod 600 it", path,
			 st.st_mode & 0777);
	err = creds_parse(text, profile, out);
	memset(text, 0, strlen(text));
	free(text);
	if (err == -ENOENT) {
		snprintf(msg, msg_len, "profile '%s' not found in %s", profile, path);
		return must_exist ? err : 1;
	}
	if (err == -EINVAL)
		snprintf(msg, msg_len, "profile '%s' in %s lacks aws_access_key_id or "
			 "aws_secret_access_key", profile, path);
	if (!err)
		snprintf(out->source, sizeof(out->source), "%s [%s]", path, profile);
	return err;
}

int creds_load(const char *creds_file, const char *profile, struct creds *out, char *msg,
	       size_t msg_len)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *tok = getenv("AWS_SESSION_TOKEN"), *shared, *home;
	char path[4096];
	int err;

	memset(out, 0, sizeof(*out));
	if (!profile || !*profile)
		profile = getenv("AWS_PROFILE");
	if (!profile || !*profile)
		profile = "default";

	if (ak && *ak && sk && *sk) {
		if (set_dup(&out->access_key, ak) || set_dup(&out->secret_key, sk) ||
		    (tok && *tok && set_dup(&out->session_token, tok))) {
			creds_free(out);
			return -ENOMEM;
		}
		snprintf(out->source, sizeof(out->source), "environment");
		return 0;
	}
	if (creds_file)
		return from_file(creds_file, profile, 1, out, msg, msg_len);

	shared = getenv("AWS_SHARED_CREDENTIALS_FILE");
	home = getenv("HOME");
	if (shared && *shared)
		snprintf(path, sizeof(path), "%s", shared);
	else if (home && *home)
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	else
		path[0] = '\0';
	if (path[0]) {
		err = from_file(path, profile, 0, out, msg, msg_len);
		if (err <= 0)
			return err;
	}
	snprintf(out->source, sizeof(out->source), "none (anonymous requests)");
	return 0;
}
