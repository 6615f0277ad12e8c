package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fangd/fangd/store"
)

// NetworkConfig is [network]: the OFP peer network. Keys are LibreFang's
// (listen_addresses, bootstrap_peers, mdns_enabled, max_peers,
// shared_secret, max_messages_per_peer_per_minute,
// max_llm_tokens_per_peer_per_hour) plus fangd's own for the node name,
// keepalive and reconnect pacing. The switch is LibreFang's top-level
// network_enabled; [network] network_enabled is accepted as well.
type NetworkConfig struct {
	NetworkEnabled  *bool    `toml:"network_enabled"`
	ListenAddresses []string `toml:"listen_addresses"`
	BootstrapPeers  []string `toml:"bootstrap_peers"`
	// MDNSEnabled is accepted so a LibreFang config loads; LibreFang does
	// not implement mDNS discovery either, and fangd does not.
	MDNSEnabled *bool `toml:"mdns_enabled"`
	MaxPeers    int   `toml:"max_peers"`
	// SharedSecret is the pre-shared HMAC secret every node of the network
	// has; "vault:NAME" reads it from fangd's vault instead of the file.
	SharedSecret string `toml:"shared_secret"`
	// SharedSecretEnv names an environment variable holding the secret
	// (fangd's usual way of keeping secrets out of config.toml).
	SharedSecretEnv              string  `toml:"shared_secret_env"`
	MaxMessagesPerPeerPerMinute  int     `toml:"max_messages_per_peer_per_minute"`
	MaxLLMTokensPerPeerPerHour   *uint64 `toml:"max_llm_tokens_per_peer_per_hour"`
	NodeName                     string  `toml:"node_name"`
	KeepaliveInterval            string  `toml:"keepalive_interval"`
	ReconnectInitial             string  `toml:"reconnect_initial"`
	ReconnectMax                 string  `toml:"reconnect_max"`
	MaxConcurrentInboundRequests int     `toml:"max_concurrent_requests"`
	// EncryptLinks offers TLS 1.3 to peers (fangd's; LibreFang peers do
	// not take it up and keep their plaintext + HMAC mode). Default true.
	EncryptLinks *bool `toml:"encrypt_links"`
	// RequireEncryptedLinks refuses every unencrypted link, LibreFang
	// peers included.
	RequireEncryptedLinks bool `toml:"require_encrypted_links"`
}

func defaultNetworkConfig() NetworkConfig {
	return NetworkConfig{
		ListenAddresses:             []string{"/ip4/0.0.0.0/tcp/0"},
		MaxPeers:                    50,
		MaxMessagesPerPeerPerMinute: 60,
		KeepaliveInterval:           "15s",
		ReconnectInitial:            "500ms",
		// A peer back from a restart is redialled within 5 s.
		ReconnectMax:                 "5s",
		MaxConcurrentInboundRequests: 16,
	}
}

// vaultSecretPrefix marks a secret read from the vault.
const vaultSecretPrefix = "vault:"

// configSecretName is the vault entry behind "vault:NAME": config secrets
// have their own namespace, so `fangd vault set` cannot overwrite a
// secret another domain keeps (a channel token, the node identity).
func configSecretName(name string) string { return "config/" + name }

// networkSettings is [network] checked and parsed; the secret itself is
// read by resolveSecret, once the vault is open.
type networkSettings struct {
	encrypt, requireEnc bool
	enabled             bool
	listen              string
	bootstrap           []string
	maxPeers            int
	perMinute           int
	tokensPerHour       uint64
	nodeName            string
	keepalive           time.Duration
	reconnectInitial    time.Duration
	reconnectMax        time.Duration
	maxConcurrent       int
	secret, secretEnv   string
	secretVault         string // the vault entry's name, or ""
	secretConfigured    bool
}

// networkEnabled is LibreFang's switch: top-level network_enabled, or
// the same key inside [network].
func (c *Config) networkEnabled() bool {
	if c.Network.NetworkEnabled != nil {
		return *c.Network.NetworkEnabled
	}
	return c.NetworkEnabled
}

// parseOFPAddr reads a listen or bootstrap address: LibreFang's multiaddr
// form /ip4/<ip>/tcp/<port> (or /ip6/, /dns/), or host:port.
func parseOFPAddr(s string) (string, error) {
	if strings.HasPrefix(s, "/") {
		parts := strings.Split(s, "/")
		if len(parts) != 5 || parts[3] != "tcp" || (parts[1] != "ip4" && parts[1] != "ip6" && parts[1] != "dns" && parts[1] != "dns4" && parts[1] != "dns6") {
			return "", errors.New("want /ip4/<ip>/tcp/<port> or host:port")
		}
		s = net.JoinHostPort(parts[2], parts[4])
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want /ip4/<ip>/tcp/<port> or host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number between 0 and 65535", port)
	}
	if host == "" {
		return "", errors.New("no host")
	}
	return net.JoinHostPort(host, port), nil
}

