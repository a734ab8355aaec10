import { loadDumperConfig } from '@app/common/config';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { DumperService } from './dumper.service';
import { SourceDatabase } from './source-database';

/** What a dump failure says in events: PostgreSQL's own errors, from a real server. */
describe('DumperService.describe', () => {
  let db: TestDatabase;
  let source: SourceDatabase;

  beforeAll(async () => {
    db = await createDatabase('dumper_describe', `CREATE TABLE public.cards (number text PRIMARY KEY); INSERT INTO public.cards VALUES ('4111 1111 1111 1111');`);
    source = new SourceDatabase(db.url);
  });
  afterAll(async () => {
    await source?.end();
    await db?.drop();
  });

  const service = (errorDetail: boolean) => {
    const config = loadDumperConfig({ SOURCE_DATABASE_URL: db.url, ERROR_DETAIL: String(errorDetail) });
    // describe() reads only the configuration; the broker and the database are not involved.
    return new DumperService(config, undefined as never, undefined as never, undefined as never, source);
  };

  const failing = async (sql: string): Promise<unknown> => {
    const client = await source.connect();
    try {
      await client.query(sql);
    } catch (error) {
      return error;
    } finally {
      client.release();
    }
    throw new Error(`${sql} did not fail`);
  };

  it('keeps row values out of the event unless ERROR_DETAIL=true, and gives the SQLSTATE', async () => {
    const duplicate = await failing(`INSERT INTO public.cards VALUES ('4111 1111 1111 1111')`);
    const badInput = await failing(`SELECT '4111 1111 1111 1111'::int`);
    for (const error of [duplicate, badInput]) expect(JSON.stringify(service(false).describe(error))).not.toContain('4111');
    expect(service(false).describe(duplicate)).toMatchObject({ code: '23505' });
    expect(service(false).describe(badInput)).toMatchObject({ code: '22P02' });
    expect(service(true).describe(duplicate).error).toContain('4111 1111 1111 1111');
  });
});
