import type { LoadDrift, RunRecord, StepRecord } from '@app/common/contract';

/** How many of each thing a SCHEMA_DRIFT=common-columns load left out (`runs --json` has the names). */
function driftSummary(drift: LoadDrift | undefined): string {
  if (!drift) return '';
  const count = (names: string[] | undefined, one: string, many: string) => (names?.length ? [`${names.length} ${names.length === 1 ? one : many}`] : []);
  const counts = [
    ...count(drift.skippedTables, 'table skipped', 'tables skipped'),
    ...count(drift.leftOutColumns, 'column left out', 'columns left out'),
    ...count(drift.defaultedColumns, 'column defaulted', 'columns defaulted'),
    ...count(drift.unsetSequences, 'sequence left unset', 'sequences left unset'),
  ];
  return counts.length ? `, drift: ${counts.join(', ')}` : '';
}

/**
 * How the step got where it is, when it is not a plain first try: its tries, a message that came
 * again after its worker died (`delivery 2`), a `db-fanout reload` (`reload #<request sequence>`).
 */
function notes(step: StepRecord): string {
  const said = [
    ...(step.attempts > 1 ? [`${step.attempts} tries`] : []),
    ...(step.delivery !== undefined && step.delivery > 1 ? [`delivery ${step.delivery}`] : []),
    ...(step.reloadSequence ? [`reload #${step.reloadSequence}`] : []),
  ];
  return said.length ? ` (${said.join(', ')})` : '';
}

function cell(step: StepRecord | undefined): string {
  if (!step) return '-';
  const seconds = step.startedAt && step.endedAt ? ` ${((Date.parse(step.endedAt) - Date.parse(step.startedAt)) / 1000).toFixed(1)}s` : '';
  return `${step.state}${seconds}${notes(step)}${driftSummary(step.drift)}`;
}

/** Runs as the CLI prints them: dates down, the dump and each environment across (Airflow's grid). */
export function formatRunsTable(runs: RunRecord[]): string {
  if (runs.length === 0) return 'no runs yet';
  const environments = [...new Set(runs.flatMap((run) => Object.keys(run.loads)))].sort();
  const rows = [['date', 'dump', ...environments], ...runs.map((run) => [run.date, cell(run.dump), ...environments.map((env) => cell(run.loads[env]))])].map((row) =>
    row.map(printable),
  );
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((text, i) => text.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** Control characters shown as `?`: a history written before names were checked must not drive the terminal. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}
