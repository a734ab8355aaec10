import { dumpEventIds } from './dump-event-ids';

describe('dumpEventIds', () => {
  const trigger = { seq: 42, delivery: 1 };

  it('gives a retried publish of one attempt the same id', () => {
    expect(dumpEventIds.started('2024-01-05', trigger, 1)).toBe(dumpEventIds.started('2024-01-05', { seq: 42, delivery: 1 }, 1));
    expect(dumpEventIds.started('2024-01-05', trigger, 2)).toBe('dump-started:2024-01-05:42:1:2');
    expect(dumpEventIds.retrying('2024-01-05', trigger, 1)).toBe('dump-retrying:2024-01-05:42:1:1');
    expect(dumpEventIds.failed('2024-01-05', trigger)).toBe('dump-failed:2024-01-05:42');
  });

  it('gives every attempt, redelivery and re-run of a date an id of its own', () => {
    const ids = [
      dumpEventIds.started('2024-01-05', trigger, 1),
      dumpEventIds.started('2024-01-05', trigger, 2),
      dumpEventIds.started('2024-01-05', { seq: 42, delivery: 2 }, 1),
      dumpEventIds.started('2024-01-05', { seq: 43, delivery: 1 }, 1),
    ];
    expect(new Set(ids).size).toBe(ids.length);
    expect(dumpEventIds.failed('2024-01-05', { seq: 43, delivery: 1 })).not.toBe(dumpEventIds.failed('2024-01-05', trigger));
    // A trigger fails once, whichever delivery reports it.
    expect(dumpEventIds.failed('2024-01-05', { seq: 42, delivery: 3 })).toBe(dumpEventIds.failed('2024-01-05', trigger));
  });
});
