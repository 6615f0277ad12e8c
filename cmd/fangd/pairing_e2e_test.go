package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
)

func bearerDo(t *testing.T, base, token, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}

// A device paired on the binary keeps working across kill -9; the
// LibreFang broadcast topic hears notifications; [[users]] keys get their
// role; revocation is immediate.
func TestPairingOnTheBinarySurvivesKill9(t *testing.T) {
	t.Parallel()
	ntfy := ntfytest.New()
	defer ntfy.Close()
	ntfy.AllowAnonymous()
	const viewerKey = "viewer-key-0123456789abcdef"
	cfg := fmt.Sprintf(`api_key = %q

[pairing]
enabled = true
push_provider = "ntfy"
ntfy_url = %q
ntfy_topic = "fangd-all"

[[users]]
name = "vic"
role = "viewer"
api_key_env = "E2E_VIEWER_KEY"
`, e2eKey, ntfy.URL) + loopbackPolicy
	home := t.TempDir()
	td := runFangd(t, home, cfg, "E2E_VIEWER_KEY="+viewerKey)

	admin := func(want int, method, path, body string, v any) {
		t.Helper()
		st, raw := bearerDo(t, td.base, e2eKey, method, path, body)
		if st != want {
			t.Fatalf("%s %s: %d %s", method, path, st, raw)
		}
		if v != nil {
			json.Unmarshal(raw, v)
		}
	}
	var code struct {
		Code string `json:"pairing_code"`
	}
	admin(200, "POST", "/api/pairing/request", "", &code)
	var paired struct {
		DeviceID    string `json:"device_id"`
		DeviceToken string `json:"device_token"`
	}
	td.must(200, "POST", "/api/pairing/complete", map[string]any{"pairing_code": code.Code, "display_name": "pixel",
		"push": map[string]string{"type": "ntfy", "server": ntfy.URL, "topic": "fangd-pixel"}}, &paired)

	if st, raw := bearerDo(t, td.base, paired.DeviceToken, "GET", "/api/pairing/me", ""); st != 200 {
		t.Fatalf("me: %d %s", st, raw)
	}
	// kill -9: the acknowledged pairing is durable.
	if err := td.p.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("kill -9 reported a clean exit")
	}
	td.start()
	if st, raw := bearerDo(t, td.base, paired.DeviceToken, "GET", "/api/pairing/me", ""); st != 200 || !strings.Contains(string(raw), `"display_name":"pixel"`) {
		t.Fatalf("me after kill -9: %d %s", st, raw)
	}
	if st, raw := bearerDo(t, td.base, paired.DeviceToken, "GET", "/api/agents", ""); st != 403 {
		t.Fatalf("device on /api/agents: %d %s", st, raw)
	}
	if st, _ := bearerDo(t, td.base, viewerKey, "GET", "/api/pairing/devices", ""); st != 200 {
		t.Fatalf("viewer reads devices: %d", st)
	}
	if st, _ := bearerDo(t, td.base, viewerKey, "POST", "/api/pairing/notify", `{"message":"x"}`); st != 403 {
		t.Fatalf("viewer notifies: %d", st)
	}

	var res struct {
		Notified   int `json:"notified"`
		Deliveries []struct {
			DeviceID string `json:"device_id"`
			Status   string `json:"status"`
		} `json:"deliveries"`
	}
	admin(200, "POST", "/api/pairing/notify", `{"message":"hello phone"}`, &res)
	if res.Notified != 2 {
		t.Fatalf("notify: %+v", res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, topic := range []string{"fangd-pixel", "fangd-all"} {
		if _, err := ntfy.WaitMessage(ctx, func(m ntfytest.Message) bool { return m.Topic == topic && m.Message == "hello phone" }); err != nil {
			t.Fatalf("no message on %s: %v", topic, err)
		}
	}

	admin(204, "DELETE", "/api/pairing/devices/"+paired.DeviceID, "", nil)
	if st, _ := bearerDo(t, td.base, paired.DeviceToken, "GET", "/api/pairing/me", ""); st != 401 {
		t.Fatalf("revoked token: %d", st)
	}
	td.restart()
	if st, _ := bearerDo(t, td.base, paired.DeviceToken, "GET", "/api/pairing/me", ""); st != 401 {
		t.Fatalf("revoked token after restart: %d", st)
	}
	var devs struct{ Devices []json.RawMessage }
	admin(200, "GET", "/api/pairing/devices", "", &devs)
	if len(devs.Devices) != 0 {
		t.Fatalf("devices after revoke: %s", devs.Devices)
	}
}

func TestPairingAndUsersConfigValidated(t *testing.T) {
	c := defaultConfig()
	c.Pairing.Enabled = true
	c.Pairing.TokenExpirySecs = 5
	c.Pairing.PushProvider = "pigeon"
	c.Users = []UserConfig{{Name: "a b", Role: "god", APIKeyHash: "$argon2id$x"}}
	c.ExternalAuth = ExternalAuthConfig{Enabled: true, IssuerURL: "https://idp.example", ClientID: "c", ClientSecret: "plain-secret", SessionTTLSecs: 86400}
	err := c.validate()
	for _, want := range []string{"pairing.token_expiry_secs", "pairing.push_provider \"pigeon\"", "users[0].name", "users[0].role", "users[0].api_key_hash", "external_auth.client_secret must be \"vault:NAME\""} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("want %q in %v", want, err)
		}
	}
	c = defaultConfig()
	c.Pairing.Enabled = true
	c.Pairing.PushProvider = "ntfy"
	c.Pairing.NtfyTopic = ""
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "push.topic") {
		t.Fatalf("ntfy without a topic: %v", err)
	}
}

func TestExternalAuthManualEndpointsValidated(t *testing.T) {
	c := defaultConfig()
	c.ExternalAuth = ExternalAuthConfig{Enabled: true, SessionTTLSecs: 86400, Providers: []ProviderConfig{
		{ID: "gh", IssuerURL: "https://idp.example", ClientID: "c", AuthURL: "https://idp.example/authorize"},
		{ID: "ok", IssuerURL: "https://idp2.example", ClientID: "c", AuthURL: "https://idp2.example/a", TokenURL: "https://idp2.example/t",
			JWKSURI: "https://idp2.example/k", UserinfoURL: "ftp://x"}}}
	err := c.validate()
	for _, want := range []string{"providers[0].token_url is required", "providers[0].jwks_uri is required", "providers[1].userinfo_url \"ftp://x\""} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("want %q in %v", want, err)
		}
	}
	c.ExternalAuth.Providers = c.ExternalAuth.Providers[1:]
	c.ExternalAuth.Providers[0].UserinfoURL = ""
	out, _, err := c.authSettings()
	if err != nil || out.Providers[0].JWKSURI != "https://idp2.example/k" || out.Providers[0].AuthURL != "https://idp2.example/a" {
		t.Fatalf("manual endpoints not passed on: %v %+v", err, out.Providers)
	}
}
