import type { RunRecord } from '@app/common/contract';
import { formatRunsTable } from './runs-table';

describe('the runs table (db-fanout status, runs)', () => {
  const run: RunRecord = {
    date: '2024-06-01',
    dump: { state: 'success', attempts: 1, startedAt: '2024-06-01T00:00:00.000Z', endedAt: '2024-06-01T00:00:01.500Z' },
    loads: {
      dev: { state: 'success', attempts: 2, startedAt: '2024-06-01T00:00:02.000Z', endedAt: '2024-06-01T00:00:02.400Z' },
      qa: {
        state: 'success',
        attempts: 1,
        startedAt: '2024-06-01T00:00:02.000Z',
        endedAt: '2024-06-01T00:00:03.000Z',
        drift: { skippedTables: ['public.audit'], leftOutColumns: ['public.products."attrs"', 'public.products."note"'], defaultedColumns: [] },
      },
    },
  };

  it('shows each step with its state, time and tries, and how much a load under schema drift left out', () => {
    expect(formatRunsTable([run]).split('\n')).toEqual([
      'date        dump          dev                     qa',
      '2024-06-01  success 1.5s  success 0.4s (2 tries)  success 1.0s, drift: 1 table skipped, 2 columns left out',
    ]);
    expect(formatRunsTable([])).toBe('no runs yet');
    // A sequence of production's that the load left unset is counted too.
    const unset: RunRecord = { ...run, loads: { qa: { ...run.loads.qa, drift: { skippedTables: ['public.audit'], leftOutColumns: [], defaultedColumns: [], unsetSequences: ['public.audit_id_seq'] } } } };
    expect(formatRunsTable([unset]).split('\n')[1]).toBe('2024-06-01  success 1.5s  success 1.0s, drift: 1 table skipped, 1 sequence left unset');
  });

  it('marks a load that a `db-fanout reload` asked for, and a message that came again after its worker died', () => {
    const marked: RunRecord = {
      ...run,
      loads: {
        dev: { state: 'success', attempts: 1, startedAt: '2024-06-01T00:00:02.000Z', endedAt: '2024-06-01T00:00:02.400Z', reloadSequence: 57 },
        qa: { state: 'running', attempts: 3, delivery: 2, triesBefore: 2 },
        staging: { state: 'failed', attempts: 2, delivery: 2, triesBefore: 1, reloadSequence: 58 },
      },
    };
    expect(formatRunsTable([marked]).split('\n')[1]).toBe('2024-06-01  success 1.5s  success 0.4s (reload #57)  running (3 tries, delivery 2)  failed (2 tries, delivery 2, reload #58)');
  });

  it('shows control characters of a stored name as ?, so a forged environment cannot drive the terminal', () => {
    const forged: RunRecord = { ...run, loads: { '\u001b[2J\u001b]0;owned\u0007': { state: 'running', attempts: 1 } } };
    const text = formatRunsTable([forged]);
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(text.split('\n')[0]).toBe('date        dump          ?[2J?]0;owned?');
  });
});
