package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
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

// reloading is a value loaded from files (a certificate and key, a CA
// file), re-read when any file's modification time or size changes and at
// most once a second (certCheckEvery), so a rotated file is used on the
// next handshake without a restart (docs/cluster.md, "Certificate
// rotation"). A value that does not load (a file missing, half written,
// mismatched, or refused by a check) keeps the one loaded before and is
// logged once per change of the files, naming the files and the reason,
// never their contents. Connections already open keep what they began
// with.
type reloading[T any] struct {
	paths []string
	// what names the files in logs ("tls_cert/tls_key"), kept what is kept
	// when they do not load ("the certificate").
	what, kept string
	load       func() (T, error)
	// loaded logs a value that replaced the one before.
	loaded func(T)
	log    zerolog.Logger
	now    func() time.Time

	mu      sync.Mutex
	val     T
	seen    []fileStamp // stamps of the last attempt, loaded or not
	checked time.Time
}

// fileStamp tells a rewritten file from the one last read.
type fileStamp struct {
	mod  time.Time
	size int64
}

// stampsOf stamps each path; a file that cannot be stat'ed has the zero
// stamp, and the first such error is returned.
func stampsOf(paths []string) ([]fileStamp, error) {
	out := make([]fileStamp, len(paths))
	var first error
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, first
}

// start loads the value once; an error here is a start-up error.
func (r *reloading[T]) start() error {
	r.now = certNow
	st, err := stampsOf(r.paths)
	if err == nil {
		r.val, err = r.load()
	}
	if err != nil {
		return fmt.Errorf("cluster: %s: %w", r.what, err)
	}
	r.seen, r.checked = st, r.now()
	return nil
}

// current is the value to use, re-read first if the files changed since
// the last attempt and a second has passed since the last look.
func (r *reloading[T]) current() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < certCheckEvery {
		return r.val
	}
	r.checked = now
	st, err := stampsOf(r.paths)
	if slices.Equal(st, r.seen) {
		return r.val
	}
	r.seen = st
	var v T
	if err == nil {
		v, err = r.load()
	}
	if err != nil {
		// Also the middle of a rotation (certificate written, key not
		// yet): the key's write changes its stamp and is retried.
		r.log.Warn().Str("files", strings.Join(r.paths, ", ")).Err(err).
			Msgf("cluster: %s changed but does not load: keeping %s loaded before", r.what, r.kept)
		return r.val
	}
	r.val = v
	r.loaded(v)
	return v
}

// reloadingPair is this node's certificate and key, reloading.
type reloadingPair struct {
	reloading[*tls.Certificate]
	cert, key string
	// check, if set, refuses a pair (the remoting certificate must be
	// signed by tls_ca: another one would be refused by every member).
	check func(leaf *x509.Certificate) error
}

func newReloadingPair(cert, key, what string, check func(*x509.Certificate) error, log zerolog.Logger) (*reloadingPair, error) {
	r := &reloadingPair{cert: cert, key: key, check: check}
	r.reloading = reloading[*tls.Certificate]{paths: []string{cert, key}, what: what, kept: "the certificate",
		load: r.loadPair, log: log,
		loaded: func(pair *tls.Certificate) {
			log.Info().Str("files", cert+", "+key).Str("serial", pair.Leaf.SerialNumber.String()).
				Time("not_after", pair.Leaf.NotAfter).Msgf("cluster: %s reloaded", what)
		}}
	return r, r.start()
}

func (r *reloadingPair) loadPair() (*tls.Certificate, error) {
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

// serverCert and clientCert are the tls.Config hooks.
func (r *reloadingPair) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current(), nil
}

func (r *reloadingPair) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.current(), nil
}

// reloadingPool is a CA file (tls_ca, etcd_ca) as a certificate pool,
// reloading like the node's certificate, looked at only when a handshake
// verifies a peer: a cluster moving to a new CA needs no restart.
type reloadingPool struct {
	reloading[*x509.CertPool]
}

func newReloadingPool(path, what string, log zerolog.Logger) (*reloadingPool, error) {
	r := &reloadingPool{reloading[*x509.CertPool]{paths: []string{path}, what: what, kept: "the CA certificates",
		load: func() (*x509.CertPool, error) { return loadPool(path) }, log: log,
		loaded: func(*x509.CertPool) {
			log.Info().Str("files", path).Msgf("cluster: %s reloaded: new connections are verified against it", what)
		}}}
	return r, r.start()
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
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
