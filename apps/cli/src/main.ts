import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { ConfigError, loadCliConfig, type CliConfig } from '@app/common/config';
import { dateInTimeZone, isCalendarDate, parseSnapshotReadyPayload, reloadSubject, type SnapshotReadyPayload, SUBJECTS } from '@app/common/contract';
import { announcedSnapshots, kvKeys, openNatsConnection } from '@app/common/messaging';
import { errorMessage } from '@app/common/observability';
import { parseArgs, UsageError } from './args';
import { RULES_USAGE, RulesUsageError, runRulesCommand } from './rules/rules-command';
import { formatRunsTable, type Run } from './runs-table';

const USAGE = `db-fanout: refresh dev, staging and QA from one production snapshot

Usage: db-fanout <command> [options]   (NATS_URL, NATS_STREAM, NATS_SUBJECT_PREFIX as for the apps)

Commands:
  trigger [--date YYYY-MM-DD]            ask for a replication now (default: today in SCHEDULE_TIMEZONE)
  status                                 the latest runs: dump and every environment, with states and durations
  runs [--since YYYY-MM-DD] [--json]     every run in the ledger, newest first
  reload --env NAME [--snapshot ID]      load one environment again from a snapshot (default: the latest), no dump
  backfill --from YYYY-MM-DD --to YYYY-MM-DD   trigger each day of the range, oldest first
${RULES_USAGE}

Exit codes: 0 done, 1 failed (e.g. NATS unreachable), 2 wrong usage.`;

type Flags = Record<string, string | true>;
interface Command {
  flags: Record<string, 'value' | 'switch'>;
  run: (nc: NatsConnection, config: CliConfig, flags: Flags) => Promise<void>;
}

const out = (line: string) => process.stdout.write(`${line}\n`);

function dateFlag(flags: Flags, name: string): string | undefined {
  const value = flags[name];
  if (value === undefined) return undefined;
  if (value === true || !isCalendarDate(value)) throw new UsageError(`--${name} must be a date YYYY-MM-DD`);
  return value;
}

async function publishTrigger(nc: NatsConnection, config: CliConfig, date: string, msgID?: string): Promise<number> {
  const ack = await jetstream(nc).publish(`${config.nats.subjectPrefix}${SUBJECTS.trigger}`, JSON.stringify({ date }), msgID ? { msgID } : undefined);
  return ack.seq;
}

async function readRuns(nc: NatsConnection, config: CliConfig): Promise<Run[]> {
  const bucket = `${config.nats.stream}_RUNS`;
  const runs: Run[] = [];
  try {
    const kv = await new Kvm(nc).open(bucket);
    for (const key of await kvKeys(nc, bucket)) {
      const entry = await kv.get(key);
      if (entry?.value.length) runs.push(entry.json<Run>());
    }
  } catch (error) {
    throw new Error(`cannot read the run ledger ${config.nats.stream}_RUNS (is the scheduler running?): ${errorMessage(error)}`, { cause: error });
  }
  return runs.sort((a, b) => b.date.localeCompare(a.date));
}

/** The snapshot.ready of a snapshot id, or the latest one, from the stream. */
async function findSnapshot(nc: NatsConnection, config: CliConfig, snapshotId?: string): Promise<SnapshotReadyPayload> {
  const jsm = await jetstreamManager(nc);
  const subject = `${config.nats.subjectPrefix}${SUBJECTS.snapshotReady}`;
  if (!snapshotId) {
    const last = await jsm.streams.getMessage(config.nats.stream, { last_by_subj: subject }).catch(() => null);
    if (!last) throw new Error('no snapshot has been announced yet');
    return parseSnapshotReadyPayload(last.json());
  }
  const announced = (await announcedSnapshots(nc, config.nats)).find(({ body }) => body.snapshotId === snapshotId);
  if (announced) return parseSnapshotReadyPayload(announced.body);
  throw new Error(`snapshot ${snapshotId} is not in stream ${config.nats.stream} (expired, or never announced)`);
}

