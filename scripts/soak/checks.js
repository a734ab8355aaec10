// @ts-check
/**
 * What the soak checks, read from where a user would look: each target's content and its ledger
 * (db_fanout.loaded_snapshots), the snapshot files, the stream's events, and the scheduler's run
 * history. Every function returns findings; the caller counts them as violations.
 */
const { createReadStream, readFileSync } = require('node:fs');
const { join } = require('node:path');
const { pipeline } = require('node:stream/promises');
const { from: copyFrom } = require('pg-copy-streams');
const { TABLES, SEQUENCES, withClient } = require('./source');

const quoteIdent = (name) => `"${name.replaceAll('"', '""')}"`;

/** Order-independent digest of a table's rows (PostgreSQL's own text form of each row). */
async function tableDigest(client, table) {
  const row = `ROW(${table.columns.map(quoteIdent).join(', ')})::text`;
  const { rows } = await client.query(`SELECT count(*)::int AS n, md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) AS sum FROM (SELECT ${row} AS r FROM ${table.sql}) s`);
  return `${rows[0].n}:${rows[0].sum}`;
}

async function sequenceValues(client) {
  const values = {};
  for (const { schema, table, column } of SEQUENCES) {
    const { rows } = await client.query('SELECT pg_get_serial_sequence($1, $2) AS seq', [`${quoteIdent(schema)}.${quoteIdent(table)}`, column]);
    const seq = await client.query(`SELECT last_value::text AS v, is_called FROM ${rows[0].seq}`);
    values[`${schema}.${table}.${column}`] = `${seq.rows[0].v}/${seq.rows[0].is_called}`;
  }
  return values;
}

/** Content digests and sequences of a database that nothing writes to meanwhile (the source, once the writer stopped). */
async function databaseContent(url) {
  return withClient(url, async (client) => {
    const tables = {};
    for (const table of TABLES) tables[table.sql] = await tableDigest(client, table);
    return { tables, sequences: await sequenceValues(client) };
  });
}

/**
 * A target's ledger and content at one instant. LOCK before the first query: the transaction's
 * snapshot is taken after any running load committed (TRUNCATE and COPY FREEZE are not MVCC-safe
 * for a snapshot taken earlier), so ledger and tables describe the same moment.
 */
