package main

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// startDNS starts the dns part of serve; each listener or loop stops when ctx ends.
func (a *app) startDNS(ctx context.Context, g *errgroup.Group) error {
	return nil
}
