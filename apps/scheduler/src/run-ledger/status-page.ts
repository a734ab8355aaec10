import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The scheduler's status page (`GET /`): Airflow's grid for the run ledger. Its markup, style sheet
 * and browser script are plain files in ./status-page/ (copied beside the compiled code by
 * `npm run build`); they are put together here once, into one document with the style and the
 * script inline, so the page loads nothing else. The Content-Security-Policy admits exactly this
 * script and this style sheet by their hashes, so even a value from the ledger that slipped into
 * the page as markup could not run a script.
 */
export interface StatusPage {
  html: string;
  csp: string;
}

const DIRECTORY = join(__dirname, 'status-page');

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** `{{name}}` in index.html is replaced by the file `name` beside it (no other templating). */
function inline(html: string, name: string, content: string): string {
  const marker = `{{${name}}}`;
  if (!html.includes(marker)) throw new Error(`status page: index.html has no ${marker}`);
  return html.replace(marker, () => content);
}

export function loadStatusPage(directory = DIRECTORY): StatusPage {
  const read = (name: string) => readFileSync(join(directory, name), 'utf8');
  const style = read('status-page.css');
  const script = read('status-page.js');
  const html = inline(inline(read('index.html'), 'status-page.css', style), 'status-page.js', script);
  return {
    html,
    // Only this page's own script and style sheet run; it may fetch from its own origin and nothing else.
    csp: [
      "default-src 'none'",
      `script-src ${sha256(script)}`,
      `style-src ${sha256(style)}`,
      "connect-src 'self'",
      'img-src data:',
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
  };
}
