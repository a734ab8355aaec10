import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable as ReadableStream, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { S3SnapshotStore, type SnapshotSource } from '@app/common/snapshot-store';
import { OwnS3Server, S3_TEST_CREDENTIALS } from '../../../test/support/s3-server';
import { TcpProxy } from '../../../test/support/tcp-proxy';
import { isTransientError } from '@app/common/resilience';
import type { ManifestTable } from '@app/common/contract';
import { JetStreamApiError } from '@nats-io/jetstream';
import { InvalidMessageError, MANIFEST_FILE, type SnapshotManifest, type SnapshotReadyPayload } from '@app/common/contract';
import { checkFileSizes, directorySource, openTableData, parseCsvRecord, readCsvHeader, readManifest, resolveSnapshotDir, SnapshotFileError, SnapshotNotFoundError, waitForSnapshot } from './snapshot-files';

const SNAPSHOT_ID = '20240105-1a2b3c4d';

let root: string;
let snapshotDir: string;
let outside: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'spec-snapshot-files-'));
  snapshotDir = join(root, 'snapshots');
  outside = join(root, 'outside');
  mkdirSync(snapshotDir);
  mkdirSync(outside);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

/** A fresh directory under the test root (each test gets its own). */
function freshDir(name: string): string {
  const dir = mkdtempSync(join(root, `${name}-`));
  return dir;
}

interface FixtureTable {
  name: string;
  schema: string;
  table: string;
  file: string;
  columns: string[];
  content: string;
  rows: number;
}

const TABLES: FixtureTable[] = [
  {
    name: 'public.customers',
    schema: 'public',
    table: 'customers',
    file: '0001_public.customers.csv',
    columns: ['id', 'name'],
    content: 'id,name\n1,Ada\n2,Grace\n',
    rows: 2,
  },
  {
    name: '"Sales"."Order Items"',
    schema: 'Sales',
    table: 'Order Items',
    file: '0002_Sales.Order_Items.csv',
    columns: ['id', 'qty, total'],
    content: 'id,"qty, total"\n1,3\n',
    rows: 1,
  },
];

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Writes a consistent snapshot (files + manifest) into `dir`; returns the manifest and the matching message. */
function writeFixture(dir: string, edit?: (manifest: SnapshotManifest) => void): { manifest: SnapshotManifest; payload: SnapshotReadyPayload } {
  const manifest: SnapshotManifest = {
    formatVersion: 1,
    snapshotId: SNAPSHOT_ID,
    date: '2024-01-05',
    createdAt: '2024-01-05T00:00:01.000Z',
    tables: TABLES.map((t) => ({
      name: t.name,
      schema: t.schema,
      table: t.table,
      file: t.file,
      columns: t.columns,
      rows: t.rows,
      bytes: Buffer.byteLength(t.content),
      sha256: sha256(t.content),
    })),
    sequences: [{ table: 'public.customers', schema: 'public', tableName: 'customers', column: 'id', lastValue: '2', isCalled: true }],
  };
  for (const t of TABLES) writeFileSync(join(dir, t.file), t.content);
  const payload: SnapshotReadyPayload = {
    snapshotId: manifest.snapshotId,
    date: manifest.date,
    location: dir,
    createdAt: manifest.createdAt,
    tables: manifest.tables.map(({ name, file, rows, bytes, sha256: digest }) => ({ name, file, rows, bytes, sha256: digest })),
  };
  const written = structuredClone(manifest);
  edit?.(written);
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(written, null, 2));
  return { manifest, payload };
}

