import { type ExecutionContext, UnauthorizedException } from '@nestjs/common';
import { HttpTokenGuard, presentedToken, tokenMatches } from './http-token.guard';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** What Express gives the guard for a request that matched `route`. */
function httpContext(route: string, authorization?: string) {
  const headers: Record<string, unknown> = {};
  const context = {
    getType: () => 'http',
    switchToHttp: () => ({
      getRequest: () => ({ route: { path: route }, path: route, headers: { authorization } }),
      getResponse: () => ({ setHeader: (name: string, value: unknown) => (headers[name] = value) }),
    }),
  } as unknown as ExecutionContext;
  return { context, headers };
}

describe('presentedToken', () => {
  it.each([
    ['Bearer s3cret', 's3cret'],
    ['bearer s3cret', 's3cret'],
    [basic('ops', 's3cret'), 's3cret'],
    [basic('', 'with:colon'), 'with:colon'],
  ])('reads %j as %j', (header, token) => {
    expect(presentedToken(header)).toBe(token);
  });

  it.each([undefined, '', 'Bearer', 's3cret', 'Token s3cret', `Basic ${Buffer.from('no-colon').toString('base64')}`])('finds none in %j', (header) => {
    expect(presentedToken(header)).toBeUndefined();
  });
});

describe('tokenMatches', () => {
  it('accepts only the same token', () => {
    expect(tokenMatches('s3cret', 's3cret')).toBe(true);
    expect(tokenMatches('s3cre', 's3cret')).toBe(false);
    expect(tokenMatches('s3cretx', 's3cret')).toBe(false);
    expect(tokenMatches(undefined, 's3cret')).toBe(false);
  });
});

describe('HttpTokenGuard', () => {
  const guard = new HttpTokenGuard({ token: 'page-token', metricsToken: 'metrics-token' });

  it('lets /, /api/runs and any other route through with HTTP_TOKEN, and not with METRICS_TOKEN', () => {
    for (const route of ['/', '/api/runs', '/anything/new']) {
      expect(guard.canActivate(httpContext(route, 'Bearer page-token').context)).toBe(true);
      expect(guard.canActivate(httpContext(route, basic('me', 'page-token')).context)).toBe(true);
      expect(() => guard.canActivate(httpContext(route, 'Bearer metrics-token').context)).toThrow(UnauthorizedException);
    }
  });

  it('guards /health and /metrics with METRICS_TOKEN only', () => {
    for (const route of ['/health', '/metrics']) {
      expect(guard.canActivate(httpContext(route, 'Bearer metrics-token').context)).toBe(true);
      expect(() => guard.canActivate(httpContext(route, 'Bearer page-token').context)).toThrow('this route needs Authorization: Bearer <METRICS_TOKEN>');
    }
  });

  it('answers a missing token with 401 and the challenges that make a browser ask for it', () => {
    const { context, headers } = httpContext('/');
    expect(() => guard.canActivate(context)).toThrow('this route needs Authorization: Bearer <HTTP_TOKEN>');
    expect(headers['WWW-Authenticate']).toEqual(['Bearer realm="db-fanout"', 'Basic realm="db-fanout", charset="UTF-8"']);
  });

  it('leaves a route open when its token is not set', () => {
    const open = new HttpTokenGuard({ token: 'page-token' });
    expect(open.canActivate(httpContext('/metrics').context)).toBe(true);
    expect(open.canActivate(httpContext('/health').context)).toBe(true);
    expect(() => open.canActivate(httpContext('/api/runs').context)).toThrow(UnauthorizedException);
  });

  it('lets messages from JetStream through (not HTTP)', () => {
    expect(guard.canActivate({ getType: () => 'rpc' } as unknown as ExecutionContext)).toBe(true);
  });
});
