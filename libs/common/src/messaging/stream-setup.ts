import { Logger } from '@nestjs/common';
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerUpdateConfig,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamManager,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { millis, nanos, PermissionViolationError } from '@nats-io/transport-node';
import { type NatsConfig, STREAM_DUPLICATE_WINDOW_MS } from '../config/app-config';
import { streamSubjects, SUBJECTS } from '../contract/subjects';
import { errorMessage } from '../observability/redact';
import { type ConsumerSettings, consumerSettings } from './pull-consumer';

const STREAM_NOT_FOUND = 10059;
const CONSUMER_NOT_FOUND = 10014;

function isNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && (error.code === STREAM_NOT_FOUND || error.code === CONSUMER_NOT_FOUND);
}

/** The JetStream API's answer for a consumer that does not exist (its code, not its wording). */
export function isConsumerNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === CONSUMER_NOT_FOUND;
}

/**
 * The stream that stores `subject` (a wildcard: one that captures any of it), or undefined when the
 * broker says none does. Anything else (no answer: the broker away) is thrown as it is, so that only
 * the broker's own answer is ever read as a wrong setting.
 */
export async function streamStoring(jsm: JetStreamManager, subject: string): Promise<string | undefined> {
  try {
    return await jsm.streams.find(subject);
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === STREAM_NOT_FOUND) return undefined;
    throw error;
  }
}

/** Every subject the apps publish or consume, with the prefix (reloads: any environment's). */
function pipelineSubjects(prefix: string): string[] {
  return Object.values(SUBJECTS).map((subject) => `${prefix}${subject === SUBJECTS.reload ? `${subject}.>` : subject}`);
}

interface Misplaced {
  subject: string;
  /** The stream that stores it instead of NATS_STREAM; undefined: none does. */
  storedIn?: string;
}

/** Whether `error` (or one it wraps) is the broker refusing this connection's user a subject. */
function isPermissionViolation(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = e.cause === e ? undefined : e.cause) if (e instanceof PermissionViolationError) return true;
  return false;
}

/**
 * The pipeline's subjects that NATS_STREAM does not store; undefined when the connection's user may
 * not ask (a NATS account whose permissions do not allow `$JS.API.STREAM.NAMES`, which the apps
 * did not need before this check): such a setup booted before, so it still does, unchecked.
 */
async function misplacedSubjects(jsm: JetStreamManager, config: NatsConfig): Promise<Misplaced[] | undefined> {
  const subjects = pipelineSubjects(config.subjectPrefix);
  try {
    const storedIn = await Promise.all(subjects.map((subject) => streamStoring(jsm, subject)));
    return subjects.map((subject, i) => ({ subject, storedIn: storedIn[i] })).filter(({ storedIn }) => storedIn !== config.stream);
  } catch (error) {
    if (isPermissionViolation(error)) return undefined;
    throw error;
  }
}

function someOf(subjects: string[]): string {
  return subjects.length <= 2 ? subjects.join(', ') : `${subjects.slice(0, 2).join(', ')}, and ${subjects.length - 2} more`;
}

/**
 * Why NATS_STREAM and NATS_SUBJECT_PREFIX do not go together, naming both: without this an app
 * started (healthy) and then failed at every publish or read with the broker's own words, which
 * name neither (`jetstream is not enabled`, `consumer filter subject is not a valid subset ...`).
 */
function describeMisplaced(config: NatsConfig, misplaced: Misplaced[], captures: string[] | undefined): string {
  const prefix = `NATS_SUBJECT_PREFIX ${JSON.stringify(config.subjectPrefix)}`;
  const elsewhere = misplaced.filter(({ storedIn }) => storedIn !== undefined);
  if (elsewhere.length) {
    const streams = [...new Set(elsewhere.map(({ storedIn }) => storedIn))].join(', ');
    return (
      `the subjects of ${prefix} are stored in stream ${streams}, not in NATS_STREAM ${config.stream} ` +
      `(${someOf(elsewhere.map(({ subject }) => subject))}): set NATS_STREAM as the other apps of the pipeline have it`
    );
  }
  return (
    `NATS_STREAM ${config.stream} does not store the subjects of ${prefix} (no stream stores ${someOf(misplaced.map(({ subject }) => subject))}); ` +
    `the stream captures ${captures?.join(', ') || 'no subjects'}: check NATS_SUBJECT_PREFIX and NATS_STREAM, which every app of the pipeline must share`
  );
}

