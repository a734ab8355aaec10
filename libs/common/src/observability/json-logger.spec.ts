import { JsonLogger } from './json-logger';
import { withLogContext } from './log-context';

describe('JsonLogger', () => {
  const capture = () => {
    const lines: string[] = [];
    return { logger: new JsonLogger('loader', (line) => lines.push(line)), lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
  };

  it('writes one JSON object per line with the Nest context and the unit of work\'s fields', async () => {
    const { logger, lines } = capture();
    await withLogContext({ snapshotId: '20240105-aaaaaaaa', environment: 'dev' }, async () => {
      await Promise.resolve();
      logger.log('copying 4 tables', 'Loader');
    });
    logger.warn('outside any work', 'Health');
    expect(lines()).toEqual([
      expect.objectContaining({ level: 'log', app: 'loader', context: 'Loader', message: 'copying 4 tables', snapshotId: '20240105-aaaaaaaa', environment: 'dev' }),
      expect.objectContaining({ level: 'warn', context: 'Health', message: 'outside any work' }),
    ]);
    expect(lines()[1]).not.toHaveProperty('snapshotId');
  });

  it('masks secrets and keeps an error\'s stack apart', () => {
    const { logger, lines } = capture();
    logger.error('cannot reach postgres://loader:hunter2@dev-db/app', 'Error: boom\n    at somewhere (x.js:1:1)', 'Loader');
    const [line] = lines();
    expect(line).toMatchObject({ level: 'error', context: 'Loader', message: 'cannot reach postgres://loader:***@dev-db/app' });
    expect(String(line.stack)).toContain('at somewhere');
    expect(JSON.stringify(line)).not.toContain('hunter2');
  });

  it('nests contexts: inner fields add to the outer ones', () => {
    const { logger, lines } = capture();
    withLogContext({ subject: 'snapshot.ready', seq: 7 }, () => withLogContext({ environment: 'qa' }, () => logger.log('x', 'Loader')));
    expect(lines()[0]).toMatchObject({ subject: 'snapshot.ready', seq: 7, environment: 'qa' });
  });
});
