import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL } from '../../../../test/support/masking-fixture';
import { rulesMain } from './rules-command';

/** `rules check` in this process, with DUMP_RULES and MASKING_KEY set as given (restored after). */
async function check(source: string, env: { DUMP_RULES?: string; MASKING_KEY?: string }): Promise<{ code: number; out: string[] }> {
  const saved = { DUMP_RULES: process.env.DUMP_RULES, MASKING_KEY: process.env.MASKING_KEY };
  const out: string[] = [];
  try {
    for (const [name, value] of Object.entries(env)) process.env[name] = value;
    const code = await rulesMain(['check', '--source', source], (line) => out.push(line), (line) => out.push(line));
    return { code, out };
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

describe('db-fanout rules check reads DUMP_RULES and MASKING_KEY as the dumper does', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-command-'));
  const rules = join(dir, 'rules.yaml');

  beforeAll(async () => {
    source = await createDatabase('rules_command', MASKING_SCHEMA_SQL);
    writeFileSync(rules, MASKING_RULES_YAML);
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('trims both: a key only long enough with its surrounding blanks is refused, a blank one is no key, a padded path is the file', async () => {
    // 12 characters once trimmed, as the dumper has it: too short, though 22 as the variable holds it.
    const padded = await check(source.url, { DUMP_RULES: rules, MASKING_KEY: '     twelve chars\n    ' });
    expect(padded.code).toBe(1);
    expect(padded.out.join('\n')).toContain('MASKING_KEY must be at least 16 characters long');

    const blank = await check(source.url, { DUMP_RULES: rules, MASKING_KEY: '                    ' });
    expect(blank.code).toBe(1);
    expect(blank.out.join('\n')).toContain('MASKING_KEY is required: keyed strategies');

    const ok = await check(source.url, { DUMP_RULES: ` ${rules}\n`, MASKING_KEY: '  rules command spec key 0123  \n' });
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.out.join('\n')).toContain('nothing to refuse');
  });
});
