package http

import (
	"context"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel/whatsapp"
)

// whatsappQRRoutes serves the WhatsApp Web QR login. It talks to the
// gateway directly: a login is not a channel yet, so there is no actor to
// ask. The gateway is the whatsapp channel's gateway_url when configured,
// else $WHATSAPP_WEB_GATEWAY_URL; with neither, both routes answer 200
// with available: false, as LibreFang does.
func (s *Server) whatsappQRRoutes() {
	s.api("POST", "/channels/whatsapp/qr/start", s.whatsappQRStart)
	s.api("GET", "/channels/whatsapp/qr/status", s.whatsappQRStatus)
}

func (s *Server) whatsappGateway(c context.Context) string {
	configured := ""
	if svc := s.deps.Channels; svc != nil {
		if v, err := svc.Get(c, "whatsapp"); err == nil && v.Configured {
			for _, f := range v.Fields {
				if f.Key == "gateway_url" {
					configured, _ = f.Value.(string)
				}
			}
		}
	}
	return whatsapp.GatewayURL(configured)
}

// whatsappQRStart serves POST /api/channels/whatsapp/qr/start: it asks the
// gateway for a QR code (the gateway may take ~15 s to produce one).
func (s *Server) whatsappQRStart(ctx *fasthttp.RequestCtx) error {
	auditDetails(ctx, "whatsapp QR login started")
	writeJSON(ctx, fasthttp.StatusOK, whatsapp.StartQR(s.reqCtxWait(ctx), s.whatsappGateway(s.reqCtx(ctx))))
	return nil
}

// whatsappQRStatus serves GET /api/channels/whatsapp/qr/status?session_id=.
func (s *Server) whatsappQRStatus(ctx *fasthttp.RequestCtx) error {
	sid := string(ctx.QueryArgs().Peek("session_id"))
	if len(sid) > 256 {
		return badRequest("invalid_query", "session_id is too long")
	}
	writeJSON(ctx, fasthttp.StatusOK, whatsapp.PollQR(s.reqCtxWait(ctx), s.whatsappGateway(s.reqCtx(ctx)), sid))
	return nil
}
