import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { SourceDatabase } from './source-database';

describe('SourceDatabase', () => {
  let db: TestDatabase;
  let source: SourceDatabase;

  beforeAll(async () => {
    db = await createDatabase('source_db_spec');
    // A production database whose own defaults would change what a dump reads.
    await db.query(`ALTER DATABASE "${db.name}" SET DateStyle = 'SQL, DMY'`);
    await db.query(`ALTER DATABASE "${db.name}" SET lock_timeout = 0`);
    source = new SourceDatabase(db.url, 2);
  });
  afterAll(async () => {
    await source?.end();
    await db?.drop();
  });

  it('hands out sessions named db-fanout-dumper with row_security off, a lock_timeout and pinned settings', async () => {
    const client = await source.connect();
    try {
      const { rows } = await client.query<Record<string, string>>(
        `SELECT current_setting('application_name') AS app, current_setting('row_security') AS rls,
                current_setting('lock_timeout') AS lt, current_setting('DateStyle') AS datestyle`,
      );
      expect(rows[0]).toEqual({ app: 'db-fanout-dumper', rls: 'off', lt: '1min', datestyle: 'ISO, MDY' });
    } finally {
      client.release();
    }
  });
});