describe('resolveSnapshotDir', () => {
  it('accepts a prod_snapshot_* directory inside SNAPSHOT_DIR given as an absolute path', async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-aaaaaaaa');
    mkdirSync(dir);
    await expect(resolveSnapshotDir(snapshotDir, dir)).resolves.toBe(dir);
  });

  it('accepts a prod_snapshot_* directory inside SNAPSHOT_DIR given relative to it', async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-bbbbbbbb');
    mkdirSync(dir);
    await expect(resolveSnapshotDir(snapshotDir, 'prod_snapshot_20240105-bbbbbbbb')).resolves.toBe(dir);
  });

  it('returns the path of a missing prod_snapshot_* directory inside SNAPSHOT_DIR (the load reports it)', async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-cccccccc');
    await expect(resolveSnapshotDir(snapshotDir, dir)).resolves.toBe(dir);
  });

  it('rejects a location outside SNAPSHOT_DIR', async () => {
    await expect(resolveSnapshotDir(snapshotDir, '/etc')).rejects.toThrow(InvalidMessageError);
  });

  it("reads a location published by a dumper that mounts the volume elsewhere under this loader's SNAPSHOT_DIR", async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-dddddddd');
    mkdirSync(dir);
    await expect(resolveSnapshotDir(snapshotDir, '/mnt/dumper/snapshots/prod_snapshot_20240105-dddddddd')).resolves.toBe(dir);
    // Never the directory the path names outside SNAPSHOT_DIR: only its name is used.
    mkdirSync(join(outside, 'prod_snapshot_20240105-dddddddd'));
    await expect(resolveSnapshotDir(snapshotDir, join(outside, 'prod_snapshot_20240105-dddddddd'))).resolves.toBe(dir);
  });

  it('follows a SNAPSHOT_DIR that is itself a symbolic link to the volume', async () => {
    const mount = join(root, 'mounted-here');
    symlinkSync(snapshotDir, mount);
    const dir = join(snapshotDir, 'prod_snapshot_20240105-abababab');
    mkdirSync(dir);
    await expect(resolveSnapshotDir(mount, '/elsewhere/prod_snapshot_20240105-abababab')).resolves.toBe(dir);
  });

  it('rejects `..` escapes, relative and absolute', async () => {
    mkdirSync(join(outside, 'prod_snapshot_20240105-eeeeeeee'));
    await expect(resolveSnapshotDir(snapshotDir, '../outside/prod_snapshot_20240105-eeeeeeee')).rejects.toThrow(InvalidMessageError);
    await expect(resolveSnapshotDir(snapshotDir, `${snapshotDir}/../outside/prod_snapshot_20240105-eeeeeeee`)).rejects.toThrow(
      InvalidMessageError,
    );
    await expect(resolveSnapshotDir(snapshotDir, '..')).rejects.toThrow(InvalidMessageError);
  });

  it('rejects SNAPSHOT_DIR itself', async () => {
    await expect(resolveSnapshotDir(snapshotDir, snapshotDir)).rejects.toThrow(InvalidMessageError);
    await expect(resolveSnapshotDir(snapshotDir, '.')).rejects.toThrow(InvalidMessageError);
  });

  it('rejects a directory inside SNAPSHOT_DIR not named prod_snapshot_*', async () => {
    const dir = join(snapshotDir, 'other_20240105-ffffffff');
    mkdirSync(dir);
    await expect(resolveSnapshotDir(snapshotDir, dir)).rejects.toThrow(InvalidMessageError);
    await expect(resolveSnapshotDir(snapshotDir, 'other_20240105-ffffffff')).rejects.toThrow(InvalidMessageError);
  });

  it('rejects a symlink named prod_snapshot_x inside SNAPSHOT_DIR that points to /etc', async () => {
    const link = join(snapshotDir, 'prod_snapshot_x');
    symlinkSync('/etc', link);
    try {
      await expect(resolveSnapshotDir(snapshotDir, link)).rejects.toThrow(InvalidMessageError);
      await expect(resolveSnapshotDir(snapshotDir, 'prod_snapshot_x')).rejects.toThrow(InvalidMessageError);
    } finally {
      unlinkSync(link);
    }
  });
});

