package main

import (
	"context"
	"errors"
	"io/fs"
	"strings"

	"dkimd/internal/config"
	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// kekPlan is what dkimd found out about the key-encryption key before doing
// anything: either a loaded Box that opens every private key in the store,
// or, only for the first serve of an empty embedded store, the path where a
// new KEK is to be generated once every other check has passed.
type kekPlan struct {
	box      *sealbox.Box
	path     string
	generate bool
}

// planKEK finds the KEK and checks it against the ids of the KEKs the
// store's private keys are sealed under (docs/decisions.md, "The store's KEK
// ids come from its ciphertexts"). It never writes anything. A missing KEK
// is an error unless mayGenerate (serve) and the store is embedded, uses the
// default path and holds no sealed key yet.
func planKEK(ctx context.Context, cfg config.Config, store *keystore.SQL, mayGenerate bool) (kekPlan, error) {
	ids, err := store.KEKIDs(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return kekPlan{}, ctx.Err()
		}
		return kekPlan{}, fail(err, "cannot read which key-encryption keys the store uses (--log-level debug shows why)")
	}
	expected := ""
	if len(ids) > 0 {
		expected = "; the store's private keys are sealed under " + strings.Join(ids, ", ")
	}
	path, explicit := cfg.MasterKeyFile, cfg.MasterKeyFile != ""
	if !explicit {
		if cfg.DatabaseURL != "" {
			return kekPlan{}, fail(nil, "no key-encryption key: with --database-url, set --master-key-file (env DKIMD_MASTER_KEY_FILE) to the deployment's KEK file%s", expected)
		}
		path = sealbox.DefaultPath(cfg.DataDir)
	}
	box, err := sealbox.LoadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && explicit:
		return kekPlan{}, fail(err, "--master-key-file: %s does not exist%s", path, expected)
	case errors.Is(err, fs.ErrNotExist) && len(ids) > 0:
		return kekPlan{}, fail(err, "the key-encryption key %s is missing%s: restore the file from the backup, or set --master-key-file (env DKIMD_MASTER_KEY_FILE)", path, expected)
	case errors.Is(err, fs.ErrNotExist) && !mayGenerate:
		return kekPlan{}, fail(err, "no key-encryption key in %s: the first dkimd serve of this data dir generates it, or set --master-key-file (env DKIMD_MASTER_KEY_FILE)", path)
	case errors.Is(err, fs.ErrNotExist):
		return kekPlan{path: path, generate: true}, nil
	case err != nil:
		return kekPlan{}, fail(err, "key-encryption key: %s", strings.TrimPrefix(err.Error(), "sealbox: "))
	}
	var missing []string
	for _, id := range ids {
		if !box.Holds(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return kekPlan{}, fail(nil, "the key-encryption key file %s holds %s, not %s, under which the store's private keys are sealed: set --master-key-file (env DKIMD_MASTER_KEY_FILE) to the file that holds %s",
			path, strings.Join(box.IDs(), ", "), strings.Join(missing, ", "), strings.Join(ids, ", "))
	}
	return kekPlan{box: box, path: path}, nil
}

// loadKEK is planKEK for the subcommands: they never generate a KEK.
func loadKEK(ctx context.Context, cfg config.Config, store *keystore.SQL) (*sealbox.Box, error) {
	p, err := planKEK(ctx, cfg, store, false)
	return p.box, err
}
