package ssrftest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Targets are loopback addresses that fail in each way a network error is
// classified by, for tests of that classification. Nothing outside the
// machine is dialled.
type Targets struct {
	// Closed is host:port where nothing listens: connection refused.
	Closed string
	// Mute is host:port of a listener that accepts into its backlog and
	// never answers: a timeout.
	Mute string
	// UntrustedTLS is the https:// URL of a server whose certificate
	// nobody trusts: a TLS failure.
	UntrustedTLS string
}

// ClosedAddr is a loopback host:port where nothing listens (a port the
// kernel just gave out, closed again): a dial is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Unreachable starts the targets; they are closed when t ends.
func Unreachable(t testing.TB) Targets {
	t.Helper()
	closed := ClosedAddr(t)
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return Targets{Closed: closed, Mute: mute.Addr().String(), UntrustedTLS: srv.URL}
}
