import { Logger } from '@nestjs/common';
import { createAppLogger, TextLogger } from './logging';
import { JsonLogger } from './json-logger';
import { withLogContext } from './log-context';

describe('createAppLogger', () => {
  const written: string[] = [];
  let restore: () => void;

  beforeEach(() => {
    written.length = 0;
    const capture = (chunk: string | Uint8Array): boolean => {
      written.push(String(chunk));
      return true;
    };
    const out = jest.spyOn(process.stdout, 'write').mockImplementation(capture);
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(capture);
    restore = () => {
      out.mockRestore();
      err.mockRestore();
    };
  });
  afterEach(() => {
    restore();
    Logger.overrideLogger(new TextLogger());
  });

  it('writes LOG_FORMAT=json as one JSON object per line with the unit of work\'s fields', () => {
    const logger = createAppLogger('loader', 'json');
    expect(logger).toBeInstanceOf(JsonLogger);
    Logger.overrideLogger(logger);
    withLogContext({ snapshotId: '20240105-aaaaaaaa', environment: 'dev', subject: 'snapshot.ready', seq: 3 }, () => new Logger('Loader').log('cannot reach postgres://loader:hunter2@dev/app'));
    const line = JSON.parse(written.join('')) as Record<string, unknown>;
    expect(Object.keys(line)).toEqual(['time', 'level', 'app', 'context', 'message', 'snapshotId', 'environment', 'subject', 'seq']);
    expect(line).toMatchObject({ level: 'log', app: 'loader', context: 'Loader', message: 'cannot reach postgres://loader:***@dev/app', seq: 3 });
  });

  it('writes readable text otherwise, with passwords masked in the message and the stack', () => {
    const logger = createAppLogger('dumper', 'text');
    expect(logger).toBeInstanceOf(TextLogger);
    Logger.overrideLogger(logger);
    const error = new Error('connect to postgres://reader:s3cret@prod/app failed');
    new Logger('Dumper').log('copying from postgres://reader:s3cret@prod/app');
    new Logger('Dumper').error('dump failed', error.stack);
    const text = written.join('').replace(/\x1b\[[0-9;]*m/g, ''); // without colours
    expect(text).toContain('[Dumper] copying from postgres://reader:***@prod/app');
    expect(text).toContain('connect to postgres://reader:***@prod/app failed');
    expect(text).not.toContain('s3cret');
    expect(() => JSON.parse(written[0]) as unknown).toThrow();
  });

  it('writes an error line that has no stack', () => {
    Logger.overrideLogger(createAppLogger('loader', 'text'));
    new Logger('Loader').error('loading failed: password=hunter2 rejected');
    expect(written.join('')).toContain('loading failed: password=*** rejected');
  });
});
