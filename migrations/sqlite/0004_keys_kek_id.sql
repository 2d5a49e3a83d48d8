-- Which key-encryption keys the store's private keys are sealed under is read
-- from the keys themselves (docs/decisions.md, "The store's KEK ids come from
-- its ciphertexts"): serve and every subcommand that loads a KEK ask for the
-- distinct kek_id of the keys that still hold a sealed private key. This
-- partial index makes that a walk over a handful of index entries instead of
-- a scan of every key.
CREATE INDEX keys_kek_id ON keys(kek_id) WHERE sealed_private_key IS NOT NULL;
