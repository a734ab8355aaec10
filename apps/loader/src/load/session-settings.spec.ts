import { Client } from 'pg';
import { startupOptions } from '@app/common/database';
import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { applyLoadSettings, ownSettingsForData } from './session-settings';

/** What a load's own transaction runs with, and that nothing of it outlives the transaction. */
describe('applyLoadSettings', () => {
  const databases: TestDatabase[] = [];
  afterAll(async () => {
    for (const db of databases) await db.drop();
  });

  async function settingsInAndAfterLoad(databaseSetting?: string, floorKb?: number): Promise<{ before: Record<string, string>; inLoad: Record<string, string>; after: Record<string, string> }> {
    const db = await createDatabase('load_settings');
    databases.push(db);
    if (databaseSetting) await db.query(`ALTER DATABASE "${db.name}" SET maintenance_work_mem = '${databaseSetting}'`);
    const client = new Client({ connectionString: db.url });
    await client.connect();
    const show = async () => {
      const { rows } = await client.query<{ name: string; setting: string }>(
        "SELECT name, current_setting(name) AS setting FROM unnest(ARRAY['maintenance_work_mem', 'max_parallel_maintenance_workers', 'lock_timeout']) AS name",
      );
      return Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    };
    try {
      const before = await show();
      await client.query('BEGIN');
      await applyLoadSettings(client, floorKb);
      const inLoad = await show();
      await client.query('ROLLBACK');
      return { before, inLoad, after: await show() };
    } finally {
      await client.end();
    }
  }

  it('gives the index builds 1 GB, serially, and a lock timeout, for the transaction only', async () => {
    const { before, inLoad, after } = await settingsInAndAfterLoad();
    expect(before.maintenance_work_mem).not.toBe('1GB');
    expect(inLoad).toEqual({ maintenance_work_mem: '1GB', max_parallel_maintenance_workers: '0', lock_timeout: '1min' });
    // The session's own settings again once the transaction is over.
    expect(after).toEqual(before);
  });

  it('keeps a larger maintenance_work_mem that the DBA set for the database', async () => {
    const { inLoad, after } = await settingsInAndAfterLoad('3GB');
    expect(inLoad.maintenance_work_mem).toBe('3GB');
    expect(after.maintenance_work_mem).toBe('3GB');
  });

  it('takes a lower floor from LOAD_MAINTENANCE_WORK_MEM, for a small environment server', async () => {
    const { before, inLoad, after } = await settingsInAndAfterLoad(undefined, 100 * 1024);
    expect(inLoad.maintenance_work_mem).toBe('100MB');
    expect(after).toEqual(before);
  });
});

describe('ownSettingsForData', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createDatabase('own_settings');
  });
  afterAll(() => db.drop());

  it("sets the environment's own values for the data, gives back the pinned ones, and leaves the session as it was after the transaction", async () => {
    const pinned = { DateStyle: 'ISO, MDY', IntervalStyle: 'postgres', TimeZone: 'UTC', extra_float_digits: '3' };
    const client = new Client({ connectionString: db.url, options: startupOptions(pinned) });
    await client.connect();
    const show = async () => {
      const { rows } = await client.query<{ name: string; setting: string }>(
        "SELECT name, current_setting(name) AS setting FROM unnest(ARRAY['DateStyle', 'IntervalStyle', 'TimeZone', 'extra_float_digits']) AS name",
      );
      return Object.fromEntries(rows.map((r) => [r.name, r.setting]));
    };
    try {
      await client.query('BEGIN');
      const own = { DateStyle: 'SQL, DMY', IntervalStyle: 'sql_standard', TimeZone: 'America/New_York', extra_float_digits: '0' };
      const pinnedAgain = await ownSettingsForData(client, own);
      expect(await show()).toEqual(own);
      await pinnedAgain();
      expect(await show()).toEqual(pinned);
      await ownSettingsForData(client, own);
      await client.query('COMMIT');
      // SET LOCAL: the pooled session keeps its pinned values for whatever borrows it next.
      expect(await show()).toEqual(pinned);
    } finally {
      await client.end();
    }
  });
});
