import { existsSync, writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import type { ClientBase, PoolClient } from 'pg';
import { ConfigError, loadRulesConfig } from '@app/common/config';
import { createPostgresPool, DUMP_SOURCE_SETTINGS, LOCK_WATCH_INTERVAL_MS, type LockWatch, type LockWatchWording, watchProductionLockWaits } from '@app/common/database';
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
  /** How long a lock wait of the check's own lasts before it gives up (tests shorten it). */
  lockTimeoutMs?: number;
  write: (line: string) => void;
}

/** Thrown for wrong usage of `rules`: exit code 2. */
export class RulesUsageError extends Error {}

/**
 * How long the check waits for a table lock production holds before it gives up, as the dump does
 * (pg_dump's --lock-wait-timeout): without it, a check that met a migration's ALTER TABLE waited for
 * it for good, holding the locks of the tables it had read already.
 */
export const RULES_LOCK_TIMEOUT_MS = 60_000;

/** What the check says when production waits for it (the lock watch's error). */
const CHECK_LOCK_WATCH_WORDING: LockWatchWording = {
  holder: 'this check',
  outcome: 'the check ends here and lets it through (production needs the table); run it again, at a quieter time',
};

/**
 * `work` in one read-only snapshot of the source, as the dump reads it: in the dumper's pinned
 * session settings (TimeZone UTC, DateStyle ISO, ..., row security off), under which it runs subset
 * conditions and `sql` expressions. In the role's own, a literal such as '13/01/2024' passed the check on a source
 * whose DateStyle reads day first and then failed the dump.
 *
 * The check runs the dump's scans (a subset's closure, jsonb arrays: full scans, minutes on a large
 * table) and holds ACCESS SHARE on every table it read until it ends, so it is protected as the dump
 * is: lock_timeout on its own lock waits, and the dump's lock watch, which ends it as soon as a
 * session in production waits because of it (a migration's ALTER TABLE waited for the whole check,
 * and every query on the table queued behind the ALTER), and terminates its session on the server.
 */
async function inSourceSnapshot<T>(source: string, lockTimeoutMs: number, work: (client: ClientBase) => Promise<T>): Promise<T> {
  // Two sessions: the snapshot's and the watch's. Each checks its client once a second (postgres-pool.ts).
  const pool = createPostgresPool(source, { applicationName: 'db-fanout-cli', lockTimeoutMs, settings: DUMP_SOURCE_SETTINGS, max: 2 });
  let blocked: Error | undefined;
  let watch: LockWatch | undefined;
  let client: PoolClient | undefined;
  try {
    const session = (client = await pool.connect());
    const { rows } = await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    watch = watchProductionLockWaits(
      pool,
      [rows[0].pid],
      (error) => {
        // Closing the connection cuts off the statement in flight; the watch then ends the backend.
        blocked = error;
        client = undefined;
        session.release(error);
        return true;
      },
      LOCK_WATCH_INTERVAL_MS,
      CHECK_LOCK_WATCH_WORDING,
    );
    await session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const result = await work(session);
    if (blocked) throw blocked;
    return result;
  } catch (error) {
    // Whatever the closed connection made of the statement in flight, the watch's reason is the one.
    if (blocked) throw new Error(blocked.message);
    if ((error as { code?: unknown } | undefined)?.code === '55P03') {
      throw new Error(
        `rules check waited ${lockTimeoutMs / 1000} s for a lock on a table it reads, which production holds (DDL or a long transaction): it ends without a verdict; run it again, at a quieter time`,
      );
    }
    throw error;
  } finally {
    await watch?.stop();
    // Destroyed, not handed back: its transaction is open. end() waits for both sessions.
    client?.release(true);
    await pool.end();
  }
}

const readCatalog = (source: string, lockTimeoutMs: number): Promise<RulesCatalog> => inSourceSnapshot(source, lockTimeoutMs, readRulesCatalog);

/**
 * What the dump would refuse, found by the dump's own checks (DumpRules.prepare): the plan (a
 * column without a rule, a rule naming nothing), a keyed strategy without a usable MASKING_KEY,
 * `sql` and `constant` expressions that do not run, jsonb paths over arrays, subset conditions that
 * do not run. Every table of the source is taken as dumped.
 */
async function dumpRefusals(source: string, rules: RulesFile, maskingKey: string | undefined, lockTimeoutMs: number): Promise<{ problems: string[]; tables: number; masked: number }> {
  return inSourceSnapshot(source, lockTimeoutMs, async (client) => {
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
  // The other command's flag is a mistake, not something to ignore: `rules init --rules FILE` wrote a
  // file that ignored FILE, `rules check --out FILE` wrote nothing to FILE.
  if (action === 'init' && options.rules !== undefined) throw new RulesUsageError('--rules is for rules check; rules init reads the catalog and writes a rules file (--out FILE)');
  if (action === 'check' && options.out !== undefined) throw new RulesUsageError('--out is for rules init; rules check writes no file, only what a dump would refuse');
  if (!options.source) throw new RulesUsageError(`rules ${action} needs --source URL (the production database, only read)`);
  // As SOURCE_DATABASE_URL is checked: an http:// or mysql:// URL was connected to as PostgreSQL.
  if (!isPostgresUrl(options.source)) throw new RulesUsageError('--source must be a postgres:// URL');
  if (action === 'init') {
    if (options.out && existsSync(options.out)) throw new RulesUsageError(`${options.out} exists; rules init does not overwrite a rules file`);
    const text = suggestRules(await readCatalog(options.source, options.lockTimeoutMs ?? RULES_LOCK_TIMEOUT_MS));
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
    const { problems, tables, masked } = await dumpRefusals(options.source, rules, options.maskingKey, options.lockTimeoutMs ?? RULES_LOCK_TIMEOUT_MS);
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

function isPostgresUrl(value: string): boolean {
  try {
    return ['postgres:', 'postgresql:'].includes(new URL(value).protocol);
  } catch {
    return false;
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
    // DUMP_RULES is check's default; init has no use for it (only a --rules given to init is wrong).
    return await runRulesCommand(action, { ...options, rules: action === 'check' ? (options.rules ?? rulesFile) : options.rules, maskingKey, write });
  } catch (error) {
    if (error instanceof CommanderError && (error.code === 'commander.helpDisplayed' || error.code === 'commander.help')) {
      write(RULES_USAGE);
      return 0;
    }
    writeError(`db-fanout rules: ${describeFailure(error, { detail }).error}`);
    // A bad variable (ERROR_DETAIL=maybe) is wrong usage, as in the CLI's other commands.
    return error instanceof CommanderError || error instanceof RulesUsageError || error instanceof ConfigError ? 2 : 1;
  }
}
