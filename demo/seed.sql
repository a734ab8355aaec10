-- Production data for the demo and the end-to-end tests. Every value that breaks naive CSV handling
-- is here: NULL next to '', quotes, commas, newlines, CR, backslashes, unicode, bytea with NUL bytes.
INSERT INTO customers (name, email, note, mood, created_at) VALUES
  ('Ada Lovelace', 'ada@example.com', NULL, 'happy', '2024-01-01 09:00:00+00'),
  ('Empty Note', 'empty@example.com', '', 'ok', '2024-01-02 10:30:00+02'),
  ('Quote "Q" O''Neil', NULL, 'said "hi", then left', 'sad', '2024-01-03 23:59:59.999999+00'),
  ('Multi
Line', 'ml@example.com', E'line1\nline2\r\nline3', NULL, '2024-02-29 12:00:00-05'),
  ('Back\slash', 'bs@example.com', E'C:\\path\\to\\file \\N \\.', 'ok', '2024-03-01 00:00:00+00'),
  ('Ünïcødé 名前 🚀', 'u@example.com', 'emoji 🎉 and ZWJ 👩‍💻', 'happy', '2024-03-02 00:00:00+00'),
  ('Comma, Inc.', 'c@example.com', ',,,', 'ok', '2024-03-03 00:00:00+00'),
  ('Just a dot', 'dot@example.com', '\.', 'ok', '2024-03-04 00:00:00+00');

INSERT INTO customers (name, email, mood, created_at)
SELECT 'Customer ' || g, 'customer' || g || '@example.com', (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '37 minutes'
  FROM generate_series(1, 2000) g;

INSERT INTO categories (id, parent_id, label) VALUES
  (1, NULL, 'root'), (2, 1, 'child, with comma'), (3, 2, 'grand "child"'), (4, 1, '');

INSERT INTO products (sku, category_id, price, tags, attrs, photo) VALUES
  ('sku-1', 1, 12345678.1234, ARRAY['a', 'b,c', 'd"e', NULL, ''], '{"nested": {"k": [1, 2.5, null, "x\"y"]}, "empty": ""}', '\x00deadbeef00'),
  ('sku-2', 3, 0.0001, '{}', '[]', ''),
  ('sku-3', NULL, NULL, NULL, NULL, NULL),
  ('sku-4', 4, -1.5, ARRAY['new
line'], '{"unicode": "名前 🚀", "backslash": "a\\b"}', decode('5c4e0d0a2c22', 'hex'));

INSERT INTO products (sku, category_id, price, tags, attrs, photo)
SELECT 'bulk-' || g, 1 + g % 4, g * 1.25, ARRAY['t' || g], jsonb_build_object('n', g), sha256(g::text::bytea)
  FROM generate_series(1, 500) g;

INSERT INTO "Sales"."Order Items" (customer_id, product_id, "Qty", comment, ordered_at)
SELECT 1 + g % 2008, 1 + g % 504, 1 + g % 7,
       CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'gift, "wrapped"' WHEN 3 THEN E'two\nlines' ELSE 'plain' END,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 20000) g;
