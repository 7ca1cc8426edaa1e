/* The CSI Node service's work, without gRPC or protobuf: stage a volume
 * (one modelfs daemon per volume per node, on the node's cache), publish it
 * (a read-only bind mount into each pod's target), take both back, report
 * usage, and bring staged volumes back after the plugin restarts.
 *
 * State, so that a restarted plugin knows what it staged:
 *   STATE_DIR/VOL.json  what was staged: volume id, staging path, the
 *                       modelfs command line, its fingerprint, the targets
 *   RUN_DIR/VOL.env     the volume's secrets as KEY=VALUE, mode 0600, on a
 *                       tmpfs (never on disk, never on a command line)
 * VOL is the SHA-256 of the volume id. Written before the mount is made,
 * removed after it is gone: a crash in between leaves a state file whose
 * mount is missing, which reconcile makes again (or unstage removes).
 *
 * Threads: gRPC's handlers (one per call) and the plugin's checker
 * (node_reconcile). Each volume has a lock of its own that a call holds
 * while it mounts, binds or writes that volume's state, so a store that is
 * slow to answer holds up its own volume only. A probe of a mount (statfs,
 * in a child) is bounded at 5 s: a hung daemon is reported, never waited on.
 * STATE_DIR/.lock is held while the plugin runs: one plugin per node.
 */
#ifndef MODELFS_CSI_NODE_H
#define MODELFS_CSI_NODE_H

#include <stddef.h>
#include <stdint.h>

/* The gRPC status codes the CSI spec names, with gRPC's numbers (so the
 * front end passes them on as they are). */
enum csi_code {
	CSI_OK = 0,
	CSI_INVALID_ARGUMENT = 3,
	CSI_DEADLINE_EXCEEDED = 4,
	CSI_NOT_FOUND = 5,
	CSI_ALREADY_EXISTS = 6,
	CSI_PERMISSION_DENIED = 7,
	CSI_RESOURCE_EXHAUSTED = 8,
	CSI_FAILED_PRECONDITION = 9,
	CSI_INTERNAL = 13,
	CSI_UNAVAILABLE = 14,
};

struct node_config {
	const char *node_id;
	const char *state_dir; /* on the node's disk: survives the plugin */
	const char *run_dir;   /* on a tmpfs: the secrets */
	const char *modelfs;   /* the modelfs binary the daemons run */
	const char *cache_dir; /* the node's shared cache, or NULL: modelfs's default */
	const char *systemd;   /* systemd's bus, where each daemon gets a scope of its own
				* (outliving the plugin's container), or NULL; checked
				* with scope_check by the caller */
};

struct kv {
	const char *key, *value;
};

/* A stage or publish request, as the front end decoded it. */
struct node_req {
	const char *volume_id;
	const char *staging;    /* staging_target_path */
	const char *target;     /* target_path (publish) */
	int has_capability;     /* volume_capability was given */
	int block;              /* access type block (refused) */
	int access_mode;        /* VolumeCapability.AccessMode.Mode */
	const char *const *mount_flags; /* the PV's mountOptions */
	size_t n_mount_flags;
	const struct kv *context; /* volume_context: the volume attributes */
	size_t n_context;
	const struct kv *secrets;
	size_t n_secrets;
	int readonly;
};

struct node_usage {
	int64_t bytes_total, bytes_used, bytes_available;
	int64_t inodes_total, inodes_used, inodes_available;
	int abnormal;        /* the mount's daemon is gone */
	char condition[256]; /* why, or "" */
};

struct node;

int node_open(const struct node_config *cfg, struct node **out, char *msg, size_t msg_len);
void node_close(struct node *n);
const char *node_id(const struct node *n);

enum csi_code node_stage(struct node *n, const struct node_req *r, char *msg, size_t msg_len);
enum csi_code node_unstage(struct node *n, const char *volume_id, const char *staging, char *msg,
			   size_t msg_len);
enum csi_code node_publish(struct node *n, const struct node_req *r, char *msg, size_t msg_len);
enum csi_code node_unpublish(struct node *n, const char *volume_id, const char *target,
			     char *msg, size_t msg_len);
enum csi_code node_stats(struct node *n, const char *volume_id, const char *path,
			 struct node_usage *out, char *msg, size_t msg_len);
/* Look at every staged volume: leave live mounts alone, mount dead or
 * missing ones again in place and bind their targets again; a volume whose
 * repair failed is tried again after a backoff (10 s doubling to 300 s).
 * Logs a line per volume it repairs (and, with @verbose, per volume it finds
 * well). Run by one thread, the checker, beside the calls. */
void node_reconcile(struct node *n, int verbose);

#endif
