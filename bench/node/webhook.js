// Row "node SDK: webhook check": the vendor's Node SDK (@gohighlevel/api-client) checking one delivery, COUNT
// times, through its own code path: WebhookManager.subscribe()'s middleware, as an Express app mounts it after
// express.json() (so req.body is the parsed body: the middleware verifies JSON.stringify(req.body), which is why
// the bench body is one that survives re-serialisation). A delivery counts as an error unless the SDK set
// req.isSignatureValid.
//
//   node bench/node/webhook.js PUBLIC_KEY_PEM_FILE BODY_FILE SIGNATURE_B64 COUNT
'use strict';
const fs = require('fs');
const { WebhookManager } = require('@gohighlevel/api-client');

async function main() {
  const [keyFile, bodyFile, sig, countArg] = process.argv.slice(2);
  const count = Number(countArg);
  const publicKey = fs.readFileSync(keyFile, 'utf8');
  const raw = fs.readFileSync(bodyFile, 'utf8');
  const quiet = () => {};
  const logger = { debug: quiet, info: quiet, warn: quiet, error: quiet };
  const appId = JSON.parse(raw).appId;
  const manager = new WebhookManager(logger, null, null, { clientId: appId + '-bench', publicKey });
  const middleware = manager.subscribe();
  let errors = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const req = { method: 'POST', url: '/webhook', headers: { 'x-ghl-signature': sig, 'content-type': 'application/json' },
      body: JSON.parse(raw) };
    let failed = null;
    await middleware(req, {}, (e) => { failed = e || null; });
    if (failed || !req.isSignatureValid || !req.body.messageId) errors++;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(`BENCH requests=${count} errors=${errors} seconds=${secs.toFixed(6)}\n`);
}
main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
