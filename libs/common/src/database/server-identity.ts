import type { ClientBase } from 'pg';

/** Which PostgreSQL cluster and database a connection reaches, to refuse loading a snapshot into its own source. */
export interface ServerIdentity {
  /** pg_control_system().system_identifier; null where the role may not read it. */
  systemIdentifier: string | null;
  database: string;
}

export async function serverIdentity(client: ClientBase): Promise<ServerIdentity> {
  const { rows } = await client.query<{ database: string }>('SELECT current_database() AS database');
  let systemIdentifier: string | null = null;
  try {
    const result = await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()');
    systemIdentifier = result.rows[0]?.id ?? null;
  } catch {
    // Not granted to this role: the guard then cannot tell, and says so in the manifest (null).
  }
  return { systemIdentifier, database: rows[0].database };
}

export function isSameDatabase(a: ServerIdentity | undefined, b: ServerIdentity): boolean {
  return Boolean(a?.systemIdentifier && a.systemIdentifier === b.systemIdentifier && a.database === b.database);
}
