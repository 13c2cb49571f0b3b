// A real OpenID Connect provider (oidc-provider 9.x) for Dataport's end-to-end tests.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json:
//   {"port": N,                              // 0 = pick a free loopback port
//    "issuer": "http://127.0.0.1:N",         // optional, no path; default http://127.0.0.1:<port>
//    "clients": [{"client_id", "client_secret", "redirect_uris": [...],
//                 "token_endpoint_auth_method"?}],   // default client_secret_basic, enforced
//    "accounts": [{"sub", "email", "email_verified", "name", "picture"?, "hd"?}],
//    "id_token_alg": "RS256",                // optional: RS256 (default), PS256 or ES256
//    "exit_on_stdin_eof": false}             // optional: end when stdin closes (the parent died)
//
// Listens on 127.0.0.1 only and prints exactly one line `ready <issuer>` on stdout once it
// answers. Errors go to stderr. SIGTERM / SIGINT end it.
//
// What it serves besides the standard endpoints (discovery, /jwks, /auth, /token, ...):
//   GET  /interaction/:uid         a minimal sign-in form (input `login`: an account's email
//                                  or sub), or, when only consent is missing, an automatic
//                                  consent and a 303 back to /auth
//   POST /interaction/:uid/login   signs in and consents to everything requested, 303 back
//                                  to /auth (which 303s to the client's redirect_uri with
//                                  code and state); an unknown login re-shows the form (200)
//   POST /interaction/:uid/abort   ends the interaction with error=access_denied
//   POST /__test/tamper            {"mode": M} alters the NEXT ID token issued by /token only
//                                  (M: none|audience|expired|signature|unverified|nonce|
//                                  issuer|claims; "claims" merges the object given as
//                                  "claims" into the payload)
//   POST /__test/rotate            {"keep_old": false, "alg"?: "ES256"} a new signing key
//                                  with a new kid (and, given "alg", a new ID token
//                                  algorithm); answers {"kid": NEW, "kids": [all published]}
//   POST /__test/clients           {"clients": [...]} replaces the registered clients (for a
//                                  relying party whose port is only known once it runs)
//   GET  /__test/state             {"kid", "alg", "kids", "tamper", "clients"}
//
// Sessions, grants and codes live in oidc-provider's in-memory adapter, whose storage is
// module-wide, so they survive the Provider rebuild that /__test/rotate and
// /__test/clients do.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

if (process.argv.length !== 3) {
  fail('usage: node provider.mjs CONFIG.json');
}

let config;
try {
  config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  fail(`cannot read config ${process.argv[2]}: ${err.message}`);
}

const accounts = Array.isArray(config.accounts) ? config.accounts : [];
for (const account of accounts) {
  if (typeof account.sub !== 'string' || !account.sub) {
    fail(`every account needs a non-empty string "sub": ${JSON.stringify(account)}`);
  }
}
let clients = Array.isArray(config.clients) ? config.clients : [];

// Claims an account may carry, by scope. `hd` sits with `openid`, so it is in every ID token
// of an account that has one (as Google does for Workspace accounts).
const CLAIMS = {
  openid: ['sub', 'hd'],
  email: ['email', 'email_verified'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username', 'picture', 'locale'],
};

const TAMPER_MODES = new Set([
  'none', 'audience', 'expired', 'signature', 'unverified', 'nonce', 'issuer', 'claims',
]);
let tamper = { mode: 'none' };

const cookieKeys = [crypto.randomBytes(32).toString('hex'), crypto.randomBytes(32).toString('hex')];

const SIGNING_ALGS = new Set(['RS256', 'PS256', 'ES256']);
let idTokenAlg = config.id_token_alg ?? 'RS256';
if (!SIGNING_ALGS.has(idTokenAlg)) {
  fail(`id_token_alg must be one of ${[...SIGNING_ALGS].join(', ')}`);
}

async function newSigningKey(alg) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return {
    ...jwk, kid: `test-${crypto.randomBytes(6).toString('hex')}`, alg, use: 'sig',
  };
}

// The signing keys; the first one of idTokenAlg signs.
let signingKeys = [];

function findAccountByLogin(login) {
  const wanted = String(login ?? '').trim();
  if (!wanted) return undefined;
  return accounts.find((a) => a.sub === wanted)
    || accounts.find((a) => typeof a.email === 'string'
      && a.email.toLowerCase() === wanted.toLowerCase());
}

