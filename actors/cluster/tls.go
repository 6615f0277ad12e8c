package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSFiles name the PEM files of mutual TLS between members: this node's
// certificate and key, and the CA that signs every member's certificate.
// Each side presents its certificate and checks the other's against the
// CA; a client also checks that the server's certificate covers the host
// it dialled (the member address in etcd: put that IP or name in the
// certificate's subject alternative names).
type TLSFiles struct {
	Cert, Key, CA string
}

// load reads the files and builds the server configuration and the
// client's (as of now: see loadReloading).
func (f TLSFiles) load(log zerolog.Logger) (server, client *tls.Config, err error) {
	server, fresh, err := f.loadReloading(log)
	if err != nil {
		return nil, nil, err
	}
	return server, fresh(), nil
}

// loadReloading reads the files and builds the server configuration and
// a maker of client configurations. The CA and this node's certificate
// and key are re-read when their files change (certreload.go), each new
// pair checked against the CA like the first: the server verifies each
// client against the CA file as it is at the handshake, and each client
// configuration made has the CA file as it is then.
func (f TLSFiles) loadReloading(log zerolog.Logger) (server *tls.Config, client func() *tls.Config, err error) {
	ca, err := newReloadingPool(f.CA, "tls_ca", log)
	if err != nil {
		return nil, nil, err
	}
	// A certificate the CA did not sign would be refused by every other
	// member: say so at start instead of joining and failing every call,
	// and keep the old one instead of reloading such a certificate.
	signed := func(leaf *x509.Certificate) error {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.current(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("tls_cert is not signed by tls_ca: %w", err)
		}
		return nil
	}
	pair, err := newReloadingPair(f.Cert, f.Key, "tls_cert/tls_key", signed, log)
	if err != nil {
		return nil, nil, err
	}
	// The client's chain is checked by VerifyConnection against tls_ca
	// as it is at the handshake: ClientCAs would be fixed now.
	server = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: pair.serverCert,
		ClientAuth: tls.RequireAnyClientCert, VerifyConnection: ca.verifyClient}
	client = ca.clientConfig(&tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: pair.clientCert})
	return server, client, nil
}

// loggedCreds logs every refused incoming handshake (a peer without a
// certificate from the cluster's CA, or a plain connection), naming the
// remote address and why; never certificate contents.
type loggedCreds struct {
	credentials.TransportCredentials
	log zerolog.Logger
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.log.Warn().Str("remote", conn.RemoteAddr().String()).Err(err).
			Msg("cluster remoting refused a connection: TLS handshake failed (a member needs a certificate signed by the cluster's tls_ca)")
	}
	return out, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}

// tlsOptions are the gRPC server and dial options of mutual TLS, and the
// client configuration of the start-up check.
func tlsOptions(f TLSFiles, log zerolog.Logger) ([]grpc.ServerOption, []grpc.DialOption, *tls.Config, error) {
	server, client, err := f.loadReloading(log)
	if err != nil {
		return nil, nil, nil, err
	}
	return []grpc.ServerOption{grpc.Creds(loggedCreds{credentials.NewTLS(server), log})},
		[]grpc.DialOption{grpc.WithTransportCredentials(newReloadingCreds(client))}, client(), nil
}

// checkPeersTLS completes a TLS handshake with one live member (from the
// node records in etcd) before this node joins: a node whose certificate
// the cluster's CA did not sign, or that does not trust the cluster's CA,
// is refused at start with the reason, instead of joining the member
// list and failing every call. The first node has nobody to ask.
func checkPeersTLS(ctx context.Context, addrs []string, client *tls.Config) error {
	var errs []error
	for _, a := range addrs {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: withServerName(client, a)}
		conn, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			// TLS 1.3 clients learn that the server refused their
			// certificate only on the first read.
			_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, rerr := conn.Read(make([]byte, 1))
			conn.Close()
			var ne net.Error
			if rerr == nil || (errors.As(rerr, &ne) && ne.Timeout()) {
				return nil
			}
			err = rerr
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			continue // not listening (a dead member's stale record)
		}
		errs = append(errs, fmt.Errorf("member %s: %w", a, err))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("cluster: TLS with the other members failed (is tls_cert signed by the cluster's CA, and tls_ca that CA?): %w", errors.Join(errs...))
}

func withServerName(c *tls.Config, addr string) *tls.Config {
	c = c.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = host
	}
	// HTTP/2 is what gRPC speaks; a server without it in ALPN is still
	// fine for a handshake check.
	c.NextProtos = []string{"h2"}
	return c
}
