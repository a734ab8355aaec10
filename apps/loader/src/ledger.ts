import type { ClientBase } from 'pg';

/**
 * A small table in the target recording which snapshots it holds. Written in the load's own
 * transaction, so "in the ledger" means "committed": a redelivered snapshot is recognised and acked
 * without loading again.
 */
export const LEDGER_SCHEMA = 'db_fanout';
export const LEDGER_TABLE = `${LEDGER_SCHEMA}.loaded_snapshots`;

export interface LedgerEntry {
  snapshotId: string;
  rows: number;
  durationMs: number;
  attempts: number;
  announced: boolean;
}

const DUPLICATE_OBJECT_CODES = new Set(['23505', '42P06', '42P07']);

/** Runs DDL that another replica may be running at the same moment: losing that race is fine. */
async function createIfMissing(client: ClientBase, sql: string): Promise<void> {
  try {
    await client.query(sql);
  } catch (error) {
    if (!DUPLICATE_OBJECT_CODES.has((error as { code?: string }).code ?? '')) throw error;
  }
}

export async function ensureLedger(client: ClientBase): Promise<void> {
  await createIfMissing(client, `CREATE SCHEMA IF NOT EXISTS ${LEDGER_SCHEMA}`);
  await createIfMissing(
    client,
    `CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
      snapshot_id  text PRIMARY KEY,
      snapshot_date date NOT NULL,
      environment  text NOT NULL,
      rows         bigint NOT NULL,
      duration_ms  bigint NOT NULL,
      attempts     int NOT NULL,
      loaded_at    timestamptz NOT NULL DEFAULT now(),
      announced_at timestamptz
    )`,
  );
  // Added after the first release: ledgers created before it get the column on their next load.
  await createIfMissing(client, `ALTER TABLE ${LEDGER_TABLE} ADD COLUMN IF NOT EXISTS snapshot_created_at timestamptz`);
}

/**
 * The newest snapshot this target holds, if it was dumped after `createdAt`: loading an older
 * snapshot over it (a retry or redelivery that lost a race) would move the environment back in time.
 */
export async function newerLoadedSnapshot(client: ClientBase, createdAt: string): Promise<string | undefined> {
  const { rows } = await client.query<{ snapshot_id: string }>(
    `SELECT snapshot_id FROM ${LEDGER_TABLE} WHERE snapshot_created_at > $1 ORDER BY snapshot_created_at DESC LIMIT 1`,
    [createdAt],
  );
  return rows[0]?.snapshot_id;
}

/**
 * Serialises loads into one target (SHARE ROW EXCLUSIVE conflicts with itself), for the rest of the
 * transaction: two loads racing each other would otherwise both truncate and the loser would fail.
 */
export async function lockLedger(client: ClientBase): Promise<void> {
  await client.query(`LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
}

export async function findLedgerEntry(client: ClientBase, snapshotId: string): Promise<LedgerEntry | undefined> {
  const { rows } = await client.query<{ rows: string; duration_ms: string; attempts: number; announced: boolean }>(
    `SELECT rows, duration_ms, attempts, announced_at IS NOT NULL AS announced FROM ${LEDGER_TABLE} WHERE snapshot_id = $1`,
    [snapshotId],
  );
  const row = rows[0];
  return row && { snapshotId, rows: Number(row.rows), durationMs: Number(row.duration_ms), attempts: row.attempts, announced: row.announced };
}

export async function recordLoad(
  client: ClientBase,
  entry: Omit<LedgerEntry, 'announced'> & { date: string; createdAt: string; environment: string },
): Promise<void> {
  await client.query(
    `INSERT INTO ${LEDGER_TABLE} (snapshot_id, snapshot_date, snapshot_created_at, environment, rows, duration_ms, attempts)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [entry.snapshotId, entry.date, entry.createdAt, entry.environment, entry.rows, entry.durationMs, entry.attempts],
  );
}

/** Set once snapshot.loaded is stored in the stream, so a redelivery announces only what was never announced. */
export async function markAnnounced(client: ClientBase, snapshotId: string): Promise<void> {
  await client.query(`UPDATE ${LEDGER_TABLE} SET announced_at = now() WHERE snapshot_id = $1`, [snapshotId]);
}

/** A reload replaces the snapshot's ledger row (in the load's transaction, so a failed reload keeps it). */
export async function forgetLoad(client: ClientBase, snapshotId: string): Promise<void> {
  await client.query(`DELETE FROM ${LEDGER_TABLE} WHERE snapshot_id = $1`, [snapshotId]);
}
