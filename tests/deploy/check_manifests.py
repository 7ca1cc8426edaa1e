#!/usr/bin/python3
"""The Kubernetes manifests and the Containerfile in deploy/, checked for
what matters rather than for style only: every YAML parses (and yamllint
passes), the CSI driver's name is the plugin's, the node plugin has
/dev/fuse, Bidirectional propagation of kubelet's directory, its state on
the node's disk and its secrets on the host's tmpfs, a liveness probe and
requests/limits on every container; the example PV is read-only and takes
its keys by reference only; the Containerfile's runtime stage has a package
for every library the built binaries need.

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
