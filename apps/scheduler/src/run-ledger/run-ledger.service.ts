import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { type SchedulerConfig } from '@app/common/config';
import { dateInTimeZone, isCalendarDate, parseSnapshotReadyPayload, parseTriggerPayload, SUBJECTS } from '@app/common/contract';
import { ACK, kvKeys, nak, NATS_CONNECTION, PullConsumer, refusedCreation } from '@app/common/messaging';
import { errorMessage, ReadinessService } from '@app/common/observability';
import { SCHEDULER_CONFIG } from '../scheduler.constants';
import { applyEvent, newRun, type RunRecord, runDateOf, triggerSeqOf } from './run-record';

const CONSUMER = 'run-ledger';

function isValid(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch {
    return false;
  }
}

/**
 * The run history Airflow users expect, built from the events the apps already publish and kept in
 * a JetStream KV bucket (`<NATS_STREAM>_RUNS`, one key per date): it survives restarts and needs no
 * other server. The fold reads the whole stream through its own durable consumer, acking each event
 * after its run was written, so a restart resumes where it stopped.
 */
@Injectable()
export class RunLedgerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RunLedger');
  private kv?: KV;
  private readonly stopping = new AbortController();
  private markOpened!: () => void;
  /** Settles once the bucket is open (runs() may be asked before bootstrap finished). */
  private readonly opened = new Promise<void>((resolve) => (this.markOpened = resolve));
  private loop?: Promise<void>;

  constructor(
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    private readonly readiness: ReadinessService,
  ) {}

  get bucket(): string {
    return `${this.config.nats.stream}_RUNS`;
  }

  async onApplicationBootstrap(): Promise<void> {
    this.kv = await new Kvm(this.connection).create(this.bucket, { history: 1, replicas: this.config.nats.streamReplicas }).catch((error: unknown) => {
      throw refusedCreation(`KV bucket ${this.bucket}`, 'NATS_STREAM_REPLICAS', this.config.nats.streamReplicas, error);
    });
    await this.ensureConsumer();
    this.readiness.set('run-ledger', true, `bucket ${this.bucket}`);
    this.markOpened();
    const consumer = new PullConsumer({
      connection: this.connection,
      stream: this.config.nats.stream,
      name: CONSUMER,
      ensure: () => this.ensureConsumer(),
      logger: this.logger,
      expiresMs: 2_000,
    });
    this.loop = consumer.run(async (message) => {
      try {
        await this.record(message);
        return ACK;
      } catch (error) {
        this.logger.warn(`could not record ${message.subject} #${message.seq}: ${errorMessage(error)}`);
        return nak(1_000);
      }
    }, this.stopping.signal);
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping.abort();
    await this.loop;
  }

  /** The fold's durable consumer over the whole stream, created when missing (e.g. the stream was recreated). */
  private async ensureConsumer(): Promise<void> {
    const jsm = await jetstreamManager(this.connection);
    const existing = await jsm.consumers.info(this.config.nats.stream, CONSUMER).catch(() => undefined);
    if (!existing) {
      await jsm.consumers.add(this.config.nats.stream, {
        durable_name: CONSUMER,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(this.config.nats.ackWaitMs),
      });
    }
  }

  /** Every run, newest date first. */
  async runs(): Promise<RunRecord[]> {
    await this.opened;
    const kv = this.kv!;
    const runs: RunRecord[] = [];
    for (const key of await kvKeys(this.connection, this.bucket)) {
      const entry = await kv.get(key);
      if (entry?.value.length) runs.push(entry.json<RunRecord>());
    }
    return runs.sort((a, b) => b.date.localeCompare(a.date));
  }

  /**
   * The newest date up to `notAfter` whose dump succeeded, once every event already in the stream
   * has been folded. A run of a later date (a typo in `db-fanout trigger --date`) is left out: taken
   * as the last success, it would leave every missed day before it uncaught.
   */
  async lastSuccessfulDate(notAfter?: string): Promise<string | undefined> {
    await this.opened;
    const jsm = await jetstreamManager(this.connection);
    for (;;) {
      const info = await jsm.consumers.info(this.config.nats.stream, CONSUMER);
      if (info.num_pending === 0 && info.num_ack_pending === 0) break;
      await sleep(200);
    }
    return (await this.runs()).find((run) => run.dump.state === 'success' && (!notAfter || run.date <= notAfter))?.date;
  }

  /**
   * The run a trigger starts, checked as the dumper checks it: one the dumper terminates unread (an
   * unknown field, a date that is not a calendar date, a date before START_DATE) is no run, not one
   * "queued" forever (and a date catch-up would wait on). Without a date it is for "today" where the
   * dumper resolves it: the same time zone.
   */
  private triggerDate(body: unknown, published: Date): string | undefined {
    let requested: string | undefined;
    try {
      requested = parseTriggerPayload(body).date;
    } catch {
      return undefined;
    }
    const date = requested ?? dateInTimeZone(published, this.config.timeZone);
    return date < this.config.startDate ? undefined : date;
  }

  private async record(message: JsMsg): Promise<void> {
    const subject = message.subject.slice(this.config.nats.subjectPrefix.length);
    let body: Record<string, unknown> = {};
    try {
      const text = message.string();
      body = text.trim() ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      return; // not JSON: the consuming app rejected it; it is no run
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
    // An announcement every loader would reject (parseSnapshotReadyPayload) is no dump that succeeded.
    if (subject === SUBJECTS.snapshotReady && !isValid(() => parseSnapshotReadyPayload(body))) {
      this.logger.warn(`ignored ${message.subject} #${message.seq}: not a valid snapshot.ready, which every loader rejects too`);
      return;
    }
    const date = subject === SUBJECTS.trigger ? this.triggerDate(body, message.time) : runDateOf(subject, body);
    if (!date || !isCalendarDate(date)) return;
    const kv = this.kv!;
    // Compare-and-set: a second scheduler folding the same event stream never loses an update.
    for (;;) {
      const entry = await kv.get(date);
      const current = entry?.value.length ? entry.json<RunRecord>() : newRun(date);
      let next: RunRecord;
      try {
        next = applyEvent(current, subject, body, message.time.toISOString(), triggerSeqOf(subject, message.seq, message.headers?.get('Nats-Msg-Id')));
      } catch (error) {
        // A message whose shape the fold cannot take: redelivered, it would fail the same way for
        // ever and hold back every later event (and catch-up, which waits for the fold).
        this.logger.warn(`ignored ${message.subject} #${message.seq}: ${errorMessage(error)}`);
        return;
      }
      try {
        if (entry?.value.length) await kv.update(date, JSON.stringify(next), entry.revision);
        else await kv.create(date, JSON.stringify(next));
        return;
      } catch (error) {
        if (!/wrong last sequence|key exists/i.test(errorMessage(error))) throw error;
      }
    }
  }
}
