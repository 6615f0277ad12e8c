package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	fcluster "github.com/fangd/fangd/actors/cluster"
	"github.com/fangd/fangd/store"
)

// ClusterConfig is [cluster]: cluster mode (docs/cluster.md). Empty Etcd
// (and no --cluster flag) is a single node: no etcd, no remoting.
type ClusterConfig struct {
	// Etcd are the etcd client endpoints, host:port.
	Etcd []string `toml:"etcd"`
	// Name is the cluster's name (default "fangd"): nodes sharing etcd
	// and name form one cluster.
	Name string `toml:"name"`
	// NodeName names this node (default: the name kept in the home,
	// derived at its first start from the host name and API port).
	NodeName string `toml:"node_name"`
	// BindHost and BindPort are where the node listens for the other
	// members (default 127.0.0.1, port 0: a free port); AdvertisedHost is
	// the host the others dial when it differs (NAT, containers).
	BindHost       string `toml:"bind_host"`
	BindPort       int    `toml:"bind_port"`
	AdvertisedHost string `toml:"advertised_host"`
	// WatchdogGraceSecs is how long a node may stay excluded from its own
	// topology (upstream's etcd-rejoin trap) before the watchdog acts
	// (default 10); WatchdogAction is what it does: "exit" (default: a
	// graceful stop and exit status 75 for the supervisor to restart the
	// process with a fresh member id) or "log" (audit it, stop its
	// channels, stay excluded). There is no in-process rejoin: see
	// docs/cluster.md "Watchdog".
	WatchdogGraceSecs int    `toml:"watchdog_grace_secs"`
	WatchdogAction    string `toml:"watchdog_action"`
	// TLSCert, TLSKey and TLSCA turn on mutual TLS between the members'
	// remoting listeners (PEM files; all three or none).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	TLSCA   string `toml:"tls_ca"`
	// EtcdTLS turns on TLS to etcd (so does --cluster etcds:// or any of
	// the three files): EtcdCA is the CA of etcd's server certificate
	// (default: the system's roots), EtcdCert and EtcdKey a client
	// certificate for an etcd that asks for one.
	EtcdTLS  bool   `toml:"etcd_tls"`
	EtcdCA   string `toml:"etcd_ca"`
	EtcdCert string `toml:"etcd_cert"`
	EtcdKey  string `toml:"etcd_key"`
	// EtcdUsername and a password turn on etcd's username/password
	// authentication: EtcdPassword is the password, or "vault:NAME" for
	// one stored with `fangd vault set NAME`; EtcdPasswordEnv names an
	// environment variable holding it instead (set one of the two).
	EtcdUsername    string `toml:"etcd_username"`
	EtcdPassword    string `toml:"etcd_password"`
	EtcdPasswordEnv string `toml:"etcd_password_env"`
	// etcdPlainFlag: --cluster said etcd:// (plain) explicitly.
	etcdPlainFlag bool
}

// exitClusterExcluded is fangd serve's exit status when the watchdog
// stopped a node excluded from the cluster (EX_TEMPFAIL): distinct from
// every other status, so a supervisor restarts it (systemd
// Restart=on-failure, or RestartForceExitStatus=75).
const exitClusterExcluded = 75

const defaultWatchdogGrace = 10

func (c ClusterConfig) watchdogGrace() int {
	if c.WatchdogGraceSecs == 0 {
		return defaultWatchdogGrace
	}
	return c.WatchdogGraceSecs
}

func (c ClusterConfig) watchdogAction() string {
	if c.WatchdogAction == "" {
		return "exit"
	}
	return c.WatchdogAction
}

func (c ClusterConfig) tlsEnabled() bool { return c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != "" }

var clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func (c ClusterConfig) etcdTLSEnabled() bool {
	return c.EtcdTLS || c.EtcdCA != "" || c.EtcdCert != "" || c.EtcdKey != ""
}

