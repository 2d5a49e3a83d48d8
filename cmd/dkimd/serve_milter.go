package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startMilter starts the milter part of serve; each listener or loop stops when ctx ends.
func (a *app) startMilter(ctx context.Context, g *errgroup.Group) error {
	return nil
}
