package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/auth"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/pairing"
	"github.com/fangd/fangd/actors/webhook"
	"github.com/fangd/fangd/store"
	fhttp "github.com/fangd/fangd/transport/http"
	"github.com/fangd/fangd/transport/ssrf"
)

// PairingConfig is [pairing]: LibreFang's keys (enabled, max_devices,
// token_expiry_secs, public_base_url, push_provider, ntfy_url,
// ntfy_topic) and fangd's own (docs/pairing.md).
type PairingConfig struct {
	Enabled         bool   `toml:"enabled"`
	MaxDevices      int    `toml:"max_devices"`
	TokenExpirySecs int    `toml:"token_expiry_secs"`
	PublicBaseURL   string `toml:"public_base_url"`
	// PushProvider is LibreFang's broadcast target: "none", "ntfy"
	// (ntfy_url + ntfy_topic) or "gotify" (gotify_url + the app token in
	// the env var gotify_token_env, LibreFang's GOTIFY_SERVER_URL and
	// GOTIFY_APP_TOKEN when unset).
	PushProvider   string `toml:"push_provider"`
	NtfyURL        string `toml:"ntfy_url"`
	NtfyTopic      string `toml:"ntfy_topic"`
	NtfyTokenEnv   string `toml:"ntfy_token_env"`
	GotifyURL      string `toml:"gotify_url"`
	GotifyTokenEnv string `toml:"gotify_token_env"`
	// fangd's: the pending-code cap, the lockout and the public routes'
	// own rate limit, and the life of an approval action token.
	MaxPending        int `toml:"max_pending"`
	LockoutAfter      int `toml:"lockout_after"`
	LockoutSecs       int `toml:"lockout_secs"`
	BurnAfter         int `toml:"burn_after"`
	AttemptsPerMinute int `toml:"attempts_per_minute"`
	ActionTTLSecs     int `toml:"action_ttl_secs"`
	// VAPIDSubject is the contact in Web Push's VAPID tokens ("mailto:"
	// or https URL; RFC 8292).
	VAPIDSubject string `toml:"vapid_subject"`
}

func defaultPairingConfig() PairingConfig {
	d := pairing.DefaultConfig()
	return PairingConfig{MaxDevices: d.MaxDevices, TokenExpirySecs: int(d.CodeTTL / time.Second), PushProvider: "none",
		NtfyURL: "https://ntfy.sh", MaxPending: d.MaxPending, LockoutAfter: d.LockoutAfter, LockoutSecs: int(d.LockoutFor / time.Second),
		BurnAfter: d.BurnAfter, AttemptsPerMinute: fhttp.DefaultPairingPerMinute, ActionTTLSecs: int(d.ActionTTL / time.Second)}
}

// UserConfig is one [[users]] entry: a named API key with a role.
// LibreFang's roles map onto fangd's: owner and admin are admin, user is
// operator, viewer is viewer.
type UserConfig struct {
	Name string `toml:"name"`
	Role string `toml:"role"`
	// APIKeyHash is LibreFang's "$sha256$<hex>"; APIKeyEnv (fangd's)
	// names an environment variable holding the key itself.
	APIKeyHash string `toml:"api_key_hash"`
	APIKeyEnv  string `toml:"api_key_env"`
}

func userRole(r string) (string, bool) {
	switch r {
	case "", "user", fhttp.RoleOperator:
		return fhttp.RoleOperator, true // LibreFang's default role is user
	case "owner", fhttp.RoleAdmin:
		return fhttp.RoleAdmin, true
	case fhttp.RoleViewer:
		return fhttp.RoleViewer, true
	}
	return "", false
}

// users resolves [[users]] into the HTTP layer's keys.
func (c *Config) users() ([]fhttp.User, error) {
	var out []fhttp.User
	var errs []error
	seen := map[string]bool{}
	for i, u := range c.Users {
		field := fmt.Sprintf("users[%d]", i)
		if u.Name == "" || strings.ContainsAny(u.Name, ": \t") || len(u.Name) > 64 {
			errs = append(errs, fmt.Errorf("%s.name must be 1-64 characters without ':' or spaces", field))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q is used twice", field, u.Name))
		}
		seen[u.Name] = true
		role, ok := userRole(u.Role)
		if !ok {
			errs = append(errs, fmt.Errorf("%s.role %q: want admin, operator, viewer (or LibreFang's owner, user)", field, u.Role))
		}
		user := fhttp.User{Name: u.Name, Role: role}
		switch {
		case u.APIKeyHash != "" && u.APIKeyEnv != "":
			errs = append(errs, fmt.Errorf("%s: set api_key_hash or api_key_env, not both", field))
		case u.APIKeyHash != "":
			h, ok := fhttp.ParseKeyHash(u.APIKeyHash)
			if !ok {
				errs = append(errs, fmt.Errorf(`%s.api_key_hash must be "$sha256$<64 hex>" (Argon2id hashes are not supported)`, field))
			}
			user.KeyHash = h
		case u.APIKeyEnv != "":
			key := os.Getenv(u.APIKeyEnv)
			if len(key) < 16 {
				errs = append(errs, fmt.Errorf("%s.api_key_env: $%s must hold a key of at least 16 characters", field, u.APIKeyEnv))
			}
			user.KeyHash = sha256.Sum256([]byte(key))
		default:
			errs = append(errs, fmt.Errorf("%s needs api_key_hash or api_key_env", field))
		}
		out = append(out, user)
	}
	return out, errors.Join(errs...)
}