describe('waitForSnapshot', () => {
  const bound = { attempts: 4, delayMs: 300 };

  it('waits for a snapshot that becomes visible a moment after its message (a network filesystem)', async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-12121212');
    setTimeout(() => {
      mkdirSync(dir);
      writeFileSync(join(dir, MANIFEST_FILE), '{}');
    }, 400);
    const started = Date.now();
    await expect(waitForSnapshot(dir, undefined, bound)).resolves.toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
  });

  it('fails with snapshot-not-found after the bounded looks, naming the directory and SNAPSHOT_DIR', async () => {
    const dir = join(snapshotDir, 'prod_snapshot_20240105-34343434');
    const started = Date.now();
    const error = await waitForSnapshot(dir, undefined, bound).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotNotFoundError);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect(error).toMatchObject({ code: 'snapshot-not-found' });
    expect((error as Error).message).toBe(
      `snapshot directory prod_snapshot_20240105-34343434 not found in SNAPSHOT_DIR (${snapshotDir}) after 4 looks over 1 s (ENOENT); is the snapshot volume mounted there?`,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });
});

describe('readManifest', () => {
  it('returns the manifest when it matches the message', async () => {
    const dir = freshDir('ok');
    const { manifest, payload } = writeFixture(dir);
    await expect(readManifest(dir, payload)).resolves.toEqual(manifest);
  });

  it('fails when manifest.json does not exist, saying so', async () => {
    const dir = freshDir('missing');
    const { payload } = writeFixture(dir);
    unlinkSync(join(dir, MANIFEST_FILE));
    const error = await readManifest(dir, payload).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain(join(dir, MANIFEST_FILE));
    expect((error as Error).message).toMatch(/does not exist/);
  });

  it('passes a store that is failing over on as it is (retried), not as a bad snapshot', async () => {
    const { payload } = writeFixture(freshDir('failover'));
    const failing = (error: Error) => ({
      label: 'nats://bucket/prod_snapshot_20240105-1a2b3c4d',
      manifest: () => Promise.reject(error),
      storedSize: () => Promise.resolve(undefined),
      open: () => Promise.reject(error),
    });
    const unavailable = new JetStreamApiError({ code: 503, err_code: 10008, description: 'JetStream system temporarily unavailable' });
    await expect(readManifest(failing(unavailable), payload)).rejects.toBe(unavailable);
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    await expect(readManifest(failing(reset), payload)).rejects.toBe(reset);
    // Anything else is still the snapshot's problem, named with its path.
    await expect(readManifest(failing(new Error('bad bucket')), payload)).rejects.toThrow(
      new SnapshotFileError('cannot read nats://bucket/prod_snapshot_20240105-1a2b3c4d/manifest.json: bad bucket'),
    );
  });

  it('fails when the whole snapshot directory is missing', async () => {
    const dir = join(root, 'prod_snapshot_20240105-00000000');
    const { payload } = writeFixture(freshDir('elsewhere'));
    await expect(readManifest(dir, payload)).rejects.toThrow(SnapshotFileError);
    await expect(readManifest(dir, payload)).rejects.toThrow(/does not exist/);
  });

  it('fails when manifest.json is not JSON', async () => {
    const dir = freshDir('notjson');
    const { payload } = writeFixture(dir);
    writeFileSync(join(dir, MANIFEST_FILE), '{"formatVersion": 1, "snapshotId": ');
    await expect(readManifest(dir, payload)).rejects.toThrow(SnapshotFileError);
    await expect(readManifest(dir, payload)).rejects.toThrow(/not valid JSON/);
  });

  it('fails when manifest.json describes another snapshot', async () => {
    const dir = freshDir('otherid');
    const { payload } = writeFixture(dir, (m) => {
      m.snapshotId = '20240105-99999999';
    });
    await expect(readManifest(dir, payload)).rejects.toThrow(SnapshotFileError);
    await expect(readManifest(dir, payload)).rejects.toThrow(SNAPSHOT_ID);
  });

  it('fails when the manifest lists another number of tables than the message', async () => {
    const dir = freshDir('count');
    const { payload } = writeFixture(dir, (m) => {
      m.tables.pop();
    });
    await expect(readManifest(dir, payload)).rejects.toThrow(SnapshotFileError);
  });

  const disagreements: [string, (m: SnapshotManifest) => void][] = [
    ['name', (m) => (m.tables[1].name = 'Sales.order_items')],
    ['file', (m) => (m.tables[1].file = '0002_other.csv')],
    ['sha256', (m) => (m.tables[1].sha256 = '0'.repeat(64))],
    ['bytes', (m) => (m.tables[1].bytes += 1)],
    ['rows', (m) => (m.tables[1].rows += 1)],
    // The table a file is loaded into is its schema and table: a manifest naming another one would
    // truncate and fill that table with these rows, digests and counts all matching.
    ['schema', (m) => (m.tables[1].schema = 'public')],
    ['table', (m) => (m.tables[1].table = 'customers')],
  ];
  it.each(disagreements)('fails naming the table when the manifest disagrees with the message on %s', async (_field, edit) => {
    const dir = freshDir('disagree');
    const { payload } = writeFixture(dir, edit);
    const error = await readManifest(dir, payload).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain('does not match the message for table "Sales"."Order Items"');
  });
});

