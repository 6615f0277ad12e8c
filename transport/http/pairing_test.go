package http

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/channel/gotify/gotifytest"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/pairing"
)

type pairingServer struct {
	*testServer
	apps *approval.Approvals
	p    *pairing.Pairing
}

func newPairingServer(t *testing.T, mutate func(*Config), pc func(*pairing.Config)) *pairingServer {
	t.Helper()
	ps := &pairingServer{}
	ps.testServer = newTestServer(t, mutate, func(s *Server) {
		k, db := s.deps.Kernel, s.deps.Store
		bus := testBus(t, s, comms.BusOptions{})
		vault := testVault(t, s)
		eng := testWebhooks(t, s, bus, vault, nil)
		pol := approval.DefaultPolicy()
		apps, err := approval.Start(k, db, vault, s.deps.Audit, approval.Options{Policy: pol, Events: bus})
		if err != nil {
			t.Fatal(err)
		}
		cfg := pairing.DefaultConfig()
		cfg.Enabled = true
		if pc != nil {
			pc(&cfg)
		}
		p, err := pairing.Start(k, db, pairing.Options{Config: cfg, Push: eng, Vault: vault, Bus: bus, BaseURL: "http://fangd.test"})
		if err != nil {
			t.Fatal(err)
		}
		s.deps.Bus, s.deps.Webhooks, s.deps.Approvals, s.deps.Pairing = bus, eng, apps, p
		ps.apps, ps.p = apps, p
	})
	return ps
}

func (ps *pairingServer) code(t *testing.T) string {
	t.Helper()
	r := ps.authed(t, "POST", "/api/pairing/request", "")
	if r.status != 200 {
		t.Fatalf("request: %d %s", r.status, r.body)
	}
	var out struct {
		Code, Token, QRURI, QRImage string
		ExpiresAt                   time.Time `json:"expires_at"`
	}
	json.Unmarshal(r.body, &out)
	var raw map[string]any
	json.Unmarshal(r.body, &raw)
	out.Code, _ = raw["pairing_code"].(string)
	if len(out.Code) != 7 || out.Code[3] != '-' || raw["token"] != out.Code || !strings.Contains(raw["qr_uri"].(string), "code="+out.Code) ||
		time.Until(out.ExpiresAt) > 5*time.Minute+time.Second || time.Until(out.ExpiresAt) < 4*time.Minute {
		t.Fatalf("request answer: %s", r.body)
	}
	return out.Code
}

func (ps *pairingServer) complete(t *testing.T, body string) (int, map[string]any) {
	t.Helper()
	r := ps.do(t, "POST", "/api/pairing/complete", body, "Content-Type", "application/json")
	var out map[string]any
	json.Unmarshal(r.body, &out)
	return r.status, out
}

func asDevice(token string) []string { return []string{"Authorization", "Bearer " + token} }

