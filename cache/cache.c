/* The chunk cache: open and close, sizing to the machine, quota and
 * counters. Layout, protocols, threads and locks: cache_i.h. */
#include "cache_i.h"
#include "crc32c.h"
#include "evict.h"
#include "log.h"
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>
#include <openssl/sha.h>

void cache_cancel(struct cache *c) { atomic_store(&c->cancelled, 1); }

const char *cache_disk_error(const struct cache *c)
{
	return c->disk_error;
}

int cache_quota(struct cache *c, uint64_t *quota, uint64_t *usage, double *high)
{
	struct index_stats st;

	if (!c->ix)
		return -ENODATA;
	if (index_stats(c->ix, &st))
		return -EIO;
	*quota = c->quota;
	*usage = st.usage;
	*high = c->high;
	return 0;
}

void cache_counters(struct cache *c, struct cache_counters *out)
{
	/* what is counted second is read first (note_hit, store_failed): never
	 * more memory hits than hits, nor ENOSPC than errors */
	out->mem_hits = atomic_load(&c->mem_hits);
	out->hits = atomic_load(&c->hits);
	out->misses = atomic_load(&c->misses);
	out->backend_bytes = atomic_load(&c->backend_bytes);
	out->refetches = atomic_load(&c->refetches);
	out->uncached = atomic_load(&c->uncached);
	out->dropped = atomic_load(&c->dropped);
	out->evicted_chunks = atomic_load(&c->evicted_chunks);
	out->evicted_bytes = atomic_load(&c->evicted_bytes);
	out->flight_waits = atomic_load(&c->flight_waits);
	out->store_enospc = atomic_load(&c->store_enospc);
	out->store_errors = atomic_load(&c->store_errors);
	out->ra_chunks = atomic_load(&c->ra_chunks);
	out->sweeps = atomic_load(&c->sweeps);
	out->ra_window = atomic_load(&c->ra_window);
	out->mem_bytes = atomic_load(&c->mem_bytes);
	out->disk_bytes = atomic_load(&c->disk_bytes);
	out->store_bytes = atomic_load(&c->store_bytes);
	if (c->ix) {
		struct index_stats st;
		if (index_stats(c->ix, &st) == 0) {
			out->objects = st.objects;
			out->chunks = st.chunks;
		}
	}
}


int cache_parse_size(const char *s, uint64_t *bytes, double *pct)
{
	char *end;
	double v;
	uint64_t mult = 1;

	*bytes = 0;
	*pct = 0;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -EINVAL;
	if (strcmp(end, "%") == 0) {
		if (v <= 0 || v > 100)
			return -EINVAL;
		*pct = v;
		return 0;
	}
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default: break;
	}
	if (*end == 'i' && mult > 1)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v * (double)mult > 1.8e19)
		return -EINVAL;
	*bytes = (uint64_t)(v * (double)mult);
	return *bytes ? 0 : -EINVAL;
}

/* A damaged index was set aside (index_was_reset): no chunk is recorded, so
 * every data file is unreachable and uncounted in usage; remove them. No
 * other process uses them: the index is still held exclusively. */
