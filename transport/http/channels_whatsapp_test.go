package http

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
	"github.com/fangd/fangd/store"
)

func whatsappServer(t *testing.T) *testServer {
	t.Helper()
	t.Setenv(store.VaultKeyEnv, strings.Repeat("cd", 32))
	return newTestServer(t, nil, func(s *Server) {
		v := testVault(t, s)
		svc, err := channel.Start(channel.Options{Kernel: s.deps.Kernel, DB: s.deps.Store, Vault: v,
			Builders: channel.Builders{"whatsapp": whatsapp.New}})
		if err != nil {
			t.Fatal(err)
		}
		s.deps.Channels = svc
	})
}

func TestWhatsAppQRWithoutGateway(t *testing.T) {
	t.Setenv(whatsapp.GatewayEnv, "")
	ts := whatsappServer(t)
	r := ts.authed(t, "POST", "/api/channels/whatsapp/qr/start", "")
	var start map[string]any
	if err := json.Unmarshal(r.body, &start); err != nil || r.status != 200 || start["available"] != false || start["help"] == nil {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "GET", "/api/v1/channels/whatsapp/qr/status?session_id=abc", "")
	var st map[string]any
	if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 || st["available"] != false || st["connected"] != false {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/api/channels/whatsapp/qr/start", ""); r.status != 401 {
		t.Fatalf("unauthenticated start: %d", r.status)
	}
}

func TestWhatsAppQRThroughConfiguredGateway(t *testing.T) {
	t.Setenv(whatsapp.GatewayEnv, "")
	gw := whatsapptest.NewGateway()
	defer gw.Close()
	ts := whatsappServer(t)
	// The gateway is named in the channel's configuration (QR mode).
	if r := ts.authed(t, "POST", "/api/channels/whatsapp/configure", `{"fields":{"gateway_url":"`+gw.URL+`"}}`); r.status != 200 {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	r := ts.authed(t, "POST", "/api/channels/whatsapp/qr/start", "{}")
	var start whatsapp.QRStart
	if err := json.Unmarshal(r.body, &start); err != nil || r.status != 200 || !start.Available ||
		!strings.HasPrefix(start.QRDataURL, "data:image/png;base64,") || start.SessionID == "" || start.Status != "pending" {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	poll := func() whatsapp.QRStatus {
		r := ts.authed(t, "GET", "/api/channels/whatsapp/qr/status?session_id="+start.SessionID, "")
		var st whatsapp.QRStatus
		if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 {
			t.Fatalf("status: %d %s", r.status, r.body)
		}
		return st
	}
	if st := poll(); st.Status != "pending" || st.SessionID != start.SessionID {
		t.Fatalf("status %+v", st)
	}
	gw.Authenticate()
	if st := poll(); st.Status != "authenticated" || !st.Connected {
		t.Fatalf("status after scan %+v", st)
	}
	// The channel itself comes up once the gateway is linked.
	r = ts.authed(t, "GET", "/api/channels/whatsapp", "")
	if r.status != 200 {
		t.Fatalf("get: %d", r.status)
	}
}

func TestWhatsAppQRGatewayFromEnv(t *testing.T) {
	gw := whatsapptest.NewGateway()
	defer gw.Close()
	t.Setenv(whatsapp.GatewayEnv, gw.URL)
	ts := whatsappServer(t)
	r := ts.authed(t, "POST", "/api/channels/whatsapp/qr/start", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"available":true`) || gw.Starts() != 1 {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	gw.Expire()
	r = ts.authed(t, "GET", "/api/channels/whatsapp/qr/status", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"expired"`) {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
}

// TestWhatsAppWebhookThroughTheRoute runs Meta's verification handshake and
// a signed delivery through the real /channels/whatsapp/webhook route
// (public, outside API auth).
func TestWhatsAppWebhookThroughTheRoute(t *testing.T) {
	graph := whatsapptest.New("EAAGtoken", "app-secret")
	defer graph.Close()
	ts := whatsappServer(t)
	r := ts.authed(t, "POST", "/api/channels/whatsapp/configure", `{"token":"EAAGtoken","app_secret":"app-secret","verify_token":"vt",`+
		`"phone_number_id":"`+graph.PhoneNumberID+`","api_url":"`+graph.URL+`/v21.0"}`)
	if r.status != 200 {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	endpoint := ts.url + "/channels/whatsapp/webhook"
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body, err := whatsapptest.Verify(endpoint, "vt", "4242")
		if err == nil && st == 200 && body == "4242" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake: %d %q %v", st, body, err)
		}
		time.Sleep(20 * time.Millisecond) // until the channel is running
	}
	if st, _, _ := whatsapptest.Verify(endpoint, "nope", "1"); st != 403 {
		t.Fatalf("wrong verify token: %d", st)
	}
	if st, _ := graph.Deliver(endpoint, whatsapptest.Inbound{From: "15550001111", Text: "hi"}); st != 200 {
		t.Fatalf("signed delivery: %d", st)
	}
	body := graph.NotificationBody(whatsapptest.Inbound{From: "15550001111", Text: "forged"})
	if st, _ := whatsapptest.Post(endpoint, body, whatsapptest.Signature("wrong", body)); st != 401 {
		t.Fatalf("forged delivery: %d", st)
	}
}
