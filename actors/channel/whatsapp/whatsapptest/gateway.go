package whatsapptest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/fangd/fangd/actors/channel/channeltest"
)

// Gateway fakes LibreFang's WhatsApp Web gateway (packages/whatsapp-gateway):
// the same routes and JSON, with the Baileys side replaced by switches the
// test flips (Scan, Authenticate, Expire).
type Gateway struct {
	*httptest.Server

	mu        sync.Mutex
	sessionID string
	qr        string
	state     string // disconnected, qr_ready, scanned, connected, expired
	sent      []map[string]string
	starts    int
}

// NewGateway starts a gateway fake that has not been linked yet.
func NewGateway() *Gateway {
	g := &Gateway{state: "disconnected"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login/start", g.start)
	mux.HandleFunc("GET /login/status", g.status)
	mux.HandleFunc("POST /message/send", g.send)
	mux.HandleFunc("GET /health", g.health)
	g.Server = httptest.NewServer(mux)
	return g
}

// Scan marks the QR as scanned on the phone (pairing in progress).
func (g *Gateway) Scan() { g.set("scanned") }

// Authenticate completes the link.
func (g *Gateway) Authenticate() { g.set("connected") }

// Expire lets the QR code time out.
func (g *Gateway) Expire() { g.set("expired") }

// Starts counts POST /login/start calls.
func (g *Gateway) Starts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.starts
}

// SessionID is the current session id ("" before the first start).
func (g *Gateway) SessionID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessionID
}

// QRDataURL is the data URL of the current QR image.
func (g *Gateway) QRDataURL() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.qr
}

// Sent lists {to, text} pairs sent through /message/send.
func (g *Gateway) Sent() []map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]string(nil), g.sent...)
}

func (g *Gateway) set(state string) {
	g.mu.Lock()
	g.state = state
	g.mu.Unlock()
}

func (g *Gateway) message() string {
	switch g.state {
	case "qr_ready":
		return "Scan this QR code with WhatsApp → Linked Devices"
	case "scanned":
		return "QR scanned, pairing..."
	case "connected":
		return "Connected to WhatsApp"
	case "expired":
		return "QR code expired. Please request a new one."
	}
	return "Not started"
}

func (g *Gateway) start(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.starts++
	if g.state == "connected" {
		channeltest.WriteJSON(w, http.StatusOK, map[string]any{"qr_data_url": "", "session_id": g.sessionID, "message": "Already connected to WhatsApp", "connected": true})
		return
	}
	g.sessionID = channeltest.RandomID(16)
	g.qr = qrPNG()
	g.state = "qr_ready"
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"qr_data_url": g.qr, "session_id": g.sessionID, "message": g.message(), "connected": false})
}

func (g *Gateway) status(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"connected": g.state == "connected", "message": g.message(), "expired": g.state == "expired"})
}

func (g *Gateway) send(w http.ResponseWriter, r *http.Request) {
	var in map[string]string
	if json.NewDecoder(r.Body).Decode(&in) != nil || in["to"] == "" || in["text"] == "" {
		channeltest.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": `Missing "to" or "text" field`})
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != "connected" {
		channeltest.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "WhatsApp not connected"})
		return
	}
	g.sent = append(g.sent, map[string]string{"to": in["to"], "text": in["text"]})
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"success": true, "message": "Sent"})
}

func (g *Gateway) health(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	channeltest.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "connected": g.state == "connected", "session_id": g.sessionID, "active_conversations": 0})
}

// qrPNG renders a small checkerboard PNG as a data URL; it stands in for the
// QR image (the API only passes the data URL through).
func qrPNG() string {
	img := image.NewGray(image.Rect(0, 0, 21, 21))
	for y := 0; y < 21; y++ {
		for x := 0; x < 21; x++ {
			if (x+y)%2 == 0 {
				img.SetGray(x, y, color.Gray{})
			} else {
				img.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
}
