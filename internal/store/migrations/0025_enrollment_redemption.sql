-- An enrollment token remembers what it was redeemed for: the certificate
-- issued and the SHA-256 of the key it certifies, so that a hub whose
-- answer was lost gets the same certificate again with the same key.
ALTER TABLE enrollment_tokens
    ADD COLUMN cert_pem   text,
    ADD COLUMN key_sha256 bytea CHECK (key_sha256 IS NULL OR length(key_sha256) = 32);
