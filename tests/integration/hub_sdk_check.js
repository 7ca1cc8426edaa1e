// Hugging Face's own JS client (@huggingface/hub) reads a repo from a Hub (the
// fake Hub of the tests): the files it lists must be the regular files of the
// mount, with the same sizes, and what it downloads must have the sha256 of the
// file in the mount. Its model info must name the same files.
//   node hub_sdk_check.js HFHUB_DIR ENDPOINT REPO REV MOUNTDIR [TOKEN]
// HFHUB_DIR holds node_modules/@huggingface/hub; TOKEN must start with hf_ (the
// client refuses other tokens).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const [hfdir, endpoint, repo, rev, mountdir, token] = process.argv.slice(2);
if (!mountdir) {
  console.error('usage: node hub_sdk_check.js HFHUB_DIR ENDPOINT REPO REV MOUNTDIR [TOKEN]');
  process.exit(2);
}
const pkgdir = path.resolve(hfdir, 'node_modules', '@huggingface', 'hub');
const hub = require(pkgdir);
const version = require(path.join(pkgdir, 'package.json')).version;
const MAX_SMALL = 64 << 20;
const common = { repo: { type: 'model', name: repo }, revision: rev,
                 hubUrl: endpoint.replace(/\/+$/, ''), ...(token ? { accessToken: token } : {}) };
const diffs = [];

// the regular files under dir (relative paths, '/'-separated) and their sizes
function walk(dir, rel, files, dirs) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const r = rel ? rel + '/' + e.name : e.name;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      dirs.add(r);
      walk(p, r, files, dirs);
    } else if (e.isFile()) {
      files.set(r, fs.statSync(p).size);
    }
  }
}

function sha256File(p) {
  return new Promise((ok, fail) => {
    const h = crypto.createHash('sha256');
    fs.createReadStream(p).on('data', (b) => h.update(b)).on('end', () => ok(h.digest('hex'))).on('error', fail);
  });
}

async function sha256Blob(blob) {
  const h = crypto.createHash('sha256');
  let n = 0;
  for await (const chunk of blob.stream()) {
    h.update(chunk);
    n += chunk.length;
  }
  return [h.digest('hex'), n];
}

// the client puts the path into the URL as it is: each segment is encoded here
const urlPath = (p) => p.split('/').map(encodeURIComponent).join('/');
const sortKey = (p) => crypto.createHash('sha256').update(p).digest('hex');

async function main() {
  const listed = new Map();
  const listedDirs = new Set();
  for await (const e of hub.listFiles({ ...common, recursive: true })) {
    if (e.type === 'directory') {
      listedDirs.add(e.path);
    } else if (listed.has(e.path)) {
      diffs.push(`listed twice: ${e.path}`);
    } else {
      listed.set(e.path, e);
    }
  }
  const mounted = new Map();
  const mountedDirs = new Set();
  walk(mountdir, '', mounted, mountedDirs);
  for (const [p, e] of [...listed].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    if (!mounted.has(p)) diffs.push(`listed by the client, not in the mount: ${p} (${e.size} bytes)`);
    else if (mounted.get(p) !== e.size) diffs.push(`size of ${p}: client ${e.size}, mount ${mounted.get(p)}`);
    if (e.lfs && e.lfs.size !== e.size) diffs.push(`lfs.size of ${p} is ${e.lfs.size}, size ${e.size}`);
  }
  for (const p of [...mounted.keys()].sort()) {
    if (!listed.has(p)) diffs.push(`in the mount, not listed by the client: ${p} (${mounted.get(p)} bytes)`);
  }
  for (const d of [...listedDirs].sort()) {
    if (!mountedDirs.has(d)) diffs.push(`directory listed by the client, not in the mount: ${d}`);
  }

  const info = await hub.modelInfo({ ...common, repo: undefined, name: repo, additionalFields: ['sha', 'filePaths'] });
  const siblings = new Set(info.filePaths);
  if (siblings.size !== listed.size || [...listed.keys()].some((p) => !siblings.has(p))) {
    diffs.push(`model info names ${siblings.size} files, the listing ${listed.size}`);
  }
  if (/^[0-9a-f]{40}$/.test(rev) && info.sha !== rev) diffs.push(`model info sha ${info.sha}, not ${rev}`);
  console.log(`@huggingface/hub ${version}: ${repo}@${rev} is commit ${info.sha}, ${listed.size} files`);

  const both = [...listed.values()].filter((e) => mounted.has(e.path)).sort((a, b) => (a.path < b.path ? -1 : 1));
  const lfs = both.filter((e) => e.lfs);
  let others = both.filter((e) => !e.lfs && e.size <= MAX_SMALL);
  if (both.length > 300) {
    others = others.map((e) => [sortKey(e.path), e]).sort((a, b) => (a[0] < b[0] ? -1 : 1)).slice(0, 100).map(([, e]) => e);
  }
  const todo = lfs.concat(others);
  let done = 0, empty = 0, next = 0;
  async function worker() {
    while (next < todo.length) {
      const e = todo[next++];
      let blob;
      try {
        blob = await hub.downloadFile({ ...common, path: urlPath(e.path), xet: false });
      } catch (err) {
        if (e.size === 0 && err.statusCode === 416) {
          empty++; // its probe Range: bytes=0-0 cannot be satisfied by a 0-byte file
          continue;
        }
        diffs.push(`download of ${e.path} failed: ${err.message}`);
        continue;
      }
      if (!blob) {
        diffs.push(`download of ${e.path}: the client says it does not exist`);
        continue;
      }
      const [got, n] = await sha256Blob(blob);
      const want = await sha256File(path.join(mountdir, e.path));
      if (n !== e.size) diffs.push(`download of ${e.path}: ${n} bytes, listed ${e.size}`);
      if (got !== want) diffs.push(`sha256 of ${e.path}: client ${got}, mount ${want}`);
      if (e.lfs && e.lfs.oid !== want) diffs.push(`lfs.oid of ${e.path} is ${e.lfs.oid}, the mount's sha256 ${want}`);
      done++;
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker));
  if (empty) console.log(`${empty} empty files not downloaded: the client's Range: bytes=0-0 probe got 416`);
  if (diffs.length) {
    for (const d of diffs.slice(0, 20)) console.log(d);
    console.log(`${diffs.length} differences between @huggingface/hub and the mount`);
    process.exit(1);
  }
  console.log(`@huggingface/hub listed ${listed.size} files (sizes equal) and downloaded ${done} (sha256 equal to the mount)`);
}

main().catch((err) => {
  for (const d of diffs.slice(0, 20)) console.log(d);
  console.log(`@huggingface/hub failed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
