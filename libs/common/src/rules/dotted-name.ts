/**
 * Splits a dotted SQL name into its parts: `public.orders.customer_email`, or with double quotes
 * for parts that hold dots, quotes or capitals as written: `"Sales"."Order Items".note`.
 * Returns undefined when the text does not have exactly `count` non-empty parts.
 */
export function splitDottedName(text: string, count: number): string[] | undefined {
  const parts: string[] = [];
  let i = 0;
  while (i <= text.length) {
    let part = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= text.length) return undefined;
        if (text[i] === '"') {
          if (text[i + 1] !== '"') break;
          i++;
        }
        part += text[i++];
      }
      i++;
    } else {
      while (i < text.length && text[i] !== '.') part += text[i++];
    }
    if (!part) return undefined;
    parts.push(part);
    if (i === text.length) break;
    if (text[i] !== '.') return undefined;
    i++;
    if (i === text.length) return undefined;
  }
  return parts.length === count ? parts : undefined;
}

/** `schema.table` or `schema.table.column` as users write it: quoted only where needed. */
export function formatDottedName(parts: string[]): string {
  return parts.map((s) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : `"${s.replaceAll('"', '""')}"`)).join('.');
}