describe('checkFileSizes', () => {
  it('passes when every file exists with its announced size', async () => {
    const dir = freshDir('sizes-ok');
    const { manifest } = writeFixture(dir);
    await expect(checkFileSizes(dir, manifest)).resolves.toBeUndefined();
  });

  it('fails naming a missing file', async () => {
    const dir = freshDir('sizes-missing');
    const { manifest } = writeFixture(dir);
    unlinkSync(join(dir, TABLES[1].file));
    const error = await checkFileSizes(dir, manifest).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain(TABLES[1].file);
    expect((error as Error).message).toMatch(/missing/);
  });

  it('fails when a directory stands where a file should be', async () => {
    const dir = freshDir('sizes-dir');
    const { manifest } = writeFixture(dir);
    unlinkSync(join(dir, TABLES[0].file));
    mkdirSync(join(dir, TABLES[0].file));
    await expect(checkFileSizes(dir, manifest)).rejects.toThrow(TABLES[0].file);
  });

  it('fails naming a file of the wrong size, with both sizes', async () => {
    const dir = freshDir('sizes-wrong');
    const { manifest } = writeFixture(dir);
    const grown = `${TABLES[0].content}3,Edsger\n`;
    writeFileSync(join(dir, TABLES[0].file), grown);
    const error = await checkFileSizes(dir, manifest).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain(TABLES[0].file);
    expect((error as Error).message).toContain(`is ${Buffer.byteLength(grown)} bytes`);
    expect((error as Error).message).toContain(`says ${Buffer.byteLength(TABLES[0].content)}`);
  });
});

