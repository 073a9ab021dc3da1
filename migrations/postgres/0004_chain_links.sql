-- A delegated lease is reached by a rule on any client or signing key along
-- its chain, not only its own: the clients of its actors and of the leases
-- it was exchanged from, and the keys that signed those leases, are linked
-- beside it (lease_links: one row per link, the other columns NULL).
ALTER TABLE lease_links ADD COLUMN client TEXT;
ALTER TABLE lease_links ADD COLUMN kid TEXT;
CREATE INDEX lease_links_client_idx ON lease_links (client);
CREATE INDEX lease_links_kid_idx ON lease_links (kid);
