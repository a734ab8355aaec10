import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SnapshotManifest } from '@app/common/contract';
import { AppFleet, type RunningApp } from './support/apps';
import { createDatabase, type TestDatabase } from './support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL, MASKING_SEED_SQL, ORIGINALS } from './support/masking-fixture';
import { EventCollector, natsNamespace, type NatsNamespace, plainPublish } from './support/nats';

const KEY = 'e2e masking key number one';
const OTHER_KEY = 'e2e masking key number two';
const TABLES = ['customers', 'orders', 'order_lines', 'shipments', 'audit_log'];

/** The joins a user of the environment relies on, counted the same way in production and after masking. */
const JOINS = {
  ordersToCustomers: 'SELECT count(*)::int AS n FROM public.orders o JOIN public.customers c ON c.email = o.customer_email',
  auditToCustomers: 'SELECT count(*)::int AS n FROM public.audit_log a JOIN public.customers c ON c.email = a.actor_email::citext',
  profileToCustomers: "SELECT count(*)::int AS n FROM public.customers c JOIN public.customers p ON p.email = (c.profile ->> 'email')::citext",
  ordersToAudit: 'SELECT count(*)::int AS n FROM public.orders o JOIN public.audit_log a ON o.customer_email = a.actor_email::citext',
  shipmentsToLines: 'SELECT count(*)::int AS n FROM public.shipments s JOIN public.order_lines l USING (order_id, line_no)',
  referrals: 'SELECT count(*)::int AS n FROM public.customers c JOIN public.customers r ON r.id = c.referred_by',
};

async function countJoins(db: TestDatabase): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const [name, sql] of Object.entries(JOINS)) counts[name] = (await db.query<{ n: number }>(sql))[0].n;
  return counts;
}

/** Every file of a snapshot directory, as text. */
function snapshotFiles(location: string): Record<string, string> {
  return Object.fromEntries(readdirSync(location).map((file) => [file, readFileSync(join(location, file), 'utf8')]));
}

/** The forms an original value could take in a CSV or JSON file: as is, lower-cased, CSV- and JSON-escaped. */
function leakedForms(value: string): string[] {
  const forms = new Set<string>();
  for (const v of [value, value.toLowerCase()]) {
    forms.add(v);
    forms.add(v.replaceAll('"', '""'));
    forms.add(JSON.stringify(v).slice(1, -1));
    forms.add(JSON.stringify(v).slice(1, -1).replaceAll('"', '""'));
  }
  return [...forms];
}

