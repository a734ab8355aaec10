import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStatusPage } from './status-page';

const hashOf = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
const inlined = (html: string, tag: 'style' | 'script') => new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)![1];

describe('the status page', () => {
  const page = loadStatusPage();
  const files = join(__dirname, 'status-page');

  it('is index.html with its style sheet and script inline, and no marker left', () => {
    expect(page.html).toMatch(/^<!doctype html>/);
    expect(inlined(page.html, 'style')).toBe(readFileSync(join(files, 'status-page.css'), 'utf8'));
    expect(inlined(page.html, 'script')).toBe(readFileSync(join(files, 'status-page.js'), 'utf8'));
    expect(page.html).not.toContain('{{');
  });

  it('admits exactly that script and that style sheet by hash, and nothing from elsewhere', () => {
    // The policy as a browser reads it: directives separated by "; ", each a name and its sources.
    const directives = page.csp.split('; ').map((directive) => directive.split(' '));
    expect(new Set(directives.map(([name]) => name)).size).toBe(directives.length); // a repeated directive would be ignored
    expect(Object.fromEntries(directives.map(([name, ...sources]) => [name, sources]))).toEqual({
      'default-src': ["'none'"],
      'script-src': [hashOf(inlined(page.html, 'script'))],
      'style-src': [hashOf(inlined(page.html, 'style'))],
      'connect-src': ["'self'"],
      'img-src': ['data:'],
      'base-uri': ["'none'"],
      'form-action': ["'none'"],
      'frame-ancestors': ["'none'"],
    });
  });

  it('refuses an index.html that lost a marker, naming it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'db-fanout-statuspage-'));
    try {
      writeFileSync(join(dir, 'index.html'), '<!doctype html><style>{{status-page.css}}</style>');
      writeFileSync(join(dir, 'status-page.css'), 'body {}');
      writeFileSync(join(dir, 'status-page.js'), ';');
      expect(() => loadStatusPage(dir)).toThrow('status page: index.html has no {{status-page.js}}');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
