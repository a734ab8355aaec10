-- What an environment holds before a refresh: a little stale data the load must replace entirely.
INSERT INTO customers (name, email) VALUES ('stale customer', 'stale@example.com');
INSERT INTO categories (id, label) VALUES (99, 'stale');
INSERT INTO products (sku, category_id) VALUES ('stale-sku', 99);
INSERT INTO "Sales"."Order Items" (customer_id, product_id, "Qty", ordered_at)
SELECT c.id, p.id, 1, now() FROM customers c, products p;
