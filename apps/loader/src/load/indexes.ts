import type { PoolClient } from 'pg';
import { quoteIdent } from '@app/common/database';
import type { ForeignKey, IndexDefinition } from '../target-schema';
import { sqlLiteral } from './sql-literal';

/**
 * Drops each deferrable index inside its own savepoint: one that something else depends on (a view
 * grouping by a primary key, say) stays in place and is maintained row by row instead of failing
 * the load. Returns the indexes that were dropped, to rebuild after the COPY.
 */
export async function dropIndexesWherePossible(client: PoolClient, indexes: IndexDefinition[]): Promise<IndexDefinition[]> {
  const dropped: IndexDefinition[] = [];
  for (const index of indexes) {
    await client.query('SAVEPOINT drop_index');
    try {
      await client.query(
        index.constraint
          ? `ALTER TABLE ${index.table} DROP CONSTRAINT ${quoteIdent(index.constraint.name)}`
          : `DROP INDEX ${quoteIdent(index.schema)}.${quoteIdent(index.name)}`,
      );
      await client.query('RELEASE SAVEPOINT drop_index');
      dropped.push(index);
    } catch (error) {
      if ((error as { code?: string }).code !== '2BP01') throw error; // dependent_objects_still_exist
      await client.query('ROLLBACK TO SAVEPOINT drop_index');
      await client.query('RELEASE SAVEPOINT drop_index');
    }
  }
  return dropped;
}

/**
 * Builds the dropped indexes again exactly as they were: pg_get_indexdef's definition (storage
 * parameters, INCLUDE, WHERE), in its own tablespace (through default_tablespace, as pg_dump does,
 * since the definition leaves it out), a key re-attached to its index (`USING INDEX`, which keeps
 * the index's fillfactor and tablespace and the key's DEFERRABLE), CLUSTER ON, the statistics
 * targets of expression columns and comments.
 */
export async function rebuildIndexes(client: PoolClient, dropped: IndexDefinition[]): Promise<void> {
  if (!dropped.length) return;
  const { rows } = await client.query<{ value: string }>("SELECT current_setting('default_tablespace') AS value");
  for (const index of dropped) {
    await client.query("SELECT set_config('default_tablespace', $1, true)", [index.tablespace]);
    await client.query(index.indexDefinition);
    let indexName = index.name;
    const key = index.constraint;
    if (key) {
      const timing = `${key.deferrable ? ' DEFERRABLE' : ''}${key.deferred ? ' INITIALLY DEFERRED' : ''}`;
      await client.query(`ALTER TABLE ${index.table} ADD CONSTRAINT ${quoteIdent(key.name)} ${key.type} USING INDEX ${quoteIdent(index.name)}${timing}`);
      // USING INDEX gives the index the constraint's name (it had it before, too).
      indexName = key.name;
      if (key.comment !== null) await client.query(`COMMENT ON CONSTRAINT ${quoteIdent(key.name)} ON ${index.table} IS ${sqlLiteral(key.comment)}`);
    }
    if (index.clustered) await client.query(`ALTER TABLE ${index.table} CLUSTER ON ${quoteIdent(indexName)}`);
    const qualified = `${quoteIdent(index.schema)}.${quoteIdent(indexName)}`;
    for (const { column, target } of index.statistics) await client.query(`ALTER INDEX ${qualified} ALTER COLUMN ${column} SET STATISTICS ${target}`);
    if (index.indexComment !== null) await client.query(`COMMENT ON INDEX ${qualified} IS ${sqlLiteral(index.indexComment)}`);
  }
  await client.query("SELECT set_config('default_tablespace', $1, true)", [rows[0].value]);
}

export async function dropForeignKeys(client: PoolClient, foreignKeys: ForeignKey[]): Promise<void> {
  for (const fk of foreignKeys) await client.query(`ALTER TABLE ${fk.table} DROP CONSTRAINT ${quoteIdent(fk.name)}`);
}

/** Adds the foreign keys back (validating every row, unless one was NOT VALID before) with their comments. */
export async function restoreForeignKeys(client: PoolClient, foreignKeys: ForeignKey[]): Promise<void> {
  for (const fk of foreignKeys) {
    await client.query(`ALTER TABLE ${fk.table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.definition}`);
    if (fk.comment !== null) await client.query(`COMMENT ON CONSTRAINT ${quoteIdent(fk.name)} ON ${fk.table} IS ${sqlLiteral(fk.comment)}`);
  }
}
