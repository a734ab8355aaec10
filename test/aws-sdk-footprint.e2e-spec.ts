import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

// The built library, as the apps load it.
const STORES = join(__dirname, '..', 'dist', 'node_modules', '@app', 'common', 'snapshot-store', 'index.js');

/** Runs `code` in a fresh node process with the built stores loaded as `stores`, and returns what it prints. */
function inFreshNode(code: string): string {
  const script = `const stores = require(${JSON.stringify(STORES)}); const awsLoaded = () => Object.keys(require.cache).some((path) => path.includes('@aws-sdk')); ${code}`;
  return execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }).trim();
}

describe('the AWS SDK (about 20 MB resident) is loaded only by a process that uses the s3 store', () => {
  it('is not loaded by loading the snapshot stores, nor by making an fs store', () => {
    expect(inFreshNode(`new stores.FsSnapshotStore('/tmp'); console.log(awsLoaded());`)).toBe('false');
  });

  it('is loaded when an s3 store is made, and the store works from there', () => {
    const printed = inFreshNode(`
      const before = awsLoaded();
      const store = new stores.S3SnapshotStore({ bucket: 'b', region: 'us-east-1' });
      console.log(JSON.stringify({ before, after: awsLoaded(), location: store.locationOf('20240101-abc') }));`);
    expect(JSON.parse(printed)).toEqual({ before: false, after: true, location: 's3://b/prod_snapshot_20240101-abc' });
  });
});
