package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startSign starts the sign part of serve; each listener or loop stops when ctx ends.
func (a *app) startSign(ctx context.Context, g *errgroup.Group) error {
	return nil
}
