package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fangd/fangd/store/storetest"
)

func TestParseClusterURL(t *testing.T) {
	eps, secure, err := parseClusterURL("etcd://127.0.0.1:2379, 127.0.0.2:2379")
	if err != nil || secure || strings.Join(eps, " ") != "127.0.0.1:2379 127.0.0.2:2379" {
		t.Fatalf("%v %v %v", eps, secure, err)
	}
	if eps, secure, err := parseClusterURL("etcds://127.0.0.1:2379"); err != nil || !secure || len(eps) != 1 {
		t.Fatalf("etcds: %v %v %v", eps, secure, err)
	}
	for _, bad := range []string{"127.0.0.1:2379", "http://h:1", "etcd://", "etcd://,", "etcds://"} {
		if _, _, err := parseClusterURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Without etcd endpoints [cluster] is off and nothing in it is checked;
// with them every key is.
func TestClusterConfigValidate(t *testing.T) {
	if err := (ClusterConfig{Name: "bad/name", BindPort: -1}).validate(); err != nil {
		t.Fatalf("off but checked: %v", err)
	}
	ok := ClusterConfig{Etcd: []string{"127.0.0.1:2379"}}
	if err := ok.validate(); err != nil || ok.clusterName() != "fangd" {
		t.Fatalf("%v %q", err, ok.clusterName())
	}
	for _, c := range []ClusterConfig{
		{Etcd: []string{"nohost"}},
		{Etcd: []string{"h:1"}, Name: "bad/name"},
		{Etcd: []string{"h:1"}, BindPort: 70000},
		{Etcd: []string{"h:1"}, BindHost: "not an ip"},
		{Etcd: []string{"h:1"}, AdvertisedHost: "10.0.0.1"},
		{Etcd: []string{"h:1"}, NodeName: strings.Repeat("x", 129)},
		{Etcd: []string{"h:1"}, WatchdogGraceSecs: -1},
		{Etcd: []string{"h:1"}, WatchdogAction: "reboot"},
		// No in-process rejoin exists (docs/cluster.md "Watchdog").
		{Etcd: []string{"h:1"}, WatchdogAction: "rejoin"},
		{Etcd: []string{"h:1"}, TLSCert: "/nonexistent/cert.pem"},
		{Etcd: []string{"h:1"}, TLSCert: "/etc/hostname", TLSKey: "/etc/hostname", TLSCA: "/nonexistent/ca.pem"},
		{Etcd: []string{"h:1"}, EtcdCA: "/nonexistent/ca.pem"},
		{Etcd: []string{"h:1"}, EtcdCert: "/etc/hostname"},
		// --cluster etcd:// says plain; [cluster] says TLS.
		{Etcd: []string{"h:1"}, EtcdCA: "/etc/hostname", etcdPlainFlag: true},
		// etcd authentication: a user needs a password and back.
		{Etcd: []string{"h:1"}, EtcdUsername: "fangd"},
		{Etcd: []string{"h:1"}, EtcdPassword: "pw"},
		{Etcd: []string{"h:1"}, EtcdUsername: "fangd", EtcdPassword: "pw", EtcdPasswordEnv: "X"},
		{Etcd: []string{"h:1"}, EtcdUsername: "fangd", EtcdPassword: "vault:"},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if ok.watchdogGrace() != 10 || ok.watchdogAction() != "exit" || ok.tlsEnabled() {
		t.Fatalf("defaults: grace %d action %q tls %v", ok.watchdogGrace(), ok.watchdogAction(), ok.tlsEnabled())
	}
	if ok.etcdTLS() != nil {
		t.Fatal("plain etcd by default")
	}
	if c := (ClusterConfig{Etcd: []string{"h:1"}, EtcdTLS: true}); c.validate() != nil || c.etcdTLS() == nil || c.etcdTLS().CA != "" {
		t.Fatalf("etcd_tls alone (the system's roots): %v %+v", c.validate(), c.etcdTLS())
	}
	if err := (ClusterConfig{Etcd: []string{"h:1"}, WatchdogGraceSecs: 30, WatchdogAction: "log"}).validate(); err != nil {
		t.Fatalf("a valid watchdog refused: %v", err)
	}
	cfg := defaultConfig()
	cfg.Cluster = ClusterConfig{Etcd: []string{"nohost"}}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "cluster.etcd") {
		t.Fatalf("config validate: %v", err)
	}
}

// The etcd password comes from the file, the environment or the vault
// ("vault:NAME"); a missing one is an error that names where it looked,
// never a password.
func TestClusterEtcdPasswordSources(t *testing.T) {
	const secret = "etcd-pw-5d1e-from-somewhere"
	if a, err := (ClusterConfig{}).etcdAuth(nil); a != nil || err != nil {
		t.Fatalf("no user: %+v %v", a, err)
	}
	c := ClusterConfig{Etcd: []string{"h:1"}, EtcdUsername: "fangd", EtcdPassword: secret}
	if a, err := c.etcdAuth(nil); c.validate() != nil || err != nil || a.Username != "fangd" || a.Password != secret {
		t.Fatalf("in the file: %+v %v %v", a, err, c.validate())
	}
	t.Setenv("FANGD_TEST_ETCD_PW", secret)
	c = ClusterConfig{Etcd: []string{"h:1"}, EtcdUsername: "fangd", EtcdPasswordEnv: "FANGD_TEST_ETCD_PW"}
	if a, err := c.etcdAuth(nil); c.validate() != nil || err != nil || a.Password != secret {
		t.Fatalf("from the env: %+v %v", a, err)
	}
	c.EtcdPasswordEnv = "FANGD_TEST_ETCD_PW_UNSET"
	if _, err := c.etcdAuth(nil); err == nil || !strings.Contains(err.Error(), "FANGD_TEST_ETCD_PW_UNSET is not set") {
		t.Fatalf("unset env: %v", err)
	}

	home := t.TempDir()
	if err := (&vaultSetCommand{home: home, in: strings.NewReader(secret + "\n")}).Run(t.Context(), []string{"etcd"}); err != nil {
		t.Fatal(err)
	}
	db, vault := storetest.OpenWithVault(t, home)
	defer db.Close()
	c = ClusterConfig{Etcd: []string{"h:1"}, EtcdUsername: "fangd", EtcdPassword: "vault:etcd"}
	if a, err := c.etcdAuth(vault); c.validate() != nil || err != nil || a.Password != secret {
		t.Fatalf("from the vault: %+v %v", a, err)
	}
	c.EtcdPassword = "vault:absent"
	if _, err := c.etcdAuth(vault); err == nil || !strings.Contains(err.Error(), `no entry "absent"`) || strings.Contains(err.Error(), secret) {
		t.Fatalf("missing vault entry: %v", err)
	}
}

// Without node_name the name is derived at the first start and kept in
// the home: a later start on another port reuses it; a configured name
// wins and writes nothing; a file that holds no name is an error.
func TestClusterNodeNameKeptInTheHome(t *testing.T) {
	home := t.TempDir()
	c := ClusterConfig{Etcd: []string{"h:1"}}
	first, err := c.nodeName(home, "127.0.0.1:4601")
	if err != nil || !strings.HasSuffix(first, "-4601") {
		t.Fatalf("first %q %v", first, err)
	}
	if again, err := c.nodeName(home, "127.0.0.1:39999"); err != nil || again != first {
		t.Fatalf("second start: %q %v, want %q", again, err, first)
	}
	other := t.TempDir()
	c.NodeName = "n1"
	if n, err := c.nodeName(other, "127.0.0.1:4601"); err != nil || n != "n1" {
		t.Fatalf("configured %q %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(other, nodeNameFile)); err == nil {
		t.Fatal("a configured name was written to the home")
	}
	c.NodeName = ""
	if err := os.WriteFile(filepath.Join(other, nodeNameFile), []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.nodeName(other, "127.0.0.1:4601"); err == nil || !strings.Contains(err.Error(), "does not hold a node name") {
		t.Fatalf("empty file: %v", err)
	}
}
