/* Fuzz target: backends/creds.c's shared-credentials (INI) reader.
 *
 * The input is the text of a credentials file (~/.aws/credentials, a
 * passwd_file given with -o), NUL-terminated as creds_load hands it over.
 * It is looked up for profile "default" and for profile "x"; a success must
 * yield both keys non-empty, a failure must leave nothing allocated.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "creds.h"
#include "fuzz.h"
#include "log.h"

static void check_profile(const char *text, const char *profile)
{
	struct creds c;
	int err;

	memset(&c, 0, sizeof(c));
	err = creds_parse(text, profile, &c);
	FUZZ_CHECK(err == 0 || err == -ENOENT || err == -EINVAL || err == -ENOMEM);
	if (err == 0) {
		FUZZ_CHECK(c.access_key && c.access_key[0]);
		FUZZ_CHECK(c.secret_key && c.secret_key[0]);
		/* values are trimmed and single-line */
		FUZZ_CHECK(!strchr(c.access_key, '\n') && !strchr(c.secret_key, '\n'));
		FUZZ_CHECK(c.access_key[strlen(c.access_key) - 1] != ' ');
		if (c.session_token)
			FUZZ_CHECK(!strchr(c.session_token, '\n'));
	} else {
		FUZZ_CHECK(!c.access_key && !c.secret_key && !c.session_token);
	}
	creds_free(&c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(0, LOG_LVL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);

	check_profile(text, "default");
	check_profile(text, "x");
	free(text);
	return 0;
}
