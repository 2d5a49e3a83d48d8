package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startRotation starts the rotation part of serve; each listener or loop stops when ctx ends.
func (a *app) startRotation(ctx context.Context, g *errgroup.Group) error {
	return nil
}
