package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/credentials"
)

// certCheckEvery bounds how often a handshake stats the certificate files:
// a node accepting many connections does not stat twice per handshake.
const certCheckEvery = time.Second

// certNow is the clock of the once-a-second check (a test steps it).
var certNow = time.Now

// reloadingPair is this node's certificate and key, re-read when either
// file's modification time or size changes, so a rotated certificate is
// presented on the next handshake without a restart (docs/cluster.md,
// "Certificate rotation"). A pair that does not load (half written,
// mismatched, or refused by check) keeps the old one and is logged once
// per change of the files, naming the files and the reason, never their
// contents. Connections already open keep the certificate they began with.
type reloadingPair struct {
	cert, key string
	// what names the files in logs ("tls_cert/tls_key").
	what string
	// check, if set, refuses a pair (the remoting certificate must be
	// signed by tls_ca: another one would be refused by every member).
	check func(leaf *x509.Certificate) error
	log   zerolog.Logger
	now   func() time.Time

	mu      sync.Mutex
	pair    *tls.Certificate
	seen    [2]fileStamp // stamps of the last attempt, loaded or not
	checked time.Time
}

// fileStamp tells a rewritten file from the one last read.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// newReloadingPair loads the pair once; an error here is a start-up error.
func newReloadingPair(cert, key, what string, check func(*x509.Certificate) error, log zerolog.Logger) (*reloadingPair, error) {
	r := &reloadingPair{cert: cert, key: key, what: what, check: check, log: log, now: certNow}
	st, err := r.stamps()
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", what, err)
	}
	pair, err := r.load()
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", what, err)
	}
	r.pair, r.seen, r.checked = pair, st, r.now()
	return r, nil
}

func (r *reloadingPair) stamps() ([2]fileStamp, error) {
	c, err := stampOf(r.cert)
	if err != nil {
		return [2]fileStamp{}, err
	}
	k, err := stampOf(r.key)
	if err != nil {
		return [2]fileStamp{}, err
	}
	return [2]fileStamp{c, k}, nil
}

func (r *reloadingPair) load() (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	pair.Leaf = leaf
	if r.check != nil {
		if err := r.check(leaf); err != nil {
			return nil, err
		}
	}
	return &pair, nil
}

// current is the pair to present, re-read first if the files changed
// since the last attempt and a second has passed since the last look.
func (r *reloadingPair) current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < certCheckEvery {
		return r.pair
	}
	r.checked = now
	st, err := r.stamps()
	if err != nil {
		if st != r.seen {
			r.seen = st
			r.log.Warn().Str("files", r.cert+", "+r.key).Err(err).
				Msgf("cluster: %s changed but cannot be read: keeping the certificate loaded before", r.what)
		}
		return r.pair
	}
	if st == r.seen {
		return r.pair
	}
	r.seen = st
	pair, err := r.load()
	if err != nil {
		// Also the middle of a rotation (certificate written, key not
		// yet): the key's write changes its stamp and is retried.
		r.log.Warn().Str("files", r.cert+", "+r.key).Err(err).
			Msgf("cluster: %s changed but does not load: keeping the certificate loaded before", r.what)
		return r.pair
	}
	r.pair = pair
	r.log.Info().Str("files", r.cert+", "+r.key).Str("serial", pair.Leaf.SerialNumber.String()).
		Time("not_after", pair.Leaf.NotAfter).Msgf("cluster: %s reloaded", r.what)
	return pair
}

// serverCert and clientCert are the tls.Config hooks.
func (r *reloadingPair) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current(), nil
}

func (r *reloadingPair) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.current(), nil
}

// reloadingPool is a CA file (tls_ca, etcd_ca) as a certificate pool,
// re-read like reloadingPair when the file's modification time or size
// changes, looked at no more than once a second and only when a handshake
// verifies a peer: a cluster moving to a new CA needs no restart. A file
// that does not load (unreadable, no PEM certificate in it) keeps the
// pool loaded before and is logged once per change of the file.
type reloadingPool struct {
	path, what string // what names the key in logs ("tls_ca")
	log        zerolog.Logger
	now        func() time.Time

	mu      sync.Mutex
	pool    *x509.CertPool
	seen    fileStamp
	checked time.Time
}

// newReloadingPool loads the file once; an error here is a start-up error.
func newReloadingPool(path, what string, log zerolog.Logger) (*reloadingPool, error) {
	r := &reloadingPool{path: path, what: what, log: log, now: certNow}
	st, err := stampOf(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", what, err)
	}
	pool, err := r.load()
	if err != nil {
		return nil, err
	}
	r.pool, r.seen, r.checked = pool, st, r.now()
	return r, nil
}

func (r *reloadingPool) load() (*x509.CertPool, error) {
	pem, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", r.what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster: %s %s holds no PEM certificate", r.what, r.path)
	}
	return pool, nil
}

// current is the pool to verify a peer against, re-read first if the file
// changed since the last attempt and a second has passed since the last
// look.
func (r *reloadingPool) current() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < certCheckEvery {
		return r.pool
	}
	r.checked = now
	st, err := stampOf(r.path)
	if err == nil && st == r.seen {
		return r.pool
	}
	r.seen = st
	var pool *x509.CertPool
	if err == nil {
		pool, err = r.load()
	}
	if err != nil {
		r.log.Warn().Str("file", r.path).Err(err).
			Msgf("cluster: %s changed but does not load: keeping the CA certificates loaded before", r.what)
		return r.pool
	}
	r.pool = pool
	r.log.Info().Str("file", r.path).Msgf("cluster: %s reloaded: new connections are verified against it", r.what)
	return pool
}

// verifyClient is a server's tls.Config VerifyConnection that checks the
// client's chain against the pool current at the handshake (the server
// configuration skips the standard check, whose ClientCAs pool is fixed
// when the configuration is made).
func (r *reloadingPool) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the client presented no certificate")
	}
	opts := x509.VerifyOptions{Roots: r.current(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// clientConfig makes base's client configuration with the pool current
// now as its roots, for one connection: the standard verification (the
// server's chain and the name dialled) against the CA file as it is.
func (r *reloadingPool) clientConfig(base *tls.Config) func() *tls.Config {
	return func() *tls.Config {
		c := base.Clone()
		c.RootCAs = r.current()
		return c
	}
}

// reloadingCreds are gRPC client transport credentials whose TLS
// configuration is made for each handshake (conf: with the CA pool of
// that moment), so a gRPC client dialling members or etcd verifies new
// connections against a reloaded CA file. gRPC's own TLS credentials keep
// the configuration they were made with.
type reloadingCreds struct {
	credentials.TransportCredentials // Info, Clone's base; made from conf()
	conf                             func() *tls.Config
}

func newReloadingCreds(conf func() *tls.Config) reloadingCreds {
	return reloadingCreds{credentials.NewTLS(conf()), conf}
}

func (c reloadingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.conf()).ClientHandshake(ctx, authority, conn)
}

func (c reloadingCreds) Clone() credentials.TransportCredentials {
	return reloadingCreds{c.TransportCredentials.Clone(), c.conf}
}