describe('directorySource and symbolic links', () => {
  /** Moves `file` of `dir` into the directory outside SNAPSHOT_DIR and links it back: same bytes, same size. */
  function linkOut(dir: string, file: string): string {
    const away = join(mkdtempSync(join(outside, 'linked-')), 'data.csv');
    renameSync(join(dir, file), away);
    symlinkSync(away, join(dir, file));
    return away;
  }

  it('refuses a table file that is a symbolic link out of the snapshot directory, naming the file and not its content', async () => {
    const dir = freshDir('link-table');
    const { manifest } = writeFixture(dir);
    linkOut(dir, TABLES[0].file);
    const source = directorySource(dir);

    const sizes = await checkFileSizes(dir, manifest).catch((e: unknown) => e);
    expect(sizes).toBeInstanceOf(SnapshotFileError);
    expect((sizes as Error).message).toContain(TABLES[0].file);
    expect((sizes as Error).message).toContain('outside the snapshot directory');
    const opened = await source.open(TABLES[0].file).then((stream) => (stream.destroy(), 'opened'), (e: unknown) => e);
    expect(opened).toBeInstanceOf(SnapshotFileError);
    expect((opened as Error).message).toContain(TABLES[0].file);
    expect((opened as Error).message).not.toContain('Ada');
    // The other file is read as before.
    expect(await readCsvHeader(await source.open(TABLES[1].file), TABLES[1].file)).toEqual(TABLES[1].columns);
  });

  it('refuses a manifest.json that is a symbolic link out of the snapshot directory', async () => {
    const dir = freshDir('link-manifest');
    const { payload } = writeFixture(dir);
    linkOut(dir, MANIFEST_FILE);
    const error = await readManifest(dir, payload).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain(MANIFEST_FILE);
    expect((error as Error).message).toContain('outside the snapshot directory');
  });

  it('refuses a link to a file of another snapshot directory', async () => {
    const other = freshDir('link-other');
    writeFixture(other);
    const dir = freshDir('link-sibling');
    const { manifest } = writeFixture(dir);
    unlinkSync(join(dir, TABLES[0].file));
    symlinkSync(join(other, TABLES[0].file), join(dir, TABLES[0].file));
    await expect(checkFileSizes(dir, manifest)).rejects.toThrow(SnapshotFileError);
    const opened = await directorySource(dir)
      .open(TABLES[0].file)
      .then((stream) => (stream.destroy(), 'opened'), (e: unknown) => e);
    expect((opened as Error).message).toMatch(/outside the snapshot directory/);
  });

  it('reads a snapshot directory reached through a symbolic link, and a link that stays inside the snapshot directory', async () => {
    const dir = freshDir('link-inside');
    const { manifest, payload } = writeFixture(dir);
    renameSync(join(dir, TABLES[0].file), join(dir, 'kept.csv'));
    symlinkSync('kept.csv', join(dir, TABLES[0].file));
    const through = join(root, `through-${Date.now()}`);
    symlinkSync(dir, through);
    await expect(readManifest(through, payload)).resolves.toEqual(manifest);
    await expect(checkFileSizes(through, manifest)).resolves.toBeUndefined();
    const chunks: Buffer[] = [];
    for await (const chunk of await directorySource(through).open(TABLES[0].file)) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe(readFileSync(join(dir, 'kept.csv'), 'utf8'));
  });

  it('refuses a FIFO standing where a table file should be, without waiting for a writer', async () => {
    const dir = freshDir('fifo');
    writeFixture(dir);
    unlinkSync(join(dir, TABLES[0].file));
    execFileSync('mkfifo', [join(dir, TABLES[0].file)]);
    // Opened for reading, a FIFO waits for a writer for ever (a thread of the pool with it).
    const opened = await directorySource(dir)
      .open(TABLES[0].file)
      .then((stream) => (stream.destroy(), 'opened'), (e: unknown) => e);
    expect(opened).toBeInstanceOf(SnapshotFileError);
    expect((opened as Error).message).toBe(`snapshot file ${TABLES[0].file} in ${dir} is not a regular file`);
  });
});

describe('parseCsvRecord', () => {
  it('splits plain names', () => {
    expect(parseCsvRecord('id,name,created_at\n1,2,3\n')).toEqual(['id', 'name', 'created_at']);
  });

  it('keeps commas inside quoted names', () => {
    expect(parseCsvRecord('id,"qty, total","a,b,c"\n')).toEqual(['id', 'qty, total', 'a,b,c']);
  });

  it('unescapes doubled quotes', () => {
    expect(parseCsvRecord('"say ""hi""","""",x\n')).toEqual(['say "hi"', '"', 'x']);
  });

  it('keeps newlines (LF and CRLF) inside quotes', () => {
    expect(parseCsvRecord('"line\none","two\r\nlines",z\nnext\n')).toEqual(['line\none', 'two\r\nlines', 'z']);
  });

  it('ends a record at CRLF', () => {
    expect(parseCsvRecord('a,"b c"\r\n1,2\r\n')).toEqual(['a', 'b c']);
  });

  it('keeps an empty quoted name and empty fields', () => {
    expect(parseCsvRecord('"",a,\n')).toEqual(['', 'a', '']);
  });

  it('returns undefined while the record has not ended', () => {
    expect(parseCsvRecord('a,b')).toBeUndefined();
    expect(parseCsvRecord('a,"b\nc')).toBeUndefined();
    expect(parseCsvRecord('a,"b""')).toBeUndefined();
    expect(parseCsvRecord('')).toBeUndefined();
  });
});

