// panva's oidc-provider on 127.0.0.1, for extauth's end-to-end tests.
//
//   PORT=0 CLIENT_ID=extauth CLIENT_SECRET=s3cret node server.mjs
//
// Environment (or --key=value arguments, e.g. --port=0 --client-id=x):
//   PORT            port on 127.0.0.1; 0 (default) lets the OS pick a free one
//   CLIENT_ID       the one confidential client (default "extauth")
//   CLIENT_SECRET   its secret, client_secret_basic at the token endpoint (required)
//   REDIRECT_URIS   its redirect URIs, separated by spaces or commas: the web flow's
//                   callbacks, e.g. http://127.0.0.1:8123/external-auth/oidc/callback
//                   (default http://127.0.0.1/callback; REDIRECT_URI is an alias)
//   ROTATE_REFRESH  "1": rotate refresh tokens on every use (default: never rotate)
//   OIDC_VERBOSE    "1": keep oidc-provider's development notices and log every error
//
// PKCE is required for every authorization request, with S256 only: a request
// without code_challenge, or with code_challenge_method=plain, is refused.
//
// Prints exactly one line, "listening <port>", once it answers; the issuer is
// http://127.0.0.1:<port>. Exits when its stdin closes, or on SIGTERM/SIGINT.
// Everything (grants, sessions, tokens) is kept in memory and lost on exit.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

const args = Object.fromEntries(
  process.argv.slice(2)
    .filter((a) => a.startsWith('--') && a.includes('='))
    .map((a) => {
      const [key, ...rest] = a.slice(2).split('=');
      return [key.toUpperCase().replaceAll('-', '_'), rest.join('=')];
    }),
);
const setting = (name, fallback) => args[name] ?? process.env[name] ?? fallback;

const PORT = Number.parseInt(setting('PORT', '0'), 10);
const CLIENT_ID = setting('CLIENT_ID', 'extauth');
const CLIENT_SECRET = setting('CLIENT_SECRET', '');
const REDIRECT_URIS = setting('REDIRECT_URIS', setting('REDIRECT_URI', 'http://127.0.0.1/callback'))
  .split(/[\s,]+/).filter(Boolean);
const ROTATE_REFRESH = setting('ROTATE_REFRESH', '0') === '1';
const VERBOSE = setting('OIDC_VERBOSE', '0') === '1';

function fail(message) {
  process.stderr.write(`oidc server: ${message}\n`);
  process.exit(2);
}

if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail(`bad PORT ${setting('PORT')}`);
if (!CLIENT_SECRET) fail('CLIENT_SECRET must be set');
if (!REDIRECT_URIS.length) fail('REDIRECT_URIS must name at least one URI');
for (const uri of REDIRECT_URIS) {
  if (!URL.canParse(uri)) fail(`bad redirect URI ${uri}`);
}

if (!VERBOSE) {
  // oidc-provider announces its development defaults (devInteractions, the
  // in-memory adapter, ...) through console.info/console.warn: drop those.
  for (const level of ['info', 'warn']) {
    const original = console[level].bind(console); // eslint-disable-line no-console
    console[level] = (first, ...rest) => { // eslint-disable-line no-console
      if (typeof first === 'string' && first.includes('oidc-provider ')) return;
      original(first, ...rest);
    };
  }
}

// Exit when the parent goes away (stdin closes) or asks us to.
let server;
function shutdown() {
  if (server) server.closeAllConnections?.();
  process.exit(0);
}
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const { default: Provider } = await import('oidc-provider');

// A fresh signing key per run instead of the library's published development key.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'e2e' };

const escape = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1>${body}</body></html>`;

const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    client_name: 'extauth e2e',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [
      'urn:ietf:params:oauth:grant-type:device_code',
      'refresh_token',
      'authorization_code',
    ],
    response_types: ['code'],
    redirect_uris: REDIRECT_URIS,
  }],
  // RFC 7636 for every authorization request, S256 only (8.8.1's default
  // already requires it; spelled out so that the tests' premise is explicit).
  pkce: {
    methods: ['S256'],
    required: () => true,
  },
  // sub comes with openid; name and preferred_username with profile.
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
  },
  scopes: ['openid', 'offline_access', 'profile'],
  // Any login is an account whose sub is the login.
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: `User ${id}`, preferred_username: id };
      },
    };
  },
  // A refresh token for every grant (device flow included) that has offline_access.
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  rotateRefreshToken: ROTATE_REFRESH,
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    deviceFlow: {
      enabled: true,
      // The library's default pages work too but load web fonts and log a notice.
      async userCodeInputSource(ctx, form, out, err) {
        const msg = err ? `<p class="error">${escape(out?.error_description ?? 'There was an error processing your request')}</p>` : '';
        ctx.body = page('Enter the code', `${msg}${form}<button type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p>Code <code>${escape(userCode)}</code> for <strong>${escape(client.clientName || client.clientId)}</strong></p>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
      },
      async successSource(ctx) {
        ctx.body = page('Sign-in Success', '<p>Your device is signed in; you can close this page.</p>');
      },
    },
  },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // Errors the provider renders as HTML: plain text, without the stack.
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre>${Object.entries(out).map(([k, v]) => escape(`${k}: ${v}`)).join('\n')}</pre>`);
  },
};

server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});
const { port } = server.address();

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
if (VERBOSE) {
  provider.on('server_error', (ctx, err) => console.error('server_error', err)); // eslint-disable-line no-console
  provider.on('grant.error', (ctx, err) => console.error('grant.error', err)); // eslint-disable-line no-console
}
server.on('request', provider.callback());

process.stdout.write(`listening ${port}\n`);
