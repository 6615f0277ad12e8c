package http

import (
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel/whatsapp"
)

// registryEntry is one adapter as LibreFang's GET /api/channels/registry
// lists it (its ChannelMeta: id, name, description, category, tags, icon,
// protocol, i18n, metadata), with fangd's setup_type and supported. fangd
// keeps no icons, tags or translations: those are empty, not invented.
type registryEntry struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Category    string            `json:"category"`
	Tags        []string          `json:"tags"`
	Icon        string            `json:"icon"`
	Protocol    string            `json:"protocol"`
	I18n        map[string]any    `json:"i18n"`
	Metadata    map[string]string `json:"metadata"`
	DisplayName string            `json:"display_name"`
	SetupType   string            `json:"setup_type"`
	Supported   bool              `json:"supported"`
}

// channelRegistry serves GET /api/channels/registry: the adapters fangd
// knows (one entry per platform, not per configured instance), as a JSON
// array like LibreFang's.
func (s *Server) channelRegistry(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	list, err := svc.List(s.reqCtx(ctx), false)
	if err != nil {
		return err
	}
	out := []registryEntry{}
	for _, v := range list {
		if v.Name != v.Adapter { // an extra instance of an adapter
			continue
		}
		out = append(out, registryEntry{ID: v.Name, Name: v.DisplayName, Description: v.Description, Category: v.Category,
			Tags: []string{}, I18n: map[string]any{}, DisplayName: v.DisplayName, SetupType: v.SetupType, Supported: v.Supported})
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
	return nil
}

// channelQR serves GET /api/channels/{name}/qr, LibreFang's QR-login
// state. Only WhatsApp Web logs in by QR here: with a gateway it answers
// the gateway's login state (as GET /api/channels/whatsapp/qr/status);
// without one, and for every other channel, 404 as LibreFang answers for
// an adapter with no QR sidecar running. Unknown channels are 404 too.
func (s *Server) channelQR(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	v, err := svc.Get(s.reqCtx(ctx), pathName(ctx))
	if err != nil {
		return err
	}
	if v.Adapter != "whatsapp" {
		return &apiError{fasthttp.StatusNotFound, "qr_not_supported", "channel " + v.Name + " has no QR login (only whatsapp logs in by QR)"}
	}
	gw := s.whatsappGateway(s.reqCtx(ctx))
	if gw == "" {
		return &apiError{fasthttp.StatusNotFound, "qr_gateway_not_running",
			"the WhatsApp Web gateway is not configured: set the whatsapp channel's gateway_url or WHATSAPP_WEB_GATEWAY_URL"}
	}
	sid := string(ctx.QueryArgs().Peek("session_id"))
	if len(sid) > 256 {
		return badRequest("invalid_query", "session_id is too long")
	}
	writeJSON(ctx, fasthttp.StatusOK, whatsapp.PollQR(s.reqCtxWait(ctx), gw, sid))
	return nil
}
