package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startAPI starts the api part of serve; each listener or loop stops when ctx ends.
func (a *app) startAPI(ctx context.Context, g *errgroup.Group) error {
	return nil
}
