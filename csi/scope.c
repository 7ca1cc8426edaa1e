/* systemd scopes for the volumes' daemons (scope.h). */
#include "scope.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-bus.h>

#define SYSTEMD_PRIVATE "/run/systemd/private"
/* each step's bound: the handshake, a call, the job */
#define STEP_MS 5000

const char *scope_default_address(void)
{
	struct stat st;

	if (stat(SYSTEMD_PRIVATE, &st) == 0 && S_ISSOCK(st.st_mode))
		return "unix:path=" SYSTEMD_PRIVATE;
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
		return -errno;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* A peer-to-peer connection to systemd at @address, checked to be in our
 * pid namespace: systemd reads the process ids we send in its own. */
static int connect_systemd(const char *address, sd_bus **out, char *msg, size_t msg_len)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char ns[64];
	sd_bus *bus = NULL;
	uint64_t until = now_ms() + STEP_MS;
	int r;

	if ((r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_address(bus, address)) < 0) {
		snprintf(msg, msg_len, "systemd bus address %s: %s", address, strerror(-r));
		goto fail;
	}
	if ((r = sd_bus_start(bus)) < 0) {
		snprintf(msg, msg_len, "cannot reach systemd at %s: %s", address, strerror(-r));
		goto fail;
	}
	/* sd_bus_start only begins the handshake, and sd-bus would wait 90 s
	 * for a peer that never answers it: wait here, bounded */
	while ((r = sd_bus_is_ready(bus)) == 0) {
		uint64_t now = now_ms();

		if (now >= until) {
			r = -ETIMEDOUT;
			break;
		}
		if ((r = sd_bus_process(bus, NULL)) < 0)
			break;
		if (r == 0 && (r = sd_bus_wait(bus, (until - now) * 1000)) < 0)
			break;
	}
	if (r < 0) {
		snprintf(msg, msg_len, "systemd at %s did not answer: %s", address,
			 r == -ETIMEDOUT ? "no handshake within 5 s" : strerror(-r));
		goto fail;
	}
	sd_bus_set_method_call_timeout(bus, (uint64_t)STEP_MS * 1000);
	if (getsockopt(sd_bus_get_fd(bus), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		r = -errno;
		snprintf(msg, msg_len, "systemd at %s: who is it: %s", address, strerror(-r));
		goto fail;
	}
	/* pid 0: the peer is in a pid namespace above ours */
	snprintf(ns, sizeof(ns), "/proc/%d/ns/pid", (int)cred.pid);
	if (cred.pid <= 0 || (r = same_file(ns, "/proc/self/ns/pid")) == 0) {
		r = -EXDEV;
		snprintf(msg, msg_len,
			 "systemd at %s is in another pid namespace: run the plugin with "
			 "hostPID: true (or --systemd none)",
			 address);
		goto fail;
	}
	if (r < 0) {
		snprintf(msg, msg_len, "systemd at %s: %s: %s", address, ns, strerror(-r));
		goto fail;
	}
	*out = bus;
	return 0;
fail:
	sd_bus_close_unref(bus);
	return r;
}

int scope_check(const char *address, char *version, size_t version_len, char *msg,
		size_t msg_len)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	char *v = NULL;
	int r = connect_systemd(address, &bus, msg, msg_len);

	/* one real call: a peer that takes connections is not yet systemd */
	if (r == 0 && (r = sd_bus_get_property_string(bus, "org.freedesktop.systemd1",
						      "/org/freedesktop/systemd1",
						      "org.freedesktop.systemd1.Manager", "Version",
						      &e, &v)) < 0)
		snprintf(msg, msg_len, "systemd at %s: its version: %s", address,
			 e.message ? e.message : strerror(-r));
	if (r >= 0) {
		snprintf(version, version_len, "%s", v);
		r = 0;
	}
	free(v);
	sd_bus_error_free(&e);
	sd_bus_close_unref(bus);
	return r;
}

/* The memory limit of the plugin's own cgroup (its container's: v2
 * memory.max, or v1 memory.limit_in_bytes on a hybrid or v1 node), or 0:
 * none. A daemon in a scope is outside that limit, so its scope gets the
 * same one (MemoryMax): no daemon takes the node's memory. */
uint64_t scope_memory_max(void)
{
	char line[4096], path[4200];
	unsigned long long v, limit = 0;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *cg = ctl ? strchr(ctl + 1, ':') : NULL;
		FILE *m;

		if (!cg)
			continue;
		*cg++ = '\0';
		cg[strcspn(cg, "\n")] = '\0';
		if (ctl[1] == '\0') /* "0::/path" */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
		else if (strstr(ctl + 1, "memory"))
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
				 cg);
		else
			continue;
		/* "max" does not scan; v1 says none with a number near 2^63 */
		if ((m = fopen(path, "re")) != NULL) {
			if (fscanf(m, "%llu", &v) == 1 && v > 0 && v < (1ull << 62) &&
			    (!limit || v < limit))
				limit = v;
			fclose(m);
		}
	}
	fclose(f);
	return limit;
}

