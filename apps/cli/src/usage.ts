import { CommanderError } from 'commander';

/** The CLI's help: `db-fanout --help` prints all of it, `db-fanout <command> --help` that command's line. */
export const USAGE = `db-fanout: refresh dev, staging and QA from one production snapshot

Usage: db-fanout <command> [options]   (NATS_URL, NATS_STREAM, NATS_SUBJECT_PREFIX as for the apps)

Commands:
  trigger [--date YYYY-MM-DD]            ask for a replication now (default: today in SCHEDULE_TIMEZONE)
  status                                 the latest runs: dump and every environment, with states and durations
  runs [--since YYYY-MM-DD] [--json]     every run in the ledger, newest first
  reload --env NAME [--snapshot ID]      load one environment again from a snapshot (default: the latest), no dump
  backfill --from YYYY-MM-DD --to YYYY-MM-DD   trigger each day of the range, oldest first
  rules init --source URL [--out FILE]   write a starting rules file from the source's catalog (no NATS)
  rules check --source URL [--rules FILE] what a dump with these rules would refuse; exit 1 if anything

Exit codes: 0 done, 1 failed (e.g. NATS unreachable), 2 wrong usage.`;

export function usageOf(command: string): string {
  return USAGE.split('\n').find((line) => line.trim().startsWith(`${command} `) || line.trim() === command) ?? USAGE;
}

/** Wrong usage: exit code 2. */
export class UsageError extends Error {}

/** The first '…'-quoted word of a commander message (an option or command name). */
const quoted = (message: string) => /'([^']*)'/.exec(message)?.[1] ?? '';

/**
 * Commander's parse errors in the CLI's own words (the ones its users and scripts already know), or
 * undefined for what is not a parse error.
 */
export function usageProblem(error: CommanderError): string | undefined {
  switch (error.code) {
    case 'commander.unknownOption':
      return `unknown option ${quoted(error.message)}`;
    case 'commander.optionMissingArgument':
      return `${quoted(error.message).split(' ')[0]} needs a value`;
    case 'commander.excessArguments':
    case 'commander.missingArgument':
    case 'commander.invalidArgument':
    case 'commander.error':
      return error.message.replace(/^error: /, '');
    default:
      return undefined;
  }
}
