/* modelfs-csi: the Kubernetes CSI node plugin (also `modelfs csi ...`).
 *
 *   modelfs-csi --endpoint unix:///csi/csi.sock --node-id NODE
 *               [--state-dir DIR] [--run-dir DIR] [--cache-dir DIR]
 *               [--modelfs PATH] [--check-interval SECONDS]
 *               [--systemd ADDRESS|auto|none]
 *
 * At start it looks at what it staged before (a restart or an upgrade of
 * its container): live mounts are left alone, dead ones mounted again in
 * place; then it serves kubelet, and looks again every --check-interval.
 */
#include "node.h"
#include "rpc.h"
#include "scope.h"
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

static volatile int stop;

static void on_signal(int sig)
{
	stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: modelfs-csi --endpoint unix:///PATH --node-id NODE [options]\n"
		"The modelfs CSI node plugin (CSI v1: Identity and Node services).\n"
		"  --endpoint unix:///PATH  the socket kubelet talks to ($CSI_ENDPOINT)\n"
		"  --node-id NODE           this node's name ($KUBE_NODE_NAME)\n"
		"  --state-dir DIR          what is staged, kept across restarts of the plugin\n"
		"                           (default /var/lib/modelfs-csi; a hostPath)\n"
		"  --run-dir DIR            the volumes' secrets, mode 0600, on a tmpfs\n"
		"                           (default /run/modelfs-csi; a hostPath)\n"
		"  --cache-dir DIR          the node's chunk cache, shared by every volume\n"
		"                           (default: modelfs's, /var/cache/modelfs)\n"
		"  --modelfs PATH           the modelfs binary (default: beside this one)\n"
		"  --check-interval SECONDS how often dead mounts are looked for (default 10)\n"
		"  --systemd ADDRESS|auto|none\n"
		"                           the node's systemd, where each daemon gets a scope\n"
		"                           of its own and so outlives this container: a D-Bus\n"
		"                           address or a socket path (needs hostPID); auto, the\n"
		"                           default: /run/systemd/private if it is there\n");
}

/* modelfs beside this binary: one image, one version of both. */
static char *beside_me(void)
{
	char self[PATH_MAX], *slash, *out = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return strdup("/usr/bin/modelfs");
	self[n] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	if (asprintf(&out, "%s/modelfs", self) < 0)
		return NULL;
	return out;
}

/* The checker: a thread of its own, so that a mount it starts again (up to
 * modelfs's start bound) does not hold up kubelet's calls. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int done; /* (lock) */
	unsigned interval;
	struct node *node;
} checker = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void *check_loop(void *arg)
{
	struct timespec at;

	node_reconcile(checker.node, 1); /* what was staged before this start */
	pthread_mutex_lock(&checker.lock);
	while (!checker.done) {
		clock_gettime(CLOCK_REALTIME, &at);
		at.tv_sec += checker.interval;
		while (!checker.done &&
		       pthread_cond_timedwait(&checker.wake, &checker.lock, &at) != ETIMEDOUT)
			;
		if (checker.done)
			break;
		pthread_mutex_unlock(&checker.lock);
		node_reconcile(checker.node, 0);
		pthread_mutex_lock(&checker.lock);
	}
	pthread_mutex_unlock(&checker.lock);
	return arg;
}

