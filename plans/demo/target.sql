-- The demo target: the store's inventory before the migration.
-- plans/demo/target.db is built from this file (see tests/demo.rs).
CREATE TABLE inventory (
  sku TEXT NOT NULL,
  location TEXT NOT NULL,
  qty INTEGER NOT NULL,
  version INTEGER NOT NULL DEFAULT 0,
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
  ('SWAP-X', 'loc-2', 1),
  ('SWAP-Y', 'loc-2', 2),
  ('GONE-1', 'loc-1', 4);
