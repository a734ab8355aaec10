import type { ClientBase } from 'pg';
import type { ManifestRules, ManifestTable } from '../../contract';
import { formatIdent, formatQualifiedName, quoteIdent, quoteQualified } from '../../database';
import { describeFailure, locateFailure } from '../../observability/failure';
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
    const domains = await domainProblems(client, plan.tables, readFrom, subset, key);
    if (domains.length) throw new RulesError(rules.file, domains);
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

/** Rows of a table a masked column over a domain with a CHECK is tried on (see domainProblems). */
const DOMAIN_CHECK_SAMPLE = 1000;

/**
 * Masked columns whose type is a domain with a CHECK (at any depth: a domain over one, an array of
 * one), tried on their masked values, each in a savepoint: EXPLAIN never evaluates a domain's CHECK,
 * so an `email` over a domain that wants `@corp.example`, or a `constant` it refuses, passed every
 * check above and then failed every attempt's COPY. Refused naming table, column and constraint
 * (PostgreSQL's message names the domain and the constraint, never the value).
 *
 * A `constant` or `null` is tried once, reading no row. Any other strategy on a sample of the rows
 * the COPY reads (the subset's kept ones), at most DOMAIN_CHECK_SAMPLE of them, those holding a value
 * (NULL stays NULL) unless an `sql` expression may make one of NULL: a strategy's values have one
 * shape (user_<hex>@example.com, x for every letter), which a CHECK refuses on the first rows it
 * meets, at a bounded cost however large the table; reading it whole would compute every keyed hash
 * of the column twice per dump, holding the dump's locks. A value only some later rows give still
 * fails the COPY, which names the table.
 */
async function domainProblems(
  client: ClientBase,
  tables: TablePlan[],
  readFrom: (table: TablePlan['table']) => string,
  subset: SubsetPlan,
  key: MaskingKey | undefined,
): Promise<string[]> {
  const masked = tables.flatMap(({ table, columns }) => columns.filter((c) => c.strategy.kind !== 'keep').map((column) => ({ table, column })));
  const checked = await columnsUnderDomainChecks(client, masked.map(({ table, column }) => ({ ...table, column: column.column.name })));
  const problems: string[] = [];
  for (const { table, column } of masked.filter(({ table, column }) => checked.has(columnKey({ ...table, column: column.column.name })))) {
    const name = quoteIdent(column.column.name);
    const { kind } = column.strategy;
    const kept = subset.get(tableKey(table));
    const conditions = [kind === 'sql' ? '' : `${name} IS NOT NULL`, kept ? subsetWhere(table, kept) : ''].filter(Boolean);
    const sql =
      kind === 'constant' || kind === 'null'
        ? `SELECT ${maskedColumnSql(column)}`
        : `SELECT count(db_fanout_sample.${name}) FROM (SELECT ${maskedColumnSql(column)} FROM ${readFrom(table)}${conditions.length ? ` WHERE ${conditions.join(' AND ')}` : ''} LIMIT ${DOMAIN_CHECK_SAMPLE}) db_fanout_sample`;
    await client.query('SAVEPOINT db_fanout_domain_check');
    try {
      // The keys for the keyed strategies, local to the savepoint (the sessions get them later).
      if (key) await loadKeyIntoSession(client, key);
      await client.query(sql);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      // 23514: the domain's CHECK; 23502: its NOT NULL (an `sql` expression that gives NULL).
      if (code !== '23514' && code !== '23502') throw locateFailure(error, `table ${formatQualifiedName(table)}, column ${formatIdent(column.column.name)}`);
      problems.push(`${columnKey({ ...table, column: column.column.name })}: ${kind} gives a value its domain refuses (${describeFailure(error, { detail: false }).error})`);
    } finally {
      await client.query('ROLLBACK TO SAVEPOINT db_fanout_domain_check');
      await client.query('RELEASE SAVEPOINT db_fanout_domain_check');
    }
  }
  return problems;
}

/**
 * Which of these columns have a type with a domain's CHECK somewhere in it: the column's domain,
 * the domains under it, and the element type of an array on the way (a domain over an array of one).
 */
async function columnsUnderDomainChecks(client: ClientBase, columns: (TableName & { column: string })[]): Promise<Set<string>> {
  if (!columns.length) return new Set();
  const { rows } = await client.query<{ i: string }>(
    `WITH RECURSIVE chain(i, oid) AS (
       SELECT u.i, a.atttypid FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(rel, col, i)
         JOIN pg_attribute a ON a.attrelid = to_regclass(u.rel) AND a.attname = u.col
       UNION
       SELECT chain.i, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
         FROM chain JOIN pg_type t ON t.oid = chain.oid
        WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0))
     SELECT DISTINCT chain.i::text AS i FROM chain JOIN pg_constraint c ON c.contypid = chain.oid AND c.contype = 'c'`,
    [columns.map((c) => quoteQualified(c)), columns.map((c) => c.column)],
  );
  return new Set(rows.map((r) => columnKey(columns[Number(r.i) - 1])));
}
