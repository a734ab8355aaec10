import type { ClientBase } from 'pg';
import type { ManifestRules, ManifestTable } from '../../contract';
import { quoteQualified } from '../../database';
import {
  columnKey,
  describeStrategy,
  KEYED_STRATEGIES,
  planRules,
  readRulesCatalog,
  RulesError,
  type RulesFile,
  type TableName,
  tableKey,
  type TablePlan,
  usesKey,
} from '..';
import { MIN_KEY_LENGTH, type MaskingKey, prepareMaskingKey } from './masking-key';
import { loadKeyIntoSession, maskedColumnSql, maskedSelectSql } from './masking-sql';
import { jsonbPathsThroughArrays } from './jsonb-arrays';
import { isConstantError, isRulesTextError, planSubset, type SubsetPlan, subsetWhere } from './subset-plan';
import { type LocalPartitions, localPartitionsSql } from '../../database';

/**
 * DUMP_RULES applied to one dump, inside its snapshot: the checked plan, the masked SELECT of
 * every table, the subset's kept rows, and the key for the sessions that run the COPYs.
 */
export class DumpRules {
  private constructor(
    private readonly plans: Map<string, TablePlan>,
    private readonly subset: SubsetPlan,
    private readonly key: MaskingKey | undefined,
    /** The manifest's rules block: the digest and the key id, never a value or the key. */
    readonly manifest: ManifestRules,
  ) {}

  /**
   * Refuses the dump (RulesError naming every schema.table.column at fault) before anything is
   * written when the rules do not fit the source, or a keyed strategy has no usable MASKING_KEY.
   */
  static async prepare(client: ClientBase, rules: RulesFile, maskingKey: string | undefined, dumped: (TableName & { localPartitions?: LocalPartitions })[]): Promise<DumpRules> {
    const catalog = await readRulesCatalog(client);
    const plan = planRules(rules, catalog, dumped);
    const problems = [...plan.problems];
    if (plan.keyed && !maskingKey) {
      const keyed = plan.tables.flatMap((t) => t.columns.filter((c) => usesKey(c.strategy)).map((c) => columnKey({ ...t.table, column: c.column.name })));
      problems.push(`MASKING_KEY is required: keyed strategies (${KEYED_STRATEGIES.join(', ')}) are used for ${keyed.join(', ')}`);
    } else if (plan.keyed && maskingKey!.length < MIN_KEY_LENGTH) {
      problems.push(`MASKING_KEY must be at least ${MIN_KEY_LENGTH} characters long`);
    }
    // What the COPY will read, no more: a partitioned table's foreign partitions are left out.
    const readFrom = (table: TableName & { partitioned: boolean }) => {
      const localPartitions = dumped.find((t) => tableKey(t) === tableKey(table))?.localPartitions;
      return localPartitions ? localPartitionsSql({ ...table, localPartitions }) : `${table.partitioned ? '' : 'ONLY '}${quoteQualified(table)}`;
    };
    if (!problems.length) problems.push(...(await jsonbPathsThroughArrays(client, plan.tables, readFrom)));
    if (problems.length) throw new RulesError(rules.file, problems);

    const expressions = await expressionProblems(client, plan.tables, readFrom);
    if (expressions.length) throw new RulesError(rules.file, expressions);
    const subset = await planSubset(client, rules, catalog, dumped);
    const key = plan.keyed ? prepareMaskingKey(maskingKey!) : undefined;
    const manifest: ManifestRules = { digest: rules.digest, ...(key ? { keyId: key.id } : {}), strict: rules.strict };
    return new DumpRules(new Map(plan.tables.map((t) => [tableKey(t.table), t])), subset, key, manifest);
  }

  /** Every connection that runs a COPY calls this inside its transaction first. */
  async prepareSession(client: ClientBase): Promise<void> {
    if (this.key) await loadKeyIntoSession(client, this.key);
  }

  /** The manifest's per-table fields: which columns were masked how, and whether rows were subset. */
  manifestTable(table: TableName): Pick<ManifestTable, 'masked' | 'subset'> {
    const columns = this.plans.get(tableKey(table))?.columns.filter((c) => c.strategy.kind !== 'keep') ?? [];
    return {
      ...(columns.length ? { masked: Object.fromEntries(columns.map((c) => [c.column.name, describeStrategy(c.strategy)])) } : {}),
      ...(this.subset.has(tableKey(table)) ? { subset: true } : {}),
    };
  }

  /** The columns of a table masked by an `sql` expression: where an error its rows raise in the COPY may come from. */
  sqlColumns(table: TableName): string[] {
    return this.plans.get(tableKey(table))?.columns.filter((c) => c.strategy.kind === 'sql').map((c) => c.column.name) ?? [];
  }

  /**
   * The query COPY reads a table through: masked columns, and only the kept rows of a subset. An
   * ordinary table is read ONLY (its own rows, as `COPY table TO` reads them): without it an
   * inheritance parent also returned its children's rows, under the parent's rules (a child's
   * masked column left unmasked) and a second time in the child's own file. A partitioned table
   * holds no rows of its own and is read whole.
   */
  selectSql(table: TableName & { partitioned: boolean; localPartitions?: LocalPartitions }): string {
    const plan = this.plans.get(tableKey(table));
    if (!plan) throw new Error(`no rules plan for ${tableKey(table)}`);
    const kept = this.subset.get(tableKey(table));
    const where = kept ? ` WHERE ${subsetWhere(table, kept)}` : '';
    const from = table.localPartitions
      ? localPartitionsSql({ ...table, localPartitions: table.localPartitions })
      : `${table.partitioned ? '' : 'ONLY '}${quoteQualified(table)}`;
    return maskedSelectSql(plan.columns, from, where);
  }
}

/**
 * `sql` and `constant` columns planned (EXPLAIN: parsed, typed and constant-folded, no row read)
 * before anything is written, so a typo or a constant that does not fit the column is refused
 * naming the rules file and the column, not found by the COPY. Each in a savepoint: the dump's
 * snapshot transaction goes on.
 */
async function expressionProblems(client: ClientBase, tables: TablePlan[], readFrom: (table: TablePlan['table']) => string): Promise<string[]> {
  const problems: string[] = [];
  for (const { table, columns } of tables) {
    for (const column of columns.filter((c) => c.strategy.kind === 'sql' || c.strategy.kind === 'constant')) {
      await client.query('SAVEPOINT db_fanout_rules_check');
      try {
        // FROM what the COPY reads: a partitioned table with foreign partitions is a subquery there.
        await client.query(`EXPLAIN (COSTS OFF) SELECT ${maskedColumnSql(column)} FROM ${readFrom(table)}`);
      } catch (error) {
        // A data exception (22) pointing into the statement comes from the rules' own constants;
        // planning runs functions too (a STABLE one for estimates), whose errors may quote a row's value.
        if (!isRulesTextError(error) && !isConstantError(error)) throw error;
        problems.push(`${columnKey({ ...table, column: column.column.name })}: ${column.strategy.kind} does not run: ${(error as Error).message}`);
      } finally {
        await client.query('ROLLBACK TO SAVEPOINT db_fanout_rules_check');
        await client.query('RELEASE SAVEPOINT db_fanout_rules_check');
      }
    }
  }
  return problems;
}