// pairingSettings validates [pairing] into the actor's config and the
// broadcast target.
func (c *Config) pairingSettings() (pairing.Config, *pairing.Target, error) {
	p := c.Pairing
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.MaxDevices < 1 || p.MaxDevices > 10_000 {
		bad("pairing.max_devices must be between 1 and 10000")
	}
	if p.TokenExpirySecs < 30 || p.TokenExpirySecs > 3600 {
		bad("pairing.token_expiry_secs must be between 30 and 3600")
	}
	if p.MaxPending < 1 || p.MaxPending > 100 {
		bad("pairing.max_pending must be between 1 and 100")
	}
	if p.LockoutAfter < 1 || p.LockoutAfter > 100 || p.BurnAfter < p.LockoutAfter || p.BurnAfter > 10_000 {
		bad("pairing.lockout_after must be between 1 and 100, and burn_after between lockout_after and 10000")
	}
	if p.LockoutSecs < 1 || p.LockoutSecs > 86_400 {
		bad("pairing.lockout_secs must be between 1 and 86400")
	}
	if p.AttemptsPerMinute < 1 || p.AttemptsPerMinute > 1000 {
		bad("pairing.attempts_per_minute must be between 1 and 1000")
	}
	if p.ActionTTLSecs < 30 || p.ActionTTLSecs > 86_400 {
		bad("pairing.action_ttl_secs must be between 30 and 86400")
	}
	if v := p.VAPIDSubject; v != "" && !strings.HasPrefix(v, "mailto:") && !strings.HasPrefix(v, "https://") {
		bad("pairing.vapid_subject %q must be a mailto: or https: URI", v)
	}
	if b := p.PublicBaseURL; b != "" {
		if u, err := url.Parse(b); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			bad("pairing.public_base_url %q must be an absolute http(s) URL without a query", b)
		}
	}
	var target *pairing.Target
	switch p.PushProvider {
	case "", "none":
	case "ntfy":
		target = &pairing.Target{Type: pairing.TargetNtfy, Server: p.NtfyURL, Topic: p.NtfyTopic}
		if p.NtfyTokenEnv != "" {
			target.Token = os.Getenv(p.NtfyTokenEnv)
		}
	case "gotify":
		srv, env := p.GotifyURL, p.GotifyTokenEnv
		if srv == "" {
			srv = os.Getenv("GOTIFY_SERVER_URL")
		}
		if env == "" {
			env = "GOTIFY_APP_TOKEN"
		}
		target = &pairing.Target{Type: pairing.TargetGotify, Server: srv, Token: os.Getenv(env)}
	default:
		bad("pairing.push_provider %q: want none, ntfy or gotify", p.PushProvider)
	}
	if target != nil {
		if err := target.Validate(); err != nil {
			bad("pairing.push_provider %s: %s", p.PushProvider, kernel.PublicMessage(err))
		}
	}
	cfg := pairing.Config{Enabled: p.Enabled, MaxDevices: p.MaxDevices, CodeTTL: time.Duration(p.TokenExpirySecs) * time.Second,
		MaxPending: p.MaxPending, PublicBaseURL: strings.TrimRight(p.PublicBaseURL, "/"), LockoutAfter: p.LockoutAfter,
		LockoutFor: time.Duration(p.LockoutSecs) * time.Second, BurnAfter: p.BurnAfter, ActionTTL: time.Duration(p.ActionTTLSecs) * time.Second}
	return cfg, target, errors.Join(errs...)
}

// startPairing starts the pairing actor when [pairing] is enabled; nil
// otherwise (its routes answer 404 pairing_disabled).
func (d *daemon) startPairing(cfg Config, vault *store.Vault, eng *webhook.Engine) (*pairing.Pairing, error) {
	if !cfg.Pairing.Enabled {
		return nil, nil
	}
	pc, target, err := cfg.pairingSettings()
	if err != nil {
		return nil, err
	}
	base := pc.PublicBaseURL
	if base == "" {
		base = "http://" + cfg.APIListen
	}
	return pairing.Start(d.kernel, d.db, pairing.Options{Config: pc, Push: eng, Vault: vault, Bus: d.bus, BaseURL: base, Broadcast: target,
		VAPIDSubject: cfg.Pairing.VAPIDSubject})
}

