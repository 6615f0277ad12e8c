package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/pairing"
	"github.com/fangd/fangd/actors/webhook"
)

// Pairing routes (docs/pairing.md). Without [pairing] enabled every one
// answers 404 pairing_disabled, as LibreFang does.
func (s *Server) pairingRoutes() {
	strict := routeOpts{public: true, maxBody: 16 << 10}
	s.api("POST", "/pairing/request", s.needPairing(s.pairingRequest))
	s.api("GET", "/pairing/qr", s.needPairing(s.pairingQR))
	s.api("POST", "/pairing/complete", s.needPairing(s.pairingStrict(s.pairingComplete)), strict)
	s.api("POST", "/pairing/action", s.needPairing(s.pairingStrict(s.pairingAction)), strict)
	s.api("GET", "/pairing/devices", s.needPairing(s.pairingDevices))
	s.api("DELETE", "/pairing/devices/{id}", s.needPairing(s.pairingRevoke))
	s.api("GET", "/pairing/devices/{id}/deliveries", s.needPairing(s.pairingDeliveries))
	s.api("GET", "/pairing/me", s.needPairing(s.pairingMe))
	s.api("GET", "/pairing/vapid", s.needPairing(s.pairingVAPID), public)
	s.api("POST", "/pairing/notify", s.needPairing(s.pairingNotify))
}

func (s *Server) needPairing(h handlerFunc) handlerFunc {
	return func(ctx *fasthttp.RequestCtx) error {
		if s.deps.Pairing == nil {
			return &apiError{fasthttp.StatusNotFound, "pairing_disabled", "pairing not enabled ([pairing] enabled = true)"}
		}
		return h(ctx)
	}
}

// pairingLimiter is the public pairing routes' own limit, per client
// address, far below the API's: these routes are open to anyone and a
// code is short. Loopback is never exempt here.
type pairingLimiter struct {
	once sync.Once
	g    *gcra
}

func (s *Server) pairingStrict(h handlerFunc) handlerFunc {
	return func(ctx *fasthttp.RequestCtx) error {
		s.pairingLimit.once.Do(func() {
			n := s.cfg.PairingPerMinute
			if n <= 0 {
				n = DefaultPairingPerMinute
			}
			s.pairingLimit.g = newGCRA(n)
		})
		ok, wait := s.pairingLimit.g.allow(clientIP(ctx).String(), 1)
		if !ok {
			secs := max(int(wait/time.Second)+1, 1)
			ctx.Response.Header.Set("Retry-After", fmt.Sprint(secs))
			return &apiError{fasthttp.StatusTooManyRequests, "rate_limited", fmt.Sprintf("too many pairing attempts; retry after %ds", secs)}
		}
		return h(ctx)
	}
}

// DefaultPairingPerMinute is the public pairing routes' limit per address.
const DefaultPairingPerMinute = 10

// baseURL is where a device reaches fangd: public_base_url, else the
// request's scheme (X-Forwarded-Proto from a trusted proxy) and Host.
func (s *Server) pairingBaseURL(ctx *fasthttp.RequestCtx) string {
	if b := s.deps.Pairing.Config().PublicBaseURL; b != "" {
		return strings.TrimRight(b, "/")
	}
	scheme := "http"
	if ctx.IsTLS() {
		scheme = "https"
	}
	if p := string(ctx.Request.Header.Peek("X-Forwarded-Proto")); (p == "https" || p == "http") && s.trusted(ctx.RemoteIP()) {
		scheme = p
	}
	return scheme + "://" + string(ctx.Host())
}

type pairingCodeReply struct {
	Code      string    `json:"pairing_code"`
	Token     string    `json:"token"` // LibreFang's name for the same code
	ExpiresAt time.Time `json:"expires_at"`
	QRURI     string    `json:"qr_uri"`
	QRImage   string    `json:"qr_image"`
}

