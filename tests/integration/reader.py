#!/usr/bin/env python3
"""Read a file through the mount over and over until STOPFILE exists, and
say how it went: every pass's sha256 against WANT, errors, the slowest
read. MODE seq: open, read 1 MiB blocks, close, each pass. MODE mmap: one
open for the whole run; each pass maps the file and compares 4 KiB pages at
random offsets with the same pages of SOURCE. Each pass first drops the
file's pages from the page cache, so that reads reach the daemon.

usage: reader.py MODE PATH WANT_SHA256|SOURCE STOPFILE
prints: passes=N errors=E max_read_ms=M first_error=...
"""
import hashlib, mmap, os, random, sys, time

mode, path, want, stop = sys.argv[1:5]
passes = errors = 0
worst = 0.0
first = ""


def timed(fn):
    global worst
    t = time.monotonic()
    r = fn()
    worst = max(worst, time.monotonic() - t)
    return r


if mode == "seq":
    while not os.path.exists(stop):
        try:
            fd = timed(lambda: os.open(path, os.O_RDONLY))
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                h = hashlib.sha256()
                while True:
                    b = timed(lambda: os.read(fd, 1 << 20))
                    if not b:
                        break
                    h.update(b)
            finally:
                os.close(fd)
            passes += 1
            if h.hexdigest() != want:
                errors += 1
                first = first or "pass %d: wrong sha256" % passes
        except OSError as e:
            errors += 1
            first = first or "pass %d: %s" % (passes + 1, e)
            time.sleep(0.1)
else:
    src = open(want, "rb")
    size = os.fstat(src.fileno()).st_size
    fd = os.open(path, os.O_RDONLY)
    rnd = random.Random(1)
    while not os.path.exists(stop):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            try:
                for _ in range(64):
                    off = rnd.randrange(0, size // 4096) * 4096
                    got = timed(lambda: m[off:off + 4096])
                    src.seek(off)
                    if got != src.read(4096):
                        errors += 1
                        first = first or "pass %d: wrong bytes at %d" % (passes + 1, off)
            finally:
                m.close()
            passes += 1
        except (OSError, ValueError) as e:
            errors += 1
            first = first or "pass %d: %s" % (passes + 1, e)
            time.sleep(0.1)
    os.close(fd)
print("passes=%d errors=%d max_read_ms=%d first_error=%s" % (passes, errors, worst * 1000, first or "none"))
