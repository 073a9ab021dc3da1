-- Sender-constrained tokens (issue 23, RFC 9449). A lease records the
-- thumbprint of the DPoP key its token is bound to (NULL: a bearer token);
-- a client may be registered so that it gets bound tokens only.
ALTER TABLE leases ADD COLUMN jkt TEXT;
ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens BOOLEAN NOT NULL DEFAULT FALSE;
