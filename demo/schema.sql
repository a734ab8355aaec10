-- The demo schema: production and every environment share it (the loader never changes a target's schema).
-- Awkward on purpose: identity and serial keys, a generated column, an enum, arrays, json, bytea,
-- numeric, timestamptz, a mixed-case schema and table with a space, self- and cross-table foreign keys.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE customers (
  id         int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name       text NOT NULL,
  email      text UNIQUE,
  note       text,
  mood       mood,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE categories (
  id        int PRIMARY KEY,
  parent_id int REFERENCES categories (id),
  label     text NOT NULL
);

CREATE TABLE products (
  id          serial PRIMARY KEY,
  sku         text NOT NULL UNIQUE,
  category_id int REFERENCES categories (id),
  price       numeric(14, 4),
  tags        text[],
  attrs       jsonb,
  photo       bytea,
  sku_upper   text GENERATED ALWAYS AS (upper(sku)) STORED
);

CREATE SCHEMA "Sales";

CREATE TABLE "Sales"."Order Items" (
  "Id"        bigserial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers (id),
  product_id  int NOT NULL REFERENCES products (id),
  "Qty"       int NOT NULL CHECK ("Qty" > 0),
  comment     text,
  ordered_at  timestamptz NOT NULL
);
CREATE INDEX order_items_customer ON "Sales"."Order Items" (customer_id);
