/* Put a process into a systemd scope of its own on the node, so that it
 * outlives the plugin's container: a container runtime that stops the
 * container kills every process in the container's cgroup, and a process in
 * a scope is in a cgroup of the node's systemd instead (what kubelet's mount
 * utilities do with `systemd-run --scope`).
 *
 * The plugin talks to systemd on its private socket (/run/systemd/private,
 * a hostPath) with sd-bus, peer to peer, without a bus daemon: one
 * connection per call, opened and closed here, so nothing is shared
 * between threads and a systemd that re-executed is simply found again.
 *
 * Process ids on that bus are the plugin's: systemd must be in the plugin's
 * pid namespace (hostPID: true), which scope_check makes sure of.
 */
#ifndef MODELFS_CSI_SCOPE_H
#define MODELFS_CSI_SCOPE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The address the plugin uses when given none: systemd's private socket,
 * if there is one (else NULL: daemons stay in the plugin's cgroup). */
const char *scope_default_address(void);

/* Connect to systemd at @address, check that it sees the plugin's process
 * ids, and ask its version (into @version). Each step is bounded (5 s).
 * 0, or -errno with why in @msg. */
int scope_check(const char *address, char *version, size_t version_len, char *msg,
		size_t msg_len);

/* The plugin's own memory limit (its container's), which each scope gets
 * as its MemoryMax, or 0: none found. */
uint64_t scope_memory_max(void);

/* Start the transient unit @unit ("NAME.scope") holding @pid, with the
 * plugin's own memory limit (its container's) as MemoryMax, and wait
 * (at most 5 s) until systemd says it is started and /proc/PID/cgroup names
 * it. @pid should be stopped or waiting, so that its children follow.
 * 0, or -errno with why in @msg. */
int scope_join(const char *address, pid_t pid, const char *unit, const char *description,
	       char *msg, size_t msg_len);

#endif