/**
 * Creates the pipeline's stream if it does not exist. An existing stream is left as it is:
 * an operator may have tuned it (replicas, limits) and an app must not undo that on restart.
 * It must store the subjects of NATS_SUBJECT_PREFIX, though, and no other stream may: otherwise
 * the app stops here, naming both settings, rather than start and lose every message.
 */
export async function ensureStream(jsm: JetStreamManager, config: NatsConfig, warn: (message: string) => void = () => undefined): Promise<void> {
  // The subjects an existing stream captures: none for a mirror or a stream that only sources others.
  let captures: string[] | undefined;
  try {
    captures = (await jsm.streams.info(config.stream)).config.subjects ?? [];
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  const misplaced = await misplacedSubjects(jsm, config);
  if (!misplaced) {
    warn(`could not check that NATS_STREAM ${config.stream} stores the subjects of NATS_SUBJECT_PREFIX ${JSON.stringify(config.subjectPrefix)}: this NATS user may not list streams ($JS.API.STREAM.NAMES)`);
  }
  if (captures) {
    if (misplaced?.length) throw new Error(describeMisplaced(config, misplaced, captures));
    return;
  }
  // A new stream cannot capture subjects another stream stores (the broker says only `subjects overlap`).
  if (misplaced?.some(({ storedIn }) => storedIn !== undefined)) throw new Error(describeMisplaced(config, misplaced, undefined));
  try {
    await jsm.streams.add({
      name: config.stream,
      subjects: streamSubjects(config.subjectPrefix),
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(config.streamMaxAgeMs),
      num_replicas: config.streamReplicas,
      // Two schedulers firing the same tick publish one Nats-Msg-Id; the server keeps one.
      duplicate_window: nanos(STREAM_DUPLICATE_WINDOW_MS),
    });
  } catch (error) {
    // Another app created it between our look-up and our add: that is fine.
    if (!(await jsm.streams.info(config.stream).catch(() => undefined))) throw refusedCreation(`stream ${config.stream}`, 'NATS_STREAM_REPLICAS', config.streamReplicas, error);
  }
}

/**
 * A stream or bucket that could not be created. With more than one replica, naming the variable
 * they come from: the broker's own words (`replicas > 1 not supported in non-clustered mode`) name
 * neither. With one, the replicas are not what went wrong (a permission, no answer in time).
 */
export function refusedCreation(what: string, variable: string, replicas: number, error: unknown): Error {
  const why = replicas > 1 ? `the broker refused to create ${what} with ${variable}=${replicas}` : `could not create ${what}`;
  return new Error(`${why}: ${errorMessage(error)}`, { cause: error });
}

export interface ConsumerBinding {
  /** The logical subject, as written in @EventPattern (no prefix). */
  pattern: string;
  /** The subject the consumer filters on, when narrower than the pattern (e.g. one environment's). */
  subject?: string;
  /** Durable consumer name: shared by replicas, one per role (dumper) or per environment (loader). */
  durable: string;
  /**
   * Where a brand-new consumer starts. `all`: nothing published before the first start is lost
   * (triggers). `last`: a new environment loads the latest snapshot instead of replaying history.
   * `new`: only what is published from now on (requests such as a reload).
   */
  startAt: 'all' | 'last' | 'new';
  /** Upper bound of deliveries for one message, so a message that crashes its handler cannot loop forever (-1: none). */
  maxDeliver: number;
  /**
   * Messages handed out at once across all replicas (default 100). 1 makes the consumer strictly
   * ordered: replicas then share the work for failover, one message at a time.
   */
  maxAckPending?: number;
}

/** The settings of a consumer the code relies on, as the broker states them (ms, not ns). */
interface ComparedSettings {
  filter_subject: string;
  ack_policy: string;
  replay_policy: string;
  /** Set on a push consumer: ours are all pull consumers. */
  deliver_subject: string;
  ack_wait: number;
  max_deliver: number;
  max_ack_pending: number;
  headers_only: boolean;
}

/** What the broker can change on an existing consumer (nats-server 2.9); the rest needs a new consumer. */
const UPDATABLE: ReadonlySet<keyof ComparedSettings> = new Set(['filter_subject', 'ack_wait', 'max_deliver', 'max_ack_pending', 'headers_only']);

function wantedSettings(config: NatsConfig, binding: ConsumerBinding): ComparedSettings {
  return {
    filter_subject: `${config.subjectPrefix}${binding.subject ?? binding.pattern}`,
    ack_policy: AckPolicy.Explicit,
    replay_policy: ReplayPolicy.Instant,
    deliver_subject: '',
    ack_wait: config.ackWaitMs,
    max_deliver: binding.maxDeliver,
    max_ack_pending: binding.maxAckPending ?? 100,
    headers_only: false,
  };
}

function heldSettings(held: ConsumerConfig): ComparedSettings {
  return {
    filter_subject: held.filter_subject ?? '',
    ack_policy: held.ack_policy,
    replay_policy: held.replay_policy ?? ReplayPolicy.Instant,
    deliver_subject: held.deliver_subject ?? '',
    ack_wait: held.ack_wait ? millis(held.ack_wait) : 30_000,
    max_deliver: held.max_deliver ?? -1,
    max_ack_pending: held.max_ack_pending ?? -1,
    headers_only: held.headers_only ?? false,
  };
}

/** `name held → wanted`, for every setting that differs. */
export function consumerDifferences(held: ConsumerConfig, config: NatsConfig, binding: ConsumerBinding): { field: keyof ComparedSettings; held: unknown; wanted: unknown }[] {
  const wanted = wantedSettings(config, binding);
  const current = heldSettings(held);
  return (Object.keys(wanted) as (keyof ComparedSettings)[])
    .filter((field) => current[field] !== wanted[field])
    .map((field) => ({ field, held: current[field], wanted: wanted[field] }));
}

function describeDifferences(differences: { field: string; held: unknown; wanted: unknown }[]): string {
  return differences.map(({ field, held, wanted }) => `${field} ${JSON.stringify(held)} (wanted ${JSON.stringify(wanted)})`).join(', ');
}

/**
 * Creates the durable consumer if missing. An existing one keeps its position (that is the point of
 * it), and its configuration is compared in full with what this app needs (ACK_WAIT, the binding):
 * what the broker can change is updated, anything else stops the app naming each difference.
 * Returns the settings as the broker holds them afterwards, which are what the code must use.
 * The start position (`startAt`) is not compared: it only means something for a new consumer.
 */
export async function ensureConsumer(jsm: JetStreamManager, config: NatsConfig, binding: ConsumerBinding): Promise<ConsumerSettings> {
  let existing: ConsumerInfo | undefined;
  try {
    existing = await jsm.consumers.info(config.stream, binding.durable);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  if (existing) return consumerSettings(await reconcileConsumer(jsm, config, binding, existing.config));
  const wanted = wantedSettings(config, binding);
  try {
    await jsm.consumers.add(config.stream, {
      durable_name: binding.durable,
      filter_subject: wanted.filter_subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: { all: DeliverPolicy.All, last: DeliverPolicy.Last, new: DeliverPolicy.New }[binding.startAt],
      ack_wait: nanos(wanted.ack_wait),
      max_deliver: wanted.max_deliver,
      max_ack_pending: wanted.max_ack_pending,
    });
  } catch (error) {
    // Another replica created it between our look-up and our add: compare that one instead.
    const raced = await jsm.consumers.info(config.stream, binding.durable).catch(() => undefined);
    if (!raced) throw error;
    return consumerSettings(await reconcileConsumer(jsm, config, binding, raced.config));
  }
  return consumerSettings((await jsm.consumers.info(config.stream, binding.durable)).config);
}

async function reconcileConsumer(jsm: JetStreamManager, config: NatsConfig, binding: ConsumerBinding, held: ConsumerConfig): Promise<ConsumerConfig> {
  const differences = consumerDifferences(held, config, binding);
  if (!differences.length) return held;
  const where = `consumer ${binding.durable} of stream ${config.stream}`;
  const fixed = differences.filter(({ field }) => !UPDATABLE.has(field));
  if (fixed.length) {
    throw new Error(
      `${where} differs from what this app needs in what the broker cannot change: ${describeDifferences(fixed)}; ` +
        `remove it (nats consumer rm ${config.stream} ${binding.durable}) to have it created again`,
    );
  }
  const update: Partial<ConsumerUpdateConfig> = {};
  for (const { field, wanted } of differences) {
    if (field === 'ack_wait') update.ack_wait = nanos(wanted as number);
    else Object.assign(update, { [field]: wanted });
  }
  try {
    const updated = await jsm.consumers.update(config.stream, binding.durable, update);
    new Logger('JetStream').log(`${where} updated: ${describeDifferences(differences)}`);
    return updated.config;
  } catch (error) {
    throw new Error(`${where} differs from what this app needs (${describeDifferences(differences)}) and the broker refused the update: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}
