-- The target table plans/postgres.yaml writes to, with the store's stock before
-- the migration. Load it with: psql "$INVENTORY_DB_URL" -f plans/postgres/schema.sql
-- A primary key (or unique index) on (sku, location) is needed: it makes each
-- conditional write an index lookup, and concurrent creates of one key safe.
CREATE TABLE IF NOT EXISTS inventory (
  sku text NOT NULL,
  location text NOT NULL,
  qty bigint NOT NULL,
  version bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (sku, location)
);
INSERT INTO inventory (sku, location, qty) VALUES
  ('NEW-1', 'loc-1', 5),
  ('TEE-BLUE-S', 'loc-1', 8),
  ('HOT-1', 'loc-1', 7),
  ('A', 'loc-1', 9),
  ('B', 'loc-1', 3),
  ('KIT-1', 'loc-1', 1),
  ('SAME-1', 'loc-1', 20),
  ('GONE-1', 'loc-1', 4)
ON CONFLICT DO NOTHING;
