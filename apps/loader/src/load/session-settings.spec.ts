import { Client } from 'pg';
import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { applyLoadSettings } from './session-settings';

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
