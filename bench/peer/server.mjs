// The peer of `make bench`: node oidc-provider (pinned in package.json) on loopback, configured
// like our platform for the shared workloads:
//   - one confidential client (client_secret_post) allowed client_credentials, scopes quota:read
//     and quota:write;
//   - RS256 JWT access tokens (resourceIndicators, accessTokenFormat 'jwt') for client_credentials
//     without a `resource` parameter (defaultResource);
//   - opaque tokens for `resource=urn:bench:opaque`, for the introspection workload (oidc-provider
//     refuses to introspect JWTs);
//   - introspection at /token/introspection.
// Storage is an in-memory Map (the most favourable choice for the peer: no I/O at all). With
// PEER_WORKERS=2 the node:cluster primary forks two workers sharing the port; writes are copied to
// the other worker over IPC, so an opaque token issued by one is known to both.
//
// Environment: PEER_PORT, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_WORKERS (1 or 2).
import cluster from 'node:cluster';
import crypto from 'node:crypto';
import http from 'node:http';

const port = Number(process.env.PEER_PORT || 3100);
const workers = Number(process.env.PEER_WORKERS || 1);
const issuer = `http://127.0.0.1:${port}`;
const JWT_RESOURCE = 'https://api.bench.local';
const OPAQUE_RESOURCE = 'urn:bench:opaque';
const SCOPES = 'quota:read quota:write';

if (workers > 1 && cluster.isPrimary) {
  // One key for all workers, made once.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  process.env.PEER_JWK = JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid: 'peer-1', alg: 'RS256', use: 'sig' });
  const forked = [];
  for (let i = 0; i < workers; i += 1) forked.push(cluster.fork());
  for (const w of forked) {
    w.on('message', (msg) => {
      for (const other of forked) if (other !== w && other.isConnected()) other.send(msg);
    });
  }
  const stop = () => { for (const w of forked) w.kill('SIGTERM'); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { default: Provider } = await import('oidc-provider');

  const store = new Map(); // key -> { payload, exp (ms) | undefined }
  const replicate = (msg) => { if (cluster.isWorker) process.send(msg); };
  const apply = (msg) => {
    if (msg?.op === 'set') store.set(msg.key, { payload: msg.payload, exp: msg.exp });
    else if (msg?.op === 'del') store.delete(msg.key);
  };
  if (cluster.isWorker) process.on('message', apply);

  class MapAdapter {
    constructor(name) { this.name = name; }
    key(id) { return `${this.name}:${id}`; }
    get(key) {
      const e = store.get(key);
      if (!e) return undefined;
      if (e.exp && e.exp < Date.now()) { store.delete(key); return undefined; }
      return e.payload;
    }
    set(key, payload, expiresIn) {
      const msg = { op: 'set', key, payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : undefined };
      apply(msg);
      replicate(msg);
    }
    async upsert(id, payload, expiresIn) {
      this.set(this.key(id), payload, expiresIn);
      if (payload.uid) this.set(`uid:${payload.uid}`, id, expiresIn);
      if (payload.userCode) this.set(`userCode:${payload.userCode}`, id, expiresIn);
    }
    async find(id) { return this.get(this.key(id)); }
    async findByUid(uid) { const id = this.get(`uid:${uid}`); return id ? this.find(id) : undefined; }
    async findByUserCode(code) { const id = this.get(`userCode:${code}`); return id ? this.find(id) : undefined; }
    async consume(id) {
      const payload = this.get(this.key(id));
      if (payload) this.set(this.key(id), { ...payload, consumed: Math.floor(Date.now() / 1000) });
    }
    async destroy(id) { const msg = { op: 'del', key: this.key(id) }; apply(msg); replicate(msg); }
    async revokeByGrantId() {}
  }

  let jwk;
  if (process.env.PEER_JWK) {
    jwk = JSON.parse(process.env.PEER_JWK);
  } else {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'peer-1', alg: 'RS256', use: 'sig' };
  }

  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    jwks: { keys: [jwk] },
    clients: [{
      client_id: process.env.PEER_CLIENT_ID || 'bench-client',
      client_secret: process.env.PEER_CLIENT_SECRET || 'bench-secret-bench-secret-bench-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: SCOPES,
    }],
    scopes: ['openid', 'quota:read', 'quota:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => JWT_RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (resource === JWT_RESOURCE) {
            return {
              scope: SCOPES,
              audience: JWT_RESOURCE,
              accessTokenTTL: 7200,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'RS256' } },
            };
          }
          if (resource === OPAQUE_RESOURCE) {
            return { scope: SCOPES, audience: OPAQUE_RESOURCE, accessTokenTTL: 7200, accessTokenFormat: 'opaque' };
          }
          throw new Provider.errors.InvalidTarget();
        },
      },
    },
    ttl: { ClientCredentials: 7200 },
  });
  provider.on('server_error', (ctx, err) => console.error('peer server_error', err));

  const server = http.createServer(provider.callback());
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1', () => {
    console.log(`peer: oidc-provider ${cluster.isWorker ? `worker ${cluster.worker.id} ` : ''}listening on ${issuer}`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}