// pairingRequest serves POST /api/pairing/request.
func (s *Server) pairingRequest(ctx *fasthttp.RequestCtx) error {
	if err := decodeOptionalJSON(ctx, &struct{}{}); err != nil {
		return err
	}
	c, err := s.deps.Pairing.Request(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	base := s.pairingBaseURL(ctx)
	auditDetails(ctx, "pairing code issued, expires "+c.ExpiresAt.Format(time.RFC3339))
	writeJSON(ctx, fasthttp.StatusOK, pairingCodeReply{Code: c.Code, Token: c.Code, ExpiresAt: c.ExpiresAt,
		QRURI: pairing.QRURI(base, c.Code), QRImage: "/api/pairing/qr?code=" + c.Code})
	return nil
}

// pairingQR serves GET /api/pairing/qr?code=: the QR code of qr_uri as PNG.
func (s *Server) pairingQR(ctx *fasthttp.RequestCtx) error {
	code := string(ctx.QueryArgs().Peek("code"))
	if code == "" || len(code) > 16 {
		return badRequest("invalid_input", "code is required (the pairing_code of POST /api/pairing/request)")
	}
	png, err := pairing.QRPNG(pairing.QRURI(s.pairingBaseURL(ctx), code), 256)
	if err != nil {
		return err
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("image/png")
	ctx.SetBody(png)
	return nil
}

// pushBody is a device's push target as sent to complete.
type pushBody struct {
	Type   string `json:"type"`
	Server string `json:"server"`
	Topic  string `json:"topic"`
	URL    string `json:"url"`
	Token  string `json:"token"`
	Secret string `json:"secret"`
	// Web Push: a browser's PushSubscription as its toJSON() gives it
	// (endpoint, expirationTime, keys), or url + p256dh + auth.
	Endpoint       string          `json:"endpoint"`
	ExpirationTime json.RawMessage `json:"expirationTime"`
	Keys           *struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
	P256DH string `json:"p256dh"`
	Auth   string `json:"auth"`
}

type completeBody struct {
	Code        string    `json:"pairing_code"`
	Token       string    `json:"token"` // LibreFang's name for the code
	Name        string    `json:"display_name"`
	DeviceName  string    `json:"device_name"`
	Platform    string    `json:"platform"`
	PushToken   string    `json:"push_token"` // LibreFang's: stored, unused
	Push        *pushBody `json:"push"`
	Description string    `json:"description"`
}

// pairingComplete serves POST /api/pairing/complete (public).
func (s *Server) pairingComplete(ctx *fasthttp.RequestCtx) error {
	var b completeBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	code := b.Code
	if code == "" {
		code = b.Token
	}
	if code == "" {
		return badRequest("invalid_input", "pairing_code is required")
	}
	name := b.Name
	if name == "" {
		name = b.DeviceName
	}
	if name == "" {
		name = "unknown"
	}
	platform := b.Platform
	if platform == "" {
		platform = "unknown"
	}
	if len(name) > 100 || len(platform) > 50 || len(code) > 16 || len(b.PushToken) > 4096 {
		return badRequest("invalid_input", "display_name (100), platform (50), pairing_code (16) or push_token (4096) too long")
	}
	req := pairing.CompleteRequest{Code: code, Name: name, Platform: platform, PushToken: b.PushToken, SourceIP: clientIP(ctx).String()}
	if pb := b.Push; pb != nil {
		req.Push = &pairing.Target{Type: pb.Type, Server: pb.Server, Topic: pb.Topic, URL: pb.URL,
			Token: pb.Token, Secret: pb.Secret, P256DH: pb.P256DH, AuthSecret: pb.Auth}
		if pb.Endpoint != "" && pb.URL == "" {
			req.Push.URL = pb.Endpoint
		}
		if pb.Keys != nil {
			req.Push.P256DH, req.Push.AuthSecret = pb.Keys.P256DH, pb.Keys.Auth
		}
		if req.Push.Type == "" && pb.Endpoint != "" {
			req.Push.Type = pairing.TargetWebPush
		}
	}
	paired, err := s.deps.Pairing.Complete(s.reqCtxWait(ctx), req)
	if err != nil {
		auditDetails(ctx, "pairing refused: "+errorCode(err))
		if errorCode(err) == "pairing_locked" {
			s.appendAuditAsync(audit.Event{EventType: "pairing_lockout", Outcome: "denied", Actor: "anonymous",
				SourceIP: req.SourceIP, Details: "too many wrong pairing codes: this address is locked out of pairing"})
		}
		return err
	}
	target := "none"
	if req.Push != nil {
		target = req.Push.Type
	}
	auditDetails(ctx, fmt.Sprintf("device %s paired (%q, %s, push %s)", paired.DeviceID, paired.Name, paired.Platform, target))
	writeJSON(ctx, fasthttp.StatusOK, paired)
	return nil
}

// pairingVAPID serves GET /api/pairing/vapid: the VAPID public key a
// browser subscribes to Web Push with (applicationServerKey). Public: it
// is needed before the browser has any credential.
func (s *Server) pairingVAPID(ctx *fasthttp.RequestCtx) error {
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"public_key": s.deps.Pairing.VAPIDPublicKey()})
	return nil
}

// pairingDevices serves GET /api/pairing/devices.
func (s *Server) pairingDevices(ctx *fasthttp.RequestCtx) error {
	devs, err := s.deps.Pairing.Devices(s.reqCtx(ctx))
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"devices": devs, "total": len(devs)})
	return nil
}

// pairingDeliveries serves GET /api/pairing/devices/{id}/deliveries: the
// device's push attempts from the webhook engine's
// delivery records of its push endpoint (the shape of
// GET /api/webhooks/{id}/deliveries). A device without a push target has
// none.
func (s *Server) pairingDeliveries(ctx *fasthttp.RequestCtx) error {
	limit, err := intQuery(ctx, 50, 1, 200, "limit")
	if err != nil {
		return err
	}
	id, _ := ctx.UserValue("id").(string)
	ep, err := s.deps.Pairing.PushEndpoint(s.reqCtx(ctx), id)
	if err != nil {
		return err
	}
	a := []webhook.Attempt{}
	if ep != "" {
		e, err := s.engine()
		if err != nil {
			return err
		}
		if a, err = e.Deliveries(s.reqCtx(ctx), ep, limit); err != nil {
			return err
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"device_id": id, "deliveries": a, "total": len(a)})
	return nil
}