static void clear_data(int data_fd)
{
	int fd = openat(data_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		int sfd;
		DIR *s;
		struct dirent *f;

		if (e->d_name[0] == '.')
			continue;
		sfd = openat(data_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		s = sfd >= 0 ? fdopendir(sfd) : NULL;
		if (!s) {
			if (sfd >= 0)
				close(sfd);
			continue;
		}
		while ((f = readdir(s)))
			if (f->d_name[0] != '.')
				unlinkat(sfd, f->d_name, 0);
		closedir(s);
		unlinkat(data_fd, e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

/* Open the disk tier; on failure the cache runs without it. */
static int open_disk(struct cache *c, const struct cache_config *cfg, char *msg, size_t msg_len)
{
	char path[4096];
	struct statvfs sv;
	int err;

	if (mkdir(cfg->dir, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		snprintf(msg, msg_len, "cannot create %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	snprintf(path, sizeof(path), "%s/data", cfg->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		snprintf(msg, msg_len, "cannot create %.400s: %s", path, strerror(-err));
		return err;
	}
	c->data_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/users.lock", cfg->dir);
	c->users_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	snprintf(path, sizeof(path), "%s/evict.lock", cfg->dir);
	c->evict_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (c->data_fd < 0 || c->users_fd < 0 || c->evict_fd < 0) {
		err = -errno;
		snprintf(msg, msg_len, "cannot open files in %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	flock(c->users_fd, LOCK_SH);
	{
		/* on tmpfs an allocation is the memory itself: no preallocation */
		struct statfs sf;
		c->prealloc = fstatfs(c->data_fd, &sf) == 0 && sf.f_type != TMPFS_MAGIC;
	}
	snprintf(path, sizeof(path), "%s/index", cfg->dir);
	err = index_open(path, INDEX_OPEN_RESET,
			 cfg->chunk_size ? cfg->chunk_size : CACHE_DEFAULT_CHUNK, &c->chunk_size,
			 &c->ix, msg, msg_len);
	if (err)
		return err;
	if (index_was_reset(c->ix)) {
		clear_data(c->data_fd);
		index_reset_done(c->ix);
	}
	{
		/* LMDB tells its readers apart by pid (a lock on the pid's byte of
		 * its lock file): a process of another pid namespace with our pid
		 * that reads this index leaves us unable to read it at all */
		struct index_stats st;

		err = index_stats(c->ix, &st);
		if (err == -EAGAIN || err == -EACCES) {
			snprintf(msg, msg_len,
				 "a process in another pid namespace with this daemon's pid (%d) reads "
				 "its index, and LMDB tells readers apart by pid: give each pid "
				 "namespace its own cache_dir",
				 (int)getpid());
			return err;
		}
		if (err) {
			snprintf(msg, msg_len, "cannot read its index: %s", strerror(-err));
			return err;
		}
	}
	if (cfg->chunk_size && cfg->chunk_size != c->chunk_size)
		log_warn("cache %s was created with chunk_size %u KiB: using that, not %u KiB",
			 cfg->dir, c->chunk_size >> 10, cfg->chunk_size >> 10);
	if (statvfs(cfg->dir, &sv) < 0) {
		err = -errno;
		snprintf(msg, msg_len, "statvfs %s: %s", cfg->dir, strerror(-err));
		return err;
	}
	{
		uint64_t fs_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
		double pct = cfg->quota_percent > 0 ? cfg->quota_percent : 50;
		c->quota = cfg->quota_bytes ? cfg->quota_bytes : (uint64_t)(fs_bytes * pct / 100);
	}
	c->high = cfg->high > 0 ? cfg->high : CACHE_DEFAULT_HIGH;
	c->low = cfg->low > 0 ? cfg->low : CACHE_DEFAULT_LOW;
	index_set_quota(c->ix, c->quota, c->high, c->low);
	/* Readahead must not outrun the cache: a window past half of what one
	 * eviction round frees would have chunks evicted before they are read. */
	c->ra_cap = (uint32_t)((c->quota * (c->high - c->low) / 2) / c->chunk_size);
	if (c->ra_cap < RA_WINDOW_MIN)
		c->ra_cap = RA_WINDOW_MIN;
	return 0;
}

/* CPUs this process may run on (a container's cpuset, not the host's). */
static unsigned cpus_here(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* The memory limit of this process's own cgroup (v2 memory.max, v1
 * memory.limit_in_bytes), or UINT64_MAX: none found. */
static uint64_t cgroup_limit(void)
{
	char line[4096], path[4200];
	uint64_t limit = UINT64_MAX;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return limit;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *cg = ctl ? strchr(ctl + 1, ':') : NULL;
		unsigned long long v;
		FILE *m;
		if (!cg)
			continue;
		*cg++ = '\0';
		cg[strcspn(cg, "\n")] = '\0';
		ctl++;
		if (*ctl == '\0') /* "0::/path": the unified hierarchy */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
		else if (strstr(ctl, "memory"))
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
				 cg);
		else
			continue;
		if ((m = fopen(path, "re")) != NULL) {
			if (fscanf(m, "%llu", &v) == 1 && v > 0 && v < limit)
				limit = v; /* "max" does not scan: no limit */
			fclose(m);
		}
	}
	fclose(f);
	return limit;
}

/* Memory this process may use: RAM, or less under a cgroup limit. */
static uint64_t memory_here(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 1ull << 30;
	uint64_t cg = cgroup_limit();

	return cg < ram ? cg : ram;
}

static unsigned clampu(uint64_t v, unsigned lo, unsigned hi)
{
	return v < lo ? lo : v > hi ? hi : (unsigned)v;
}

/* How much of the machine the cache's threads and memory take (see
 * docs/design.md, "Sizing"): fetch streams 4 per CPU (a stream mostly waits
 * on the network), writers one per 2 CPUs, the pool 1/32 of memory but no
 * more than the CPUs can fill (64 MiB each). */
static void size_for_machine(struct cache *c, const struct cache_config *cfg)
{
	unsigned cpus = cpus_here();
	uint64_t pool = memory_here() / 32;

	if (pool > MEM_PER_CPU * cpus)
		pool = MEM_PER_CPU * cpus;
	c->max_fetches = cfg->max_fetches ? cfg->max_fetches : clampu(4ull * cpus, 16, 64);
	pool = pool < MEM_MIN ? MEM_MIN : pool > MEM_MAX ? MEM_MAX : pool;
	c->mem_chunks = clampu(pool / c->chunk_size, 8, 4096);
	c->n_wr_want = clampu(cpus / 2, 4, CACHE_WR_THREADS_MAX);
	c->n_ra_want = clampu(c->max_fetches / 2, 1, CACHE_RA_THREADS_MAX);
	/* a sequential reader's window goes out as up to 8 GETs at once where
	 * its share of the readahead slots allows */
	c->ra_runs = clampu(c->n_ra_want / 2, 1, 8);
	if (c->ra_runs < 4 && c->n_ra_want >= 4)
		c->ra_runs = 4;
}

int cache_open(struct backend *be, const struct cache_config *cfg, struct cache **out)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->be = be;
	c->data_fd = c->users_fd = c->evict_fd = -1;
	c->chunk_size = cfg->chunk_size ? cfg->chunk_size : CACHE_DEFAULT_CHUNK;
	size_for_machine(c, cfg);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->bg_cond, NULL);
	pthread_mutex_init(&c->ra_lock, NULL);
	pthread_cond_init(&c->ra_cond, NULL);
	pthread_mutex_init(&c->wr_lock, NULL);
	pthread_cond_init(&c->wr_cond, NULL);
	pthread_cond_init(&c->wr_done, NULL);
	if (flight_open(c->max_fetches, &c->fl) != 0) {
		pthread_cond_destroy(&c->ra_cond);
		pthread_mutex_destroy(&c->ra_lock);
		pthread_cond_destroy(&c->bg_cond);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return -ENOMEM;
	}
	if (cfg->dir) {
		c->dir = strdup(cfg->dir);
		c->touch = calloc(TOUCH_MAX, sizeof(*c->touch));
		if (!c->dir || !c->touch ||
		    open_disk(c, cfg, c->disk_error, sizeof(c->disk_error))) {
			if (!c->disk_error[0])
				snprintf(c->disk_error, sizeof(c->disk_error), "out of memory");
			if (!cfg->disk_required)
				log_warn("no disk cache: %s", c->disk_error);
			index_close(c->ix);
			c->ix = NULL;
		}
	}
	if (c->ix) {
		/* the index's chunk size wins over the configured one */
		c->mem_chunks = clampu((uint64_t)c->mem_chunks * (cfg->chunk_size ? cfg->chunk_size
								      : CACHE_DEFAULT_CHUNK) /
					   c->chunk_size,
				       8, 4096);
		if (mem_open(c->mem_chunks, c->chunk_size, &c->mem) != 0)
			c->mem = NULL; /* reads come back from the files */
		while (c->mem && c->n_wr < c->n_wr_want &&
		       pthread_create(&c->wr[c->n_wr], NULL, wr_main, c) == 0)
			c->n_wr++;
		if (pthread_create(&c->bg, NULL, bg_main, c) == 0)
			c->bg_started = 1;
		while (c->n_ra < c->n_ra_want &&
		       pthread_create(&c->ra[c->n_ra], NULL, ra_main, c) == 0)
			c->n_ra++;
		log_info("cache %s: quota %llu MiB, watermarks %.2f/%.2f, chunk %u KiB", c->dir,
			 (unsigned long long)(c->quota >> 20), c->high, c->low, c->chunk_size >> 10);
		log_info("cache: %u fetch streams, %u readahead and %u writer threads, %u MiB of "
			 "memory for chunks in flight",
			 c->max_fetches, c->n_ra, c->n_wr,
			 (unsigned)((uint64_t)c->mem_chunks * c->chunk_size >> 20));
	}
	*out = c;
	return 0;
}

void cache_close(struct cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_broadcast(&c->bg_cond);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_lock(&c->ra_lock);
	c->ra_stop = 1;
	pthread_cond_broadcast(&c->ra_cond);
	pthread_mutex_unlock(&c->ra_lock);
	if (c->bg_started)
		pthread_join(c->bg, NULL);
	for (unsigned i = 0; i < c->n_ra; i++)
		pthread_join(c->ra[i], NULL);
	/* the streams are gone (readahead joined; prefetch and FUSE stopped
	 * before this call): the writers drain their queue and end */
	pthread_mutex_lock(&c->wr_lock);
	c->wr_stop = 1;
	pthread_cond_broadcast(&c->wr_cond);
	pthread_mutex_unlock(&c->wr_lock);
	for (unsigned i = 0; i < c->n_wr; i++)
		pthread_join(c->wr[i], NULL);
	while (c->ra_head) {
		struct ra_job *j = c->ra_head;
		c->ra_head = j->next;
		ra_job_free(j);
	}
	while (c->refill) {
		struct ra_job *j = c->refill;
		c->refill = j->next;
		ra_job_free(j);
	}
	if (c->ix)
		log_info("cache: %llu chunk reads from memory, %llu from disk, %llu fetched "
			 "(%llu MiB), %llu not stored (%llu of them dropped: the disk was behind)",
			 (unsigned long long)c->mem_hits, (unsigned long long)(c->hits - c->mem_hits),
			 (unsigned long long)c->misses, (unsigned long long)(c->backend_bytes >> 20),
			 (unsigned long long)c->uncached, (unsigned long long)c->dropped);
	index_close(c->ix);
	mem_close(c->mem);
	if (c->data_fd >= 0)
		close(c->data_fd);
	if (c->users_fd >= 0)
		close(c->users_fd);
	if (c->evict_fd >= 0)
		close(c->evict_fd);
	flight_close(c->fl);
	pthread_cond_destroy(&c->wr_done);
	pthread_cond_destroy(&c->wr_cond);
	pthread_mutex_destroy(&c->wr_lock);
	pthread_cond_destroy(&c->ra_cond);
	pthread_mutex_destroy(&c->ra_lock);
	pthread_cond_destroy(&c->bg_cond);
	pthread_mutex_destroy(&c->lock);
	free(c->touch);
	free(c->dir);
	free(c);
}