// etcdTLS is the etcd client's TLS, nil when plain.
func (c ClusterConfig) etcdTLS() *fcluster.EtcdTLS {
	if !c.etcdTLSEnabled() {
		return nil
	}
	return &fcluster.EtcdTLS{CA: c.EtcdCA, Cert: c.EtcdCert, Key: c.EtcdKey}
}

// parseClusterURL reads --cluster etcd://HOST:PORT[,HOST:PORT...], or
// etcds:// for TLS to etcd (secure true).
func parseClusterURL(s string) (eps []string, secure bool, err error) {
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "etcds://"); !ok {
			return nil, false, fmt.Errorf("--cluster %q: want etcd://HOST:PORT[,HOST:PORT] (etcds:// for TLS to etcd)", s)
		}
		secure = true
	}
	for _, ep := range strings.Split(rest, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return nil, false, fmt.Errorf("--cluster %q: no etcd endpoint", s)
	}
	return eps, secure, nil
}

func (c ClusterConfig) enabled() bool { return len(c.Etcd) > 0 }

func (c ClusterConfig) validate() error {
	if !c.enabled() {
		return nil
	}
	var errs []error
	for _, ep := range c.Etcd {
		if _, port, err := net.SplitHostPort(ep); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("cluster.etcd %q: want host:port", ep))
		}
	}
	if !clusterNameRe.MatchString(c.clusterName()) {
		errs = append(errs, fmt.Errorf("cluster.name %q: 1-64 letters, digits, '_', '.' or '-'", c.Name))
	}
	if len(c.NodeName) > 128 {
		errs = append(errs, errors.New("cluster.node_name must be at most 128 characters"))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, errors.New("cluster.bind_port must be between 0 and 65535"))
	}
	if c.AdvertisedHost != "" && c.BindPort == 0 {
		errs = append(errs, errors.New("cluster.advertised_host needs a fixed cluster.bind_port (the others dial that port)"))
	}
	if c.BindHost != "" && net.ParseIP(c.BindHost) == nil && c.BindHost != "localhost" {
		errs = append(errs, fmt.Errorf("cluster.bind_host %q: want an IP address", c.BindHost))
	}
	if c.WatchdogGraceSecs < 0 || c.WatchdogGraceSecs > 3600 {
		errs = append(errs, errors.New("cluster.watchdog_grace_secs must be between 1 and 3600 (0: the default, 10)"))
	}
	switch c.WatchdogAction {
	case "", "exit", "log":
	case "rejoin":
		errs = append(errs, errors.New(`cluster.watchdog_action "rejoin" is not supported: upstream blocks the member id for good and a fresh id needs a fresh actor system, i.e. a restart; use "exit" with a supervisor that restarts fangd`))
	default:
		errs = append(errs, fmt.Errorf("cluster.watchdog_action %q: want \"exit\" or \"log\"", c.WatchdogAction))
	}
	if c.tlsEnabled() {
		for _, f := range []struct{ key, path string }{{"tls_cert", c.TLSCert}, {"tls_key", c.TLSKey}, {"tls_ca", c.TLSCA}} {
			if f.path == "" {
				errs = append(errs, fmt.Errorf("cluster.%s is missing: TLS between nodes needs tls_cert, tls_key and tls_ca", f.key))
			} else if _, err := os.Stat(f.path); err != nil {
				errs = append(errs, fmt.Errorf("cluster.%s: %v", f.key, err))
			}
		}
	}
	if c.etcdPlainFlag && c.etcdTLSEnabled() {
		errs = append(errs, errors.New("--cluster etcd:// is plain but [cluster] turns on TLS to etcd (etcd_tls/etcd_ca/etcd_cert/etcd_key): use --cluster etcds://"))
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		errs = append(errs, errors.New("cluster.etcd_cert and cluster.etcd_key go together (a client certificate for etcd)"))
	}
	for _, f := range []struct{ key, path string }{{"etcd_ca", c.EtcdCA}, {"etcd_cert", c.EtcdCert}, {"etcd_key", c.EtcdKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("cluster.%s: %v", f.key, err))
		}
	}
	errs = append(errs, c.validateEtcdAuth()...)
	return errors.Join(errs...)
}