// networkSettings checks [network]; every error names its key. The
// checks apply even when the network is off, so that switching it on
// later cannot surface an old mistake.
func (c *Config) networkSettings() (networkSettings, error) {
	n := &c.Network
	s := networkSettings{enabled: c.networkEnabled(), maxPeers: n.MaxPeers, perMinute: n.MaxMessagesPerPeerPerMinute,
		nodeName: strings.TrimSpace(n.NodeName), maxConcurrent: n.MaxConcurrentInboundRequests}
	s.encrypt = n.EncryptLinks == nil || *n.EncryptLinks
	s.requireEnc = n.RequireEncryptedLinks
	var errs []error
	bad := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	switch len(n.ListenAddresses) {
	case 0:
		bad(errors.New("network.listen_addresses must name one address"))
	default:
		// LibreFang listens on the first entry only; so does fangd.
		a, err := parseOFPAddr(n.ListenAddresses[0])
		if err != nil {
			bad(fmt.Errorf("network.listen_addresses[0] %q: %v", n.ListenAddresses[0], err))
		}
		s.listen = a
	}
	for i, b := range n.BootstrapPeers {
		a, err := parseOFPAddr(b)
		if err == nil && strings.HasSuffix(a, ":0") {
			err = errors.New("port 0 cannot be dialled")
		}
		if err != nil {
			bad(fmt.Errorf("network.bootstrap_peers[%d] %q: %v", i, b, err))
			continue
		}
		s.bootstrap = append(s.bootstrap, a)
	}
	bad(within("network.max_peers", n.MaxPeers, 1, 10_000))
	if n.MaxMessagesPerPeerPerMinute < 0 || n.MaxMessagesPerPeerPerMinute > 1_000_000 {
		bad(errors.New("network.max_messages_per_peer_per_minute must be between 0 (no limit) and 1000000"))
	}
	if n.MaxLLMTokensPerPeerPerHour != nil {
		s.tokensPerHour = *n.MaxLLMTokensPerPeerPerHour
		if s.tokensPerHour == 0 {
			bad(errors.New("network.max_llm_tokens_per_peer_per_hour must be at least 1 (leave it out for no cap)"))
		}
	}
	bad(within("network.max_concurrent_requests", n.MaxConcurrentInboundRequests, 1, 10_000))
	if s.requireEnc && !s.encrypt {
		bad(errors.New("network.require_encrypted_links needs network.encrypt_links"))
	}
	if len(s.nodeName) > 128 {
		bad(errors.New("network.node_name must be at most 128 characters"))
	}
	var err error
	s.keepalive, err = parseDuration("network.keepalive_interval", n.KeepaliveInterval, 50*time.Millisecond, time.Hour)
	bad(err)
	s.reconnectInitial, err = parseDuration("network.reconnect_initial", n.ReconnectInitial, 10*time.Millisecond, time.Hour)
	bad(err)
	s.reconnectMax, err = parseDuration("network.reconnect_max", n.ReconnectMax, 10*time.Millisecond, 24*time.Hour)
	bad(err)
	if err == nil && s.reconnectMax < s.reconnectInitial {
		bad(errors.New("network.reconnect_max must not be below network.reconnect_initial"))
	}
	switch {
	case n.SharedSecret != "" && n.SharedSecretEnv != "":
		bad(errors.New("network.shared_secret and network.shared_secret_env: set one, not both"))
	case strings.HasPrefix(n.SharedSecret, vaultSecretPrefix):
		s.secretVault = strings.TrimPrefix(n.SharedSecret, vaultSecretPrefix)
		if s.secretVault == "" {
			bad(errors.New(`network.shared_secret "vault:" names no vault entry`))
		}
	case n.SharedSecretEnv != "":
		s.secretEnv = n.SharedSecretEnv
	default:
		s.secret = n.SharedSecret
	}
	s.secretConfigured = s.secret != "" || s.secretVault != "" || s.secretEnv != ""
	if s.enabled && !s.secretConfigured {
		// LibreFang only warns and then does not start the network;
		// fangd refuses, so the switch never silently does nothing.
		bad(errors.New("network_enabled needs network.shared_secret (or shared_secret_env, or \"vault:NAME\")"))
	}
	return s, errors.Join(errs...)
}

// resolveSecret reads the shared secret from where [network] says it is.
// The error never contains the secret.
func (s *networkSettings) resolveSecret(vault *store.Vault) (string, error) {
	switch {
	case s.secretVault != "":
		var out string
		err := vault.With(configSecretName(s.secretVault), func(b []byte) error { out = string(b); return nil })
		if errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("network.shared_secret: the vault has no entry %q (store it with `fangd vault set %s`)", s.secretVault, s.secretVault)
		}
		if err != nil {
			return "", fmt.Errorf("network.shared_secret: %v", err)
		}
		if out == "" {
			return "", fmt.Errorf("network.shared_secret: vault entry %q is empty", s.secretVault)
		}
		return out, nil
	case s.secretEnv != "":
		v := os.Getenv(s.secretEnv)
		if v == "" {
			return "", fmt.Errorf("network.shared_secret_env: %s is not set or empty", s.secretEnv)
		}
		return v, nil
	}
	return s.secret, nil
}
