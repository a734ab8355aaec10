import type { ClientBase } from 'pg';
import { quoteIdent, quoteQualified } from '@app/common/database';
import { columnKey, type TablePlan } from '@app/common/rules';
import { quoteLiteral } from './masking-sql';

const INDEX = /^-?\d+$/;

/**
 * The jsonb paths that meet an array where they name a key, in some row of the snapshot. `#>` finds
 * nothing there, so the masking would leave the value under the array as it is, in silence: such a
 * path is refused (the dump fails, naming column and path) rather than leak. A path that indexes
 * the array (`addresses.0.street`) reaches it, and passes.
 */
export async function jsonbPathsThroughArrays(client: ClientBase, plans: TablePlan[]): Promise<string[]> {
  const problems: string[] = [];
  for (const { table, columns } of plans) {
    for (const { column, strategy } of columns) {
      if (strategy.kind !== 'jsonb') continue;
      const document = `${quoteIdent(column.name)}::jsonb`;
      for (const { path } of strategy.paths) {
        const meetsArray = path
          .map((segment, depth) => (INDEX.test(segment) ? undefined : `jsonb_typeof(${document} #> ${quoteLiteral(`{${path.slice(0, depth).map((p) => JSON.stringify(p)).join(',')}}`)}::text[]) = 'array'`))
          .filter((condition): condition is string => condition !== undefined);
        if (!meetsArray.length) continue;
        const { rows } = await client.query(`SELECT 1 FROM ${table.partitioned ? '' : 'ONLY '}${quoteQualified(table)} WHERE ${meetsArray.join(' OR ')} LIMIT 1`);
        if (rows.length) {
          problems.push(
            `${columnKey({ ...table, column: column.name })}: jsonb path ${path.join('.')} meets an array in some rows, where masking cannot reach the values; ` +
              'mask the whole column (null, or sql) or name the array element (a.0.b)',
          );
        }
      }
    }
  }
  return problems;
}
