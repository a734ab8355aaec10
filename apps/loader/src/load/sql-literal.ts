/**
 * A string constant that means the same whatever `standard_conforming_strings` is: an escape string
 * (E'...') doubles both quotes and backslashes. For statements that take no parameters (COMMENT).
 */
export function sqlLiteral(text: string): string {
  if (text.includes('\0')) throw new Error('a string constant cannot hold a NUL byte');
  return `E'${text.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}