function htmlEscape(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

function loginPage(uid, clientId, error) {
  const u = encodeURIComponent(uid);
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in - test provider</title></head>
<body>
<h1>Sign in to ${htmlEscape(clientId)}</h1>
${error ? `<p class="error" id="error">${htmlEscape(error)}</p>\n` : ''}<form id="login" method="post" action="/interaction/${u}/login">
<label>Email or subject <input type="text" name="login" autofocus></label>
<button type="submit">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${u}/abort">
<button type="submit">Cancel</button>
</form>
</body></html>
`;
}

async function readBody(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function readForm(ctx) {
  return Object.fromEntries(new URLSearchParams(await readBody(ctx)));
}

async function readJson(ctx) {
  const text = await readBody(ctx);
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    return ctx.throw(400, 'body must be JSON');
  }
}

function noCache(ctx) {
  ctx.set('cache-control', 'no-store');
  ctx.set('pragma', 'no-cache');
}

// A grant for everything the authorization request asked: its scope and the claims named in
// its `claims` parameter.
async function grantEverything(provider, details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
  }
  if (!grant || grant.accountId !== accountId) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(String(params.scope));
  if (params.claims) {
    try {
      const requested = JSON.parse(params.claims);
      const names = new Set();
      for (const part of ['id_token', 'userinfo']) {
        if (requested?.[part] && typeof requested[part] === 'object') {
          Object.keys(requested[part]).forEach((name) => names.add(name));
        }
      }
      if (names.size) grant.addOIDCClaims([...names]);
    } catch {
      // oidc-provider validated `claims` already; nothing to add from a malformed one
    }
  }
  const missing = prompt?.details?.missingResourceScopes;
  if (missing) {
    for (const [indicator, scopes] of Object.entries(missing)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return grant.save();
}

async function finish(ctx, provider, result) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  noCache(ctx);
  ctx.redirect(returnTo);
  ctx.status = 303;
}

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function tamperIdToken(idToken, mode, extraClaims) {
  const [headerPart, payloadPart] = idToken.split('.');
  const header = b64json(headerPart);
  const payload = b64json(payloadPart);
  const now = Math.floor(Date.now() / 1000);
  let key;
  switch (mode) {
    case 'audience':
      payload.aud = 'someone-else';
      break;
    case 'expired':
      payload.iat = now - 3600;
      payload.exp = now - 3000;
      if (typeof payload.auth_time === 'number') payload.auth_time = now - 3600;
      break;
    case 'unverified':
      payload.email_verified = false;
      break;
    case 'nonce':
      payload.nonce = `not-${payload.nonce ?? 'the-nonce'}`;
      break;
    case 'issuer':
      payload.iss = 'http://127.0.0.1:1/someone-else';
      break;
    case 'claims':
      Object.assign(payload, extraClaims ?? {});
      for (const [name, value] of Object.entries(extraClaims ?? {})) {
        if (value === null) delete payload[name];
      }
      break;
    case 'signature':
      // A stranger's key under the real key's kid: the relying party finds the key id in
      // the JWKS, and the signature does not verify.
      ({ privateKey: key } = await jose.generateKeyPair(header.alg || 'RS256'));
      break;
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
  if (!key) {
    const real = signingKeys.find((k) => k.kid === header.kid) || signingKeys[0];
    key = await jose.importJWK(real, header.alg || real.alg);
  }
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(key);
}

function buildProvider(issuer) {
  const mount = new URL(issuer).pathname.replace(/\/$/, '');
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      // The defaults, spelled out: a confidential web client of the code flow. A web
      // client may register http://127.0.0.1 redirect URIs (only the implicit flow must use
      // https), matched exactly, port included.
      application_type: 'web',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
      id_token_signed_response_alg: idTokenAlg,
      ...(c.post_logout_redirect_uris ? { post_logout_redirect_uris: c.post_logout_redirect_uris } : {}),
    })),
    jwks: { keys: signingKeys },
    cookies: {
      keys: cookieKeys,
      // Cookies do not tell ports apart: the relying party on another 127.0.0.1 port shares
      // the cookie jar, so these names must not collide with its own.
      names: {
        session: 'op_session',
        interaction: 'op_interaction',
        resume: 'op_interaction_resume',
      },
    },
    claims: CLAIMS,
    // Scope-requested claims go into the ID token too, not only to /userinfo.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      url: (ctx, interaction) => `${mount}/interaction/${interaction.uid}`,
    },
    async findAccount(ctx, sub) {
      const account = accounts.find((a) => a.sub === sub);
      if (!account) return undefined;
      return {
        accountId: account.sub,
        async claims() {
          return { ...account };
        },
      };
    },
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>oops</title></head><body>
<h1>oops! something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<pre><strong>${htmlEscape(k)}</strong>: ${htmlEscape(v)}</pre>`).join('\n')}
</body></html>
`;
      if (error && ctx.status >= 500) process.stderr.write(`render error: ${error.stack || error}\n`);
    },
  });

  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`server_error ${ctx.method} ${ctx.path}: ${err.stack || err}\n`);
  });
  for (const event of ['grant.error', 'authorization.error', 'userinfo.error']) {
    provider.on(event, (ctx, err) => {
      process.stderr.write(`${event} ${ctx.method} ${ctx.path}: ${err.name}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}\n`);
    });
  }

  const tokenPath = `${mount}/token`;
  const interactionRe = new RegExp(`^${mount}/interaction/([^/]+)(?:/(login|abort))?$`);

  // The token endpoint: strict client_secret_basic, and the tamper hook.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === tokenPath
      && ctx.is('application/x-www-form-urlencoded')) {
      // oidc-provider 9 accepts client_secret in the body from a client registered for
      // client_secret_basic (it takes the two as one); this provider holds such a client to
      // HTTP Basic. The body is read here and handed on as req.body, which oidc-provider
      // parses instead of the stream.
      const raw = await readBody(ctx);
      ctx.req.body = raw;
      const form = new URLSearchParams(raw);
      if (form.has('client_secret')) {
        const registered = clients.find((c) => c.client_id === form.get('client_id'));
        if ((registered?.token_endpoint_auth_method ?? 'client_secret_basic') === 'client_secret_basic') {
          noCache(ctx);
          ctx.status = 401;
          ctx.set('www-authenticate', 'Basic realm="test-oidc-provider"');
          ctx.body = {
            error: 'invalid_client',
            error_description: 'the client is registered for client_secret_basic: send the secret with HTTP Basic, not in the body',
          };
          process.stderr.write('token: refused client_secret in the body (client_secret_basic client)\n');
          return;
        }
      }
    }
    await next();
    if (
      ctx.method === 'POST' && ctx.path === tokenPath && ctx.status === 200
      && ctx.body && typeof ctx.body === 'object' && typeof ctx.body.id_token === 'string'
      && tamper.mode !== 'none'
    ) {
      const { mode, claims } = tamper;
      tamper = { mode: 'none' };
      ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, mode, claims) };
      process.stderr.write(`tampered an ID token: ${mode}\n`);
    }
  });

  // The interactions and the test controls.
  provider.use(async (ctx, next) => {
    const m = interactionRe.exec(ctx.path);
    if (m) {
      const [, uid, action] = m;
      let details;
      try {
        details = await provider.interactionDetails(ctx.req, ctx.res);
      } catch (err) {
        noCache(ctx);
        ctx.status = 400;
        ctx.type = 'text';
        ctx.body = `interaction not found: ${err.error_description || err.message}\n`;
        return;
      }
      if (details.uid !== uid) {
        ctx.status = 400;
        ctx.type = 'text';
        ctx.body = 'interaction id does not match the interaction cookie\n';
        return;
      }
      const clientId = details.params.client_id;
      if (!action && ctx.method === 'GET') {
        if (details.prompt.name === 'consent') {
          const grantId = await grantEverything(provider, details, details.session.accountId);
          await finish(ctx, provider, { consent: { grantId } });
          return;
        }
        if (details.prompt.name !== 'login') {
          ctx.status = 501;
          ctx.body = `prompt ${details.prompt.name} not implemented\n`;
          return;
        }
        noCache(ctx);
        ctx.type = 'html';
        ctx.body = loginPage(uid, clientId);
        return;
      }
      if (action === 'login' && ctx.method === 'POST') {
        const form = await readForm(ctx);
        const account = findAccountByLogin(form.login);
        if (!account) {
          noCache(ctx);
          ctx.type = 'html';
          ctx.body = loginPage(uid, clientId, `unknown account: ${form.login ?? ''}`);
          return;
        }
        const grantId = await grantEverything(provider, details, account.sub);
        await finish(ctx, provider, {
          login: { accountId: account.sub },
          consent: { grantId },
        });
        return;
      }
      if (action === 'abort' && ctx.method === 'POST') {
        await finish(ctx, provider, {
          error: 'access_denied',
          error_description: 'End-User aborted interaction',
        });
        return;
      }
      ctx.status = 405;
      return;
    }

    if (ctx.path.startsWith(`${mount}/__test/`)) {
      await testControl(ctx, ctx.path.slice(mount.length + '/__test/'.length));
      return;
    }
    await next();
  });

  return provider;
}

let issuer;
let provider;
let handler;

// Builds the Provider and checks every client's metadata now (oidc-provider checks a static
// client only when it is first looked up), then starts serving with it.
async function install() {
  const next = buildProvider(issuer);
  for (const c of clients) {
    // eslint-disable-next-line no-await-in-loop
    await next.Client.find(c.client_id);
  }
  provider = next;
  handler = provider.callback();
}

function state() {
  return {
    kid: signingKeys[0].kid,
    alg: idTokenAlg,
    kids: signingKeys.map((k) => k.kid),
    tamper,
    clients: clients.map((c) => ({ client_id: c.client_id, redirect_uris: c.redirect_uris })),
  };
}

async function testControl(ctx, what) {
  noCache(ctx);
  if (what === 'state' && ctx.method === 'GET') {
    ctx.body = state();
    return;
  }
  if (ctx.method !== 'POST') {
    ctx.status = 405;
    return;
  }
  const body = await readJson(ctx);
  switch (what) {
    case 'tamper': {
      const mode = body.mode ?? 'none';
      if (!TAMPER_MODES.has(mode)) {
        ctx.status = 400;
        ctx.body = { error: `unknown mode ${mode}`, modes: [...TAMPER_MODES] };
        return;
      }
      if (mode === 'claims' && (typeof body.claims !== 'object' || body.claims === null)) {
        ctx.status = 400;
        ctx.body = { error: 'mode "claims" wants an object "claims"' };
        return;
      }
      tamper = mode === 'claims' ? { mode, claims: body.claims } : { mode };
      ctx.body = { tamper };
      return;
    }
    case 'rotate': {
      const alg = body.alg ?? idTokenAlg;
      if (!SIGNING_ALGS.has(alg)) {
        ctx.status = 400;
        ctx.body = { error: `alg must be one of ${[...SIGNING_ALGS].join(', ')}` };
        return;
      }
      const key = await newSigningKey(alg);
      signingKeys = body.keep_old ? [key, ...signingKeys] : [key];
      idTokenAlg = alg;
      await install();
      ctx.body = { kid: key.kid, kids: signingKeys.map((k) => k.kid) };
      return;
    }
    case 'clients': {
      if (!Array.isArray(body.clients)) {
        ctx.status = 400;
        ctx.body = { error: 'want {"clients": [...]}' };
        return;
      }
      const previous = clients;
      clients = body.clients;
      try {
        await install();
      } catch (err) {
        clients = previous;
        await install();
        ctx.status = 400;
        ctx.body = { error: `${err.name}: ${err.error_description || err.message}` };
        return;
      }
      ctx.body = state();
      return;
    }
    default:
      ctx.status = 404;
  }
}

async function main() {
  signingKeys = [await newSigningKey(idTokenAlg)];
  const server = http.createServer((req, res) => {
    if (handler) {
      handler(req, res);
    } else {
      res.statusCode = 503;
      res.end();
    }
  });
  server.on('error', (err) => fail(`listen: ${err.message}`));
  await new Promise((resolve) => { server.listen(Number(config.port ?? 0), '127.0.0.1', resolve); });
  const { port } = server.address();
  issuer = config.issuer || `http://127.0.0.1:${port}`;
  if (!['', '/'].includes(new URL(issuer).pathname)) {
    // The provider answers at the root of its port; an issuer with a path would need it
    // mounted under that path.
    fail(`issuer must have no path: ${issuer}`);
  }
  try {
    await install();
  } catch (err) {
    fail(`bad config: ${err.name}: ${err.error_description || err.message}`);
  }

  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (config.exit_on_stdin_eof) {
    // The parent holds our stdin open; when it exits or drops us, so do we.
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }

  process.stdout.write(`ready ${issuer}\n`);
}

main().catch((err) => fail(err.stack || String(err)));
