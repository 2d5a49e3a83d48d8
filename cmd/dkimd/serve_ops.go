package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startOps starts the ops part of serve; each listener or loop stops when ctx ends.
func (a *app) startOps(ctx context.Context, g *errgroup.Group) error {
	return nil
}
