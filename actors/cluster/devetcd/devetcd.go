// Package devetcd runs an embedded etcd server on loopback for tests and
// for `make cluster` (cmd/fangd-devetcd). It is never linked into fangd:
// production clusters run a real etcd deployment. Embedded rather than
// Debian's etcd-server because it starts offline in well under a second,
// needs no root and no apt, and is the same etcd code (server v3.5, the
// line protoactor-go's etcd provider is built against).
package devetcd

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	// Endpoint is host:port of its client listener.
	Endpoint string
	// Closer, when set, is what Close calls instead (tests that close
	// etcd early and in cleanup, once).
	Closer func()
}

// Start runs etcd with its data in dir, serving clients on clientAddr
// ("127.0.0.1:0" picks a free port) and peers on a free loopback port.
func Start(dir, clientAddr string) (*Server, error) {
	return start(dir, clientAddr, nil)
}

// TLS is the client listener's TLS: etcd's certificate and key, and (for
// ClientCertAuth) the CA whose certificates clients must present.
type TLS struct {
	Cert, Key, CA  string
	ClientCertAuth bool
}

// StartTLS is Start with clients served over TLS only (the tests of
// fangd's etcd client TLS; peers stay on plain loopback).
func StartTLS(dir, clientAddr string, t TLS) (*Server, error) {
	return start(dir, clientAddr, &t)
}

func start(dir, clientAddr string, t *TLS) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if clientAddr == "" {
		clientAddr = "127.0.0.1:0"
	}
	cl, err := freeAddr(clientAddr)
	if err != nil {
		return nil, err
	}
	pl, err := freeAddr("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	scheme := "http://"
	if t != nil {
		scheme = "https://"
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = t.Cert, t.Key
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = t.CA, t.ClientCertAuth
		cfg.ClientAutoTLS = false
	}
	cu, _ := url.Parse(scheme + cl)
	pu, _ := url.Parse("http://" + pl)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 20 s")
	}
	return &Server{etcd: e, Endpoint: cl}, nil
}

// Close stops etcd.
func (s *Server) Close() {
	if s.Closer != nil {
		s.Closer()
		return
	}
	s.etcd.Close()
}

// freeAddr resolves a ":0" port to a free one (etcd's URLs need the real
// port up front). A fixed port is returned as given.
func freeAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
