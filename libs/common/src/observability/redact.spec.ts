import { errorMessage, maskUrl, redactSecrets } from './redact';

describe('redactSecrets', () => {
  it.each([
    // The password of a URL; the user stays.
    ['postgres://reader:s3cret@prod.example.com:5432/app', 'postgres://reader:***@prod.example.com:5432/app'],
    ['postgresql://loader:hunter2@dev/app?sslmode=require', 'postgresql://loader:***@dev/app?sslmode=require'],
    ['nats://fanout:natspass@nats-1:4222', 'nats://fanout:***@nats-1:4222'],
    ['tls://fanout:natspass@nats-1:4222', 'tls://fanout:***@nats-1:4222'],
    ['POSTGRES://Reader:S3CRET@HOST/db', 'POSTGRES://Reader:***@HOST/db'],
    ['postgres://u:p%40ss%2Fword@host/db', 'postgres://u:***@host/db'],
    ['postgres://u:@host/db', 'postgres://u:***@host/db'],
    // The value of password=... pairs (libpq keywords, query parameters, environment variables).
    ['host=prod user=reader password=s3cret dbname=app', 'host=prod user=reader password=*** dbname=app'],
    ['PASSWORD=s3cret', 'PASSWORD=***'],
    ['passwd=a pwd=b pass=c token=d', 'passwd=*** pwd=*** pass=*** token=***'],
    ['postgres://prod/app?sslmode=require&password=s3cret&application_name=x', 'postgres://prod/app?sslmode=require&password=***&application_name=x'],
    ['password=s3cret;Host=prod', 'password=***;Host=prod'],
    // Awkward credentials: an @ inside the password, no user, several URLs, quoted values.
    ['postgres://user:p@ss@host/db', 'postgres://user:***@host/db'],
    ['postgres://:secret@host/db', 'postgres://:***@host/db'],
    ['a postgres://u:x@y@h1/a and nats://n:p@h2:4222 b', 'a postgres://u:***@h1/a and nats://n:***@h2:4222 b'],
    ['PGPASSWORD=secret psql', 'PGPASSWORD=*** psql'],
    ['NATS_PASSWORD=x', 'NATS_PASSWORD=***'],
    ['host=x sslpassword=zzz', 'host=x sslpassword=***'],
    ["host=x password='a b' port=1", 'host=x password=*** port=1'],
  ])('masks %j as %j', (text, masked) => {
    expect(redactSecrets(text)).toBe(masked);
  });

  it('masks every URL in a longer message', () => {
    const text = 'copy from postgres://reader:one@prod/app to postgres://loader:two@dev/app via nats://n:three@nats:4222 failed';
    const redacted = redactSecrets(text);
    expect(redacted).toBe('copy from postgres://reader:***@prod/app to postgres://loader:***@dev/app via nats://n:***@nats:4222 failed');
    for (const secret of ['one', 'two', 'three']) expect(redacted).not.toContain(`:${secret}@`);
  });

  it.each([
    'postgres://reader@prod/app',
    'postgres://prod.example.com:5432/app',
    'nats://127.0.0.1:4222',
    'connect ECONNREFUSED 127.0.0.1:5432',
    'relation "public.customers" does not exist',
    'user@example.com wrote: see https://example.com/docs',
  ])('leaves %j, which holds no password, unchanged', (text) => {
    expect(redactSecrets(text)).toBe(text);
  });
});

describe('maskUrl', () => {
  it('masks only the password of a database URL', () => {
    expect(maskUrl('postgres://reader:s3cret@prod.example.com:5432/app?sslmode=verify-full')).toBe(
      'postgres://reader:***@prod.example.com:5432/app?sslmode=verify-full',
    );
  });

  it('returns a URL without credentials as it was', () => {
    expect(maskUrl('postgresql://prod:5432/app')).toBe('postgresql://prod:5432/app');
  });
});

describe('errorMessage', () => {
  it('returns the message of an Error with secrets masked', () => {
    expect(errorMessage(new Error('could not connect to postgres://loader:hunter2@dev/app'))).toBe(
      'could not connect to postgres://loader:***@dev/app',
    );
  });

  it('turns a non-Error into text, masked too', () => {
    expect(errorMessage('password=hunter2 rejected')).toBe('password=*** rejected');
    expect(errorMessage(42)).toBe('42');
    expect(errorMessage(undefined)).toBe('undefined');
  });
});

describe('redactSecrets and NATS tokens', () => {
  it('masks a token written as the user part of a NATS URL, but keeps a database user name', () => {
    expect(redactSecrets('cannot connect to NATS at nats://s3cr3t@host:1,tls://t0k@h2:4222')).toBe(
      'cannot connect to NATS at nats://***@host:1,tls://***@h2:4222',
    );
    expect(redactSecrets('postgres://loader@dev-db/app')).toBe('postgres://loader@dev-db/app');
  });
});
