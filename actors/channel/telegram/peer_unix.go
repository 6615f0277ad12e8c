//go:build unix

package telegram

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the server closed (or reset) an idle pooled
// connection: a non-blocking peek at the socket sees end of file. Anything
// else, including bytes waiting (a TLS session ticket), counts as open.
func peerClosed(conn net.Conn) bool {
	if t, ok := conn.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		conn = t.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil || errors.Is(err, syscall.ECONNRESET)
		return true // never wait
	})
	return closed
}
