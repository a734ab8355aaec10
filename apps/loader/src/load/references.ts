import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { ManifestTable } from '@app/common/contract';
import { quoteIdent, quoteQualified } from '@app/common/database';
import { DigestStream } from '@app/common/streams';
import { DanglingReferenceError, type ForeignKeyFromOutside } from '../target-schema';
import { ownSettingsForData } from './session-settings';

/**
 * Tables outside the snapshot keep their rows, so every row they reference must be in the snapshot.
 * Checked before anything is truncated: the referenced table's file is read into a temporary table
 * (its key columns are what matters) and the referencing rows are matched against it. Costs one
 * extra read of those files only, and only for tables something outside the snapshot references.
 */
export async function checkReferencesFromOutside(
  client: PoolClient,
  open: (table: ManifestTable) => Promise<Readable>,
  foreignKeys: ForeignKeyFromOutside[],
  ownSettings: Readonly<Record<string, string>> = {},
): Promise<void> {
  const copies = new Map<number, string>();
  for (const fk of foreignKeys) {
    const referenced = fk.referenced;
    let keys = copies.get(referenced.oid);
    if (!keys) {
      keys = quoteIdent(`db_fanout_keys_${copies.size}`);
      copies.set(referenced.oid, keys);
      const table = referenced.manifest;
      await client.query(`CREATE TEMPORARY TABLE ${keys} (LIKE ${quoteQualified({ schema: table.schema, name: table.table })}) ON COMMIT DROP`);
      // The file's columns exactly (the referenced generated ones are added below). SCHEMA_DRIFT=
      // common-columns: a column the environment dropped comes as text (it holds no key), and one the
      // environment added goes (LIKE copies its NOT NULL, which the file, lacking it, would break).
      const { rows: present } = await client.query<{ name: string }>('SELECT attname AS name FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped', [keys]);
      const have = new Set(present.map((column) => column.name));
      const inFile = new Set(table.columns);
      for (const column of [...have].filter((c) => !inFile.has(c))) await client.query(`ALTER TABLE ${keys} DROP COLUMN ${quoteIdent(column)}`);
      for (const column of table.columns.filter((c) => !have.has(c))) await client.query(`ALTER TABLE ${keys} ADD COLUMN ${quoteIdent(column)} text`);
      await dropDomains(client, keys);
      await addGeneratedKeys(client, keys, referenced.oid, referencedColumnsOf(foreignKeys, referenced.oid).filter((c) => !inFile.has(c)));
      // Again for a generated key of a domain: it could only be added once the columns it is
      // computed from had their types changed (PostgreSQL refuses that under a generated column).
      await dropDomains(client, keys);
      // Generated keys computed as the load's COPY computes them, under the environment's own
      // TimeZone and DateStyle (ownSettingsForData); set before the COPY, which holds the session
      // until its input ends. The expressions above were read under the pinned settings.
      const pinned = await ownSettingsForData(client, ownSettings);
      const copy = client.query(copyFrom(`COPY ${keys} (${table.columns.map(quoteIdent).join(', ')}) FROM STDIN (FORMAT csv, HEADER)`));
      // Checked as the load's own COPY checks it: an altered file is a checksum mismatch, never taken
      // for production's keys (a key changed in it would show as a reference that dangles).
      await pipeline(await open(table), new DigestStream({ sha256: table.sha256, bytes: table.bytes, label: `${table.file} (${table.name})` }), copy);
      await pinned();
    }
    const notNull = fk.columns.map((c) => `r.${quoteIdent(c)} IS NOT NULL`).join(' AND ');
    const matches = fk.columns.map((c, i) => `k.${quoteIdent(fk.referencedColumns[i])} = r.${quoteIdent(c)}`).join(' AND ');
    const { rows } = await client.query<{ key: string }>(
      `SELECT ROW(${fk.columns.map((c) => `r.${quoteIdent(c)}`).join(', ')})::text AS key
         FROM ${fk.partitioned ? '' : 'ONLY '}${fk.table} r
        WHERE ${notNull} AND NOT EXISTS (SELECT FROM ${keys} k WHERE ${matches})
        LIMIT 1`,
    );
    if (rows.length) {
      const columns = fk.columns.map(quoteIdent).join(', ');
      throw new DanglingReferenceError(
        `table ${fk.table} (not in the snapshot) references rows of ${referenced.manifest.name} that the snapshot does not have: ` +
          `foreign key ${quoteIdent(fk.name)} on (${columns}) would dangle; delete or update those rows in the environment, or add ${fk.table} to the snapshot`,
        `Key (${fk.columns.join(', ')})=${rows[0].key} is not present in the snapshot's ${referenced.manifest.name}.`,
      );
    }
  }
  for (const keys of copies.values()) await client.query(`DROP TABLE ${keys}`);
}

/** Every column of the table that a foreign key from outside references. */
function referencedColumnsOf(foreignKeys: ForeignKeyFromOutside[], oid: number): string[] {
  return [...new Set(foreignKeys.filter((fk) => fk.referenced.oid === oid).flatMap((fk) => fk.referencedColumns))];
}

/**
 * The referenced generated columns, computed in the keys table as the table computes them: the
 * file never has them (COPY computes them from the other columns), and LIKE copies them as plain
 * columns, dropped with the rest the file lacks. Only referenced ones: the keys are what is compared.
 */
async function addGeneratedKeys(client: PoolClient, keys: string, table: number, columns: string[]): Promise<void> {
  const { rows } = await client.query<{ name: string; type: string; expression: string }>(
    `SELECT a.attname AS name, pg_get_expr(ad.adbin, ad.adrelid) AS expression,
            format_type(a.atttypid, a.atttypmod) ||
              CASE WHEN a.attcollation <> t.typcollation THEN ' COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname) ELSE '' END AS type
       FROM pg_attribute a JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
      WHERE a.attrelid = $1 AND a.attgenerated = 's' AND a.attname = ANY($2::text[]) AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [table, columns],
  );
  for (const { name, type, expression } of rows) {
    await client.query(`ALTER TABLE ${keys} ADD COLUMN ${quoteIdent(name)} ${type} GENERATED ALWAYS AS (${expression}) STORED`);
  }
}

/**
 * The keys table's domain-typed columns turned into the types underneath: a domain's CHECK applies
 * to every value written, NOT VALID ones too, and production's older rows may break it (they are
 * loaded because the check is set aside during the load). Only the keys are compared here.
 */
async function dropDomains(client: PoolClient, keys: string): Promise<void> {
  // A domain over a domain takes one round per level.
  for (;;) {
    const { rows } = await client.query<{ name: string; base: string }>(
      `SELECT a.attname AS name, format_type(t.typbasetype, t.typtypmod) AS base
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'd'`,
      [keys],
    );
    if (!rows.length) return;
    for (const { name, base } of rows) await client.query(`ALTER TABLE ${keys} ALTER COLUMN ${quoteIdent(name)} TYPE ${base}`);
  }
}
