package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
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