describe('masking, the strict gate and subsetting, end to end', () => {
  const fleet = new AppFleet();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-masking-'));
  const rulesFile = join(snapshotDir, '..', `${snapshotDir.split('/').pop()}-rules.yaml`);
  let namespace: NatsNamespace;
  let source: TestDatabase;
  let dev: TestDatabase;
  let events: EventCollector;
  let dumper: RunningApp;
  let loader: RunningApp;

  const env = () => ({ ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '10m', DUMP_RULES: rulesFile, DUMP_JOBS: '2' });
  const startDumper = async (key: string) => {
    dumper = await fleet.start('dumper', { ...env(), SOURCE_DATABASE_URL: source.url, MASKING_KEY: key }, `dumper-${key.slice(-3)}`);
  };
  const trigger = (date: string) => plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date }), undefined, namespace.url);
  const loadedSnapshot = async (date: string): Promise<{ location: string; manifest: SnapshotManifest }> => {
    await events.waitFor(`snapshot of ${date} ready and loaded`, (c) => {
      const ready = c.of('snapshot.ready').find((e) => e.date === date);
      return Boolean(ready && c.of('snapshot.loaded').some((e) => e.snapshotId === ready.snapshotId));
    }, 90_000);
    const ready = events.of('snapshot.ready').find((e) => e.date === date)!;
    const location = ready.location as string;
    return { location, manifest: JSON.parse(readFileSync(join(location, 'manifest.json'), 'utf8')) as SnapshotManifest };
  };
  const devRows = (sql: string) => dev.query(sql);

  beforeAll(async () => {
    namespace = natsNamespace('masking');
    source = await createDatabase('masking_prod', MASKING_SCHEMA_SQL + MASKING_SEED_SQL);
    dev = await createDatabase('masking_dev', MASKING_SCHEMA_SQL);
    events = await EventCollector.start(namespace);
    writeFileSync(rulesFile, MASKING_RULES_YAML);
    await startDumper(KEY);
    loader = await fleet.start('loader', { ...env(), TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev');
  });

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace?.cleanup().catch(() => undefined);
    await Promise.all([source, dev].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
    rmSync(rulesFile, { force: true });
  });

  let first: { location: string; manifest: SnapshotManifest };

  it('writes no original value of a masked column into any file, and the environment keeps every join and constraint', async () => {
    await trigger('2024-02-01');
    first = await loadedSnapshot('2024-02-01');
    const files = snapshotFiles(first.location);
    expect(Object.keys(files)).toHaveLength(TABLES.length + 1);
    for (const [column, values] of Object.entries(ORIGINALS)) {
      for (const value of values) {
        for (const form of leakedForms(value)) {
          for (const [file, text] of Object.entries(files)) expect({ column, form, file, found: text.includes(form) }).toEqual({ column, form, file, found: false });
        }
      }
    }
    // Nor in what the apps printed, nor the key itself anywhere.
    const logs = fleet.logs();
    for (const value of Object.values(ORIGINALS).flat()) expect(logs).not.toContain(value);
    for (const text of [logs, ...Object.values(files)]) expect(text).not.toContain(KEY);

    const { manifest } = first;
    expect(manifest.rules).toEqual({ digest: expect.stringMatching(/^[0-9a-f]{64}$/), keyId: expect.stringMatching(/^[0-9a-f]{8}$/), strict: true });
    expect(manifest.tables.find((t) => t.table === 'customers')!.masked).toEqual({
      email: 'email',
      full_name: 'name',
      phone: 'phone',
      ssn: 'redact',
      notes: 'null',
      api_token: 'hash',
      tier: 'constant',
      score: 'sql',
      profile: 'jsonb {email: email, address.street: redact}',
    });
    expect(manifest.tables.find((t) => t.table === 'shipments')!.masked).toBeUndefined();

    expect(await countJoins(dev)).toEqual(await countJoins(source));
    // The loader re-added every foreign key (validated) and rebuilt every unique index: all hold.
    const constraints = "SELECT conname::text, convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1";
    expect(await dev.query(constraints)).toEqual(await source.query(constraints));
    expect(await devRows("SELECT count(*)::int AS n FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND NOT convalidated")).toEqual([{ n: 0 }]);

    // NULL stays NULL (constant excepted); phones keep their format; the jsonb email is the column's masked email.
    const customers = await devRows('SELECT id, email::text, phone, ssn, notes, api_token, tier, score::text, profile FROM public.customers ORDER BY id');
    const production = await source.query('SELECT id, phone, ssn, api_token, score::text FROM public.customers ORDER BY id');
    customers.forEach((row, i) => {
      for (const column of ['phone', 'ssn', 'api_token']) expect(row[column] === null).toBe(production[i][column] === null);
      expect(row.notes).toBeNull();
      expect(row.tier).toBe('gold');
      if (production[i].phone) expect((row.phone as string).replace(/\d/g, '9')).toBe((production[i].phone as string).replace(/\d/g, '9'));
    });
    expect(customers.map((r) => r.score)).toEqual(['40', null, '10', null, '0']);
    expect((customers[0].profile as { email: string }).email).toBe(customers[0].email);
    expect((customers[2].profile as { email: null }).email).toBeNull();
  });

  it('gives identical masked values for two dumps with one key, and different ones for every value with another key', async () => {
    await trigger('2024-02-02');
    const second = await loadedSnapshot('2024-02-02');
    const digests = (m: SnapshotManifest) => Object.fromEntries(m.tables.map((t) => [t.table, t.sha256]));
    expect(digests(second.manifest)).toEqual(digests(first.manifest));
    const masked = 'SELECT id, email::text, full_name, phone, api_token, profile ->> \'email\' AS doc_email FROM public.customers ORDER BY id';
    const before = await devRows(masked);
    const audit = await devRows('SELECT actor_email FROM public.audit_log ORDER BY id');

    await dumper.stop();
    await startDumper(OTHER_KEY);
    await trigger('2024-02-03');
    const third = await loadedSnapshot('2024-02-03');
    expect(third.manifest.rules!.keyId).not.toBe(first.manifest.rules!.keyId);
    const after = await devRows(masked);
    before.forEach((row, i) => {
      for (const column of ['email', 'full_name', 'phone', 'api_token', 'doc_email']) {
        if (row[column] !== null) expect({ id: row.id, column, value: after[i][column] }).not.toEqual({ id: row.id, column, value: row[column] });
      }
    });
    (await devRows('SELECT actor_email FROM public.audit_log ORDER BY id')).forEach((row, i) => {
      if (row.actor_email !== null) expect(row.actor_email).not.toBe(audit[i].actor_email);
    });
    expect(await countJoins(dev)).toEqual(await countJoins(source));
  });

  it('strict mode refuses a new production column by name and publishes nothing', async () => {
    await source.query('ALTER TABLE public.customers ADD COLUMN nickname text; ALTER TABLE public.orders ADD COLUMN coupon text');
    const dirsBefore = readdirSync(snapshotDir).sort();
    await trigger('2024-02-04');
    await events.waitFor('the dump to fail', (c) => c.of('snapshot.failed').some((e) => e.date === '2024-02-04'), 60_000);
    const failure = events.of('snapshot.failed').find((e) => e.date === '2024-02-04')!;
    expect(failure.error).toContain('public.customers.nickname: no rule');
    expect(failure.error).toContain('public.orders.coupon: no rule');
    expect(failure.error).toContain(rulesFile);
    expect(failure.attempts).toBe(1);
    expect(events.of('snapshot.ready').some((e) => e.date === '2024-02-04')).toBe(false);
    expect(readdirSync(snapshotDir).sort()).toEqual(dirsBefore);
    await source.query('ALTER TABLE public.customers DROP COLUMN nickname; ALTER TABLE public.orders DROP COLUMN coupon');
  });

  it('loads a subset with every foreign key valid: the condition, what it references, and nothing that references what was left out', async () => {
    writeFileSync(rulesFile, `${MASKING_RULES_YAML}subset:\n  public.customers: "created_at >= date '2024-01-01'"\n`);
    await trigger('2024-02-05');
    const { manifest } = await loadedSnapshot('2024-02-05');
    const rowsOf = (table: string) => manifest.tables.find((t) => t.table === table)!;
    expect(TABLES.filter((t) => rowsOf(t).subset)).toEqual(['customers', 'orders', 'order_lines', 'shipments', 'audit_log']);

    // Alice and Bob match; Dave is kept because Alice references him; Zoë and Carol are left out.
    expect(await devRows('SELECT id FROM public.customers ORDER BY id')).toEqual([{ id: 1 }, { id: 2 }, { id: 5 }]);
    expect(await devRows('SELECT id FROM public.orders ORDER BY id')).toEqual([{ id: 10 }, { id: 11 }, { id: 12 }, { id: 15 }]);
    expect(await devRows('SELECT order_id, line_no FROM public.order_lines ORDER BY 1, 2')).toEqual([
      { order_id: 10, line_no: 1 },
      { order_id: 10, line_no: 2 },
      { order_id: 11, line_no: 1 },
      { order_id: 15, line_no: 1 },
    ]);
    expect(await devRows('SELECT id FROM public.shipments ORDER BY id')).toEqual([{ id: 100 }, { id: 103 }]);
    expect(await devRows('SELECT id FROM public.audit_log ORDER BY id')).toEqual([{ id: 1000 }, { id: 1001 }, { id: 1003 }, { id: 1004 }]);
    expect(rowsOf('customers').rows).toBe(3);
    expect(await devRows("SELECT count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND convalidated")).toEqual([{ n: 4 }]);
    // Every kept reference still joins after masking.
    expect(await devRows(JOINS.ordersToCustomers)).toEqual([{ n: 4 }]);
    expect(await devRows(JOINS.auditToCustomers)).toEqual([{ n: 3 }]);
    expect(loader.exitCode).toBeUndefined();
  });
});
