// The peer of `make bench`: node oidc-provider (pinned in package.json) on loopback, configured
// like our platform for the shared workloads:
//   - one confidential client (client_secret_post) allowed client_credentials, scopes quota:read
//     and quota:write;
//   - RS256 JWT access tokens (resourceIndicators, accessTokenFormat 'jwt') for client_credentials
//     without a `resource` parameter (defaultResource);
//   - opaque tokens for `resource=urn:bench:opaque`, for the introspection workload (oidc-provider
//     refuses to introspect JWTs);
//   - introspection at /token/introspection.
//   - a second confidential client (PEER_WEB_CLIENT_ID) for the authorization_code flow and refresh
//     rotation (rotateRefreshToken: every use rotates, as ours), logged in once through the
//     development interactions (any login and password), whose session and grant later authorize
//     requests reuse, so they answer with a code at once;
//   - PEER_ALG: RS256 (2048-bit, as ours) or ES256 (P-256) for every signature.
// Storage (PEER_ADAPTER):
//   - memory: an in-memory Map (the most favourable choice for the peer: no I/O at all). With
//     PEER_WORKERS=2 the node:cluster primary forks two workers sharing the port; writes are copied
//     to the other worker over IPC, so a token issued by one is known to both;
//   - redis: Redis (PEER_REDIS_URL, keys under PEER_REDIS_PREFIX), after the Redis adapter example
//     in oidc-provider's repository (example/adapters/redis.js): how it is run in production.
//
// Environment: PEER_PORT, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_WEB_CLIENT_ID,
// PEER_WEB_CLIENT_SECRET, PEER_REDIRECT_URI, PEER_WORKERS (1 or 2), PEER_ALG, PEER_ADAPTER,
// PEER_REDIS_URL, PEER_REDIS_PREFIX.
import cluster from 'node:cluster';
import crypto from 'node:crypto';
import http from 'node:http';

const port = Number(process.env.PEER_PORT || 3100);
const workers = Number(process.env.PEER_WORKERS || 1);
const issuer = `http://127.0.0.1:${port}`;
const JWT_RESOURCE = 'https://api.bench.local';
const OPAQUE_RESOURCE = 'urn:bench:opaque';
const SCOPES = 'quota:read quota:write';
const ALG = process.env.PEER_ALG || 'RS256';
const ADAPTER = process.env.PEER_ADAPTER || 'memory';

function newJwk() {
  const { privateKey } = ALG === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'peer-1', alg: ALG, use: 'sig' };
}

if (workers > 1 && cluster.isPrimary) {
  // One key for all workers, made once.
  process.env.PEER_JWK = JSON.stringify(newJwk());
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

  // After oidc-provider's example/adapters/redis.js (ioredis).
  let RedisAdapter;
  if (ADAPTER === 'redis') {
    const { default: Redis } = await import('ioredis');
    const client = new Redis(process.env.PEER_REDIS_URL || 'redis://127.0.0.1:6379/0', {
      keyPrefix: process.env.PEER_REDIS_PREFIX || 'oidc:',
    });
    const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
    const consumable = new Set(['AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
    const grantKeyFor = (id) => `grant:${id}`;
    const userCodeKeyFor = (userCode) => `userCode:${userCode}`;
    const uidKeyFor = (uid) => `uid:${uid}`;
    RedisAdapter = class {
      constructor(name) { this.name = name; }
      key(id) { return `${this.name}:${id}`; }
      async upsert(id, payload, expiresIn) {
        const key = this.key(id);
        const multi = client.multi();
        if (consumable.has(this.name)) multi.hmset(key, { payload: JSON.stringify(payload) });
        else multi.set(key, JSON.stringify(payload));
        if (expiresIn) multi.expire(key, expiresIn);
        if (grantable.has(this.name) && payload.grantId) {
          const grantKey = grantKeyFor(payload.grantId);
          multi.rpush(grantKey, key);
          const ttl = await client.ttl(grantKey);
          if (expiresIn > ttl) multi.expire(grantKey, expiresIn);
        }
        if (payload.userCode) {
          multi.set(userCodeKeyFor(payload.userCode), id);
          multi.expire(userCodeKeyFor(payload.userCode), expiresIn);
        }
        if (payload.uid) {
          multi.set(uidKeyFor(payload.uid), id);
          multi.expire(uidKeyFor(payload.uid), expiresIn);
        }
        await multi.exec();
      }
      async find(id) {
        const data = consumable.has(this.name) ? await client.hgetall(this.key(id)) : await client.get(this.key(id));
        if (!data || (typeof data === 'object' && !Object.keys(data).length)) return undefined;
        if (typeof data === 'string') return JSON.parse(data);
        const { payload, ...rest } = data;
        return { ...rest, ...JSON.parse(payload) };
      }
      async findByUid(uid) { const id = await client.get(uidKeyFor(uid)); return id ? this.find(id) : undefined; }
      async findByUserCode(userCode) {
        const id = await client.get(userCodeKeyFor(userCode));
        return id ? this.find(id) : undefined;
      }
      async destroy(id) { await client.del(this.key(id)); }
      async revokeByGrantId(grantId) {
        const multi = client.multi();
        const tokens = await client.lrange(grantKeyFor(grantId), 0, -1);
        // The list holds the keys without the prefix; ioredis adds it to each del.
        for (const token of tokens) multi.del(token);
        multi.del(grantKeyFor(grantId));
        await multi.exec();
      }
      async consume(id) { await client.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000)); }
    };
  }

  const jwk = process.env.PEER_JWK ? JSON.parse(process.env.PEER_JWK) : newJwk();

  const provider = new Provider(issuer, {
    adapter: ADAPTER === 'redis' ? RedisAdapter : MapAdapter,
    jwks: { keys: [jwk] },
    clients: [{
      client_id: process.env.PEER_CLIENT_ID || 'bench-client',
      client_secret: process.env.PEER_CLIENT_SECRET || 'bench-secret-bench-secret-bench-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: SCOPES,
      id_token_signed_response_alg: ALG,
    }, {
      client_id: process.env.PEER_WEB_CLIENT_ID || 'bench-web',
      client_secret: process.env.PEER_WEB_CLIENT_SECRET || 'bench-web-secret-bench-web-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [process.env.PEER_REDIRECT_URI || 'http://127.0.0.1:9/callback'],
      token_endpoint_auth_method: 'client_secret_post',
      scope: `openid ${SCOPES}`,
      id_token_signed_response_alg: ALG,
    }],
    scopes: ['openid', 'quota:read', 'quota:write'],
    // Every client that may refresh gets a refresh token (ours: every code exchange), and every
    // use rotates it (ours: always).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    pkce: { required: () => false },
    features: {
      devInteractions: { enabled: true },
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
              jwt: { sign: { alg: ALG } },
            };
          }
          if (resource === OPAQUE_RESOURCE) {
            return { scope: SCOPES, audience: OPAQUE_RESOURCE, accessTokenTTL: 7200, accessTokenFormat: 'opaque' };
          }
          throw new Provider.errors.InvalidTarget();
        },
      },
    },
    ttl: { ClientCredentials: 7200, RefreshToken: 30 * 24 * 3600 },
  });
  provider.on('server_error', (ctx, err) => console.error('peer server_error', err));

  const server = http.createServer(provider.callback());
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1', () => {
    console.log(`peer: oidc-provider ${cluster.isWorker ? `worker ${cluster.worker.id} ` : ''}listening on ${issuer}`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}