describe('readCsvHeader', () => {
  it('reads quoted names with commas, quotes and newlines, stopping at the first record', async () => {
    const dir = freshDir('header');
    const path = join(dir, 'h.csv');
    writeFileSync(path, 'id,"a, b","say ""hi""","multi\nline"\n1,2,3,4\n');
    await expect(readCsvHeader(path)).resolves.toEqual(['id', 'a, b', 'say "hi"', 'multi\nline']);
  });

  it('reads a CRLF header', async () => {
    const dir = freshDir('header-crlf');
    const path = join(dir, 'h.csv');
    writeFileSync(path, 'id,"name, full"\r\n1,x\r\n');
    await expect(readCsvHeader(path)).resolves.toEqual(['id', 'name, full']);
  });

  it('reads a header without a trailing newline', async () => {
    const dir = freshDir('header-eof');
    const path = join(dir, 'h.csv');
    writeFileSync(path, 'id,"x ""y"""');
    await expect(readCsvHeader(path)).resolves.toEqual(['id', 'x "y"']);
  });

  it('reads a header spanning several read chunks, with quotes and multibyte characters across the boundaries', async () => {
    const dir = freshDir('header-long');
    const path = join(dir, 'h.csv');
    // ~300 KiB of header: several 64 KiB read chunks; quoted names with commas, quotes, newlines and é.
    const names = Array.from({ length: 3000 }, (_, i) => `col ${i}, "quoted" é\nline ${'x'.repeat(60)}`);
    const header = names.map((n) => `"${n.replaceAll('"', '""')}"`).join(',');
    expect(Buffer.byteLength(header)).toBeGreaterThan(4 * 65536);
    writeFileSync(path, `${header}\n1,2,3\n`);
    const parsed = await readCsvHeader(path);
    expect(parsed).toHaveLength(names.length);
    expect(parsed).toEqual(names);
  });

  it('fails on an empty file', async () => {
    const dir = freshDir('header-empty');
    const path = join(dir, 'h.csv');
    writeFileSync(path, '');
    await expect(readCsvHeader(path)).rejects.toThrow(SnapshotFileError);
    await expect(readCsvHeader(path)).rejects.toThrow(path);
  });
});