// ExternalAuthConfig is [external_auth], LibreFang's ExternalAuthConfig
// names plus fangd's groups and role mapping (docs/pairing.md).
type ExternalAuthConfig struct {
	Enabled         bool   `toml:"enabled"`
	IssuerURL       string `toml:"issuer_url"`
	ClientID        string `toml:"client_id"`
	ClientSecretEnv string `toml:"client_secret_env"`
	// ClientSecret (fangd's) is "vault:NAME" only: the secret stored by
	// `fangd vault set NAME`, never the secret itself in the file.
	ClientSecret         string           `toml:"client_secret"`
	RedirectURL          string           `toml:"redirect_url"`
	Scopes               []string         `toml:"scopes"`
	AllowedDomains       []string         `toml:"allowed_domains"`
	Audience             string           `toml:"audience"`
	SessionTTLSecs       int              `toml:"session_ttl_secs"`
	RequireEmailVerified *bool            `toml:"require_email_verified"`
	Providers            []ProviderConfig `toml:"providers"`
	// fangd's: where groups are read, which groups may sign in, which
	// role a group gives, and the role of everyone else.
	GroupsClaim   string            `toml:"groups_claim"`
	AllowedGroups []string          `toml:"allowed_groups"`
	RoleMap       map[string]string `toml:"role_map"`
	DefaultRole   string            `toml:"default_role"`
}

// ProviderConfig is one [[external_auth.providers]] entry.
type ProviderConfig struct {
	ID              string   `toml:"id"`
	DisplayName     string   `toml:"display_name"`
	IssuerURL       string   `toml:"issuer_url"`
	ClientID        string   `toml:"client_id"`
	ClientSecretEnv string   `toml:"client_secret_env"`
	ClientSecret    string   `toml:"client_secret"` // "vault:NAME"
	RedirectURL     string   `toml:"redirect_url"`
	Scopes          []string `toml:"scopes"`
	AllowedDomains  []string `toml:"allowed_domains"`
	Audience        string   `toml:"audience"`
	// LibreFang's endpoints for a provider without OIDC discovery: with
	// auth_url set, auth_url, token_url and jwks_uri are required (fangd
	// verifies an ID token) and no discovery document is read.
	AuthURL     string `toml:"auth_url"`
	TokenURL    string `toml:"token_url"`
	UserinfoURL string `toml:"userinfo_url"`
	JWKSURI     string `toml:"jwks_uri"`
	// fangd's, per provider (default: the [external_auth] ones).
	GroupsClaim   string            `toml:"groups_claim"`
	AllowedGroups []string          `toml:"allowed_groups"`
	RoleMap       map[string]string `toml:"role_map"`
}