async function environmentState(url) {
  return withClient(url, async (client) => {
    // Asked before BEGIN: the first query inside the transaction would take its snapshot before the LOCK.
    const ledgerExists = await client.query("SELECT to_regclass('db_fanout.loaded_snapshots') IS NOT NULL AS ok");
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    try {
      const locked = TABLES.map((t) => t.sql).concat(ledgerExists.rows[0].ok ? ['db_fanout.loaded_snapshots'] : []);
      await client.query(`LOCK TABLE ${locked.join(', ')} IN ACCESS SHARE MODE`);
      const ledger = ledgerExists.rows[0].ok
        ? (
            await client.query(
              `SELECT snapshot_id, snapshot_date::text AS date, snapshot_created_at AS created_at, loaded_at, rows::int AS rows
                 FROM db_fanout.loaded_snapshots ORDER BY loaded_at, snapshot_id`,
            )
          ).rows
        : [];
      const tables = {};
      for (const table of TABLES) tables[table.sql] = await tableDigest(client, table);
      const sequences = await sequenceValues(client);
      await client.query('COMMIT');
      return { ledger, tables, sequences };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}

/** The content of a snapshot's files, loaded into the scratch database (cached per snapshot). */
class SnapshotContents {
  constructor(snapshotDir, scratchUrl) {
    this.snapshotDir = snapshotDir;
    this.scratchUrl = scratchUrl;
    this.cache = new Map();
  }

  manifest(snapshotId) {
    return JSON.parse(readFileSync(join(this.snapshotDir, `prod_snapshot_${snapshotId}`, 'manifest.json'), 'utf8'));
  }

  async of(snapshotId) {
    const cached = this.cache.get(snapshotId);
    if (cached) return cached;
    const manifest = this.manifest(snapshotId);
    const dir = join(this.snapshotDir, `prod_snapshot_${snapshotId}`);
    const content = await withClient(this.scratchUrl, async (client) => {
      await client.query('BEGIN');
      await client.query(`TRUNCATE ${TABLES.map((t) => t.sql).join(', ')}`);
      for (const entry of manifest.tables) {
        const table = TABLES.find((t) => t.schema === entry.schema && t.table === entry.table);
        if (!table) throw new Error(`snapshot ${snapshotId} holds ${entry.name}, a table the soak never created`);
        const copy = client.query(copyFrom(`COPY ${table.sql} (${entry.columns.map(quoteIdent).join(', ')}) FROM STDIN (FORMAT csv, HEADER)`));
        await pipeline(createReadStream(join(dir, entry.file)), copy);
      }
      const tables = {};
      for (const table of TABLES) tables[table.sql] = await tableDigest(client, table);
      await client.query('ROLLBACK');
      return tables;
    });
    const sequences = Object.fromEntries(
      manifest.sequences.map((s) => [`${s.schema}.${s.tableName}.${s.column}`, `${s.lastValue}/${s.isCalled}`]),
    );
    const result = { tables: content, sequences, createdAt: manifest.createdAt, takenAt: manifest.takenAt ?? manifest.createdAt, date: manifest.date };
    this.cache.set(snapshotId, result);
    return result;
  }
}

/** Differences between two {table: digest} maps, as "table (x vs y)". */
function differences(actual, expected) {
  return Object.keys({ ...expected, ...actual })
    .filter((key) => actual[key] !== expected[key])
    .map((key) => `${key} (${actual[key]} vs ${expected[key]})`);
}

/**
 * One environment, any time: it holds exactly the newest snapshot of its ledger (else "half"),
 * and its ledger, in load order, never goes back in time.
 */
async function checkEnvironment(environment, state, contents) {
  const findings = [];
  if (state.ledger.length === 0) return findings;
  for (let i = 1; i < state.ledger.length; i++) {
    const [before, after] = [state.ledger[i - 1], state.ledger[i]];
    const [a, b] = [await contents.of(before.snapshot_id), await contents.of(after.snapshot_id)];
    if (Date.parse(b.takenAt) <= Date.parse(a.takenAt) || after.created_at <= before.created_at) {
      findings.push({ kind: 'back-in-time', text: `${environment} loaded ${after.snapshot_id} (taken ${b.takenAt}) after ${before.snapshot_id} (taken ${a.takenAt})` });
    }
  }
  const newest = state.ledger[state.ledger.length - 1];
  const expected = await contents.of(newest.snapshot_id);
  const diff = differences(state.tables, expected.tables);
  if (diff.length) findings.push({ kind: 'half', text: `${environment} does not hold its ledger's newest snapshot ${newest.snapshot_id}: ${diff.join(', ')}` });
  const seqDiff = differences(state.sequences, expected.sequences);
  if (seqDiff.length) findings.push({ kind: 'half', text: `${environment} sequences differ from ${newest.snapshot_id}: ${seqDiff.join(', ')}` });
  return findings;
}

/** Every message of the stream, from its first to its last sequence (subject without the prefix). */
async function readStream(jsm, stream, prefix) {
  const info = await jsm.streams.info(stream);
  const events = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const message = await jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
    if (!message) continue;
    let data = {};
    try {
      data = message.json();
    } catch {
      data = {};
    }
    events.push({ seq, subject: message.subject.slice(prefix.length), data, msgId: message.header?.get('Nats-Msg-Id') ?? '' });
  }
  return events;
}

/** `loaded snapshot X into env:` lines in a loader's log (every incarnation): what really committed. */
function loadsInLog(logText) {
  const loads = [];
  for (const match of logText.matchAll(/\bloaded snapshot (\S+) into (\S+?):/g)) loads.push({ snapshotId: match[1], environment: match[2] });
  const skipped = [];
  for (const match of logText.matchAll(/\bskipped snapshot (\S+) into (\S+?): /g)) skipped.push({ snapshotId: match[1], environment: match[2] });
  return { loads, skipped };
}

module.exports = { databaseContent, environmentState, SnapshotContents, checkEnvironment, differences, readStream, loadsInLog };
