package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/store/storetest"
)

func networkConfigFrom(t *testing.T, body string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(p, true)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// LibreFang's [network] table loads as LibreFang writes it (multiaddrs,
// mdns_enabled, the top-level switch), with fangd's own keys beside.
func TestNetworkConfigLibreFangKeys(t *testing.T) {
	cfg, err := networkConfigFrom(t, `
network_enabled = true
[network]
listen_addresses = ["/ip4/127.0.0.1/tcp/4200"]
bootstrap_peers = ["/ip4/127.0.0.1/tcp/4201", "127.0.0.1:4202"]
mdns_enabled = true
max_peers = 7
shared_secret = "a-shared-secret"
max_messages_per_peer_per_minute = 30
max_llm_tokens_per_peer_per_hour = 5000
keepalive_interval = "200ms"
reconnect_initial = "50ms"
reconnect_max = "1s"
node_name = "node-a"
`)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.networkSettings()
	if err != nil {
		t.Fatal(err)
	}
	if !s.enabled || s.listen != "127.0.0.1:4200" || strings.Join(s.bootstrap, ",") != "127.0.0.1:4201,127.0.0.1:4202" ||
		s.maxPeers != 7 || s.perMinute != 30 || s.tokensPerHour != 5000 || s.keepalive != 200*time.Millisecond ||
		s.reconnectInitial != 50*time.Millisecond || s.reconnectMax != time.Second || s.nodeName != "node-a" {
		t.Fatalf("settings %+v", s)
	}
	if secret, err := s.resolveSecret(nil); err != nil || secret != "a-shared-secret" {
		t.Fatalf("secret %q %v", secret, err)
	}
	// Off by default: nothing to configure, nothing listens.
	def := defaultConfig()
	if def.networkEnabled() || def.validate() != nil {
		t.Fatalf("the default config must load with the network off: %v", def.validate())
	}
}

// Each mistake is refused with its key named, before anything starts.
func TestNetworkConfigRefusals(t *testing.T) {
	for body, want := range map[string]string{
		"network_enabled = true\n":                                           "network_enabled needs network.shared_secret",
		"[network]\nnetwork_enabled = true\n":                                "network_enabled needs network.shared_secret",
		"[network]\nlisten_addresses = [\"/ip4/1.2.3.4/udp/9\"]\n":           "network.listen_addresses[0]",
		"[network]\nbootstrap_peers = [\"nohost\"]\n":                        "network.bootstrap_peers[0]",
		"[network]\nbootstrap_peers = [\"127.0.0.1:0\"]\n":                   "port 0 cannot be dialled",
		"[network]\nmax_peers = 0\n":                                         "network.max_peers",
		"[network]\nkeepalive_interval = \"soon\"\n":                         "network.keepalive_interval",
		"[network]\nreconnect_initial = \"5s\"\nreconnect_max = \"1s\"\n":    "network.reconnect_max must not be below",
		"[network]\nshared_secret = \"x\"\nshared_secret_env = \"Y\"\n":      "set one, not both",
		"[network]\nshared_secret = \"vault:\"\n":                            "names no vault entry",
		"[network]\nmax_llm_tokens_per_peer_per_hour = 0\n":                  "max_llm_tokens_per_peer_per_hour",
		"[network]\nmax_messages_per_peer_per_minute = -1\n":                 "max_messages_per_peer_per_minute",
		"[network]\nsharedsecret = \"x\"\n":                                  "network.sharedsecret",
		"[network]\nencrypt_links = false\nrequire_encrypted_links = true\n": "require_encrypted_links needs",
	} {
		_, err := networkConfigFrom(t, body)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", body, err, want)
		}
	}
}

// The secret comes from the environment or the vault ("vault:NAME", set
// with `fangd vault set`), and a missing one is an error that does not
// contain it.
func TestNetworkSecretSources(t *testing.T) {
	home := t.TempDir()
	t.Setenv("FANGD_TEST_OFP_SECRET", "from-the-env")
	cfg, err := networkConfigFrom(t, "network_enabled = true\n[network]\nshared_secret_env = \"FANGD_TEST_OFP_SECRET\"\n")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := cfg.networkSettings()
	if v, err := s.resolveSecret(nil); err != nil || v != "from-the-env" {
		t.Fatalf("env secret %q %v", v, err)
	}

	set := &vaultSetCommand{home: home, in: strings.NewReader("from-the-vault\n")}
	if err := set.Run(t.Context(), []string{"ofp-secret"}); err != nil {
		t.Fatal(err)
	}
	if err := (&vaultSetCommand{home: home, in: strings.NewReader("x\n")}).Run(t.Context(), []string{"../identity"}); err == nil {
		t.Fatal("a vault name with a path in it was accepted")
	}
	cfg, err = networkConfigFrom(t, "network_enabled = true\n[network]\nshared_secret = \"vault:ofp-secret\"\n")
	if err != nil {
		t.Fatal(err)
	}
	s, _ = cfg.networkSettings()
	db, vault := storetest.OpenWithVault(t, home)
	defer db.Close()
	if v, err := s.resolveSecret(vault); err != nil || v != "from-the-vault" {
		t.Fatalf("vault secret %q %v", v, err)
	}
	s.secretVault = "absent"
	if _, err := s.resolveSecret(vault); err == nil || !strings.Contains(err.Error(), `no entry "absent"`) {
		t.Fatalf("missing vault entry: %v", err)
	}
}