// authSettings validates [external_auth] into the service's config.
// vaultNames maps a provider id to the vault entry its client secret is
// read from once the vault is open ("vault:NAME").
func (c *Config) authSettings() (out auth.Config, vaultNames map[string]string, err error) {
	e := c.ExternalAuth
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	provs := e.Providers
	if len(provs) == 0 {
		provs = []ProviderConfig{{ID: "default", DisplayName: "SSO", IssuerURL: e.IssuerURL, ClientID: e.ClientID,
			ClientSecretEnv: e.ClientSecretEnv, ClientSecret: e.ClientSecret, RedirectURL: e.RedirectURL, Scopes: e.Scopes, AllowedDomains: e.AllowedDomains, Audience: e.Audience}}
	}
	vaultNames = map[string]string{}
	out = auth.Config{SessionTTL: time.Duration(e.SessionTTLSecs) * time.Second, RequireEmailVerified: e.RequireEmailVerified == nil || *e.RequireEmailVerified,
		DefaultRole: e.DefaultRole}
	if out.DefaultRole == "" {
		out.DefaultRole = fhttp.RoleViewer
	}
	if r, ok := userRole(out.DefaultRole); !ok || r != out.DefaultRole {
		bad("external_auth.default_role %q: want admin, operator or viewer", e.DefaultRole)
	}
	if e.SessionTTLSecs < 60 || e.SessionTTLSecs > 90*86_400 {
		bad("external_auth.session_ttl_secs must be between 60 and 7776000")
	}
	seen := map[string]bool{}
	for i, p := range provs {
		field := fmt.Sprintf("external_auth.providers[%d]", i)
		if len(e.Providers) == 0 {
			field = "external_auth"
		}
		if p.ID == "" || seen[p.ID] || strings.ContainsAny(p.ID, "/ ") {
			bad("%s.id %q must be unique, without '/' or spaces", field, p.ID)
		}
		seen[p.ID] = true
		if u, err := url.Parse(p.IssuerURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("%s.issuer_url %q must be the provider's http(s) issuer URL (discovery is read from it; with auth_url, it is the iss its ID tokens carry)", field, p.IssuerURL)
		}
		if p.AuthURL != "" || p.TokenURL != "" || p.UserinfoURL != "" || p.JWKSURI != "" {
			// Manual endpoints: all three that a sign-in needs, or none.
			for _, f := range []struct{ name, v string }{{"auth_url", p.AuthURL}, {"token_url", p.TokenURL}, {"jwks_uri", p.JWKSURI}, {"userinfo_url", p.UserinfoURL}} {
				if f.v == "" && f.name != "userinfo_url" {
					bad("%s.%s is required when any of auth_url, token_url, jwks_uri is set (fangd verifies the provider's ID token; OAuth2-only providers without one are not supported)", field, f.name)
					continue
				}
				if u, err := url.Parse(f.v); f.v != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
					bad("%s.%s %q must be an absolute http(s) URL", field, f.name, f.v)
				}
			}
		}
		if p.ClientID == "" {
			bad("%s.client_id is required", field)
		}
		env := p.ClientSecretEnv
		if env == "" {
			env = "LIBREFANG_OAUTH_CLIENT_SECRET"
		}
		secret := os.Getenv(env)
		if p.ClientSecret != "" {
			name, ok := strings.CutPrefix(p.ClientSecret, vaultSecretPrefix)
			if !ok || name == "" {
				bad(`%s.client_secret must be "vault:NAME" (store it with fangd vault set NAME); or name an env var in client_secret_env`, field)
			}
			vaultNames[p.ID], secret = name, ""
		}
		if p.RedirectURL != "" {
			if u, err := url.Parse(p.RedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("%s.redirect_url %q must be an absolute http(s) URL", field, p.RedirectURL)
			}
		}
		dn := p.DisplayName
		if dn == "" {
			dn = p.ID
		}
		gc, ag, rm := p.GroupsClaim, p.AllowedGroups, p.RoleMap
		if gc == "" {
			gc = e.GroupsClaim
		}
		if ag == nil {
			ag = e.AllowedGroups
		}
		if rm == nil {
			rm = e.RoleMap
		}
		roles := map[string]string{}
		for g, r := range rm {
			role, ok := userRole(r)
			if !ok || r == "" {
				bad("%s.role_map[%q] = %q: want admin, operator or viewer", field, g, r)
			}
			roles[g] = role
		}
		domains := make([]string, 0, len(p.AllowedDomains))
		for _, d := range p.AllowedDomains {
			domains = append(domains, strings.ToLower(strings.TrimPrefix(d, "@")))
		}
		out.Providers = append(out.Providers, auth.Provider{ID: p.ID, DisplayName: dn, IssuerURL: p.IssuerURL, ClientID: p.ClientID,
			ClientSecret: secret, RedirectURL: p.RedirectURL, Scopes: p.Scopes, AllowedDomains: domains, Audience: p.Audience,
			AuthURL: p.AuthURL, TokenURL: p.TokenURL, JWKSURI: p.JWKSURI, UserInfoURL: p.UserinfoURL,
			AllowedGroups: ag, GroupsClaim: gc, RoleMap: roles})
	}
	return out, vaultNames, errors.Join(errs...)
}

// publicHTTPS: a redirect_url on https means TLS ends at a proxy, so
// session cookies are Secure.
func (c *Config) publicHTTPS() bool {
	if strings.HasPrefix(c.ExternalAuth.RedirectURL, "https://") || strings.HasPrefix(c.Pairing.PublicBaseURL, "https://") {
		return true
	}
	for _, p := range c.ExternalAuth.Providers {
		if strings.HasPrefix(p.RedirectURL, "https://") {
			return true
		}
	}
	return false
}

// startAuth starts OIDC sign-in when [external_auth] is enabled.
func (d *daemon) startAuth(cfg Config, guard *ssrf.Guard) (*auth.Service, error) {
	if !cfg.ExternalAuth.Enabled {
		return nil, nil
	}
	ac, vaultNames, err := cfg.authSettings()
	if err != nil {
		return nil, err
	}
	for i := range ac.Providers {
		name, ok := vaultNames[ac.Providers[i].ID]
		if !ok {
			continue
		}
		if err := d.vault.With(configSecretName(name), func(b []byte) error { ac.Providers[i].ClientSecret = string(b); return nil }); err != nil {
			return nil, fmt.Errorf("external_auth client_secret vault:%s: %w (store it with fangd vault set %s)", name, err, name)
		}
	}
	return auth.Start(d.kernel, d.db, auth.Options{Config: ac, HTTPClient: guard.Client(15 * time.Second), Vault: d.vault})
}