describe('resolveSnapshotDir with a symlinked or relative SNAPSHOT_DIR', () => {
  const base = mkdtempSync(join(tmpdir(), 'spec-files-link-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('accepts the location the dumper published under a SNAPSHOT_DIR that is a symlink', async () => {
    mkdirSync(join(base, 'real', 'prod_snapshot_20240105-aaaaaaaa'), { recursive: true });
    symlinkSync(join(base, 'real'), join(base, 'link'));
    await expect(resolveSnapshotDir(join(base, 'link'), join(base, 'link', 'prod_snapshot_20240105-aaaaaaaa'))).resolves.toBe(
      join(base, 'real', 'prod_snapshot_20240105-aaaaaaaa'),
    );
  });

  it('resolves a relative location against a relative SNAPSHOT_DIR only once', async () => {
    mkdirSync(join(base, 'rel', 'prod_snapshot_20240105-bbbbbbbb'), { recursive: true });
    const cwd = process.cwd();
    process.chdir(base);
    try {
      await expect(resolveSnapshotDir('rel', join(base, 'rel', 'prod_snapshot_20240105-bbbbbbbb'))).resolves.toBe(
        join(base, 'rel', 'prod_snapshot_20240105-bbbbbbbb'),
      );
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('openTableData', () => {
  // 8 MB of CSV: the header check reads one line and stops long before the end.
  const csv = 'id,name\n' + Array.from({ length: 400_000 }, (_, i) => `${i},name-${i}`).join('\n') + '\n';
  const cases = [
    { what: 'gzip', compression: 'gzip' as const, stallMs: undefined },
    { what: 'uncompressed, watched for stalls (an object store)', compression: 'none' as const, stallMs: 60_000 },
    { what: 'gzip, watched for stalls (an object store)', compression: 'gzip' as const, stallMs: 60_000 },
  ];

  it.each(cases)('closes the download under it when the reader stops early ($what)', async ({ compression, stallMs }) => {
    const dir = freshDir('open-table');
    const file = compression === 'gzip' ? '0001_items.csv.gz' : '0001_items.csv';
    writeFileSync(join(dir, file), compression === 'gzip' ? gzipSync(csv) : csv);
    const files = directorySource(dir);
    let download: ReadableStream | undefined;
    const source = { ...files, open: async (name: string) => (download = await files.open(name)) };
    const table = { file, name: 'public.items' } as ManifestTable;

    const data = await openTableData(source, { compression } as SnapshotManifest, table, stallMs);
    expect(await readCsvHeader(data, file)).toEqual(['id', 'name']);
    // Left open, an S3 download keeps one of the SDK's sockets and an fs one its file, for good.
    await new Promise<void>((resolve, reject) => {
      if (download!.destroyed) return resolve();
      const timer = setTimeout(() => reject(new Error(`the download of ${file} is still open`)), 2_000);
      download!.once('close', () => resolve(clearTimeout(timer)));
    });
    expect(download!.destroyed).toBe(true);
  });

  it('watches the store for stalls, not the consumer: a COPY holding back (backpressure) is no stall, a silent store is', async () => {
    const table = { file: '0001_items.csv', name: 'public.items' } as ManifestTable;
    const chunk = Buffer.alloc(64 * 1024, 'x');
    // A store that answers at once for as long as it is read.
    const endless = () => new ReadableStream({ read() { this.push(chunk); } });
    const fromStore = (stream: ReadableStream) => ({ open: () => Promise.resolve(stream) }) as unknown as SnapshotSource;
    const manifest = { compression: 'none' } as unknown as SnapshotManifest;

    // Piped into a consumer that takes 600 ms over its first chunk (a COPY whose trigger waits on a lock).
    const held = await openTableData(fromStore(endless()), manifest, table, 200);
    const errors: unknown[] = [];
    held.on('error', (error) => errors.push(error));
    let written = 0;
    const slowCopy = new Writable({
      highWaterMark: 1,
      write(_chunk, _encoding, callback) {
        written++;
        setTimeout(callback, written === 1 ? 600 : 0);
      },
    });
    held.pipe(slowCopy);
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(errors).toEqual([]);
    expect(written).toBeGreaterThan(1);
    held.unpipe(slowCopy);
    held.destroy();

    // A store that sends nothing while the consumer waits for data: a stall, read by pipe or by iterating (the header check).
    const silent = await openTableData(fromStore(new ReadableStream({ read() {} })), manifest, table, 200);
    const stalled = new Promise<unknown>((resolve) => silent.once('error', resolve));
    silent.resume();
    await expect(stalled).resolves.toMatchObject({ code: 'ETIMEDOUT', message: 'reading 0001_items.csv from the snapshot store stalled for 0.2 s' });
    const silentHeader = await openTableData(fromStore(new ReadableStream({ read() {} })), manifest, table, 200);
    await expect(readCsvHeader(silentHeader, table.file)).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('fails, transient, when S3 stops answering: opening a table within the stall bound, any request within the request timeout', async () => {
    const server = await new OwnS3Server().start();
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    const direct = new S3SnapshotStore({ bucket: 'hung', endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true });
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: Number(new URL(server.endpoint).port) });
    const hung = new S3SnapshotStore({ bucket: 'hung', endpoint: `http://127.0.0.1:${proxy.port}`, region: 'us-east-1', forcePathStyle: true, requestTimeoutMs: 1_500 });
    try {
      await server.createBucket('hung');
      const upload = await direct.begin(SNAPSHOT_ID);
      const table = { file: '0001_items.csv', name: 'public.items' } as ManifestTable;
      await upload.put(table.file, ReadableStream.from([csv]));
      await upload.commit(Buffer.from(`{"snapshotId":"${SNAPSHOT_ID}"}`));
      const source = await hung.open(hung.locationOf(SNAPSHOT_ID));

      // The server keeps every connection and answers nothing (a hung proxy, a dropped route).
      proxy.freeze();
      // Bounded here, so that a request that waits for ever fails this test instead of hanging it.
      const failureOf = async (work: Promise<unknown>) => {
        const started = Date.now();
        let timer: NodeJS.Timeout | undefined;
        const waited = new Promise((resolve) => (timer = setTimeout(() => resolve('still waiting after 25 s'), 25_000)));
        const error = await Promise.race([work.then(() => 'succeeded', (e: unknown) => e), waited]);
        clearTimeout(timer);
        return { error, seconds: (Date.now() - started) / 1000 };
      };
      const opening = await failureOf(openTableData(source, { compression: 'none' } as unknown as SnapshotManifest, table, 1_000));
      expect(opening.error).toMatchObject({ code: 'ETIMEDOUT', message: 'opening 0001_items.csv in the snapshot store took over 1 s' });
      expect(opening.seconds).toBeLessThan(5);
      // Every request of the store gives up on its own (the SDK tries 3 times): a manifest lookup, an upload.
      const lookup = await failureOf(hung.open(hung.locationOf(SNAPSHOT_ID)));
      expect(isTransientError(lookup.error)).toBe(true);
      expect(lookup.seconds).toBeLessThan(20);
      const put = await failureOf((await hung.begin('20240302-00000000')).put('0001_items.csv', ReadableStream.from([csv])));
      expect(isTransientError(put.error)).toBe(true);
      expect(put.seconds).toBeLessThan(20);
    } finally {
      // Dropping the connections ends whatever still waits on them.
      proxy.thaw();
      await proxy.down();
      direct.destroy();
      hung.destroy();
      await server.stop();
    }
  }, 120_000);

  it('reads the headers of 60 gzip tables from S3 load after load (the SDK keeps 50 sockets)', async () => {
    const server = await new OwnS3Server().start();
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    const store = new S3SnapshotStore({ bucket: 'headers', endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true });
    try {
      await server.createBucket('headers');
      const upload = await store.begin(SNAPSHOT_ID);
      const tables: ManifestTable[] = [];
      for (let i = 0; i < 60; i++) {
        const table = { file: `${String(i + 1).padStart(4, '0')}_t${i}.csv.gz`, name: `public.t${i}` } as ManifestTable;
        await upload.put(table.file, ReadableStream.from([gzipSync(csv)]));
        tables.push(table);
      }
      await upload.commit(Buffer.from(`{"snapshotId":"${SNAPSHOT_ID}"}`));
      const source = await store.open(store.locationOf(SNAPSHOT_ID));
      // Every download left open held a socket: the first load's 51st header waited for one for ever.
      for (let load = 0; load < 3; load++) {
        const headers = await Promise.all(tables.map(async (table) => readCsvHeader(await openTableData(source, { compression: 'gzip' } as SnapshotManifest, table, 60_000), table.file)));
        expect(headers).toEqual(tables.map(() => ['id', 'name']));
      }
    } finally {
      store.destroy();
      await server.stop();
    }
  }, 60_000);
});