int main(int argc, char **argv)
{
	const char *endpoint = getenv("CSI_ENDPOINT"), *node_name = getenv("KUBE_NODE_NAME");
	struct node_config cfg = {
	    .state_dir = "/var/lib/modelfs-csi",
	    .run_dir = "/run/modelfs-csi",
	};
	char *modelfs = NULL, *systemd = NULL, msg[1024] = "";
	char scopes[700] = "no systemd bus: daemons stay in this container's cgroup and end with it";
	const char *systemd_arg = "auto";
	unsigned interval = 10;
	struct rpc_server *srv;
	struct node *node;
	struct sigaction sa;
	pthread_t check_thread;
	struct timespec until;
	int err;

	/* started with 0, 1 or 2 closed, the plugin's own pipes would be there */
	for (int fd; (fd = open("/dev/null", O_RDWR)) >= 0;)
		if (fd > STDERR_FILENO) {
			close(fd);
			break;
		}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char name[64];
		const char *eq = strchr(a, '=');
		int joined = 0;

		/* --name=value (as manifests write it) or --name value */
		if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof(name)) {
			snprintf(name, sizeof(name), "%.*s", (int)(eq - a), a);
			a = name;
			v = eq + 1;
			joined = 1;
		}

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0) {
			printf("modelfs-csi %s (CSI v1 node plugin)\n", MODELFS_VERSION);
			return 0;
		}
		if (!v || strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "modelfs-csi: %s: %s\n", a,
				v ? "not an option" : "needs a value");
			usage(stderr);
			return 2;
		}
		if (strcmp(a, "--endpoint") == 0)
			endpoint = v;
		else if (strcmp(a, "--node-id") == 0)
			node_name = v;
		else if (strcmp(a, "--state-dir") == 0)
			cfg.state_dir = v;
		else if (strcmp(a, "--run-dir") == 0)
			cfg.run_dir = v;
		else if (strcmp(a, "--cache-dir") == 0)
			cfg.cache_dir = v;
		else if (strcmp(a, "--modelfs") == 0)
			cfg.modelfs = v;
		else if (strcmp(a, "--systemd") == 0)
			systemd_arg = v;
		else if (strcmp(a, "--check-interval") == 0) {
			char *end;
			unsigned long s = strtoul(v, &end, 10);
			if (*end || s < 1 || s > 3600) {
				fprintf(stderr, "modelfs-csi: --check-interval %s: 1 to 3600 seconds\n",
					v);
				return 2;
			}
			interval = (unsigned)s;
		} else {
			fprintf(stderr, "modelfs-csi: %s: not an option\n", a);
			usage(stderr);
			return 2;
		}
		if (!joined)
			i++;
	}
	if (!endpoint) {
		fprintf(stderr, "modelfs-csi: --endpoint is needed (or $CSI_ENDPOINT)\n");
		return 2;
	}
	cfg.node_id = node_name;
	if (strcmp(systemd_arg, "auto") == 0)
		cfg.systemd = scope_default_address();
	else if (*systemd_arg == '/') {
		if (asprintf(&systemd, "unix:path=%s", systemd_arg) < 0) {
			fprintf(stderr, "modelfs-csi: out of memory\n");
			return 1;
		}
		cfg.systemd = systemd;
	} else if (strcmp(systemd_arg, "none") != 0)
		cfg.systemd = systemd_arg;
	if (!cfg.modelfs && !(cfg.modelfs = modelfs = beside_me())) {
		fprintf(stderr, "modelfs-csi: out of memory\n");
		return 1;
	}
	if (cfg.systemd) {
		char version[128] = "", limit[96] = "no MemoryMax: this container has no memory limit";
		struct statfs sf;
		uint64_t mem = scope_memory_max();

		if (scope_check(cfg.systemd, version, sizeof(version), msg, sizeof(msg)) != 0) {
			fprintf(stderr, "modelfs-csi: %s\n", msg);
			free(modelfs);
			free(systemd);
			return 2;
		}
		if (mem)
			snprintf(limit, sizeof(limit), "MemoryMax %llu MiB, this container's limit",
				 (unsigned long long)(mem >> 20));
		snprintf(scopes, sizeof(scopes), "daemons go into systemd scopes (%s, systemd %s; %s)%s",
			 cfg.systemd, version, limit,
			 statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC
			     ? ""
			     : "; but this node's cgroups are not cgroup v2 alone: a container "
			       "runtime may still end them with this container");
	}
	if (node_open(&cfg, &node, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "modelfs-csi: %s\n", msg);
		free(modelfs);
		free(systemd);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (rpc_server_start(endpoint, csi_methods, node, &srv, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "modelfs-csi: %s\n", msg);
		node_close(node);
		free(modelfs);
		free(systemd);
		return 1;
	}
	checker.node = node;
	checker.interval = interval;
	if ((err = pthread_create(&check_thread, NULL, check_loop, NULL)) != 0) {
		fprintf(stderr, "modelfs-csi: cannot start the checker: %s\n", strerror(err));
		return 1;
	}
	fprintf(stderr, "modelfs-csi: serving %s for node %s (modelfs %s)\n", endpoint, cfg.node_id,
		cfg.modelfs);
	fprintf(stderr, "modelfs-csi: %s\n", scopes);
	rpc_server_run(srv, &stop);
	/* the mounts stay: they are the pods', and outlive the plugin */
	pthread_mutex_lock(&checker.lock);
	checker.done = 1;
	pthread_cond_signal(&checker.wake);
	pthread_mutex_unlock(&checker.lock);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	if (pthread_timedjoin_np(check_thread, NULL, &until) != 0) {
		/* it is starting a mount: that goes on without the plugin */
		fprintf(stderr, "modelfs-csi: stopped while a mount starts; the volumes' mounts stay\n");
		return 0;
	}
	fprintf(stderr, "modelfs-csi: stopped; the volumes' mounts stay\n");
	node_close(node);
	free(modelfs);
	free(systemd);
	return 0;
}
