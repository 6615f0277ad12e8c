//go:build !unix

package telegram

import "net"

// peerClosed cannot peek at the socket here; a stale pooled connection is
// then found by using it (see botClient.post).
func peerClosed(net.Conn) bool { return false }
