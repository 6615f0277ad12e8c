package whatsapp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/transport/neterr"
)

// GatewayEnv names the WhatsApp Web gateway when no channel configuration
// does (LibreFang's variable).
const GatewayEnv = "WHATSAPP_WEB_GATEWAY_URL"

// gatewayHelp is shown when no gateway is configured.
const gatewayHelp = "Run a WhatsApp Web gateway (LibreFang's packages/whatsapp-gateway, default http://127.0.0.1:3009) and set gateway_url " +
	"with POST /api/channels/whatsapp/configure, or the " + GatewayEnv + " environment variable. " +
	"A gateway on loopback or the LAN must be listed in [network_policy] allow_hosts (e.g. \"127.0.0.1/32\")."

// GatewayURL picks the gateway: the whatsapp channel's gateway_url if
// configured, else $WHATSAPP_WEB_GATEWAY_URL; "" when neither is set.
func GatewayURL(configured string) string {
	if configured != "" {
		return strings.TrimRight(configured, "/")
	}
	return strings.TrimRight(os.Getenv(GatewayEnv), "/")
}

// QRStart is the answer to POST /api/channels/whatsapp/qr/start.
type QRStart struct {
	Available bool   `json:"available"`
	QRDataURL string `json:"qr_data_url,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Message   string `json:"message"`
	Connected bool   `json:"connected"`
	Status    string `json:"status,omitempty"`
	Help      string `json:"help,omitempty"`
}

// QRStatus is the answer to GET /api/channels/whatsapp/qr/status.
type QRStatus struct {
	Available bool   `json:"available"`
	SessionID string `json:"session_id,omitempty"`
	// Status is pending, scanned, authenticated or expired ("unknown" when
	// the gateway cannot be asked).
	Status    string `json:"status"`
	Connected bool   `json:"connected"`
	Expired   bool   `json:"expired"`
	Message   string `json:"message"`
	Help      string `json:"help,omitempty"`
}

// gatewayClient calls the QR gateway; UseNetwork puts it behind the
// daemon's network policy.
var gatewayClient = &http.Client{Timeout: 30 * time.Second}

// UseNetwork sends every QR gateway call through n (the daemon's network
// policy), like every other URL fangd dials. Call it once, before the API
// serves.
func UseNetwork(n channel.Network) { gatewayClient = n.Client(30 * time.Second) }

// gatewayError describes a failed gateway call without its URL.
func gatewayError(err error) string {
	if neterr.Network(err) {
		code, cause := neterr.Cause(err)
		return cause + " (" + code + ")"
	}
	return err.Error()
}

// StartQR asks the gateway for a login QR code. It never fails: an absent
// or unreachable gateway is reported with available: false, as LibreFang
// does, so a dashboard can show why.
func StartQR(ctx context.Context, gateway string) QRStart {
	if gateway == "" {
		return QRStart{Available: false, Message: "No WhatsApp Web gateway is configured.", Help: gatewayHelp}
	}
	var r struct {
		QRDataURL string `json:"qr_data_url"`
		SessionID string `json:"session_id"`
		Message   string `json:"message"`
		Connected bool   `json:"connected"`
	}
	// The gateway waits up to ~15 s for Baileys to produce the code.
	ctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	if err := gatewayCall(ctx, gatewayClient, http.MethodPost, gateway+"/login/start", struct{}{}, &r); err != nil {
		return QRStart{Available: false, Message: "Could not reach WhatsApp Web gateway: " + gatewayError(err), Help: gatewayHelp}
	}
	status := "pending"
	if r.Connected {
		status = "authenticated"
	}
	return QRStart{Available: true, QRDataURL: r.QRDataURL, SessionID: r.SessionID, Message: r.Message,
		Connected: r.Connected, Status: status}
}

// PollQR reports the login state. LibreFang's gateway answers
// {connected, message, expired}; a gateway that also says "status":
// "scanned" (the phone read the code, pairing in progress) is passed on.
func PollQR(ctx context.Context, gateway, sessionID string) QRStatus {
	if gateway == "" {
		return QRStatus{Available: false, Status: "unknown", Message: "Gateway not available", Help: gatewayHelp}
	}
	var r struct {
		Connected bool   `json:"connected"`
		Message   string `json:"message"`
		Expired   bool   `json:"expired"`
		Status    string `json:"status"`
	}
	u := gateway + "/login/status"
	if sessionID != "" {
		u += "?session_id=" + url.QueryEscape(sessionID)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := gatewayCall(ctx, gatewayClient, http.MethodGet, u, nil, &r); err != nil {
		return QRStatus{Available: false, SessionID: sessionID, Status: "unknown", Message: "Gateway unreachable: " + gatewayError(err)}
	}
	st := "pending"
	switch {
	case r.Connected:
		st = "authenticated"
	case r.Expired:
		st = "expired"
	case r.Status == "scanned":
		st = "scanned"
	}
	return QRStatus{Available: true, SessionID: sessionID, Status: st, Connected: r.Connected, Expired: r.Expired, Message: r.Message}
}

type health struct {
	Connected bool   `json:"connected"`
	SessionID string `json:"session_id"`
}

func gatewayHealth(ctx context.Context, c *http.Client, gateway string) (health, error) {
	var h health
	err := gatewayCall(ctx, c, http.MethodGet, gateway+"/health", nil, &h)
	return h, err
}

// gatewaySend sends through POST /message/send. The gateway answers 400
// for a malformed request (rejected) and 500 "WhatsApp not connected"
// when its link is down (transient).
func gatewaySend(ctx context.Context, c *http.Client, gateway, to, text string) error {
	return gatewayCall(ctx, c, http.MethodPost, gateway+"/message/send", map[string]string{"to": to, "text": text}, nil)
}

func gatewayCall(ctx context.Context, c *http.Client, method, u string, in, out any) error {
	return channel.CallJSON(ctx, c, channel.Call{Method: method, URL: u, In: in, Out: out, Limit: 1 << 20,
		What: "whatsapp gateway", Refused: gatewayRefused})
}

// gatewayRefused reads the gateway's {"error"} body: 400 is a malformed
// request (rejected), anything else transient.
func gatewayRefused(resp *http.Response, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	desc := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		desc = e.Error
	}
	err := &channel.StatusError{Status: resp.StatusCode, Description: fmt.Sprintf("whatsapp gateway: %s (HTTP %d)", channel.Clip(desc, 200), resp.StatusCode)}
	if resp.StatusCode == http.StatusBadRequest {
		return channel.Rejected(err)
	}
	return err
}
