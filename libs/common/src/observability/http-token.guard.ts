import { createHash, timingSafeEqual } from 'node:crypto';
import { type CanActivate, type ExecutionContext, UnauthorizedException } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { HttpConfig } from '../config/app-config';

/** The routes METRICS_TOKEN guards; every other route of an app is guarded by HTTP_TOKEN. */
export const OBSERVABILITY_ROUTES: readonly string[] = ['/health', '/metrics'];

/** Routes open whatever the tokens: liveness says only "this process answers", and a kubelet's probe carries no token. */
export const OPEN_ROUTES: readonly string[] = ['/health/live'];

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

/**
 * The token a request presents: `Authorization: Bearer <token>` (programs, Prometheus), or HTTP Basic
 * with the token as the password and any user name, which is what a browser sends after its
 * login prompt and then repeats on the page's own requests.
 */
export function presentedToken(authorization: string | undefined): string | undefined {
  const match = /^(Bearer|Basic)\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (!match) return undefined;
  if (match[1].toLowerCase() === 'bearer') return match[2];
  const decoded = Buffer.from(match[2], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/** Compared as digests of equal length, in constant time: the answer says nothing about how close a guess was. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  return presented !== undefined && timingSafeEqual(digest(presented), digest(expected));
}

/**
 * HTTP_TOKEN and METRICS_TOKEN: when the token that applies to a route is set, the route answers
 * 401 unless the request presents it; when it is not set, the route is open. Registered globally,
 * so a new route is guarded by HTTP_TOKEN without anyone remembering to. Messages consumed from
 * JetStream pass through untouched (they are not HTTP).
 */
export class HttpTokenGuard implements CanActivate {
  constructor(private readonly http: Pick<HttpConfig, 'token' | 'metricsToken'>) {}

  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http') return true;
    const request = context.switchToHttp().getRequest<Request>();
    // The matched route, not the request path: Express also routes `/METRICS` and `/metrics/` to `/metrics`.
    const matched = (request.route as { path?: unknown } | undefined)?.path;
    const route = typeof matched === 'string' ? matched : request.path;
    if (OPEN_ROUTES.includes(route)) return true;
    const variable = OBSERVABILITY_ROUTES.includes(route) ? 'METRICS_TOKEN' : 'HTTP_TOKEN';
    const expected = variable === 'METRICS_TOKEN' ? this.http.metricsToken : this.http.token;
    if (expected === undefined || tokenMatches(presentedToken(request.headers.authorization), expected)) return true;
    // Bearer for programs; Basic makes a browser ask for it (any user name, the token as the password).
    context.switchToHttp().getResponse<Response>().setHeader('WWW-Authenticate', ['Bearer realm="db-fanout"', 'Basic realm="db-fanout", charset="UTF-8"']);
    throw new UnauthorizedException(`this route needs Authorization: Bearer <${variable}>`);
  }
}
