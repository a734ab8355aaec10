import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { Command, CommanderError } from 'commander';
import { ConfigError, loadCliConfig, type CliConfig } from '@app/common/config';
import { dateInTimeZone, isCalendarDate, parseSnapshotReadyPayload, reloadSubject, type RunRecord, type SnapshotReadyPayload, SUBJECTS } from '@app/common/contract';
import { announcedSnapshots, isConsumerNotFound, kvKeys, openNatsConnection, streamStoring } from '@app/common/messaging';
import { errorMessage } from '@app/common/observability';
import { rulesMain } from './rules/rules-command';
import { formatRunsTable } from './runs-table';
import { USAGE, UsageError, usageOf, usageProblem } from './usage';

type Options = Record<string, string | true | undefined>;
type Work = (nc: NatsConnection, config: CliConfig, options: Options) => Promise<void>;

const out = (line: string) => process.stdout.write(`${line}\n`);

function dateOption(options: Options, name: string): string | undefined {
  const value = options[name];
  if (value === undefined) return undefined;
  if (value === true || !isCalendarDate(value)) throw new UsageError(`--${name} must be a date YYYY-MM-DD`);
  return value;
}

/** The dumper refuses a trigger before START_DATE: with START_DATE set for the CLI too, refused here, before anything is published. */
function requireFromStartDate(config: CliConfig, date: string, what: string): void {
  if (config.startDate && date < config.startDate) throw new UsageError(`${what} ${date} is before START_DATE ${config.startDate}: the dumper would refuse it`);
}

/**
 * Fails, naming NATS_SUBJECT_PREFIX and NATS_STREAM, unless NATS_STREAM is the stream that stores
 * `subject`: with a wrong one the broker's own answers name neither (`stream not found`, `consumer
 * filter subject is not a valid subset of the interest subjects`), or read as an empty stream.
 */
async function requireStoredInStream(nc: NatsConnection, config: CliConfig, subject: string): Promise<void> {
  const storedIn = await streamStoring(await jetstreamManager(nc), subject);
  if (!storedIn) throw new Error(`no stream stores ${subject}: check NATS_SUBJECT_PREFIX and NATS_STREAM (the apps create the stream when they first start)`);
  if (storedIn !== config.nats.stream) throw new Error(`${subject} is stored in stream ${storedIn}, not in NATS_STREAM ${config.nats.stream}: set NATS_STREAM as the apps have it`);
}

/**
 * Publishes a trigger; `duplicate` when the stream already had one under the same message id
 * (a backfill of that date within the stream's duplicate window): nothing new is queued then.
 * Fails when no stream, or another stream than NATS_STREAM, stored it: `status` and `runs` read
 * NATS_STREAM, and a wrong NATS_SUBJECT_PREFIX reaches no stream at all.
 */
async function publishTrigger(nc: NatsConnection, config: CliConfig, date: string, msgID?: string): Promise<{ seq: number; duplicate: boolean }> {
  const subject = `${config.nats.subjectPrefix}${SUBJECTS.trigger}`;
  // Asked before publishing, so a wrong setting queues nothing.
  await requireStoredInStream(nc, config, subject);
  const ack = await jetstream(nc).publish(subject, JSON.stringify({ date }), msgID ? { msgID } : undefined);
  if (ack.stream !== config.nats.stream) {
    throw new Error(`the trigger was stored in stream ${ack.stream} (message ${ack.seq}), not in NATS_STREAM ${config.nats.stream}: set NATS_STREAM as the apps have it`);
  }
  return { seq: ack.seq, duplicate: ack.duplicate };
}

