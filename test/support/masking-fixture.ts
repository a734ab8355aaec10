/**
 * Production data worth masking: a citext unique email that orders reference by a foreign key, the
 * same email inside jsonb and in an undeclared relation (audit_log), a composite foreign key
 * (shipments -> order_lines), a self-reference (customers.referred_by), NULLs, quotes, backslashes
 * and non-ASCII text. Case differs on purpose between the citext key and its references.
 */
export const MASKING_SCHEMA_SQL = `
  CREATE EXTENSION IF NOT EXISTS citext;
  CREATE TABLE public.customers (
    id          int PRIMARY KEY,
    email       citext NOT NULL UNIQUE,
    full_name   text NOT NULL,
    phone       text,
    ssn         text,
    notes       text,
    api_token   text UNIQUE,
    tier        text,
    score       numeric,
    profile     jsonb,
    created_at  date NOT NULL,
    referred_by int REFERENCES public.customers (id)
  );
  CREATE TABLE public.orders (
    id             int PRIMARY KEY,
    customer_email citext NOT NULL REFERENCES public.customers (email),
    placed_at      date NOT NULL
  );
  CREATE TABLE public.order_lines (
    order_id int REFERENCES public.orders (id),
    line_no  int,
    product  text NOT NULL,
    PRIMARY KEY (order_id, line_no)
  );
  CREATE TABLE public.shipments (
    id       int PRIMARY KEY,
    order_id int NOT NULL,
    line_no  int NOT NULL,
    FOREIGN KEY (order_id, line_no) REFERENCES public.order_lines (order_id, line_no)
  );
  CREATE TABLE public.audit_log (
    id          int PRIMARY KEY,
    actor_email text,
    action      text NOT NULL
  );
`;

/** Every original value of a masked column, to look for in the snapshot's files. */
export const ORIGINALS = {
  email: ['Alice@Example.org', "bob.o'neil@example.net", 'Zoë.Łukasz@exämple.com', 'carol\\\\x@example.com', 'Dave@Old.example'],
  full_name: ["Alice Wonderlander", "Bob O'Neil", 'Zoë Łukasiewicz', 'Carol \\\\ Backslash', 'Dave Oldtimer'],
  phone: ['+1 (555) 010-4242', '06 12 34 56 78', '+48 601 555 777'],
  ssn: ['123-45-6789', '987-65-4321', 'ÄB 12 34 56'],
  notes: ['likes "quotes", commas, and \\\\ backslashes', 'line one\nline two', 'ünïcödé note'],
  api_token: ['tok_live_a1b2c3d4e5f6', 'tok_live_ffeeddccbbaa', 'tok_live_0000aaaa1111'],
  street: ['1 Infinite Loop', "12 O'Connell Street", 'Świętokrzyska 11'],
};

export const MASKING_SEED_SQL = `
  INSERT INTO public.customers VALUES
    (5, 'Dave@Old.example', 'Dave Oldtimer', NULL, NULL, NULL, NULL, 'bronze', 3, NULL, '2020-03-01', NULL),
    (1, 'Alice@Example.org', 'Alice Wonderlander', '+1 (555) 010-4242', '123-45-6789', 'likes "quotes", commas, and \\\\ backslashes',
        'tok_live_a1b2c3d4e5f6', 'silver', 42.42,
        '{"email": "alice@example.org", "address": {"street": "1 Infinite Loop", "city": "Cupertino"}}', '2024-02-01', 5),
    (2, 'bob.o''neil@example.net', 'Bob O''Neil', '06 12 34 56 78', '987-65-4321', E'line one\\nline two', 'tok_live_ffeeddccbbaa', NULL, NULL,
        '{"email": "BOB.O''NEIL@EXAMPLE.NET", "address": {"street": "12 O''Connell Street"}}', '2024-03-01', 1),
    (3, 'Zoë.Łukasz@exämple.com', 'Zoë Łukasiewicz', '+48 601 555 777', 'ÄB 12 34 56', 'ünïcödé note', 'tok_live_0000aaaa1111', 'gold', 7,
        '{"address": {"street": "Świętokrzyska 11"}, "email": null}', '2023-06-01', NULL),
    (4, 'carol\\\\x@example.com', 'Carol \\\\ Backslash', NULL, NULL, NULL, NULL, NULL, NULL, '{}', '2022-01-01', 3);
  INSERT INTO public.orders VALUES
    (10, 'alice@example.org', '2024-02-02'), (11, 'ALICE@EXAMPLE.ORG', '2024-02-03'), (12, 'Bob.O''Neil@Example.NET', '2024-03-02'),
    (13, 'zoë.łukasz@exämple.com', '2023-07-01'), (14, 'Carol\\\\X@example.com', '2022-02-01'), (15, 'dave@old.example', '2020-04-01');
  INSERT INTO public.order_lines VALUES (10, 1, 'pen'), (10, 2, 'ink'), (11, 1, 'paper'), (13, 1, 'lamp'), (14, 1, 'desk'), (15, 1, 'chair');
  INSERT INTO public.shipments VALUES (100, 10, 2), (101, 13, 1), (102, 14, 1), (103, 15, 1);
  INSERT INTO public.audit_log VALUES
    (1000, 'Alice@Example.org', 'login'), (1001, 'alice@example.org', 'logout'), (1002, 'zoë.łukasz@exämple.com', 'login'),
    (1003, NULL, 'cron'), (1004, 'dave@old.example', 'login');
`;

/** Rules for the fixture, one strategy of every kind. */
export const MASKING_RULES_YAML = `
strict: true
tables:
  public.customers:
    id: keep
    email: email
    full_name: name
    phone: phone
    ssn: redact
    notes: null
    api_token: hash
    tier: { constant: gold }
    score: { sql: "round(score, -1)" }
    profile: { jsonb: { email: email, address.street: redact } }
    created_at: keep
    referred_by: keep
  public.orders: { id: keep, customer_email: email, placed_at: keep }
  public.order_lines: { order_id: keep, line_no: keep, product: keep }
  public.shipments: { id: keep, order_id: keep, line_no: keep }
  public.audit_log: { id: keep, actor_email: email, action: keep }
relations:
  - { from: public.audit_log.actor_email, to: public.customers.email }
`;