const COMMANDS: Record<string, Command> = {
  trigger: {
    flags: { date: 'value' },
    run: async (nc, config, flags) => {
      const date = dateFlag(flags, 'date') ?? dateInTimeZone(new Date(), config.timeZone);
      const seq = await publishTrigger(nc, config, date);
      out(`triggered replication for ${date} (stream ${config.nats.stream}, message ${seq})`);
    },
  },
  backfill: {
    flags: { from: 'value', to: 'value' },
    run: async (nc, config, flags) => {
      const from = dateFlag(flags, 'from');
      const to = dateFlag(flags, 'to');
      if (!from || !to) throw new UsageError('backfill needs --from and --to');
      if (from > to) throw new UsageError(`--from ${from} is after --to ${to}`);
      let count = 0;
      for (let day = new Date(`${from}T00:00:00Z`); day.toISOString().slice(0, 10) <= to; day.setUTCDate(day.getUTCDate() + 1)) {
        const date = day.toISOString().slice(0, 10);
        // One id per day: running the same backfill twice within the duplicate window dumps once.
        await publishTrigger(nc, config, date, `backfill:${date}`);
        out(`triggered ${date}`);
        if (++count > 3660) throw new UsageError('a backfill is limited to ten years');
      }
      out(`backfill of ${count} day(s) queued; the dumper takes them oldest first`);
    },
  },
  runs: {
    flags: { since: 'value', json: 'switch' },
    run: async (nc, config, flags) => {
      const since = dateFlag(flags, 'since');
      const runs = (await readRuns(nc, config)).filter((run) => !since || run.date >= since);
      out(flags.json ? JSON.stringify(runs, null, 2) : formatRunsTable(runs));
    },
  },
  status: {
    flags: {},
    run: async (nc, config) => {
      out(formatRunsTable((await readRuns(nc, config)).slice(0, 10)));
    },
  },
  reload: {
    flags: { env: 'value', snapshot: 'value' },
    run: async (nc, config, flags) => {
      const environment = flags.env;
      if (typeof environment !== 'string' || !/^[a-z0-9-]+$/.test(environment)) throw new UsageError('reload needs --env NAME ([a-z0-9-]+)');
      const snapshotId = typeof flags.snapshot === 'string' ? flags.snapshot : undefined;
      const snapshot = await findSnapshot(nc, config, snapshotId);
      await jetstream(nc).publish(`${config.nats.subjectPrefix}${reloadSubject(environment)}`, JSON.stringify(snapshot));
      out(`asked ${environment} to reload snapshot ${snapshot.snapshotId} (${snapshot.date})`);
    },
  },
};

/** `rules init|check`: the source database only, no NATS. */
async function rulesMain(argv: string[]): Promise<number> {
  try {
    const { command, flags } = parseArgs(argv, { source: 'value', out: 'value', rules: 'value' });
    if (flags.help) {
      out(RULES_USAGE);
      return 0;
    }
    const value = (flag: string) => (typeof flags[flag] === 'string' ? flags[flag] : undefined);
    return await runRulesCommand(command, { source: value('source'), out: value('out'), rules: value('rules') ?? process.env.DUMP_RULES, write: out });
  } catch (error) {
    process.stderr.write(`db-fanout rules: ${errorMessage(error)}\n`);
    return error instanceof UsageError || error instanceof RulesUsageError ? 2 : 1;
  }
}

async function main(argv: string[]): Promise<number> {
  const name = argv[0];
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out(USAGE);
    return name ? 0 : 2;
  }
  if (name === 'rules') return rulesMain(argv.slice(1));
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`db-fanout: unknown command ${JSON.stringify(name)}\n\n${USAGE}\n`);
    return 2;
  }
  let flags: Flags;
  try {
    const parsed = parseArgs(argv.slice(1), command.flags);
    if (parsed.command) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.command)}`);
    flags = parsed.flags;
  } catch (error) {
    process.stderr.write(`db-fanout ${name}: ${errorMessage(error)}\n`);
    return 2;
  }
  if (flags.help) {
    out(USAGE.split('\n').find((line) => line.trim().startsWith(name)) ?? USAGE);
    return 0;
  }
  let config: CliConfig;
  try {
    config = loadCliConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`db-fanout: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  let nc: NatsConnection | undefined;
  try {
    nc = await openNatsConnection(config.nats, 'db-fanout-cli');
    await command.run(nc, config, flags);
    return 0;
  } catch (error) {
    process.stderr.write(`db-fanout ${name}: ${errorMessage(error)}\n`);
    return error instanceof UsageError ? 2 : 1;
  } finally {
    await nc?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`db-fanout: ${errorMessage(error)}\n`);
    process.exit(1);
  },
);
