import { applyEvent, dateOfSnapshot, newRun, type RunRecord, runDateOf } from './run-record';

const fold = (events: [string, Record<string, unknown>][]): RunRecord =>
  events.reduce((run, [subject, body], i) => applyEvent(run, subject, body, `2024-01-05T00:00:0${i}.000Z`), newRun('2024-01-05'));

describe('run ledger fold', () => {
  it('follows a run through a dump and a load to success', () => {
    const run = fold([
      ['replication.trigger', { date: '2024-01-05' }],
      ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T00:00:01.000Z' }],
      ['snapshot.ready', { snapshotId: '20240105-aaaaaaaa', date: '2024-01-05', tables: [{ rows: 3, bytes: 30 }, { rows: 2, bytes: 20 }] }],
      ['snapshot.load.started', { snapshotId: '20240105-aaaaaaaa', environment: 'dev', attempt: 1 }],
      ['snapshot.loaded', { snapshotId: '20240105-aaaaaaaa', environment: 'dev', rows: 5, attempts: 1 }],
    ]);
    expect(run.triggeredAt).toBe('2024-01-05T00:00:00.000Z');
    expect(run.dump).toMatchObject({ state: 'success', attempts: 1, rows: 5, bytes: 50, snapshotId: '20240105-aaaaaaaa', startedAt: '2024-01-05T00:00:01.000Z' });
    expect(run.loads.dev).toMatchObject({ state: 'success', attempts: 1, rows: 5 });
  });

  it('shows a retry as up_for_retry, then running with the next attempt, then success', () => {
    const events: [string, Record<string, unknown>][] = [
      ['snapshot.load.started', { snapshotId: '20240105-aaaaaaaa', environment: 'qa', attempt: 1 }],
      ['snapshot.load.retrying', { snapshotId: '20240105-aaaaaaaa', environment: 'qa', attempt: 1, error: 'connect ECONNREFUSED' }],
    ];
    expect(fold(events).loads.qa).toMatchObject({ state: 'up_for_retry', attempts: 1, error: 'connect ECONNREFUSED' });
    events.push(['snapshot.load.started', { snapshotId: '20240105-aaaaaaaa', environment: 'qa', attempt: 2 }]);
    expect(fold(events).loads.qa).toMatchObject({ state: 'running', attempts: 2 });
    expect(fold(events).loads.qa.error).toBeUndefined();
    events.push(['snapshot.loaded', { snapshotId: '20240105-aaaaaaaa', environment: 'qa', rows: 5, attempts: 2 }]);
    expect(fold(events).loads.qa).toMatchObject({ state: 'success', attempts: 2 });
  });

  it('records failures with their error and attempts, for the dump and for a load', () => {
    const run = fold([
      ['snapshot.load.failed', { snapshotId: '20240105-aaaaaaaa', environment: 'staging', error: 'column x missing', attempts: 1 }],
      ['snapshot.dump.retrying', { date: '2024-01-05', attempt: 2, error: 'terminated' }],
      ['snapshot.failed', { date: '2024-01-05', error: 'terminated', attempts: 3 }],
    ]);
    expect(run.loads.staging).toMatchObject({ state: 'failed', attempts: 1, error: 'column x missing' });
    expect(run.dump).toMatchObject({ state: 'failed', attempts: 3, error: 'terminated' });
  });

  it('ignores a late, redelivered start of an earlier attempt', () => {
    const run = fold([
      ['snapshot.load.started', { snapshotId: '20240105-aaaaaaaa', environment: 'dev', attempt: 2 }],
      ['snapshot.load.started', { snapshotId: '20240105-aaaaaaaa', environment: 'dev', attempt: 1 }],
    ]);
    expect(run.loads.dev.attempts).toBe(2);
  });

  it('finds the run of an event: its date, or the date in its snapshot id', () => {
    expect(dateOfSnapshot('20240105-aaaaaaaa')).toBe('2024-01-05');
    expect(runDateOf('snapshot.loaded', { snapshotId: '20231231-bbbbbbbb' })).toBe('2023-12-31');
    expect(runDateOf('snapshot.failed', { date: '2024-02-01' })).toBe('2024-02-01');
    expect(runDateOf('replication.trigger', {})).toBeUndefined();
  });
});
