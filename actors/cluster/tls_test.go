package cluster

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/cluster/devcerts"
	"github.com/rs/zerolog"
)

func mustCA(t *testing.T, name string) *devcerts.CA {
	t.Helper()
	ca, err := devcerts.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *devcerts.CA, name string) TLSFiles {
	t.Helper()
	cert, key, caFile, err := ca.Issue(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return TLSFiles{Cert: cert, Key: key, CA: caFile}
}

// serveTLS is a member's listener stand-in: mutual TLS with cfg, reading
// until the client goes.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String()
}

// A certificate the configured CA did not sign is refused when the files
// are loaded; before joining, a handshake with a live member succeeds
// with the cluster CA's certificate and fails with another CA's (on
// either side), while a dead member's stale address is skipped.
func TestTLSFilesAndPeerCheck(t *testing.T) {
	t.Parallel()
	ca, other := mustCA(t, "cluster"), mustCA(t, "other")
	good := mustIssue(t, ca, "n1")
	rogue := mustIssue(t, other, "rogue")

	mixed := TLSFiles{Cert: rogue.Cert, Key: rogue.Key, CA: good.CA}
	if _, _, err := mixed.load(zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "not signed by tls_ca") {
		t.Fatalf("a certificate from another CA: %v", err)
	}
	if _, _, err := (TLSFiles{Cert: good.Cert, Key: good.Key, CA: good.Cert + ".missing"}).load(zerolog.Nop()); err == nil {
		t.Fatal("a missing tls_ca accepted")
	}

	srv, _, err := good.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	member := serveTLS(t, srv)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()

	_, peer, err := mustIssue(t, ca, "n2").load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPeersTLS(context.Background(), []string{dead, member}, peer); err != nil {
		t.Fatalf("a member of the same CA refused: %v", err)
	}
	if err := checkPeersTLS(context.Background(), []string{dead}, peer); err != nil {
		t.Fatalf("only a dead member (nobody to ask): %v", err)
	}
	_, rogueClient, err := rogue.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPeersTLS(context.Background(), []string{member}, rogueClient); err == nil || !strings.Contains(err.Error(), "TLS with the other members failed") {
		t.Fatalf("a node of another CA: %v", err)
	}
	// Trusts the cluster's CA but presents another CA's certificate: the
	// member refuses it (seen on the first read under TLS 1.3).
	sneaky := rogueClient.Clone()
	sneaky.RootCAs = peer.RootCAs
	if err := checkPeersTLS(context.Background(), []string{member}, sneaky); err == nil {
		t.Fatal("a client certificate from another CA was accepted by the member")
	}
}
