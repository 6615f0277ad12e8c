// Package ssrftest has what tests of code behind the network policy need:
// a resolver that never touches DNS, and loopback targets that fail in
// each classified way.
package ssrftest

import (
	"context"
	"net"
	"net/netip"
)

// Resolver answers the names it maps with their address and every other
// name with NXDOMAIN (a *net.DNSError with IsNotFound), as a real
// resolver does for a name that does not exist. It never sends a packet.
type Resolver map[string]string

// LookupNetIP implements ssrf.Resolver.
func (r Resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ip, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
