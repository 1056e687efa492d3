package devenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrNotLoopback is returned when a listen address is not a loopback address
// and AllowRemote is not set. The embedded servers have no real
// authentication, so exposing them beyond the machine needs an explicit
// decision.
var ErrNotLoopback = errors.New("address is not loopback")

// checkListenAddr validates addr as host:port and, unless allowRemote, makes
// sure it binds a loopback interface only.
func checkListenAddr(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if allowRemote || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("listen address %q: %w: the embedded dev servers accept anyone who can reach them; "+
		"use 127.0.0.1 or set AllowRemote to expose them on purpose", addr, ErrNotLoopback)
}

// isLoopbackHost reports whether host names a loopback interface. An empty
// host binds every interface and is therefore not loopback.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
