#!/usr/bin/python3
"""The Kubernetes manifests and the Containerfile in deploy/, checked for
what matters rather than for style only: every YAML parses (and yamllint
passes), the CSI driver's name is the plugin's, the node plugin has
/dev/fuse, Bidirectional propagation of kubelet's directory, its state on
the node's disk and its secrets on the host's tmpfs, a liveness probe and
requests/limits on every container; the example PV is read-only and takes
its keys by reference only; the node DaemonSet (deploy/node/) mounts a whole
bucket under a PID 1 that outlives the daemon (upgrades, crashes), on the
node's cache, with /dev/fuse, its mount dir Bidirectional, probes on the
metrics port its options set, a preStop that frees the host's path, keys by
reference, and a memory request that covers the documented bound for its
limit; the pods that read its mount do so read-only, by subPath; the
Containerfile's runtime stage has a package for every library the built
binaries need.

usage: check_manifests.py SRC_DIR BUILD_DIR/modelfs
"""
import glob
import os
import re
import subprocess
import sys

import yaml

SRC, MODELFS = sys.argv[1], sys.argv[2]
DEPLOY = os.path.join(SRC, "deploy")
passed = failed = 0


def check(desc, cond):
    global passed, failed
    if cond:
        passed += 1
        print("ok - " + desc)
    else:
        failed += 1
        print("FAIL - " + desc)


r = subprocess.run(["yamllint", "-s", "-c", os.path.join(DEPLOY, ".yamllint"), DEPLOY],
                   capture_output=True, text=True)
check("yamllint deploy/: no error, no warning" + (": " + r.stdout if r.returncode else ""),
      r.returncode == 0)

docs = []
for f in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)):
    try:
        docs += [(f, d) for d in yaml.safe_load_all(open(f)) if d]
        check("%s parses" % os.path.relpath(f, SRC), True)
    except yaml.YAMLError as e:
        check("%s parses: %s" % (os.path.relpath(f, SRC), e), False)


def kind(k):
    return [d for _, d in docs if d.get("kind") == k]


plugin_name = re.search(r'#define PLUGIN_NAME "([^"]+)"',
                        open(os.path.join(SRC, "csi", "service.c")).read()).group(1)
drivers = kind("CSIDriver")
check("one CSIDriver, named as the plugin answers GetPluginInfo (%s)" % plugin_name,
      len(drivers) == 1 and drivers[0]["metadata"]["name"] == plugin_name)
if drivers:
    spec = drivers[0]["spec"]
    check("CSIDriver: no attach, fsGroupPolicy None (no chown walk of a model)",
          spec.get("attachRequired") is False and spec.get("fsGroupPolicy") == "None")

