/** A small argv parser: `command --flag value --switch`; unknown flags are errors, not ignored. */
export interface ParsedArgs {
  command?: string;
  flags: Record<string, string | true>;
}

export class UsageError extends Error {}

export function parseArgs(argv: string[], allowed: Record<string, 'value' | 'switch'>): ParsedArgs {
  const flags: Record<string, string | true> = {};
  let command: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h') {
      flags.help = true;
    } else if (arg.startsWith('--')) {
      const name = arg.slice(2);
      if (name === 'help') {
        flags.help = true;
      } else if (allowed[name] === 'switch') {
        flags[name] = true;
      } else if (allowed[name] === 'value') {
        const value = argv[++i];
        if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`);
        flags[name] = value;
      } else {
        throw new UsageError(`unknown option ${arg}`);
      }
    } else if (command === undefined) {
      command = arg;
    } else {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  return { command, flags };
}
