/** Quotes an SQL identifier: every table, column and sequence name goes through here. */
export function quoteIdent(name: string): string {
  if (name.includes('\0')) throw new Error(`identifier contains a NUL byte: ${JSON.stringify(name)}`);
  return `"${name.replaceAll('"', '""')}"`;
}

/** `schema.table` as stored in manifests and config, quoted part by part. */
export function quoteQualified(qualifiedName: { schema: string; name: string }): string {
  return `${quoteIdent(qualifiedName.schema)}.${quoteIdent(qualifiedName.name)}`;
}

/**
 * Splits `schema.table` into parts. Names with a dot in them can be written quoted:
 * `"my.schema"."my.table"`. A name without a schema is rejected rather than guessed.
 */
export function parseQualifiedName(text: string): { schema: string; name: string } {
  const parts: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === '"') {
      let part = '';
      i++;
      for (;;) {
        if (i >= text.length) throw new Error(`unterminated quote in table name ${JSON.stringify(text)}`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += text[i++];
      }
      parts.push(part);
    } else {
      const end = text.indexOf('.', i);
      parts.push(text.slice(i, end === -1 ? text.length : end));
      i = end === -1 ? text.length : end;
    }
    if (i < text.length) {
      if (text[i] !== '.') throw new Error(`unexpected character in table name ${JSON.stringify(text)}`);
      i++;
      if (i === text.length) parts.push('');
    }
  }
  if (parts.length !== 2 || parts.some((p) => p.length === 0)) {
    throw new Error(`table name ${JSON.stringify(text)} must be written schema.table`);
  }
  return { schema: parts[0], name: parts[1] };
}

/**
 * Splits a comma list of qualified names (TABLES, EXCLUDE_TABLES) at the commas outside double
 * quotes: `"a,b".t` is one name, as quoting promises for odd names. A doubled quote inside a quoted
 * name toggles twice, so it changes nothing; an unterminated quote runs to the end, one entry that
 * parseQualifiedName then rejects, named.
 */
export function splitQualifiedNames(text: string): string[] {
  const entries: string[] = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '"') quoted = !quoted;
    else if (text[i] === ',' && !quoted) {
      entries.push(text.slice(start, i));
      start = i + 1;
    }
  }
  entries.push(text.slice(start));
  return entries;
}

/** A name as PostgreSQL prints it: bare where it may be, else quoted (`sku`, `"Sku code"`). */
export function formatIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}

export function formatQualifiedName(table: { schema: string; name: string }): string {
  return `${formatIdent(table.schema)}.${formatIdent(table.name)}`;
}
