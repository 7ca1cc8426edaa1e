// Alibaba's OSS SDK (ali-oss) signs again every request the fake OSS server
// accepted (its log: method, bucket, key, query, the signed headers, region),
// and the Authorization it computes must equal, byte for byte, the one modelfs
// sent: the fake server's V4 check and modelfs's signer both agree with the SDK.
//   node oss_sdk_check.js ALIOSS_HOME LOGFILE AK SK
const [home, logfile, ak, sk] = process.argv.slice(2);
const sign = require(home + '/node_modules/ali-oss/lib/common/signUtils');
const fs = require('fs');
let n = 0, n1 = 0, bad = 0;
for (const line of fs.readFileSync(logfile, 'utf8').split('\n')) {
  if (!line) continue;
  const r = JSON.parse(line);
  if (r.v === 1) {
    const got = sign.authorization(ak, sk, sign.buildCanonicalString(r.method, r.resource,
                                   { headers: r.headers, parameters: r.parameters }, r.date));
    n1++;
    if (got !== r.authorization) {
      bad++;
      if (bad <= 3) console.log('V1 differs:', r.method, r.resource, '\n  modelfs', r.authorization, '\n  ali-oss', got);
    }
    continue;
  }
  const queries = {};
  for (const part of r.query ? r.query.split('&') : []) {
    const i = part.indexOf('=');
    const k = decodeURIComponent(i < 0 ? part : part.slice(0, i));
    const v = i < 0 ? '' : decodeURIComponent(part.slice(i + 1));
    queries[k] = v === '' ? null : v; // ali-oss signs null as a bare name
  }
  const got = sign.authorizationV4(ak, sk, r.region, r.method, { headers: r.headers, queries },
                                   r.bucket, r.key || undefined, r.additional);
  n++;
  if (got !== r.authorization) {
    bad++;
    if (bad <= 3) console.log('differs:', r.method, r.key, '\n  modelfs', r.authorization, '\n  ali-oss', got);
  }
}
console.log(`${n} V4 and ${n1} V1 requests, ${bad} signatures differ`);
process.exit(n > 0 && n1 > 0 && bad === 0 ? 0 : 1);
