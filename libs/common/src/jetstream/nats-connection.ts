import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';

/** Connection options from config; reconnects forever, because a broker restart must not kill an app. */
export function natsConnectionOptions(config: NatsConfig, name: string): NodeConnectionOptions {
  return {
    servers: config.servers,
    name,
    user: config.user,
    pass: config.password,
    token: config.token,
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
    throw new Error(`cannot connect to NATS at ${config.servers.join(',')}: ${(error as Error).message}`, { cause: error });
  }
}
