import type { ClientBase } from 'pg';

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