// pairingMe serves GET /api/pairing/me: a device's own record.
func (s *Server) pairingMe(ctx *fasthttp.RequestCtx) error {
	id, ok := strings.CutPrefix(who(ctx).Actor, "device:")
	if !ok {
		return &apiError{fasthttp.StatusNotFound, "not_a_device", "the caller is not a paired device"}
	}
	v, err := s.deps.Pairing.Device(s.reqCtx(ctx), id)
	return reply(ctx, v, err)
}

// pairingRevoke serves DELETE /api/pairing/devices/{id}: 204.
func (s *Server) pairingRevoke(ctx *fasthttp.RequestCtx) error {
	id, _ := ctx.UserValue("id").(string)
	v, err := s.deps.Pairing.Revoke(s.reqCtx(ctx), id)
	return replyNoContent(ctx, err, func() string { return fmt.Sprintf("device %s (%q) revoked", v.ID, v.Name) })
}

type notifyBody struct {
	Title    string           `json:"title"`
	Message  string           `json:"message"`
	Priority int              `json:"priority"`
	Actions  []pairing.Action `json:"actions"`
}

// pairingNotify serves POST /api/pairing/notify.
func (s *Server) pairingNotify(ctx *fasthttp.RequestCtx) error {
	var b notifyBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if b.Title == "" {
		b.Title = "fangd"
	}
	switch {
	case strings.TrimSpace(b.Message) == "":
		return badRequest("invalid_input", "message is required")
	case len(b.Message) > 4096 || len(b.Title) > 256:
		return badRequest("invalid_input", "message (4096) or title (256) too long")
	case b.Priority < 0 || b.Priority > 5:
		return badRequest("invalid_input", "priority must be 1..5")
	case len(b.Actions) > 3:
		return badRequest("invalid_input", "at most 3 actions")
	}
	for _, a := range b.Actions {
		if a.Label == "" || !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
			return badRequest("invalid_input", "each action needs a label and an http(s) url")
		}
		if a.Method == "" {
			a.Method = "POST"
		}
	}
	res, err := s.deps.Pairing.Notify(s.reqCtxWait(ctx), &pairing.Notification{Title: b.Title, Message: b.Message, Priority: b.Priority, Actions: b.Actions})
	return replyAudited(ctx, res, err, func() string {
		return fmt.Sprintf("notification queued for %d device(s), %d failed", res.Notified, res.Failed)
	})
}

type actionBody struct {
	Token    string `json:"token"`
	TOTPCode string `json:"totp_code"`
}

// pairingAction serves POST /api/pairing/action (public): a device's
// approve or reject button. The token is the credential: signed, for one
// approval and one decision, single use, expiring, void once the device
// is revoked. A TOTP code is still needed where the policy asks for one.
func (s *Server) pairingAction(ctx *fasthttp.RequestCtx) error {
	if s.deps.Approvals == nil {
		return &apiError{fasthttp.StatusServiceUnavailable, "approvals_unavailable", "approvals are not running"}
	}
	var b actionBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if b.Token == "" || len(b.TOTPCode) > 64 {
		return badRequest("invalid_input", "token is required")
	}
	c, err := s.deps.Pairing.Action(s.reqCtxWait(ctx), b.Token)
	if err != nil {
		auditDetails(ctx, "device action refused: "+errorCode(err))
		return err
	}
	who := approval.Decider{Identity: "device:" + c.DeviceID, Via: approval.ViaAPI, SourceIP: clientIP(ctx).String()}
	ctx.SetUserValue(userActor, who.Identity)
	verb := "rejected"
	if c.Approve {
		verb = "approved"
	}
	rec, err := s.deps.Approvals.Decide(s.reqCtxWait(ctx), approval.Decide{ID: c.ApprovalID, Approve: c.Approve, Code: b.TOTPCode, By: who,
		Reason: "answered from a paired device's notification"})
	if err != nil {
		auditDetails(ctx, "approval "+c.ApprovalID+" not "+verb+" from a device action: "+errorCode(err))
		return err
	}
	auditDetails(ctx, fmt.Sprintf("approval %s %s from device %s's notification", c.ApprovalID, verb, c.DeviceID))
	writeJSON(ctx, fasthttp.StatusOK, rec)
	return nil
}

// errorCode is the machine code an error will be answered with.
func errorCode(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.code
	}
	if de := kernel.AsError(err); de != nil {
		return de.Code
	}
	return "internal_error"
}

// appendAuditAsync records an event the request's own entry does not
// say, without holding the answer for it.
func (s *Server) appendAuditAsync(ev audit.Event) {
	go func() {
		if err := s.appendAudit(ev); err != nil {
			s.log.Error().Err(err).Str("event", ev.EventType).Msg("audit entry not recorded")
		}
	}()
}
