import { existsSync, writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { Client } from 'pg';
import { loadRulesConfig } from '@app/common/config';
import { connectionWithSettings, DUMP_SOURCE_SETTINGS, PINNED_SESSION_SETTINGS } from '@app/common/database';
import { describeFailure, errorMessage } from '@app/common/observability';
import { loadRulesFile, planRules, readRulesCatalog, type RulesCatalog, RulesError, type RulesFile, suggestRules } from '@app/common/rules';
import { DumpRules } from '@app/common/rules/dump';

export const RULES_USAGE = `  rules init --source URL [--out FILE]   write a starting rules file from the source's catalog (stdout without --out)
  rules check --source URL [--rules FILE] what the dump would refuse with these rules (default: DUMP_RULES; MASKING_KEY read as the dumper does); exit 1 if anything`;

export interface RulesCommandOptions {
  source?: string;
  out?: string;
  rules?: string;
  /** MASKING_KEY, as the dumper would have it: keyed strategies are refused without it. */
  maskingKey?: string;
  write: (line: string) => void;
}

/** Thrown for wrong usage of `rules`: exit code 2. */
export class RulesUsageError extends Error {}

/**
 * `work` in one read-only snapshot of the source, as the dump reads it: in the dumper's pinned
 * session settings (TimeZone UTC, DateStyle ISO, ..., row security off), under which it runs subset
 * conditions and `sql` expressions. In the role's own, a literal such as '13/01/2024' passed the check on a source
 * whose DateStyle reads day first and then failed the dump.
 */
async function inSourceSnapshot<T>(source: string, work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ ...connectionWithSettings(source, { ...PINNED_SESSION_SETTINGS, ...DUMP_SOURCE_SETTINGS }), application_name: 'db-fanout-cli' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    return await work(client);
  } finally {
    await client.end();
  }
}

const readCatalog = (source: string): Promise<RulesCatalog> => inSourceSnapshot(source, readRulesCatalog);

/**
 * What the dump would refuse, found by the dump's own checks (DumpRules.prepare): the plan (a
 * column without a rule, a rule naming nothing), a keyed strategy without a usable MASKING_KEY,
 * `sql` and `constant` expressions that do not run, jsonb paths over arrays, subset conditions that
 * do not run. Every table of the source is taken as dumped.
 */
async function dumpRefusals(source: string, rules: RulesFile, maskingKey: string | undefined): Promise<{ problems: string[]; tables: number; masked: number }> {
  return inSourceSnapshot(source, async (client) => {
    const catalog = await readRulesCatalog(client);
    const plan = planRules(rules, catalog, catalog.tables);
    const masked = plan.tables.reduce((n, t) => n + t.columns.filter((c) => c.strategy.kind !== 'keep').length, 0);
    try {
      await DumpRules.prepare(client, rules, maskingKey, catalog.tables);
      return { problems: [], tables: plan.tables.length, masked };
    } catch (error) {
      if (error instanceof RulesError) return { problems: error.problems, tables: plan.tables.length, masked };
      throw error;
    }
  });
}

/** `db-fanout rules init|check`: talks only to the source database, never to NATS. Returns the exit code. */
export async function runRulesCommand(action: string | undefined, options: RulesCommandOptions): Promise<number> {
  if (action !== 'init' && action !== 'check') throw new RulesUsageError('rules needs init or check');
  if (!options.source) throw new RulesUsageError(`rules ${action} needs --source URL (the production database, only read)`);
  try {
    new URL(options.source);
  } catch {
    throw new RulesUsageError('--source must be a postgres:// URL');
  }
  if (action === 'init') {
    if (options.out && existsSync(options.out)) throw new RulesUsageError(`${options.out} exists; rules init does not overwrite a rules file`);
    const text = suggestRules(await readCatalog(options.source));
    if (options.out) {
      writeFileSync(options.out, text, { flag: 'wx' });
      const review = (text.match(/: review$/gm) ?? []).length;
      options.write(`wrote ${options.out}: ${review} column(s) marked review need a decision before a strict dump`);
    } else {
      options.write(text.trimEnd());
    }
    return 0;
  }
  const path = options.rules;
  if (!path) throw new RulesUsageError('rules check needs --rules FILE or DUMP_RULES');
  try {
    const rules = loadRulesFile(path);
    const { problems, tables, masked } = await dumpRefusals(options.source, rules, options.maskingKey);
    if (problems.length === 0) {
      options.write(`${path}: nothing to refuse (${tables} tables, ${masked} masked columns${rules.strict ? ', strict' : ''})`);
      return 0;
    }
    options.write(`${path}: a dump would be refused:`);
    for (const problem of problems) options.write(`  ${problem}`);
    return 1;
  } catch (error) {
    if (!(error instanceof RulesError)) throw error;
    options.write(errorMessage(error));
    return 1;
  }
}

/** `db-fanout rules ...` as argv: parsed with commander, run without NATS. Returns the exit code. */
export async function rulesMain(argv: string[], write: (line: string) => void, writeError: (line: string) => void): Promise<number> {
  const [action, ...rest] = argv;
  if (!action || action === '--help' || action === '-h') {
    write(RULES_USAGE);
    return action ? 0 : 2;
  }
  const command = new Command(`rules ${action}`)
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined, outputError: () => undefined })
    .option('--source <URL>')
    .option('--out <FILE>')
    .option('--rules <FILE>');
  // A check run in CI prints to its log: a row value in production's error stays out, as in the dumper's events.
  let detail = false;
  try {
    command.parse(rest, { from: 'user' });
    if (command.args.length) throw new RulesUsageError(`unexpected argument ${JSON.stringify(command.args[0])}`);
    const options = command.opts<{ source?: string; out?: string; rules?: string }>();
    // The dumper's own reading of DUMP_RULES and MASKING_KEY: the check must judge the key it would use.
    const { rulesFile, maskingKey, errorDetail } = loadRulesConfig();
    detail = errorDetail;
    return await runRulesCommand(action, { ...options, rules: options.rules ?? rulesFile, maskingKey, write });
  } catch (error) {
    if (error instanceof CommanderError && (error.code === 'commander.helpDisplayed' || error.code === 'commander.help')) {
      write(RULES_USAGE);
      return 0;
    }
    writeError(`db-fanout rules: ${describeFailure(error, { detail }).error}`);
    return error instanceof CommanderError || error instanceof RulesUsageError ? 2 : 1;
  }
}