struct job_wait {
	const char *unit;
	char result[32]; /* JobRemoved's result for our unit, or "" */
};

static int on_job_removed(sd_bus_message *m, void *data, sd_bus_error *err)
{
	struct job_wait *w = data;
	const char *job, *unit, *result;
	uint32_t id;

	(void)err;
	if (sd_bus_message_read(m, "uoss", &id, &job, &unit, &result) >= 0 &&
	    strcmp(unit, w->unit) == 0)
		snprintf(w->result, sizeof(w->result), "%s", result);
	return 0;
}

/* Does /proc/PID/cgroup name @unit as the last part of a path? */
static int in_unit(pid_t pid, const char *unit)
{
	char path[64], line[4096];
	size_t ul = strlen(unit);
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		size_t l;

		line[strcspn(line, "\n")] = '\0';
		l = strlen(line);
		found = l > ul && line[l - ul - 1] == '/' && strcmp(line + l - ul, unit) == 0;
	}
	fclose(f);
	return found;
}

int scope_join(const char *address, pid_t pid, const char *unit, const char *description,
	       char *msg, size_t msg_len)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	sd_bus_slot *slot = NULL;
	struct job_wait w = {.unit = unit};
	sd_bus *bus = NULL;
	uint64_t until, mem = scope_memory_max();
	int r;

	if ((r = connect_systemd(address, &bus, msg, msg_len)) < 0)
		return r;
	/* before the call: the job may be done before its answer is read */
	if ((r = sd_bus_match_signal(bus, &slot, NULL, "/org/freedesktop/systemd1",
				     "org.freedesktop.systemd1.Manager", "JobRemoved",
				     on_job_removed, &w)) < 0)
		goto bus_error;
	if ((r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
						"/org/freedesktop/systemd1",
						"org.freedesktop.systemd1.Manager",
						"StartTransientUnit")) < 0 ||
	    (r = sd_bus_message_append(m, "ss", unit, "fail")) < 0 ||
	    (r = sd_bus_message_open_container(m, 'a', "(sv)")) < 0 ||
	    (r = sd_bus_message_append(m, "(sv)", "Description", "s", description)) < 0 ||
	    (r = sd_bus_message_append(m, "(sv)", "PIDs", "au", 1, (uint32_t)pid)) < 0 ||
	    /* gone from systemd's list once its daemon has exited, failed or not */
	    (r = sd_bus_message_append(m, "(sv)", "CollectMode", "s", "inactive-or-failed")) < 0 ||
	    (mem && (r = sd_bus_message_append(m, "(sv)", "MemoryMax", "t", mem)) < 0) ||
	    (r = sd_bus_message_close_container(m)) < 0 ||
	    (r = sd_bus_message_append(m, "a(sa(sv))", 0)) < 0)
		goto bus_error;
	if ((r = sd_bus_call(bus, m, (uint64_t)STEP_MS * 1000, &e, &reply)) < 0) {
		snprintf(msg, msg_len, "systemd did not start %s: %s", unit,
			 e.message ? e.message : strerror(-r));
		goto out;
	}
	until = now_ms() + STEP_MS;
	while (!w.result[0]) {
		uint64_t now = now_ms();

		if ((r = sd_bus_process(bus, NULL)) < 0)
			goto bus_error;
		if (r > 0)
			continue;
		if (now >= until) {
			r = -ETIMEDOUT;
			snprintf(msg, msg_len, "systemd did not start %s within %d s", unit,
				 STEP_MS / 1000);
			goto out;
		}
		if ((r = sd_bus_wait(bus, (until - now) * 1000)) < 0)
			goto bus_error;
	}
	if (strcmp(w.result, "done") != 0) {
		r = -EIO;
		snprintf(msg, msg_len, "systemd could not start %s: %s", unit, w.result);
		goto out;
	}
	if (!in_unit(pid, unit)) {
		r = -ESRCH;
		snprintf(msg, msg_len, "systemd started %s, but process %d is not in it", unit,
			 (int)pid);
		goto out;
	}
	r = 0;
	goto out;
bus_error:
	snprintf(msg, msg_len, "talking to systemd at %s: %s", address, strerror(-r));
out:
	sd_bus_error_free(&e);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(m);
	sd_bus_slot_unref(slot);
	sd_bus_close_unref(bus);
	return r;
}
