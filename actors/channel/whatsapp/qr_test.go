package whatsapp

import (
	"bytes"
	"context"
	"encoding/base64"
	"image/png"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
)

func TestQRWithoutGatewaySaysSo(t *testing.T) {
	t.Setenv(GatewayEnv, "")
	if GatewayURL("") != "" {
		t.Fatal("no gateway expected")
	}
	s := StartQR(context.Background(), "")
	if s.Available || s.QRDataURL != "" || s.Help == "" {
		t.Fatalf("start = %+v", s)
	}
	p := PollQR(context.Background(), "", "x")
	if p.Available || p.Connected || p.Status != "unknown" {
		t.Fatalf("status = %+v", p)
	}
}

func TestQRGatewayUnreachable(t *testing.T) {
	dead := httptest.NewServer(nil)
	url := dead.URL
	dead.Close()
	s := StartQR(context.Background(), url)
	if s.Available || !strings.Contains(s.Message, "Could not reach") {
		t.Fatalf("start = %+v", s)
	}
	if p := PollQR(context.Background(), url, "x"); p.Available || !strings.Contains(p.Message, "unreachable") {
		t.Fatalf("status = %+v", p)
	}
}

func TestQRFlow(t *testing.T) {
	gw := channeltest.Cleanup(t, whatsapptest.NewGateway())
	t.Setenv(GatewayEnv, gw.URL+"/")
	url := GatewayURL("")
	if url != gw.URL {
		t.Fatalf("GatewayURL = %q", url)
	}
	ctx := context.Background()
	s := StartQR(ctx, url)
	if !s.Available || s.Connected || s.SessionID == "" || s.SessionID != gw.SessionID() || s.Status != "pending" {
		t.Fatalf("start = %+v", s)
	}
	b64, ok := strings.CutPrefix(s.QRDataURL, "data:image/png;base64,")
	if !ok {
		t.Fatalf("qr_data_url = %.40q", s.QRDataURL)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(raw)); err != nil {
		t.Fatalf("QR is not a PNG: %v", err)
	}
	if p := PollQR(ctx, url, s.SessionID); !p.Available || p.Status != "pending" || p.Connected {
		t.Fatalf("poll = %+v", p)
	}
	gw.Expire()
	if p := PollQR(ctx, url, s.SessionID); p.Status != "expired" || !p.Expired {
		t.Fatalf("poll after expiry = %+v", p)
	}
	s = StartQR(ctx, url) // a new code
	if gw.Starts() != 2 || !s.Available {
		t.Fatalf("restart = %+v", s)
	}
	gw.Authenticate()
	if p := PollQR(ctx, url, s.SessionID); p.Status != "authenticated" || !p.Connected {
		t.Fatalf("poll after scan = %+v", p)
	}
	if s := StartQR(ctx, url); !s.Connected || s.Status != "authenticated" {
		t.Fatalf("start when linked = %+v", s)
	}
}