func TestPairingEndToEndNtfyActionAndRevoke(t *testing.T) {
	t.Parallel()
	ntfy := ntfytest.New()
	defer ntfy.Close()
	ps := newPairingServer(t, nil, nil)

	code := ps.code(t)
	qr := ps.authed(t, "GET", "/api/pairing/qr?code="+code, "")
	if qr.status != 200 || qr.header.Get("Content-Type") != "image/png" {
		t.Fatalf("qr: %d %s", qr.status, qr.header)
	}
	if _, err := png.Decode(bytes.NewReader(qr.body)); err != nil {
		t.Fatalf("qr is not a PNG: %v", err)
	}

	st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"pixel","platform":"android",
		"push":{"type":"ntfy","server":%q,"topic":"fangd-phone","token":%q}}`, strings.ToLower(code), ntfy.URL, ntfytest.BotToken))
	if st != 200 {
		t.Fatalf("complete: %d %v", st, out)
	}
	devID, token := out["device_id"].(string), out["device_token"].(string)
	if devID == "" || !strings.HasPrefix(token, "fdv_") || out["api_key"] != token {
		t.Fatalf("complete answer: %v", out)
	}
	// Single use.
	if st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q}`, code)); st != 404 || out["code"] != "invalid_pairing_code" {
		t.Fatalf("reused code: %d %v", st, out)
	}

	// The device's role: its own record and approvals, nothing else.
	if r := ps.do(t, "GET", "/api/pairing/me", "", asDevice(token)...); r.status != 200 || !strings.Contains(string(r.body), devID) {
		t.Fatalf("me: %d %s", r.status, r.body)
	}
	for _, c := range []struct{ method, path string }{{"GET", "/api/pairing/devices"}, {"POST", "/api/pairing/request"},
		{"GET", "/api/audit/recent"}, {"DELETE", "/api/pairing/devices/" + devID}, {"POST", "/api/pairing/notify"}} {
		r := ps.do(t, c.method, c.path, "", asDevice(token)...)
		if r.status != 403 || r.envelope(t).Code != "forbidden" || !strings.Contains(r.envelope(t).Error, "role 'device'") {
			t.Fatalf("device %s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if r := ps.do(t, "GET", "/api/approvals", "", asDevice(token)...); r.status != 200 {
		t.Fatalf("device lists approvals: %d %s", r.status, r.body)
	}
	// The secret of the push target is never listed.
	list := ps.authed(t, "GET", "/api/pairing/devices", "")
	if list.status != 200 || !strings.Contains(string(list.body), `"topic":"fangd-phone"`) || strings.Contains(string(list.body), ntfytest.BotToken) ||
		strings.Contains(string(list.body), "token_hash") {
		t.Fatalf("devices: %d %s", list.status, list.body)
	}

	// An approval notifies the phone with approve/reject actions.
	ap, err := ps.apps.Create(context.Background(), approval.Request{AgentID: "a-1", AgentName: "coder", Action: "shell_exec", Description: "rm -rf build"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := ntfy.WaitMessage(ctx, func(m ntfytest.Message) bool { return m.Topic == "fangd-phone" && len(m.Actions) == 2 })
	if err != nil {
		t.Fatal("no approval notification on ntfy:", err)
	}
	if !strings.Contains(msg.Title, "shell_exec") || msg.Actions[0].Label != "Approve" || msg.Actions[0].URL != "http://fangd.test/api/pairing/action" {
		t.Fatalf("notification: %+v", msg)
	}
	press := func(a ntfytest.Action) response {
		return ps.do(t, a.Method, "/api/pairing/action", a.Body, "Content-Type", a.Headers["Content-Type"])
	}
	r := press(msg.Actions[0])
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"approved"`) || !strings.Contains(string(r.body), "device:"+devID) {
		t.Fatalf("approve from the action: %d %s", r.status, r.body)
	}
	if got, _ := ps.apps.Get(context.Background(), ap.ID); got.Status != approval.StatusApproved {
		t.Fatalf("approval status %q", got.Status)
	}
	if r := press(msg.Actions[0]); r.status != 409 || r.envelope(t).Code != "action_used" {
		t.Fatalf("second press: %d %s", r.status, r.body)
	}
	if r := press(msg.Actions[1]); r.status != 409 {
		t.Fatalf("reject after the approval was decided: %d %s", r.status, r.body)
	}

	// A device answers an approval with its own token too.
	ap2, err := ps.apps.Create(context.Background(), approval.Request{AgentID: "a-1", AgentName: "coder", Action: "shell_exec", Description: "make"})
	if err != nil {
		t.Fatal(err)
	}
	if r := ps.do(t, "POST", "/api/approvals/"+ap2.ID+"/reject", `{}`, append(asDevice(token), "Content-Type", "application/json")...); r.status != 200 ||
		!strings.Contains(string(r.body), `"status":"rejected"`) {
		t.Fatalf("device rejects with its token: %d %s", r.status, r.body)
	}

	// notify reports per-device results; the message arrives.
	nr := ps.authed(t, "POST", "/api/pairing/notify", `{"title":"hello","message":"build done","priority":4}`)
	var res pairing.NotifyResult
	json.Unmarshal(nr.body, &res)
	if nr.status != 200 || res.Notified != 1 || res.Failed != 0 || len(res.Deliveries) != 1 || res.Deliveries[0].Status != "queued" {
		t.Fatalf("notify: %d %s", nr.status, nr.body)
	}
	if _, err := ntfy.WaitMessage(ctx, func(m ntfytest.Message) bool { return m.Message == "build done" && m.Priority == 4 }); err != nil {
		t.Fatal("notification not delivered:", err)
	}

	// Revocation takes effect on the next request.
	if r := ps.authed(t, "DELETE", "/api/pairing/devices/"+devID, ""); r.status != 204 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := ps.do(t, "GET", "/api/pairing/me", "", asDevice(token)...); r.status != 401 {
		t.Fatalf("revoked token: %d %s", r.status, r.body)
	}
	if r := ps.authed(t, "DELETE", "/api/pairing/devices/"+devID, ""); r.status != 404 {
		t.Fatalf("second revoke: %d", r.status)
	}
	var paired, revoked bool
	for _, e := range ps.recent(t, 50) {
		paired = paired || strings.Contains(e.Details, "device "+devID+" paired") && e.Actor == "anonymous"
		revoked = revoked || strings.Contains(e.Details, "device "+devID+` ("pixel") revoked`) && e.Actor == "api_key"
	}
	if !paired || !revoked {
		t.Fatalf("pairing and revocation not audited (paired %v, revoked %v)", paired, revoked)
	}
}

func TestPairingGotifyAndSignedWebhookTargets(t *testing.T) {
	t.Parallel()
	gotify := gotifytest.New()
	defer gotify.Close()
	secret := "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var mu sync.Mutex
	var got [][]byte
	hook := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		body, _ := io.ReadAll(r.Body)
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(body, r.Header); err != nil {
			w.WriteHeader(401)
			return
		}
		mu.Lock()
		got = append(got, body)
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer hook.Close()
	ps := newPairingServer(t, nil, nil)
	if st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"desk","push":{"type":"gotify","server":%q,"token":%q}}`,
		ps.code(t), gotify.URL, gotifytest.BotAppToken)); st != 200 {
		t.Fatalf("gotify device: %d %v", st, out)
	}
	if st, out := ps.complete(t, fmt.Sprintf(`{"token":%q,"display_name":"ci","push":{"type":"webhook","url":%q,"secret":%q}}`,
		ps.code(t), hook.URL, secret)); st != 200 {
		t.Fatalf("webhook device: %d %v", st, out)
	}
	if st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"push":{"type":"webpush","url":"https://push.example/x"}}`, ps.code(t))); st != 400 {
		t.Fatalf("webpush without keys: %d %v", st, out)
	}
	wp := newWebPushReceiver(t)
	r := ps.do(t, "GET", "/api/pairing/vapid", "")
	var vapid struct {
		PublicKey string `json:"public_key"`
	}
	json.Unmarshal(r.body, &vapid)
	wp.vapidKey = vapid.PublicKey
	if st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"browser","push":%s}`, ps.code(t), wp.subscription())); st != 200 {
		t.Fatalf("webpush device: %d %v", st, out)
	}
	if r := ps.authed(t, "POST", "/api/pairing/notify", `{"message":"deploy finished"}`); r.status != 200 || !strings.Contains(string(r.body), `"notified":3`) {
		t.Fatalf("notify: %d %s", r.status, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := gotify.WaitMessage(ctx, func(m gotifytest.Message) bool { return m.Message == "deploy finished" }); err != nil || m.Title != "fangd" {
		t.Fatalf("gotify: %+v %v", m, err)
	}
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("signed webhook not delivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(string(got[0]), `"message":"deploy finished"`) {
		t.Fatalf("webhook body: %s", got[0])
	}
	select {
	case plain := <-wp.got:
		if !strings.Contains(string(plain), `"body":"deploy finished"`) {
			t.Fatalf("web push plaintext: %s", plain)
		}
	case <-ctx.Done():
		t.Fatal("web push not delivered")
	}
}

// webPushReceiver is a push service endpoint that checks the VAPID token
// and decrypts the message with the subscription's private key: RFC 8291
// and RFC 8188 written out again here with HMAC (not crypto/hkdf), so a
// mistake in fangd's encryption is not mirrored.
type webPushReceiver struct {
	*httptest.Server
	ua       *ecdh.PrivateKey
	auth     []byte
	vapidKey string
	got      chan []byte
}

func newWebPushReceiver(t *testing.T) *webPushReceiver {
	ua, _ := ecdh.P256().GenerateKey(rand.Reader)
	w := &webPushReceiver{ua: ua, auth: make([]byte, 16), got: make(chan []byte, 4)}
	rand.Read(w.auth)
	w.Server = httptest.NewServer(nethttp.HandlerFunc(func(rw nethttp.ResponseWriter, r *nethttp.Request) {
		body, _ := io.ReadAll(r.Body)
		plain, err := w.check(r, body)
		if err != nil {
			t.Errorf("web push receiver: %v", err)
			rw.WriteHeader(400)
			return
		}
		w.got <- plain
		rw.WriteHeader(201) // RFC 8030: 201 Created
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webPushReceiver) subscription() string {
	b, _ := json.Marshal(map[string]any{"endpoint": w.URL + "/push/abc", "expirationTime": nil, "keys": map[string]string{
		"p256dh": base64.RawURLEncoding.EncodeToString(w.ua.PublicKey().Bytes()), "auth": base64.RawURLEncoding.EncodeToString(w.auth)}})
	return string(b)
}

func hmacSum(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func (w *webPushReceiver) check(r *nethttp.Request, body []byte) ([]byte, error) {
	if r.Header.Get("Content-Encoding") != "aes128gcm" || r.Header.Get("TTL") == "" {
		return nil, fmt.Errorf("headers %v", r.Header)
	}
	// VAPID: "vapid t=<jwt>, k=<key>"; k is the key the browser subscribed with.
	a := strings.TrimPrefix(r.Header.Get("Authorization"), "vapid ")
	parts := strings.Split(a, ", ")
	if len(parts) != 2 || parts[1] != "k="+w.vapidKey {
		return nil, fmt.Errorf("authorization %q", a)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(w.vapidKey)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, err
	}
	tok, err := jwt.Parse(strings.TrimPrefix(parts[0], "t="), func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{"ES256"}))
	if err != nil || tok.Claims.(jwt.MapClaims)["aud"] != w.URL {
		return nil, fmt.Errorf("vapid token: %v %v", err, tok)
	}
	if len(body) < 21 {
		return nil, fmt.Errorf("short body")
	}
	salt, idlen := body[:16], int(body[20])
	asRaw, ct := body[21:21+idlen], body[21+idlen:]
	as, err := ecdh.P256().NewPublicKey(asRaw)
	if err != nil {
		return nil, err
	}
	shared, _ := w.ua.ECDH(as)
	prkKey := hmacSum(w.auth, shared)
	info := append(append([]byte("WebPush: info\x00"), w.ua.PublicKey().Bytes()...), asRaw...)
	ikm := hmacSum(prkKey, append(info, 1))[:32]
	prk := hmacSum(salt, ikm)
	cek := hmacSum(prk, append([]byte("Content-Encoding: aes128gcm\x00"), 1))[:16]
	nonce := hmacSum(prk, append([]byte("Content-Encoding: nonce\x00"), 1))[:12]
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	plain, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, err
	}
	plain = bytes.TrimRight(plain, "\x00")
	if len(plain) == 0 || plain[len(plain)-1] != 2 {
		return nil, fmt.Errorf("no last-record delimiter")
	}
	return plain[:len(plain)-1], nil
}

func TestPairingCompleteLockoutRateLimitAndBadInput(t *testing.T) {
	t.Parallel()
	ps := newPairingServer(t, func(c *Config) { c.PairingPerMinute = 6 }, func(c *pairing.Config) { c.LockoutAfter = 3 })
	for i, c := range []struct {
		body string
		want int
		code string
	}{
		{`{}`, 400, "invalid_input"},
		{`{"pairing_code":"AAA-AAA","bogus":1}`, 400, ""},
		{`{"pairing_code":"AAA-AAA"}`, 404, "invalid_pairing_code"},
		{`{"pairing_code":"AAA-AAB"}`, 404, "invalid_pairing_code"},
		{`{"pairing_code":"AAA-AAC"}`, 429, "pairing_locked"},
		{`{"pairing_code":"AAA-AAD"}`, 429, "pairing_locked"},
		{`{"pairing_code":"AAA-AAE"}`, 429, "rate_limited"},
	} {
		st, out := ps.complete(t, c.body)
		if st != c.want || (c.code != "" && out["code"] != c.code) {
			t.Fatalf("attempt %d %s: %d %v", i, c.body, st, out)
		}
	}
	var lockout bool
	for _, e := range ps.recent(t, 30) {
		lockout = lockout || e.EventType == "pairing_lockout"
	}
	if !lockout {
		t.Fatal("the lockout is not audited")
	}
	if r := ps.authed(t, "GET", "/api/pairing/devices", ""); !strings.Contains(string(r.body), `"total":0`) {
		t.Fatalf("something was paired: %s", r.body)
	}
}

func TestPairingDisabledIs404(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for _, p := range []string{"/api/pairing/request", "/api/pairing/complete"} {
		r := ts.authed(t, "POST", p, `{}`)
		if r.status != 404 || r.envelope(t).Code != "pairing_disabled" {
			t.Fatalf("%s: %d %s", p, r.status, r.body)
		}
	}
}

func TestRolesOfNamedKeys(t *testing.T) {
	t.Parallel()
	opKey, viewKey := "operator-key-0123456789", "viewer-key-0123456789ab"
	hash := func(k string) [32]byte { return hashKey(k) }
	ts := newTestServer(t, func(c *Config) {
		c.Users = []User{{Name: "olga", Role: RoleOperator, KeyHash: hash(opKey)}, {Name: "vic", Role: RoleViewer, KeyHash: hash(viewKey)}}
	})
	bearer := func(k string) []string {
		return []string{"Authorization", "Bearer " + k, "Content-Type", "application/json"}
	}
	for _, c := range []struct {
		key, method, path, body string
		want                    int
	}{
		{opKey, "GET", "/api/audit/recent", "", 200},
		{opKey, "GET", "/api/audit/export", "", 403},
		{opKey, "PUT", "/api/logs/level", `{"level":"debug"}`, 403},
		{opKey, "POST", "/api/pairing/request", "", 403},
		{viewKey, "GET", "/api/audit/recent", "", 200},
		{viewKey, "GET", "/api/v1/audit/recent", "", 200},
		{viewKey, "POST", "/api/audit/accept", `{}`, 403},
		{viewKey, "GET", "/api/admin/backup", "", 403},
		{testKey, "PUT", "/api/logs/level", `{"level":"info"}`, 200},
		{"wrong-key-0123456789abc", "GET", "/api/audit/recent", "", 401},
	} {
		r := ts.do(t, c.method, c.path, c.body, bearer(c.key)...)
		if r.status != c.want {
			t.Fatalf("%s %s as %s: %d %s", c.method, c.path, c.key[:4], r.status, r.body)
		}
	}
	var denied bool
	for _, e := range ts.recent(t, 30) {
		denied = denied || e.Actor == "user:vic" && e.Outcome == "denied" && strings.Contains(e.Details, "/api/admin/backup")
	}
	if !denied {
		t.Fatal("a role's refusal is not audited with the identity")
	}
	if h, ok := ParseKeyHash("$sha256$" + hex.EncodeToString(func() []byte { s := hash(opKey); return s[:] }())); !ok || h != hash(opKey) {
		t.Fatal("ParseKeyHash")
	}
}

// LibreFang's shapes: request answers token, qr_uri and expires_at;
// complete takes {token, display_name, platform, push_token} and answers
// api_key; devices lists {device_id, display_name, platform, paired_at,
// last_seen}.
func TestPairingAcceptsLibreFangShapes(t *testing.T) {
	t.Parallel()
	ps := newPairingServer(t, nil, nil)
	code := ps.code(t)
	st, out := ps.complete(t, fmt.Sprintf(`{"token":%q,"display_name":"lf-phone","platform":"ios","push_token":"apns-abc"}`, code))
	if st != 200 || out["api_key"] == nil || out["api_key"] != out["device_token"] || out["display_name"] != "lf-phone" || out["paired_at"] == nil {
		t.Fatalf("LibreFang complete: %d %v", st, out)
	}
	key := out["api_key"].(string)
	r := ps.authed(t, "GET", "/api/pairing/devices", "")
	var list struct {
		Devices []map[string]any `json:"devices"`
	}
	json.Unmarshal(r.body, &list)
	if len(list.Devices) != 1 || list.Devices[0]["platform"] != "ios" || strings.Contains(string(r.body), "apns-abc") {
		t.Fatalf("devices: %s", r.body)
	}
	if _, ok := list.Devices[0]["last_seen"]; !ok {
		t.Fatalf("no last_seen: %s", r.body)
	}
	if r := ps.do(t, "GET", "/api/pairing/me", "", "X-API-Key", key); r.status != 200 {
		t.Fatalf("the api_key as X-API-Key: %d %s", r.status, r.body)
	}
}
