import type { ClientBase } from 'pg';
import { quoteIdent } from '../../database';
import { columnKey, type TablePlan } from '..';
import { textArray } from './masking-sql';

const INDEX = /^-?\d+$/;

/**
 * `doc #> ARRAY['a','0']::text[]`: the value at the first `depth` segments of `path` (the document
 * itself at 0), the path built as the masking builds it, so the check looks where the masking writes.
 */
function valueAt(document: string, path: string[], depth: number): string {
  return `(${document} #> ${textArray(path.slice(0, depth))})`;
}

/** Elements 0..k-1 are named: the longest run from 0 in `indexes`. */
function namedFromStart(indexes: Set<number>): number {
  let count = 0;
  while (indexes.has(count)) count++;
  return count;
}

/**
 * The jsonb paths that miss values in some row of the snapshot (each table read `readFrom`, as its
 * COPY will read it), where the masking would leave them as
 * they are, in silence: such a path is refused (the dump fails, naming column and path) rather than
 * leak. `#>` finds nothing where a path
 * - names a key and meets an array (`addresses.street` over `{"addresses": [...]}`),
 * - names a key and meets a string or a number (a document that is a bare `"bob@example.org"`, or
 *   a key holding text or a number where the rules expect an object): the whole value goes out,
 * - names array elements by index and the array has more of them than the column's paths name
 *   (`addresses.0.street` alone, and a row with two addresses): the others go out.
 * An index segment that meets an object names its member of that key (`#>` and `jsonb_set` read
 * `2024` in `{"2024": {...}}` as a key), which the masking reaches; one that meets a string or a
 * number is refused like a key that does.
 */
export async function jsonbPathsThroughArrays(client: ClientBase, plans: TablePlan[], readFrom: (table: TablePlan['table']) => string): Promise<string[]> {
  const problems: string[] = [];
  for (const { table, columns } of plans) {
    const from = readFrom(table);
    const anyRow = async (condition: string) => (await client.query(`SELECT 1 FROM ${from} WHERE ${condition} LIMIT 1`)).rows.length > 0;
    for (const { column, strategy } of columns) {
      if (strategy.kind !== 'jsonb') continue;
      const document = `${quoteIdent(column.name)}::jsonb`;
      const where = (path: string[]) => `${columnKey({ ...table, column: column.name })}: jsonb path ${path.join('.')}`;
      // Which indexes the column's paths name, per array (its path) and what follows the index.
      const named = new Map<string, Set<number>>();
      const key = (path: string[], depth: number) => JSON.stringify([path.slice(0, depth), path.slice(depth + 1)]);
      for (const { path } of strategy.paths) {
        path.forEach((segment, depth) => {
          if (!INDEX.test(segment) || Number(segment) < 0) return;
          const indexes = named.get(key(path, depth)) ?? new Set<number>();
          named.set(key(path, depth), indexes.add(Number(segment)));
        });
      }
      for (const { path } of strategy.paths) {
        const keys = path.map((segment, depth) => ({ segment, depth })).filter(({ segment }) => !INDEX.test(segment));
        const typeAt = (depth: number) => `jsonb_typeof(${valueAt(document, path, depth)})`;
        if (keys.length && (await anyRow(keys.map(({ depth }) => `${typeAt(depth)} = 'array'`).join(' OR ')))) {
          problems.push(`${where(path)} meets an array in some rows, where masking cannot reach the values; mask the whole column (null, or sql) or name every element (a.0.b, a.1.b, ...)`);
          continue;
        }
        // Every segment, index ones too: `phones.0` over `{"phones": "555-0100"}` finds nothing
        // either, nor over `{"phones": 5550100}` (a number can be the phone number itself).
        if (await anyRow(path.map((_, depth) => `${typeAt(depth)} IN ('string', 'number')`).join(' OR '))) {
          problems.push(`${where(path)} meets a string or a number where it names a key or an element in some rows, and the whole value would go out unmasked; mask the whole column (null, or sql)`);
          continue;
        }
        for (const [depth, segment] of path.entries()) {
          if (!INDEX.test(segment)) continue;
          const count = namedFromStart(named.get(key(path, depth)) ?? new Set());
          const array = valueAt(document, path, depth);
          // CASE, not AND: PostgreSQL may evaluate jsonb_array_length first, which fails on an object,
          // a scalar or a JSON null at this segment (an object's member of that key is masked).
          if (await anyRow(`CASE WHEN jsonb_typeof(${array}) = 'array' THEN jsonb_array_length(${array}) > ${count} ELSE false END`)) {
            const namedText = count ? `elements 0 to ${count - 1}` : 'no element counted from 0';
            problems.push(`${where(path)}: some rows' array holds more elements than the rules name (${namedText}), and the others would go out unmasked; mask the whole column (null, or sql)`);
            break;
          }
        }
      }
    }
  }
  return problems;
}
