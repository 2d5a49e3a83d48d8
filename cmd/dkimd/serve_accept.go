package main

import (
	"net"

	"dkimd/internal/ops"
)

// retryAccept makes ln survive temporary accept errors (descriptor
// exhaustion above all), logged and counted per listener, so that one
// listener's bad moment never ends serve and every other listener with it.
// Every TCP listener of serve goes through it.
func (a *app) retryAccept(listener string, ln net.Listener) net.Listener {
	return ops.RetryAccept(a.registry, a.log, listener, ln)
}