// validateEtcdAuth checks etcd_username and its password's source; the
// errors never contain the password.
func (c ClusterConfig) validateEtcdAuth() []error {
	hasPw := c.EtcdPassword != "" || c.EtcdPasswordEnv != ""
	switch {
	case c.EtcdPassword != "" && c.EtcdPasswordEnv != "":
		return []error{errors.New("cluster.etcd_password and cluster.etcd_password_env: set one, not both")}
	case c.EtcdUsername == "" && hasPw:
		return []error{errors.New("cluster.etcd_password needs cluster.etcd_username")}
	case c.EtcdUsername != "" && !hasPw:
		return []error{errors.New(`cluster.etcd_username needs cluster.etcd_password (or etcd_password_env, or "vault:NAME")`)}
	case c.EtcdPassword == vaultSecretPrefix:
		return []error{errors.New(`cluster.etcd_password "vault:" names no vault entry`)}
	}
	return nil
}

// etcdAuth reads the etcd password from where [cluster] says it is (the
// file, the environment or the vault); nil without etcd_username. The
// error never contains the password.
func (c ClusterConfig) etcdAuth(vault *store.Vault) (*fcluster.EtcdAuth, error) {
	if c.EtcdUsername == "" {
		return nil, nil
	}
	pw := c.EtcdPassword
	switch name, fromVault := strings.CutPrefix(pw, vaultSecretPrefix); {
	case fromVault:
		pw = ""
		err := vault.With(configSecretName(name), func(b []byte) error { pw = string(b); return nil })
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("cluster.etcd_password: the vault has no entry %q (store it with `fangd vault set %s`)", name, name)
		}
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd_password: %v", err)
		}
		if pw == "" {
			return nil, fmt.Errorf("cluster.etcd_password: vault entry %q is empty", name)
		}
	case c.EtcdPasswordEnv != "":
		if pw = os.Getenv(c.EtcdPasswordEnv); pw == "" {
			return nil, fmt.Errorf("cluster.etcd_password_env: %s is not set or empty", c.EtcdPasswordEnv)
		}
	}
	return &fcluster.EtcdAuth{Username: c.EtcdUsername, Password: pw}, nil
}

func (c ClusterConfig) clusterName() string {
	if c.Name == "" {
		return "fangd"
	}
	return c.Name
}

// nodeNameFile, in the home, holds the node name derived at a first start
// without node_name, reused by every later start.
const nodeNameFile = "cluster-node-name"

// nodeName is the configured name or, without one, the name this home's
// node has had since its first start in cluster mode: host name plus that
// start's API port (unique among nodes sharing a machine), kept in
// <home>/cluster-node-name. A name derived afresh at each start would
// change with a random API port, and the node's audit tip in etcd, kept
// by name, would never be checked against (docs/cluster.md "Audit
// checkpoints across the cluster"). The file is written before the name
// is used; a configured node_name is used as is and not written.
func (c ClusterConfig) nodeName(home, apiAddr string) (string, error) {
	if c.NodeName != "" {
		return c.NodeName, nil
	}
	path := filepath.Join(home, nodeNameFile)
	b, err := os.ReadFile(path)
	switch name := strings.TrimSpace(string(b)); {
	case err == nil && name != "" && len(name) <= 128 && !strings.ContainsAny(name, "\r\n"):
		return name, nil
	case err == nil:
		return "", fmt.Errorf("cluster: %s does not hold a node name (1-128 characters on one line): fix or remove it, or set [cluster] node_name", path)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cluster: reading the node name: %w", err)
	}
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(apiAddr)
	name := host + "-" + port
	if err := writeFileAtomic(path, []byte(name+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("cluster: keeping the node name in %s: %w", path, err)
	}
	return name, nil
}

// writeFileAtomic replaces path with data (write, sync, rename), so a
// crash leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