/** The run history, straight from the scheduler's KV bucket over NATS (the CLI makes no HTTP calls). */
async function readRuns(nc: NatsConnection, config: CliConfig): Promise<RunRecord[]> {
  const bucket = `${config.nats.stream}_RUNS`;
  const runs: RunRecord[] = [];
  try {
    const kv = await new Kvm(nc).open(bucket);
    for (const key of await kvKeys(nc, bucket)) {
      const entry = await kv.get(key);
      if (entry?.value.length) runs.push(entry.json<RunRecord>());
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
  // First, so that "not announced" means the stream the apps use holds no announcement.
  await requireStoredInStream(nc, config, subject);
  if (!snapshotId) {
    // No message is null; any other failure is the broker's and said as it is.
    const last = await jsm.streams.getMessage(config.nats.stream, { last_by_subj: subject });
    if (!last) throw new Error(`no snapshot has been announced yet on stream ${config.nats.stream}`);
    return parseSnapshotReadyPayload(last.json());
  }
  const announced = (await announcedSnapshots(nc, config.nats)).find(({ body }) => body.snapshotId === snapshotId);
  if (announced) return parseSnapshotReadyPayload(announced.body);
  throw new Error(`snapshot ${snapshotId} is not in stream ${config.nats.stream} (expired, or never announced)`);
}

const trigger: Work = async (nc, config, options) => {
  const date = dateOption(options, 'date') ?? dateInTimeZone(new Date(), config.timeZone);
  requireFromStartDate(config, date, 'date');
  const { seq } = await publishTrigger(nc, config, date);
  out(`triggered replication for ${date} (stream ${config.nats.stream}, message ${seq})`);
};

const MAX_BACKFILL_DAYS = 3660;

function backfillRange(options: Options): [string, string] {
  const from = dateOption(options, 'from');
  const to = dateOption(options, 'to');
  if (!from || !to) throw new UsageError('backfill needs --from and --to');
  if (from > to) throw new UsageError(`--from ${from} is after --to ${to}`);
  // Refused before anything is published: past the limit, every earlier day would already be queued.
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  if (days > MAX_BACKFILL_DAYS) throw new UsageError(`a backfill is limited to ten years (${MAX_BACKFILL_DAYS} days); ${from} to ${to} is ${days}`);
  return [from, to];
}

const backfill: Work = async (nc, config, options) => {
  const [from, to] = backfillRange(options);
  requireFromStartDate(config, from, '--from');
  let queued = 0;
  let already = 0;
  for (let day = new Date(`${from}T00:00:00Z`); day.toISOString().slice(0, 10) <= to; day.setUTCDate(day.getUTCDate() + 1)) {
    const date = day.toISOString().slice(0, 10);
    // One id per day: running the same backfill twice within the duplicate window dumps once.
    const { duplicate } = await publishTrigger(nc, config, date, `backfill:${date}`);
    if (duplicate) {
      out(`${date} already queued by a backfill within the stream's duplicate window: not queued again`);
      already += 1;
    } else {
      out(`triggered ${date}`);
      queued += 1;
    }
  }
  out(`backfill of ${queued} day(s) queued${already ? `, ${already} already queued` : ''}; the dumper takes them oldest first`);
};

/**
 * The history is what the scheduler's `run-ledger` consumer has folded so far: with the scheduler
 * down (or behind), runs that happened are missing or still `running`. Said on stderr, so `--json`
 * stays parseable and the exit code stays 0 (what is shown is true as far as it goes).
 */
async function warnIfBehind(nc: NatsConnection, config: CliConfig): Promise<void> {
  const info = await (await jetstreamManager(nc)).consumers.info(config.nats.stream, 'run-ledger').catch((error: unknown) => {
    if (isConsumerNotFound(error)) return undefined;
    throw error;
  });
  const warn = (line: string): void => void process.stderr.write(`db-fanout: ${line}\n`);
  if (!info) return warn(`no scheduler keeps a run history on stream ${config.nats.stream} (no consumer run-ledger): is the scheduler running?`);
  const behind = info.num_pending + info.num_ack_pending;
  if (behind > 0) warn(`the run history is ${behind} event(s) behind the stream: is the scheduler running?`);
}

const runs: Work = async (nc, config, options) => {
  const since = dateOption(options, 'since');
  const list = (await readRuns(nc, config)).filter((run) => !since || run.date >= since);
  out(options.json ? JSON.stringify(list, null, 2) : formatRunsTable(list));
  await warnIfBehind(nc, config);
};

const status: Work = async (nc, config) => {
  out(formatRunsTable((await readRuns(nc, config)).slice(0, 10)));
  await warnIfBehind(nc, config);
};

function reloadEnvironment(options: Options): string {
  const environment = options.env;
  if (typeof environment !== 'string' || !/^[a-z0-9-]+$/.test(environment)) throw new UsageError('reload needs --env NAME ([a-z0-9-]+)');
  return environment;
}

/**
 * A reload is read by `loader-<env>-reload`, which a loader of that environment creates when it
 * first starts and which takes only reloads published after it exists: without it (a typo in
 * --env, an environment never started on this stream) nothing would ever load the request.
 */
async function requireReloadConsumer(nc: NatsConnection, config: CliConfig, environment: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const durable = `loader-${environment}-reload`;
  const found = await jsm.consumers.info(config.nats.stream, durable).then(
    () => true,
    (error: unknown) => {
      if (isConsumerNotFound(error)) return false;
      throw error;
    },
  );
  if (found) return;
  const known: string[] = [];
  for await (const consumer of jsm.consumers.list(config.nats.stream)) {
    const match = /^loader-([a-z0-9-]+)-reload$/.exec(consumer.config.durable_name ?? '');
    if (match) known.push(match[1]);
  }
  throw new Error(
    `no loader of ${environment} has started on stream ${config.nats.stream} (no consumer ${durable}), so nothing would load the reload; environments with loaders: ${known.sort().join(', ') || 'none'}`,
  );
}

const reload: Work = async (nc, config, options) => {
  const environment = reloadEnvironment(options);
  const snapshotId = typeof options.snapshot === 'string' ? options.snapshot : undefined;
  const snapshot = await findSnapshot(nc, config, snapshotId);
  await requireReloadConsumer(nc, config, environment);
  await jetstream(nc).publish(`${config.nats.subjectPrefix}${reloadSubject(environment)}`, JSON.stringify(snapshot));
  out(`asked ${environment} to reload snapshot ${snapshot.snapshotId} (${snapshot.date})`);
};

interface Chosen {
  name: string;
  work: Work;
  options: Options;
}

/**
 * The commands and their options, parsed by commander. Parsing only chooses the work; it runs after,
 * so `--help` and wrong usage never need the configuration or NATS. Help is the CLI's own text.
 */
function program(choose: (chosen: Chosen) => void): Command {
  const root = new Command('db-fanout')
    .exitOverride()
    .configureOutput({ writeOut: (text) => process.stdout.write(text), writeErr: () => undefined, outputError: () => undefined })
    .configureHelp({ formatHelp: (command) => `${command.parent ? usageOf(command.name()) : USAGE}\n` });
  /** `check` refuses wrong usage before anything connects. */
  const command = (name: string, work: Work, check: (options: Options) => unknown = () => undefined) =>
    root
      .command(name)
      .allowExcessArguments()
      .action((options: Options, self: Command) => {
        if (self.args.length) throw new UsageError(`unexpected argument ${JSON.stringify(self.args[0])}`);
        for (const key of ['date', 'from', 'to', 'since']) dateOption(options, key);
        check(options);
        choose({ name, work, options });
      });
  command('trigger', trigger).option('--date <YYYY-MM-DD>');
  command('status', status);
  command('runs', runs).option('--since <YYYY-MM-DD>').option('--json');
  command('reload', reload, reloadEnvironment).option('--env <NAME>').option('--snapshot <ID>');
  command('backfill', backfill, backfillRange).option('--from <YYYY-MM-DD>').option('--to <YYYY-MM-DD>');
  return root;
}

/** Exit codes: 0 done, 1 failed, 2 wrong usage. */
async function main(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    out(USAGE);
    return 2;
  }
  const name = argv[0];
  // `rules init|check` read the source database only: no configuration, no NATS.
  if (name === 'rules') return rulesMain(argv.slice(1), out, (line) => process.stderr.write(`${line}\n`));
  let chosen: Chosen | undefined;
  try {
    await program((c) => (chosen = c)).parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.help') return 0;
      if (error.code === 'commander.unknownCommand') {
        process.stderr.write(`db-fanout: unknown command ${JSON.stringify(name)}\n\n${USAGE}\n`);
        return 2;
      }
      process.stderr.write(`db-fanout ${name}: ${usageProblem(error) ?? error.message}\n`);
      return 2;
    }
    process.stderr.write(`db-fanout ${name}: ${errorMessage(error)}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
  if (!chosen) return 0; // `help`: commander printed it
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
    await chosen.work(nc, config, chosen.options);
    return 0;
  } catch (error) {
    process.stderr.write(`db-fanout ${chosen.name}: ${errorMessage(error)}\n`);
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
