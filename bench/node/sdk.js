// Row "node SDK": the vendor's official Node SDK (@gohighlevel/api-client, the
// exact version pinned in package.json), get-message sequentially, each call
// awaited before the next, as a caller would write it.
//
//   node bench/node/sdk.js BASE_URL TOKEN MESSAGE_ID COUNT [VERSION]
//
// The SDK has no base-URL option: every service shares one axios instance,
// created with baseURL HighLevel.BASE_URL, which getHttpClient() hands out, so
// the bench repoints that instance's defaults at the local server.
// The SDK sends `Version: 2023-02-21` by default; when VERSION is given it is
// passed per call through the SDK's own per-call options (`{ headers }`).
// Node 20's global HTTP agent keeps connections alive, so this reuses one. With an https:// BASE_URL (the TLS
// rows) the bench starts node with NODE_EXTRA_CA_CERTS naming its certificate, which Node then verifies; the
// global HTTPS agent keeps the connection alive and caches TLS sessions (maxCachedSessions 100).
// Prints one "BENCH requests=N errors=E seconds=S" line.
'use strict';
const { HighLevel } = require('@gohighlevel/api-client');

async function main() {
  const [base, token, id, countArg, version] = process.argv.slice(2);
  const count = Number(countArg);
  if (!base || !token || !id || !(count > 0)) {
    process.stderr.write('usage: sdk.js BASE_URL TOKEN MESSAGE_ID COUNT [VERSION]\n');
    process.exit(2);
  }
  const ghl = new HighLevel({ privateIntegrationToken: token, logLevel: 'error' });
  ghl.getHttpClient().defaults.baseURL = base;
  const options = version ? { headers: { Version: version } } : undefined;

  let errors = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    try {
      const msg = await ghl.conversations.getMessage({ id }, options);
      if (!msg || !msg.id) throw new Error('answer without id');
    } catch (e) {
      if (errors++ === 0) {
        const status = e && e.response ? ` (HTTP ${e.response.status})` : '';
        process.stderr.write(`node sdk: first error: ${e && e.message}${status}\n`);
      }
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(`BENCH requests=${count} errors=${errors} seconds=${seconds.toFixed(6)}\n`);
}

main().catch((e) => {
  process.stderr.write(`node sdk: ${e && e.stack}\n`);
  process.exit(1);
});
