import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { redactSecrets } from '../observability/redact';

/**
 * Credentials written into NATS_URL (`nats://user:pass@host`, `nats://token@host`), which nats.js v3
 * does not read from a server URL itself: they become connection options, and the URLs go without.
 */
function splitCredentials(servers: string[]): { servers: string[]; user?: string; pass?: string; token?: string } {
  let user: string | undefined;
  let pass: string | undefined;
  let token: string | undefined;
  const bare = servers.map((server) => {
    const url = new URL(server);
    if (url.username && url.password) {
      user = decodeURIComponent(url.username);
      pass = decodeURIComponent(url.password);
    } else if (url.username) {
      token = decodeURIComponent(url.username);
    }
    url.username = '';
    url.password = '';
    return url.toString().replace(/\/$/, '');
  });
  return { servers: bare, user, pass, token };
}

/** Connection options from config; reconnects forever, because a broker restart must not kill an app. */
export function natsConnectionOptions(config: NatsConfig, name: string): NodeConnectionOptions {
  const fromUrl = splitCredentials(config.servers);
  return {
    servers: fromUrl.servers,
    name,
    user: config.user ?? fromUrl.user,
    pass: config.password ?? fromUrl.pass,
    token: config.token ?? fromUrl.token,
    authenticator: config.credsFile ? credsAuthenticator(readFileSync(config.credsFile)) : undefined,
    tls: config.tls,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    pingInterval: 10_000,
  };
}

/** Connects once at boot; a broker that cannot be reached makes the app exit non-zero (no silent retry loop). */
export async function openNatsConnection(config: NatsConfig, name: string): Promise<NatsConnection> {
  try {
    return await connect({ ...natsConnectionOptions(config, name), timeout: 10_000 });
  } catch (error) {
    // Nest prints this message as it is: it must not carry a password from NATS_URL.
    throw new Error(redactSecrets(`cannot connect to NATS at ${config.servers.join(',')}: ${(error as Error).message}`));
  }
}
