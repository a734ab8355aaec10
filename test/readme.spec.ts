import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_HTTP_PORTS, DEFAULTS, loadDumperConfig, loadLoaderConfig, loadSchedulerConfig, variablesReadBy } from '@app/common/config';
import { SUBJECTS } from '@app/common/contract';

/** The README is the contract users read: its config table, subjects and commands must match the code. */
const ROOT = join(__dirname, '..');
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const scripts = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts);

const readers = { scheduler: loadSchedulerConfig, dumper: loadDumperConfig, loader: loadLoaderConfig };
type App = keyof typeof readers;
const readBy = Object.fromEntries(Object.entries(readers).map(([app, load]) => [app, variablesReadBy(load)])) as Record<App, string[]>;

/** Rows of the configuration table: variables (a row may list several), used-by apps, default. */
function configRows(): { variables: string[]; usedBy: App[]; defaultText: string }[] {
  return readme
    .split('\n')
    .filter((line) => /^\| `[A-Z][A-Z0-9_]*`/.test(line))
    .map((line) => {
      const [variables, usedBy, defaultText] = line.split('|').slice(1).map((cell) => cell.trim());
      return {
        variables: [...variables.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]),
        usedBy: usedBy === 'all' ? (Object.keys(readers) as App[]) : (usedBy.split(',').map((s) => s.trim()) as App[]),
        defaultText,
      };
    });
}

describe('README', () => {
  it('documents every environment variable the apps read, for exactly the apps that read it', () => {
    const documented = new Map<string, App[]>();
    for (const row of configRows()) for (const variable of row.variables) documented.set(variable, row.usedBy.sort());
    const actual = new Map<string, App[]>();
    for (const app of Object.keys(readers) as App[]) {
      for (const variable of readBy[app]) actual.set(variable, [...(actual.get(variable) ?? []), app].sort());
    }
    expect(Object.fromEntries([...documented].sort())).toEqual(Object.fromEntries([...actual].sort()));
  });

  it('states the defaults the code uses', () => {
    const rows = configRows();
    const defaultOf = (variable: string) => rows.find((row) => row.variables.includes(variable))!.defaultText;
    for (const [variable, value] of Object.entries(DEFAULTS)) expect({ variable, text: defaultOf(variable) }).toEqual({ variable, text: `\`${value}\`` });
    for (const [app, port] of Object.entries(DEFAULT_HTTP_PORTS)) expect(defaultOf('HTTP_PORT')).toContain(`${app} \`${port}\``);
    expect(defaultOf('CATCHUP')).toBe('`false`');
  });

  it('lists every subject of the contract', () => {
    for (const subject of Object.values(SUBJECTS)) expect(readme).toContain(`| \`${subject}\` |`);
  });

  it('gives the two commands, and every npm script it mentions exists', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toContain('npm test');
    for (const [, script] of readme.matchAll(/npm run ([a-z:]+)/g)) expect(scripts).toContain(script);
  });
});
