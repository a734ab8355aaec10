/**
 * Secrets must never reach logs or events. Connection strings are the usual carrier
 * (postgres://user:password@host/db, nats://user:pass@host), so every URL-looking
 * credential in a string is masked before it is logged or published.
 */
// The password runs to the last `@` of the authority: an unencoded `@` inside it must not leak the rest.
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/)([^:/?#@\s]*)(:[^\s]*?)?@(?=[^@\s/?#]*(?:[/?#\s]|$))/gi;
const NATS_SCHEMES = /^(nats|tls|ws|wss):\/\/$/i;
// Also PGPASSWORD=..., NATS_PASSWORD=..., sslpassword=..., and quoted values.
const PASSWORD_PAIRS = /([a-z_]*(?:password|passwd|pass|pwd|token))=('[^']*'|"[^"]*"|[^\s&;]+)/gi;

export function redactSecrets(text: string): string {
  return text
    .replace(URL_CREDENTIALS, (_all, scheme: string, user: string, password?: string) => {
      if (password) return `${scheme}${user}:***@`;
      // In a NATS URL a lone user part is a token: a secret, unlike a database user name.
      return NATS_SCHEMES.test(scheme) && user ? `${scheme}***@` : `${scheme}${user}@`;
    })
    .replace(PASSWORD_PAIRS, '$1=***');
}

/** A database URL as it may be shown to a person: credentials masked, nothing else lost. */
export function maskUrl(url: string): string {
  return redactSecrets(url);
}

export function errorMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return redactSecrets(text);
}
