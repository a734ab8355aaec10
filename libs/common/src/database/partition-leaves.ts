import type { ClientBase } from 'pg';
import { quoteIdent, quoteQualified } from './sql';

/** One leaf partition of a partitioned table (`root`), and whether it is a foreign table (postgres_fdw and the like). */
export interface PartitionLeaf {
  root: number;
  schema: string;
  name: string;
  foreign: boolean;
}

/**
 * The leaf partitions of the partitioned tables `roots` (oids), sub-partitions looked through,
 * ordered by schema and name. The dumper leaves foreign leaves out of a snapshot (as pg_dump does);
 * the loader never truncates or fills them on their own server.
 */
export async function partitionLeaves(client: ClientBase, roots: number[]): Promise<PartitionLeaf[]> {
  if (!roots.length) return [];
  const { rows } = await client.query<PartitionLeaf>(
    `SELECT root.oid::int AS root, n.nspname AS schema, c.relname AS name, c.relkind = 'f' AS foreign
       FROM unnest($1::oid[]) root(oid), pg_partition_tree(root.oid) tree
       JOIN pg_class c ON c.oid = tree.relid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE tree.isleaf
      ORDER BY n.nspname, c.relname`,
    [roots],
  );
  return rows;
}

type TableRef = { schema: string; name: string };

/**
 * A partitioned table with foreign partitions (postgres_fdw and the like): its local leaf
 * partitions, read one by one, and every column by name (their column order may differ). As
 * pg_dump, the dump leaves foreign data out: read through the parent, it would come from another
 * server, outside the dump's snapshot.
 */
export interface LocalPartitions {
  leaves: TableRef[];
  columns: string[];
  foreign: TableRef[];
}

/**
 * What a query reads a partitioned table with foreign partitions through: its local leaves, each
 * ONLY, every column by name, aliased as the table (`SELECT ... FROM <this>`).
 */
export function localPartitionsSql(table: TableRef & { localPartitions: LocalPartitions }): string {
  const { leaves, columns } = table.localPartitions;
  const list = columns.map(quoteIdent).join(', ');
  const reads = leaves.length ? leaves.map((leaf) => `SELECT ${list} FROM ONLY ${quoteQualified(leaf)}`) : [`SELECT ${list} FROM ONLY ${quoteQualified(table)}`];
  return `(${reads.join(' UNION ALL ')}) AS ${quoteIdent(table.name)}`;
}
