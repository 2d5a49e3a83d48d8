package keystore

import (
	"context"
	"fmt"
)

// DeleteKey removes one slot of an owner: the end of a selector that the
// owner no longer has (a domain's retired Ed25519 pair after its grace).
// Like PutKey it records the change of the owner's published records.
func (t *txn) DeleteKey(ctx context.Context, kind OwnerKind, owner, selector string) error {
	err := expectOne(t.q.ExecContext(ctx, `DELETE FROM keys WHERE owner_kind = $1 AND owner = $2 AND selector = $3`,
		string(kind), owner, selector))(fmt.Sprintf("delete key %s/%s", owner, selector))
	if err != nil {
		return err
	}
	t.zoneChanged(kind, owner)
	return nil
}
