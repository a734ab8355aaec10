import { formatQualifiedName, parseQualifiedName, quoteIdent, quoteQualified } from './sql';

describe('quoteIdent', () => {
  it.each([
    ['users', '"users"'],
    ['Order Items', '"Order Items"'],
    ['MixedCase', '"MixedCase"'],
    ['my.table', '"my.table"'],
    ['select', '"select"'],
    ['a"b', '"a""b"'],
    ['"', '""""'],
    ['x"; DROP TABLE users; --', '"x""; DROP TABLE users; --"'],
    ['café', '"café"'],
  ])('quotes %j as %s', (name, quoted) => {
    expect(quoteIdent(name)).toBe(quoted);
  });

  it('refuses a name with a NUL byte', () => {
    expect(() => quoteIdent('a\0b')).toThrow('identifier contains a NUL byte: "a\\u0000b"');
  });
});

describe('quoteQualified', () => {
  it('quotes schema and table separately', () => {
    expect(quoteQualified({ schema: 'public', name: 'customers' })).toBe('"public"."customers"');
    expect(quoteQualified({ schema: 'Sales', name: 'Order Items' })).toBe('"Sales"."Order Items"');
  });

  it('keeps a dot or a quote inside a part from splitting the name', () => {
    expect(quoteQualified({ schema: 'my.schema', name: 'my"table' })).toBe('"my.schema"."my""table"');
  });

  it('refuses a NUL byte in either part', () => {
    expect(() => quoteQualified({ schema: 'a\0', name: 'b' })).toThrow('NUL byte');
    expect(() => quoteQualified({ schema: 'a', name: 'b\0' })).toThrow('NUL byte');
  });
});

describe('parseQualifiedName', () => {
  it.each([
    ['public.customers', { schema: 'public', name: 'customers' }],
    ['Sales.Order_Items', { schema: 'Sales', name: 'Order_Items' }],
    ['"public"."customers"', { schema: 'public', name: 'customers' }],
    ['"My Schema"."My Table"', { schema: 'My Schema', name: 'My Table' }],
    ['public."Order Items"', { schema: 'public', name: 'Order Items' }],
    ['"Sales".orders', { schema: 'Sales', name: 'orders' }],
    ['"my.schema"."my.table"', { schema: 'my.schema', name: 'my.table' }],
    ['"a.b.c".d', { schema: 'a.b.c', name: 'd' }],
    ['"say ""hi""".t', { schema: 'say "hi"', name: 't' }],
    ['s."""quoted"""', { schema: 's', name: '"quoted"' }],
    ['s.""""', { schema: 's', name: '"' }],
    ['"x"".y".z', { schema: 'x".y', name: 'z' }],
  ])('reads %s', (text, expected) => {
    expect(parseQualifiedName(text)).toEqual(expected);
  });

  it.each(['customers', '"my.table"', '', 'a.b.c', '"a"."b"."c"', '.customers', 'public.', 'a..b', '"".t', 's.""', '.'])(
    'refuses %j: it must be written schema.table',
    (text) => {
      expect(() => parseQualifiedName(text)).toThrow(`table name ${JSON.stringify(text)} must be written schema.table`);
    },
  );

  it.each(['"public.customers', 'public."customers', '"a"".b'])('refuses the unterminated quote in %j', (text) => {
    expect(() => parseQualifiedName(text)).toThrow(`unterminated quote in table name ${JSON.stringify(text)}`);
  });

  it.each(['"public"x.customers', 'public."customers"x', '"a" .b'])('refuses text after a closing quote in %j', (text) => {
    expect(() => parseQualifiedName(text)).toThrow(`unexpected character in table name ${JSON.stringify(text)}`);
  });
});

describe('formatQualifiedName', () => {
  it('leaves plain lowercase names bare', () => {
    expect(formatQualifiedName({ schema: 'public', name: 'customers' })).toBe('public.customers');
    expect(formatQualifiedName({ schema: '_audit', name: 'log_2024$x' })).toBe('_audit.log_2024$x');
  });

  it('quotes names that need it', () => {
    expect(formatQualifiedName({ schema: 'public', name: 'Order Items' })).toBe('public."Order Items"');
    expect(formatQualifiedName({ schema: 'Sales', name: 'Order_Items' })).toBe('"Sales"."Order_Items"');
    expect(formatQualifiedName({ schema: 'my.schema', name: '1st' })).toBe('"my.schema"."1st"');
    expect(formatQualifiedName({ schema: 's', name: 'a"b' })).toBe('s."a""b"');
  });

  const tricky = [
    { schema: 'public', name: 'customers' },
    { schema: 'Sales', name: 'Order_Items' },
    { schema: 'My Schema', name: 'My Table' },
    { schema: 'my.schema', name: 'my.table' },
    { schema: 'a"b', name: 'c""d' },
    { schema: '"', name: '.' },
    { schema: 'x".y', name: '"."' },
    { schema: 'ünïcode', name: 'täble' },
    { schema: 'public', name: '123' },
    { schema: ' padded ', name: 'tab\tle' },
  ];

  it.each(tricky)('round-trips %j through parseQualifiedName', (table) => {
    expect(parseQualifiedName(formatQualifiedName(table))).toEqual(table);
  });

  it('normalises needless quotes away', () => {
    expect(formatQualifiedName(parseQualifiedName('"public"."customers"'))).toBe('public.customers');
  });
});