ds = [d for d in kind("DaemonSet") if d["metadata"]["name"] == "modelfs-csi-node"]
check("the node plugin's DaemonSet is there", len(ds) == 1)
if ds:
    pod = ds[0]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    cs = {c["name"]: c for c in pod["containers"]}
    c = cs.get("modelfs-csi", {})
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    args = " ".join(c.get("args", []))

    def host(path):
        m = mounts.get(path)
        return m and vols[m["name"]].get("hostPath", {})

    check("plugin: privileged (FUSE and bind mounts, Bidirectional)",
          c.get("securityContext", {}).get("privileged") is True)
    check("plugin: /dev/fuse from the host, a character device",
          (host("/dev/fuse") or {}).get("type") == "CharDevice")
    check("plugin: kubelet's directory with Bidirectional propagation",
          mounts.get("/var/lib/kubelet", {}).get("mountPropagation") == "Bidirectional"
          and (host("/var/lib/kubelet") or {}).get("path") == "/var/lib/kubelet")
    for flag, root in (("--state-dir", "/var/lib/"), ("--run-dir", "/run/"),
                       ("--cache-dir", "/var/")):
        m = re.search(flag + r"=(\S+)", args)
        hp = m and host(m.group(1))
        check("plugin: %s is a hostPath under %s (%s)" % (flag, root, m and m.group(1)),
              bool(hp) and hp.get("path", "").startswith(root))
    # daemons outlive the plugin's container in systemd scopes: systemd's
    # private socket, and process ids that mean the same to systemd
    check("plugin: the host's pid namespace (hostPID: systemd reads the daemons' pids)",
          pod.get("hostPID") is True)
    check("plugin: the host's /run/systemd (systemd's private socket), scopes not turned off",
          (host("/run/systemd") or {}).get("path") == "/run/systemd"
          and not re.search(r"--systemd[= ]none", args))
    reg = cs.get("node-driver-registrar", {})
    sock = vols.get("socket-dir", {}).get("hostPath", {}).get("path", "")
    check("registrar: kubelet's path of the socket is the socket dir's (%s)" % sock,
          "--kubelet-registration-path=%s/csi.sock" % sock in reg.get("args", [])
          and sock.endswith("/" + plugin_name))
    check("plugin: a liveness probe on /healthz",
          c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz")
    for name, ct in cs.items():
        res = ct.get("resources", {})
        check("container %s: requests and a memory limit" % name,
              "requests" in res and "memory" in res.get("limits", {}))


# The node DaemonSet (deploy/node/): one daemon per node, a whole bucket
# mounted on the host's path for pods' hostPath volumes.
def expand(value, env):
    """kubelet's $(VAR) expansion of args and env values ($$ escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  str(value))


def mib(q):
    """A Kubernetes quantity (512Mi, 32Gi, 1G, 100M) in MiB."""
    m = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(q))
    if not m:
        return None
    mult = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
            "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    return float(m.group(1)) * mult / 2**20


def csi_cache_dir():
    for d in kind("DaemonSet"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for a in c.get("args", []):
                if a.startswith("--cache-dir="):
                    return a.split("=", 1)[1]
    return None


nds = [d for d in kind("DaemonSet") if d["metadata"]["name"] == "modelfs-node"]
check("the node DaemonSet (modelfs-node) is there", len(nds) == 1)
node_mnt = node_dir = None
if nds:
    ds = nds[0]
    ns = ds["metadata"].get("namespace")
    pod = ds["spec"]["template"]["spec"]
    sas = [d for d in kind("ServiceAccount")
           if d["metadata"]["name"] == pod.get("serviceAccountName")]
    check("node: its ServiceAccount, in its namespace (%s), without a token" % ns,
          len(sas) == 1 and sas[0]["metadata"].get("namespace") == ns
          and sas[0].get("automountServiceAccountToken") is False)
    check("node: priorityClassName system-node-critical",
          pod.get("priorityClassName") == "system-node-critical")
    check("node: updateStrategy OnDelete (a rolling update would cut every node's readers)",
          ds["spec"].get("updateStrategy", {}).get("type") == "OnDelete")
    check("node: GPU nodes only (a nodeSelector) and their taint tolerated",
          bool(pod.get("nodeSelector")) and any(t.get("key") == "nvidia.com/gpu"
                                                for t in pod.get("tolerations", [])))
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    cs = pod.get("containers", [])
    c = next((x for x in cs if x["name"] == "modelfs"), {})
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
    args = [expand(a, env) for a in c.get("args", [])]
    cmd = c.get("command", [])
    mounts = c.get("volumeMounts", [])
    script = cmd[2] if len(cmd) > 2 else ""
    check("node: PID 1 is a shell that outlives the daemon (waits for its holder), not modelfs: "
          "an upgrade's or a crash's hand-over would end the container and the mount",
          cmd[:2] == ["/bin/sh", "-c"] and "__holder" in script and "trap" in script
          and bool(args) and args[0].endswith("/modelfs"))
    check("node: modelfs s3:// or oss:// BUCKET (no prefix: the whole bucket) MOUNTPOINT -f",
          len(args) >= 3 and re.fullmatch(r"(s3|oss)://[a-z0-9][a-z0-9.-]*", args[1]) is not None
          and args[2].startswith("/") and ("-f" in args or "--foreground" in args))
    opts = {}
    for i, a in enumerate(args):
        if a == "-o" and i + 1 < len(args):
            for o in args[i + 1].split(","):
                k, _, v = o.partition("=")
                opts[k] = v
    if len(args) >= 3:
        node_mnt = args[2]
    mdir = next((m for m in mounts if node_mnt and node_mnt.startswith(m["mountPath"] + "/")), {})
    node_dir = vols.get(mdir.get("name"), {}).get("hostPath", {}).get("path")
    check("node: the mount dir (%s) is a hostPath at the same path, Bidirectional"
          % mdir.get("mountPath"),
          bool(mdir) and mdir.get("mountPropagation") == "Bidirectional"
          and node_dir == mdir["mountPath"])
    check("node: privileged (Bidirectional propagation is allowed to privileged containers only)",
          c.get("securityContext", {}).get("privileged") is True)
    fuse = next((m for m in mounts if m["mountPath"] == "/dev/fuse"), {})
    check("node: /dev/fuse from the host, a character device",
          vols.get(fuse.get("name"), {}).get("hostPath", {}).get("type") == "CharDevice"
          and vols[fuse["name"]]["hostPath"].get("path") == "/dev/fuse")
    cdir = opts.get("cache_dir", "")
    cm = next((m for m in mounts if cdir and m["mountPath"] == cdir), {})
    chp = vols.get(cm.get("name"), {}).get("hostPath", {})
    check("node: cache_dir=%s is a hostPath on the node (its SSD), not the CSI plugin's %s "
          "(one cache directory, one pid namespace)" % (cdir, csi_cache_dir()),
          bool(chp) and chp.get("path") == cdir and cdir != csi_cache_dir())
    check("node: allow_other (model servers run as other users)", "allow_other" in opts)
    port = int(opts["metrics_port"]) if opts.get("metrics_port", "").isdigit() else None
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    check("node: metrics_port=%s on 0.0.0.0 (kubelet probes the pod's IP), a containerPort" % port,
          port is not None and opts.get("metrics_addr") == "0.0.0.0" and port in ports.values())

    def probe(name, path):
        g = c.get(name, {}).get("httpGet", {})
        p = g.get("port")
        return g.get("path") == path and port is not None and (ports.get(p) if isinstance(p, str)
                                                               else p) == port
    for pname, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        if pname != "startupProbe" or pname in c:
            check("node: %s: GET %s on the metrics port" % (pname, path), probe(pname, path))
    hook = " ".join(((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {})
                    .get("command", []))
    names = [n for n, v in env.items() if v == node_mnt]
    check("node: preStop: SIGTERM through PID 1, then the mount off the host's path "
          "(umount -l / fusermount3 -u -z of the mountpoint)",
          "kill -TERM 1" in hook and re.search(r"umount -l|fusermount3 -u -z", hook) is not None
          and (node_mnt in hook or any("$" + n in hook or "${%s}" % n in hook for n in names)))
    grace = int(opts["term_grace"]) if opts.get("term_grace", "").isdigit() else 25
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check("node: terminationGracePeriodSeconds %s > term_grace %s + the preStop's 12 s"
          % (tgps, grace), tgps > grace + 12)
    keyish = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.I)
    bad = [e["name"] for e in c.get("env", []) if keyish.search(e["name"])
           and ("value" in e or "name" not in e.get("valueFrom", {}).get("secretKeyRef", {}))]
    bad += ["envFrom %s" % list(e) for e in c.get("envFrom", []) if "secretRef" not in e]
    bad += ["-o " + k for k in opts if k.lower() in ("akid", "aksecret", "access_key", "secret_key",
                                                     "password", "token")]
    check("node: keys only by reference (secretKeyRef / envFrom secretRef)%s"
          % (": not " + ", ".join(bad) if bad else ""),
          not bad and (any("secretKeyRef" in e.get("valueFrom", {}) for e in c.get("env", []))
                       or any("secretRef" in e for e in c.get("envFrom", []))))
    check("node: no access key id in the manifest (AKIA..., LTAI...)",
          re.search(r"\b(AKIA|ASIA|LTAI)[0-9A-Za-z]{12,}", yaml.safe_dump(ds)) is None)
    res = c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    check("node: requests (cpu, memory, ephemeral-storage) and limits (memory, ephemeral-storage)",
          all(k in req for k in ("cpu", "memory", "ephemeral-storage"))
          and all(k in lim for k in ("memory", "ephemeral-storage")))
    # docs/design.md "Sizing": the pool is 1/32 of the limit (and at most
    # 64 MiB a CPU) within 128 MiB..2 GiB; plus 64 FUSE reply buffers of
    # 4 MiB and 64 KiB for each of at most 64 streams
    lm, rm = mib(lim.get("memory", "")), mib(req.get("memory", ""))
    bound = lm and min(max(lm / 32, 128), 2048) + 64 * 4 + 64 / 16
    check("node: the memory request (%s MiB) covers the bound for the limit (%s MiB of pool and "
          "buffers), within the limit" % (rm, bound), bool(lm and rm) and bound <= rm <= lm)

# the pods (and pod templates) that read the node mount: a hostPath under
# its directory
readers = []
for _, d in docs:
    spec = d.get("spec", {}) if d.get("kind") == "Pod" else \
        d.get("spec", {}).get("template", {}).get("spec", {})
    if not isinstance(spec, dict) or d["metadata"]["name"] == "modelfs-node":
        continue
    hv = {v["name"]: v["hostPath"] for v in spec.get("volumes", [])
          if node_dir and v.get("hostPath", {}).get("path", "").startswith(node_dir)}
    if hv:
        readers.append((d["kind"] + " " + d["metadata"]["name"], spec, hv))
check("an example pod reading the node mount", len(readers) >= 1)
for name, spec, hv in readers:
    for vname, h in hv.items():
        check("%s: volume %s is the mount dir (hostPath type Directory: where nothing is "
              "mounted, nothing is made)" % (name, vname),
              h.get("path") == node_dir and h.get("type") == "Directory")
    uses = [(kind_, ct, m) for kind_ in ("initContainers", "containers")
            for ct in spec.get(kind_, []) for m in ct.get("volumeMounts", []) if m["name"] in hv]
    for kind_, ct, m in uses:
        check("%s: %s mounts it readOnly" % (name, ct["name"]), m.get("readOnly") is True)
    sub = [(ct, m) for kind_, ct, m in uses if kind_ == "containers" and m.get("subPath")]
    check("%s: the server takes its model by subPath, inside the mount (%s)"
          % (name, ", ".join(os.path.join(hv[m["name"]]["path"], m["subPath"]) for _, m in sub)),
          bool(sub) and bool(node_mnt)
          and all(os.path.normpath(os.path.join(hv[m["name"]]["path"], m["subPath"]))
                  .startswith(node_mnt + "/") for _, m in sub))
    for kind_, ct, m in uses:
        if kind_ == "initContainers" and not m.get("subPath"):
            check("%s: init container %s sees the mount appear (HostToContainer)"
                  % (name, ct["name"]), m.get("mountPropagation") == "HostToContainer")

for _, d in docs:
    text = yaml.safe_dump(d)
    check("%s %s: no key material inline" % (d["kind"], d["metadata"]["name"]),
          d["kind"] != "Secret" and not re.search(r"(akSecret|SECRET_ACCESS_KEY|HF_TOKEN)\s*:", text))
pvs = kind("PersistentVolume")
check("an example PV", len(pvs) >= 1)
for pv in pvs:
    s, csi = pv["spec"], pv["spec"].get("csi", {})
    check("PV %s: ReadOnlyMany only, readOnly, driver %s" % (pv["metadata"]["name"], plugin_name),
          s.get("accessModes") == ["ReadOnlyMany"] and csi.get("readOnly") is True
          and csi.get("driver") == plugin_name)
    check("PV %s: keys by reference (nodeStageSecretRef)" % pv["metadata"]["name"],
          "name" in csi.get("nodeStageSecretRef", {}))
for pvc in kind("PersistentVolumeClaim"):
    check("PVC %s: ReadOnlyMany, bound to its PV by name" % pvc["metadata"]["name"],
          pvc["spec"].get("accessModes") == ["ReadOnlyMany"]
          and pvc["spec"].get("volumeName") in [p["metadata"]["name"] for p in pvs])

# the Containerfile: two Debian 12 slim stages; the runtime's packages cover
# every library the binaries need (or a package they depend on does)
cf = open(os.path.join(DEPLOY, "Containerfile")).read()
stages = re.split(r"(?m)^FROM ", cf)[1:]
check("Containerfile: two stages, both debian:12-slim",
      len(stages) == 2 and all(s.split()[0].endswith("debian:12-slim") for s in stages))
runtime = stages[-1] if stages else ""
listed = set(re.findall(r"\b(lib[a-z0-9.+-]+|fuse3|ca-certificates)\b",
                        runtime.split("&&")[1] if "&&" in runtime else runtime))
check("Containerfile: the runtime stage copies modelfs and modelfs-csi",
      re.search(r"COPY --from=build .*/modelfs .*/modelfs-csi", runtime) is not None)
ok_pkgs = set(listed) | {"libc6", "libgcc-s1", "libstdc++6"}
for p in listed:
    dep = subprocess.run(["apt-cache", "depends", "--important", p], capture_output=True,
                         text=True).stdout
    ok_pkgs |= set(re.findall(r"Depends: ([^\s:]+)", dep))
build = os.path.dirname(os.path.abspath(MODELFS))
for binary in ("modelfs", "modelfs-csi"):
    path = os.path.join(build, binary)
    if not os.path.exists(path):
        check("%s is built" % binary, False)
        continue
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", path], capture_output=True,
                                       text=True).stdout)
    if any(lib.startswith(("libasan", "libubsan")) for lib in needed):
        # a sanitizer build links more (libatomic, every absl library): the
        # image is made from the plain build, which the first ctest pass checks
        check("%s: a sanitizer build, its libraries are not the image's" % binary, True)
        continue
    missing = []
    for lib in needed:
        owner = subprocess.run(["dpkg", "-S", "*/" + lib], capture_output=True, text=True).stdout
        pkg = owner.split(":")[0] if owner else "?"
        if pkg not in ok_pkgs:
            missing.append("%s (%s)" % (lib, pkg))
    check("Containerfile: a runtime package for each of %s's %d libraries%s"
          % (binary, len(needed), ": missing " + ", ".join(missing) if missing else ""),
          not missing)

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
