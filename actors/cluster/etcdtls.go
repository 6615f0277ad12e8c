package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
)

// EtcdTLS is TLS on fangd's etcd client connections (docs/cluster.md,
// "TLS to etcd"): the membership provider's and fangd's own (records,
// channels, webhooks, budgets, approvals), which share one configuration.
type EtcdTLS struct {
	// CA is a PEM file of the CA that signed etcd's server certificate;
	// empty: the system's roots.
	CA string
	// Cert and Key are a client certificate and its key for an etcd
	// that asks for one (--client-cert-auth); both or neither.
	Cert, Key string
}

// config reads the files into a client TLS configuration, as of now (see
// configs).
func (t EtcdTLS) config(log zerolog.Logger) (*tls.Config, error) {
	fresh, _, err := t.configs(log)
	if err != nil {
		return nil, err
	}
	return fresh(), nil
}

// configs reads the files and returns a maker of client TLS
// configurations and, when etcd_ca is set, gRPC dial options that make one
// for each connection. The CA, the client certificate and its key are
// re-read when their files change (certreload.go), so a rotated CA
// verifies, and a rotated client certificate is presented on, the etcd
// client's next connection.
func (t EtcdTLS) configs(log zerolog.Logger) (func() *tls.Config, []grpc.DialOption, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if (t.Cert == "") != (t.Key == "") {
		return nil, nil, errors.New("cluster: etcd_cert and etcd_key go together")
	}
	if t.Cert != "" {
		pair, err := newReloadingPair(t.Cert, t.Key, "etcd_cert/etcd_key", nil, log)
		if err != nil {
			return nil, nil, err
		}
		conf.GetClientCertificate = pair.clientCert
	}
	if t.CA == "" {
		// The system's roots.
		return func() *tls.Config { return conf.Clone() }, nil, nil
	}
	ca, err := newReloadingPool(t.CA, "etcd_ca", log)
	if err != nil {
		return nil, nil, err
	}
	fresh := ca.clientConfig(conf)
	// Appended after the etcd client's own TLS credentials (made once
	// from Config.TLS), so these are the ones used.
	return fresh, []grpc.DialOption{grpc.WithTransportCredentials(newReloadingCreds(fresh))}, nil
}

// etcdProbeTimeout bounds the handshakes that explain a failed start.
const etcdProbeTimeout = 5 * time.Second

// checkEtcdTLS completes a TLS handshake with each endpoint before the
// etcd client (whose error would only say the connection did not become
// ready) is built: an etcd that does not speak TLS, or whose certificate
// etcd_ca did not sign, is a clear start-up error.
func checkEtcdTLS(endpoints []string, conf *tls.Config) error {
	for _, ep := range endpoints {
		host, _, err := net.SplitHostPort(ep)
		if err != nil {
			return fmt.Errorf("cluster: etcd endpoint %q: %w", ep, err)
		}
		c := conf.Clone()
		c.ServerName = host
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: etcdProbeTimeout}, "tcp", ep, c)
		var rh tls.RecordHeaderError
		switch {
		case errors.As(err, &rh), errors.Is(err, io.EOF):
			// A plain etcd answers a ClientHello in plain, or (its
			// listener multiplexes gRPC and HTTP) hangs up on it.
			return fmt.Errorf("cluster: etcd at %s does not speak TLS (it answered a TLS handshake in plain or hung up): use etcd:// without etcd_tls/etcd_ca/etcd_cert/etcd_key, or turn on TLS in etcd", ep)
		case err != nil:
			return fmt.Errorf("cluster: TLS to etcd at %s failed: %w (is its certificate signed by etcd_ca and issued for %s?)", ep, err, host)
		}
		conn.Close()
	}
	return nil
}

// explainPlain is the start-up error of a plain etcd client that got no
// answer: if the endpoint completes a TLS handshake, etcd serves TLS and
// the node's configuration is what is wrong.
func explainPlain(endpoints []string, cause error) error {
	for _, ep := range endpoints {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: etcdProbeTimeout}, "tcp", ep,
			// Only asks whether the server speaks TLS; nothing is sent.
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		if err == nil {
			conn.Close()
			return fmt.Errorf("cluster: etcd at %s serves TLS but this node's etcd client is plain: use --cluster etcds://HOST:PORT or [cluster] etcd_tls = true with etcd_ca (and etcd_cert/etcd_key if etcd asks for client certificates)", ep)
		}
	}
	return fmt.Errorf("cluster: etcd at %v does not answer: %w", endpoints, cause)
}
