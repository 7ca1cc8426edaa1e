#!/usr/bin/python3
"""A stand-in for the node's systemd, for t_scope.sh: the part of its
private bus (peer to peer, no bus daemon, as /run/systemd/private is) that
`systemd-run --scope` and modelfs-csi use: the Manager's Version, StartTransientUnit(NAME.scope,
MODE, PROPERTIES, AUX) makes the cgroup CGROOT/NAME, moves the PIDs into
it (with memory.max from MemoryMax, where the memory controller is on), answers
with a job path and then sends JobRemoved(ID, JOB, NAME,
RESULT), as systemd does. t_scope.sh checks it against Debian's own
systemd-run before trusting it.

CONTROL, read at each call: "done" (or no file), "failed" (the job fails,
nothing moves), "slowfail" (the same, 2 s later) or "nomove" (the job says
done, nothing moves): the ways a
real systemd lets a caller down. Each call is logged to LOG as one JSON line.

usage: systemdfake.py SOCKET CGROOT LOG CONTROL  (Debian's python3: dbus, gi)
"""
import json, os, sys

import dbus
import dbus.server
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

sock, cgroot, logpath, control = sys.argv[1:5]
MANAGER = "org.freedesktop.systemd1.Manager"
PATH = "/org/freedesktop/systemd1"
DBusGMainLoop(set_as_default=True)
jobs = [0]
units = set()
last = [""]


def unescape(p):
    """A bus path's last part as systemd escapes unit names in it (_XX)."""
    out, i = b"", 0
    while i < len(p):
        if p[i] == "_" and len(p[i + 1:i + 3]) == 2:
            out += bytes.fromhex(p[i + 1:i + 3])
            i += 3
        else:
            out += p[i].encode()
            i += 1
    return out.decode()


def plain(v):
    """D-Bus values as JSON takes them."""
    if isinstance(v, (list, dbus.Array)):
        return [plain(x) for x in v]
    if isinstance(v, (tuple, dbus.Struct)):
        return [plain(x) for x in v]
    if isinstance(v, (bool, dbus.Boolean)):
        return bool(v)
    if isinstance(v, (int, dbus.UInt32, dbus.Int32, dbus.UInt64, dbus.Int64, dbus.Byte)):
        return int(v)
    return str(v)


class Manager(dbus.service.Object):
    @dbus.service.method(MANAGER, in_signature="ssa(sv)a(sa(sv))", out_signature="o")
    def StartTransientUnit(self, name, mode, props, aux):
        props = {str(k): v for k, v in props}
        what = "done"
        if os.path.exists(control):
            with open(control) as f:
                what = f.read().strip() or "done"
        with open(logpath, "a") as f:
            f.write(json.dumps({"name": str(name), "mode": str(mode), "control": what,
                                "props": {k: plain(v) for k, v in props.items()},
                                "aux": plain(aux)}) + "\n")
        if not name.endswith(".scope") or mode not in ("fail", "replace"):
            raise dbus.exceptions.DBusException("bad unit or mode",
                                                name="org.freedesktop.DBus.Error.InvalidArgs")
        if name in units:
            raise dbus.exceptions.DBusException("Unit %s already exists." % name,
                                                name="org.freedesktop.systemd1.UnitExists")
        pids = props.get("PIDs")
        if not pids:
            raise dbus.exceptions.DBusException("A scope needs PIDs",
                                                name="org.freedesktop.DBus.Error.InvalidArgs")
        units.add(str(name))
        last[0] = str(name)
        result = "done"
        if what in ("failed", "slowfail"):
            result = "failed"
        elif what != "nomove":
            d = os.path.join(cgroot, name)
            os.makedirs(d, exist_ok=True)
            if "MemoryMax" in props and os.path.exists(os.path.join(d, "memory.max")):
                try:
                    with open(os.path.join(d, "memory.max"), "w") as f:
                        f.write("%d\n" % props["MemoryMax"])
                except OSError as e:  # t_scope.sh compares memory.max: it fails there
                    print("systemdfake: %s: memory.max: %s" % (name, e), flush=True)
            for pid in pids:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("%d\n" % pid)
        jobs[0] += 1
        jid = jobs[0]
        job = "%s/job/%d" % (PATH, jid)
        # after the answer, as systemd's job runs after it queues it
        GLib.timeout_add(2000 if what == "slowfail" else 0,
                         lambda: self.JobRemoved(dbus.UInt32(jid), dbus.ObjectPath(job),
                                                 name, result) and False)
        return dbus.ObjectPath(job)

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        if iface == MANAGER and prop == "Version":
            return dbus.String("252-fake")
        raise dbus.exceptions.DBusException("Unknown property " + prop,
                                            name="org.freedesktop.DBus.Error.UnknownProperty")

    @dbus.service.signal(MANAGER, signature="uoss")
    def JobRemoved(self, id, job, unit, result):
        pass


class Units(dbus.service.FallbackObject):
    """/org/freedesktop/systemd1/unit/NAME: what systemd-run asks of the
    scope it started (its invocation id)."""

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v",
                         rel_path_keyword="rel")
    def Get(self, iface, prop, rel=None):
        name = unescape(rel.lstrip("/"))
        if name == "self":  # the caller's unit: here, the one it just started
            name = last[0]
        if name not in units:
            raise dbus.exceptions.DBusException("Unit %s not loaded." % name,
                                                name="org.freedesktop.systemd1.NoSuchUnit")
        if prop == "InvocationID":
            return dbus.Array(os.urandom(16), signature="y")
        if prop == "Id":
            return dbus.String(name)
        raise dbus.exceptions.DBusException("Unknown property " + prop,
                                            name="org.freedesktop.DBus.Error.UnknownProperty")


managers = []


def on_connection(conn):
    managers.append(Manager(conn, PATH))
    managers.append(Units(conn, PATH + "/unit"))


server = dbus.server.Server("unix:path=" + sock)
server.on_connection_added.append(on_connection)
print("systemdfake: listening on %s" % sock, flush=True)
GLib.MainLoop().run()
