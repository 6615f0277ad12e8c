package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel/kerneltest"
)

// useStepClock makes certNow a clock that moves only when told to.
func useStepClock(t *testing.T) *kerneltest.Clock {
	c := kerneltest.NewClock(time.Now())
	certNow = c.Now
	t.Cleanup(func() { certNow = time.Now })
	return c
}

// syncBuf is a log sink read while handshakes may write it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// handshake runs one TLS handshake over a pipe and returns the serial of
// the certificate each side presented.
func handshake(t *testing.T, server, client *tls.Config) (serverSerial, clientSerial *big.Int) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := client.Clone()
	c.ServerName = "127.0.0.1"
	srv, cli := tls.Server(a, server), tls.Client(b, c)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return cli.ConnectionState().PeerCertificates[0].SerialNumber, srv.ConnectionState().PeerCertificates[0].SerialNumber
}

func serialOf(t *testing.T, certFile string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber
}

// touch sets a file's modification time past any earlier write, so the
// change is seen on file systems with coarse timestamps.
func touch(t *testing.T, when time.Time, files ...string) {
	t.Helper()
	for _, f := range files {
		if err := os.Chtimes(f, when, when); err != nil {
			t.Fatal(err)
		}
	}
}

// A node's remoting certificate rotated on disk (a new one from the same
// CA) is presented on the next handshake, as server and as client, once
// the once-a-second check comes round; a broken pair (a key that is not
// PEM) or one from another CA keeps the previous certificate and is
// logged without key material.
func TestRemotingCertificateReloads(t *testing.T) {
	clock := useStepClock(t)
	ca, other := mustCA(t, "cluster"), mustCA(t, "other")
	node := mustIssue(t, ca, "n1")
	peer := mustIssue(t, ca, "n2")
	var logs syncBuf
	server, client, err := node.load(zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	peerServer, peerClient, err := peer.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	first := serialOf(t, node.Cert)
	if s, _ := handshake(t, server, peerClient); s.Cmp(first) != 0 {
		t.Fatalf("server presented %v, want %v", s, first)
	}

	// Rotate: a new certificate and key from the same CA over the files.
	dir := filepath.Dir(node.Cert)
	if _, _, _, err := ca.Issue(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(time.Minute), node.Cert, node.Key)
	second := serialOf(t, node.Cert)
	if s, _ := handshake(t, server, peerClient); s.Cmp(first) != 0 {
		t.Fatalf("within a second of the last check the files were read again: %v", s)
	}
	clock.Advance(certCheckEvery)
	if s, _ := handshake(t, server, peerClient); s.Cmp(second) != 0 {
		t.Fatalf("after rotation the server presented %v, want %v", s, second)
	}
	if _, c := handshake(t, peerServer, client); c.Cmp(second) != 0 {
		t.Fatalf("after rotation the client presented %v, want %v", c, second)
	}

	// A key that is not PEM: the second certificate stays.
	keyPEM, err := os.ReadFile(node.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(node.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(2*time.Minute), node.Key)
	clock.Advance(certCheckEvery)
	if s, _ := handshake(t, server, peerClient); s.Cmp(second) != 0 {
		t.Fatalf("a broken key replaced the certificate: %v", s)
	}
	if _, c := handshake(t, peerServer, client); c.Cmp(second) != 0 {
		t.Fatalf("a broken key replaced the client certificate: %v", c)
	}
	// Another CA's certificate: refused by every member, so not loaded.
	if _, _, _, err := other.Issue(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	// Issue wrote the other CA over ca.crt as well, which tls_ca would
	// now reload: put the cluster's CA back (same content).
	if err := os.WriteFile(node.CA, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(3*time.Minute), node.Cert, node.Key)
	clock.Advance(certCheckEvery)
	if s, _ := handshake(t, server, peerClient); s.Cmp(second) != 0 {
		t.Fatalf("another CA's certificate was loaded: %v", s)
	}
	out := logs.String()
	if strings.Count(out, "does not load: keeping the certificate loaded before") != 2 || !strings.Contains(out, "not signed by tls_ca") {
		t.Fatalf("want one warning per broken change, the second naming the CA; logs:\n%s", out)
	}
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, strings.TrimSpace(string(keyPEM))[40:80]) {
		t.Fatalf("key material in the logs:\n%s", out)
	}
}

// The etcd client certificate reloads the same way: a rotated pair is
// presented on the next connection, a mismatched pair keeps the old one.
func TestEtcdClientCertificateReloads(t *testing.T) {
	clock := useStepClock(t)
	ca := mustCA(t, "etcd")
	server := mustIssue(t, ca, "etcd")
	cli := mustIssue(t, ca, "client")
	var logs syncBuf
	conf, err := EtcdTLS{CA: cli.CA, Cert: cli.Cert, Key: cli.Key}.config(zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	etcdSide, _, err := server.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	first := serialOf(t, cli.Cert)
	if _, c := handshake(t, etcdSide, conf); c.Cmp(first) != 0 {
		t.Fatalf("client presented %v, want %v", c, first)
	}
	dir := filepath.Dir(cli.Cert)
	if _, _, _, err := ca.Issue(dir, "client"); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(time.Minute), cli.Cert, cli.Key)
	second := serialOf(t, cli.Cert)
	clock.Advance(certCheckEvery)
	if _, c := handshake(t, etcdSide, conf); c.Cmp(second) != 0 {
		t.Fatalf("after rotation the client presented %v, want %v", c, second)
	}
	// Half a rotation: a new certificate with the old key.
	keep, err := os.ReadFile(cli.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ca.Issue(dir, "client"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cli.Key, keep, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(2*time.Minute), cli.Cert, cli.Key)
	clock.Advance(certCheckEvery)
	if _, c := handshake(t, etcdSide, conf); c.Cmp(second) != 0 {
		t.Fatalf("a mismatched pair replaced the certificate: %v", c)
	}
	if !strings.Contains(logs.String(), "etcd_cert/etcd_key changed but does not load") {
		t.Fatalf("no warning for the mismatched pair; logs:\n%s", logs.String())
	}
}

// handshakeErr is handshake for a pair that may refuse each other: the
// client's and the server's errors. Over loopback TCP, not a pipe: a side
// that refuses writes its alert while the other may be writing too.
func handshakeErr(server, client *tls.Config) (clientErr, serverErr error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close()
		srv := tls.Server(conn, server)
		err = srv.Handshake()
		if err == nil {
			// TLS 1.3: the client's certificate arrives after the
			// client's handshake ends; read to see a refusal of it.
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = srv.Read(make([]byte, 1))
		}
		errc <- err
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err, err
	}
	c := client.Clone()
	c.ServerName = "127.0.0.1"
	cli := tls.Client(conn, c)
	clientErr = cli.Handshake()
	cli.Close()
	return clientErr, <-errc
}

// tls_ca rotated on disk: the cluster moves to a new CA (the file holding
// both while members move, then the new one alone). A peer with a
// certificate from the new CA is refused before the file changes and
// accepted, as client and as server, once the once-a-second check reads
// it; this node's own certificate rotated to the new CA then loads. A CA
// file that does not load keeps the pool before it and warns.
func TestRemotingCAReloads(t *testing.T) {
	clock := useStepClock(t)
	oldCA, newCA := mustCA(t, "cluster"), mustCA(t, "cluster-2")
	node := mustIssue(t, oldCA, "n1")
	var logs syncBuf
	server, client, err := node.loadReloading(zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	moved := mustIssue(t, newCA, "n2") // a peer already on the new CA
	// The peer trusts both (its tls_ca holds both CAs), so only this
	// node's side decides.
	both := append(append([]byte{}, oldCA.PEM...), newCA.PEM...)
	if err := os.WriteFile(moved.CA, both, 0o600); err != nil {
		t.Fatal(err)
	}
	movedServer, movedClient, err := moved.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := handshakeErr(server, movedClient); serr == nil || !strings.Contains(serr.Error(), "unknown authority") {
		t.Fatalf("a peer of a CA tls_ca does not hold was accepted: %v", serr)
	}

	// The move: tls_ca holds both CAs.
	if err := os.WriteFile(node.CA, both, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(2*time.Minute), node.CA)
	if _, serr := handshakeErr(server, movedClient); serr == nil {
		t.Fatal("the CA file was read again within a second of the last check")
	}
	clock.Advance(certCheckEvery)
	handshake(t, server, movedClient)
	handshake(t, movedServer, client())

	// This node's certificate from the new CA, then tls_ca the new CA
	// alone: the old-CA peer is refused, the new one still accepted.
	dir := filepath.Dir(node.Cert)
	if _, _, _, err := newCA.Issue(dir, "n1"); err != nil { // writes ca.crt = new CA alone
		t.Fatal(err)
	}
	touch(t, time.Now().Add(3*time.Minute), node.Cert, node.Key, node.CA)
	clock.Advance(certCheckEvery)
	if s, _ := handshake(t, server, movedClient); s.Cmp(serialOf(t, node.Cert)) != 0 {
		t.Fatalf("the certificate from the new CA was not loaded: %v", s)
	}
	stale := mustIssue(t, oldCA, "n3")
	_, staleClient, err := stale.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := handshakeErr(server, staleClient); serr == nil {
		t.Fatal("a peer of the retired CA was accepted")
	}

	// A CA file that is not PEM: the pool before stays.
	if err := os.WriteFile(node.CA, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(4*time.Minute), node.CA)
	clock.Advance(certCheckEvery)
	handshake(t, server, movedClient)
	out := logs.String()
	if !strings.Contains(out, "tls_ca reloaded") || strings.Count(out, "tls_ca changed but does not load") != 1 {
		t.Fatalf("logs:\n%s", out)
	}
}

// etcd_ca rotated on disk: an etcd serving a certificate from a new CA is
// refused until the file holds that CA, then accepted on the next
// connection, without a new client configuration.
func TestEtcdCAReloads(t *testing.T) {
	clock := useStepClock(t)
	oldCA, newCA := mustCA(t, "etcd"), mustCA(t, "etcd-2")
	cli := mustIssue(t, oldCA, "client")
	conf, dial, err := EtcdTLS{CA: cli.CA}.configs(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	etcdNew := mustIssue(t, newCA, "etcd")
	etcdSide, _, err := etcdNew.load(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	// etcd does not ask for a client certificate here.
	etcdSide.ClientAuth, etcdSide.VerifyConnection = tls.NoClientCert, nil
	if len(dial) != 1 {
		t.Fatal("no dial option making the configuration per connection")
	}
	if cerr, _ := handshakeErr(etcdSide, conf()); cerr == nil || !strings.Contains(cerr.Error(), "unknown authority") {
		t.Fatalf("an etcd certificate from a CA etcd_ca does not hold was accepted: %v", cerr)
	}
	if err := os.WriteFile(cli.CA, newCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(time.Minute), cli.CA)
	clock.Advance(certCheckEvery)
	if cerr, serr := handshakeErr(etcdSide, conf()); cerr != nil || serr != nil {
		t.Fatalf("after etcd_ca changed: client %v, server %v", cerr, serr)
	}
}

// A CA file that goes missing keeps the pool before it and warns once, not
// on every second's look: the pool's reload warned each time while the
// certificate's warned once per change of the files, until both shared one
// reloader.
func TestMissingCAFileWarnsOncePerChange(t *testing.T) {
	clock := useStepClock(t)
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, mustCA(t, "cluster").PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	r, err := newReloadingPool(path, "tls_ca", zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	before := r.current()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		clock.Advance(certCheckEvery)
		if r.current() != before {
			t.Fatal("a missing CA file replaced the pool")
		}
	}
	if n := strings.Count(logs.String(), "tls_ca changed but does not load"); n != 1 {
		t.Fatalf("%d warnings for one missing file:\n%s", n, logs.String())
	}
}
